//! The Docker CLI, as the tests use it to check what shoal did.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::cmd::{run, Output};

static DOCKER_LOCK: Mutex<()> = Mutex::new(());

/// Serializes the tests that use Docker (held for a test's whole run). A test
/// that panicked while holding it does not block the others.
pub fn lock() -> MutexGuard<'static, ()> {
    DOCKER_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `docker ARGS` (60 s at most).
pub fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args), Duration::from_secs(60))
}

/// Panics unless the Docker Engine answers: Docker tests fail, never skip.
pub fn require_docker() {
    let out = docker(&["info", "--format", "{{.ServerVersion}}"]);
    assert!(
        out.success() && !out.stdout.trim().is_empty(),
        "the Docker Engine is unreachable; these tests need it:\n{out}"
    );
}

/// One line of `docker ps`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub state: String,
}

/// `docker ps [-a] --filter F ...`, full ids.
pub fn containers(filters: &[String], all: bool) -> Vec<Container> {
    let mut args = vec![
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}}\t{{.Names}}\t{{.State}}",
    ];
    if all {
        args.push("-a");
    }
    for f in filters {
        args.push("--filter");
        args.push(f);
    }
    let out = docker(&args).ok();
    let mut v: Vec<Container> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split('\t');
            Container {
                id: it.next().unwrap_or_default().to_string(),
                name: it.next().unwrap_or_default().to_string(),
                state: it.next().unwrap_or_default().to_string(),
            }
        })
        .collect();
    v.sort();
    v
}

/// A label of a container (empty if absent).
pub fn label(container: &str, key: &str) -> String {
    let f = format!("{{{{index .Config.Labels \"{key}\"}}}}");
    docker(&["inspect", "--format", &f, container])
        .ok()
        .stdout
        .trim()
        .to_string()
}

/// `docker rm -f` of every container matching the filters (errors ignored).
pub fn remove_all(filters: &[String]) {
    let ids: Vec<String> = containers(filters, true)
        .into_iter()
        .map(|c| c.id)
        .collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids.iter().map(String::as_str));
        let _ = docker(&args);
    }
}
