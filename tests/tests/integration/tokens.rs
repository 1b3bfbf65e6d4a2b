//! The cluster CA `shoal init` makes and the join tokens built on it:
//! `SHOAL-1-<digest of DATA_DIR/ca/ca.crt>-<secret>`, shown and rotated by
//! `shoal join-token`, kept across a `kill -9` and a restart, removed by
//! `leave --force`. No containers are started.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use shoal_manager::ca::{Ca, CaDigest, JoinToken};
use shoal_proto::defaults as d;
use shoal_tests::node::alive;
use shoal_tests::{wait_for, Node};

const WORKER_HEADER: &str = "To add a worker to this cluster, run the following command:";
const MANAGER_HEADER: &str = "To add a manager to this cluster, run the following command:";

fn ca_dir(node: &Node) -> PathBuf {
    node.data_dir().join(d::CA_DIR)
}

/// The digest of the CA certificate file, computed here from the file.
fn digest_on_disk(node: &Node) -> CaDigest {
    let path = Ca::certificate_path(&ca_dir(node));
    CaDigest::of_pem_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The token and address of the one `shoal join --token T ADDR` line in `out`.
fn join_line(out: &str) -> (JoinToken, String) {
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.trim_start().starts_with("shoal join --token "))
        .collect();
    let [line] = lines[..] else {
        panic!("expected one `shoal join --token` line in:\n{out}");
    };
    assert!(line.starts_with("    shoal join"), "not indented: {line:?}");
    let words: Vec<&str> = line.split_whitespace().collect();
    let [_, _, _, token, addr] = words[..] else {
        panic!("expected `shoal join --token TOKEN ADDR`, got {line:?}");
    };
    let token = JoinToken::parse(token).unwrap_or_else(|e| panic!("{line:?}: {e}"));
    (token, addr.to_string())
}

fn quiet_token(node: &Node, role: &str) -> String {
    let out = node.shoal(&["join-token", "-q", role]).ok();
    let token = out.stdout.trim_end_matches('\n');
    assert_eq!(
        out.stdout.lines().count(),
        1,
        "-q prints only the token:\n{out}"
    );
    JoinToken::parse(token).unwrap_or_else(|e| panic!("{out}: {e}"));
    token.to_string()
}

#[test]
fn init_prints_a_worker_token_with_the_digest_of_the_ca_it_made() {
    let node = Node::start();
    let out = &node.init.stdout;
    let addr = format!("127.0.0.1:{}", node.listen_port);
    let (token, join_addr) = join_line(out);
    assert_eq!(token.digest(), &digest_on_disk(&node), "{out}");
    assert_eq!(join_addr, addr, "{out}");
    let expected = format!(
        "Current node ({}) is now a manager.\n\n{WORKER_HEADER}\n\n    shoal join --token {token} {addr}\n\n\
         To add a manager to this cluster, run 'shoal join-token manager' and follow the instructions.\n",
        node.node_id
    );
    assert!(
        out.ends_with(&expected),
        "init printed:\n{out}\nexpected it to end with:\n{expected}"
    );

    let key = Ca::key_path(&ca_dir(&node));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    let tls_key = node.data_dir().join(d::NODE_TLS_DIR).join("key.pem");
    let mode = std::fs::metadata(&tls_key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", tls_key.display());

    // `join-token worker` gives the command init printed; `info` shows it.
    let worker = node.shoal(&["join-token", "worker"]).ok();
    assert_eq!(
        worker.stdout,
        format!("{WORKER_HEADER}\n\n    shoal join --token {token} {addr}\n")
    );
    assert_eq!(quiet_token(&node, "worker"), token.to_string());
    let info = node.shoal(&["info"]).ok();
    assert!(
        info.stdout
            .contains(&format!("shoal join --token {token} {addr}")),
        "{info}"
    );

    // The manager token: same CA, another secret.
    let manager = node.shoal(&["join-token", "manager"]).ok();
    assert!(manager.stdout.starts_with(MANAGER_HEADER), "{manager}");
    let (manager_token, _) = join_line(&manager.stdout);
    assert_eq!(manager_token.digest(), token.digest());
    assert_ne!(manager_token.secret(), token.secret());
    assert_eq!(quiet_token(&node, "manager"), manager_token.to_string());

    // No answer carries the CA key, or the other role's secret.
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let info_json = node.shoal(&["info", "--format", "json"]).ok();
    for out in [&worker, &manager, &info, &info_json] {
        for chunk in key_body.as_bytes().chunks(20) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(!out.stdout.contains(chunk), "CA key text in:\n{out}");
        }
    }
    for out in [&worker, &info, &info_json] {
        assert!(
            !out.stdout.contains(manager_token.secret()),
            "manager secret in:\n{out}"
        );
    }
    assert!(!manager.stdout.contains(token.secret()), "{manager}");

    let bad = node.shoal(&["join-token", "boss"]).fails();
    assert!(bad.stderr.contains("invalid value 'boss'"), "{bad}");
}

#[test]
fn rotation_replaces_one_token_and_a_restart_keeps_the_ca_and_the_rotated_token() {
    let node = Node::start();
    let digest = digest_on_disk(&node);
    let worker = quiet_token(&node, "worker");
    let manager = quiet_token(&node, "manager");

    let rotated = node.shoal(&["join-token", "--rotate", "worker"]).ok();
    assert!(
        rotated
            .stdout
            .starts_with("Successfully rotated worker join token.\n\n"),
        "{rotated}"
    );
    let (new_worker, _) = join_line(&rotated.stdout);
    assert_ne!(new_worker.to_string(), worker);
    assert_eq!(new_worker.digest(), &digest);
    assert_eq!(quiet_token(&node, "worker"), new_worker.to_string());
    assert_eq!(
        quiet_token(&node, "manager"),
        manager,
        "the other role's token changed"
    );

    let q = node
        .shoal(&["join-token", "manager", "--rotate", "-q"])
        .ok();
    let new_manager = q.stdout.trim_end().to_string();
    assert_ne!(new_manager, manager);
    assert_eq!(quiet_token(&node, "manager"), new_manager);

    node.kill9();
    let out = node.resume();
    assert!(
        out.success(),
        "{out}\n--- daemon log\n{}",
        node.log_tail(30)
    );
    assert_eq!(
        digest_on_disk(&node),
        digest,
        "the CA changed across a restart"
    );
    assert_eq!(quiet_token(&node, "worker"), new_worker.to_string());
    assert_eq!(quiet_token(&node, "manager"), new_manager);
}

#[test]
fn restart_refuses_a_missing_ca_key_and_makes_a_ca_for_a_data_dir_from_before() {
    let node = Node::start();
    let key = Ca::key_path(&ca_dir(&node));

    // A CA without its key: refused, naming the file.
    node.kill9();
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let out = node.resume();
    assert!(!out.success(), "started without the CA key:\n{out}");
    let text = format!("{}{}", out.stderr, node.log_tail(20));
    assert!(text.contains("cannot load the cluster CA"), "{text}");
    assert!(text.contains(&key.display().to_string()), "{text}");

    // The key back with the wrong mode: refused with the fix.
    std::fs::write(&key, &saved).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = node.resume();
    assert!(
        !out.success(),
        "started with a world-readable CA key:\n{out}"
    );
    let text = format!("{}{}", out.stderr, node.log_tail(20));
    assert!(text.contains("chmod 600"), "{text}");

    // A data dir from before the CA existed: made on start, with a warning.
    std::fs::remove_dir_all(ca_dir(&node)).unwrap();
    std::fs::remove_dir_all(node.data_dir().join(d::NODE_TLS_DIR)).unwrap();
    let out = node.resume();
    assert!(
        out.success(),
        "{out}\n--- daemon log\n{}",
        node.log_tail(30)
    );
    assert!(
        node.log().contains("no cluster CA in this data dir"),
        "{}",
        node.log_tail(30)
    );
    let token = JoinToken::parse(&quiet_token(&node, "worker")).unwrap();
    assert_eq!(token.digest(), &digest_on_disk(&node));
}

#[test]
fn leave_force_removes_the_ca_and_the_node_certificate() {
    let node = Node::start();
    let pid = node.pid().expect("shoal.pid");
    assert!(ca_dir(&node).is_dir());
    node.shoal(&["leave", "--force"]).ok();
    wait_for("the daemon to exit", Duration::from_secs(30), || {
        if alive(pid) {
            Err(format!("pid {pid} alive"))
        } else {
            Ok(())
        }
    });
    for gone in [d::CA_DIR, d::NODE_TLS_DIR, d::CLUSTER_KEY_FILE, "node.json"] {
        let p = node.data_dir().join(gone);
        assert!(
            !p.exists(),
            "{} is still there after leave --force",
            p.display()
        );
    }
}
