//! `shoal service update`, `service rollback` and `shoal rollout ...`.

use std::time::Duration;

use anyhow::{bail, Result};
use shoal_proto::{
    GetServiceRequest, ListReplicaSetsRequest, RollbackServiceRequest, RolloutControlRequest,
    ServiceView, UpdateServiceRequest, UpdateState,
};

use crate::args::{RollbackArgs, RolloutTarget, UndoArgs, UpdateArgs};
use crate::client::{api_error, connect, Client, Host};
use crate::output::{ago, table};
use crate::parse;

async fn get(host: &Host, client: &mut Client, service: &str) -> Result<ServiceView> {
    Ok(client
        .get_service(GetServiceRequest {
            service: service.into(),
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner())
}

fn update_state(v: &ServiceView) -> UpdateState {
    v.update_status
        .as_ref()
        .map_or(UpdateState::None, |u| u.state())
}

fn started_at(v: &ServiceView) -> i64 {
    v.update_status.as_ref().map_or(0, |u| u.started_at)
}

/// How a rollout ended, once it has.
enum Outcome {
    Done(String),
    Failed(String),
}

/// The end of a rollout in `v`, if it ended. `rollback_requested`: a
/// completed rollback is what the user asked for (not a failure).
fn outcome(v: &ServiceView, rollback_requested: bool) -> Option<Outcome> {
    let name = v.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
    let u = v.update_status.clone().unwrap_or_default();
    match u.state() {
        UpdateState::Completed | UpdateState::None => {
            Some(Outcome::Done(format!("service {name}: rollout complete")))
        }
        UpdateState::RollbackCompleted
            if rollback_requested || u.message.contains("manual rollback") =>
        {
            Some(Outcome::Done(format!("service {name}: rollback complete")))
        }
        UpdateState::RollbackCompleted => Some(Outcome::Failed(format!(
            "service {name}: {}",
            u.message
                .trim_start_matches("rollback completed (")
                .trim_end_matches(')')
        ))),
        UpdateState::Paused | UpdateState::RollbackPaused => {
            Some(Outcome::Failed(format!("service {name}: {}", u.message)))
        }
        UpdateState::Updating | UpdateState::RollbackStarted => None,
    }
}

/// Shows progress until the rollout of `service` ends; errors name why it
/// did not complete (paused, or rolled back after a failure).
pub async fn wait_rollout(
    host: &Host,
    client: &mut Client,
    service: &str,
    rollback_requested: bool,
    quiet: bool,
) -> Result<()> {
    let mut last = String::new();
    loop {
        let v = get(host, client, service).await?;
        let u = v.update_status.clone().unwrap_or_default();
        let name = v.spec.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let verb = match u.state() {
            UpdateState::RollbackStarted
            | UpdateState::RollbackPaused
            | UpdateState::RollbackCompleted => "rolled back",
            _ => "updated",
        };
        let line = format!(
            "{name}: {}/{} {verb}, {} failed",
            u.updated, u.total, u.failed
        );
        if !quiet && line != last {
            println!("{line}");
            last = line;
        }
        match outcome(&v, rollback_requested) {
            Some(Outcome::Done(msg)) => {
                if !quiet {
                    println!("{msg}");
                }
                return Ok(());
            }
            Some(Outcome::Failed(msg)) => bail!("{msg}"),
            None => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

pub async fn update(host: &Host, a: &UpdateArgs) -> Result<()> {
    let mut client = connect(host).await?;
    let before = get(host, &mut client, &a.service).await?;
    let mut spec = before.spec.clone().unwrap_or_default();
    parse::apply_update(&mut spec, a)?;
    let after = client
        .update_service(UpdateServiceRequest {
            service: a.service.clone(),
            spec: Some(spec),
            force: a.force,
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    println!(
        "{}",
        after.spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")
    );
    if a.detach {
        return Ok(());
    }
    let rollout_started =
        started_at(&after) != started_at(&before) && update_state(&after) == UpdateState::Updating;
    if rollout_started {
        wait_rollout(host, &mut client, &after.id, false, a.quiet).await
    } else {
        super::service::wait_converged(host, &mut client, &after.id, a.quiet).await
    }
}

async fn rollback_to(
    host: &Host,
    service: &str,
    to_revision: u64,
    detach: bool,
    quiet: bool,
) -> Result<()> {
    let mut client = connect(host).await?;
    let v = client
        .rollback_service(RollbackServiceRequest {
            service: service.into(),
            to_revision,
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    println!("{}", v.spec.as_ref().map(|s| s.name.as_str()).unwrap_or(""));
    if detach {
        return Ok(());
    }
    wait_rollout(host, &mut client, &v.id, true, quiet).await
}

pub async fn rollback(host: &Host, a: &RollbackArgs) -> Result<()> {
    rollback_to(host, &a.service, 0, a.detach, a.quiet).await
}

pub async fn undo(host: &Host, a: &UndoArgs) -> Result<()> {
    rollback_to(host, &a.service, a.to_revision, a.detach, false).await
}

pub async fn status(host: &Host, a: &RolloutTarget) -> Result<()> {
    let mut client = connect(host).await?;
    wait_rollout(host, &mut client, &a.service, false, false).await
}

pub async fn pause(host: &Host, a: &RolloutTarget, pause: bool) -> Result<()> {
    let mut client = connect(host).await?;
    let req = RolloutControlRequest {
        service: a.service.clone(),
    };
    if pause {
        client.pause_rollout(req).await
    } else {
        client.resume_rollout(req).await
    }
    .map_err(|s| api_error(host, s))?;
    println!(
        "service {}: rollout {}",
        a.service,
        if pause { "paused" } else { "resumed" }
    );
    Ok(())
}

pub async fn history(host: &Host, a: &RolloutTarget) -> Result<()> {
    let mut client = connect(host).await?;
    let mut sets = client
        .list_replica_sets(ListReplicaSetsRequest {
            service: a.service.clone(),
        })
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner()
        .replica_sets;
    sets.sort_by_key(|v| v.replica_set.as_ref().map_or(0, |r| r.revision));
    let rows: Vec<Vec<String>> = sets
        .iter()
        .map(|v| {
            let rs = v.replica_set.clone().unwrap_or_default();
            let image = rs
                .template
                .as_ref()
                .and_then(|t| t.container.as_ref())
                .map(|c| c.image.clone())
                .unwrap_or_default();
            vec![
                format!("{}{}", rs.revision, if v.current { " *" } else { "" }),
                rs.change_cause.clone(),
                image,
                ago(rs.meta.as_ref().map_or(0, |m| m.created_at)),
            ]
        })
        .collect();
    table(&["REVISION", "CHANGE", "IMAGE", "CREATED"], &rows);
    Ok(())
}
