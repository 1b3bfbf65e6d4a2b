//! Services on one node with the real Docker Engine: create behind a
//! published port, scale, list formats, inspect, errors, removal.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::images::web_image;
use shoal_tests::{free_port, http, table, wait_for, Node};

pub const CONVERGE: Duration = Duration::from_secs(60);

/// A JSON number, or a number in a string (protobuf JSON writes u64 as strings).
pub fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Creates `NAME` with `replicas` pods of shoal-test/web:v1 behind `port`.
pub fn create_web(node: &Node, name: &str, replicas: u32, port: u16) -> String {
    let image = web_image("v1");
    let out = node.create(&[
        "--name",
        name,
        "--replicas",
        &replicas.to_string(),
        "-p",
        &format!("{port}:80"),
        "--stop-grace-period",
        "1s",
        &image,
    ]);
    let id = out.stdout.lines().next().unwrap_or("").trim().to_string();
    assert!(
        !id.is_empty() && !id.contains(' '),
        "service create printed no id first:\n{out}"
    );
    id
}

/// Waits until no container of `service` is left on the node.
fn wait_until_no_container(node: &Node, service: &str) {
    wait_for(
        &format!("every container of {service} to be removed"),
        Duration::from_secs(30),
        || match node.containers(Some(service), true) {
            c if c.is_empty() => Ok(()),
            c => Err(format!("{c:?}")),
        },
    );
}

#[test]
fn create_waits_for_three_replicas_that_answer_on_the_published_port() {
    let node = Node::start();
    let port = free_port();
    let id = create_web(&node, "web", 3, port);

    // Without -d, create returned only once converged: no waiting here.
    let ls = node.shoal(&["service", "ls"]).ok();
    let rows = table::parse(&ls.stdout);
    assert_eq!(rows.len(), 1, "{ls}");
    let r = &rows[0];
    assert_eq!(r["NAME"], "web", "{ls}");
    assert_eq!(r["MODE"], "replicated", "{ls}");
    assert_eq!(r["REPLICAS"], "3/3", "{ls}");
    assert_eq!(r["IMAGE"], "shoal-test/web:v1", "{ls}");
    assert!(r["PORTS"].contains(&format!("{port}->80/tcp")), "{ls}");
    assert!(
        id.starts_with(&r["ID"]),
        "ls ID {} is not a prefix of the created id {id}",
        r["ID"]
    );

    let ps = node.shoal(&["service", "ps", "web"]).ok();
    let rows = table::parse(&ps.stdout);
    let names: BTreeSet<&str> = rows.iter().map(|r| r["NAME"].as_str()).collect();
    assert_eq!(names, BTreeSet::from(["web.1", "web.2", "web.3"]), "{ps}");
    for r in &rows {
        assert_eq!(r["IMAGE"], "shoal-test/web:v1", "{ps}");
        assert_eq!(r["DESIRED STATE"], "Running", "{ps}");
        assert!(r["CURRENT STATE"].starts_with("Running"), "{ps}");
        assert_eq!(r["ERROR"], "", "{ps}");
        assert!(!r["NODE"].is_empty(), "{ps}");
    }
    let containers = node.running_ids("web");
    assert_eq!(containers.len(), 3, "docker runs {containers:?}");

    // The published port answers v1, from all three replicas.
    let body = wait_for(
        "the published port to answer",
        Duration::from_secs(20),
        || http::get_ok(port, "/"),
    );
    assert_eq!(body, "v1");
    let mut hosts = BTreeSet::new();
    for i in 0..60 {
        let h = http::get_ok(port, "/host.html").unwrap_or_else(|e| panic!("request {i}: {e}"));
        hosts.insert(h);
        if hosts.len() == 3 && i >= 29 {
            break;
        }
    }
    assert_eq!(
        hosts.len(),
        3,
        "connections reached {hosts:?}, not 3 distinct pods"
    );
    for h in &hosts {
        assert!(
            containers.iter().any(|c| c.starts_with(h.as_str())),
            "answer {h:?} is not the hostname of one of {containers:?}"
        );
    }
}

#[test]
fn scale_to_five_and_list_in_json_and_quiet() {
    let node = Node::start();
    let port = free_port();
    let id = create_web(&node, "web", 3, port);
    let out = node.shoal(&["service", "scale", "web=5"]).ok();
    assert!(out.stdout.contains("web scaled to 5"), "{out}");
    // scale waits too: 5/5 at once.
    let ls = node.ls_json();
    assert_eq!(ls.len(), 1, "{ls:?}");
    let r = &ls[0];
    assert_eq!(r["ID"], id.as_str(), "{r}");
    assert_eq!(r["Name"], "web", "{r}");
    assert_eq!(r["Replicas"], "5/5", "{r}");
    assert_eq!(as_u64(&r["Running"]), Some(5), "{r}");
    assert_eq!(as_u64(&r["Desired"]), Some(5), "{r}");
    assert_eq!(r["Image"], "shoal-test/web:v1", "{r}");
    assert!(
        r["Ports"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{port}->80")),
        "{r}"
    );
    let containers = node.wait_running("web", 5, CONVERGE);

    let q = node.shoal(&["service", "ls", "-q"]).ok();
    assert_eq!(
        q.stdout.split_whitespace().collect::<Vec<_>>(),
        [id.as_str()],
        "{q}"
    );

    let ps = node.ps_json("web");
    assert_eq!(ps.len(), 5, "{ps:?}");
    let mut slots = BTreeSet::new();
    let mut cids = BTreeSet::new();
    for p in &ps {
        assert_eq!(p["Service"], "web", "{p}");
        assert_eq!(p["DesiredState"], "running", "{p}");
        assert_eq!(p["CurrentState"], "running", "{p}");
        assert_eq!(p["Error"], "", "{p}");
        assert!(!p["Node"].as_str().unwrap_or("").is_empty(), "{p}");
        slots.insert(p["Name"].as_str().unwrap_or("").to_string());
        cids.insert(p["ContainerID"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(
        slots,
        (1..=5).map(|i| format!("web.{i}")).collect::<BTreeSet<_>>()
    );
    assert_eq!(
        cids,
        containers.iter().cloned().collect::<BTreeSet<_>>(),
        "ps ContainerIDs vs docker"
    );
    let pod_ids: BTreeSet<String> = ps
        .iter()
        .map(|p| p["ID"].as_str().unwrap_or("").to_string())
        .collect();
    let q = node.shoal(&["service", "ps", "-q", "web"]).ok();
    let printed: BTreeSet<String> = q.stdout.split_whitespace().map(str::to_string).collect();
    assert_eq!(printed, pod_ids, "{q}");
    // Each container is labelled with its pod and service.
    for c in &containers {
        let pod = shoal_tests::docker::label(c, "io.shoal.pod.id");
        assert!(
            pod_ids.contains(&pod),
            "container {c} has pod label {pod:?}"
        );
        assert_eq!(
            shoal_tests::docker::label(c, "io.shoal.service.name"),
            "web"
        );
        assert!(shoal_tests::docker::label(c, "io.shoal.pod.name").starts_with("web."));
        assert!(!shoal_tests::docker::label(c, "io.shoal.node.id").is_empty());
    }
    // Scaling down converges too.
    node.shoal(&["service", "scale", "web=2"]).ok();
    node.wait_running("web", 2, CONVERGE);
}

#[test]
fn inspect_shows_the_spec_and_status_as_json() {
    let node = Node::start();
    let port = free_port();
    let id = create_web(&node, "web", 3, port);
    let out = node.shoal(&["service", "inspect", "web"]).ok();
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    let s = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
    assert_eq!(s["id"], id.as_str(), "{out}");
    let spec = &s["spec"];
    assert_eq!(spec["name"], "web", "{out}");
    assert_eq!(as_u64(&spec["replicas"]), Some(3), "{out}");
    assert_eq!(spec["container"]["image"], "shoal-test/web:v1", "{out}");
    let ports = spec["ports"].to_string();
    assert!(
        ports.contains(&port.to_string()) && ports.contains("80"),
        "{out}"
    );
    let running = s
        .get("runningReplicas")
        .or_else(|| s.get("running_replicas"));
    assert_eq!(running.and_then(as_u64), Some(3), "status in {out}");
    // By id too; an unknown service is an error.
    node.shoal(&["service", "inspect", &id]).ok();
    let out = node.shoal(&["service", "inspect", "nope"]).fails();
    assert!(out.stderr.contains("service nope not found"), "{out}");
}

#[test]
fn an_image_that_cannot_be_pulled_fails_create_and_ps_shows_why() {
    let node = Node::start();
    // A registry on a loopback port where nothing listens: the pull is
    // really attempted and fails, and no packet leaves the machine.
    let image = "127.0.0.1:9/shoal-test/does-not-exist:v0";
    let out = node
        .shoal(&[
            "service",
            "create",
            "--name",
            "bad",
            "--stop-grace-period",
            "1s",
            image,
        ])
        .fails();
    assert!(
        out.all().contains("does-not-exist"),
        "create's error does not name the image:\n{out}"
    );
    assert_eq!(node.running_ids("bad").len(), 0);

    let ps = node.ps_json("bad");
    let errs: Vec<&str> = ps
        .iter()
        .filter_map(|p| p["Error"].as_str())
        .filter(|e| !e.is_empty())
        .collect();
    assert!(
        errs.iter().any(|e| e.contains(image)),
        "no pod error mentions {image}: {ps:?}"
    );
    let table_out = node.shoal(&["service", "ps", "--no-trunc", "bad"]).ok();
    let rows = table::parse(&table_out.stdout);
    assert!(!rows.is_empty(), "{table_out}");
    assert!(
        rows.iter().any(|r| r["ERROR"].contains(image)),
        "{table_out}"
    );
    assert!(
        rows.iter()
            .all(|r| !r["CURRENT STATE"].starts_with("Running")),
        "{table_out}"
    );
    // The default (truncated) table still shows an error.
    let short = node.shoal(&["service", "ps", "bad"]).ok();
    assert!(
        table::parse(&short.stdout)
            .iter()
            .any(|r| !r["ERROR"].is_empty()),
        "{short}"
    );
    let row = node.ls_row("bad").expect("bad is listed");
    assert_eq!(row["Replicas"], "0/1", "{row}");
}

#[test]
fn rm_leaves_no_container_behind_and_unknown_services_are_errors() {
    let node = Node::start();
    let port = free_port();
    create_web(&node, "web", 3, port);
    create_web(&node, "api", 1, free_port());
    assert_eq!(node.containers(Some("web"), true).len(), 3);
    let out = node.shoal(&["service", "rm", "web"]).ok();
    assert_eq!(out.stdout.trim(), "web", "{out}");
    wait_until_no_container(&node, "web");
    let names: Vec<String> = node
        .ls_json()
        .iter()
        .map(|r| r["Name"].to_string())
        .collect();
    assert_eq!(names, ["\"api\""], "only api remains");
    assert_eq!(
        node.running_ids("api").len(),
        1,
        "removing web must not touch api"
    );
    wait_for(
        "the published port to close",
        Duration::from_secs(10),
        || match http::get(port, "/") {
            Err(_) => Ok(()),
            Ok(r) => Err(format!("still answers {r:?}")),
        },
    );

    let out = node.shoal(&["service", "rm", "nope"]).fails();
    assert!(out.stderr.contains("service nope not found"), "{out}");
    let out = node.shoal(&["service", "ps", "nope"]).fails();
    assert!(out.stderr.contains("service nope not found"), "{out}");
    let out = node.shoal(&["service", "scale", "nope=2"]).fails();
    assert!(out.stderr.contains("service nope not found"), "{out}");
}

#[test]
fn a_global_service_runs_one_pod_per_node_refuses_scale_and_rolls_per_node() {
    let node = Node::start();
    let port = free_port();
    node.create(&[
        "--name",
        "agent",
        "--mode",
        "global",
        "-p",
        &format!("{port}:80"),
        "--stop-grace-period",
        "1s",
        &web_image("v1"),
    ]);
    let ls = node.shoal(&["service", "ls"]).ok();
    let rows = table::parse(&ls.stdout);
    assert_eq!(
        (rows[0]["MODE"].as_str(), rows[0]["REPLICAS"].as_str()),
        ("global", "1/1"),
        "{ls}"
    );
    // One pod on the only node, named after it, as Swarm names global tasks.
    let ps = node.ps_json("agent");
    assert_eq!(ps.len(), 1, "{ps:?}");
    let ps_out = node.shoal(&["service", "ps", "agent"]).ok();
    assert!(
        ps_out.stdout.contains(&format!("agent.{}", node.node_id)),
        "{ps_out}"
    );
    assert_eq!(http::get_ok(port, "/").unwrap(), "v1");

    let scale = node.shoal(&["service", "scale", "agent=3"]).fails();
    assert!(
        scale
            .all()
            .contains("scale can only be used with replicated mode"),
        "{scale}"
    );
    let both = node
        .shoal(&[
            "service",
            "create",
            "--name",
            "x",
            "--mode",
            "global",
            "--replicas",
            "2",
            "img",
        ])
        .fails();
    assert!(
        both.all()
            .contains("--replicas cannot be used with --mode global"),
        "{both}"
    );

    // A rolling update replaces the node's pod.
    let before = node.running_ids("agent");
    node.shoal(&["service", "update", "--image", &web_image("v2"), "agent"])
        .ok();
    assert_eq!(http::get_ok(port, "/").unwrap(), "v2");
    let after = node.running_ids("agent");
    assert_eq!(after.len(), 1);
    assert_ne!(after, before);
}

/// `--pod-network bridge`: pods on Docker's default bridge, where Swarm runs
/// the tasks of a service that names no network. The engine gives them no
/// aliases there (it refuses them); nothing here talks to the pods, since
/// the default bridge is not an internal network.
#[test]
fn pods_run_on_dockers_default_bridge_when_the_node_is_told_so() {
    let node = Node::start_on_default_bridge();
    let image = web_image("v1");
    node.create(&[
        "--name",
        "web",
        "--replicas",
        "2",
        "--stop-grace-period",
        "1s",
        &image,
    ]);
    let ids = node.running_ids("web");
    assert_eq!(ids.len(), 2, "{ids:?}");
    for id in &ids {
        let out = shoal_tests::run(
            std::process::Command::new("docker").args([
                "inspect",
                "--format",
                "{{json .NetworkSettings.Networks}}",
                id,
            ]),
            Duration::from_secs(30),
        )
        .ok();
        let nets: Value = serde_json::from_str(out.stdout.trim()).expect("networks as JSON");
        let names: Vec<&String> = nets.as_object().expect("an object").keys().collect();
        assert_eq!(names, ["bridge"], "container {id} networks: {nets}");
        assert!(
            nets["bridge"]["Aliases"].is_null(),
            "no alias on the default bridge: {nets}"
        );
        assert!(
            nets["bridge"]["IPAddress"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty()),
            "a pod on the bridge has an address: {nets}"
        );
    }
    let rows = node.ls_json();
    assert_eq!(rows[0]["Replicas"], "2/2", "{rows:?}");
    node.shoal(&["service", "rm", "web"]).ok();
    wait_until_no_container(&node, "web");
}
