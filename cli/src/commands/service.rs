//! `shoal service ...`

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures::StreamExt;
use shoal_proto::defaults as d;
use shoal_proto::{
    port_config::{Protocol, PublishMode},
    CreateServiceRequest, GetServiceRequest, ListPodsRequest, ListServicesRequest, PodState,
    PodView, RemoveServiceRequest, ScaleServiceRequest, ServiceLogsRequest, ServiceView,
};

use crate::args::{CreateArgs, Format, InspectArgs, ListArgs, LogsArgs, PsArgs, RmArgs, ScaleArgs};
use crate::client::{api_error, connect, Client, Host};
use crate::output::{ago, short_id, table, title};
use crate::parse;

pub async fn create(host: &Host, a: &CreateArgs) -> Result<()> {
    let spec = parse::service_spec(a)?;
    let mut client = connect(host).await?;
    let view = client
        .create_service(CreateServiceRequest { spec: Some(spec) })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    println!("{}", view.id);
    if a.detach {
        return Ok(());
    }
    wait_converged(host, &mut client, &view.id, a.quiet).await
}

pub async fn scale(host: &Host, a: &ScaleArgs) -> Result<()> {
    let scales = a
        .scales
        .iter()
        .map(|s| parse::scale(s))
        .collect::<Result<Vec<_>>>()?;
    let mut client = connect(host).await?;
    let mut failed = false;
    let mut scaled = Vec::new();
    for (name, replicas) in scales {
        match client
            .scale_service(ScaleServiceRequest {
                service: name.clone(),
                replicas,
            })
            .await
        {
            Ok(v) => {
                println!("{name} scaled to {replicas}");
                scaled.push(v.into_inner().id);
            }
            Err(s) => {
                eprintln!("Error: {}", api_error(host, s));
                failed = true;
            }
        }
    }
    if !a.detach {
        for id in scaled {
            wait_converged(host, &mut client, &id, false).await?;
        }
    }
    if failed {
        bail!("some services could not be scaled");
    }
    Ok(())
}

/// What a pod's failure says, for progress and the final error.
pub fn pod_error(p: &PodView) -> Option<String> {
    let pod = p.pod.as_ref()?;
    let s = pod.status.as_ref()?;
    let failed = matches!(s.state(), PodState::Failed | PodState::Rejected);
    failed.then(|| {
        let why = if s.err.is_empty() { &s.message } else { &s.err };
        format!("{}: {} ({why})", p.name, s.state().display())
    })
}

/// A service's view and all its pods, replaced ones included: what the
/// waiting loops look at on each round.
pub async fn observe(
    client: &mut Client,
    service: &str,
) -> Result<(ServiceView, Vec<PodView>), tonic::Status> {
    let view = client
        .get_service(GetServiceRequest {
            service: service.into(),
        })
        .await?
        .into_inner();
    let pods = client
        .list_pods(ListPodsRequest {
            service: service.into(),
            include_history: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .pods;
    Ok((view, pods))
}

/// Waits until every desired pod runs (and is healthy, where a healthcheck
/// exists), showing progress; fails when pods keep failing or time runs out.
pub async fn wait_converged(host: &Host, client: &mut Client, id: &str, quiet: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(d::CONVERGE_TIMEOUT_MS);
    let mut last_line = String::new();
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let (view, pods) = match observe(client, id).await {
            Ok(seen) => seen,
            // An election among the managers (or a leader change) makes
            // reads fail for a moment: keep watching until the deadline.
            Err(s) if crate::client::transient(&s) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(s) => return Err(api_error(host, s)),
        };
        for p in &pods {
            if let (Some(err), Some(pod)) = (pod_error(p), &p.pod) {
                failures.entry(pod.id.clone()).or_insert(err);
            }
        }
        let name = view
            .spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let line = format!(
            "{name}: {}/{} running{}",
            view.ready_replicas,
            view.desired_replicas,
            if failures.is_empty() {
                String::new()
            } else {
                format!(", {} failed", failures.len())
            }
        );
        if !quiet && line != last_line {
            println!("{line}");
            let _ = std::io::stdout().flush();
            last_line = line;
        }
        let live_pods = pods
            .iter()
            .filter(|p| {
                p.pod
                    .as_ref()
                    .is_some_and(|x| x.desired_state() == PodState::Running)
            })
            .count() as u64;
        if view.ready_replicas == view.desired_replicas && live_pods == view.desired_replicas {
            if !quiet {
                println!("verify: service {name} converged");
            }
            return Ok(());
        }
        let rejected = pods.iter().any(|p| {
            p.pod
                .as_ref()
                .and_then(|x| x.status.as_ref())
                .is_some_and(|s| s.state() == PodState::Rejected)
        });
        if rejected || failures.len() >= 3 {
            let last = failures.values().last().cloned().unwrap_or_default();
            bail!("service {name} could not converge: {last}");
        }
        if Instant::now() > deadline {
            bail!(
                "service {name} did not converge within {}",
                d::format_duration_ms(d::CONVERGE_TIMEOUT_MS)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ports_text(v: &ServiceView) -> String {
    let Some(spec) = &v.spec else {
        return String::new();
    };
    spec.ports
        .iter()
        .map(|p| {
            let proto = if p.protocol() == Protocol::Udp {
                "udp"
            } else {
                "tcp"
            };
            let host = if p.publish_mode() == PublishMode::Host {
                "host "
            } else {
                "*"
            };
            format!("{host}:{}->{}/{proto}", p.published_port, p.target_port)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn mode_text(v: &ServiceView) -> &'static str {
    match v.spec.as_ref().map(|s| s.mode()) {
        Some(shoal_proto::DeploymentMode::Global) => "global",
        _ => "replicated",
    }
}

/// Every service, sorted by name.
pub async fn list(host: &Host, client: &mut Client) -> Result<Vec<ServiceView>> {
    Ok(client
        .list_services(ListServicesRequest {})
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner()
        .services)
}

pub async fn ls(host: &Host, a: &ListArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let services = list(host, &mut client).await?;
    print_services(&services, a)
}

/// `service ls` output for `services` (also used by `stack services`).
pub fn print_services(services: &[ServiceView], a: &ListArgs) -> Result<()> {
    if a.quiet {
        services.iter().for_each(|s| println!("{}", s.id));
        return Ok(());
    }
    if a.format.format == Format::Json {
        let rows: Vec<serde_json::Value> = services
            .iter()
            .map(|v| {
                serde_json::json!({
                    "ID": v.id,
                    "Name": v.spec.as_ref().map(|s| s.name.clone()),
                    "Mode": mode_text(v),
                    "Replicas": format!("{}/{}", v.ready_replicas, v.desired_replicas),
                    "Running": v.running_replicas,
                    "Ready": v.ready_replicas,
                    "Desired": v.desired_replicas,
                    "Image": v.spec.as_ref().and_then(|s| s.container.as_ref()).map(|c| c.image.clone()),
                    "Ports": ports_text(v),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|v| {
            let spec = v.spec.clone().unwrap_or_default();
            vec![
                short_id(&v.id),
                spec.name.clone(),
                mode_text(v).to_string(),
                // Ready pods (running, and healthy where a healthcheck
                // exists), as Swarm counts a task only once it passed it.
                format!("{}/{}", v.ready_replicas, v.desired_replicas),
                spec.container.map(|c| c.image).unwrap_or_default(),
                ports_text(v),
            ]
        })
        .collect();
    table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &rows);
    Ok(())
}

fn current_state(p: &PodView) -> String {
    let Some(s) = p.pod.as_ref().and_then(|x| x.status.as_ref()) else {
        return String::new();
    };
    format!("{} {}", title(s.state().display()), ago(s.timestamp))
}

fn error_text(p: &PodView, no_trunc: bool) -> String {
    let Some(pod) = &p.pod else {
        return String::new();
    };
    let s = pod.status.clone().unwrap_or_default();
    let mut e = if !s.err.is_empty() {
        s.err
    } else if !pod.scheduling_message.is_empty() {
        pod.scheduling_message.clone()
    } else if matches!(s.state(), PodState::Failed) && s.exit_code != 0 {
        format!("task: non-zero exit ({})", s.exit_code)
    } else {
        String::new()
    };
    if !no_trunc && e.chars().count() > 60 {
        e = e.chars().take(59).collect::<String>() + "…";
    }
    if e.is_empty() {
        e
    } else {
        format!("\"{e}\"")
    }
}

pub async fn ps(host: &Host, a: &PsArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let mut pods: Vec<PodView> = Vec::new();
    let mut unplaced = Vec::new();
    for svc in &a.services {
        let mut got = client
            .list_pods(ListPodsRequest {
                service: svc.clone(),
                include_history: !a.pods.no_history,
                ..Default::default()
            })
            .await
            .map_err(|s| api_error(host, s))?
            .into_inner();
        pods.append(&mut got.pods);
        unplaced.extend(got.unplaced.into_iter().map(|u| format!("{svc}: {u}")));
    }
    print_pods(&pods, &a.pods)?;
    // A global service's nodes that get no pod because it does not fit.
    let table = !a.pods.list.quiet && a.pods.list.format.format != Format::Json;
    if table && !unplaced.is_empty() {
        println!();
        println!("Global pods not placed (they start once they fit):");
        for u in unplaced {
            println!("  {u}");
        }
    }
    Ok(())
}

/// The pods as `service ps` and `node ps` show them: IDs only (-q), JSON,
/// or a table where a slot's replaced pods follow its current one.
pub fn print_pods(pods: &[PodView], how: &crate::args::PodListArgs) -> Result<()> {
    let (list, no_trunc) = (&how.list, how.no_trunc);
    if list.quiet {
        pods.iter()
            .filter_map(|p| p.pod.as_ref())
            .for_each(|p| println!("{}", p.id));
        return Ok(());
    }
    if list.format.format == Format::Json {
        let rows: Vec<serde_json::Value> = pods
            .iter()
            .map(|p| {
                let pod = p.pod.clone().unwrap_or_default();
                let s = pod.status.clone().unwrap_or_default();
                serde_json::json!({
                    "ID": pod.id,
                    "Name": p.name,
                    "Service": p.service_name,
                    "Slot": pod.slot,
                    "Image": p.image,
                    "Node": p.node_hostname,
                    "NodeID": pod.node_id,
                    "DesiredState": pod.desired_state().display(),
                    "CurrentState": s.state().display(),
                    "Since": s.timestamp,
                    "Error": if s.err.is_empty() { pod.scheduling_message.clone() } else { s.err.clone() },
                    "ContainerID": s.container_id,
                    "IP": s.ip,
                    "ExitCode": s.exit_code,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut last_slot_key = String::new();
    for p in pods {
        let pod = p.pod.clone().unwrap_or_default();
        // Replaced pods follow the current one of their slot, indented.
        let slot_key = format!(
            "{}.{}.{}",
            p.service_name,
            pod.slot,
            if pod.slot == 0 { &pod.node_id } else { "" }
        );
        let name = if slot_key == last_slot_key {
            format!(" \\_ {}", p.name)
        } else {
            p.name.clone()
        };
        last_slot_key = slot_key;
        rows.push(vec![
            short_id(&pod.id),
            name,
            p.image.clone(),
            p.node_hostname.clone(),
            title(pod.desired_state().display()),
            current_state(p),
            error_text(p, no_trunc),
        ]);
    }
    table(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        &rows,
    );
    Ok(())
}

pub async fn inspect(host: &Host, a: &InspectArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let mut views = Vec::new();
    for s in &a.services {
        let v = client
            .get_service(GetServiceRequest { service: s.clone() })
            .await
            .map_err(|st| api_error(host, st))?
            .into_inner();
        views.push(v);
    }
    println!("{}", serde_json::to_string_pretty(&views)?);
    Ok(())
}

pub async fn logs(host: &Host, a: &LogsArgs) -> Result<()> {
    let tail = match a.tail.as_deref() {
        None | Some("all") => 0,
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| anyhow!("invalid --tail {t:?}: a number of lines or \"all\""))?,
    };
    let mut client = connect(host).await?;
    let mut stream = client
        .service_logs(ServiceLogsRequest {
            service: a.service.clone(),
            follow: a.follow,
            tail,
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(item) = stream.next().await {
        let line = item.map_err(|s| api_error(host, s))?;
        let prefix = format!("{}.{}", line.pod_name, short_id(&line.pod_id));
        if line.stream == "stderr" {
            writeln!(stderr, "{prefix}    | {}", line.line)?;
        } else {
            writeln!(stdout, "{prefix}    | {}", line.line)?;
            stdout.flush()?;
        }
    }
    Ok(())
}

pub async fn rm(host: &Host, a: &RmArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let mut failed = false;
    for s in &a.services {
        match client
            .remove_service(RemoveServiceRequest { service: s.clone() })
            .await
        {
            Ok(_) => println!("{s}"),
            Err(st) => {
                eprintln!("Error: {}", api_error(host, st));
                failed = true;
            }
        }
    }
    if failed {
        bail!("some services could not be removed");
    }
    Ok(())
}
