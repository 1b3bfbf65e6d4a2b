//! The voting app example end to end (DESIGN.md's S3 on one host): its
//! images built locally by build-images.sh, `stack deploy` of
//! stack-examples/voting-app/stack.yml, votes cast through vote's published
//! port showing up on result's page, a voter's second vote replacing the
//! first, and `stack rm` keeping the database's named volume, whose data a
//! new deploy finds again.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::cmd::try_run;
use shoal_tests::docker::docker;
use shoal_tests::{free_port, http, random_suffix, run, voting, wait_for, Node};

use crate::service::CONVERGE;

/// `stack deploy` waits for five services (db's healthcheck included).
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(300);
/// From a vote accepted by vote to its count on result's page.
const VOTE_SHOWS: Duration = Duration::from_secs(60);

/// What the stack leaves behind on purpose (its named volume), or when the
/// test fails half way (its networks, which otherwise go with its last pod):
/// removed when the test ends, after the node (declared before it, so
/// dropped after it) removed the containers using them.
struct Leftovers {
    stack: String,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let t = Duration::from_secs(30);
        for net in ["frontend", "backend"] {
            let name = format!("{}_{net}", self.stack);
            let _ = try_run(Command::new("docker").args(["network", "rm", &name]), t);
        }
        let volume = format!("{}_db-data", self.stack);
        let _ = try_run(Command::new("docker").args(["volume", "rm", &volume]), t);
    }
}

/// Casts `vote` (a or b) as `voter`, through vote's published port; retried
/// until vote accepts it (a replica may still be starting or redis not yet
/// answering).
fn cast(port: u16, voter: &str, vote: &str) {
    let cookie = format!("Cookie: voter_id={voter}");
    let want = if vote == "a" { "Cats" } else { "Dogs" };
    wait_for(
        &format!("vote to accept {voter}'s vote for {want}"),
        CONVERGE,
        || match http::post_form(port, "/", &[&cookie], &format!("vote={vote}")) {
            Ok((200, body)) if body.contains(&format!("You voted for {want}")) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// Polls result's JSON until it counts `a` cats and `b` dogs; the page
/// must say the same.
fn wait_counts(port: u16, a: u64, b: u64) {
    let counts = wait_for(
        &format!("result to count {a} cat(s) and {b} dog(s)"),
        VOTE_SHOWS,
        || {
            let body = http::get_ok(port, "/api/results")?;
            let v: Value =
                serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
            let want = serde_json::json!({"a": a, "b": b, "total": a + b});
            if v == want {
                Ok(v)
            } else {
                let page = http::get_ok(port, "/").unwrap_or_else(|e| e);
                Err(format!("/api/results: {body}; page:\n{page}"))
            }
        },
    );
    let page = http::get_ok(port, "/").expect("result's page");
    for line in [format!("Cats: {a}"), format!("Dogs: {b}")] {
        assert!(
            page.contains(&line),
            "result's page lacks {line:?} (JSON says {counts}):\n{page}"
        );
    }
}

#[test]
fn a_vote_cast_through_the_vote_port_shows_up_on_the_result_page() {
    voting::build_images();
    let stack = format!("vote{}", random_suffix());
    let _leftovers = Leftovers {
        stack: stack.clone(),
    };
    let node = Node::start();
    let vote_port = free_port();
    let result_port = loop {
        let p = free_port();
        if p != vote_port {
            break p;
        }
    };

    let file = voting::stack_file();
    let mut deploy = node.command(&["stack", "deploy", "-c"]);
    deploy
        .arg(&file)
        .arg(&stack)
        .env("VOTE_PORT", vote_port.to_string())
        .env("RESULT_PORT", result_port.to_string());
    let out = run(&mut deploy, DEPLOY_TIMEOUT);
    assert!(
        out.success(),
        "stack deploy failed:\n{out}\n--- daemon log (tail)\n{}",
        node.log_tail(40)
    );
    for (service, n) in [
        ("redis", 1),
        ("db", 1),
        ("vote", 2),
        ("worker", 2),
        ("result", 1),
    ] {
        node.wait_running(&format!("{stack}_{service}"), n, CONVERGE);
    }
    let volume = format!("{stack}_db-data");
    docker(&["volume", "inspect", &volume]).ok();

    // The ballot, through the daemon's ingress proxy on the vote port.
    let ballot = wait_for("vote's page", CONVERGE, || http::get_ok(vote_port, "/"));
    assert!(
        ballot.contains("Cats") && ballot.contains("Dogs"),
        "{ballot}"
    );

    // A vote goes vote -> redis -> worker -> db -> result.
    cast(vote_port, "voter-1", "a");
    wait_counts(result_port, 1, 0);
    cast(vote_port, "voter-2", "b");
    wait_counts(result_port, 1, 1);
    // A voter's later vote replaces the earlier one.
    cast(vote_port, "voter-1", "b");
    wait_counts(result_port, 0, 2);

    // stack rm removes the services and keeps the named volume.
    node.shoal(&["stack", "rm", &stack]).ok();
    wait_for("the stack's containers to go", CONVERGE, || {
        let left: Vec<String> = ["redis", "db", "vote", "worker", "result"]
            .iter()
            .flat_map(|s| node.containers(Some(&format!("{stack}_{s}")), true))
            .map(|c| c.name)
            .collect();
        left.is_empty()
            .then_some(())
            .ok_or(format!("containers left: {left:?}"))
    });
    let out = docker(&["volume", "inspect", "--format", "{{.Name}}", &volume]);
    assert!(
        out.success() && out.stdout.trim() == volume,
        "stack rm must keep the volume {volume}:\n{out}"
    );

    // Deployed again, the database finds its data in the volume.
    let out = run(&mut deploy, DEPLOY_TIMEOUT);
    assert!(
        out.success(),
        "stack deploy after rm failed:\n{out}\n--- daemon log (tail)\n{}",
        node.log_tail(40)
    );
    wait_counts(result_port, 0, 2);
    node.shoal(&["stack", "rm", &stack]).ok();
}
