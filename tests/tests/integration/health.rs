//! Healthchecks decide readiness: a pod takes traffic (and counts in
//! REPLICAS) only once healthy, and an unhealthy pod fails.

use std::time::Duration;

use shoal_tests::images::web_image;
use shoal_tests::{free_port, http, wait_for, Node};

use crate::service::CONVERGE;

#[test]
fn a_pod_takes_traffic_only_once_its_healthcheck_passes() {
    let node = Node::start();
    let port = free_port();
    let image = web_image("v1");
    // Healthy only once /tmp/ready exists, which the container creates
    // after 8 s: long enough to observe the not-yet-healthy phase.
    let out = node.shoal(&[
        "service",
        "create",
        "-d",
        "--name",
        "slow",
        "-p",
        &format!("{port}:80"),
        "--stop-grace-period",
        "1s",
        "--health-cmd",
        "test -f /tmp/ready",
        "--health-interval",
        "500ms",
        "--health-timeout",
        "1s",
        "--health-retries",
        "30",
        &image,
        "sh",
        "-c",
        "(sleep 8; touch /tmp/ready) & exec httpd -f -p 80 -h /www",
    ]);
    assert!(out.success(), "{out}");

    // The container runs, but the pod is not ready: not counted, no traffic.
    wait_for("the container to run", CONVERGE, || {
        let n = node.running_ids("slow").len();
        (n == 1).then_some(()).ok_or(format!("{n} containers"))
    });
    let row = node.ls_row("slow").expect("slow is listed");
    assert_eq!(row["Replicas"], "0/1", "counted before healthy: {row}");
    assert!(
        http::get_ok(port, "/").is_err(),
        "the published port served a pod that is not healthy yet"
    );

    // Once healthy it is counted and served.
    node.wait_running("slow", 1, CONVERGE);
    let body = wait_for("the port to answer", Duration::from_secs(20), || {
        http::get_ok(port, "/")
    });
    assert_eq!(body.trim(), "v1");
    let ps = node.ps_json("slow");
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["CurrentState"], "running", "{ps:?}");
}

#[test]
fn an_unhealthy_pod_fails_and_create_reports_it() {
    let node = Node::start();
    let image = web_image("v1");
    let out = node.shoal(&[
        "service",
        "create",
        "--name",
        "sick",
        "--stop-grace-period",
        "1s",
        "--restart-delay",
        "0s",
        "--health-cmd",
        "false",
        "--health-interval",
        "500ms",
        "--health-timeout",
        "1s",
        "--health-retries",
        "1",
        &image,
    ]);
    assert!(
        !out.success(),
        "create of an always-unhealthy service succeeded:\n{out}"
    );
    assert!(
        out.all().contains("container unhealthy"),
        "create does not say why:\n{out}"
    );
    let ps = node.ps_json("sick");
    assert!(
        ps.iter().any(|p| p["Error"] == "container unhealthy"),
        "no pod shows the unhealthy error: {ps:?}"
    );
}
