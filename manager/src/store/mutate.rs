//! Applying batches of mutations with optimistic version checks, and the
//! small constructors proposers use to build them.

use std::collections::HashMap;

use shoal_proto::defaults::BATCH_FORMAT;
use shoal_proto::{
    mutation, object, Batch, BatchResult, Meta, Mutation, MutationOutcome, Object, ObjectKind,
    ObjectRef,
};

use super::StoreData;

/// A create (expected version 0) or an update of the version the caller read.
pub fn put(obj: impl Into<Object>, expected_version: u64) -> Mutation {
    Mutation {
        op: Some(mutation::Op::Put(obj.into())),
        expected_version,
        force: false,
    }
}

/// A write that wins whatever the stored version (idempotent status writes).
pub fn put_forced(obj: impl Into<Object>) -> Mutation {
    Mutation {
        op: Some(mutation::Op::Put(obj.into())),
        expected_version: 0,
        force: true,
    }
}

/// A delete; `expected_version` 0 deletes whatever version is stored.
pub fn delete(kind: ObjectKind, id: impl Into<String>, expected_version: u64) -> Mutation {
    Mutation {
        op: Some(mutation::Op::Delete(ObjectRef {
            kind: kind as i32,
            id: id.into(),
        })),
        expected_version,
        force: false,
    }
}

type Key = (i32, String);

/// What a mutation would do to the store, decided before anything changes.
fn check(current: Option<u64>, m: &Mutation) -> MutationOutcome {
    match &m.op {
        Some(mutation::Op::Put(_)) if m.force => MutationOutcome::Applied,
        Some(mutation::Op::Put(_)) => match (current, m.expected_version) {
            (None, 0) => MutationOutcome::Applied,
            (Some(_), 0) => MutationOutcome::Exists,
            (None, _) => MutationOutcome::NotFound,
            (Some(v), e) if v == e => MutationOutcome::Applied,
            (Some(_), _) => MutationOutcome::Conflict,
        },
        Some(mutation::Op::Delete(_)) => match current {
            None => MutationOutcome::NotFound,
            Some(_) if m.force || m.expected_version == 0 => MutationOutcome::Applied,
            Some(v) if v == m.expected_version => MutationOutcome::Applied,
            Some(_) => MutationOutcome::Conflict,
        },
        None => MutationOutcome::Skipped,
    }
}

fn key_of(m: &Mutation) -> Option<Key> {
    match &m.op {
        Some(mutation::Op::Put(o)) => {
            let (k, id) = o.kind_and_id();
            (k != ObjectKind::Unspecified && !id.is_empty()).then(|| (k as i32, id.to_owned()))
        }
        Some(mutation::Op::Delete(r)) => Some((r.kind, r.id.clone())),
        None => None,
    }
}

fn stored_version(data: &StoreData, key: &Key) -> Option<u64> {
    let (kind, id) = key;
    let meta = match ObjectKind::try_from(*kind).unwrap_or(ObjectKind::Unspecified) {
        ObjectKind::Cluster => data.clusters.get(id).map(|o| &o.meta),
        ObjectKind::Node => data.nodes.get(id).map(|o| &o.meta),
        ObjectKind::Deployment => data.deployments.get(id).map(|o| &o.meta),
        ObjectKind::ReplicaSet => data.replica_sets.get(id).map(|o| &o.meta),
        ObjectKind::Pod => data.pods.get(id).map(|o| &o.meta),
        ObjectKind::Service => data.services.get(id).map(|o| &o.meta),
        ObjectKind::Secret => data.secrets.get(id).map(|o| &o.meta),
        ObjectKind::Config => data.configs.get(id).map(|o| &o.meta),
        ObjectKind::Unspecified => return None,
    };
    meta.map(|m| m.as_ref().map_or(0, |m| m.version))
}

fn remove(data: &mut StoreData, key: &Key) {
    let (kind, id) = key;
    match ObjectKind::try_from(*kind).unwrap_or(ObjectKind::Unspecified) {
        ObjectKind::Pod => drop(data.remove_pod(id)),
        other => data.remove_other(other, id),
    }
}

/// Stamps the Raft index as the object's version.
fn with_version(mut obj: Object, index: u64) -> Object {
    let meta: &mut Option<Meta> = match &mut obj.kind {
        Some(object::Kind::Cluster(o)) => &mut o.meta,
        Some(object::Kind::Node(o)) => &mut o.meta,
        Some(object::Kind::Deployment(o)) => &mut o.meta,
        Some(object::Kind::ReplicaSet(o)) => &mut o.meta,
        Some(object::Kind::Pod(o)) => &mut o.meta,
        Some(object::Kind::Service(o)) => &mut o.meta,
        Some(object::Kind::Secret(o)) => &mut o.meta,
        Some(object::Kind::Config(o)) => &mut o.meta,
        None => return obj,
    };
    meta.get_or_insert_with(Meta::default).version = index;
    obj
}

fn apply_one(data: &mut StoreData, index: u64, m: &Mutation, key: &Key) {
    match &m.op {
        Some(mutation::Op::Put(o)) => data.insert(with_version(o.clone(), index)),
        Some(mutation::Op::Delete(_)) => remove(data, key),
        None => {}
    }
}

/// Applies `batch` at `index`. Atomic batches apply all or nothing (the
/// failing mutations keep their outcome, the others report Skipped); other
/// batches apply each mutation that passes its own check.
pub(super) fn apply_batch(data: &mut StoreData, index: u64, batch: &Batch) -> BatchResult {
    let n = batch.mutations.len();
    if batch.format != BATCH_FORMAT {
        tracing::error!(
            format = batch.format,
            index,
            "batch of an unknown format skipped; is this manager older than the leader?"
        );
        return BatchResult {
            index,
            outcomes: vec![MutationOutcome::Skipped as i32; n],
        };
    }
    let keys: Vec<Option<Key>> = batch.mutations.iter().map(key_of).collect();

    if batch.atomic {
        // Check in order against the versions earlier mutations of the same
        // batch would leave behind.
        let mut staged: HashMap<Key, Option<u64>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(n);
        for (m, key) in batch.mutations.iter().zip(&keys) {
            let Some(key) = key else {
                outcomes.push(MutationOutcome::Skipped);
                continue;
            };
            let current = match staged.get(key) {
                Some(v) => *v,
                None => stored_version(data, key),
            };
            let outcome = check(current, m);
            if outcome == MutationOutcome::Applied {
                let after = match m.op {
                    Some(mutation::Op::Delete(_)) => None,
                    _ => Some(index),
                };
                staged.insert(key.clone(), after);
            }
            outcomes.push(outcome);
        }
        let all_ok = outcomes.iter().all(|o| *o == MutationOutcome::Applied);
        if all_ok {
            for (m, key) in batch.mutations.iter().zip(&keys) {
                if let Some(key) = key {
                    apply_one(data, index, m, key);
                }
            }
        } else {
            for o in outcomes.iter_mut() {
                if *o == MutationOutcome::Applied {
                    *o = MutationOutcome::Skipped;
                }
            }
        }
        return BatchResult {
            index,
            outcomes: outcomes.into_iter().map(|o| o as i32).collect(),
        };
    }

    let outcomes = batch
        .mutations
        .iter()
        .zip(&keys)
        .map(|(m, key)| {
            let Some(key) = key else {
                return MutationOutcome::Skipped as i32;
            };
            let outcome = check(stored_version(data, key), m);
            if outcome == MutationOutcome::Applied {
                apply_one(data, index, m, key);
            }
            outcome as i32
        })
        .collect();
    BatchResult { index, outcomes }
}
