//! Revisions and rollouts as the Control API writes them: a spec change
//! makes (or reuses) a ReplicaSet and points the deployment at it; a
//! rollback points it back; pause and resume flip the rollout state. The
//! orchestrator's updater does the moving. Pure functions from the store to
//! mutations, so they are tested without a cluster.

use shoal_proto::{
    Deployment, DeploymentMode, Mutation, PodTemplate, ReplicaSet, ServiceSpec, UpdateState,
};

use shoal_proto::service::Type as ServiceType;

use super::spec::{
    allocate_ports, service_object, service_type, template_of, validate, with_defaults,
};
use crate::ids::new_id;
use crate::objects::{touch, version};
use crate::store::{put, StoreData};

fn highest_revision(data: &StoreData, deployment_id: &str) -> u64 {
    data.replica_sets_of_deployment(deployment_id)
        .last()
        .map_or(0, |r| r.revision)
}

/// A one-line summary of what changed between two templates, for
/// `rollout history`.
pub fn describe_change(old: &PodTemplate, new: &PodTemplate) -> String {
    let oc = old.container.clone().unwrap_or_default();
    let nc = new.container.clone().unwrap_or_default();
    let mut parts = Vec::new();
    if oc.image != nc.image {
        parts.push(format!("image {} -> {}", oc.image, nc.image));
    }
    if oc.env != nc.env {
        let added: Vec<String> = nc
            .env
            .iter()
            .filter(|e| !oc.env.contains(e))
            .map(|e| format!("+{e}"))
            .collect();
        let removed: Vec<String> = oc
            .env
            .iter()
            .filter(|e| !nc.env.contains(e))
            .map(|e| format!("-{}", e.split('=').next().unwrap_or(e)))
            .collect();
        parts.push(format!("env {}", [added, removed].concat().join(" ")));
    }
    if oc.command != nc.command || oc.args != nc.args {
        parts.push("command/args".into());
    }
    if oc.labels != nc.labels {
        parts.push("container labels".into());
    }
    if oc.healthcheck != nc.healthcheck {
        parts.push("healthcheck".into());
    }
    if oc.stop_grace_period_ms != nc.stop_grace_period_ms {
        parts.push("stop grace period".into());
    }
    if oc.secrets != nc.secrets {
        parts.push("secrets".into());
    }
    if oc.configs != nc.configs {
        parts.push("configs".into());
    }
    if old.host_ports != new.host_ports {
        parts.push("host ports".into());
    }
    if old.placement != new.placement {
        parts.push("placement".into());
    }
    if old.networks != new.networks {
        parts.push("networks".into());
    }
    if parts.is_empty() && oc != nc {
        parts.push("container settings".into());
    }
    if parts.is_empty() {
        "forced update (no change)".into()
    } else {
        parts.join("; ")
    }
}

/// Points the deployment at `target` (bumping it to the newest revision, as
/// Kubernetes does when it returns to an old template) and starts a rollout
/// in `state`.
fn retarget(
    data: &StoreData,
    dep: &mut Deployment,
    target: &ReplicaSet,
    state: UpdateState,
    message: String,
    now: i64,
) -> Vec<Mutation> {
    let mut m = Vec::new();
    let st = dep.status.get_or_insert_with(Default::default);
    let mut rs = target.clone();
    let top = highest_revision(data, &dep.id);
    if rs.revision != top || st.current_replica_set_id == rs.id {
        rs.revision = top + 1;
    }
    touch(&mut rs.meta, now);
    m.push(put(rs.clone(), version(&target.meta)));
    if st.current_replica_set_id != rs.id {
        st.previous_replica_set_id = std::mem::take(&mut st.current_replica_set_id);
    }
    st.current_replica_set_id = rs.id.clone();
    // The service's spec follows its target revision (as Swarm swaps the
    // spec with the previous one on rollback).
    if let Some(spec) = dep.spec.as_mut() {
        spec.template = rs.template.clone();
    }
    let st = dep.status.get_or_insert_with(Default::default);
    st.revision = rs.revision;
    st.update_state = state as i32;
    st.update_message = message;
    st.update_started_at = now;
    st.update_completed_at = 0;
    m
}

/// `service update`: the mutations for the new spec, or an error naming the
/// field. A template change (or `force`) starts a rollout.
pub fn update(
    data: &StoreData,
    dep: &Deployment,
    new_spec: ServiceSpec,
    force: bool,
    now: i64,
) -> Result<Vec<Mutation>, String> {
    let old_spec = dep.spec.clone().unwrap_or_default();
    let mut spec = with_defaults(new_spec);
    validate(&spec)?;
    if service_type(&spec) == ServiceType::ExternalName {
        return Err("type: a service that runs pods cannot become ExternalName; remove it and create it again".into());
    }
    if spec.name != old_spec.name {
        return Err(format!(
            "name: cannot be changed (from {} to {})",
            old_spec.name, spec.name
        ));
    }
    if spec.mode() != old_spec.mode() {
        return Err("mode: cannot be changed; remove and create the service again".into());
    }
    if spec.mode() == DeploymentMode::Global {
        spec.replicas = 0;
    }
    allocate_ports(data, &mut spec, &old_spec.name)?;
    super::secrets::resolve_references(data, &mut spec)?;

    let mut d2 = dep.clone();
    let template = template_of(&spec);
    let ds = d2.spec.get_or_insert_with(Default::default);
    ds.labels = spec.labels.clone();
    ds.replicas = spec.replicas;
    ds.template = Some(template.clone());
    ds.restart_policy = spec.restart_policy;
    ds.update_config = spec.update_config;
    ds.rollback_config = spec.rollback_config;
    touch(&mut d2.meta, now);

    let current_id = dep
        .status
        .as_ref()
        .map(|s| s.current_replica_set_id.clone())
        .unwrap_or_default();
    let current = data.replica_sets.get(&current_id);
    let current_template = current.and_then(|r| r.template.clone()).unwrap_or_default();
    let mut mutations = Vec::new();
    if force || current_template != template {
        let cause = describe_change(&current_template, &template);
        let reusable = (!force)
            .then(|| {
                data.replica_sets_of_deployment(&dep.id)
                    .into_iter()
                    .find(|r| r.template.as_ref() == Some(&template))
                    .cloned()
            })
            .flatten();
        let target = match reusable {
            Some(r) => r,
            None => ReplicaSet {
                id: new_id(),
                meta: None,
                deployment_id: dep.id.clone(),
                revision: 0,
                template: Some(template),
                replicas: spec.replicas,
                change_cause: cause.clone(),
            },
        };
        let mut m = retarget(
            data,
            &mut d2,
            &target,
            UpdateState::Updating,
            format!("update in progress: {cause}"),
            now,
        );
        // A new ReplicaSet has no meta yet, so its put is a create.
        mutations.append(&mut m);
    }
    mutations.insert(0, put(d2, version(&dep.meta)));
    if let Some(svc) = data.service_of_deployment(&dep.id) {
        // The Service follows the spec: ports, type, endpoint mode, labels.
        let mut s2 = service_object(&spec, svc.id.clone(), svc.deployment_id.clone(), svc.meta);
        if s2 != *svc {
            touch(&mut s2.meta, now);
            mutations.push(put(s2, version(&svc.meta)));
        }
    }
    Ok(mutations)
}

/// `service rollback` (to_revision 0: the previous revision) and
/// `rollout undo --to-revision N`, rolled by the rollback settings.
pub fn rollback(
    data: &StoreData,
    dep: &Deployment,
    to_revision: u64,
    now: i64,
) -> Result<Vec<Mutation>, String> {
    let name = dep
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let status = dep.status.clone().unwrap_or_default();
    let revisions = data.replica_sets_of_deployment(&dep.id);
    let target = if to_revision == 0 {
        data.replica_sets
            .get(&status.previous_replica_set_id)
            .ok_or_else(|| format!("service {name} has no previous revision to roll back to"))?
    } else {
        revisions
            .iter()
            .copied()
            .find(|r| r.revision == to_revision)
            .ok_or_else(|| {
                let kept: Vec<String> = revisions.iter().map(|r| r.revision.to_string()).collect();
                format!(
                    "service {name} has no revision {to_revision} (kept: {})",
                    kept.join(", ")
                )
            })?
    };
    if target.id == status.current_replica_set_id {
        return Err(format!(
            "service {name} is already at revision {}",
            target.revision
        ));
    }
    super::secrets::check_present(data, target.template.as_ref()).map_err(|e| {
        format!(
            "service {name}: cannot roll back to revision {}: {e}",
            target.revision
        )
    })?;
    let mut d2 = dep.clone();
    touch(&mut d2.meta, now);
    let mut m = retarget(
        data,
        &mut d2,
        target,
        UpdateState::RollbackStarted,
        format!("manual rollback to revision {}", target.revision),
        now,
    );
    m.insert(0, put(d2, version(&dep.meta)));
    Ok(m)
}

/// `rollout pause` (`pause` true) and `rollout resume`.
pub fn pause_or_resume(dep: &Deployment, pause: bool, now: i64) -> Result<Vec<Mutation>, String> {
    let name = dep
        .spec
        .as_ref()
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let mut d2 = dep.clone();
    let st = d2.status.get_or_insert_with(Default::default);
    let next = match (st.update_state(), pause) {
        (UpdateState::Updating, true) => UpdateState::Paused,
        (UpdateState::RollbackStarted, true) => UpdateState::RollbackPaused,
        (UpdateState::Paused, false) => UpdateState::Updating,
        (UpdateState::RollbackPaused, false) => UpdateState::RollbackStarted,
        (UpdateState::Paused | UpdateState::RollbackPaused, true) => {
            return Err(format!("the rollout of {name} is already paused"))
        }
        (UpdateState::Updating | UpdateState::RollbackStarted, false) => {
            return Err(format!("the rollout of {name} is not paused"))
        }
        _ => return Err(format!("service {name} has no rollout in progress")),
    };
    st.update_state = next as i32;
    if pause {
        st.update_message = "paused by user".into();
    } else {
        // Failures before the pause were dealt with by whoever resumed.
        st.update_message = "resumed".into();
        st.update_started_at = now;
    }
    touch(&mut d2.meta, now);
    Ok(vec![put(d2, version(&dep.meta))])
}

#[cfg(test)]
mod tests;
