//! Small helpers on generated types that every crate needs.

use crate::v1::{object, FileReference, Object, ObjectKind, PodState};

impl FileReference {
    /// Where the file appears in the container: an absolute target as is;
    /// a relative one under /run/secrets for a secret, under / for a config
    /// (Docker's rules). The manager refuses targets with `..`.
    pub fn container_path(&self, secret: bool) -> String {
        let t = self.target.trim();
        if t.starts_with('/') {
            t.to_string()
        } else if secret {
            format!("{}/{t}", crate::defaults::SECRETS_MOUNT_DIR)
        } else {
            format!("/{t}")
        }
    }
}

impl Object {
    /// The kind and id of the object, for keys and error messages.
    pub fn kind_and_id(&self) -> (ObjectKind, &str) {
        match &self.kind {
            Some(object::Kind::Cluster(o)) => (ObjectKind::Cluster, &o.id),
            Some(object::Kind::Node(o)) => (ObjectKind::Node, &o.id),
            Some(object::Kind::Deployment(o)) => (ObjectKind::Deployment, &o.id),
            Some(object::Kind::ReplicaSet(o)) => (ObjectKind::ReplicaSet, &o.id),
            Some(object::Kind::Pod(o)) => (ObjectKind::Pod, &o.id),
            Some(object::Kind::Service(o)) => (ObjectKind::Service, &o.id),
            Some(object::Kind::Secret(o)) => (ObjectKind::Secret, &o.id),
            Some(object::Kind::Config(o)) => (ObjectKind::Config, &o.id),
            None => (ObjectKind::Unspecified, ""),
        }
    }
}

impl PodState {
    /// A pod in a terminal state never runs again; its slot gets a new pod.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PodState::Complete
                | PodState::Shutdown
                | PodState::Failed
                | PodState::Rejected
                | PodState::Orphaned
                | PodState::Remove
        )
    }

    /// Lower-case name as `service ps` shows it ("running", "failed").
    pub fn display(self) -> &'static str {
        match self {
            PodState::New => "new",
            PodState::Pending => "pending",
            PodState::Assigned => "assigned",
            PodState::Accepted => "accepted",
            PodState::Preparing => "preparing",
            PodState::Ready => "ready",
            PodState::Starting => "starting",
            PodState::Running => "running",
            PodState::Complete => "complete",
            PodState::Shutdown => "shutdown",
            PodState::Failed => "failed",
            PodState::Rejected => "rejected",
            PodState::Orphaned => "orphaned",
            PodState::Remove => "remove",
        }
    }
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

macro_rules! into_object {
    ($($ty:ident => $variant:ident),* $(,)?) => {
        $(impl From<crate::v1::$ty> for Object {
            fn from(o: crate::v1::$ty) -> Self {
                Object { kind: Some(object::Kind::$variant(o)) }
            }
        })*
    };
}

into_object!(
    Cluster => Cluster,
    Node => Node,
    Deployment => Deployment,
    ReplicaSet => ReplicaSet,
    Pod => Pod,
    Service => Service,
    Secret => Secret,
    Config => Config,
);

/// A manager's refusal because it does not lead, naming the leader's cluster
/// address in the message and in the [`defaults::LEADER_METADATA`] header,
/// so that the caller (a node's agent, a joining manager) goes there next.
pub fn not_the_leader(leader_addr: &str) -> tonic::Status {
    let mut status = tonic::Status::unavailable(format!(
        "this manager is not the leader; the leader is at {leader_addr}"
    ));
    if let Ok(value) = leader_addr.parse() {
        status
            .metadata_mut()
            .insert(crate::defaults::LEADER_METADATA, value);
    }
    status
}

/// The leader's address a refusal made by [`not_the_leader`] names, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(crate::defaults::LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod leader_hint_tests {
    #[test]
    fn a_refusal_carries_the_leaders_address_back() {
        let s = super::not_the_leader("10.0.0.1:2377");
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().ends_with("the leader is at 10.0.0.1:2377"));
        assert_eq!(super::leader_hint(&s).as_deref(), Some("10.0.0.1:2377"));
        assert_eq!(super::leader_hint(&tonic::Status::unavailable("x")), None);
    }
}
