//! The small web example (stack-examples/web/stack.yml) as a user deploys
//! it: three replicas answering on the published port, and an image change
//! rolled through them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use shoal_tests::images::web_image;
use shoal_tests::{free_port, http, random_suffix, run, wait_for, Node};

use crate::service::CONVERGE;

fn web_stack_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stack-examples/web/stack.yml")
}

#[test]
fn the_web_example_serves_from_three_replicas_and_rolls_a_new_image() {
    let node = Node::start();
    let stack = format!("web{}", random_suffix());
    let service = format!("{stack}_web");
    let port = free_port();
    let deploy = |image: &str| {
        let mut c = node.command(&["stack", "deploy", "-c"]);
        c.arg(web_stack_file())
            .arg(&stack)
            .env("WEB_IMAGE", image)
            .env("WEB_PORT", port.to_string());
        let out = run(&mut c, Duration::from_secs(180));
        assert!(
            out.success(),
            "stack deploy failed:\n{out}\n--- daemon log (tail)\n{}",
            node.log_tail(40)
        );
    };

    deploy(&web_image("v1"));
    node.wait_running(&service, 3, CONVERGE);
    // The proxy balances over the replicas: each answers with its hostname.
    let hosts = wait_for("three replicas to answer", CONVERGE, || {
        let mut seen = BTreeSet::new();
        for _ in 0..30 {
            seen.insert(http::get_ok(port, "/host.html")?);
        }
        (seen.len() == 3)
            .then_some(seen.clone())
            .ok_or(format!("answered by {seen:?}"))
    });
    assert_eq!(http::get_ok(port, "/").unwrap(), "v1", "{hosts:?}");

    deploy(&web_image("v2"));
    wait_for("web to serve v2", CONVERGE, || {
        match http::get_ok(port, "/") {
            Ok(b) if b == "v2" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    node.wait_running(&service, 3, CONVERGE);
    node.shoal(&["stack", "rm", &stack]).ok();
}
