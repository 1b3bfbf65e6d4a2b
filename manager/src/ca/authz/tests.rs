use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use tonic::Code;

use super::*;
use crate::ca::testutil::{ca, credentials_at_epoch};
use crate::ca::Ca;

/// The store as the policy sees it, changeable mid-test.
pub(crate) struct FakeView {
    pub cluster_id: String,
    pub epoch: Mutex<u64>,
    pub roles: Mutex<HashMap<String, Role>>,
    pub removed: Mutex<HashSet<String>>,
    pub secrets: Mutex<crate::ca::JoinSecrets>,
}

impl FakeView {
    pub fn new(cluster_id: &str, nodes: &[(&str, Role)]) -> Arc<FakeView> {
        Arc::new(FakeView {
            cluster_id: cluster_id.into(),
            epoch: Mutex::new(1),
            roles: Mutex::new(nodes.iter().map(|(n, r)| (n.to_string(), *r)).collect()),
            removed: Mutex::new(HashSet::new()),
            secrets: Mutex::new(crate::ca::JoinSecrets::generate()),
        })
    }
}

impl ClusterView for FakeView {
    fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }
    fn epoch(&self) -> u64 {
        *self.epoch.lock().unwrap()
    }
    fn current_role(&self, node_id: &str) -> Option<Role> {
        self.roles.lock().unwrap().get(node_id).copied()
    }
    fn is_removed(&self, node_id: &str) -> bool {
        self.removed.lock().unwrap().contains(node_id)
    }
}

fn cert(ca: &Ca, node_id: &str, role: Role, epoch: u64) -> CertificateDer<'static> {
    credentials_at_epoch(ca, node_id, role, epoch)
        .certificate_der()
        .clone()
}

/// The outcome of `path` for the caller with `cert` (None: no certificate).
fn call(
    policy: &Policy<FakeView>,
    path: &str,
    cert: Option<&CertificateDer<'static>>,
) -> Result<Caller, Code> {
    let certs = cert.map(std::slice::from_ref);
    policy.authorize(path, certs).map_err(|s| s.code())
}

fn methods_of(service: &str) -> Vec<&'static str> {
    let prefix = format!("/shoal.v1.{service}/");
    let methods: Vec<_> = shoal_proto::METHOD_PATHS
        .iter()
        .copied()
        .filter(|p| p.starts_with(&prefix))
        .collect();
    assert!(!methods.is_empty(), "no {service} methods");
    methods
}

#[test]
fn every_rpc_of_every_service_is_in_the_table_and_nothing_else() {
    let missing: Vec<_> = shoal_proto::METHOD_PATHS
        .iter()
        .filter(|p| access(p).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "RPCs missing from ca::authz::TABLE (they are refused until added): {missing:?}"
    );
    let stale: Vec<_> = TABLE
        .iter()
        .map(|(p, _)| p)
        .filter(|p| !shoal_proto::METHOD_PATHS.contains(p))
        .collect();
    assert!(
        stale.is_empty(),
        "TABLE names RPCs that do not exist: {stale:?}"
    );
}

#[test]
fn a_method_not_in_the_table_is_denied_to_everyone() {
    let ca = ca("c1");
    let policy = Policy::new(FakeView::new("c1", &[("m1", Role::Manager)]));
    let m1 = cert(&ca, "m1", Role::Manager, 1);
    assert_eq!(
        call(&policy, "/shoal.v1.Control/DropEverything", Some(&m1)),
        Err(Code::PermissionDenied)
    );
    assert_eq!(
        call(&policy, "/shoal.v1.Control/DropEverything", None),
        Err(Code::PermissionDenied)
    );
}

#[test]
fn a_caller_without_a_certificate_reaches_only_the_bootstrap_call() {
    let policy = Policy::new(FakeView::new("c1", &[]));
    for path in shoal_proto::METHOD_PATHS {
        let outcome = call(&policy, path, None);
        if *path == "/shoal.v1.NodeCa/IssueNodeCertificate" {
            assert_eq!(outcome, Ok(Caller::Anonymous));
        } else {
            assert_eq!(outcome, Err(Code::Unauthenticated), "{path}");
        }
    }
    let status = policy
        .authorize("/shoal.v1.Control/ListServices", None)
        .unwrap_err();
    assert!(
        status.message().contains("shoal ca client-cert"),
        "{}",
        status.message()
    );
}

#[test]
fn each_role_reaches_exactly_its_services() {
    let ca = ca("c1");
    let view = FakeView::new("c1", &[("w1", Role::Worker), ("m1", Role::Manager)]);
    let policy = Policy::new(view);
    let worker = cert(&ca, "w1", Role::Worker, 1);
    let manager = cert(&ca, "m1", Role::Manager, 1);
    let client = cert(&ca, "alice", Role::Client, 1);

    for path in methods_of("Control") {
        assert_eq!(
            call(&policy, path, Some(&worker)),
            Err(Code::PermissionDenied),
            "{path}"
        );
        assert!(call(&policy, path, Some(&manager)).is_ok(), "{path}");
        assert!(call(&policy, path, Some(&client)).is_ok(), "{path}");
    }
    for path in methods_of("Raft") {
        assert_eq!(
            call(&policy, path, Some(&worker)),
            Err(Code::PermissionDenied),
            "{path}"
        );
        assert!(call(&policy, path, Some(&manager)).is_ok(), "{path}");
        assert_eq!(
            call(&policy, path, Some(&client)),
            Err(Code::PermissionDenied),
            "{path}"
        );
    }
    for path in methods_of("Dispatcher") {
        assert!(call(&policy, path, Some(&worker)).is_ok(), "{path}");
        assert!(call(&policy, path, Some(&manager)).is_ok(), "{path}");
        assert_eq!(
            call(&policy, path, Some(&client)),
            Err(Code::PermissionDenied),
            "{path}"
        );
    }
    let ok = call(&policy, "/shoal.v1.Dispatcher/Heartbeat", Some(&worker)).unwrap();
    let Caller::Peer { identity, role } = ok else {
        panic!("anonymous")
    };
    assert_eq!((identity.node_id.as_str(), role), ("w1", Role::Worker));
}

#[test]
fn a_demoted_manager_loses_manager_rights_at_once_and_a_promoted_worker_waits_for_renewal() {
    let ca = ca("c1");
    let view = FakeView::new("c1", &[("m1", Role::Manager), ("w1", Role::Worker)]);
    let policy = Policy::new(view.clone());
    let m1 = cert(&ca, "m1", Role::Manager, 1);
    let w1 = cert(&ca, "w1", Role::Worker, 1);
    let raft = "/shoal.v1.Raft/AppendEntries";
    assert!(call(&policy, raft, Some(&m1)).is_ok());

    view.roles.lock().unwrap().insert("m1".into(), Role::Worker);
    view.roles
        .lock()
        .unwrap()
        .insert("w1".into(), Role::Manager);
    assert_eq!(call(&policy, raft, Some(&m1)), Err(Code::PermissionDenied));
    assert!(call(&policy, "/shoal.v1.Dispatcher/Heartbeat", Some(&m1)).is_ok());
    assert_eq!(call(&policy, raft, Some(&w1)), Err(Code::PermissionDenied));
    // Once renewed with the store's role, the promoted node is a manager.
    assert!(call(&policy, raft, Some(&cert(&ca, "w1", Role::Manager, 1))).is_ok());
}

#[test]
fn removed_and_unknown_nodes_and_revoked_clients_are_refused() {
    let ca = ca("c1");
    let view = FakeView::new("c1", &[("w1", Role::Worker)]);
    let policy = Policy::new(view.clone());
    let heartbeat = "/shoal.v1.Dispatcher/Heartbeat";
    let w1 = cert(&ca, "w1", Role::Worker, 1);
    assert!(call(&policy, heartbeat, Some(&w1)).is_ok());

    view.removed.lock().unwrap().insert("w1".into());
    let status = policy
        .authorize(heartbeat, Some(std::slice::from_ref(&w1)))
        .unwrap_err();
    assert!(
        status.message().contains("worker w1 was removed"),
        "{}",
        status.message()
    );
    // Not even the bootstrap call takes a removed node's certificate.
    assert_eq!(
        call(&policy, "/shoal.v1.NodeCa/IssueNodeCertificate", Some(&w1)),
        Err(Code::PermissionDenied)
    );

    let stranger = cert(&ca, "w2", Role::Worker, 1);
    let status = policy
        .authorize(heartbeat, Some(std::slice::from_ref(&stranger)))
        .unwrap_err();
    assert!(
        status.message().contains("not a member"),
        "{}",
        status.message()
    );

    let alice = cert(&ca, "alice", Role::Client, 1);
    assert!(call(&policy, "/shoal.v1.Control/Info", Some(&alice)).is_ok());
    view.removed.lock().unwrap().insert("alice".into());
    assert_eq!(
        call(&policy, "/shoal.v1.Control/Info", Some(&alice)),
        Err(Code::PermissionDenied)
    );
}

#[test]
fn force_new_cluster_fences_managers_of_the_old_epoch_but_not_workers() {
    let ca = ca("c1");
    let view = FakeView::new("c1", &[("m1", Role::Manager), ("w1", Role::Worker)]);
    let policy = Policy::new(view.clone());
    let old_manager = cert(&ca, "m1", Role::Manager, 1);
    let old_worker = cert(&ca, "w1", Role::Worker, 1);
    *view.epoch.lock().unwrap() = 2;

    let status = policy
        .authorize(
            "/shoal.v1.Raft/RequestVote",
            Some(std::slice::from_ref(&old_manager)),
        )
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("predates cluster epoch 2"),
        "{}",
        status.message()
    );
    assert!(call(
        &policy,
        "/shoal.v1.Raft/RequestVote",
        Some(&cert(&ca, "m1", Role::Manager, 2))
    )
    .is_ok());
    assert!(call(&policy, "/shoal.v1.Dispatcher/Heartbeat", Some(&old_worker)).is_ok());

    // And an old manager refuses the new epoch's callers.
    *view.epoch.lock().unwrap() = 1;
    let status = policy
        .authorize(
            "/shoal.v1.Dispatcher/Heartbeat",
            Some(std::slice::from_ref(&cert(&ca, "w1", Role::Worker, 2))),
        )
        .unwrap_err();
    assert!(
        status.message().contains("fenced out"),
        "{}",
        status.message()
    );
}

#[test]
fn a_certificate_without_a_shoal_identity_is_unauthenticated() {
    let policy = Policy::new(FakeView::new("c1", &[]));
    let key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["x".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let certs = [foreign.der().clone()];
    let status = policy
        .authorize("/shoal.v1.Control/Info", Some(&certs))
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("no shoal identity"),
        "{}",
        status.message()
    );
}

#[test]
fn ensure_own_node_accepts_only_the_callers_node() {
    let ca = ca("c1");
    let policy = Policy::new(FakeView::new("c1", &[("w1", Role::Worker)]));
    let w1 = cert(&ca, "w1", Role::Worker, 1);
    let caller = call(&policy, "/shoal.v1.Dispatcher/UpdatePodStatus", Some(&w1)).unwrap();
    let mut request = tonic::Request::new(());
    request.extensions_mut().insert(caller);
    assert!(ensure_own_node(&request, "w1").is_ok());
    let status = ensure_own_node(&request, "w2").unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status
        .message()
        .contains("node w1 may only act for itself, not for node w2"));

    let bare = tonic::Request::new(());
    assert_eq!(
        ensure_own_node(&bare, "w1").unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut anonymous = tonic::Request::new(());
    anonymous.extensions_mut().insert(Caller::Anonymous);
    assert_eq!(
        ensure_own_node(&anonymous, "w1").unwrap_err().code(),
        Code::Unauthenticated
    );
}
