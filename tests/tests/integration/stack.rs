//! `shoal stack deploy` on the real Docker Engine: services found by their
//! short names over the stack's network, idempotent redeploys, a change that
//! rolls only its service, --prune, and rm.

use std::time::Duration;

use shoal_tests::docker::docker;
use shoal_tests::images::web_image;
use shoal_tests::{free_port, http, wait_for, Node};

use crate::service::CONVERGE;

fn write_stack(node: &Node, file: &str, text: &str) -> String {
    let path = node.data_dir().join(file);
    std::fs::write(&path, text).expect("write stack file");
    path.display().to_string()
}

fn stack_text(web: &str, port: u16, with_probe: bool) -> String {
    let mut s = format!(
        "services:\n  web:\n    image: {web}\n    stop_grace_period: 1s\n    ports: [\"{port}:80\"]\n    networks:\n      default:\n        aliases: [www]\n    deploy:\n      replicas: 2\n"
    );
    if with_probe {
        s.push_str(&format!(
            "  probe:\n    image: {}\n    stop_grace_period: 1s\n    depends_on: [web]\n    command: [\"sh\", \"-c\", \"while true; do echo short $$(wget -q -O- http://web/) dotted $$(wget -q -O- http://web.demo/) alias $$(wget -q -O- http://www/); sleep 1; done\"]\n",
            web_image("v1")
        ));
    }
    s
}

#[test]
fn a_stack_deploys_redeploys_idempotently_rolls_one_service_prunes_and_is_removed() {
    let node = Node::start();
    let port = free_port();
    let v1_file = write_stack(
        &node,
        "stack.yml",
        &stack_text(&web_image("v1"), port, true),
    );
    let out = node
        .shoal(&["stack", "deploy", "-c", &v1_file, "demo"])
        .ok();
    assert!(out.stdout.contains("Creating service demo_web"), "{out}");

    // The probe reaches `web` by its short name over the stack network.
    wait_for("the probe to reach web by name", CONVERGE, || {
        let logs = node.shoal(&["service", "logs", "demo_probe"]);
        logs.stdout
            .contains("short v1 dotted v1 alias v1")
            .then_some(())
            .ok_or(format!("probe logs: {}", logs.stdout))
    });
    assert_eq!(http::get_ok(port, "/").unwrap(), "v1");
    let ls = node.shoal(&["stack", "ls"]).ok();
    assert!(
        ls.stdout.contains("demo") && ls.stdout.contains('2'),
        "{ls}"
    );

    // Redeploying the same file changes nothing.
    let web_before = node.running_ids("demo_web");
    let probe_before = node.running_ids("demo_probe");
    node.shoal(&["stack", "deploy", "-c", &v1_file, "demo"])
        .ok();
    assert_eq!(node.running_ids("demo_web"), web_before);
    assert_eq!(node.running_ids("demo_probe"), probe_before);

    // An override changes web's image: only web rolls.
    let override_file = write_stack(
        &node,
        "override.yml",
        &format!("services:\n  web:\n    image: {}\n", web_image("v2")),
    );
    node.shoal(&[
        "stack",
        "deploy",
        "-c",
        &v1_file,
        "-c",
        &override_file,
        "demo",
    ])
    .ok();
    wait_for(
        "web to serve v2",
        Duration::from_secs(20),
        || match http::get_ok(port, "/") {
            Ok(b) if b == "v2" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert_eq!(
        node.running_ids("demo_probe"),
        probe_before,
        "probe was rolled"
    );
    assert!(node
        .running_ids("demo_web")
        .iter()
        .all(|id| !web_before.contains(id)));

    // --prune removes the service no longer in the file.
    let web_only = write_stack(
        &node,
        "web-only.yml",
        &stack_text(&web_image("v2"), port, false),
    );
    node.shoal(&["stack", "deploy", "--prune", "-c", &web_only, "demo"])
        .ok();
    wait_for("the probe to be pruned", CONVERGE, || {
        let n = node.containers(Some("demo_probe"), true).len();
        (n == 0)
            .then_some(())
            .ok_or(format!("{n} probe containers"))
    });
    let services = node.shoal(&["stack", "services", "demo"]).ok();
    assert!(!services.stdout.contains("demo_probe"), "{services}");

    // rm removes every service (and container) of the stack.
    node.shoal(&["stack", "rm", "demo"]).ok();
    wait_for("the stack's containers to go", CONVERGE, || {
        let n = node.containers(Some("demo_web"), true).len();
        (n == 0).then_some(()).ok_or(format!("{n} web containers"))
    });
    let out = node.shoal(&["stack", "ps", "demo"]).fails();
    assert!(out.stderr.contains("nothing found in stack: demo"), "{out}");
}

#[test]
fn a_stack_mounts_volumes_binds_and_tmpfs_keeps_named_volumes_on_rm_and_drops_its_networks() {
    let node = Node::start();
    let stack = format!("vol{}", shoal_tests::random_suffix());
    let conf_dir = node.data_dir().join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::write(conf_dir.join("greeting"), "hello from the node\n").unwrap();
    let file = write_stack(
        &node,
        "volumes.yml",
        &format!(
            "services:\n  app:\n    image: {}\n    stop_grace_period: 1s\n    command: [\"sh\", \"-c\", \"cat /data/count 2>/dev/null; echo x >> /data/count; exec sleep 600\"]\n    volumes:\n      - data:/data\n      - ./conf:/conf:ro\n      - type: tmpfs\n        target: /scratch\n        tmpfs: {{size: 8M}}\nvolumes:\n  data: {{}}\n",
            web_image("v1")
        ),
    );
    let volume = format!("{stack}_data");
    let network = format!("{stack}_default");
    node.shoal(&["stack", "deploy", "-c", &file, &stack]).ok();
    let service = format!("{stack}_app");
    let id = node.wait_running(&service, 1, CONVERGE).remove(0);
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", id.as_str()];
        all.extend_from_slice(args);
        docker(&all)
    };

    // The named volume is the stack's, labelled with it.
    let label = docker(&[
        "volume",
        "inspect",
        "-f",
        "{{index .Labels \"io.shoal.stack.namespace\"}}",
        &volume,
    ])
    .ok();
    assert_eq!(label.stdout.trim(), stack, "{label}");
    // The bind mount shows the node's file, read-only.
    let cat = exec(&["cat", "/conf/greeting"]).ok();
    assert_eq!(cat.stdout.trim(), "hello from the node");
    let write = exec(&["sh", "-c", "echo no > /conf/greeting"]);
    assert!(
        !write.success(),
        "a read-only bind mount was writable: {write}"
    );
    // The tmpfs is a tmpfs.
    let mounts = exec(&["cat", "/proc/mounts"]).ok();
    assert!(
        mounts
            .stdout
            .lines()
            .any(|l| l.contains(" /scratch ") && l.starts_with("tmpfs")),
        "{mounts}"
    );

    // A replacement pod sees what the first one wrote in the named volume.
    docker(&["rm", "-f", &id]).ok();
    wait_for("the pod to be replaced", CONVERGE, || {
        match node.running_ids(&service).first() {
            Some(new) if *new != id => Ok(()),
            other => Err(format!("running: {other:?}")),
        }
    });
    let new_id = node.running_ids(&service).remove(0);
    let count = docker(&["exec", &new_id, "cat", "/data/count"]).ok();
    assert_eq!(count.stdout.lines().count(), 2, "{count}");

    // rm keeps the named volume (as Docker does) and drops the network.
    node.shoal(&["stack", "rm", &stack]).ok();
    wait_for("the stack's network to go", CONVERGE, || {
        let n = node.containers(Some(&service), true).len();
        let net = docker(&["network", "inspect", &network]);
        (n == 0 && !net.success())
            .then_some(())
            .ok_or(format!("{n} containers; network inspect: {}", net.stdout))
    });
    docker(&["volume", "inspect", &volume]).ok();
    docker(&["volume", "rm", &volume]).ok();
}

#[test]
fn an_external_volume_or_network_that_does_not_exist_fails_the_deploy_naming_it() {
    let node = Node::start();
    let stack = format!("ext{}", shoal_tests::random_suffix());
    let missing = format!("shoal-it-missing-{}", shoal_tests::random_suffix());
    // (kind, the service's key, the top-level section)
    for (kind, uses) in [
        ("volume", "volumes: [\"gone:/data\"]"),
        ("network", "networks: [gone]"),
    ] {
        let file = write_stack(
            &node,
            &format!("external-{kind}.yml"),
            &format!(
                "services:\n  app:\n    image: {}\n    stop_grace_period: 1s\n    {uses}\n    deploy:\n      restart_policy: {{condition: none}}\n{kind}s:\n  gone:\n    external: true\n    name: {missing}\n",
                web_image("v1")
            ),
        );
        let out = node
            .shoal(&["stack", "deploy", "-c", &file, &stack])
            .fails();
        assert!(
            out.all().contains(&format!(
                "{kind} \"{missing}\" is external but does not exist"
            )),
            "{out}"
        );
        let inspect = docker(&[kind, "inspect", &missing]);
        assert!(
            !inspect.success(),
            "the external {kind} was created: {inspect}"
        );
        node.shoal(&["stack", "rm", &stack]).ok();
    }
}

#[test]
fn a_bad_stack_file_is_refused_naming_the_key() {
    let node = Node::start();
    let bad = write_stack(
        &node,
        "bad.yml",
        "services:\n  web:\n    image: x\n    deploy:\n      replicas: three\n",
    );
    let out = node.shoal(&["stack", "deploy", "-c", &bad, "x"]).fails();
    assert!(out.stderr.contains("services.web.deploy.replicas"), "{out}");
}

/// When a container was created, in milliseconds since the epoch (from
/// `docker inspect`'s RFC 3339 time, to the millisecond).
fn created_ms(id: &str) -> i64 {
    let out = docker(&["inspect", "-f", "{{.Created}}", id]).ok();
    let t = out.stdout.trim();
    // 2026-12-02T06:03:08.123456789Z: seconds of the day are enough here.
    let (_, time) = t.split_once('T').expect("RFC 3339 time");
    let mut parts = time.trim_end_matches('Z').split(':');
    let h: i64 = parts.next().unwrap().parse().unwrap();
    let m: i64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    (h * 3600 + m * 60) * 1000 + (s * 1000.0) as i64
}

#[test]
fn depends_on_service_healthy_holds_a_service_until_its_dependency_is_healthy() {
    let node = Node::start();
    let stack = format!("dep{}", shoal_tests::random_suffix());
    let file = write_stack(
        &node,
        "depends.yml",
        &format!(
            "services:\n  db:\n    image: {img}\n    stop_grace_period: 1s\n    command: [\"sh\", \"-c\", \"sleep 3; : > /tmp/ready; exec sleep 600\"]\n    healthcheck:\n      test: [\"CMD-SHELL\", \"[ -f /tmp/ready ]\"]\n      interval: 500ms\n      retries: 20\n  app:\n    image: {img}\n    stop_grace_period: 1s\n    command: [\"sleep\", \"600\"]\n    depends_on:\n      db:\n        condition: service_healthy\n",
            img = web_image("v1")
        ),
    );
    let out = node.shoal(&["stack", "deploy", "-c", &file, &stack]).ok();
    assert!(
        out.stdout
            .contains(&format!("Waiting for {stack}_db to be healthy")),
        "{out}"
    );
    let db = node.running_ids(&format!("{stack}_db"));
    let app = node.running_ids(&format!("{stack}_app"));
    assert_eq!((db.len(), app.len()), (1, 1), "{out}");
    let gap = created_ms(&app[0]) - created_ms(&db[0]);
    assert!(
        gap >= 3_000,
        "app was created {gap} ms after db, before db could be healthy"
    );
    // A redeploy waits for nothing: the order matters only the first time.
    let again = node.shoal(&["stack", "deploy", "-c", &file, &stack]).ok();
    assert!(!again.stdout.contains("Waiting for"), "{again}");
    node.shoal(&["stack", "rm", &stack]).ok();
}
