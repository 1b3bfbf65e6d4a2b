//! Host-mode published ports: bound by the container itself through Docker,
//! so one node runs at most one pod per port, and the scheduler says why
//! the others wait.

use shoal_tests::images::web_image;
use shoal_tests::{free_port, wait_for, Node};

use crate::service::CONVERGE;

#[test]
fn a_host_mode_port_is_bound_by_docker_and_allows_one_pod_per_node() {
    let node = Node::start();
    let port = free_port();
    let image = web_image("v1");
    let out = node.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "hp",
        "--replicas",
        "2",
        "-p",
        &format!("mode=host,published={port},target=80"),
        "--stop-grace-period",
        "1s",
        &image,
    ]);
    assert!(out.success(), "{out}");

    wait_for("one pod to run", CONVERGE, || {
        let n = node.running_ids("hp").len();
        (n == 1).then_some(()).ok_or(format!("{n} containers"))
    });
    // Docker itself is asked to bind the port for the container. (The test
    // pod network is --internal for network safety, and Docker publishes no
    // port of a container on an internal network, so the binding is checked
    // in the container's configuration rather than by connecting.)
    let id = &node.running_ids("hp")[0];
    let bindings = shoal_tests::docker::docker(&[
        "inspect",
        "--format",
        "{{json .HostConfig.PortBindings}}",
        id,
    ]);
    assert!(
        bindings.stdout.contains(&format!(
            "\"80/tcp\":[{{\"HostIp\":\"\",\"HostPort\":\"{port}\"}}]"
        )),
        "port bindings of {id}: {}",
        bindings.stdout
    );

    // The second pod cannot be placed, and ps says why.
    let why = wait_for("the pending pod to be explained", CONVERGE, || {
        node.ps_json("hp")
            .into_iter()
            .filter_map(|p| p["Error"].as_str().map(str::to_string))
            .find(|e| e.contains("already in use"))
            .ok_or("no explanation yet".to_string())
    });
    assert_eq!(
        why,
        format!("no suitable node (1 node: host-mode port {port} already in use)")
    );
}
