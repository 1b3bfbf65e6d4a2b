//! Gossip across hosts (node containers): every node gossips with sealed
//! datagrams; a one-way loss between a worker and the leader makes the
//! worker Disconnected, never Down, and moves none of its pods; gossip that
//! loses a node whose heartbeats arrive changes nothing; a key rotation
//! takes every node along without a node going Down.

use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::images::web_image;
use shoal_tests::wait_for;

/// `shoal info --format json` on `node`.
fn info(hosts: &Hosts, node: &str) -> Value {
    let out = hosts.shoal(node, &["info", "--format", "json"]).ok();
    serde_json::from_str(&out.stdout).expect("info json")
}

/// The node ids `node`'s gossip deems alive.
fn live_set(hosts: &Hosts, node: &str) -> Vec<String> {
    let mut ids: Vec<String> = info(hosts, node)["gossip"]["liveNodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// STATUS of every node in `node ls` on n1, by node id.
fn statuses(hosts: &Hosts) -> Vec<(String, String)> {
    let out = hosts.shoal("n1", &["node", "ls", "--format", "json"]).ok();
    let rows: Vec<Value> = serde_json::from_str(&out.stdout).expect("node ls json");
    rows.iter()
        .map(|r| {
            (
                r["ID"].as_str().unwrap_or_default().to_string(),
                r["Status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn status_of(hosts: &Hosts, id: &str) -> String {
    statuses(hosts)
        .into_iter()
        .find(|(n, _)| n == id)
        .map(|(_, s)| s)
        .unwrap_or_default()
}

/// Watches `node ls` for `how_long`, failing at the first node that is
/// not one of `allowed`.
fn hold_statuses(hosts: &Hosts, how_long: Duration, allowed: &[&str], what: &str) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        for (id, status) in statuses(hosts) {
            assert!(
                allowed.contains(&status.as_str()),
                "{what}: node {id} went {status}\n{}",
                hosts.shoal_log("n1", 40)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn gossip_keeps_one_way_loss_from_downing_a_node_and_rotates_keys_without_a_down() {
    let image = web_image("v1");
    let hosts = Hosts::builder(3).image(&image).start();
    hosts.form_cluster("n1", &[], &["n2", "n3"]);
    hosts.create_service("n1", "web", 6, &image, &[]);
    let ids: Vec<String> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| info(&hosts, n)["nodeId"].as_str().unwrap().to_string())
        .collect();
    let mut all = ids.clone();
    all.sort();

    // `node inspect` resolves names on the manager, as every node command.
    let inspect = |name: &str| -> Value {
        let out = hosts.shoal("n1", &["node", "inspect", name]).ok();
        serde_json::from_str(&out.stdout).expect("node inspect json")
    };
    let worker = inspect(&ids[1][..8]);
    assert_eq!(worker["Node"]["id"], ids[1].as_str());
    assert!(worker["ManagerStatus"].is_null(), "{worker}");
    let leader = inspect(&ids[0]);
    assert_eq!(leader["Node"]["id"], ids[0].as_str());
    assert!(!leader["ManagerStatus"].is_null(), "{leader}");
    let missing = hosts.shoal("n1", &["node", "inspect", "no-such-node"]);
    assert!(
        !missing.success() && missing.stderr.contains("not found"),
        "{missing}"
    );

    // Every node's gossip sees the three of them.
    for n in ["n1", "n2", "n3"] {
        wait_for(
            &format!("{n} gossips with all"),
            Duration::from_secs(30),
            || {
                let live = live_set(&hosts, n);
                if live == all {
                    Ok(())
                } else {
                    Err(format!("{live:?}"))
                }
            },
        );
    }

    // One-way loss: n1 (the leader) hears nothing from n2, while n2 hears
    // n1. n2's session dies, but n3 still hears n2 and tells n1: n2 is
    // Disconnected, not Down, and its pods stay where they are.
    let on_n2 = hosts.running("n2", "web");
    assert!(!on_n2.is_empty());
    let n2_ip = hosts.ip("n2").to_string();
    let drop_n2 = ["-s", n2_ip.as_str(), "-j", "DROP"];
    let iptables = |op: &str| {
        let mut args = vec!["iptables", op, "INPUT"];
        args.extend(drop_n2);
        let out = hosts.exec("n1", &args);
        assert!(out.success(), "iptables {op}: {out}");
    };
    iptables("-I");
    wait_for(
        "n2 disconnected",
        Duration::from_secs(30),
        || match status_of(&hosts, &ids[1]).as_str() {
            "Disconnected" => Ok(()),
            "Down" => panic!(
                "n2 went Down: gossip should have kept it\n{}",
                hosts.shoal_log("n1", 60)
            ),
            s => Err(s.to_string()),
        },
    );
    hold_statuses(
        &hosts,
        Duration::from_secs(6),
        &["Ready", "Disconnected"],
        "one-way loss",
    );
    iptables("-D");
    wait_for(
        "n2 ready again",
        Duration::from_secs(30),
        || match status_of(&hosts, &ids[1]).as_str() {
            "Ready" => Ok(()),
            s => Err(s.to_string()),
        },
    );
    assert_eq!(hosts.running("n2", "web"), on_n2, "n2's pods were moved");
    let total: usize = ["n1", "n2", "n3"]
        .iter()
        .map(|n| hosts.running(n, "web").len())
        .sum();
    assert_eq!(total, 6, "no pod replaced, none doubled");

    // Gossip alone loses n3 (its gossip datagrams go nowhere) while its
    // heartbeats arrive: it stays Ready.
    let udp_out = ["OUTPUT", "-p", "udp", "--dport", "7946", "-j", "DROP"];
    let mut add = vec!["iptables", "-I"];
    add.extend(udp_out);
    assert!(hosts.exec("n3", &add).status.success());
    wait_for("n1's gossip loses n3", Duration::from_secs(30), || {
        let live = live_set(&hosts, "n1");
        if live.contains(&ids[2]) {
            Err(format!("{live:?}"))
        } else {
            Ok(())
        }
    });
    hold_statuses(
        &hosts,
        Duration::from_secs(7),
        &["Ready"],
        "gossip-only loss",
    );
    let mut del = vec!["iptables", "-D"];
    del.extend(udp_out);
    assert!(hosts.exec("n3", &del).status.success());
    wait_for(
        "n1's gossip hears n3 again",
        Duration::from_secs(30),
        || {
            let live = live_set(&hosts, "n1");
            if live == all {
                Ok(())
            } else {
                Err(format!("{live:?}"))
            }
        },
    );

    // Key rotation: a new key, then it seals, then the old one goes; no node
    // leaves gossip for long, none goes Down or Disconnected.
    let before: Value = serde_json::from_str(
        &hosts
            .shoal("n1", &["gossip-key", "--format", "json"])
            .ok()
            .stdout,
    )
    .unwrap();
    let old_key = before["primary"].as_u64().unwrap();
    hosts.shoal("n1", &["gossip-key", "--rotate"]).ok();
    let rotated = Instant::now();
    let mut new_key = 0;
    while rotated.elapsed() < Duration::from_secs(40) {
        let ring: Value = serde_json::from_str(
            &hosts
                .shoal("n1", &["gossip-key", "--format", "json"])
                .ok()
                .stdout,
        )
        .unwrap();
        let keys = ring["keys"].as_array().map_or(0, |k| k.len());
        let primary = ring["primary"].as_u64().unwrap_or(0);
        if keys == 1 && primary != old_key {
            new_key = primary;
            break;
        }
        for (id, status) in statuses(&hosts) {
            assert_eq!(status, "Ready", "node {id} during the key rotation");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_ne!(new_key, 0, "the rotation did not finish in 40 s");
    eprintln!("gossip key rotated in {:?}", rotated.elapsed());
    for n in ["n1", "n2", "n3"] {
        wait_for(
            &format!("{n} seals with the new key"),
            Duration::from_secs(20),
            || {
                let g = &info(&hosts, n)["gossip"];
                let primary = g["primaryKeyId"].as_u64().unwrap_or(0);
                let live = live_set(&hosts, n);
                if primary == new_key && live == all {
                    Ok(())
                } else {
                    Err(format!("primary {primary:x}, live {live:?}"))
                }
            },
        );
    }
    hold_statuses(
        &hosts,
        Duration::from_secs(3),
        &["Ready"],
        "after the rotation",
    );
}
