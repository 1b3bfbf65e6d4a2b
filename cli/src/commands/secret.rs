//! `shoal secret ...` and `shoal config ...`: the same commands on two kinds
//! of object. A secret's data never comes back from the daemon; a config's
//! does (`config inspect` shows it, base64-encoded as Docker does).

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use shoal_proto::{
    Config, CreateFileObjectRequest, FileObjectRequest, FileObjectSpec, ListFileObjectsRequest,
    Meta, Secret, UpdateFileObjectRequest,
};

use crate::args::{FileObjectCommand, FileObjectCreateArgs, FileObjectNamesArgs, Format, ListArgs};
use crate::client::{api_error, connect, Client, Host};
use crate::output::{ago, short_id, table};
use crate::parse::key_values;

/// Which kind a command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }
}

/// A secret or config as the CLI shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum FileObject {
    Secret(Secret),
    Config(Config),
}

impl FileObject {
    pub fn id(&self) -> &str {
        match self {
            FileObject::Secret(o) => &o.id,
            FileObject::Config(o) => &o.id,
        }
    }

    pub fn spec(&self) -> FileObjectSpec {
        match self {
            FileObject::Secret(o) => o.spec.clone(),
            FileObject::Config(o) => o.spec.clone(),
        }
        .unwrap_or_default()
    }

    fn meta(&self) -> Meta {
        match self {
            FileObject::Secret(o) => o.meta,
            FileObject::Config(o) => o.meta,
        }
        .unwrap_or_default()
    }
}

pub async fn run(host: &Host, kind: Kind, cmd: &FileObjectCommand) -> Result<()> {
    match cmd {
        FileObjectCommand::Create(a) => create(host, kind, a).await,
        FileObjectCommand::Ls(a) => ls(host, kind, a).await,
        FileObjectCommand::Inspect(a) => inspect(host, kind, a).await,
        FileObjectCommand::Rm(a) => rm(host, kind, a).await,
    }
}

/// The content of FILE, or of standard input for `-`.
fn read_data(kind: Kind, file: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    if file == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read the {} from standard input", kind.noun()))?;
    } else {
        data = std::fs::read(file)
            .with_context(|| format!("cannot read {} file {}", kind.noun(), file.display()))?;
    }
    Ok(data)
}

pub async fn create_object(
    host: &Host,
    client: &mut Client,
    kind: Kind,
    spec: FileObjectSpec,
) -> Result<FileObject> {
    let req = CreateFileObjectRequest { spec: Some(spec) };
    let r = match kind {
        Kind::Secret => client
            .create_secret(req)
            .await
            .map(|r| FileObject::Secret(r.into_inner())),
        Kind::Config => client
            .create_config(req)
            .await
            .map(|r| FileObject::Config(r.into_inner())),
    };
    r.map_err(|s| api_error(host, s))
}

/// Updates labels; the daemon refuses a change of data.
pub async fn update_object(
    host: &Host,
    client: &mut Client,
    kind: Kind,
    spec: FileObjectSpec,
) -> Result<FileObject> {
    let req = UpdateFileObjectRequest {
        name: spec.name.clone(),
        spec: Some(spec),
    };
    let r = match kind {
        Kind::Secret => client
            .update_secret(req)
            .await
            .map(|r| FileObject::Secret(r.into_inner())),
        Kind::Config => client
            .update_config(req)
            .await
            .map(|r| FileObject::Config(r.into_inner())),
    };
    r.map_err(|s| api_error(host, s))
}

pub async fn get_object(
    client: &mut Client,
    kind: Kind,
    name: &str,
) -> std::result::Result<FileObject, tonic::Status> {
    let req = FileObjectRequest {
        name: name.to_string(),
    };
    match kind {
        Kind::Secret => client
            .get_secret(req)
            .await
            .map(|r| FileObject::Secret(r.into_inner())),
        Kind::Config => client
            .get_config(req)
            .await
            .map(|r| FileObject::Config(r.into_inner())),
    }
}

pub async fn list_objects(host: &Host, client: &mut Client, kind: Kind) -> Result<Vec<FileObject>> {
    let r = match kind {
        Kind::Secret => client
            .list_secrets(ListFileObjectsRequest {})
            .await
            .map(|r| {
                r.into_inner()
                    .secrets
                    .into_iter()
                    .map(FileObject::Secret)
                    .collect()
            }),
        Kind::Config => client
            .list_configs(ListFileObjectsRequest {})
            .await
            .map(|r| {
                r.into_inner()
                    .configs
                    .into_iter()
                    .map(FileObject::Config)
                    .collect()
            }),
    };
    r.map_err(|s| api_error(host, s))
}

pub async fn remove_object(
    client: &mut Client,
    kind: Kind,
    name: &str,
) -> std::result::Result<String, tonic::Status> {
    let req = FileObjectRequest {
        name: name.to_string(),
    };
    match kind {
        Kind::Secret => client.remove_secret(req).await,
        Kind::Config => client.remove_config(req).await,
    }
    .map(|r| r.into_inner().id)
}

async fn create(host: &Host, kind: Kind, a: &FileObjectCreateArgs) -> Result<()> {
    let data = read_data(kind, &a.file)?;
    if data.is_empty() {
        bail!(
            "{} {}: {} is empty",
            kind.noun(),
            a.name,
            if a.file == Path::new("-") {
                "standard input".to_string()
            } else {
                a.file.display().to_string()
            }
        );
    }
    let spec = FileObjectSpec {
        name: a.name.clone(),
        labels: key_values("--label", &a.labels)?,
        data,
        stack: String::new(),
    };
    let mut client = connect(host).await?;
    let created = create_object(host, &mut client, kind, spec).await?;
    println!("{}", created.id());
    Ok(())
}

async fn ls(host: &Host, kind: Kind, a: &ListArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let all = list_objects(host, &mut client, kind).await?;
    if a.quiet {
        all.iter().for_each(|o| println!("{}", o.id()));
        return Ok(());
    }
    if a.format.format == Format::Json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|o| {
                let spec = o.spec();
                let meta = o.meta();
                serde_json::json!({
                    "ID": o.id(),
                    "Name": spec.name,
                    "Labels": spec.labels,
                    "Stack": spec.stack,
                    "CreatedAt": meta.created_at,
                    "UpdatedAt": meta.updated_at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|o| {
            let meta = o.meta();
            vec![
                short_id(o.id()),
                o.spec().name,
                ago(meta.created_at),
                ago(meta.updated_at),
            ]
        })
        .collect();
    table(&["ID", "NAME", "CREATED", "UPDATED"], &rows);
    Ok(())
}

async fn inspect(host: &Host, kind: Kind, a: &FileObjectNamesArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let mut out = Vec::new();
    for name in &a.names {
        let o = get_object(&mut client, kind, name)
            .await
            .map_err(|s| api_error(host, s))?;
        out.push(o);
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn rm(host: &Host, kind: Kind, a: &FileObjectNamesArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let mut failed = 0;
    for name in &a.names {
        match remove_object(&mut client, kind, name).await {
            Ok(_) => println!("{name}"),
            Err(s) => {
                eprintln!("Error: {}", api_error(host, s));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(anyhow!(
            "{failed} of {} {}s could not be removed",
            a.names.len(),
            kind.noun()
        ));
    }
    Ok(())
}
