//! What a node is told: its pods (with their templates and the secrets and
//! configs they use) and the endpoints of every service it must publish.

use std::collections::{HashMap, HashSet};

use shoal_proto::{
    port_config::PublishMode, Assignment, Endpoint, FilePayload, GossipConfig, Node, NodeRole, Pod,
    PodTemplate, ServiceEndpoints, SessionMessage,
};

use crate::keys::ClusterKey;
use crate::objects::{has_ingress_ports, is_ready, pod_name};
use crate::store::StoreData;

/// The payloads of the secrets and configs a template refers to, each once.
/// A secret is opened with the cluster key here, so its plaintext exists
/// only in this message, sent to the node of a pod that uses it. One that
/// is gone or cannot be opened is left out (and logged): the worker then
/// fails the pod, naming it, instead of running it without the file.
fn payloads(
    data: &StoreData,
    key: &ClusterKey,
    template: &Option<PodTemplate>,
) -> (Vec<FilePayload>, Vec<FilePayload>) {
    let Some(c) = template.as_ref().and_then(|t| t.container.as_ref()) else {
        return (vec![], vec![]);
    };
    let mut secrets: Vec<FilePayload> = Vec::new();
    for r in &c.secrets {
        if secrets.iter().any(|p| p.id == r.id) {
            continue;
        }
        let Some(spec) = data.secrets.get(&r.id).and_then(|s| s.spec.as_ref()) else {
            continue;
        };
        match key.open(&format!("secret {}", spec.name), &spec.data) {
            Ok(plain) => secrets.push(FilePayload {
                id: r.id.clone(),
                data: plain,
            }),
            Err(e) => tracing::debug!(error = %e, "secret not delivered"),
        }
    }
    let mut configs: Vec<FilePayload> = Vec::new();
    for r in &c.configs {
        if configs.iter().any(|p| p.id == r.id) {
            continue;
        }
        if let Some(spec) = data.configs.get(&r.id).and_then(|s| s.spec.as_ref()) {
            configs.push(FilePayload {
                id: r.id.clone(),
                data: spec.data.clone(),
            });
        }
    }
    (secrets, configs)
}

/// Marks of everything a node's message is built from (see
/// [`StoreData::pods_changed_on`]): equal marks mean an equal message, so a
/// session rebuilds only when they change (at thousands of nodes,
/// rebuilding every session's message on every change of the store was the
/// managers' main work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SessionInputs {
    /// The node's own pods (not their status).
    pods: u64,
    /// Everything but pods and worker nodes: templates, services, secrets,
    /// configs, the managers, the gossip keyring.
    others: u64,
    /// Pods on every node, counted only while a service publishes ingress
    /// ports, whose endpoints every node is sent; 0 otherwise.
    ingress: u64,
    /// The node's own role (of the worker nodes, only this one's is read).
    role: i32,
}

/// The marks a message for `node_id` depends on.
fn session_inputs(data: &StoreData, node_id: &str) -> SessionInputs {
    SessionInputs {
        pods: data.pods_changed_on(node_id),
        others: data.others_changed(),
        ingress: if data.publishes_ingress() {
            data.pods_changed()
        } else {
            0
        },
        role: node_role(data, node_id) as i32,
    }
}

/// The role a node is told it has.
fn node_role(data: &StoreData, node_id: &str) -> NodeRole {
    data.nodes
        .get(node_id)
        .and_then(|n| n.spec.as_ref())
        .map_or(NodeRole::Unspecified, |s| s.role())
}

/// What a node is sent of one pod: the pod without its observed status and
/// meta (so status reports alone change nothing), its template and the
/// files it uses. None when its replica set is gone.
fn assignment(data: &StoreData, key: &ClusterKey, p: &Pod) -> Option<Assignment> {
    let template = data.replica_sets.get(&p.replica_set_id)?.template.clone();
    let spec = data
        .deployments
        .get(&p.deployment_id)
        .and_then(|d| d.spec.as_ref());
    let service_name = spec.map_or_else(|| p.deployment_id.clone(), |s| s.name.clone());
    let stack = spec.map(|s| s.stack.clone()).unwrap_or_default();
    let mut pod = p.clone();
    pod.status = None;
    pod.meta = None;
    let (secrets, configs) = payloads(data, key, &template);
    Some(Assignment {
        pod_name: pod_name(&service_name, p),
        pod: Some(pod),
        template,
        service_name,
        stack,
        secrets,
        configs,
    })
}

/// Sorts assignments by pod name, then id, so equal sets make equal
/// messages.
fn sort_assignments(assignments: &mut [Assignment]) {
    assignments.sort_by(|a, b| {
        a.pod_name.cmp(&b.pod_name).then(
            a.pod
                .as_ref()
                .map(|p| &p.id)
                .cmp(&b.pod.as_ref().map(|p| &p.id)),
        )
    });
}

/// Every pod on the node, sorted.
fn all_assignments(data: &StoreData, key: &ClusterKey, node_id: &str) -> Vec<Assignment> {
    let mut assignments: Vec<Assignment> = data
        .pods_on_node(node_id)
        .filter_map(|p| assignment(data, key, p))
        .collect();
    sort_assignments(&mut assignments);
    assignments
}

/// Everything a node's message holds but its assignments: small, and sent
/// complete in every message.
fn session_rest(
    data: &StoreData,
    key: &ClusterKey,
    node_id: &str,
    session_id: &str,
    epoch: u64,
) -> SessionMessage {
    let services = data
        .services
        .values()
        .filter(|s| has_ingress_ports(&s.ports))
        .map(|s| {
            let mut endpoints: Vec<Endpoint> = data
                .pods_of_deployment(&s.deployment_id)
                .filter(|p| is_ready(p) && p.desired_state() == shoal_proto::PodState::Running)
                .map(|p| Endpoint {
                    pod_id: p.id.clone(),
                    ip: p.status.as_ref().map(|s| s.ip.clone()).unwrap_or_default(),
                    node_id: p.node_id.clone(),
                })
                .collect();
            endpoints.sort_by(|a, b| a.pod_id.cmp(&b.pod_id));
            ServiceEndpoints {
                service_id: s.id.clone(),
                service_name: s.name.clone(),
                ports: s
                    .ports
                    .iter()
                    .filter(|p| p.publish_mode() == PublishMode::Ingress)
                    .cloned()
                    .collect(),
                endpoints,
            }
        })
        .collect();

    SessionMessage {
        session_id: session_id.to_string(),
        session_epoch: epoch,
        // The heartbeats' answers set the period (it grows with the
        // cluster); this message may be rebuilt from older marks.
        heartbeat_period_ms: 0,
        assignments: vec![],
        services,
        managers: manager_addrs(data),
        gossip: gossip_config(data, key),
        role: node_role(data, node_id) as i32,
        incremental: false,
        removed_pod_ids: vec![],
    }
}

/// One worker session's view of what its node was last sent, from which it
/// makes the next message. The first message is complete. After it, a node
/// that accepts incremental messages is sent only the pods whose change
/// mark moved and the ids of those that left: at thousands of nodes every
/// placement write reaches every node, and resending each node's whole
/// list (and the node comparing all of it) made the fan-out grow with the
/// square of the pods per node. A change to anything every assignment reads
/// (a template, a service's name, a secret: the others' mark) or to the
/// node's role sends the complete set again.
pub struct SessionView {
    node_id: String,
    session_id: String,
    epoch: u64,
    /// The node asked for incremental messages.
    incremental: bool,
    /// The inputs of the last message; none before the first.
    inputs: Option<SessionInputs>,
    /// The pods sent, each with the change mark it was sent at.
    sent: HashMap<String, u64>,
    /// The last message's other fields (no assignments).
    rest: SessionMessage,
}

impl SessionView {
    pub fn new(node_id: &str, session_id: &str, epoch: u64, incremental: bool) -> SessionView {
        SessionView {
            node_id: node_id.to_string(),
            session_id: session_id.to_string(),
            epoch,
            incremental,
            inputs: None,
            sent: HashMap::new(),
            rest: SessionMessage::default(),
        }
    }

    /// The node's next message, or none when nothing it is sent changed.
    pub fn next(&mut self, data: &StoreData, key: &ClusterKey) -> Option<SessionMessage> {
        let now = session_inputs(data, &self.node_id);
        let before = self.inputs.replace(now);
        if before == Some(now) {
            return None;
        }
        let rest_moved = before
            .is_none_or(|b| (b.others, b.ingress, b.role) != (now.others, now.ingress, now.role));
        let rest_changed = rest_moved && {
            let rest = session_rest(data, key, &self.node_id, &self.session_id, self.epoch);
            let changed = rest != self.rest;
            self.rest = rest;
            changed
        };
        let pods_moved = before.is_none_or(|b| b.pods != now.pods);
        // Everything every assignment reads, or the node's role: all of
        // them again. A node that takes no increments gets all of them
        // whenever anything it is sent changed, and nothing otherwise (the
        // ingress mark moves with every pod write while an ingress service
        // exists, mostly without changing what this node is sent).
        let complete = before.is_none_or(|b| b.others != now.others || b.role != now.role)
            || (!self.incremental && (pods_moved || rest_changed));
        if complete {
            self.sent = data
                .pod_marks_on_node(&self.node_id)
                .map(|(id, mark)| (id.clone(), mark))
                .collect();
            return Some(SessionMessage {
                assignments: all_assignments(data, key, &self.node_id),
                ..self.rest.clone()
            });
        }
        if !self.incremental {
            return None;
        }
        let (assignments, removed_pod_ids) = if pods_moved {
            self.changes(data, key)
        } else {
            (vec![], vec![])
        };
        if assignments.is_empty() && removed_pod_ids.is_empty() && !rest_changed {
            return None;
        }
        Some(SessionMessage {
            assignments,
            removed_pod_ids,
            incremental: true,
            ..self.rest.clone()
        })
    }

    /// The pods added or changed since the last message (built) and the
    /// ids of those that left the node, sorted; records what is now sent.
    fn changes(&mut self, data: &StoreData, key: &ClusterKey) -> (Vec<Assignment>, Vec<String>) {
        let mut changed = Vec::new();
        let (mut seen, mut added) = (0, 0);
        for (id, mark) in data.pod_marks_on_node(&self.node_id) {
            match self.sent.get_mut(id) {
                Some(sent) => {
                    seen += 1;
                    if *sent == mark {
                        continue;
                    }
                    *sent = mark;
                }
                None => {
                    added += 1;
                    self.sent.insert(id.clone(), mark);
                }
            }
            if let Some(a) = data.pods.get(id).and_then(|p| assignment(data, key, p)) {
                changed.push(a);
            }
        }
        sort_assignments(&mut changed);
        // Every sent pod still on the node was seen above; the others left.
        let mut removed = Vec::new();
        if self.sent.len() > seen + added {
            let on_node: HashSet<&String> = data
                .pod_marks_on_node(&self.node_id)
                .map(|(id, _)| id)
                .collect();
            self.sent.retain(|id, _| {
                let keep = on_node.contains(id);
                if !keep {
                    removed.push(id.clone());
                }
                keep
            });
            removed.sort();
        }
        (changed, removed)
    }
}

/// The cluster gRPC address of every manager that has reported one, sorted,
/// so the message changes only when the set does.
pub fn manager_addrs(data: &StoreData) -> Vec<String> {
    addrs_of_managers(data, |s| &s.addr)
}

/// The gossip keys in the clear (primary first) and the managers' gossip
/// addresses as seeds; none before the leader made the first key.
fn gossip_config(data: &StoreData, key: &ClusterKey) -> Option<GossipConfig> {
    let ring = data.cluster()?.gossip.as_ref()?;
    Some(GossipConfig {
        keys: crate::gossipkeys::open(ring, key),
        seeds: addrs_of_managers(data, |s| &s.gossip_addr),
        version: ring.version,
    })
}

/// One address of every manager's status (`field`), sorted, deduplicated,
/// empty ones left out.
fn addrs_of_managers(
    data: &StoreData,
    field: impl Fn(&shoal_proto::NodeStatus) -> &String,
) -> Vec<String> {
    let is_manager = |n: &&Node| {
        n.spec
            .as_ref()
            .is_some_and(|s| s.role() == NodeRole::Manager)
    };
    let mut addrs: Vec<String> = data
        .nodes
        .values()
        .filter(is_manager)
        .filter_map(|n| n.status.as_ref().map(|s| field(s).clone()))
        .filter(|a| !a.is_empty())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The complete message for one node, built from scratch: what a
    /// session's first message holds.
    fn session_message(
        data: &StoreData,
        key: &ClusterKey,
        node_id: &str,
        session_id: &str,
        epoch: u64,
    ) -> SessionMessage {
        SessionMessage {
            assignments: all_assignments(data, key, node_id),
            ..session_rest(data, key, node_id, session_id, epoch)
        }
    }
    use shoal_proto::{
        Config, ContainerSpec, Deployment, DeploymentSpec, FileObjectSpec, FileReference, Node,
        Pod, PodState, ReplicaSet, Secret,
    };

    fn template(secrets: &[&str], configs: &[&str]) -> Option<PodTemplate> {
        let refs = |ids: &[&str]| {
            ids.iter()
                .map(|id| FileReference {
                    id: id.to_string(),
                    ..Default::default()
                })
                .collect()
        };
        Some(PodTemplate {
            container: Some(ContainerSpec {
                image: "img".into(),
                secrets: refs(secrets),
                configs: refs(configs),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Two nodes; `db` (secret pw, config conf) runs on node a, `web`
    /// (nothing) on node b.
    fn store(key: &ClusterKey) -> StoreData {
        let mut d = StoreData::default();
        for n in ["a", "b"] {
            d.nodes.insert(
                n.into(),
                Node {
                    id: n.into(),
                    ..Default::default()
                },
            );
        }
        d.secrets.insert(
            "pw".into(),
            Secret {
                id: "pw".into(),
                meta: None,
                spec: Some(FileObjectSpec {
                    name: "db_password".into(),
                    data: key.seal("secret db_password", b"hunter2").unwrap(),
                    ..Default::default()
                }),
            },
        );
        d.configs.insert(
            "conf".into(),
            Config {
                id: "conf".into(),
                meta: None,
                spec: Some(FileObjectSpec {
                    name: "db.conf".into(),
                    data: b"port=5432".to_vec(),
                    ..Default::default()
                }),
            },
        );
        for (svc, node, secrets, configs) in [
            ("db", "a", vec!["pw", "pw"], vec!["conf"]),
            ("web", "b", vec![], vec![]),
        ] {
            d.deployments.insert(
                svc.into(),
                Deployment {
                    id: svc.into(),
                    spec: Some(DeploymentSpec {
                        name: svc.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
            d.replica_sets.insert(
                format!("{svc}-1"),
                ReplicaSet {
                    id: format!("{svc}-1"),
                    deployment_id: svc.into(),
                    template: template(&secrets, &configs),
                    ..Default::default()
                },
            );
            d.put_pod(Pod {
                id: format!("{svc}-pod"),
                deployment_id: svc.into(),
                replica_set_id: format!("{svc}-1"),
                slot: 1,
                node_id: node.into(),
                desired_state: PodState::Running as i32,
                ..Default::default()
            });
        }
        d
    }

    #[test]
    fn payloads_go_only_to_the_node_of_a_pod_that_uses_them() {
        let key = ClusterKey::generate();
        let d = store(&key);
        let a = session_message(&d, &key, "a", "s", 1);
        assert_eq!(a.assignments.len(), 1);
        let db = &a.assignments[0];
        assert_eq!(db.service_name, "db");
        assert_eq!(
            db.secrets,
            vec![FilePayload {
                id: "pw".into(),
                data: b"hunter2".to_vec()
            }],
            "opened, and sent once although referenced twice"
        );
        assert_eq!(db.configs[0].data, b"port=5432");

        let b = session_message(&d, &key, "b", "s", 1);
        assert_eq!(b.assignments.len(), 1);
        assert!(b.assignments[0].secrets.is_empty());
        assert!(b.assignments[0].configs.is_empty());
        let encoded = prost::Message::encode_to_vec(&b);
        assert!(!encoded.windows(7).any(|w| w == b"hunter2"));
    }

    #[test]
    fn a_secret_sealed_by_another_key_is_not_delivered() {
        let d = store(&ClusterKey::generate());
        let other = ClusterKey::generate();
        let a = session_message(&d, &other, "a", "s", 1);
        assert!(a.assignments[0].secrets.is_empty());
        assert_eq!(a.assignments[0].configs.len(), 1);
    }

    /// A node in the store's current format, for [`Store::apply`].
    fn node(id: &str, role: NodeRole, addr: &str, state: shoal_proto::NodeState) -> Node {
        Node {
            id: id.into(),
            spec: Some(shoal_proto::NodeSpec {
                role: role as i32,
                ..Default::default()
            }),
            status: Some(shoal_proto::NodeStatus {
                state: state as i32,
                addr: addr.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn inputs_follow_a_nodes_own_role_and_the_managers_but_not_other_workers() {
        use crate::proposer::batch;
        use crate::store::{put_forced, Store};
        use shoal_proto::NodeState::{Down, Ready};

        let key = ClusterKey::generate();
        let store = Store::new();
        let write = |index, n: Node| store.apply(index, &batch(vec![put_forced(n)], false));
        write(1, node("a", NodeRole::Worker, "10.0.0.1:1", Ready));
        write(2, node("m", NodeRole::Manager, "10.0.0.9:4242", Ready));
        let inputs = |id| store.read(|d| session_inputs(d, id));
        let message = |id| store.read(|d| session_message(d, &key, id, "s", 1));
        let (a, a_message) = (inputs("a"), message("a"));

        // Another worker registers, then goes Down: nothing a's message
        // holds, so its inputs stay (and so does the message).
        write(3, node("b", NodeRole::Worker, "10.0.0.2:1", Ready));
        write(4, node("b", NodeRole::Worker, "10.0.0.2:1", Down));
        assert_eq!(inputs("a"), a);
        assert_eq!(message("a"), a_message);

        // A manager's new address is in every message: every input moves.
        let b = inputs("b");
        write(5, node("m", NodeRole::Manager, "10.0.0.9:5000", Ready));
        assert_ne!(inputs("a"), a);
        assert_ne!(inputs("b"), b);
        assert_eq!(message("b").managers, vec!["10.0.0.9:5000".to_string()]);

        // a's own role is in its message: its inputs move, b's stay.
        let (a, b) = (inputs("a"), inputs("b"));
        write(6, node("a", NodeRole::Manager, "10.0.0.1:1", Ready));
        assert_ne!(inputs("a"), a);
        assert_eq!(message("a").role(), NodeRole::Manager);
        assert_ne!(inputs("b"), b, "a manager more: its address is sent to b");
    }

    #[test]
    fn a_session_sends_what_changed_after_its_first_complete_message() {
        use crate::proposer::batch;
        use crate::store::{delete, put_forced, Store};
        use shoal_proto::{Mutation, ObjectKind, PodStatus};

        let key = ClusterKey::generate();
        let store = Store::new();
        let index = std::cell::Cell::new(0);
        let write = |m: Vec<Mutation>| {
            index.set(index.get() + 1);
            store.apply(index.get(), &batch(m, false));
        };
        let pod = |id: &str, node: &str| Pod {
            id: id.into(),
            deployment_id: "db".into(),
            replica_set_id: "db-1".into(),
            slot: 1,
            node_id: node.into(),
            desired_state: PodState::Running as i32,
            ..Default::default()
        };
        // The pod as its node reports it in `state`.
        let reported = |id: &str, node: &str, state: PodState| Pod {
            status: Some(PodStatus {
                state: state as i32,
                ..Default::default()
            }),
            ..pod(id, node)
        };
        let replica_set = |secrets: &[&str]| ReplicaSet {
            id: "db-1".into(),
            deployment_id: "db".into(),
            template: template(secrets, &[]),
            ..Default::default()
        };
        let ids = |m: &SessionMessage| -> Vec<String> {
            m.assignments
                .iter()
                .map(|a| a.pod.as_ref().unwrap().id.clone())
                .collect()
        };
        write(vec![
            put_forced(Deployment {
                id: "db".into(),
                spec: Some(DeploymentSpec {
                    name: "db".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            put_forced(replica_set(&[])),
            put_forced(node(
                "m",
                NodeRole::Manager,
                "10.0.0.9:4242",
                shoal_proto::NodeState::Ready,
            )),
            put_forced(pod("p1", "a")),
        ]);
        let mut view = SessionView::new("a", "s", 7, true);
        let next = |view: &mut SessionView| store.read(|d| view.next(d, &key));

        let first = next(&mut view).expect("a first message");
        assert!(!first.incremental);
        assert_eq!(ids(&first), ["p1"]);
        assert_eq!((first.session_id.as_str(), first.session_epoch), ("s", 7));
        assert_eq!(first.managers, ["10.0.0.9:4242"]);
        assert!(next(&mut view).is_none(), "nothing changed");

        // A pod added on a and one on b: a is sent its new one alone, with
        // the other fields whole.
        write(vec![put_forced(pod("p2", "a")), put_forced(pod("p3", "b"))]);
        let m = next(&mut view).expect("p2 added");
        assert!(m.incremental);
        assert_eq!(ids(&m), ["p2"]);
        assert!(m.removed_pod_ids.is_empty());
        assert_eq!(m.managers, first.managers);

        // A status report alone: nothing to send.
        write(vec![put_forced(reported("p1", "a", PodState::Running))]);
        assert!(
            next(&mut view).is_none(),
            "a status report is not sent back"
        );

        // A change of what the node runs: that pod alone.
        let mut stopping = pod("p2", "a");
        stopping.desired_state = PodState::Shutdown as i32;
        write(vec![put_forced(stopping)]);
        let m = next(&mut view).expect("p2 stopping");
        assert_eq!(ids(&m), ["p2"]);
        assert_eq!(
            m.assignments[0].pod.as_ref().unwrap().desired_state(),
            PodState::Shutdown
        );

        // p1 moves to b and p2 is deleted: both leave a.
        write(vec![
            put_forced(pod("p1", "b")),
            delete(ObjectKind::Pod, "p2", 0),
        ]);
        let m = next(&mut view).expect("p1 and p2 left");
        assert!(m.incremental && m.assignments.is_empty());
        assert_eq!(m.removed_pod_ids, ["p1", "p2"]);

        // The template every assignment reads changes: the complete set.
        write(vec![put_forced(pod("p4", "a")), put_forced(pod("p5", "a"))]);
        next(&mut view).expect("p4 and p5 added");
        write(vec![put_forced(replica_set(&["pw"]))]);
        let m = next(&mut view).expect("the template changed");
        assert!(!m.incremental);
        assert_eq!(ids(&m), ["p4", "p5"]);
        assert_eq!(
            m.assignments[0]
                .template
                .as_ref()
                .unwrap()
                .container
                .as_ref()
                .unwrap()
                .secrets[0]
                .id,
            "pw"
        );

        // A node that did not ask for increments is sent its whole set.
        let mut whole = SessionView::new("a", "s", 7, false);
        assert_eq!(ids(&next(&mut whole).unwrap()), ["p4", "p5"]);
        write(vec![put_forced(pod("p6", "a"))]);
        let m = next(&mut whole).expect("p6 added");
        assert!(!m.incremental);
        assert_eq!(ids(&m), ["p4", "p5", "p6"]);
        // And both agree with the complete message built from scratch.
        let incremental = next(&mut view).expect("p6 added");
        assert_eq!(ids(&incremental), ["p6"]);
        assert_eq!(
            m.assignments,
            store
                .read(|d| session_message(d, &key, "a", "s", 7))
                .assignments
        );

        // A service publishing an ingress port: every node is sent its
        // endpoints, so every pod write moves every session's inputs. A
        // write that changes none of them sends nothing, to either node.
        write(vec![put_forced(shoal_proto::Service {
            id: "svc".into(),
            name: "db".into(),
            deployment_id: "db".into(),
            ports: vec![shoal_proto::PortConfig {
                publish_mode: PublishMode::Ingress as i32,
                ..Default::default()
            }],
            ..Default::default()
        })]);
        assert_eq!(next(&mut whole).expect("a new service").services.len(), 1);
        assert!(!next(&mut view).expect("a new service").incremental);
        write(vec![put_forced(reported("p3", "b", PodState::Preparing))]);
        assert!(
            next(&mut whole).is_none(),
            "not an endpoint: nothing changed"
        );
        assert!(
            next(&mut view).is_none(),
            "not an endpoint: nothing changed"
        );
    }
}
