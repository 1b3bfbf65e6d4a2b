//! A stack's secrets and configs: the top-level ones `stack deploy` creates
//! (or finds, when external) and the references services make to them.
//!
//! As `docker stack deploy` does: an object is named `<stack>_<key>` unless
//! it has a `name:` (or is external, then it is the key or its `name:`); it
//! is labelled with the stack; a service's reference to it appears at the
//! reference's `target`, by default the key as written in the stack file
//! (`/run/secrets/<key>` for a secret, `/<key>` for a config).

use std::collections::BTreeMap;

use shoal_proto::defaults::labels;
use shoal_proto::{FileObjectSpec, FileReference};

use super::de::FileRef;
use super::interp::Env;
use super::model::FileObject;
use super::Stack;
use crate::commands::secret::Kind;

/// A top-level secret or config of a stack, ready to create (or, when
/// external, to look up).
#[derive(Debug, Clone, PartialEq)]
pub struct StackObject {
    pub kind: Kind,
    /// Its key in the stack file.
    pub key: String,
    /// What `create` sends; `data` is empty for an external one.
    pub spec: FileObjectSpec,
    pub external: bool,
}

fn section(kind: Kind) -> &'static str {
    match kind {
        Kind::Secret => "secrets",
        Kind::Config => "configs",
    }
}

fn defined(stack: &Stack, kind: Kind) -> &BTreeMap<String, FileObject> {
    match kind {
        Kind::Secret => &stack.file.secrets,
        Kind::Config => &stack.file.configs,
    }
}

/// The name the cluster knows a stack's secret or config by.
pub fn object_name(stack_name: &str, key: &str, o: &FileObject) -> String {
    match &o.name {
        Some(n) => n.clone(),
        None if o.is_external() => key.to_string(),
        None => format!("{stack_name}_{key}"),
    }
}

/// The content of a non-external object: its file (already resolved
/// against the first stack file's directory), variable or inline content.
fn data(kind: Kind, key: &str, o: &FileObject, env: &Env) -> Result<Vec<u8>, String> {
    let path = |k: &str| format!("{}.{key}.{k}", section(kind));
    let data = if let Some(f) = &o.file {
        std::fs::read(f).map_err(|e| format!("{}: cannot read {f}: {e}", path("file")))?
    } else if let Some(var) = &o.environment {
        env.get(var)
            .ok_or_else(|| format!("{}: variable {var} is not set", path("environment")))?
            .as_bytes()
            .to_vec()
    } else if let Some(c) = &o.content {
        c.as_bytes().to_vec()
    } else {
        return Err(format!(
            "{}.{key}: no file, environment or content",
            section(kind)
        ));
    };
    if data.is_empty() {
        return Err(format!(
            "{}.{key}: the {} is empty",
            section(kind),
            kind.noun()
        ));
    }
    Ok(data)
}

/// Every top-level secret and config of the stack, secrets first.
pub fn objects(stack: &Stack, stack_name: &str, env: &Env) -> Result<Vec<StackObject>, String> {
    let mut out = Vec::new();
    for kind in [Kind::Secret, Kind::Config] {
        for (key, o) in defined(stack, kind) {
            let external = o.is_external();
            let mut object_labels: std::collections::HashMap<String, String> =
                o.labels.clone().into_iter().collect();
            if !external {
                object_labels.insert(labels::STACK.to_string(), stack_name.to_string());
            }
            out.push(StackObject {
                kind,
                key: key.clone(),
                external,
                spec: FileObjectSpec {
                    name: object_name(stack_name, key, o),
                    labels: object_labels,
                    data: if external {
                        vec![]
                    } else {
                        data(kind, key, o, env)?
                    },
                    stack: if external {
                        String::new()
                    } else {
                        stack_name.to_string()
                    },
                },
            });
        }
    }
    Ok(out)
}

fn id_number(path: &str, what: &str, v: &Option<String>) -> Result<u32, String> {
    match v.as_deref().map(str::trim) {
        None | Some("") => Ok(0),
        Some(s) => s.parse().map_err(|_| {
            format!("{path}.{what}: invalid value {s:?}: expected a numeric user or group id")
        }),
    }
}

/// A service's references of one kind (`services.<service>.secrets`), by
/// the cluster's names, with Docker stack deploy's default target.
pub fn references(
    stack: &Stack,
    stack_name: &str,
    service: &str,
    kind: Kind,
    refs: &[FileRef],
) -> Result<Vec<FileReference>, String> {
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            let path = format!("services.{service}.{}[{i}]", section(kind));
            let o = defined(stack, kind).get(&r.source).ok_or_else(|| {
                format!(
                    "{path}: undefined {} {:?}: declare it under the top-level {}",
                    kind.noun(),
                    r.source,
                    section(kind)
                )
            })?;
            let mode = match r.mode {
                None => 0,
                Some(m) if m <= 0o7777 => m as u32,
                Some(m) => {
                    return Err(format!(
                        "{path}.mode: invalid value {m:o} (octal): not a file mode"
                    ))
                }
            };
            Ok(FileReference {
                id: String::new(),
                name: object_name(stack_name, &r.source, o),
                target: r.target.clone().unwrap_or_else(|| r.source.clone()),
                uid: id_number(&path, "uid", &r.uid)?,
                gid: id_number(&path, "gid", &r.gid)?,
                mode,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn load(text: &str, files: &[(&str, &str)]) -> (Stack, Env) {
        let dir = tempfile::tempdir().unwrap().keep();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let file = dir.join("stack.yml");
        std::fs::write(&file, text).unwrap();
        let env = super::super::build_env(&file, vec![("PW".to_string(), "from-env".to_string())])
            .unwrap();
        let stack = super::super::load(&[PathBuf::from(&file)], &env).unwrap();
        (stack, env)
    }

    const STACK: &str = "services:\n  db:\n    image: img\n    secrets:\n      - db_pw\n      - source: tls\n        target: /etc/tls.pem\n        uid: \"70\"\n        mode: 0400\n    configs:\n      - app\nsecrets:\n  db_pw:\n    file: ./pw.txt\n  tls:\n    environment: PW\n  shared:\n    external: true\nconfigs:\n  app:\n    content: \"port=1\"\n    name: app-config\n";

    #[test]
    fn stack_objects_are_named_after_the_stack_and_read_from_their_source() {
        let (stack, env) = load(STACK, &[("pw.txt", "hunter2\n")]);
        let objs = objects(&stack, "shop", &env).unwrap();
        let by_key = |k: &str| objs.iter().find(|o| o.key == k).unwrap();
        let pw = by_key("db_pw");
        assert_eq!(pw.kind, Kind::Secret);
        assert_eq!(pw.spec.name, "shop_db_pw");
        assert_eq!(pw.spec.data, b"hunter2\n");
        assert_eq!(pw.spec.stack, "shop");
        assert_eq!(pw.spec.labels[labels::STACK], "shop");
        assert_eq!(by_key("tls").spec.data, b"from-env");
        let shared = by_key("shared");
        assert!(shared.external && shared.spec.data.is_empty());
        assert_eq!(shared.spec.name, "shared");
        let app = by_key("app");
        assert_eq!(
            (app.kind, app.spec.name.as_str()),
            (Kind::Config, "app-config")
        );
        assert_eq!(app.spec.data, b"port=1");
    }

    #[test]
    fn service_references_use_cluster_names_and_the_short_name_as_target() {
        let (stack, _) = load(STACK, &[("pw.txt", "x")]);
        let db = &stack.file.services["db"];
        let s = references(&stack, "shop", "db", Kind::Secret, &db.secrets).unwrap();
        assert_eq!(
            (s[0].name.as_str(), s[0].target.as_str(), s[0].mode),
            ("shop_db_pw", "db_pw", 0)
        );
        assert_eq!(
            (
                s[1].name.as_str(),
                s[1].target.as_str(),
                s[1].uid,
                s[1].mode
            ),
            ("shop_tls", "/etc/tls.pem", 70, 0o400)
        );
        let c = references(&stack, "shop", "db", Kind::Config, &db.configs).unwrap();
        assert_eq!(
            (c[0].name.as_str(), c[0].target.as_str()),
            ("app-config", "app")
        );
        assert_eq!(c[0].container_path(false), "/app");
    }

    #[test]
    fn unreadable_files_and_unset_variables_name_the_key() {
        let (stack, env) = load(STACK, &[]);
        let err = objects(&stack, "shop", &env).unwrap_err();
        assert!(err.starts_with("secrets.db_pw.file: cannot read "), "{err}");
        let text = STACK.replace("environment: PW", "environment: NOT_SET_ANYWHERE_42");
        let (stack, env) = load(&text, &[("pw.txt", "x")]);
        assert_eq!(
            objects(&stack, "shop", &env).unwrap_err(),
            "secrets.tls.environment: variable NOT_SET_ANYWHERE_42 is not set"
        );
        let text = STACK.replace("uid: \"70\"", "uid: postgres");
        let (stack, _) = load(&text, &[("pw.txt", "x")]);
        let db = &stack.file.services["db"];
        assert_eq!(
            references(&stack, "shop", "db", Kind::Secret, &db.secrets).unwrap_err(),
            "services.db.secrets[1].uid: invalid value \"postgres\": expected a numeric user or group id"
        );
    }
}
