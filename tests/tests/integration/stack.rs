//! `shoal stack deploy` on the real Docker Engine: services found by their
//! short names over the stack's network, idempotent redeploys, a change that
//! rolls only its service, --prune, and rm.

use std::time::Duration;

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
        "services:\n  web:\n    image: {web}\n    stop_grace_period: 1s\n    ports: [\"{port}:80\"]\n    deploy:\n      replicas: 2\n"
    );
    if with_probe {
        s.push_str(&format!(
            "  probe:\n    image: {}\n    stop_grace_period: 1s\n    depends_on: [web]\n    command: [\"sh\", \"-c\", \"while true; do wget -q -O- http://web/; sleep 1; done\"]\n",
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
            .contains("| v1")
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
fn a_stack_with_what_cannot_run_yet_is_refused_naming_the_key() {
    let node = Node::start();
    let file = write_stack(
        &node,
        "vol.yml",
        &format!(
            "services:\n  db:\n    image: {}\n    volumes: [\"data:/data\"]\nvolumes:\n  data: {{}}\n",
            web_image("v1")
        ),
    );
    let out = node.shoal(&["stack", "deploy", "-c", &file, "x"]).fails();
    assert!(
        out.stderr
            .contains("services.db.volumes: volumes are not supported by stack deploy yet"),
        "{out}"
    );
    let bad = write_stack(
        &node,
        "bad.yml",
        "services:\n  web:\n    image: x\n    deploy:\n      replicas: three\n",
    );
    let out = node.shoal(&["stack", "deploy", "-c", &bad, "x"]).fails();
    assert!(out.stderr.contains("services.web.deploy.replicas"), "{out}");
}
