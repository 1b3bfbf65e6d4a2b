//! Several hosts (node containers, each with its own Docker Engine and
//! address): `shoal init` on one, `shoal join` with tokens on the others,
//! pods on every node's engine, workers restarting with their data dir.

use std::time::{Duration, Instant};

use serde_json::Value;
use shoal_tests::hosts::Hosts;
use shoal_tests::images::web_image;
use shoal_tests::wait_for;

/// `shoal node ls --format json` on `on`.
fn nodes(hosts: &Hosts, on: &str) -> Vec<Value> {
    try_nodes(hosts, on).unwrap_or_else(|e| panic!("{e}\n{on}'s log:\n{}", hosts.shoal_log(on, 40)))
}

/// As [`nodes`], or why not: for waits that span a leadership change, when
/// a command may fail until the managers agree on a leader.
fn try_nodes(hosts: &Hosts, on: &str) -> Result<Vec<Value>, String> {
    let out = hosts.shoal(on, &["node", "ls", "--format", "json"]);
    if !out.success() {
        return Err(format!("node ls on {on} failed:\n{out}"));
    }
    serde_json::from_str(&out.stdout).map_err(|e| format!("node ls json: {e}\n{out}"))
}

fn ready_count(hosts: &Hosts, on: &str) -> usize {
    nodes(hosts, on)
        .iter()
        .filter(|n| n["Status"] == "Ready")
        .count()
}

#[test]
fn workers_join_with_a_token_run_pods_on_their_engines_and_rejoin_after_a_restart() {
    let image = web_image("v1");
    let hosts = Hosts::builder(3).image(&image).start();
    let ip1 = hosts.ip("n1").to_string();

    let init = hosts
        .shoal(
            "n1",
            &["init", "--advertise-addr", &ip1, "--pod-network-internal"],
        )
        .ok();
    assert!(
        init.stdout.contains("shoal join --token SHOAL-1-"),
        "{init}"
    );
    let token = hosts
        .shoal("n1", &["join-token", "worker", "-q"])
        .ok()
        .stdout
        .trim()
        .to_string();

    // A wrong secret with the right CA digest: refused by the manager, with
    // a message that says what to do, and nothing left on the node.
    let (prefix, _secret) = token.rsplit_once('-').unwrap();
    let wrong = format!("{prefix}-{}", "a".repeat(32));
    let refused = hosts
        .shoal("n2", &["join", "--token", &wrong, &ip1])
        .fails();
    assert!(
        refused.stderr.contains("refused to admit this node")
            && refused.stderr.contains("rotated out"),
        "{refused}"
    );
    let dir = hosts.exec("n2", &["ls", "-A", shoal_tests::hosts::SHOAL_DATA_DIR]);
    assert!(
        !dir.stdout.contains("node.json"),
        "a refused join left state behind:\n{dir}"
    );

    // Two workers join; the advertise address defaults to the one that
    // routes to the manager.
    for n in ["n2", "n3"] {
        let t = Instant::now();
        let joined = hosts
            .shoal(
                n,
                &["join", "--token", &token, "--pod-network-internal", &ip1],
            )
            .ok();
        assert!(
            joined.stdout.contains("joined a cluster as a worker"),
            "{joined}"
        );
        eprintln!("{n} joined in {:?}", t.elapsed());
    }
    wait_for(
        "3 Ready nodes",
        Duration::from_secs(30),
        || match ready_count(&hosts, "n1") {
            3 => Ok(()),
            n => Err(format!("{n} ready")),
        },
    );
    let listed = nodes(&hosts, "n1");
    let addrs: Vec<&str> = listed.iter().filter_map(|n| n["Addr"].as_str()).collect();
    for n in ["n2", "n3"] {
        let ip = hosts.ip(n).to_string();
        assert!(
            addrs.iter().any(|a| a.starts_with(&format!("{ip}:"))),
            "{n} advertises {ip}: {listed:?}"
        );
    }

    // A worker holds no cluster state: its socket refuses cluster commands.
    let on_worker = hosts.shoal("n2", &["service", "ls"]).fails();
    assert!(
        on_worker.stderr.contains("this node is a worker"),
        "{on_worker}"
    );
    let info = hosts.shoal("n2", &["info"]).ok();
    assert!(info.stdout.contains("Is Manager:        false"), "{info}");
    // Nor may it use its certificate to call the Control API remotely.
    let remote = format!("tcp://{ip1}:2377");
    let tls_dir = format!("{}/tls", shoal_tests::hosts::SHOAL_DATA_DIR);
    let refused = hosts
        .shoal(
            "n2",
            &["-H", &remote, "--tls-dir", &tls_dir, "service", "ls"],
        )
        .fails();
    assert!(
        refused
            .stderr
            .contains("may not call /shoal.v1.Control/ListServices"),
        "{refused}"
    );
    // A client certificate from a manager does: the remote CLI from n2.
    hosts
        .shoal(
            "n1",
            &["ca", "client-cert", "--out", "/tmp/client", "--name", "ops"],
        )
        .ok();
    hosts.exec("n2", &["mkdir", "-p", "/tmp/client"]).ok();
    for file in ["ca.pem", "cert.pem", "key.pem"] {
        let pem = hosts
            .exec("n1", &["cat", &format!("/tmp/client/{file}")])
            .ok()
            .stdout;
        let write = format!("umask 077 && cat > /tmp/client/{file} <<'EOF'\n{pem}EOF\n");
        hosts.exec("n2", &["sh", "-c", &write]).ok();
    }
    let remote_ls = hosts
        .shoal(
            "n2",
            &["-H", &remote, "--tls-dir", "/tmp/client", "node", "ls"],
        )
        .ok();
    assert!(remote_ls.stdout.contains("Leader"), "{remote_ls}");

    // Pods spread over the three engines.
    hosts.create_service("n1", "web", 6, &image, &[]);
    for n in ["n1", "n2", "n3"] {
        let c = hosts.running(n, "web");
        assert!(!c.is_empty(), "{n}'s engine runs none of web's pods");
    }
    let before = hosts.running("n2", "web");

    // A worker's daemon killed and resumed from its data dir (within the
    // grace a closed session gets, SESSION_CLOSED_GRACE_MS, so it is never
    // Down) rejoins by itself and keeps its containers (adopted, not
    // duplicated).
    let sessions = |hosts: &Hosts| {
        hosts
            .shoal_log("n2", 100_000)
            .matches("session opened")
            .count()
    };
    let before_restart = sessions(&hosts);
    let killed = Instant::now();
    hosts.exec("n2", &["pkill", "-9", "-x", "shoal"]).ok();
    hosts.shoal("n2", &["daemon"]).ok();
    wait_for(
        "n2's new session",
        Duration::from_secs(30),
        || match sessions(&hosts) {
            n if n > before_restart => Ok(()),
            n => Err(format!("{n} sessions")),
        },
    );
    eprintln!(
        "n2's daemon killed and resumed: new session after {:?}",
        killed.elapsed()
    );
    assert_eq!(ready_count(&hosts, "n1"), 3);
    let ls = hosts.shoal("n1", &["service", "ls"]).ok();
    assert!(ls.stdout.contains("6/6"), "{ls}");
    assert_eq!(
        hosts.running("n2", "web"),
        before,
        "n2 kept exactly its containers"
    );

    // A worker leaves; its containers go with it.
    hosts.shoal("n3", &["leave", "--force"]).ok();
    assert!(hosts.running("n3", "web").is_empty());
}

/// The Hostname of the node `node ls` (on `on`) marks with `status`.
fn manager_with(hosts: &Hosts, on: &str, status: &str) -> Option<String> {
    nodes(hosts, on)
        .iter()
        .find(|n| n["ManagerStatus"] == status)
        .and_then(|n| n["Hostname"].as_str())
        .map(str::to_string)
}

fn manager_statuses(hosts: &Hosts, on: &str) -> Vec<String> {
    let Ok(nodes) = try_nodes(hosts, on) else {
        return vec!["(node ls failed)".to_string()];
    };
    let mut s: Vec<String> = nodes
        .iter()
        .filter_map(|n| n["ManagerStatus"].as_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    s.sort();
    s
}

#[test]
fn three_managers_survive_the_leaders_loss_forward_commands_and_keep_their_quorum() {
    let image = web_image("v1");
    let hosts = Hosts::builder(3).image(&image).start();
    hosts.form_cluster("n1", &["n2", "n3"], &[]);
    wait_for(
        "a leader and two reachable managers",
        Duration::from_secs(30),
        || match manager_statuses(&hosts, "n1").as_slice() {
            [a, b, c] if a == "Leader" && b == "Reachable" && c == "Reachable" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // Any manager takes commands: followers forward them to the leader.
    let leader = manager_with(&hosts, "n1", "Leader").expect("a leader");
    let follower = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    hosts.create_service(follower, "web", 3, &image, &[]);
    for i in 0..5 {
        hosts
            .shoal(
                follower,
                &["config", "create", &format!("before-{i}"), "/etc/hostname"],
            )
            .ok();
    }

    // The leader's host dies: another manager leads, and writes through a
    // survivor succeed again (print the time: the figure is in BENCHMARKS.md).
    hosts.kill(&leader);
    let survivor = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let killed = Instant::now();
    let mut attempt = 0;
    wait_for(
        "a write after the leader's loss",
        Duration::from_secs(30),
        || {
            attempt += 1;
            let out = hosts.exec(
                survivor,
                &[
                    "timeout",
                    "3",
                    "shoal",
                    "config",
                    "create",
                    &format!("after-{attempt}"),
                    "/etc/hostname",
                ],
            );
            if out.success() {
                Ok(())
            } else {
                Err(out.all())
            }
        },
    );
    eprintln!(
        "leader {leader} killed: next write after {:?}",
        killed.elapsed()
    );
    let new_leader = manager_with(&hosts, survivor, "Leader").expect("a new leader");
    assert_ne!(new_leader, leader);
    // No false Down: past the new leader's warm-up and a heartbeat expiry,
    // only the killed node is Down.
    std::thread::sleep(Duration::from_secs(12));
    let listed = nodes(&hosts, survivor);
    for n in &listed {
        let down = n["Status"] == "Down";
        assert_eq!(down, n["Hostname"] == leader.as_str(), "{listed:?}");
    }
    // Nothing committed is lost.
    let configs = hosts.shoal(survivor, &["config", "ls"]).ok();
    for i in 0..5 {
        assert!(configs.stdout.contains(&format!("before-{i}")), "{configs}");
    }
    assert!(hosts
        .shoal(survivor, &["service", "ls"])
        .ok()
        .stdout
        .contains("web"));

    // Two managers left, one of them reachable from the other: demoting a
    // live one would cost the quorum and is refused; demoting the dead one
    // is not.
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader && *n != survivor)
        .unwrap();
    let refused = hosts.shoal(survivor, &["node", "demote", other]).fails();
    assert!(refused.stderr.contains("lose its quorum"), "{refused}");
    hosts.shoal(survivor, &["node", "demote", &leader]).ok();
    wait_for(
        "two managers",
        Duration::from_secs(30),
        || match manager_statuses(&hosts, survivor).as_slice() {
            [a, b] if a == "Leader" && b == "Reachable" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

#[test]
fn promotion_and_demotion_while_serving_including_the_leader_and_a_manager_restart() {
    let image = web_image("v1");
    let hosts = Hosts::builder(3).image(&image).start();
    hosts.form_cluster("n1", &[], &["n2", "n3"]);
    wait_for(
        "3 Ready nodes",
        Duration::from_secs(30),
        || match ready_count(&hosts, "n1") {
            3 => Ok(()),
            n => Err(format!("{n} ready")),
        },
    );
    hosts.create_service("n1", "web", 6, &image, &[]);

    // Two workers promoted: they restart as managers and join Raft.
    hosts.shoal("n1", &["node", "promote", "n2", "n3"]).ok();
    wait_for(
        "three managers",
        Duration::from_secs(60),
        || match manager_statuses(&hosts, "n1").as_slice() {
            [a, b, c] if a == "Leader" && b == "Reachable" && c == "Reachable" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // Once seen failing once (n2's socket unreachable right after it was
    // listed as Reachable, not reproduced since): retried, and the log of
    // that moment printed for whoever looks into it.
    let mut first_failure = None;
    wait_for("n2 to say it is a manager", Duration::from_secs(30), || {
        let info = hosts.shoal("n2", &["info"]);
        if info.stdout.contains("Is Manager:        true") {
            return Ok(());
        }
        if first_failure.is_none() {
            first_failure = Some(format!("{info}\nn2's log:\n{}", hosts.shoal_log("n2", 60)));
        }
        Err(info.all())
    });
    if let Some(f) = first_failure {
        eprintln!("n2's info failed at first:\n{f}");
    }
    let on_n2 = hosts.running("n2", "web");
    assert!(!on_n2.is_empty());

    // The leader demoted from another manager: leadership moves first, the
    // old leader goes on as a worker with its containers.
    let leader = manager_with(&hosts, "n1", "Leader").expect("a leader");
    let other = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader)
        .unwrap();
    let before = hosts.running(&leader, "web");
    let t = Instant::now();
    hosts.shoal(other, &["node", "demote", &leader]).ok();
    wait_for(
        "two managers after the leader's demotion",
        Duration::from_secs(60),
        || match manager_statuses(&hosts, other).as_slice() {
            [a, b] if a == "Leader" && b == "Reachable" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    eprintln!("leader demoted: two managers again after {:?}", t.elapsed());
    wait_for(
        "the old leader to run as a worker",
        Duration::from_secs(30),
        || {
            let info = hosts.shoal(&leader, &["info"]);
            if info.stdout.contains("Is Manager:        false") {
                Ok(())
            } else {
                Err(info.all())
            }
        },
    );
    assert_eq!(
        hosts.running(&leader, "web"),
        before,
        "the demoted leader kept its containers"
    );
    let ls = hosts.shoal(other, &["service", "ls"]).ok();
    assert!(ls.stdout.contains("6/6"), "{ls}");

    // A manager killed and resumed from its data dir rejoins by itself.
    hosts.exec(other, &["pkill", "-9", "-x", "shoal"]).ok();
    hosts.shoal(other, &["daemon"]).ok();
    let third = ["n1", "n2", "n3"]
        .into_iter()
        .find(|n| *n != leader && *n != other)
        .unwrap();
    wait_for(
        "the restarted manager back",
        Duration::from_secs(30),
        || match manager_statuses(&hosts, third).as_slice() {
            [a, b] if a == "Leader" && b == "Reachable" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    hosts
        .shoal(
            other,
            &["config", "create", "after-restart", "/etc/hostname"],
        )
        .ok();
}

/// The node certificate a node holds now (PEM).
fn certificate(hosts: &Hosts, node: &str) -> String {
    let path = format!("{}/tls/cert.pem", shoal_tests::hosts::SHOAL_DATA_DIR);
    hosts.exec(node, &["cat", &path]).ok().stdout
}

#[test]
fn certificates_are_renewed_before_they_expire_without_disturbing_the_pods() {
    let image = web_image("v1");
    let hosts = Hosts::builder(2).image(&image).start();
    let ip1 = hosts.ip("n1").to_string();
    // 30-second certificates: each node renews with a third left, ~20 s in.
    let validity = format!("{}=30", shoal_proto::defaults::NODE_CERT_VALIDITY_ENV);
    hosts
        .exec(
            "n1",
            &[
                "env",
                &validity,
                "shoal",
                "init",
                "--advertise-addr",
                &ip1,
                "--pod-network-internal",
            ],
        )
        .ok();
    let token = hosts
        .shoal("n1", &["join-token", "worker", "-q"])
        .ok()
        .stdout
        .trim()
        .to_string();
    hosts
        .shoal(
            "n2",
            &["join", "--token", &token, "--pod-network-internal", &ip1],
        )
        .ok();
    hosts.create_service("n1", "web", 4, &image, &[]);
    let first = [certificate(&hosts, "n1"), certificate(&hosts, "n2")];
    let pods = hosts.running("n2", "web");
    assert!(!pods.is_empty());
    wait_for("both certificates renewed", Duration::from_secs(90), || {
        let now = [certificate(&hosts, "n1"), certificate(&hosts, "n2")];
        if now[0] != first[0] && now[1] != first[1] {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    });
    wait_for(
        "both nodes Ready with the service whole",
        Duration::from_secs(30),
        || {
            let ls = hosts.shoal("n1", &["service", "ls"]);
            match try_nodes(&hosts, "n1") {
                Ok(n)
                    if n.iter().filter(|n| n["Status"] == "Ready").count() == 2
                        && ls.stdout.contains("4/4") =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}\n{ls}")),
            }
        },
    );
    assert_eq!(
        hosts.running("n2", "web"),
        pods,
        "n2's pods were not disturbed"
    );
}
