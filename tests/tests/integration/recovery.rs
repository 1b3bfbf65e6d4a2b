//! Failures: the daemon killed and resumed, a container removed behind
//! shoal's back, and leaving the cluster.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_tests::node::alive;
use shoal_tests::wait::stays;
use shoal_tests::{docker, free_port, http, table, wait_for, Node};

use crate::service::{create_web, CONVERGE};

#[test]
fn daemon_killed_with_sigkill_resumes_with_the_same_containers() {
    let node = Node::start();
    let port = free_port();
    create_web(&node, "web", 3, port);
    let before = node.wait_running("web", 3, CONVERGE);
    let pods_before: BTreeSet<String> = node
        .ps_json("web")
        .iter()
        .map(|p| p["ID"].as_str().unwrap_or("").to_string())
        .collect();

    node.kill9();
    // The containers outlive the daemon.
    assert_eq!(
        node.running_ids("web"),
        before,
        "containers changed while the daemon was dead"
    );

    let out = node.resume();
    assert!(
        out.success(),
        "shoal daemon failed:\n{out}\n--- daemon log\n{}",
        node.log_tail(40)
    );
    // It serves as soon as `shoal daemon` returns.
    node.shoal(&["service", "ls"]).ok();
    node.wait_running("web", 3, CONVERGE);
    // Adopted, not recreated: the same containers and pods, nothing new, for a while.
    stays(
        "the same 3 containers after the restart",
        Duration::from_secs(5),
        || {
            let all: Vec<String> = node
                .containers(Some("web"), true)
                .into_iter()
                .map(|c| c.id)
                .collect();
            if all != before {
                return Err(format!("containers now {all:?}, before {before:?}"));
            }
            let running = node.running_ids("web");
            if running != before {
                return Err(format!("running now {running:?}, before {before:?}"));
            }
            Ok(())
        },
    );
    let ps = node.ps_json("web");
    let pods_after: BTreeSet<String> = ps
        .iter()
        .map(|p| p["ID"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(pods_after, pods_before, "pods after the restart: {ps:?}");
    assert_eq!(node.ls_row("web").expect("web listed")["Replicas"], "3/3");
    // The published port is served again.
    let body = wait_for(
        "the published port after the restart",
        Duration::from_secs(20),
        || http::get_ok(port, "/"),
    );
    assert_eq!(body, "v1");
}

#[test]
fn a_container_removed_behind_shoals_back_is_replaced_and_kept_in_history() {
    let node = Node::start();
    create_web(&node, "web", 3, free_port());
    let before = node.wait_running("web", 3, CONVERGE);
    let victim = before[1].clone();
    let pod_name = docker::label(&victim, "io.shoal.pod.name");
    let pod_id = docker::label(&victim, "io.shoal.pod.id");
    assert!(pod_name.starts_with("web."), "pod name label {pod_name:?}");
    docker::docker(&["rm", "-f", &victim]).ok();

    let after = wait_for(
        "web to be back at 3/3 with a new container",
        CONVERGE,
        || {
            let ids = node.running_ids("web");
            if ids.len() != 3 || ids.contains(&victim) {
                return Err(format!("running {ids:?}"));
            }
            let row = node.ls_row("web").ok_or("web not listed")?;
            if row["Replicas"] != "3/3" {
                return Err(format!("{row}"));
            }
            Ok(ids)
        },
    );
    let kept: Vec<&String> = before.iter().filter(|c| **c != victim).collect();
    assert!(
        kept.iter().all(|c| after.contains(c)),
        "the other containers were touched: {before:?} -> {after:?}"
    );
    let new = after
        .iter()
        .find(|c| !before.contains(c))
        .expect("a new container");
    assert_eq!(
        docker::label(new, "io.shoal.pod.name"),
        pod_name,
        "the replacement keeps the slot"
    );
    assert_ne!(
        docker::label(new, "io.shoal.pod.id"),
        pod_id,
        "the replacement is a new pod"
    );

    // ps: the slot has its new running pod and the replaced one in its history.
    let ps = node.ps_json("web");
    let slot: Vec<&serde_json::Value> = ps
        .iter()
        .filter(|p| p["Name"] == pod_name.as_str())
        .collect();
    assert!(slot.len() >= 2, "no history for {pod_name}: {ps:?}");
    let old = slot
        .iter()
        .find(|p| p["ID"] == pod_id.as_str())
        .unwrap_or_else(|| panic!("replaced pod {pod_id} not in ps: {ps:?}"));
    assert_ne!(old["DesiredState"], "running", "{old}");
    assert_ne!(old["CurrentState"], "running", "{old}");
    assert_eq!(
        slot.iter()
            .filter(|p| p["CurrentState"] == "running")
            .count(),
        1,
        "{ps:?}"
    );
    let out = node.shoal(&["service", "ps", "web"]).ok();
    let rows = table::parse(&out.stdout);
    assert!(
        rows.iter().any(|r| r["NAME"] == format!("\\_ {pod_name}")),
        "no history row for {pod_name}:\n{out}"
    );
    let hidden = node.shoal(&["service", "ps", "--no-history", "web"]).ok();
    assert_eq!(table::parse(&hidden.stdout).len(), 3, "{hidden}");
}

#[test]
fn leave_force_stops_the_daemon_and_removes_its_containers() {
    let node = Node::start();
    create_web(&node, "web", 2, free_port());
    node.wait_running("web", 2, CONVERGE);
    let pid = node.pid().expect("shoal.pid");
    let out = node.shoal(&["leave", "--force"]).ok();
    wait_for("the daemon to exit", Duration::from_secs(30), || {
        if alive(pid) {
            Err(format!("pid {pid} alive"))
        } else {
            Ok(())
        }
    });
    wait_for(
        "its containers to be removed",
        Duration::from_secs(30),
        || match node.containers(None, true) {
            c if c.is_empty() => Ok(()),
            c => Err(format!("{c:?}")),
        },
    );
    let after = node.shoal(&["service", "ls"]).fails();
    assert!(
        after.stderr.contains("cannot reach the shoal daemon"),
        "after leave ({out}):\n{after}"
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused_and_a_stale_pid_file_is_not() {
    let node = Node::start();
    let pid = node.pid().expect("the daemon's pid");
    let other_socket = node.data_dir().join("other.sock");
    let second = shoal_tests::cmd::run(
        std::process::Command::new(shoal_tests::shoal_bin())
            .args(["daemon", "--foreground", "--data-dir"])
            .arg(node.data_dir())
            .arg("--socket")
            .arg(&other_socket),
        Duration::from_secs(30),
    );
    assert!(!second.success(), "{second}");
    assert!(
        second.all().contains(&format!(
            "a shoal daemon is already running on {} (pid {pid})",
            node.data_dir().display()
        )),
        "{second}"
    );
    assert!(alive(pid), "the refused start touched the running daemon");

    // Killed: its pid file stays, naming a pid the next start must not
    // trust (after a reboot another process may have it).
    node.kill9();
    std::fs::write(
        node.data_dir().join("shoal.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    node.resume().ok();
    assert_ne!(node.pid(), Some(std::process::id()));
}
