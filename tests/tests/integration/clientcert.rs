//! Client certificates and the remote CLI: `shoal ca client-cert --out D`
//! on a manager's socket, then `shoal -H tcp://HOST:PORT --tls-dir D ...`
//! against the manager's cluster port (mutual TLS, authorized as role
//! client). Refusals are checked for their message: no --tls-dir, another
//! cluster's credentials, an expired certificate, a certificate the
//! manager's TLS handshake rejects, one its authorization layer refuses. No
//! containers are started.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use shoal_manager::ca::{Ca, NodeCredentials, NodeKeys, PeerIdentity, Role};
use shoal_proto::defaults as d;
use shoal_tests::node::CLIENT_TIMEOUT;
use shoal_tests::{run, Node, Output};

/// `shoal -H tcp://127.0.0.1:<cluster port> [--tls-dir DIR] ARGS`, with
/// neither variable of the environment in the way.
fn remote(node: &Node, tls_dir: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(shoal_tests::shoal_bin());
    c.arg("-H")
        .arg(format!("tcp://127.0.0.1:{}", node.listen_port));
    if let Some(dir) = tls_dir {
        c.arg("--tls-dir").arg(dir);
    }
    c.args(args)
        .env_remove(d::HOST_ENV)
        .env_remove(d::TLS_DIR_ENV);
    run(&mut c, CLIENT_TIMEOUT)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn cluster_id(node: &Node) -> String {
    let info = node.shoal(&["info", "--format", "json"]).ok();
    let v: Value = serde_json::from_str(&info.stdout).unwrap();
    v["clusterId"].as_str().expect("clusterId").to_string()
}

/// Credentials signed by `ca` for `identity`, valid from `from` for
/// `validity`, saved in `dir`.
fn save_credentials(
    ca: &Ca,
    identity: &PeerIdentity,
    from: SystemTime,
    validity: Duration,
    dir: &Path,
) {
    let keys = NodeKeys::generate().unwrap();
    let cert = ca
        .issue_at(&keys.csr_der().unwrap(), identity, validity, from)
        .unwrap();
    NodeCredentials::new(cert, &keys, ca.certificate_der().clone())
        .unwrap()
        .save(dir)
        .unwrap();
}

#[test]
fn a_client_certificate_from_a_manager_lets_the_cli_work_remotely_over_mutual_tls() {
    let node = Node::start();
    let out_dir = node.data_dir().join("alice-client");
    let out_arg = out_dir.to_str().unwrap();
    let made = node
        .shoal(&["ca", "client-cert", "--out", out_arg, "--name", "alice"])
        .ok();
    let addr = format!("127.0.0.1:{}", node.listen_port);
    assert!(
        made.stdout.contains(&format!(
            "shoal -H tcp://{addr} --tls-dir {out_arg} service ls"
        )),
        "{made}"
    );
    assert_eq!(mode(&out_dir), 0o700);
    assert_eq!(mode(&out_dir.join("key.pem")), 0o600);
    let creds = NodeCredentials::load(&out_dir).unwrap();
    let id = creds.identity();
    assert_eq!(
        (id.node_id.as_str(), id.role, id.epoch),
        ("alice", Role::Client, d::FIRST_CLUSTER_EPOCH)
    );
    assert_eq!(id.cluster_id, cluster_id(&node));

    // The same files again: refused unless --force, and nothing changed.
    let again = node.shoal(&["ca", "client-cert", "--out", out_arg]).fails();
    assert!(again.stderr.contains("cert.pem already exists"), "{again}");
    assert!(again.stderr.contains("--force"), "{again}");
    let still = NodeCredentials::load(&out_dir).unwrap();
    assert_eq!(still.certificate_der(), creds.certificate_der());
    let bad = node
        .shoal(&["ca", "client-cert", "--out", out_arg, "--name", "Bad_Name"])
        .fails();
    assert!(bad.stderr.contains("--name"), "{bad}");
    assert!(bad.stderr.contains("a-z, 0-9 and '-'"), "{bad}");

    // Remote: the same cluster as through the socket.
    node.shoal(&[
        "service",
        "create",
        "--name",
        "db",
        "--type",
        "ExternalName",
        "--external-name",
        "db.example.org",
    ])
    .ok();
    let ls = remote(&node, Some(&out_dir), &["service", "ls"]).ok();
    assert!(ls.stdout.contains("db"), "{ls}");
    let info = remote(&node, Some(&out_dir), &["info"]).ok();
    assert!(info.stdout.contains(&cluster_id(&node)), "{info}");

    // A client may make a client certificate remotely, with a default name.
    let bob_dir = node.data_dir().join("bob-client");
    let bob = remote(
        &node,
        Some(&out_dir),
        &["ca", "client-cert", "--out", bob_dir.to_str().unwrap()],
    )
    .ok();
    let bob_id = NodeCredentials::load(&bob_dir).unwrap().identity().clone();
    assert!(bob_id.node_id.starts_with("client-"), "{bob}");
    remote(&node, Some(&bob_dir), &["service", "ls"]).ok();

    // Without --tls-dir: what to do.
    let bare = remote(&node, None, &["service", "ls"]).fails();
    assert!(
        bare.stderr.contains(&format!(
            "tcp://{addr} needs a client certificate: run `shoal ca client-cert --out DIR`"
        )),
        "{bare}"
    );
    assert!(bare.stderr.contains("--tls-dir DIR"), "{bare}");

    // A directory without credentials: the file it needs.
    let empty = node.data_dir().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let missing = remote(&node, Some(&empty), &["service", "ls"]).fails();
    assert!(
        missing
            .stderr
            .contains(&format!("cannot read {}/cert.pem", empty.display())),
        "{missing}"
    );
}

#[test]
fn credentials_of_another_cluster_an_expired_certificate_and_a_stranger_are_refused_clearly() {
    let node = Node::start();
    let cluster = cluster_id(&node);
    let now = SystemTime::now();
    const DAY: Duration = Duration::from_secs(24 * 3600);

    // A whole --tls-dir of another cluster: its CA does not know this manager.
    let other_ca = Ca::generate("othercluster", now).unwrap();
    let other_dir = node.data_dir().join("other-client");
    let mallory = PeerIdentity::new("mallory", Role::Client, "othercluster", 1).unwrap();
    save_credentials(&other_ca, &mallory, now, DAY, &other_dir);
    let out = remote(&node, Some(&other_dir), &["service", "ls"]).fails();
    assert!(
        out.stderr.contains(&format!(
            "is not a manager of the cluster whose CA is {}/ca.pem",
            other_dir.display()
        )),
        "{out}"
    );

    // Another cluster's certificate next to this cluster's CA: refused
    // before dialling, naming the directory.
    let mixed = node.data_dir().join("mixed-client");
    std::fs::create_dir_all(&mixed).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(other_dir.join(f), mixed.join(f)).unwrap();
    }
    std::fs::set_permissions(
        mixed.join("key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let ca_pem = node.data_dir().join(d::NODE_TLS_DIR).join("ca.pem");
    std::fs::copy(&ca_pem, mixed.join("ca.pem")).unwrap();
    let out = remote(&node, Some(&mixed), &["service", "ls"]).fails();
    assert!(out.stderr.contains("was not issued by this CA"), "{out}");
    assert!(out.stderr.contains(&mixed.display().to_string()), "{out}");

    // This cluster's CA (the test reads its key from the data dir), but an
    // expired certificate: refused here, with the way out.
    let ca = Ca::load(&node.data_dir().join(d::CA_DIR)).unwrap();
    let expired_dir = node.data_dir().join("expired-client");
    let carol = PeerIdentity::new("carol", Role::Client, &cluster, 1).unwrap();
    save_credentials(&ca, &carol, now - 3 * DAY, DAY, &expired_dir);
    let out = remote(&node, Some(&expired_dir), &["service", "ls"]).fails();
    assert!(out.stderr.contains("expired"), "{out}");
    assert!(
        out.stderr.contains("shoal ca client-cert --out DIR"),
        "{out}"
    );

    // Valid only from tomorrow (as a client whose clock is ahead would
    // think fine): the manager's TLS handshake rejects it, and the client
    // learns it on its first call. In TLS 1.3 the client may see the
    // manager's alert, or only the closed connection if it wrote first: the
    // message names the certificate either way.
    let early_dir = node.data_dir().join("early-client");
    let dave = PeerIdentity::new("dave", Role::Client, &cluster, 1).unwrap();
    save_credentials(&ca, &dave, now + DAY, DAY, &early_dir);
    for _ in 0..3 {
        let out = remote(&node, Some(&early_dir), &["service", "ls"]).fails();
        let err = &out.stderr;
        assert!(
            err.contains(&format!("the manager at 127.0.0.1:{}", node.listen_port)),
            "{out}"
        );
        assert!(
            err.contains(&format!(
                "refused the client certificate in --tls-dir {}",
                early_dir.display()
            )),
            "{out}"
        );
        assert!(err.contains("valid by its clock"), "{out}");
    }

    // A certificate of this CA for a worker the cluster does not know: the
    // manager refuses the call and says why.
    let stranger_dir = node.data_dir().join("stranger");
    let stranger = PeerIdentity::new("w-unknown", Role::Worker, &cluster, 1).unwrap();
    save_credentials(&ca, &stranger, now, DAY, &stranger_dir);
    let out = remote(&node, Some(&stranger_dir), &["service", "ls"]).fails();
    assert!(
        out.stderr.contains(&format!(
            "the manager at 127.0.0.1:{} refused the call",
            node.listen_port
        )),
        "{out}"
    );
    assert!(out.stderr.contains("w-unknown"), "{out}");
}
