//! The CLI's own behaviour: init's output, version and info, errors for a
//! missing daemon and for bad input.

use std::process::Command;
use std::time::Duration;

use shoal_tests::{run, shoal_bin, Node};

const T: Duration = Duration::from_secs(30);

#[test]
fn init_prints_cluster_id_and_join_command_and_serves_at_once() {
    let node = Node::start();
    let out = &node.init;
    assert!(out.success(), "{out}");
    let join = out
        .stdout
        .lines()
        .find(|l| l.contains("shoal join --token "))
        .unwrap_or_else(|| panic!("init printed no `shoal join --token` line:\n{out}"));
    let token = join
        .split("--token ")
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .next()
        .unwrap_or("");
    assert!(!token.is_empty(), "empty join token in {join:?}");
    assert!(
        out.stdout.to_lowercase().contains("cluster"),
        "init did not print the cluster id:\n{out}"
    );
    // init returns once the daemon serves: no retry here.
    let ls = node.shoal(&["service", "ls"]).ok();
    let header: Vec<&str> = ls
        .stdout
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"],
        "{ls}"
    );
    assert_eq!(
        ls.stdout.lines().count(),
        1,
        "a new cluster has no services:\n{ls}"
    );
    // The cluster id init printed is the one info reports.
    let info = node.shoal(&["info", "--format", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&info.stdout)
        .unwrap_or_else(|e| panic!("info --format json: {e}\n{info}"));
    let cluster_id = find_key(&v, &["ClusterID", "clusterId", "cluster_id", "ClusterId"])
        .unwrap_or_else(|| panic!("info --format json has no cluster id:\n{info}"));
    assert!(
        out.stdout.contains(&cluster_id),
        "init's output does not show the cluster id {cluster_id}:\n{out}"
    );
}

/// The first string value under one of `keys`, anywhere in `v`.
fn find_key(v: &serde_json::Value, keys: &[&str]) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => {
            for k in keys {
                if let Some(serde_json::Value::String(s)) = m.get(*k) {
                    if !s.is_empty() {
                        return Some(s.clone());
                    }
                }
            }
            m.values().find_map(|x| find_key(x, keys))
        }
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_key(x, keys)),
        _ => None,
    }
}

#[test]
fn version_and_info_answer() {
    let node = Node::start();
    let v = node.shoal(&["version"]).ok();
    assert!(
        v.stdout.contains(env!("CARGO_PKG_VERSION")),
        "version shows no {}:\n{v}",
        env!("CARGO_PKG_VERSION")
    );
    let info = node.shoal(&["info"]).ok();
    assert!(
        !info.stdout.trim().is_empty(),
        "info printed nothing:\n{info}"
    );
    let json = node.shoal(&["info", "--format", "json"]).ok();
    serde_json::from_str::<serde_json::Value>(&json.stdout)
        .unwrap_or_else(|e| panic!("info --format json: {e}\n{json}"));
}

#[test]
fn client_without_daemon_says_it_cannot_reach_it() {
    let dir = tempfile::Builder::new()
        .prefix("shoal-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let host = format!("unix://{}/none.sock", dir.path().display());
    for args in [&["service", "ls"][..], &["service", "ps", "web"], &["info"]] {
        let out = run(Command::new(shoal_bin()).arg("-H").arg(&host).args(args), T).fails();
        let want = format!("cannot reach the shoal daemon at {host}: is it running?");
        assert!(
            out.stderr.contains(&want),
            "expected {want:?} on stderr:\n{out}"
        );
    }
    // SHOAL_HOST works like -H.
    let out = run(
        Command::new(shoal_bin())
            .env("SHOAL_HOST", &host)
            .args(["service", "ls"]),
        T,
    )
    .fails();
    assert!(
        out.stderr
            .contains(&format!("cannot reach the shoal daemon at {host}")),
        "{out}"
    );
    // A stale socket file (nobody listening) is the same.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let host = format!("unix://{}", stale.display());
    let out = run(
        Command::new(shoal_bin())
            .arg("-H")
            .arg(&host)
            .args(["service", "ls"]),
        T,
    )
    .fails();
    assert!(
        out.stderr.contains(&format!(
            "cannot reach the shoal daemon at {host}: is it running?"
        )),
        "{out}"
    );
}

#[test]
fn bad_publish_port_and_replica_count_are_rejected_naming_the_value() {
    // Input is checked before the daemon is contacted: no daemon here.
    let dir = tempfile::Builder::new()
        .prefix("shoal-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let host = format!("unix://{}/none.sock", dir.path().display());
    let cases: &[(&[&str], &str)] = &[
        (&["-p", "70000:80"], "70000"),
        (&["-p", "8080:notaport"], "notaport"),
        (&["--replicas", "three"], "three"),
        (&["--stop-grace-period", "soon"], "soon"),
    ];
    for (bad, value) in cases {
        let mut args = vec!["service", "create", "--name", "web"];
        args.extend_from_slice(bad);
        args.push("shoal-test/web:v1");
        let out = run(
            Command::new(shoal_bin()).arg("-H").arg(&host).args(&args),
            T,
        )
        .fails();
        assert!(
            out.stderr.contains(value),
            "the error does not name {value:?}:\n{out}"
        );
        assert!(
            !out.stderr.contains("cannot reach"),
            "bad input must be reported before contacting the daemon:\n{out}"
        );
    }
    let out = run(
        Command::new(shoal_bin())
            .arg("-H")
            .arg(&host)
            .args(["service", "scale", "web=three"]),
        T,
    )
    .fails();
    assert!(out.stderr.contains("three"), "{out}");
}

/// A client whose output pipe is closed (`shoal version | head -0`) ends
/// quietly with 141, as Unix tools killed by SIGPIPE do, not with a panic.
#[test]
fn a_closed_output_pipe_ends_a_client_quietly() {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(shoal_bin())
        .args(["-H", "unix:///nonexistent/shoal.sock", "version"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run shoal version");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn a_pod_network_no_pod_could_use_is_refused_before_anything_starts() {
    let dir = tempfile::Builder::new()
        .prefix("shoal-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let data = dir.path().join("d");
    let cases: [(&[&str], &str); 2] = [
        (
            &["--pod-network", "bridge", "--pod-network-internal"],
            "--pod-network-internal cannot apply to Docker's default bridge (bridge)",
        ),
        (
            &["--pod-network", "host"],
            "--pod-network host: pods need a bridge network",
        ),
    ];
    for (args, want) in cases {
        let out = run(
            Command::new(shoal_bin())
                .arg("init")
                .arg("--data-dir")
                .arg(&data)
                .arg("--socket")
                .arg(dir.path().join("s.sock"))
                .args(args),
            T,
        )
        .fails();
        assert!(out.stderr.contains(want), "expected {want:?}:\n{out}");
        assert!(
            !data.join("node.json").exists(),
            "a refused init wrote node.json"
        );
    }
}
