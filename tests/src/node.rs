//! A single-host shoal node for one test: its own data directory, socket,
//! loopback gRPC port and internal pod network; cleaned up on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;
use std::time::Duration;

use serde_json::Value;
use shoal_worker::exec::docker::spec::DOCKER_DEFAULT_BRIDGE;

use crate::cmd::{run, try_run, Output};
use crate::docker::{self, Container};
use crate::wait::wait_for;

/// Client commands (`service create` waits up to 2 minutes to converge).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);
/// `init` and `daemon` return once the daemon serves.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Node {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub listen_port: u16,
    pub network: String,
    /// This node's id (`shoal info`), on every container it creates.
    pub node_id: String,
    /// What `shoal init` printed.
    pub init: Output,
    // Dropped last: the next Docker test starts after this one cleaned up.
    _docker: MutexGuard<'static, ()>,
}

impl Node {
    /// Takes the Docker lock, checks Docker, and runs `shoal init` (detached);
    /// panics with the daemon's log if init fails.
    pub fn start() -> Node {
        Node::start_on(None)
    }

    /// As [`Node::start`], with Docker's default `bridge` as the pod network
    /// (not internal: a test on such a node must not talk to its pods).
    pub fn start_on_default_bridge() -> Node {
        Node::start_on(Some(DOCKER_DEFAULT_BRIDGE))
    }

    fn start_on(docker_network: Option<&str>) -> Node {
        let guard = docker::lock();
        docker::require_docker();
        // Short path: Unix socket paths must stay under ~100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("shoal-it-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let socket = dir.path().join("s.sock");
        let listen_port = crate::free_port();
        let network = docker_network
            .map(str::to_string)
            .unwrap_or_else(|| format!("shoal-it-{}", crate::random_suffix()));
        let mut node = Node {
            socket,
            listen_port,
            network,
            node_id: String::new(),
            init: Output {
                cmdline: String::new(),
                status: Default::default(),
                stdout: String::new(),
                stderr: String::new(),
            },
            dir,
            _docker: guard,
        };
        let mut init = Command::new(crate::shoal_bin());
        init.arg("init")
            .arg("--data-dir")
            .arg(node.dir.path())
            .arg("--socket")
            .arg(&node.socket)
            .arg("--listen-addr")
            .arg(format!("127.0.0.1:{listen_port}"))
            .args([
                "--advertise-addr",
                "127.0.0.1",
                "--pod-network",
                &node.network,
            ]);
        if docker_network.is_none() {
            init.arg("--pod-network-internal");
        }
        let out = run(&mut init, START_TIMEOUT);
        assert!(
            out.success(),
            "shoal init failed:\n{out}\n--- daemon log\n{}",
            node.log()
        );
        node.init = out;
        let info = node.shoal(&["info", "--format", "json"]).ok();
        let v: Value = serde_json::from_str(&info.stdout)
            .unwrap_or_else(|e| panic!("info --format json is not JSON ({e}):\n{info}"));
        node.node_id = ["nodeId", "NodeID", "node_id"]
            .iter()
            .find_map(|k| v[*k].as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| panic!("info --format json has no node id:\n{info}"))
            .to_string();
        node
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The -H value for this node.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `shoal -H unix://S ARGS` command, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::shoal_bin());
        c.arg("-H")
            .arg(self.host())
            .args(args)
            .env_remove("SHOAL_HOST");
        c
    }

    /// Runs `shoal -H unix://S ARGS`.
    pub fn shoal(&self, args: &[&str]) -> Output {
        run(&mut self.command(args), CLIENT_TIMEOUT)
    }

    /// Runs `shoal daemon --data-dir D --socket S` (detached: returns once it serves).
    pub fn resume(&self) -> Output {
        run(
            Command::new(crate::shoal_bin())
                .arg("daemon")
                .arg("--data-dir")
                .arg(self.data_dir())
                .arg("--socket")
                .arg(&self.socket),
            START_TIMEOUT,
        )
    }

    /// The daemon's pid, from D/shoal.pid.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data_dir().join("shoal.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// kill -9 of the daemon; waits until the process is gone.
    pub fn kill9(&self) {
        let pid = self.pid().expect("the daemon wrote no D/shoal.pid");
        assert!(alive(pid), "daemon pid {pid} is not running before kill -9");
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        wait_for("the killed daemon to exit", Duration::from_secs(10), || {
            if alive(pid) {
                Err(format!("pid {pid} still alive"))
            } else {
                Ok(())
            }
        });
    }

    /// Everything the daemon logged (files in the data dir ending in .log).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.data_dir()) {
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    s.push_str(&format!("== {}\n", p.display()));
                    s.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
                }
            }
        }
        s
    }

    /// The last `n` lines of the daemon's log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Docker containers of this node (label io.shoal.node.id; all states if
    /// `all`), of one service if `service` is given.
    pub fn containers(&self, service: Option<&str>, all: bool) -> Vec<Container> {
        let mut f = vec![format!("label=io.shoal.node.id={}", self.node_id)];
        if let Some(s) = service {
            f.push(format!("label=io.shoal.service.name={s}"));
        }
        docker::containers(&f, all)
    }

    /// Running container ids of a service, sorted.
    pub fn running_ids(&self, service: &str) -> Vec<String> {
        self.containers(Some(service), false)
            .into_iter()
            .filter(|c| c.state == "running")
            .map(|c| c.id)
            .collect()
    }

    /// `service ls --format json`.
    pub fn ls_json(&self) -> Vec<Value> {
        let out = self.shoal(&["service", "ls", "--format", "json"]).ok();
        match serde_json::from_str(&out.stdout) {
            Ok(Value::Array(v)) => v,
            _ => panic!("service ls --format json is not a JSON array:\n{out}"),
        }
    }

    /// The `service ls --format json` row of one service.
    pub fn ls_row(&self, service: &str) -> Option<Value> {
        self.ls_json().into_iter().find(|r| r["Name"] == service)
    }

    /// `service ps SERVICE --format json` (history included).
    pub fn ps_json(&self, service: &str) -> Vec<Value> {
        let out = self
            .shoal(&["service", "ps", service, "--format", "json", "--no-trunc"])
            .ok();
        match serde_json::from_str(&out.stdout) {
            Ok(Value::Array(v)) => v,
            _ => panic!("service ps --format json is not a JSON array:\n{out}"),
        }
    }

    /// Waits until `service ls` says N/N and Docker runs exactly N containers
    /// of the service; returns their ids.
    #[track_caller]
    pub fn wait_running(&self, service: &str, n: usize, timeout: Duration) -> Vec<String> {
        wait_for(&format!("{service} to run {n}/{n}"), timeout, || {
            let row = self.ls_row(service).ok_or("service not listed")?;
            let want = format!("{n}/{n}");
            if row["Replicas"] != want.as_str() {
                return Err(format!("service ls row: {row}"));
            }
            let ids = self.running_ids(service);
            if ids.len() != n {
                return Err(format!("{} running containers: {ids:?}", ids.len()));
            }
            Ok(ids)
        })
    }

    /// Creates a service, waiting for it (`service create` without -d).
    pub fn create(&self, args: &[&str]) -> Output {
        let mut a = vec!["service", "create"];
        a.extend_from_slice(args);
        let out = self.shoal(&a);
        assert!(
            out.success(),
            "service create failed:\n{out}\n--- daemon log (tail)\n{}",
            self.log_tail(40)
        );
        out
    }
}

/// Whether a process runs (zombies count as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // pid (comm) STATE ...; comm may contain spaces.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

impl Node {
    /// What a failed test needs to see: the daemon's log and view, and Docker's.
    fn diagnose(&self) {
        let t = Duration::from_secs(30);
        eprintln!(
            "--- shoal daemon log (last 60 lines) of {}\n{}",
            self.data_dir().display(),
            self.log_tail(60)
        );
        if self.pid().is_some_and(alive) {
            if let Ok(ls) = try_run(&mut self.command(&["service", "ls"]), t) {
                eprintln!("--- shoal service ls\n{}", ls.stdout.trim_end());
                for name in crate::table::parse(&ls.stdout)
                    .iter()
                    .filter_map(|r| r.get("NAME").cloned())
                {
                    if let Ok(ps) = try_run(
                        &mut self.command(&["service", "ps", "--no-trunc", &name]),
                        t,
                    ) {
                        eprintln!("--- shoal service ps {name}\n{}", ps.stdout.trim_end());
                    }
                }
            }
        }
        for filter in [
            format!("label=io.shoal.node.id={}", self.node_id),
            format!("network={}", self.network),
        ] {
            let fmt = "{{.ID}} {{.Names}} {{.Status}} networks={{.Networks}}";
            if let Ok(ps) = try_run(
                Command::new("docker").args(["ps", "-a", "--filter", &filter, "--format", fmt]),
                t,
            ) {
                eprintln!(
                    "--- docker ps -a --filter {filter}\n{}",
                    ps.stdout.trim_end()
                );
            }
        }
    }
}

impl Drop for Node {
    // Cleanup never panics: a panic while unwinding would abort the run.
    fn drop(&mut self) {
        let t = Duration::from_secs(30);
        let failed = std::thread::panicking();
        if failed {
            self.diagnose();
        }
        if let Some(pid) = self.pid().filter(|p| alive(*p)) {
            if !failed {
                let mut c = self.command(&["leave", "--force"]);
                c.arg("--data-dir").arg(self.data_dir());
                let _ = try_run(&mut c, t);
            }
            if alive(pid) {
                let _ = try_run(Command::new("kill").args(["-9", &pid.to_string()]), t);
            }
        }
        // Docker's default bridge is shared: only this node's containers go.
        let own_network = self.network != DOCKER_DEFAULT_BRIDGE;
        let mut filters = Vec::new();
        if own_network {
            filters.push(format!("network={}", self.network));
        }
        if !self.node_id.is_empty() {
            filters.push(format!("label=io.shoal.node.id={}", self.node_id));
        }
        for f in filters {
            if let Ok(out) = try_run(
                Command::new("docker").args(["ps", "-aq", "--no-trunc", "--filter", &f]),
                t,
            ) {
                let ids: Vec<&str> = out.stdout.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = try_run(Command::new("docker").args(["rm", "-f"]).args(&ids), t);
                }
            }
        }
        if own_network {
            let _ = try_run(
                Command::new("docker").args(["network", "rm", &self.network]),
                t,
            );
        }
        if failed {
            // Keep the evidence: the data dir (log and raft store) stays, and
            // `shoal daemon --data-dir` can reopen it.
            self.dir.disable_cleanup(true);
            eprintln!("--- data dir kept: {}", self.data_dir().display());
        }
    }
}
