//! Rolling updates on the real Docker Engine: zero failed requests during a
//! start-first rollout, automatic rollback of a broken update, undo to any
//! revision, pause and resume across a daemon restart, history trimming.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_tests::images::web_image;
use shoal_tests::wait::stays;
use shoal_tests::{free_port, http, table, wait_for, Node};

use crate::service::CONVERGE;

/// A service `web` of 3 replicas of v1 with a healthcheck, behind `port`.
fn create_healthy_web(node: &Node, port: u16) {
    node.create(&[
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        &format!("{port}:80"),
        "--stop-grace-period",
        "1s",
        "--health-cmd",
        "wget -q -O /dev/null http://127.0.0.1/",
        "--health-interval",
        "500ms",
        "--health-timeout",
        "2s",
        &web_image("v1"),
    ]);
}

/// Images of the live pods of `service`.
fn live_images(node: &Node, service: &str) -> Vec<String> {
    node.ps_json(service)
        .into_iter()
        .filter(|p| p["DesiredState"] == "running")
        .map(|p| p["Image"].as_str().unwrap_or("").to_string())
        .collect()
}

fn all_serve(port: u16, want: &str) -> Result<(), String> {
    for _ in 0..10 {
        let body = http::get_ok(port, "/")?;
        if body != want {
            return Err(format!("got {body:?}"));
        }
    }
    Ok(())
}

#[test]
fn a_start_first_rollout_with_a_healthcheck_fails_no_request() {
    let node = Node::start();
    let port = free_port();
    create_healthy_web(&node, port);
    let v2 = web_image("v2");

    // A client hits the published port for the whole rollout.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((
        0usize,
        Vec::<String>::new(),
        Vec::<String>::new(),
    )));
    let client = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let r = http::get_ok(port, "/");
                let mut s = seen.lock().unwrap();
                s.0 += 1;
                match r {
                    Ok(body) => s.1.push(body),
                    Err(e) => s.2.push(e),
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = node.shoal(&[
        "service",
        "update",
        "--image",
        &v2,
        "--update-order",
        "start-first",
        "--update-monitor",
        "1s",
        "web",
    ]);
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    assert!(out.success(), "update failed:\n{out}");
    assert!(
        out.stdout.contains("3/3 updated"),
        "no progress shown:\n{out}"
    );

    let (requests, bodies, errors) = &*seen.lock().unwrap();
    assert!(*requests > 50, "the client made only {requests} requests");
    assert!(
        errors.is_empty(),
        "{} of {requests} requests failed: {:?}",
        errors.len(),
        errors
    );
    assert!(bodies.iter().all(|b| b == "v1" || b == "v2"), "{bodies:?}");
    assert_eq!(bodies.last().map(String::as_str), Some("v2"));
    assert_eq!(live_images(&node, "web"), vec![v2.clone(); 3]);
    all_serve(port, "v2").unwrap();
}

#[test]
fn a_broken_update_rolls_back_by_itself_and_undo_reaches_any_revision() {
    let node = Node::start();
    let port = free_port();
    create_healthy_web(&node, port);
    let (v1, v2) = (web_image("v1"), web_image("v2"));
    node.shoal(&[
        "service",
        "update",
        "--image",
        &v2,
        "--update-monitor",
        "500ms",
        "web",
    ])
    .ok();
    all_serve(port, "v2").unwrap();

    // An image that cannot be pulled (a registry on a closed loopback port).
    let broken = "127.0.0.1:9/shoal-test/broken:v0";
    let out = node.shoal(&[
        "service",
        "update",
        "--image",
        broken,
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "500ms",
        "--rollback-monitor",
        "500ms",
        "web",
    ]);
    assert!(!out.success(), "a rolled-back update exited 0:\n{out}");
    assert!(out.stderr.contains("update rolled back"), "{out}");
    assert!(
        out.stderr.contains("could not be pulled"),
        "the reason is missing:\n{out}"
    );
    assert_eq!(live_images(&node, "web"), vec![v2.clone(); 3]);
    let ls = node.ls_row("web").unwrap();
    assert_eq!(
        ls["Image"],
        v2.as_str(),
        "the spec did not follow the rollback: {ls}"
    );
    all_serve(port, "v2").unwrap();

    // `rollout history` lists the revisions; undo goes back to the first.
    let hist = node.shoal(&["rollout", "history", "web"]).ok();
    let rows = table::parse(&hist.stdout);
    assert_eq!(rows.len(), 3, "{hist}");
    assert!(hist.stdout.contains(broken), "{hist}");
    node.shoal(&["rollout", "undo", "--to-revision", "1", "web"])
        .ok();
    assert_eq!(live_images(&node, "web"), vec![v1.clone(); 3]);
    all_serve(port, "v1").unwrap();
    let rs = node
        .shoal(&["get", "replicasets", "web", "-o", "wide"])
        .ok();
    let rows = table::parse(&rs.stdout);
    let current: Vec<_> = rows.iter().filter(|r| r["DESIRED"] == "3").collect();
    assert_eq!(current.len(), 1, "{rs}");
    assert_eq!(current[0]["IMAGE"], v1.as_str(), "{rs}");
    assert_eq!(current[0]["READY"], "3", "{rs}");

    // `service rollback` returns to the revision before the undo.
    node.shoal(&["service", "rollback", "web"]).ok();
    all_serve(port, "v2").unwrap();
}

#[test]
fn a_paused_rollout_survives_a_daemon_restart_and_resumes() {
    let node = Node::start();
    let port = free_port();
    create_healthy_web(&node, port);
    let v2 = web_image("v2");
    node.shoal(&[
        "service",
        "update",
        "-d",
        "--image",
        &v2,
        "--update-delay",
        "4s",
        "--update-monitor",
        "500ms",
        "web",
    ])
    .ok();
    wait_for("the first pod to move to v2", CONVERGE, || {
        let imgs = live_images(&node, "web");
        (imgs.iter().filter(|i| **i == v2).count() == 1)
            .then_some(())
            .ok_or(format!("{imgs:?}"))
    });
    node.shoal(&["rollout", "pause", "web"]).ok();

    node.kill9();
    node.resume().ok();
    let status = node.shoal(&["rollout", "status", "web"]).fails();
    assert!(status.stderr.contains("paused by user"), "{status}");
    stays(
        "the paused rollout to stay put",
        Duration::from_secs(6),
        || {
            let n = live_images(&node, "web")
                .iter()
                .filter(|i| **i == v2)
                .count();
            (n == 1).then_some(()).ok_or(format!("{n} pods on v2"))
        },
    );

    node.shoal(&["rollout", "resume", "web"]).ok();
    let done = node.shoal(&["rollout", "status", "web"]).ok();
    assert!(done.stdout.contains("rollout complete"), "{done}");
    assert_eq!(live_images(&node, "web"), vec![v2; 3]);
}

#[test]
fn rollout_history_keeps_the_last_ten_revisions() {
    let node = Node::start();
    node.create(&["--name", "h", "--stop-grace-period", "1s", &web_image("v1")]);
    for i in 1..=11 {
        node.shoal(&[
            "service",
            "update",
            "--env-add",
            &format!("STEP={i}"),
            "--update-monitor",
            "0s",
            "h",
        ])
        .ok();
    }
    let hist = node.shoal(&["rollout", "history", "h"]).ok();
    let rows = table::parse(&hist.stdout);
    assert_eq!(rows.len(), 10, "{hist}");
    assert_eq!(rows.last().unwrap()["REVISION"], "12 *", "{hist}");
    assert!(
        rows.last().unwrap()["CHANGE"].contains("+STEP=11"),
        "{hist}"
    );
    let rs = node.shoal(&["get", "replicasets", "h"]).ok();
    assert_eq!(table::parse(&rs.stdout).len(), 10, "{rs}");
}
