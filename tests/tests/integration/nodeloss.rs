//! Node loss across hosts (node containers): a killed worker's pods run on
//! the others within seconds and are not duplicated when it returns; a node
//! frozen for less than the heartbeat expiry loses nothing; drain and labels
//! steer pods.

use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::images::web_image;
use shoal_tests::wait_for;

/// `service ps --format json` rows that are wanted running.
fn wanted_pods(hosts: &Hosts, service: &str) -> Vec<Value> {
    let out = hosts
        .shoal("n1", &["service", "ps", service, "--format", "json"])
        .ok();
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("ps json");
    rows.into_iter()
        .filter(|r| r["DesiredState"] == "running")
        .collect()
}

#[test]
fn a_killed_workers_pods_run_elsewhere_and_it_returns_without_duplicates() {
    let image = web_image("v1");
    let hosts = Hosts::builder(3).image(&image).start();
    hosts.form_cluster("n1", &[], &["n2", "n3"]);
    hosts.create_service("n1", "web", 6, &image, &[]);
    for n in ["n1", "n2", "n3"] {
        assert!(!hosts.running(n, "web").is_empty(), "{n} runs none");
    }

    // Frozen for 3 s, less than the heartbeat expiry: nothing moves.
    let on_n3 = hosts.running("n3", "web");
    hosts.pause("n3");
    std::thread::sleep(Duration::from_secs(3));
    hosts.unpause("n3");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        hosts.running("n3", "web"),
        on_n3,
        "a short stall moved pods"
    );
    assert_eq!(wanted_pods(&hosts, "web").len(), 6);

    // Killed: its pods run on the other two within seconds.
    let lost = hosts.running("n2", "web").len();
    hosts.kill("n2");
    let killed = Instant::now();
    wait_for("6 pods on n1 and n3", Duration::from_secs(60), || {
        let n = hosts.running("n1", "web").len() + hosts.running("n3", "web").len();
        if n == 6 {
            Ok(())
        } else {
            Err(format!("{n} running"))
        }
    });
    eprintln!(
        "n2 killed with {lost} pods: 6 running on the others after {:?}",
        killed.elapsed()
    );
    let ls = hosts.shoal("n1", &["service", "ls"]).ok();
    assert!(ls.stdout.contains("6/6"), "{ls}");
    // Found dead by its closed session and gossip, not by the (longer)
    // heartbeat expiry: the kernel closed the killed daemon's connection.
    let n2 = hosts.shoal("n1", &["node", "inspect", "n2"]).ok();
    assert!(
        n2.stdout
            .contains("its session closed and gossip lost the node"),
        "n2 was not found dead by its closed session: {n2}"
    );

    // It comes back: its old containers are removed, nothing is doubled.
    hosts.start_node("n2");
    hosts.shoal("n2", &["daemon"]).ok();
    wait_for("n2's stale pods gone", Duration::from_secs(60), || {
        let left = hosts.docker(
            "n2",
            &["ps", "-aq", "--filter", "label=io.shoal.service.name=web"],
        );
        if left.stdout.trim().is_empty() {
            Ok(())
        } else {
            Err(left.stdout)
        }
    });
    assert_eq!(wanted_pods(&hosts, "web").len(), 6);
    let total: usize = ["n1", "n2", "n3"]
        .iter()
        .map(|n| hosts.running(n, "web").len())
        .sum();
    assert_eq!(total, 6, "no duplicates");

    // Drain moves pods off a node; labels and constraints steer them.
    hosts
        .shoal("n1", &["node", "update", "--availability", "drain", "n3"])
        .ok();
    wait_for("n3 drained", Duration::from_secs(60), || {
        let on3 = hosts.running("n3", "web").len();
        let total: usize = ["n1", "n2"]
            .iter()
            .map(|n| hosts.running(n, "web").len())
            .sum();
        if on3 == 0 && total == 6 {
            Ok(())
        } else {
            Err(format!("{on3} on n3, {total} elsewhere"))
        }
    });
    // `node ps`: n3 keeps only its history; n1's live pods are its containers.
    let live_on = |node: &str| {
        let out = hosts
            .shoal("n1", &["node", "ps", node, "--no-history", "-q"])
            .ok();
        out.stdout.lines().count()
    };
    assert_eq!(live_on("n3"), 0);
    assert_eq!(live_on("n1"), hosts.running("n1", "web").len());
    let history = hosts.shoal("n1", &["node", "ps", "n3"]).ok();
    assert!(history.stdout.contains("Shutdown"), "{history}");
    hosts
        .shoal("n1", &["node", "update", "--label-add", "zone=b", "n2"])
        .ok();
    hosts
        .shoal(
            "n1",
            &[
                "service",
                "create",
                "--name",
                "zoned",
                "--replicas",
                "2",
                "--constraint",
                "node.labels.zone==b",
                "--stop-grace-period",
                "1s",
                &image,
            ],
        )
        .ok();
    assert_eq!(hosts.running("n2", "zoned").len(), 2);
    assert!(hosts.running("n1", "zoned").is_empty());
}

#[test]
fn a_full_cluster_restart_marks_no_node_down_and_duplicates_nothing() {
    let image = web_image("v1");
    let hosts = Hosts::builder(2).image(&image).start();
    hosts.form_cluster("n1", &[], &["n2"]);
    hosts.create_service("n1", "web", 4, &image, &[]);

    // Both hosts reboot; their daemons start again (as a host's init would).
    hosts.restart("n1");
    hosts.restart("n2");
    hosts.shoal("n1", &["daemon"]).ok();
    hosts.shoal("n2", &["daemon"]).ok();
    wait_for("web whole again", Duration::from_secs(90), || {
        let ls = hosts.shoal("n1", &["service", "ls"]);
        if ls.stdout.contains("4/4") {
            Ok(())
        } else {
            Err(ls.all())
        }
    });
    // Past the leader's warm-up and a heartbeat expiry: nobody is Down.
    std::thread::sleep(Duration::from_secs(12));
    let listed = hosts.shoal("n1", &["node", "ls"]).ok();
    assert!(!listed.stdout.contains("Down"), "{listed}");
    assert_eq!(wanted_pods(&hosts, "web").len(), 4);
    let total: usize = ["n1", "n2"]
        .iter()
        .map(|n| hosts.running(n, "web").len())
        .sum();
    assert_eq!(total, 4, "no duplicates after the restart");
}
