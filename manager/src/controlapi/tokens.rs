//! Join tokens (`shoal join-token worker|manager [--rotate]`): a role's token
//! is `SHOAL-1-<CA digest>-<secret>`, the digest of the CA this manager
//! holds and the role's secret from the `Cluster` object in Raft. Rotating
//! writes a new secret through Raft, checked against the version read, so
//! the old token stops admitting new nodes on every manager at once.
//!
//! The Control API only ever sees the CA's digest, never the CA itself: its
//! private key cannot end up in an answer. An answer carries one role's
//! token, never the other role's secret.

use shoal_proto::{now_ms, Cluster, JoinTokenResponse, Mutation, NodeRole};
use tonic::Status;

use crate::ca::{CaDigest, JoinSecrets, JoinToken, Role};
use crate::objects::{touch, version};
use crate::store::{put, StoreData};

/// The role a request names: a token exists for workers and managers only.
pub fn requested_role(role: i32) -> Result<Role, Status> {
    match NodeRole::try_from(role) {
        Ok(NodeRole::Worker) => Ok(Role::Worker),
        Ok(NodeRole::Manager) => Ok(Role::Manager),
        _ => Err(Status::invalid_argument(format!(
            "role: {role} is not a role with a join token; use worker or manager"
        ))),
    }
}

/// The cluster object, or why there is none yet.
pub fn cluster(d: &StoreData) -> Result<&Cluster, Status> {
    d.cluster().ok_or_else(|| {
        Status::unavailable(
            "the cluster object is not in the store yet (the cluster is still starting); try again",
        )
    })
}

/// The current token of `role`.
pub fn token(cluster: &Cluster, digest: &CaDigest, role: Role) -> Result<JoinToken, Status> {
    let secrets = JoinSecrets::of_cluster(cluster);
    let secret = match role {
        Role::Manager => &secrets.manager,
        _ => &secrets.worker,
    };
    JoinToken::new(digest.clone(), secret).map_err(|e| {
        Status::failed_precondition(format!(
            "the stored {role} join secret is unusable ({e}); rotate it with \
             `shoal join-token --rotate {role}`"
        ))
    })
}

/// The answer for `role`: its token and where to join.
pub fn response(
    cluster: &Cluster,
    digest: &CaDigest,
    role: Role,
    join_addr: &str,
) -> Result<JoinTokenResponse, Status> {
    Ok(JoinTokenResponse {
        role: role.node_role().unwrap_or_default() as i32,
        token: token(cluster, digest, role)?.to_string(),
        join_addr: join_addr.to_string(),
    })
}

/// The write that replaces `role`'s secret with a fresh one, at the version
/// read (a concurrent change makes it conflict and the caller retries), and
/// the cluster as it will be.
pub fn rotate(cluster: &Cluster, role: Role) -> (Vec<Mutation>, Cluster) {
    let mut secrets = JoinSecrets::of_cluster(cluster);
    let mut next = cluster.clone();
    match role {
        Role::Manager => {
            secrets.rotate_manager();
            next.manager_join_secret = secrets.manager;
        }
        _ => {
            secrets.rotate_worker();
            next.worker_join_secret = secrets.worker;
        }
    }
    touch(&mut next.meta, now_ms());
    let at = version(&cluster.meta);
    (vec![put(next.clone(), at)], next)
}

/// The worker join command `shoal info` shows; empty (rather than an error)
/// while the cluster object is missing or its secret unusable.
pub fn worker_join_command(cluster: &Cluster, digest: &CaDigest, join_addr: &str) -> String {
    match token(cluster, digest, Role::Worker) {
        Ok(token) => format!("shoal join --token {token} {join_addr}"),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use shoal_proto::{Meta, MutationOutcome};

    use super::*;
    use crate::ca::{Ca, CaError};
    use crate::testutil::Fixture;

    /// A cluster in a store, as `shoal init` records it, and a CA on disk.
    struct Setup {
        fx: Fixture,
        ca: Ca,
        ca_dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let fx = Fixture::new();
        let secrets = JoinSecrets::generate();
        fx.apply(vec![put(
            Cluster {
                id: "c1".into(),
                meta: Some(Meta::default()),
                name: "default".into(),
                worker_join_secret: secrets.worker,
                manager_join_secret: secrets.manager,
                epoch: 1,
                removed_nodes: Vec::new(),
                gossip: None,
            },
            0,
        )]);
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(ca_dir.path(), "c1").unwrap();
        Setup { fx, ca, ca_dir }
    }

    fn stored(fx: &Fixture) -> Cluster {
        fx.store.read(|d| cluster(d).unwrap().clone())
    }

    #[test]
    fn the_token_carries_the_digest_of_the_ca_certificate_on_disk() {
        let s = setup();
        let on_disk = CaDigest::of_pem_file(&Ca::certificate_path(s.ca_dir.path())).unwrap();
        assert_eq!(&on_disk, s.ca.digest());
        let c = stored(&s.fx);
        let r = response(&c, s.ca.digest(), Role::Worker, "127.0.0.1:2377").unwrap();
        let parsed = JoinToken::parse(&r.token).unwrap();
        assert_eq!(parsed.digest(), &on_disk);
        assert!(r.token.starts_with(&format!("SHOAL-1-{on_disk}-")), "{r:?}");
        assert_eq!(r.join_addr, "127.0.0.1:2377");
        assert_eq!(r.role, NodeRole::Worker as i32);
        let secrets = JoinSecrets::of_cluster(&c);
        assert_eq!(secrets.admit(&parsed, &on_disk).unwrap(), Role::Worker);
        let m = response(&c, s.ca.digest(), Role::Manager, "x:1").unwrap();
        let m = JoinToken::parse(&m.token).unwrap();
        assert_eq!(secrets.admit(&m, &on_disk).unwrap(), Role::Manager);
        assert_eq!(
            worker_join_command(&c, &on_disk, "127.0.0.1:2377"),
            format!("shoal join --token {parsed} 127.0.0.1:2377")
        );
    }

    #[test]
    fn rotation_goes_through_the_store_and_rotates_the_old_token_out() {
        let s = setup();
        let digest = s.ca.digest();
        let before = stored(&s.fx);
        let old_worker = token(&before, digest, Role::Worker).unwrap();
        let manager = token(&before, digest, Role::Manager).unwrap();

        let (mutations, expected) = rotate(&before, Role::Worker);
        let result = s.fx.apply(mutations);
        assert!(crate::proposer::all_applied(&result), "{result:?}");
        let after = stored(&s.fx);
        assert_eq!(after.worker_join_secret, expected.worker_join_secret);
        assert_ne!(after.worker_join_secret, before.worker_join_secret);
        assert_eq!(after.manager_join_secret, before.manager_join_secret);

        let secrets = JoinSecrets::of_cluster(&after);
        let err = secrets.admit(&old_worker, digest).unwrap_err();
        assert!(matches!(err, CaError::TokenRefused), "{err}");
        assert!(err.to_string().contains("rotated out"), "{err}");
        let new_worker = token(&after, digest, Role::Worker).unwrap();
        assert_ne!(new_worker, old_worker);
        assert_eq!(secrets.admit(&new_worker, digest).unwrap(), Role::Worker);
        assert_eq!(secrets.admit(&manager, digest).unwrap(), Role::Manager);

        // A rotation computed from the cluster as it was before is a
        // conflict: it cannot undo the one that committed.
        let (stale, _) = rotate(&before, Role::Manager);
        let result = s.fx.apply(stale);
        assert_eq!(
            result.outcomes,
            vec![MutationOutcome::Conflict as i32],
            "{result:?}"
        );
        assert_eq!(stored(&s.fx), after);

        let (mutations, _) = rotate(&after, Role::Manager);
        assert!(crate::proposer::all_applied(&s.fx.apply(mutations)));
        let rotated = JoinSecrets::of_cluster(&stored(&s.fx));
        assert!(rotated.admit(&manager, digest).is_err());
        assert_eq!(rotated.admit(&new_worker, digest).unwrap(), Role::Worker);
    }

    #[test]
    fn an_answer_carries_no_key_material_and_not_the_other_roles_secret() {
        let s = setup();
        let c = stored(&s.fx);
        let key_pem = std::fs::read_to_string(Ca::key_path(s.ca_dir.path())).unwrap();
        let key_b64: String = key_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        use base64::Engine;
        let key_der = base64::engine::general_purpose::STANDARD
            .decode(&key_b64)
            .unwrap();
        for (role, other_secret) in [
            (Role::Worker, &c.manager_join_secret),
            (Role::Manager, &c.worker_join_secret),
        ] {
            let r = response(&c, s.ca.digest(), role, "127.0.0.1:2377").unwrap();
            let bytes = r.encode_to_vec();
            let text = format!("{r:?} {}", serde_json::to_string(&r).unwrap());
            assert!(!text.contains(other_secret.as_str()), "{role}: {text}");
            assert!(!text.contains("PRIVATE KEY"), "{role}: {text}");
            for chunk in key_b64.as_bytes().chunks(16) {
                let chunk = std::str::from_utf8(chunk).unwrap();
                assert!(!text.contains(chunk), "{role}: key text in {text}");
            }
            assert!(
                !bytes
                    .windows(16)
                    .any(|w| key_der.windows(16).any(|k| k == w)),
                "{role}: key bytes in the encoded answer"
            );
        }
    }

    #[test]
    fn only_worker_and_manager_have_tokens() {
        assert_eq!(
            requested_role(NodeRole::Worker as i32).unwrap(),
            Role::Worker
        );
        assert_eq!(
            requested_role(NodeRole::Manager as i32).unwrap(),
            Role::Manager
        );
        for bad in [NodeRole::Unspecified as i32, 7, -1] {
            let err = requested_role(bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().contains("use worker or manager"), "{err:?}");
        }
    }
}
