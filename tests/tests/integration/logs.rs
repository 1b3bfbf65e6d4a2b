//! `service logs`: pod-name prefixes, --tail, and -f following pods that
//! start later.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_tests::images::web_image;
use shoal_tests::{wait_for, Node};

const SCRIPT: &str = "echo \"hello from $(hostname)\"; echo ready; exec httpd -f -p 80 -h /www";

/// (pod name, text) of a `NAME.ID    | text` line; NAME is like talk.2.
fn split(line: &str) -> Option<(String, String)> {
    let (prefix, text) = line.split_once(" | ")?;
    let prefix = prefix.trim();
    // talk.2.<short pod id>
    let (name, _id) = prefix.rsplit_once('.')?;
    Some((name.to_string(), text.to_string()))
}

/// Reads lines into `seen` until `want` holds or `timeout` passes.
fn read_until(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    timeout: Duration,
    want: impl Fn(&[String]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !want(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(l) => seen.push(l),
            Err(_) => return want(seen),
        }
    }
    true
}

fn create_talk(node: &Node, replicas: &str) {
    let image = web_image("v1");
    node.create(&[
        "--name",
        "talk",
        "--replicas",
        replicas,
        "--stop-grace-period",
        "1s",
        &image,
        "sh",
        "-c",
        SCRIPT,
    ]);
}

#[test]
fn logs_prefix_lines_with_pod_names_tail_and_follow_new_pods() {
    let node = Node::start();
    create_talk(&node, "2");

    // Every line is prefixed with its pod's name; both pods' lines show.
    let lines = wait_for(
        "both pods' output in service logs",
        Duration::from_secs(20),
        || {
            let out = node.shoal(&["service", "logs", "talk"]).ok();
            let lines: Vec<(String, String)> = out.stdout.lines().filter_map(split).collect();
            for pod in ["talk.1", "talk.2"] {
                let mine: Vec<&str> = lines
                    .iter()
                    .filter(|(n, _)| n == pod)
                    .map(|(_, t)| t.as_str())
                    .collect();
                if !(mine.iter().any(|t| t.starts_with("hello from ")) && mine.contains(&"ready")) {
                    return Err(format!("no full output of {pod}:\n{out}"));
                }
            }
            if out.stdout.lines().count() != lines.len() {
                return Err(format!("a line without a pod prefix:\n{out}"));
            }
            Ok(lines)
        },
    );
    assert_eq!(lines.len(), 4, "{lines:?}");

    // --tail 1: the last line of each pod.
    let out = node.shoal(&["service", "logs", "--tail", "1", "talk"]).ok();
    let mut tail: Vec<(String, String)> = out.stdout.lines().filter_map(split).collect();
    tail.sort();
    assert_eq!(
        tail,
        [
            ("talk.1".to_string(), "ready".to_string()),
            ("talk.2".to_string(), "ready".to_string())
        ],
        "{out}"
    );

    // -f: follows, and a pod added by scale shows up.
    let mut child = node
        .command(&["service", "logs", "-f", "talk"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn service logs -f");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let has = |pod: &'static str| {
        move |s: &[String]| {
            s.iter()
                .filter_map(|l| split(l))
                .any(|(n, t)| n == pod && t.starts_with("hello from "))
        }
    };
    let first = read_until(&rx, &mut seen, Duration::from_secs(20), |s| {
        has("talk.1")(s) && has("talk.2")(s)
    });
    let early_exit = child.try_wait().expect("try_wait");
    if !first || early_exit.is_some() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "logs -f: existing pods' output {first}, exited early {early_exit:?}; lines: {seen:#?}"
        );
    }
    node.shoal(&["service", "scale", "talk=3"]).ok();
    let third = read_until(&rx, &mut seen, Duration::from_secs(30), has("talk.3"));
    let still_running = child.try_wait().expect("try_wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        third,
        "logs -f did not show the pod added by scale (talk.3); lines: {seen:#?}"
    );
    assert!(still_running, "logs -f exited by itself");
}
