//! Fixtures shared by the controllers' unit tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shoal_proto::{
    restart_policy::Condition, ContainerSpec, Deployment, DeploymentSpec, DeploymentStatus,
    Mutation, Node, NodeAvailability, NodeSpec, NodeState, NodeStatus, Pod, PodState, PodStatus,
    PodTemplate, ReplicaSet, RestartPolicy,
};

use crate::objects::version;
use crate::proposer::batch;
use crate::store::{put, Store};

/// A store plus a Raft-like index counter, applying mutations directly.
pub struct Fixture {
    pub store: Arc<Store>,
    index: AtomicU64,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            store: Store::new(),
            index: AtomicU64::new(1),
        }
    }

    pub fn apply(&self, mutations: Vec<Mutation>) -> shoal_proto::BatchResult {
        let i = self.index.fetch_add(1, Ordering::SeqCst);
        self.store.apply(i, &batch(mutations, false))
    }

    /// A replicated deployment `name` with revision 1; returns its id.
    pub fn deployment(&self, name: &str, replicas: u64, policy: RestartPolicy) -> String {
        let id = format!("dep-{name}");
        let rs = ReplicaSet {
            id: format!("rs-{name}-1"),
            deployment_id: id.clone(),
            revision: 1,
            template: Some(PodTemplate {
                container: Some(ContainerSpec {
                    image: "img:v1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            replicas,
            ..Default::default()
        };
        let d = Deployment {
            id: id.clone(),
            spec: Some(DeploymentSpec {
                template: rs.template.clone(),
                name: name.into(),
                replicas,
                restart_policy: Some(policy),
                pod_history_limit: 5,
                revision_history_limit: 10,
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                current_replica_set_id: rs.id.clone(),
                revision: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.apply(vec![put(d, 0), put(rs, 0)]);
        id
    }

    /// Turns deployment `id` into a global one, with these constraints.
    pub fn make_global(&self, id: &str, constraints: &[&str]) {
        let mut d = self.store.read(|d| d.deployments[id].clone());
        let v = version(&d.meta);
        let spec = d.spec.as_mut().expect("spec");
        spec.mode = shoal_proto::DeploymentMode::Global as i32;
        spec.replicas = 0;
        spec.template.get_or_insert_with(Default::default).placement =
            Some(shoal_proto::Placement {
                constraints: constraints.iter().map(|c| c.to_string()).collect(),
                ..Default::default()
            });
        self.apply(vec![put(d, v)]);
    }

    /// Changes a stored node.
    pub fn edit_node(&self, id: &str, edit: impl FnOnce(&mut Node)) {
        let mut n = self.store.read(|d| d.nodes[id].clone());
        let v = version(&n.meta);
        edit(&mut n);
        self.apply(vec![put(n, v)]);
    }

    pub fn ready_node(&self, id: &str) {
        let n = Node {
            id: id.into(),
            spec: Some(NodeSpec {
                availability: NodeAvailability::Active as i32,
                ..Default::default()
            }),
            status: Some(NodeStatus {
                state: NodeState::Ready as i32,
                hostname: format!("host-{id}"),
                session_epoch: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        self.apply(vec![put(n, 0)]);
    }

    /// Sets a pod's observed state, as a worker report would.
    pub fn report(&self, pod_id: &str, state: PodState) {
        let mut p = self.pod(pod_id);
        let v = version(&p.meta);
        p.status = Some(PodStatus {
            state: state as i32,
            ip: "10.0.0.2".into(),
            ..Default::default()
        });
        self.apply(vec![put(p, v)]);
    }

    pub fn pod(&self, id: &str) -> Pod {
        self.store.read(|d| d.pods[id].clone())
    }

    /// Pods of a deployment sorted by (slot, attempt).
    pub fn pods(&self, deployment_id: &str) -> Vec<Pod> {
        let mut v: Vec<Pod> = self
            .store
            .read(|d| d.pods_of_deployment(deployment_id).cloned().collect());
        v.sort_by_key(|p| (p.slot, p.attempt));
        v
    }
}

pub fn policy(condition: Condition, delay_ms: u64, max_attempts: u64) -> RestartPolicy {
    RestartPolicy {
        condition: condition as i32,
        delay_ms,
        max_attempts,
        window_ms: 0,
    }
}

/// The pods a batch of mutations writes, with the version each expects
/// (0: the write creates the pod).
pub fn pods_written(mutations: &[Mutation]) -> Vec<(Pod, u64)> {
    mutations
        .iter()
        .filter_map(|m| match &m.op {
            Some(shoal_proto::mutation::Op::Put(o)) => match &o.kind {
                Some(shoal_proto::object::Kind::Pod(p)) => Some((p.clone(), m.expected_version)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
