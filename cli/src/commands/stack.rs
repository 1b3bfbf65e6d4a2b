//! `shoal stack deploy|ls|services|ps|rm`: a stack is the set of services
//! whose spec carries its name.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use shoal_proto::defaults as d;
use shoal_proto::{
    CreateServiceRequest, PodState, RemoveServiceRequest, ServiceView, UpdateServiceRequest,
};

use crate::args::{ListArgs, PodListArgs, PsArgs, StackDeployArgs, StackNameArgs, StackRmArgs};
use crate::client::{api_error, connect, Client, Host};
use crate::commands::secret::{self, Kind};
use crate::commands::{rollout, service};
use crate::output::table;
use crate::stack;
use crate::stack::model::Condition;

fn name_of(v: &ServiceView) -> String {
    v.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default()
}

fn stack_of(v: &ServiceView) -> String {
    v.spec.as_ref().map(|s| s.stack.clone()).unwrap_or_default()
}

fn check_stack_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!("invalid stack name {name:?}: 1-40 letters, digits, '-' or '_', starting with a letter or digit");
    }
    Ok(())
}

pub async fn deploy(host: &Host, a: &StackDeployArgs) -> Result<()> {
    check_stack_name(&a.name)?;
    let first = a.compose_file.first().cloned().unwrap_or_default();
    let env = stack::build_env(&first, std::env::vars())?;
    let loaded = stack::load(&a.compose_file, &env)?;
    for w in &loaded.warnings {
        eprintln!("WARNING: {w}");
    }
    let in_files = |e: String| {
        let files: Vec<String> = a
            .compose_file
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        anyhow!("{}: {e}", files.join(" + "))
    };
    let specs = stack::translate::services(&loaded, &a.name).map_err(in_files)?;
    let dependencies = stack::translate::dependencies(&loaded, &a.name);
    let objects = stack::secrets::objects(&loaded, &a.name, &env).map_err(in_files)?;
    let mut client = connect(host).await?;
    deploy_objects(host, &mut client, objects)
        .await
        .map_err(|e| in_files(format!("{e:#}")))?;
    let existing = service::list(host, &mut client).await?;
    let mut touched = Vec::new();
    for spec in specs {
        let name = spec.name.clone();
        let is_new = !existing.iter().any(|v| name_of(v) == name);
        if is_new {
            // depends_on orders a service's first deployment (later ones
            // roll by update_config and wait for nothing).
            for (dep, condition) in dependencies.get(&name).into_iter().flatten() {
                wait_dependency(host, &mut client, &name, dep, *condition).await?;
            }
        }
        if !is_new {
            println!("Updating service {name}");
            client
                .update_service(UpdateServiceRequest {
                    service: name.clone(),
                    spec: Some(spec),
                    force: false,
                })
                .await
                .map_err(|s| anyhow!("service {name}: {}", api_error(host, s)))?;
        } else {
            println!("Creating service {name}");
            client
                .create_service(CreateServiceRequest { spec: Some(spec) })
                .await
                .map_err(|s| anyhow!("service {name}: {}", api_error(host, s)))?;
        }
        touched.push(name);
    }
    if a.prune {
        for v in existing.iter().filter(|v| stack_of(v) == a.name) {
            let name = name_of(v);
            if !touched.contains(&name) {
                println!("Removing service {name}");
                client
                    .remove_service(RemoveServiceRequest {
                        service: name.clone(),
                    })
                    .await
                    .map_err(|s| anyhow!("service {name}: {}", api_error(host, s)))?;
            }
        }
    }
    if a.detach {
        return Ok(());
    }
    for name in &touched {
        rollout::wait_rollout(host, &mut client, name, false, true).await?;
        service::wait_converged(host, &mut client, name, true).await?;
    }
    println!(
        "stack {} deployed: {} service(s) converged",
        a.name,
        touched.len()
    );
    Ok(())
}

/// Waits until the dependency `dep` of `service` meets `condition`: its
/// pods started, ready (healthy where a healthcheck exists), or completed
/// successfully. Fails at once when a pod of `dep` cannot run.
async fn wait_dependency(
    host: &Host,
    client: &mut Client,
    service: &str,
    dep: &str,
    condition: Condition,
) -> Result<()> {
    let what = match condition {
        Condition::ServiceStarted => "started",
        Condition::ServiceHealthy => "healthy",
        Condition::ServiceCompletedSuccessfully => "completed successfully",
    };
    println!("Waiting for {dep} to be {what} (depends_on of {service})");
    let deadline = Instant::now() + Duration::from_millis(d::CONVERGE_TIMEOUT_MS);
    loop {
        let (view, pods) = service::observe(client, dep)
            .await
            .map_err(|s| anyhow!("{service} depends on {dep}: {}", api_error(host, s)))?;
        let state_of =
            |p: &shoal_proto::PodView| p.pod.as_ref()?.status.as_ref().map(|s| s.state());
        let met = match condition {
            Condition::ServiceStarted => view.running_replicas >= view.desired_replicas,
            Condition::ServiceHealthy => view.ready_replicas >= view.desired_replicas,
            Condition::ServiceCompletedSuccessfully => {
                pods.iter()
                    .filter(|p| state_of(p) == Some(PodState::Complete))
                    .count() as u64
                    >= view.desired_replicas.max(1)
            }
        };
        if met {
            return Ok(());
        }
        if let Some(why) = pods
            .iter()
            .filter(|p| state_of(p) == Some(PodState::Rejected))
            .find_map(service::pod_error)
        {
            bail!("{service} depends on {dep}, which cannot run: {why}");
        }
        if Instant::now() > deadline {
            bail!(
                "{service} depends on {dep}, which was not {what} within {}",
                d::format_duration_ms(d::CONVERGE_TIMEOUT_MS)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates the stack's secrets and configs before its services use them;
/// an existing one must have the same content (they are immutable), an
/// external one must exist.
async fn deploy_objects(
    host: &Host,
    client: &mut Client,
    objects: Vec<stack::secrets::StackObject>,
) -> Result<()> {
    for o in objects {
        let noun = o.kind.noun();
        let name = o.spec.name.clone();
        let existing = match secret::get_object(client, o.kind, &name).await {
            Ok(_) => true,
            Err(s) if s.code() == tonic::Code::NotFound => false,
            Err(s) => return Err(anyhow!("{noun} {name}: {}", api_error(host, s))),
        };
        match (o.external, existing) {
            (true, true) => {}
            (true, false) => bail!(
                "{noun} {name} is external but does not exist: create it with shoal {noun} create {name} FILE"
            ),
            (false, true) => {
                secret::update_object(host, client, o.kind, o.spec)
                    .await
                    .map_err(|e| anyhow!("{noun}s.{}: {e}", o.key))?;
            }
            (false, false) => {
                println!("Creating {noun} {name}");
                secret::create_object(host, client, o.kind, o.spec)
                    .await
                    .map_err(|e| anyhow!("{noun}s.{}: {e}", o.key))?;
            }
        }
    }
    Ok(())
}

/// Whether the stack still has secrets or configs (a stack whose services
/// are gone can still be removed).
async fn has_objects(host: &Host, client: &mut Client, stack_name: &str) -> Result<bool> {
    for kind in [Kind::Secret, Kind::Config] {
        let all = secret::list_objects(host, client, kind).await?;
        if all.iter().any(|o| o.spec().stack == stack_name) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes the stack's own secrets and configs (never external ones). The
/// services' pods may still be stopping and keep them in use for a while,
/// so a removal refused as in use is retried for up to a minute.
async fn remove_objects(host: &Host, client: &mut Client, stack_name: &str) -> Result<bool> {
    let mut failed = false;
    for kind in [Kind::Secret, Kind::Config] {
        let mine: Vec<String> = secret::list_objects(host, client, kind)
            .await?
            .into_iter()
            .map(|o| o.spec())
            .filter(|s| s.stack == stack_name)
            .map(|s| s.name)
            .collect();
        for name in mine {
            println!("Removing {} {name}", kind.noun());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            loop {
                match secret::remove_object(client, kind, &name).await {
                    Ok(_) => break,
                    Err(s)
                        if s.code() == tonic::Code::FailedPrecondition
                            && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    Err(s) => {
                        eprintln!("Error: {} {name}: {}", kind.noun(), api_error(host, s));
                        failed = true;
                        break;
                    }
                }
            }
        }
    }
    Ok(!failed)
}

pub async fn ls(host: &Host, a: &ListArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let services = service::list(host, &mut client).await?;
    let mut stacks: std::collections::BTreeMap<String, usize> = Default::default();
    for v in &services {
        let s = stack_of(v);
        if !s.is_empty() {
            *stacks.entry(s).or_default() += 1;
        }
    }
    if a.quiet {
        stacks.keys().for_each(|s| println!("{s}"));
        return Ok(());
    }
    if a.format.format == crate::args::Format::Json {
        let rows: Vec<serde_json::Value> = stacks
            .iter()
            .map(|(n, c)| serde_json::json!({"Name": n, "Services": c}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = stacks
        .iter()
        .map(|(n, c)| vec![n.clone(), c.to_string()])
        .collect();
    table(&["NAME", "SERVICES"], &rows);
    Ok(())
}

async fn services_of(host: &Host, name: &str) -> Result<Vec<ServiceView>> {
    let mut client = connect(host).await?;
    let services: Vec<ServiceView> = service::list(host, &mut client)
        .await?
        .into_iter()
        .filter(|v| stack_of(v) == name)
        .collect();
    if services.is_empty() {
        bail!("nothing found in stack: {name}");
    }
    Ok(services)
}

pub async fn services(host: &Host, a: &StackNameArgs) -> Result<()> {
    service::print_services(&services_of(host, &a.name).await?, &a.list)
}

pub async fn ps(host: &Host, a: &StackNameArgs) -> Result<()> {
    let names = services_of(host, &a.name)
        .await?
        .iter()
        .map(name_of)
        .collect();
    service::ps(
        host,
        &PsArgs {
            services: names,
            pods: PodListArgs {
                list: a.list.clone(),
                ..Default::default()
            },
        },
    )
    .await
}

pub async fn rm(host: &Host, a: &StackRmArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let services = service::list(host, &mut client).await?;
    let mut failed = false;
    for stack_name in &a.names {
        let mine: Vec<String> = services
            .iter()
            .filter(|v| stack_of(v) == *stack_name)
            .map(name_of)
            .collect();
        let has_objects = has_objects(host, &mut client, stack_name).await?;
        if mine.is_empty() && !has_objects {
            eprintln!("Error: nothing found in stack: {stack_name}");
            failed = true;
            continue;
        }
        for name in mine {
            println!("Removing service {name}");
            if let Err(s) = client
                .remove_service(RemoveServiceRequest {
                    service: name.clone(),
                })
                .await
            {
                eprintln!("Error: service {name}: {}", api_error(host, s));
                failed = true;
            }
        }
        if !remove_objects(host, &mut client, stack_name).await? {
            failed = true;
        }
    }
    if failed {
        bail!("some stacks could not be removed");
    }
    Ok(())
}
