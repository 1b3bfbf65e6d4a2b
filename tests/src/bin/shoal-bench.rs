//! shoal-bench: the figures of docs/BENCHMARKS.md, printed, never asserted.
//!
//! `shoal-bench swarm [--reps N]` compares shoal with Docker Swarm on the
//! local engine, on the same machine and in one run:
//!
//! - create -> 10/10 running: time from issuing `service create -d` of 10
//!   replicas until the orchestrator's own list says 10/10;
//! - scale 10 -> 30: likewise from `service scale -d NAME=30` to 30/30;
//! - rm -> no container left: from `service rm` until `docker ps -a` shows no
//!   container of the service;
//! - the daemon's resident memory (VmRSS), idle and with 30 pods. For Swarm
//!   that daemon is dockerd, which also hosts the engine itself; dockerd's RSS
//!   is also sampled during the shoal runs, so that the engine's share can be
//!   told apart.
//!
//! Both systems run the same locally built image (`shoal-test/web:v1`) with
//! `--stop-grace-period 1s`, no published ports (Swarm's ingress needs IPVS),
//! and are polled the same way: the list command every 50 ms. Swarm is
//! started with `--no-resolve-image`, on 127.0.0.1 only, and always left
//! (`docker swarm leave --force`) on success, error, panic or signal. The two
//! never run at the same time: each repetition runs one system to the end
//! (torn down) before starting the other, and the order alternates between
//! repetitions.
//!
//! `shoal-bench update [--reps N] [--grace 10s]` compares the rolling updates
//! of both systems (issue 3), in the same way and with the same guards:
//!
//! - create 30 replicas of `shoal-test/web:v1` with the stop grace period
//!   (default 10 s; busybox httpd ignores SIGTERM, so each stop takes all of
//!   it), untimed wait for 30/30;
//! - update -> completed: from issuing `service update -d --image
//!   shoal-test/web:v2` with parallelism 5, monitor 1 s, delay 0, order
//!   stop-first and failure action pause, until the service's update status
//!   says completed (shoal: `updateStatus.state` of `shoal service inspect` is
//!   `UPDATE_STATE_COMPLETED`; Swarm: `{{.UpdateStatus.State}}` is
//!   `completed`), polled every 50 ms;
//! - rollback -> completed: from issuing `service rollback -d` (rollback
//!   defaults, the same in both: parallelism 1, monitor 5 s, delay 0,
//!   stop-first, pause) until the state is rollback completed;
//! - rm -> no container left.
//!
//! `shoal-bench cluster [--reps N]` compares the clusters of both systems in
//! node containers (tests/src/hosts.rs: each its own Docker Engine and
//! address on an `--internal` network), one system at a time, fresh
//! containers for each system and repetition:
//!
//! - worker join / manager join: wall time, measured inside the node, of
//!   `shoal join --token T IP1` / `docker swarm join --token T IP1:2377` in
//!   n2 (worker token) and n3 (manager token), against n1;
//! - failover -> first write: with three managers (n1, n3, n4; n4 joins
//!   with the manager token too, as shoal has no `node promote`), kill the
//!   leader's node container, and from another manager loop the cheap write
//!   `CLI config create NAME /etc/hostname` (a fresh name each time, a
//!   client time limit of 2 s per attempt, 50 ms apart) until one succeeds;
//!   the figure runs from `docker kill`'s return to that write's end. The
//!   new leader is recorded.
//!
//! Swarm is left (`docker swarm leave --force` in every node container that
//! still runs) on success, error, panic or signal; the node containers are
//! removed by [`Hosts`]' Drop (or the signal handler).
//!
//! The shoal daemon is the `shoal` binary next to this executable, so that a
//! `--release` benchmark measures a release daemon (node containers mount it).
//!
//! `shoal-bench sim [--nodes N] [--pods P] [--managers M] [--reps R]` runs
//! shoal alone at a scale no single machine holds, in this process and
//! without Docker ([`SimCluster`]): three managers (M) on real Raft, each
//! with its own durable log in a temp dir, and N simulated workers, each the real agent with the
//! in-memory sim executor over the real dispatcher protocol (mutual TLS on
//! loopback). A fresh cluster per repetition; it creates one service of P
//! replicas and measures:
//!
//! - placements_per_s: P / seconds from the create call until the last pod
//!   is assigned to a node in the leader's store (committed and applied);
//! - converge_s: from the create call until every pod reports running;
//! - manager_bytes_per_pod: (this process's VmRSS after convergence - before
//!   the service existed) / P. The process holds the three managers' stores
//!   and the agents' own copies of their pods, so this is an upper bound of
//!   one manager's cost;
//! - manager_heap_bytes_per_pod: the heap bytes the managers' threads
//!   allocated and still hold, after convergence - before, / M / P: one
//!   manager's share, counted by this program's allocator
//!   ([`shoal_tests::heap`], which says exactly what it counts), with
//!   manager_heap_allocs_per_pod (their number) and manager_heap_by_size;
//!   store_bytes_per_pod: what the leader's store alone holds per pod (a copy
//!   of it, counted); other_heap_bytes_per_pod: the rest of the process's
//!   heap (agents, this program) per pod;
//! - raft_log_bytes: the leader's log file after convergence; snapshot_ms:
//!   a snapshot built then on the leader, written and fsynced;
//! - reschedule_s: the agents of 10% of the nodes are killed
//!   ([`SimCluster::crash_worker`]: no goodbye, their connections close);
//!   from then until P pods run on the other nodes.
//!
//! Liveness: the dispatchers' heartbeat sessions, and a membership hint
//! ([`shoal_tests::cluster::SimMembership`]) standing in for gossip, which
//! does not reach these sizes, through the same trait: a node whose
//! heartbeats are late while it is heard is Disconnected, not Down, and a
//! killed one (session closed, not heard) is Down after the closed
//! session's grace (2.5 s) rather than the heartbeat expiry (5 s).
//!
//! With more than one repetition, each runs in a fresh child process (this
//! program with `--reps 1`), so that each memory figure starts from a clean
//! heap. It prints a line per repetition, then one JSON line of medians;
//! `RUST_LOG=warn` adds the cluster's log on stderr (nodes marked down,
//! sessions ended).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{json, Value};
use shoal_manager::objects::observed;
use shoal_manager::raft::RaftTiming;
use shoal_manager::store::StoreData;
use shoal_proto::control_server::Control;
use shoal_proto::{ContainerSpec, CreateServiceRequest, Pod, PodState, ServiceSpec};
use shoal_tests::cluster::{worker_node_id, SimCluster, SimSize};
use shoal_tests::cmd::{describe, try_run};
use shoal_tests::heap::{self, HeapUse, OwnedHeap, Owner};
use shoal_tests::{Hosts, Node};
use shoal_worker::exec::docker::spec::DOCKER_DEFAULT_BRIDGE;

/// Counts heap bytes by owner, so `sim` can tell the managers' share of
/// this process's memory from the agents' ([`shoal_tests::heap`]). Each
/// allocation carries a 16-byte header: this program's resident set is
/// that much larger than without it, in every mode.
#[global_allocator]
static HEAP: OwnedHeap = OwnedHeap;

/// The service both systems run.
const SERVICE: &str = "benchweb";
/// Replicas at create, then after scaling.
const CREATE_REPLICAS: usize = 10;
const SCALE_REPLICAS: usize = 30;
/// Replicas of the second, larger create (issue 7: N = 10 and 50).
const LARGE_REPLICAS: usize = 50;
const STOP_GRACE: &str = "1s";
/// How often both systems' list commands are polled.
const POLL: Duration = Duration::from_millis(50);
/// Time given to a daemon before its memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// Longest wait for one convergence.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(180);
/// Replicas of the rolling update benchmark, and its default grace period.
const UPDATE_REPLICAS: usize = 30;
const UPDATE_GRACE: &str = "10s";
/// Longest wait for one update or rollback (Swarm took 437 s for a rollback
/// of 30 replicas with a 10 s grace period).
const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(1200);
/// Setup and teardown commands.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

const SHOAL_LABEL: &str = "io.shoal.service.name";
const SWARM_LABEL: &str = "com.docker.swarm.service.name";

/// Set while this program has put the engine into a swarm.
static SWARM_ACTIVE: AtomicBool = AtomicBool::new(false);
/// The running shoal node (data dir, socket, pod network), for cleanup on a signal.
static SHOAL_NODE: Mutex<Option<(PathBuf, PathBuf, String)>> = Mutex::new(None);

fn usage() -> ! {
    eprintln!(
        "usage: shoal-bench all [--reps N]\n\
         \x20      shoal-bench swarm [--reps N]\n\
         \x20      shoal-bench update [--reps N] [--grace DURATION]\n\
         \x20      shoal-bench cluster [--reps N] [--attempt-timeout SECS]\n\
         \x20      shoal-bench nodeloss [--reps N]\n\
         \x20      shoal-bench sim [--nodes N] [--pods P] [--managers M] [--reps N]\n\n\
         all     swarm, update, cluster and nodeloss one after the other, each with its figures\n\
         \x20       (Swarm never runs beside shoal; about 30 minutes at 3 repetitions)\n\
         swarm   shoal against Docker Swarm on the local engine: create -> 10/10 running,\n\
         \x20       scale 10 -> 30 -> 10, rm, create -> 50/50, and the daemon's resident memory idle,\n\
         \x20       with 30 and with 50 pods (default 3 repetitions);\n\
         \x20       shoal twice per repetition: pods on Docker's default bridge (as Swarm's tasks)\n\
         \x20       and on shoal's own default pod network\n\
         update  shoal against Docker Swarm: rolling update of 30 replicas v1 -> v2 (parallelism 5,\n\
         \x20       monitor 1s, stop-first) and its rollback with the rollback defaults, until each\n\
         \x20       is completed (default 3 repetitions, stop grace period 10s)\n\
         cluster shoal against Docker Swarm in node containers (each with its own engine): time\n\
         \x20       for a worker and a manager to join, and leader failover with three managers (kill\n\
         \x20       the leader's node -> first successful write; each write attempt with a client\n\
         \x20       timeout, default 2 s) (default 3 repetitions)\n\
         nodeloss shoal against Docker Swarm in three node containers: 6 replicas, docker kill of a\n\
         \x20       worker's node -> its replicas running on the other two (default 3 repetitions)\n\
         sim     shoal alone in this process, no Docker: 3 managers on Raft and N simulated\n\
         \x20       workers (default 1000) running P pods (default 20000): placements/s,\n\
         \x20       convergence, memory per pod (the process's RSS, one manager's counted heap),\n\
         \x20       Raft log and snapshot, rescheduling after 10% of the nodes die; one JSON line\n\
         \x20       of medians (default 3 repetitions)\n\n\
         Run it from a release build: cargo run --release -p shoal-tests --bin shoal-bench -- swarm"
    );
    std::process::exit(2)
}

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bench {
    /// swarm, update, cluster and nodeloss one after the other.
    All,
    Swarm,
    Update,
    Cluster,
    NodeLoss,
    Sim,
}

/// The command line, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Opts {
    bench: Bench,
    reps: usize,
    /// Only for `update`.
    grace: String,
    /// Only for `cluster`: each write attempt's client time limit, seconds.
    attempt_timeout: u32,
    /// Only for `sim`: its size.
    sim: SimSetup,
}

/// A positive repetition count.
fn parse_reps(v: Option<&str>) -> Option<usize> {
    v.and_then(|v| v.parse().ok()).filter(|n| *n > 0)
}

/// A grace period as both CLIs take it: a whole number of seconds or
/// milliseconds ("10s", "1s", "500ms").
fn parse_grace(v: Option<&str>) -> Option<String> {
    let v = v?;
    let ok = ["ms", "s"].iter().any(|unit| {
        v.strip_suffix(unit)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    ok.then(|| v.to_string())
}

/// The arguments after the program's name; None means: show the usage.
fn parse_args(args: &[String]) -> Option<Opts> {
    let bench = match args.first().map(String::as_str) {
        Some("all") => Bench::All,
        Some("swarm") => Bench::Swarm,
        Some("update") => Bench::Update,
        Some("cluster") => Bench::Cluster,
        Some("nodeloss") => Bench::NodeLoss,
        Some("sim") => Bench::Sim,
        _ => return None,
    };
    let update = bench == Bench::Update;
    let mut opts = Opts {
        bench,
        reps: 3,
        grace: UPDATE_GRACE.to_string(),
        attempt_timeout: ATTEMPT_TIMEOUT_S,
        sim: SimSetup {
            managers: SIM_MANAGERS,
            nodes: SIM_NODES,
            pods: SIM_PODS,
        },
    };
    let cluster = bench == Bench::Cluster;
    let sim = bench == Bench::Sim;
    let secs = |v: Option<&str>| v.and_then(|v| v.parse::<u32>().ok()).filter(|n| *n > 0);
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--reps" => opts.reps = parse_reps(it.next().map(String::as_str))?,
            _ if a.starts_with("--reps=") => opts.reps = parse_reps(Some(&a["--reps=".len()..]))?,
            "--grace" if update => opts.grace = parse_grace(it.next().map(String::as_str))?,
            _ if update && a.starts_with("--grace=") => {
                opts.grace = parse_grace(Some(&a["--grace=".len()..]))?
            }
            "--attempt-timeout" if cluster => {
                opts.attempt_timeout = secs(it.next().map(String::as_str))?
            }
            _ if cluster && a.starts_with("--attempt-timeout=") => {
                opts.attempt_timeout = secs(Some(&a["--attempt-timeout=".len()..]))?
            }
            "--nodes" if sim => opts.sim.nodes = parse_reps(it.next().map(String::as_str))?,
            _ if sim && a.starts_with("--nodes=") => {
                opts.sim.nodes = parse_reps(Some(&a["--nodes=".len()..]))?
            }
            "--pods" if sim => opts.sim.pods = parse_reps(it.next().map(String::as_str))?,
            _ if sim && a.starts_with("--pods=") => {
                opts.sim.pods = parse_reps(Some(&a["--pods=".len()..]))?
            }
            "--managers" if sim => {
                opts.sim.managers = parse_reps(it.next().map(String::as_str))? as u64
            }
            _ => return None,
        }
    }
    Some(opts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = parse_args(&args).unwrap_or_else(|| usage());
    if opts.bench == Bench::Sim {
        // In this process, without Docker or the daemon binary; the temp
        // dirs go with the clusters.
        std::process::exit(bench_sim(opts.reps, opts.sim));
    }
    let shoal = shoal_binary();
    // Node::start and Hosts::start run shoal_tests::shoal_bin(), which
    // honours SHOAL_BIN. Set before any thread starts.
    std::env::set_var("SHOAL_BIN", &shoal);
    install_signal_cleanup();
    let code = match std::panic::catch_unwind(|| match opts.bench {
        Bench::All => {
            bench_swarm(opts.reps, &shoal);
            bench_update(opts.reps, &opts.grace, &shoal);
            bench_cluster(opts.reps, opts.attempt_timeout, &shoal);
            bench_nodeloss(opts.reps, &shoal);
        }
        Bench::Update => bench_update(opts.reps, &opts.grace, &shoal),
        Bench::Swarm => bench_swarm(opts.reps, &shoal),
        Bench::Cluster => bench_cluster(opts.reps, opts.attempt_timeout, &shoal),
        Bench::NodeLoss => bench_nodeloss(opts.reps, &shoal),
        Bench::Sim => unreachable!("sim runs without the daemon"),
    }) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    // Whatever happened, the engine leaves the swarm this program created,
    // and so do the node containers of a `cluster` run.
    swarm_leave();
    cluster_emergency_cleanup();
    std::process::exit(code);
}

/// The `shoal` binary next to this executable (target/<profile>/shoal).
fn shoal_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("the executable's directory");
    let bin = dir.join("shoal");
    if !bin.is_file() {
        let profile = dir
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("release");
        let flag = if profile == "release" {
            " --release"
        } else {
            ""
        };
        eprintln!(
            "shoal-bench: {} is missing: build it with cargo build{flag} -p shoal-cli",
            bin.display()
        );
        std::process::exit(2);
    }
    bin
}

// ---------------------------------------------------------------- cleanup

/// On SIGINT, SIGTERM or SIGHUP: leave the swarm, stop the shoal node, exit.
fn install_signal_cleanup() {
    std::thread::spawn(|| {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("shoal-bench: no signal handling ({e})");
                return;
            }
        };
        let signal = rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).ok();
            let mut hup = signal(SignalKind::hangup()).ok();
            let term = async {
                match term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let hup = async {
                match hup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term => "SIGTERM",
                _ = hup => "SIGHUP",
            }
        });
        eprintln!("\nshoal-bench: {signal}: cleaning up");
        swarm_leave();
        shoal_emergency_stop();
        cluster_emergency_cleanup();
        std::process::exit(130);
    });
}

/// `docker swarm leave --force` if this program initialised a swarm, then
/// removes any container left of the benchmark service.
fn swarm_leave() {
    if !SWARM_ACTIVE.swap(false, Ordering::SeqCst) {
        return;
    }
    eprintln!("shoal-bench: docker swarm leave --force");
    match try_run(
        Command::new("docker").args(["swarm", "leave", "--force"]),
        CMD_TIMEOUT,
    ) {
        Ok(out) if out.success() => {}
        Ok(out) => eprintln!("shoal-bench: docker swarm leave --force failed:\n{out}"),
        Err(e) => eprintln!("shoal-bench: docker swarm leave --force failed: {e}"),
    }
    remove_containers(SWARM_LABEL);
}

/// Stops the shoal node from the signal handler (Node's Drop does not run on exit).
fn shoal_emergency_stop() {
    let node = SHOAL_NODE.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some((dir, socket, network)) = node else {
        return;
    };
    eprintln!("shoal-bench: shoal leave --force ({})", dir.display());
    let mut c = Command::new(std::env::var_os("SHOAL_BIN").unwrap_or_else(|| "shoal".into()));
    c.arg("-H").arg(format!("unix://{}", socket.display()));
    c.args(["leave", "--force", "--data-dir"])
        .arg(&dir)
        .env_remove("SHOAL_HOST");
    let _ = try_run(&mut c, CMD_TIMEOUT);
    remove_containers(SHOAL_LABEL);
    if network != DOCKER_DEFAULT_BRIDGE {
        let _ = try_run(
            Command::new("docker").args(["network", "rm", &network]),
            CMD_TIMEOUT,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `docker rm -f` of every container of the benchmark service (by label).
fn remove_containers(label: &str) {
    let ids = container_ids(label, true);
    if !ids.is_empty() {
        let _ = try_run(
            Command::new("docker").args(["rm", "-f"]).args(&ids),
            CMD_TIMEOUT,
        );
    }
}

// ---------------------------------------------------------------- helpers

/// Runs a setup command; Err with everything it printed unless it exits 0.
fn must(cmd: &mut Command) -> Result<String, String> {
    let out = try_run(cmd, CMD_TIMEOUT)?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{out}"))
    }
}

fn docker(args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args(args);
    c
}

/// Ids of the benchmark service's containers (running ones unless `all`).
fn container_ids(label: &str, all: bool) -> Vec<String> {
    let filter = format!("label={label}={SERVICE}");
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", &filter];
    if all {
        args.push("-a");
    }
    match try_run(&mut docker(&args), CMD_TIMEOUT) {
        Ok(out) => out.stdout.split_whitespace().map(str::to_string).collect(),
        Err(_) => Vec::new(),
    }
}

/// Runs a poll command as directly as possible (no extra sleeps).
fn poll_output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", describe(cmd)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} exited {}: {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Issues `start`, then polls `check` every [`POLL`] until it says true;
/// returns the time from issuing `start` to the first true.
fn timed(
    what: &str,
    start: &mut Command,
    check: impl FnMut() -> Result<(bool, String), String>,
) -> Result<Duration, String> {
    timed_for(what, start, check, CONVERGE_TIMEOUT)
}

/// [`timed`] with its own time limit. An Err from `check` that starts with
/// "fatal: " ends the wait at once.
fn timed_for(
    what: &str,
    start: &mut Command,
    mut check: impl FnMut() -> Result<(bool, String), String>,
    timeout: Duration,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    must(start).map_err(|e| format!("{what}: {e}"))?;
    loop {
        let last = match check() {
            Ok((true, _)) => return Ok(t0.elapsed()),
            Ok((false, state)) => state,
            Err(e) if e.starts_with("fatal: ") => return Err(format!("{what}: {e}")),
            Err(e) => e,
        };
        if t0.elapsed() > timeout {
            return Err(format!("{what}: not done after {timeout:?}; last: {last}"));
        }
        std::thread::sleep(POLL);
    }
}

/// Parses "RUNNING/DESIRED" (Swarm may append text after a space).
fn parse_replicas(s: &str) -> Option<(usize, usize)> {
    let first = s.split_whitespace().next()?;
    let (a, b) = first.split_once('/')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The pid of dockerd (the first process named so).
fn dockerd_pid() -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "dockerd")
        })
        .collect();
    pids.sort();
    pids.first().copied()
}

fn dockerd_rss() -> Option<u64> {
    dockerd_pid().and_then(rss_kib)
}

fn swarm_state() -> String {
    match try_run(
        &mut docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]),
        CMD_TIMEOUT,
    ) {
        Ok(out) => out.stdout.trim().to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

// ---------------------------------------------------------------- one repetition

/// What one repetition of one system measured. Memory in KiB.
#[derive(Debug, Clone, Default)]
struct Rep {
    create: f64,
    scale: f64,
    scale_down: f64,
    rm: f64,
    create_50: f64,
    /// The orchestrating daemon: shoal's daemon, or dockerd for Swarm.
    rss_idle: u64,
    rss_30: u64,
    rss_50: u64,
    /// dockerd at the same moments (for shoal: the engine alone).
    dockerd_idle: u64,
    dockerd_30: u64,
}

impl Rep {
    fn line(&self) -> String {
        format!(
            "create->10/10 {:.2} s, scale 10->30 {:.2} s, 30->10 {:.2} s, rm->0 {:.2} s, create->50/50 {:.2} s, \
             RSS idle {:.1} MiB, 30 pods {:.1} MiB, 50 pods {:.1} MiB (dockerd {:.1} / {:.1} MiB)",
            self.create,
            self.scale,
            self.scale_down,
            self.rm,
            self.create_50,
            mib(self.rss_idle),
            mib(self.rss_30),
            mib(self.rss_50),
            mib(self.dockerd_idle),
            mib(self.dockerd_30)
        )
    }
}

/// The pod network of the shoal node a `swarm` repetition runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodNet {
    /// Docker's default bridge (`--pod-network bridge`): where Swarm runs the
    /// tasks of a service without networks, so both do the same work.
    Bridge,
    /// shoal's default kind: a user-defined bridge it creates (service-name
    /// DNS; the engine starts each container with its embedded resolver).
    Own,
}

impl PodNet {
    fn label(self) -> &'static str {
        match self {
            PodNet::Bridge => "shoal (bridge)",
            PodNet::Own => "shoal (own network)",
        }
    }
}

fn shoal_rep(image: &str, net: PodNet) -> Result<Rep, String> {
    with_shoal_node_on(net, |node| shoal_measure(node, image))
}

/// Starts a shoal node (only while the engine is in no swarm), runs `f` on
/// it, then stops it and removes whatever is left of the benchmark service.
fn with_shoal_node<T>(f: impl FnOnce(&Node) -> Result<T, String>) -> Result<T, String> {
    with_shoal_node_on(PodNet::Own, f)
}

fn with_shoal_node_on<T>(
    net: PodNet,
    f: impl FnOnce(&Node) -> Result<T, String>,
) -> Result<T, String> {
    let state = swarm_state();
    if state != "inactive" {
        return Err(format!(
            "the engine's swarm state is {state:?}: shoal must not run beside Swarm"
        ));
    }
    let node = match net {
        PodNet::Bridge => Node::start_on_default_bridge(),
        PodNet::Own => Node::start(),
    };
    *SHOAL_NODE.lock().unwrap_or_else(|e| e.into_inner()) = Some((
        node.data_dir().to_path_buf(),
        node.socket.clone(),
        node.network.clone(),
    ));
    let result = f(&node);
    if result.is_err() {
        eprintln!(
            "--- shoal daemon log (last 40 lines)\n{}",
            node.log_tail(40)
        );
    }
    SHOAL_NODE.lock().unwrap_or_else(|e| e.into_inner()).take();
    // Drop runs `shoal leave --force` and removes the node's network.
    drop(node);
    remove_containers(SHOAL_LABEL);
    result
}

fn shoal_measure(node: &Node, image: &str) -> Result<Rep, String> {
    let pid = node.pid().ok_or("the shoal daemon wrote no shoal.pid")?;
    let replicas = || shoal_replicas(node);
    measure(
        &Orchestrator {
            name: "shoal",
            cli: &|args| node.command(args),
            create_flags: &[],
            replicas: &replicas,
            rss: &|| rss_kib(pid),
            label: SHOAL_LABEL,
        },
        image,
    )
}

/// The benchmark service's running/desired in `shoal service ls`.
fn shoal_replicas(node: &Node) -> Result<(usize, usize), String> {
    let out = poll_output(&mut node.command(&["service", "ls", "--format", "json"]))?;
    let rows: Value =
        serde_json::from_str(&out).map_err(|e| format!("service ls JSON: {e}: {out}"))?;
    let row = rows
        .as_array()
        .and_then(|a| a.iter().find(|r| r["Name"] == SERVICE))
        .ok_or_else(|| format!("{SERVICE} not listed"))?;
    parse_replicas(row["Replicas"].as_str().unwrap_or_default())
        .ok_or_else(|| format!("bad row {row}"))
}

/// The benchmark service's running/desired in `docker service ls`.
fn swarm_replicas() -> Result<(usize, usize), String> {
    let filter = format!("name={SERVICE}");
    let out = poll_output(&mut docker(&[
        "service",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}}\t{{.Replicas}}",
    ]))?;
    let replicas = out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(name, _)| *name == SERVICE)
        .map(|(_, r)| r.to_string())
        .ok_or_else(|| format!("{SERVICE} not listed"))?;
    parse_replicas(&replicas).ok_or_else(|| format!("bad replicas {replicas:?}"))
}

/// What differs between shoal and Swarm in a `swarm` repetition.
struct Orchestrator<'a> {
    name: &'static str,
    /// The system's CLI with these arguments, not yet run.
    cli: &'a dyn Fn(&[&str]) -> Command,
    /// Arguments `service create` takes besides the common ones.
    create_flags: &'static [&'static str],
    /// The benchmark service's running/desired in the system's list command.
    replicas: &'a dyn Fn() -> Result<(usize, usize), String>,
    /// The orchestrating daemon's resident memory in KiB (shoal's daemon, or
    /// dockerd, which hosts Swarm).
    rss: &'a dyn Fn() -> Option<u64>,
    /// The container label that names the service.
    label: &'static str,
}

/// One repetition on a running system: create 10, scale up to 30 and down
/// to 10, rm, then create 50; memory idle, with 30 and with 50 pods.
fn measure(sys: &Orchestrator, image: &str) -> Result<Rep, String> {
    let name = sys.name;
    let rss = || (sys.rss)().ok_or_else(|| format!("cannot read {name}'s daemon VmRSS"));
    let converged = |n: usize| {
        move || -> Result<(bool, String), String> {
            let (running, desired) = (sys.replicas)()?;
            Ok((running == n && desired == n, format!("{running}/{desired}")))
        }
    };
    let scale_to = |n: usize| {
        let to = format!("{SERVICE}={n}");
        (sys.cli)(&["service", "scale", "-d", &to])
    };
    let create = |n: usize| {
        let n = n.to_string();
        let mut args = vec!["service", "create", "-d"];
        args.extend_from_slice(sys.create_flags);
        args.extend_from_slice(&[
            "--name",
            SERVICE,
            "--replicas",
            &n,
            "--stop-grace-period",
            STOP_GRACE,
            image,
        ]);
        (sys.cli)(&args)
    };
    let rm = || (sys.cli)(&["service", "rm", SERVICE]);

    let mut rep = Rep::default();
    std::thread::sleep(SETTLE);
    rep.rss_idle = rss()?;
    rep.dockerd_idle = dockerd_rss().unwrap_or(0);

    let what = format!("{name} service create");
    rep.create = secs(timed(
        &what,
        &mut create(CREATE_REPLICAS),
        converged(CREATE_REPLICAS),
    )?);
    check_containers(name, sys.label, CREATE_REPLICAS);

    let what = format!("{name} service scale");
    rep.scale = secs(timed(
        &what,
        &mut scale_to(SCALE_REPLICAS),
        converged(SCALE_REPLICAS),
    )?);
    check_containers(name, sys.label, SCALE_REPLICAS);
    std::thread::sleep(SETTLE);
    rep.rss_30 = rss()?;
    rep.dockerd_30 = dockerd_rss().unwrap_or(0);

    // Down: until the engine runs no more than the 10 (both systems keep
    // stopped containers as history, so the list's count is not the end).
    rep.scale_down = secs(timed(
        &what,
        &mut scale_to(CREATE_REPLICAS),
        running_exactly(sys.label, CREATE_REPLICAS),
    )?);

    rep.rm = secs(timed(
        &format!("{name} service rm"),
        &mut rm(),
        gone(sys.label),
    )?);

    rep.create_50 = secs(timed(
        &format!("{name} service create"),
        &mut create(LARGE_REPLICAS),
        converged(LARGE_REPLICAS),
    )?);
    check_containers(name, sys.label, LARGE_REPLICAS);
    std::thread::sleep(SETTLE);
    rep.rss_50 = rss()?;
    timed(&format!("{name} service rm"), &mut rm(), gone(sys.label))?;
    Ok(rep)
}

/// A check that is true once the engine runs exactly `n` containers of the
/// service (stopped ones, kept as history, do not count).
fn running_exactly(
    label: &'static str,
    n: usize,
) -> impl FnMut() -> Result<(bool, String), String> {
    containers_are(label, false, n)
}

/// A check that is true once no container of the service is left.
fn gone(label: &'static str) -> impl FnMut() -> Result<(bool, String), String> {
    containers_are(label, true, 0)
}

/// A check that is true once the engine has exactly `n` containers of the
/// service: running ones, or with `all` any state.
fn containers_are(
    label: &'static str,
    all: bool,
    n: usize,
) -> impl FnMut() -> Result<(bool, String), String> {
    move || {
        let filter = format!("label={label}={SERVICE}");
        let ps = if all { "-aq" } else { "-q" };
        let out = poll_output(&mut docker(&["ps", ps, "--filter", &filter]))?;
        let count = out.split_whitespace().count();
        let what = if all { "containers left" } else { "running" };
        Ok((count == n, format!("{count} {what}")))
    }
}

/// Not timed: Docker runs as many containers as the orchestrator says.
fn check_containers(system: &str, label: &str, n: usize) {
    let got = container_ids(label, false).len();
    if got != n {
        eprintln!("warning: {system} says {n}/{n} but Docker runs {got} containers of {SERVICE}");
    }
}

/// The swarm this program created; left when dropped (also on panic).
struct Swarm;

impl Swarm {
    fn init() -> Result<Swarm, String> {
        let state = swarm_state();
        if state != "inactive" {
            return Err(format!(
                "the engine's swarm state is {state:?} before init: not touching a swarm this program did not create"
            ));
        }
        let port = shoal_tests::free_port();
        let listen = format!("127.0.0.1:{port}");
        // Set first: a signal during init must still lead to a leave.
        SWARM_ACTIVE.store(true, Ordering::SeqCst);
        let guard = Swarm;
        must(&mut docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            "127.0.0.1",
            "--listen-addr",
            &listen,
        ]))
        .map_err(|e| format!("docker swarm init failed:\n{e}"))?;
        Ok(guard)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        swarm_leave();
    }
}

fn swarm_rep(image: &str) -> Result<Rep, String> {
    with_swarm(|| swarm_measure(image))
}

/// Initialises a swarm (only once no container of shoal's benchmark service
/// is left), runs `f` in it, then leaves it and waits until the engine is out
/// of the swarm, also when `f` fails.
fn with_swarm<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    if !container_ids(SHOAL_LABEL, true).is_empty() {
        return Err("containers of shoal's benchmark service are still there: Swarm must not run beside shoal".into());
    }
    let swarm = Swarm::init()?;
    let result = f();
    drop(swarm);
    // The next system starts only once the engine is out of the swarm.
    let t0 = Instant::now();
    while swarm_state() != "inactive" && t0.elapsed() < CMD_TIMEOUT {
        std::thread::sleep(Duration::from_millis(200));
    }
    result
}

fn swarm_measure(image: &str) -> Result<Rep, String> {
    measure(
        &Orchestrator {
            name: "Swarm",
            cli: &docker,
            create_flags: &["--no-resolve-image"],
            replicas: &swarm_replicas,
            rss: &dockerd_rss,
            label: SWARM_LABEL,
        },
        image,
    )
}

/// Runs one repetition of one system, turning a panic into an error.
fn guarded<T>(f: impl FnOnce() -> Result<T, String> + std::panic::UnwindSafe) -> Result<T, String> {
    match std::panic::catch_unwind(f) {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into())),
    }
}

// ---------------------------------------------------------------- the run

/// The 1-minute load average (other work on the machine disturbs the figures).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default()
}

fn environment() -> Value {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .unwrap_or(0);
    let engine = try_run(
        &mut docker(&["version", "--format", "{{.Server.Version}}"]),
        CMD_TIMEOUT,
    )
    .map(|o| o.stdout.trim().to_string())
    .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({"nproc": nproc, "mem_mib": mem_kib / 1024, "docker_engine": engine, "kernel": kernel, "load_start": loadavg()})
}

/// Prints what is measured, on what machine, and what else runs on the
/// engine; returns the machine's description and the daemon's build profile.
fn header(what: &str, shoal: &Path) -> (Value, String) {
    let env = environment();
    let profile = shoal
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|s| s.to_str())
        .unwrap_or("?")
        .to_string();
    println!(
        "shoal-bench {what}, shoal daemon {} ({profile} build)",
        shoal.display()
    );
    println!(
        "machine: {} CPUs, {} MiB memory, Docker Engine {}, kernel {}",
        env["nproc"], env["mem_mib"], env["docker_engine"], env["kernel"]
    );
    println!("load average (1 min) at start: {}", loadavg());
    let others = try_run(&mut docker(&["ps", "-q"]), CMD_TIMEOUT)
        .map(|o| o.stdout.lines().count())
        .unwrap_or(0);
    if others > 0 {
        println!("note: {others} other containers are running on this engine; they may disturb the figures");
    }
    (env, profile)
}

fn bench_swarm(reps: usize, shoal: &Path) {
    let (env, profile) = header(&format!("swarm: {reps} repetitions"), shoal);

    let image = shoal_tests::images::web_image("v1");
    // Untimed warm-up, so that the first repetition does not pay for cold caches.
    let _ = try_run(
        &mut docker(&["run", "--rm", "--entrypoint", "/bin/true", &image]),
        CMD_TIMEOUT,
    );
    let dockerd_baseline = dockerd_rss().unwrap_or(0);
    println!(
        "image {image}; dockerd RSS before anything: {:.1} MiB",
        mib(dockerd_baseline)
    );
    println!("each figure: from issuing the command until the list command (polled every {POLL:?}) says N/N\n");

    let mut shoal_reps: Vec<Rep> = Vec::new();
    let mut own_net_reps: Vec<Rep> = Vec::new();
    let mut swarm_reps: Vec<Rep> = Vec::new();
    let mut shoal_errors: Vec<String> = Vec::new();
    let mut swarm_error: Option<String> = None;
    for i in 1..=reps {
        // Rotate the order: no system always runs on a warmer engine.
        let mut order = [Some(PodNet::Bridge), None, Some(PodNet::Own)];
        order.rotate_left((i - 1) % 3);
        for system in order {
            if let Some(net) = system {
                let img = image.clone();
                match guarded(move || shoal_rep(&img, net)) {
                    Ok(r) => {
                        println!("rep {i} {}: {} [load {}]", net.label(), r.line(), loadavg());
                        match net {
                            PodNet::Bridge => shoal_reps.push(r),
                            PodNet::Own => own_net_reps.push(r),
                        }
                    }
                    Err(e) => {
                        println!("rep {i} {}: FAILED: {e}", net.label());
                        shoal_errors.push(format!("{}: {e}", net.label()));
                    }
                }
            } else if swarm_error.is_none() {
                let img = image.clone();
                match guarded(move || swarm_rep(&img)) {
                    Ok(r) => {
                        println!("rep {i} Swarm: {} [load {}]", r.line(), loadavg());
                        swarm_reps.push(r);
                    }
                    Err(e) => {
                        println!("rep {i} Swarm: FAILED: {e}");
                        swarm_error = Some(e);
                    }
                }
                swarm_leave();
            }
        }
    }
    report(
        &env,
        reps,
        &profile,
        &shoal_reps,
        &own_net_reps,
        &swarm_reps,
        &shoal_errors,
        swarm_error.as_deref(),
        dockerd_baseline,
    );
}

type Field = fn(&Rep) -> f64;

#[allow(clippy::too_many_arguments)]
fn report(
    env: &Value,
    reps: usize,
    profile: &str,
    shoal: &[Rep],
    own_net: &[Rep],
    swarm: &[Rep],
    shoal_errors: &[String],
    swarm_error: Option<&str>,
    dockerd_baseline: u64,
) {
    let rows: [(&str, &str, Field, &str); 10] = [
        ("create_s", "create -> 10/10 running", |r| r.create, "s"),
        ("scale_s", "scale 10 -> 30 running", |r| r.scale, "s"),
        (
            "scale_down_s",
            "scale 30 -> 10 running",
            |r| r.scale_down,
            "s",
        ),
        ("rm_s", "rm -> no container left", |r| r.rm, "s"),
        (
            "create50_s",
            "create -> 50/50 running",
            |r| r.create_50,
            "s",
        ),
        (
            "rss_idle_mib",
            "daemon RSS, idle",
            |r| mib(r.rss_idle),
            "MiB",
        ),
        (
            "rss_30_mib",
            "daemon RSS, 30 pods",
            |r| mib(r.rss_30),
            "MiB",
        ),
        (
            "rss_50_mib",
            "daemon RSS, 50 pods",
            |r| mib(r.rss_50),
            "MiB",
        ),
        (
            "dockerd_idle_mib",
            "dockerd RSS, idle",
            |r| mib(r.dockerd_idle),
            "MiB",
        ),
        (
            "dockerd_30_mib",
            "dockerd RSS, 30 pods",
            |r| mib(r.dockerd_30),
            "MiB",
        ),
    ];
    let med = |reps: &[Rep], f: Field| median(&reps.iter().map(f).collect::<Vec<_>>());
    let show = |v: Option<f64>, unit: &str| match v {
        Some(v) if unit == "s" => format!("{v:.2} s"),
        Some(v) => format!("{v:.1} MiB"),
        None => "-".to_string(),
    };

    println!(
        "\nmedians of {} shoal (bridge), {} shoal (own network) and {} Swarm repetitions (of {reps}):\n",
        shoal.len(),
        own_net.len(),
        swarm.len()
    );
    println!(
        "{:<26} {:>14} {:>11} {:>12} {:>11} {:>12}",
        "FIGURE", "SHOAL(BRIDGE)", "SWARM", "SHOAL/SWARM", "SHOAL(OWN)", "OWN/SWARM"
    );
    let mut j_shoal = serde_json::Map::new();
    let mut j_own = serde_json::Map::new();
    let mut j_swarm = serde_json::Map::new();
    let mut j_ratio = serde_json::Map::new();
    let mut j_own_ratio = serde_json::Map::new();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let show_ratio = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    for (key, name, f, unit) in rows {
        let (a, own, b) = (med(shoal, f), med(own_net, f), med(swarm, f));
        let (r, r_own) = (ratio(a, b), ratio(own, b));
        println!(
            "{name:<26} {:>14} {:>11} {:>12} {:>11} {:>12}",
            show(a, unit),
            show(b, unit),
            show_ratio(r),
            show(own, unit),
            show_ratio(r_own)
        );
        j_shoal.insert(key.into(), a.map(round).into());
        j_own.insert(key.into(), own.map(round).into());
        j_swarm.insert(key.into(), b.map(round).into());
        j_ratio.insert(key.into(), r.map(round).into());
        j_own_ratio.insert(key.into(), r_own.map(round).into());
    }
    println!(
        "\nnotes:\n\
         - \"daemon RSS\" is shoal's daemon for shoal and dockerd for Swarm: Swarm's manager and agent live\n\
         \x20 inside dockerd, which also hosts the engine itself (it is not Swarm's cost alone).\n\
         - \"dockerd RSS\" is the engine's daemon at the same moments: during the shoal runs it is the engine\n\
         \x20 without Swarm, which runs shoal's containers. dockerd before anything: {:.1} MiB.\n\
         - containerd and the per-container shims are the same for both and not counted.\n\
         - shoal (bridge) runs its pods on Docker's default bridge (--pod-network bridge), as Swarm runs\n\
         \x20 the tasks of a service without networks: the same work. shoal (own network) is shoal's\n\
         \x20 default, a user-defined bridge with service-name DNS, which costs the engine more per container.",
        mib(dockerd_baseline)
    );
    if let Some(e) = swarm_error {
        println!("\nSwarm: {e}");
    }
    for e in shoal_errors {
        println!("\nshoal: {e}");
    }
    let line = json!({
        "bench": "swarm",
        "reps": reps,
        "load_end": loadavg(),
        "shoal_profile": profile,
        "machine": env,
        "shoal": if shoal.is_empty() { Value::Null } else { Value::Object(j_shoal) },
        "shoal_own_network": if own_net.is_empty() { Value::Null } else { Value::Object(j_own) },
        "ratio_own_network_over_swarm": Value::Object(j_own_ratio),
        "swarm": if swarm.is_empty() { Value::Null } else { Value::Object(j_swarm) },
        "ratio_shoal_over_swarm": Value::Object(j_ratio),
        "swarm_error": swarm_error,
    });
    println!("\n{line}");
}

// ---------------------------------------------------------------- update

/// What one repetition of `update` measured, in seconds.
#[derive(Debug, Clone, Default)]
struct UpdRep {
    create: f64,
    update: f64,
    rollback: f64,
    rm: f64,
}

impl UpdRep {
    fn line(&self) -> String {
        format!(
            "create->30/30 {:.2} s, update->completed {:.2} s, rollback->completed {:.2} s, rm->0 {:.2} s",
            self.create, self.update, self.rollback, self.rm
        )
    }
}

/// The update settings of the benchmark, as both CLIs spell them.
const UPDATE_FLAGS: [&str; 10] = [
    "--update-parallelism",
    "5",
    "--update-monitor",
    "1s",
    "--update-delay",
    "0s",
    "--update-order",
    "stop-first",
    "--update-failure-action",
    "pause",
];

/// Counts the images of the service's running containers; warns unless all
/// `n` run `image` (not timed).
fn check_images(system: &str, label: &str, n: usize, image: &str) {
    let filter = format!("label={label}={SERVICE}");
    let out = try_run(
        &mut docker(&["ps", "--filter", &filter, "--format", "{{.Image}}"]),
        CMD_TIMEOUT,
    )
    .map(|o| o.stdout)
    .unwrap_or_default();
    let total = out.lines().count();
    let want = out.lines().filter(|l| l.trim() == image).count();
    if total != n || want != n {
        eprintln!(
            "warning: {system}: {total} containers of {SERVICE} run, {want} of them {image} (expected {n})"
        );
    }
}

/// `updateStatus` of `shoal service inspect`: (state, startedAt).
fn shoal_update_status(node: &Node) -> Result<(String, String), String> {
    let out = poll_output(&mut node.command(&["service", "inspect", SERVICE]))?;
    let v: Value =
        serde_json::from_str(&out).map_err(|e| format!("service inspect JSON: {e}: {out}"))?;
    let s = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
    let u = s.get("updateStatus").or_else(|| s.get("update_status"));
    let Some(u) = u.filter(|u| !u.is_null()) else {
        return Ok((String::new(), String::new()));
    };
    let state = u["state"].as_str().unwrap_or_default().to_string();
    let started = u
        .get("startedAt")
        .or_else(|| u.get("started_at"))
        .map(Value::to_string)
        .unwrap_or_default();
    let message = u["message"].as_str().unwrap_or_default();
    if state.ends_with("PAUSED") {
        return Err(format!("fatal: {state}: {message}"));
    }
    Ok((state, started))
}

/// `.UpdateStatus` of `docker service inspect`: (state, startedAt).
fn swarm_update_status() -> Result<(String, String), String> {
    let out = poll_output(&mut docker(&[
        "service",
        "inspect",
        "-f",
        "{{if .UpdateStatus}}{{.UpdateStatus.State}}\t{{.UpdateStatus.StartedAt}}\t{{.UpdateStatus.Message}}{{end}}",
        SERVICE,
    ]))?;
    let mut f = out.trim().splitn(3, '\t');
    let state = f.next().unwrap_or_default().to_string();
    let started = f.next().unwrap_or_default().to_string();
    let message = f.next().unwrap_or_default();
    if state.ends_with("paused") {
        return Err(format!("fatal: {state}: {message}"));
    }
    Ok((state, started))
}

/// A check that is true once a rollout started after `before` is in state
/// `want`; an ending in another state is fatal.
fn rollout_done(
    mut status: impl FnMut() -> Result<(String, String), String>,
    before: String,
    want: &'static str,
    other_end: &'static str,
) -> impl FnMut() -> Result<(bool, String), String> {
    move || {
        let (state, started) = status()?;
        let fresh = started != before;
        if fresh && state == other_end {
            return Err(format!("fatal: ended in {state}"));
        }
        Ok((fresh && state == want, state))
    }
}

fn shoal_update_rep(v1: &str, v2: &str, grace: &str) -> Result<UpdRep, String> {
    with_shoal_node(|node| shoal_update_measure(node, v1, v2, grace))
}

fn shoal_update_measure(node: &Node, v1: &str, v2: &str, grace: &str) -> Result<UpdRep, String> {
    let mut rep = UpdRep::default();
    let n = UPDATE_REPLICAS.to_string();
    let running = || -> Result<(bool, String), String> {
        let (r, d) = shoal_replicas(node)?;
        Ok((
            r == UPDATE_REPLICAS && d == UPDATE_REPLICAS,
            format!("{r}/{d}"),
        ))
    };
    let mut cmd = node.command(&[
        "service",
        "create",
        "-d",
        "--name",
        SERVICE,
        "--replicas",
        &n,
        "--stop-grace-period",
        grace,
        v1,
    ]);
    rep.create = secs(timed("shoal service create", &mut cmd, running)?);
    check_images("shoal", SHOAL_LABEL, UPDATE_REPLICAS, v1);

    let (_, before) = shoal_update_status(node)?;
    let mut args = vec!["service", "update", "-d"];
    args.extend(UPDATE_FLAGS);
    args.extend(["--image", v2, SERVICE]);
    let mut cmd = node.command(&args);
    rep.update = secs(timed_for(
        "shoal service update",
        &mut cmd,
        rollout_done(
            || shoal_update_status(node),
            before,
            "UPDATE_STATE_COMPLETED",
            "UPDATE_STATE_ROLLBACK_COMPLETED",
        ),
        ROLLOUT_TIMEOUT,
    )?);
    check_images("shoal", SHOAL_LABEL, UPDATE_REPLICAS, v2);

    let (_, before) = shoal_update_status(node)?;
    let mut cmd = node.command(&["service", "rollback", "-d", SERVICE]);
    rep.rollback = secs(timed_for(
        "shoal service rollback",
        &mut cmd,
        rollout_done(
            || shoal_update_status(node),
            before,
            "UPDATE_STATE_ROLLBACK_COMPLETED",
            "UPDATE_STATE_COMPLETED",
        ),
        ROLLOUT_TIMEOUT,
    )?);
    check_images("shoal", SHOAL_LABEL, UPDATE_REPLICAS, v1);

    let mut cmd = node.command(&["service", "rm", SERVICE]);
    rep.rm = secs(timed("shoal service rm", &mut cmd, gone(SHOAL_LABEL))?);
    Ok(rep)
}

fn swarm_update_rep(v1: &str, v2: &str, grace: &str) -> Result<UpdRep, String> {
    with_swarm(|| swarm_update_measure(v1, v2, grace))
}

fn swarm_update_measure(v1: &str, v2: &str, grace: &str) -> Result<UpdRep, String> {
    let mut rep = UpdRep::default();
    let n = UPDATE_REPLICAS.to_string();
    let running = || -> Result<(bool, String), String> {
        let (r, d) = swarm_replicas()?;
        Ok((
            r == UPDATE_REPLICAS && d == UPDATE_REPLICAS,
            format!("{r}/{d}"),
        ))
    };
    let mut cmd = docker(&[
        "service",
        "create",
        "-d",
        "--no-resolve-image",
        "--name",
        SERVICE,
        "--replicas",
        &n,
        "--stop-grace-period",
        grace,
        v1,
    ]);
    rep.create = secs(timed("docker service create", &mut cmd, running)?);
    check_images("Swarm", SWARM_LABEL, UPDATE_REPLICAS, v1);

    let (_, before) = swarm_update_status()?;
    let mut args = vec!["service", "update", "-d", "--no-resolve-image"];
    args.extend(UPDATE_FLAGS);
    args.extend(["--image", v2, SERVICE]);
    let mut cmd = docker(&args);
    rep.update = secs(timed_for(
        "docker service update",
        &mut cmd,
        rollout_done(
            swarm_update_status,
            before,
            "completed",
            "rollback_completed",
        ),
        ROLLOUT_TIMEOUT,
    )?);
    check_images("Swarm", SWARM_LABEL, UPDATE_REPLICAS, v2);

    let (_, before) = swarm_update_status()?;
    let mut cmd = docker(&["service", "rollback", "-d", SERVICE]);
    rep.rollback = secs(timed_for(
        "docker service rollback",
        &mut cmd,
        rollout_done(
            swarm_update_status,
            before,
            "rollback_completed",
            "completed",
        ),
        ROLLOUT_TIMEOUT,
    )?);
    check_images("Swarm", SWARM_LABEL, UPDATE_REPLICAS, v1);

    let mut cmd = docker(&["service", "rm", SERVICE]);
    rep.rm = secs(timed("docker service rm", &mut cmd, gone(SWARM_LABEL))?);
    Ok(rep)
}

fn bench_update(reps: usize, grace: &str, shoal: &Path) {
    let (env, profile) = header(
        &format!("update: {reps} repetitions, stop grace period {grace}"),
        shoal,
    );
    let v1 = shoal_tests::images::web_image("v1");
    let v2 = shoal_tests::images::web_image("v2");
    for image in [&v1, &v2] {
        // Untimed warm-up, so that the first repetition does not pay for cold caches.
        let _ = try_run(
            &mut docker(&["run", "--rm", "--entrypoint", "/bin/true", image]),
            CMD_TIMEOUT,
        );
    }
    println!(
        "{UPDATE_REPLICAS} replicas of {v1} -> {v2}: update {}; rollback with the rollback defaults",
        UPDATE_FLAGS.join(" ")
    );
    println!(
        "each figure: from issuing the command (-d) until the update status (polled every {POLL:?}) says completed\n"
    );

    let mut shoal_reps: Vec<UpdRep> = Vec::new();
    let mut swarm_reps: Vec<UpdRep> = Vec::new();
    let mut shoal_errors: Vec<String> = Vec::new();
    let mut swarm_error: Option<String> = None;
    for i in 1..=reps {
        // Alternate the order: neither system always runs on a warmer engine.
        let order: [bool; 2] = if i % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        };
        for is_shoal in order {
            if is_shoal {
                let (a, b, g) = (v1.clone(), v2.clone(), grace.to_string());
                match guarded(move || shoal_update_rep(&a, &b, &g)) {
                    Ok(r) => {
                        println!("rep {i} shoal: {} [load {}]", r.line(), loadavg());
                        shoal_reps.push(r);
                    }
                    Err(e) => {
                        println!("rep {i} shoal: FAILED: {e}");
                        shoal_errors.push(e);
                    }
                }
            } else if swarm_error.is_none() {
                let (a, b, g) = (v1.clone(), v2.clone(), grace.to_string());
                match guarded(move || swarm_update_rep(&a, &b, &g)) {
                    Ok(r) => {
                        println!("rep {i} Swarm: {} [load {}]", r.line(), loadavg());
                        swarm_reps.push(r);
                    }
                    Err(e) => {
                        println!("rep {i} Swarm: FAILED: {e}");
                        swarm_error = Some(e);
                    }
                }
                swarm_leave();
            }
        }
    }

    type UpdField = fn(&UpdRep) -> f64;
    let rows: [(&str, &str, UpdField); 4] = [
        ("create_s", "create -> 30/30 running", |r| r.create),
        ("update_s", "update -> completed", |r| r.update),
        ("rollback_s", "rollback -> completed", |r| r.rollback),
        ("rm_s", "rm -> no container left", |r| r.rm),
    ];
    let med = |reps: &[UpdRep], f: UpdField| median(&reps.iter().map(f).collect::<Vec<_>>());
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} s"));
    println!(
        "\nmedians of {} shoal and {} Swarm repetitions (of {reps}), stop grace period {grace}:\n",
        shoal_reps.len(),
        swarm_reps.len()
    );
    println!(
        "{:<26} {:>11} {:>11} {:>12}",
        "FIGURE", "SHOAL", "SWARM", "SHOAL/SWARM"
    );
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let mut j_shoal = serde_json::Map::new();
    let mut j_swarm = serde_json::Map::new();
    let mut j_ratio = serde_json::Map::new();
    for (key, name, f) in rows {
        let a = med(&shoal_reps, f);
        let b = med(&swarm_reps, f);
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let r = ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
        println!("{name:<26} {:>11} {:>11} {r:>12}", show(a), show(b));
        j_shoal.insert(key.into(), a.map(round).into());
        j_swarm.insert(key.into(), b.map(round).into());
        j_ratio.insert(key.into(), ratio.map(round).into());
    }
    let list =
        |reps: &[UpdRep], f: UpdField| -> Vec<f64> { reps.iter().map(|r| round(f(r))).collect() };
    if let Some(e) = &swarm_error {
        println!("\nSwarm: {e}");
    }
    for e in &shoal_errors {
        println!("\nshoal: {e}");
    }
    let line = json!({
        "bench": "update",
        "reps": reps,
        "replicas": UPDATE_REPLICAS,
        "stop_grace_period": grace,
        "update": UPDATE_FLAGS.join(" "),
        "load_end": loadavg(),
        "shoal_profile": profile,
        "machine": env,
        "shoal": if shoal_reps.is_empty() { Value::Null } else { Value::Object(j_shoal) },
        "swarm": if swarm_reps.is_empty() { Value::Null } else { Value::Object(j_swarm) },
        "ratio_shoal_over_swarm": Value::Object(j_ratio),
        "shoal_update_s": list(&shoal_reps, |r| r.update),
        "shoal_rollback_s": list(&shoal_reps, |r| r.rollback),
        "swarm_update_s": list(&swarm_reps, |r| r.update),
        "swarm_rollback_s": list(&swarm_reps, |r| r.rollback),
        "shoal_errors": shoal_errors,
        "swarm_error": swarm_error,
    });
    println!("\n{line}");
}

// ---------------------------------------------------------------- cluster

/// Node containers per repetition: n1 initialises, n2 joins as a worker, n3
/// and n4 join as managers, so that n1, n3 and n4 are the three managers.
/// (shoal has no `node promote` yet, so a fourth container stands in for
/// promoting the worker; Swarm is set up the same way.)
const CLUSTER_NODES: usize = 4;
const CLUSTER_MANAGERS: [&str; 3] = ["n1", "n3", "n4"];
/// Default client time limit of each write attempt after the kill
/// (`timeout 2 ...`; `--attempt-timeout SECS`).
const ATTEMPT_TIMEOUT_S: u32 = 2;
/// Pause between two write attempts (seconds, as `sleep` takes it).
const ATTEMPT_PAUSE_S: &str = "0.05";
/// Attempts before the write loop gives up.
const MAX_ATTEMPTS: usize = 2000;
/// Longest wait for the first successful write after the kill.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest wait for three managers to be Leader/Reachable.
const MANAGERS_TIMEOUT: Duration = Duration::from_secs(90);
/// Time the three managers are left alone before the kill (heartbeats,
/// connections, Swarm's first raft snapshot settle).
const CLUSTER_SETTLE: Duration = Duration::from_secs(3);

/// The node containers of the running `cluster` repetition, for cleanup on
/// a signal or an error that skipped the guards: (containers, network,
/// whether they were put into a swarm).
static CLUSTER_HOSTS: Mutex<Option<(Vec<String>, String, bool)>> = Mutex::new(None);

/// The two systems the `cluster` benchmark compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Shoal,
    Swarm,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Shoal => "shoal",
            System::Swarm => "Swarm",
        }
    }

    /// The CLI in the node container that makes the cheap write
    /// (`CLI config create NAME FILE`).
    fn cli(self) -> &'static str {
        match self {
            System::Shoal => "shoal",
            System::Swarm => "docker",
        }
    }
}

/// What one repetition of `cluster` measured for one system.
#[derive(Debug, Clone, Default)]
struct ClusterRep {
    /// Wall time of the join command in the node (worker token; manager token).
    worker_join: f64,
    manager_join: f64,
    /// From the killed leader's container being down (`docker kill`
    /// returned) to the first write that completed.
    failover: f64,
    /// How long `docker kill` of the leader's container took.
    kill: f64,
    /// The successful attempt's own duration.
    last_attempt: f64,
    attempts: usize,
    old_leader: String,
    new_leader: String,
    writer: String,
    /// The errors of the first and the last failed attempt.
    first_error: String,
    last_error: String,
    /// shoal: when the writer's daemon logged "raft leader changed" after
    /// the kill (seconds after it), from its log.
    leader_events: String,
}

impl ClusterRep {
    fn line(&self) -> String {
        let errors = if self.attempts > 1 {
            format!(
                "; first error: {}; last error: {}",
                self.first_error, self.last_error
            )
        } else {
            String::new()
        };
        format!(
            "worker join {:.2} s, manager join {:.2} s, failover {:.2} s (leader {} killed, docker kill {:.2} s; \
             {} write attempts from {}, the last took {:.2} s; new leader {}{errors})",
            self.worker_join,
            self.manager_join,
            self.failover,
            self.old_leader,
            self.kill,
            self.attempts,
            self.writer,
            self.last_attempt,
            self.new_leader
        ) + &if self.leader_events.is_empty() {
            String::new()
        } else {
            format!("; the writer's daemon logged: {}", self.leader_events)
        }
    }
}

/// Runs ARGS in a node container with [`CMD_TIMEOUT`]; Err with everything
/// it printed unless it exits 0.
fn node_ok(hosts: &Hosts, name: &str, args: &[&str]) -> Result<String, String> {
    must(&mut hosts.exec_command(name, args)).map_err(|e| format!("in {name}: {e}"))
}

/// The marker line [`timed_in_node`]'s wrapper prints.
const TIMED_MARK: &str = "__shoal_bench_timed";

/// Runs ARGS in a node container and returns its wall time measured inside
/// the node (`date +%s%N` before and after), so `docker exec`'s own start-up
/// is not counted. Err unless it exits 0.
fn timed_in_node(hosts: &Hosts, name: &str, args: &[&str]) -> Result<f64, String> {
    let script = format!(
        r#"s=$(date +%s%N); "$@"; rc=$?; e=$(date +%s%N); echo "{TIMED_MARK} $rc $s $e"; exit $rc"#
    );
    let mut a = vec!["sh", "-c", script.as_str(), "timed"];
    a.extend_from_slice(args);
    let out = node_ok(hosts, name, &a)?;
    parse_timed(&out).ok_or_else(|| format!("in {name}: no timing line in:\n{out}"))
}

/// The seconds between the two stamps of the wrapper's marker line.
fn parse_timed(out: &str) -> Option<f64> {
    let line = out.lines().rev().find(|l| l.starts_with(TIMED_MARK))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let (s, e): (u128, u128) = (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
    Some(e.checked_sub(s)? as f64 / 1e9)
}

/// The managers as `on` lists them: (hostname, manager status), status one
/// of Leader, Reachable, Unreachable (or shoal's Joining).
fn cluster_managers(
    hosts: &Hosts,
    system: System,
    on: &str,
) -> Result<Vec<(String, String)>, String> {
    match system {
        System::Shoal => {
            let mut c = hosts.exec_command(on, &["shoal", "node", "ls", "--format", "json"]);
            let out = poll_output(&mut c)?;
            let rows: Value =
                serde_json::from_str(&out).map_err(|e| format!("node ls JSON: {e}: {out}"))?;
            Ok(rows
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| {
                    let status = r["ManagerStatus"].as_str().unwrap_or_default();
                    let host = r["Hostname"].as_str().unwrap_or_default();
                    (!status.is_empty()).then(|| (host.to_string(), status.to_string()))
                })
                .collect())
        }
        System::Swarm => {
            let mut c = hosts.exec_command(
                on,
                &[
                    "docker",
                    "node",
                    "ls",
                    "--format",
                    "{{.Hostname}}\t{{.ManagerStatus}}",
                ],
            );
            let out = poll_output(&mut c)?;
            Ok(out
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .filter(|(_, s)| !s.trim().is_empty())
                .map(|(h, s)| (h.trim().to_string(), s.trim().to_string()))
                .collect())
        }
    }
}

/// Waits until `on` lists exactly `n` managers, one Leader and the others
/// Reachable; returns the leader's hostname.
fn wait_managers(hosts: &Hosts, system: System, on: &str, n: usize) -> Result<String, String> {
    let t0 = Instant::now();
    loop {
        let last = match cluster_managers(hosts, system, on) {
            Ok(m) => {
                let leaders: Vec<&(String, String)> =
                    m.iter().filter(|(_, s)| s == "Leader").collect();
                let reachable = m.iter().filter(|(_, s)| s == "Reachable").count();
                if m.len() == n && leaders.len() == 1 && reachable == n - 1 {
                    return Ok(leaders[0].0.clone());
                }
                format!("{m:?}")
            }
            Err(e) => e,
        };
        if t0.elapsed() > MANAGERS_TIMEOUT {
            return Err(format!(
                "{}: {n} managers (1 Leader, {} Reachable) not listed on {on} after {MANAGERS_TIMEOUT:?}; last: {last}",
                system.name(),
                n - 1
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (briefly) until `on` names a leader; its hostname, or why not.
fn current_leader(hosts: &Hosts, system: System, on: &str) -> String {
    let t0 = Instant::now();
    loop {
        let last = match cluster_managers(hosts, system, on) {
            Ok(m) => match m.iter().find(|(_, s)| s == "Leader") {
                Some((h, _)) => return h.clone(),
                None => format!("{m:?}"),
            },
            Err(e) => e,
        };
        if t0.elapsed() > Duration::from_secs(20) {
            return format!("none listed ({last})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One write attempt's line from the loop in the node:
/// `ok|fail I START_NS END_NS [RC ERROR...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    ok: bool,
    n: usize,
    start_ns: u128,
    end_ns: u128,
    /// For a failure: the exit code (124: the client timeout) and stderr.
    error: String,
}

fn parse_attempt(line: &str) -> Option<Attempt> {
    let mut f = line.splitn(5, ' ');
    let ok = match f.next()? {
        "ok" => true,
        "fail" => false,
        _ => return None,
    };
    let n = f.next()?.parse().ok()?;
    let start_ns = f.next()?.parse().ok()?;
    let end_ns = f.next()?.parse().ok()?;
    let error = match f.next().map(str::trim) {
        None => String::new(),
        Some(rest) => {
            let (rc, msg) = rest.split_once(' ').unwrap_or((rest, ""));
            if rc == "124" {
                "no answer within the client timeout (exit 124)".to_string()
            } else {
                format!("exit {rc}: {}", msg.trim())
            }
        }
    };
    Some(Attempt {
        ok,
        n,
        start_ns,
        end_ns,
        error,
    })
}

/// The write loop run in the surviving manager: it starts at once (so
/// `docker exec` is not counted), says `ready`, waits for a line on stdin,
/// then tries `CLI config create PREFIX-I /etc/hostname` with a client time
/// limit until one attempt succeeds, printing one line per attempt.
const WRITE_LOOP: &str = r#"T=$1; P=$2; CLI=$3; PAUSE=$4; MAX=$5
echo ready
read go || exit 3
i=0
while [ "$i" -lt "$MAX" ]; do
  i=$((i+1))
  s=$(date +%s%N)
  timeout "$T" "$CLI" config create "$P-$i" /etc/hostname >/dev/null 2>/tmp/shoal-bench-write.err
  rc=$?
  e=$(date +%s%N)
  if [ "$rc" -eq 0 ]; then echo "ok $i $s $e"; exit 0; fi
  echo "fail $i $s $e $rc $(head -c 240 /tmp/shoal-bench-write.err | tr '\n' ' ')"
  sleep "$PAUSE"
done
exit 4"#;

fn unix_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Kills `leader`'s node container and times, from `writer`, the first
/// write that succeeds afterwards. Node containers share the host's kernel
/// and so its clock: the loop's stamps and this process's compare.
fn failover(
    hosts: &Hosts,
    system: System,
    leader: &str,
    writer: &str,
    prefix: &str,
    attempt_timeout: u32,
    rep: &mut ClusterRep,
) -> Result<u128, String> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let max = MAX_ATTEMPTS.to_string();
    let timeout = attempt_timeout.to_string();
    let mut child = Command::new("docker")
        .args(["exec", "-i", &hosts.node(writer).container])
        .args(["sh", "-c", WRITE_LOOP, "write-loop"])
        .args([&timeout, prefix, system.cli(), ATTEMPT_PAUSE_S, &max])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run docker exec in {writer}: {e}"))?;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l == "ready" => {}
            other => {
                return Err(format!(
                    "the write loop in {writer} did not start: {other:?}"
                ))
            }
        }
        let k0 = Instant::now();
        must(&mut docker(&["kill", &hosts.node(leader).container]))
            .map_err(|e| format!("docker kill of the leader {leader}: {e}"))?;
        let t0 = unix_nanos();
        rep.kill = secs(k0.elapsed());
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "go").map_err(|e| format!("starting the write loop: {e}"))?;
        drop(stdin);
        let deadline = Instant::now() + FAILOVER_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no write succeeded within {FAILOVER_TIMEOUT:?} of the kill ({} attempts; last error: {})",
                        rep.attempts, rep.last_error
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "the write loop ended without a success after {} attempts; last error: {}",
                        rep.attempts, rep.last_error
                    ))
                }
            };
            let Some(a) = parse_attempt(&line) else {
                eprintln!("shoal-bench: write loop in {writer}: {line}");
                continue;
            };
            rep.attempts = a.n;
            let took = a.end_ns.saturating_sub(a.start_ns) as f64 / 1e9;
            if a.ok {
                rep.failover = a.end_ns.saturating_sub(t0) as f64 / 1e9;
                rep.last_attempt = took;
                return Ok(t0);
            }
            let error = format!("{} ({took:.2} s)", a.error);
            if rep.first_error.is_empty() {
                rep.first_error = error.clone();
            }
            rep.last_error = error;
        }
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Unix time in nanoseconds of an RFC 3339 UTC stamp as tracing's fmt
/// layer writes it (`2026-12-02T09:30:01.123456Z`).
fn parse_utc_nanos(stamp: &str) -> Option<u128> {
    let stamp = stamp.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = u128::try_from(days * 86400 + hh * 3600 + mm * 60 + ss).ok()?;
    let frac: String = frac.chars().take(9).collect();
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u128>().ok()? * 10u128.pow(9 - frac.len() as u32)
    };
    Some(secs * 1_000_000_000 + nanos)
}

/// The "raft leader changed" lines of a shoal log after `t0` (unix ns), as
/// "leader=L at S s" (S: seconds after t0).
fn leader_events(log: &str, t0: u128) -> String {
    let events: Vec<String> = log
        .lines()
        .filter(|l| l.contains("raft leader changed"))
        .filter_map(|l| {
            let at = parse_utc_nanos(l.split_whitespace().next()?)?;
            let leader = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("leader="))
                .unwrap_or("?");
            (at >= t0).then(|| format!("leader={leader} at {:.2} s", (at - t0) as f64 / 1e9))
        })
        .collect();
    if events.is_empty() {
        "no leader change after the kill".into()
    } else {
        events.join(", ")
    }
}

/// Runs `reps` repetitions of both systems (the order alternating, so
/// neither always runs on a warmer machine), printing each one's `line`;
/// the results and errors, shoal's first.
fn alternate<R>(
    reps: usize,
    run: impl Fn(System, usize) -> Result<R, String> + std::panic::RefUnwindSafe,
    line: impl Fn(&R) -> String,
) -> ([Vec<R>; 2], [Vec<String>; 2]) {
    let mut done: [Vec<R>; 2] = [Vec::new(), Vec::new()];
    let mut errors: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for i in 1..=reps {
        let order = if i % 2 == 1 {
            [System::Shoal, System::Swarm]
        } else {
            [System::Swarm, System::Shoal]
        };
        for system in order {
            let k = (system == System::Swarm) as usize;
            match guarded(|| run(system, i)) {
                Ok(r) => {
                    println!(
                        "rep {i} {}: {} [load {}]",
                        system.name(),
                        line(&r),
                        loadavg()
                    );
                    done[k].push(r);
                }
                Err(e) => {
                    println!("rep {i} {}: FAILED: {e}", system.name());
                    errors[k].push(e);
                }
            }
        }
    }
    (done, errors)
}

/// A cluster just created on n1: its address and join tokens.
struct FirstNode {
    ip: String,
    worker_token: String,
    manager_token: String,
}

impl FirstNode {
    /// The join command for a node with `role`'s token (worker or manager).
    fn join(&self, system: System, role: &str) -> Vec<String> {
        let token = if role == "worker" {
            &self.worker_token
        } else {
            &self.manager_token
        };
        let manager = format!("{}:2377", self.ip);
        let args: Vec<&str> = match system {
            System::Shoal => vec![
                "shoal",
                "join",
                "--token",
                token,
                "--pod-network-internal",
                &self.ip,
            ],
            System::Swarm => vec!["docker", "swarm", "join", "--token", token, &manager],
        };
        args.into_iter().map(String::from).collect()
    }
}

/// `shoal init` / `docker swarm init` on n1, advertising its address; the
/// join tokens of both roles.
fn init_first(hosts: &Hosts, system: System) -> Result<FirstNode, String> {
    let ip = hosts.ip("n1").to_string();
    /// A role's `join-token -q` command.
    type TokenCommand = fn(&'static str) -> Vec<&'static str>;
    let (init, token): (Vec<&str>, TokenCommand) = match system {
        System::Shoal => (
            vec![
                "shoal",
                "init",
                "--advertise-addr",
                &ip,
                "--pod-network-internal",
            ],
            |role| vec!["shoal", "join-token", role, "-q"],
        ),
        System::Swarm => (
            vec!["docker", "swarm", "init", "--advertise-addr", &ip],
            |role| vec!["docker", "swarm", "join-token", "-q", role],
        ),
    };
    node_ok(hosts, "n1", &init)?;
    let worker_token = node_ok(hosts, "n1", &token("worker"))?.trim().to_string();
    let manager_token = node_ok(hosts, "n1", &token("manager"))?.trim().to_string();
    Ok(FirstNode {
        ip,
        worker_token,
        manager_token,
    })
}

/// Puts the cluster together, times the joins, then the failover.
fn cluster_measure(
    hosts: &Hosts,
    system: System,
    i: usize,
    attempt_timeout: u32,
) -> Result<ClusterRep, String> {
    let mut rep = ClusterRep::default();
    let first = init_first(hosts, system)?;
    let joins = [first.join(system, "worker"), first.join(system, "manager")];
    let [worker_join, manager_join] = joins
        .each_ref()
        .map(|j| j.iter().map(String::as_str).collect::<Vec<_>>());
    rep.worker_join = timed_in_node(hosts, "n2", &worker_join)?;
    rep.manager_join = timed_in_node(hosts, "n3", &manager_join)?;
    node_ok(hosts, "n4", &manager_join)?;
    wait_managers(hosts, system, "n1", CLUSTER_MANAGERS.len())?;
    std::thread::sleep(CLUSTER_SETTLE);
    let leader = wait_managers(hosts, system, "n1", CLUSTER_MANAGERS.len())?;
    let writer = *CLUSTER_MANAGERS
        .iter()
        .find(|m| **m != leader)
        .ok_or_else(|| format!("the leader {leader:?} is not a node of this run"))?;
    if !CLUSTER_MANAGERS.contains(&leader.as_str()) {
        return Err(format!(
            "the leader {leader:?} is not one of {CLUSTER_MANAGERS:?}"
        ));
    }
    // An untimed write from the writer first: the path to the leader is warm,
    // as on a cluster in use.
    let warm = format!("warm-{i}");
    node_ok(
        hosts,
        writer,
        &[system.cli(), "config", "create", &warm, "/etc/hostname"],
    )?;
    rep.old_leader = leader.clone();
    rep.writer = writer.to_string();
    let t0 = failover(
        hosts,
        system,
        &leader,
        writer,
        &format!("failover-{i}"),
        attempt_timeout,
        &mut rep,
    )?;
    rep.new_leader = current_leader(hosts, system, writer);
    if system == System::Shoal {
        rep.leader_events = leader_events(&hosts.shoal_log(writer, 400), t0);
    }
    Ok(rep)
}

/// Leaves Swarm (`docker swarm leave --force`) in every running node
/// container of a repetition; when dropped, so also on an error or a panic.
struct SwarmNodes<'a>(&'a Hosts);

impl Drop for SwarmNodes<'_> {
    fn drop(&mut self) {
        for node in self.0.nodes() {
            if self.0.state(&node.name).running {
                swarm_leave_in(&node.container);
            }
        }
    }
}

/// `docker swarm leave --force` in one node container (quiet when it is in
/// no swarm).
fn swarm_leave_in(container: &str) {
    let out = try_run(
        Command::new("docker").args(["exec", container, "docker", "swarm", "leave", "--force"]),
        CMD_TIMEOUT,
    );
    match out {
        Ok(o) if o.success() || o.stderr.contains("not part of a swarm") => {}
        Ok(o) => eprintln!("shoal-bench: docker swarm leave --force in {container} failed:\n{o}"),
        Err(e) => eprintln!("shoal-bench: docker swarm leave --force in {container} failed: {e}"),
    }
}

/// On a signal (Drop does not run on exit): leave Swarm in the node
/// containers of the running repetition, remove them and their network.
fn cluster_emergency_cleanup() {
    let hosts = CLUSTER_HOSTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let Some((containers, network, swarm)) = hosts else {
        return;
    };
    if swarm {
        for c in &containers {
            swarm_leave_in(c);
        }
    }
    eprintln!(
        "shoal-bench: removing node containers {}",
        containers.join(" ")
    );
    let _ = try_run(
        Command::new("docker").args(["rm", "-fv"]).args(&containers),
        CMD_TIMEOUT,
    );
    let _ = try_run(
        Command::new("docker").args(["network", "rm", &network]),
        CMD_TIMEOUT,
    );
}

/// One repetition of one system, in fresh node containers (removed by
/// Hosts' Drop, Swarm left first by SwarmNodes' Drop).
fn cluster_rep(system: System, i: usize, attempt_timeout: u32) -> Result<ClusterRep, String> {
    let hosts = Hosts::builder(CLUSTER_NODES).start();
    *CLUSTER_HOSTS.lock().unwrap_or_else(|e| e.into_inner()) = Some((
        hosts.nodes().iter().map(|n| n.container.clone()).collect(),
        hosts.network.clone(),
        system == System::Swarm,
    ));
    let result = {
        let _swarm = (system == System::Swarm).then(|| SwarmNodes(&hosts));
        let result = cluster_measure(&hosts, system, i, attempt_timeout);
        if result.is_err() {
            for node in hosts.nodes() {
                if !hosts.state(&node.name).running {
                    continue;
                }
                let log = match system {
                    System::Shoal => hosts.shoal_log(&node.name, 30),
                    System::Swarm => hosts.engine_log(&node.name, 30),
                };
                eprintln!(
                    "--- {} {} log (tail)\n{}",
                    node.name,
                    system.name(),
                    log.trim_end()
                );
            }
        }
        result
    };
    CLUSTER_HOSTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    drop(hosts);
    result
}

fn bench_cluster(reps: usize, attempt_timeout: u32, shoal: &Path) {
    let (env, profile) = header(&format!("cluster: {reps} repetitions"), shoal);
    let image = shoal_tests::hosts::node_image();
    let inner = try_run(
        &mut docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "dockerd",
            &image,
            "--version",
        ]),
        CMD_TIMEOUT,
    )
    .map(|o| o.stdout.trim().to_string())
    .unwrap_or_default();
    println!("node containers: {CLUSTER_NODES} of {image} per system and repetition ({inner})");
    println!(
        "join: wall time of the join command inside the node (shoal join / docker swarm join), n2 with the\n\
         worker token, n3 with the manager token, against n1; n4 joins as a manager too (managers n1 n3 n4)"
    );
    println!(
        "failover: docker kill of the leader's node container, then from another manager `CLI config create`\n\
         with a fresh name (timeout {attempt_timeout} s each, {ATTEMPT_PAUSE_S} s apart) until one succeeds;\n\
         the figure runs from docker kill's return to that write's completion\n"
    );

    let (done, errors) = alternate(
        reps,
        |system, i| cluster_rep(system, i, attempt_timeout),
        ClusterRep::line,
    );

    type ClusterField = fn(&ClusterRep) -> f64;
    let rows: [(&str, &str, ClusterField); 3] = [
        ("worker_join_s", "worker join", |r| r.worker_join),
        ("manager_join_s", "manager join", |r| r.manager_join),
        ("failover_s", "failover -> first write", |r| r.failover),
    ];
    let [shoal_reps, swarm_reps] = &done;
    println!(
        "\nmedians of {} shoal and {} Swarm repetitions (of {reps}):\n",
        shoal_reps.len(),
        swarm_reps.len()
    );
    println!(
        "{:<26} {:>11} {:>11} {:>12}",
        "FIGURE", "SHOAL", "SWARM", "SHOAL/SWARM"
    );
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} s"));
    let med =
        |reps: &[ClusterRep], f: ClusterField| median(&reps.iter().map(f).collect::<Vec<_>>());
    let list = |reps: &[ClusterRep], f: ClusterField| -> Vec<f64> {
        reps.iter().map(|r| round(f(r))).collect()
    };
    let mut j_shoal = serde_json::Map::new();
    let mut j_swarm = serde_json::Map::new();
    let mut j_ratio = serde_json::Map::new();
    let mut j_reps = serde_json::Map::new();
    for (key, name, f) in rows {
        let a = med(shoal_reps, f);
        let b = med(swarm_reps, f);
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let r = ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
        println!("{name:<26} {:>11} {:>11} {r:>12}", show(a), show(b));
        j_shoal.insert(key.into(), a.map(round).into());
        j_swarm.insert(key.into(), b.map(round).into());
        j_ratio.insert(key.into(), ratio.map(round).into());
        j_reps.insert(format!("shoal_{key}"), list(shoal_reps, f).into());
        j_reps.insert(format!("swarm_{key}"), list(swarm_reps, f).into());
    }
    let leaders = |reps: &[ClusterRep]| -> Vec<String> {
        reps.iter()
            .map(|r| format!("{}->{}", r.old_leader, r.new_leader))
            .collect()
    };
    for (k, system) in [System::Shoal, System::Swarm].into_iter().enumerate() {
        for e in &errors[k] {
            println!("\n{}: {e}", system.name());
        }
    }
    let line = json!({
        "bench": "cluster",
        "reps": reps,
        "load_end": loadavg(),
        "shoal_profile": profile,
        "machine": env,
        "node_engine": inner,
        "attempt_timeout_s": attempt_timeout,
        "shoal": if shoal_reps.is_empty() { Value::Null } else { Value::Object(j_shoal) },
        "swarm": if swarm_reps.is_empty() { Value::Null } else { Value::Object(j_swarm) },
        "ratio_shoal_over_swarm": Value::Object(j_ratio),
        "repetitions": Value::Object(j_reps),
        "shoal_leaders": leaders(shoal_reps),
        "swarm_leaders": leaders(swarm_reps),
        "shoal_errors": errors[0],
        "swarm_errors": errors[1],
    });
    println!("\n{line}");
}

// ------------------------------------------------------------ nodeloss

/// Node containers of a `nodeloss` repetition: n1 manages, n2 and n3 work.
const NODELOSS_NODES: usize = 3;
/// Replicas of the service spread over the three nodes.
const NODELOSS_REPLICAS: usize = 6;
/// Longest wait for the lost replicas to run elsewhere.
const NODELOSS_TIMEOUT: Duration = Duration::from_secs(180);

/// What one `nodeloss` repetition measured for one system.
#[derive(Debug, Clone, Default)]
struct NodeLossRep {
    /// From `docker kill` of n2's container returning to the start of the
    /// last replacement on n1 and n3 (the engines' StartedAt).
    replaced: f64,
    /// When the polling saw all replicas running (an upper bound).
    polled: f64,
    /// Replicas n2 ran when it was killed.
    lost: usize,
    /// Polls of the survivors' engines until then.
    polls: usize,
}

/// The label each system puts on a service's containers.
fn service_label(system: System, service: &str) -> String {
    match system {
        System::Shoal => format!("label=io.shoal.service.name={service}"),
        System::Swarm => format!("label=com.docker.swarm.service.name={service}"),
    }
}

/// Ids of the running containers of `service` on `node`'s own engine.
fn running_ids(
    hosts: &Hosts,
    system: System,
    node: &str,
    service: &str,
) -> Result<Vec<String>, String> {
    let filter = service_label(system, service);
    let out = node_ok(
        hosts,
        node,
        &["docker", "ps", "-q", "--no-trunc", "--filter", &filter],
    )?;
    Ok(out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn running_in(hosts: &Hosts, system: System, node: &str, service: &str) -> Result<usize, String> {
    Ok(running_ids(hosts, system, node, service)?.len())
}

/// When the latest of `ids` started on `node`'s engine (unix ns), from
/// `docker inspect`: node containers share the host's clock.
fn latest_start(hosts: &Hosts, node: &str, ids: &[String]) -> Result<Option<u128>, String> {
    if ids.is_empty() {
        return Ok(None);
    }
    let mut args = vec!["docker", "inspect", "--format", "{{.State.StartedAt}}"];
    args.extend(ids.iter().map(String::as_str));
    let out = node_ok(hosts, node, &args)?;
    let mut latest = None;
    for line in out.lines() {
        let t = parse_utc_nanos(line.trim())
            .ok_or_else(|| format!("in {node}: bad StartedAt {line:?}"))?;
        latest = latest.max(Some(t));
    }
    Ok(latest)
}

/// Forms the cluster, creates the service, kills n2 and times until its
/// replicas run on n1 and n3.
fn nodeloss_measure(hosts: &Hosts, system: System, image: &str) -> Result<NodeLossRep, String> {
    let first = init_first(hosts, system)?;
    for n in ["n2", "n3"] {
        let join = first.join(system, "worker");
        node_ok(
            hosts,
            n,
            &join.iter().map(String::as_str).collect::<Vec<_>>(),
        )?;
    }
    let replicas = NODELOSS_REPLICAS.to_string();
    let create: Vec<&str> = match system {
        System::Shoal => vec!["shoal", "service", "create"],
        // Swarm: local images only, and wait until converged as shoal does.
        System::Swarm => vec![
            "docker",
            "service",
            "create",
            "--no-resolve-image",
            "--detach=false",
        ],
    };
    let mut create = create;
    create.extend([
        "--name",
        "web",
        "--replicas",
        &replicas,
        "--stop-grace-period",
        "1s",
        image,
    ]);
    node_ok(hosts, "n1", &create)?;
    let lost = running_in(hosts, system, "n2", "web")?;
    if lost == 0 {
        return Err(format!("{}: n2 runs no replica of web", system.name()));
    }
    // Heartbeats and gossip settle, as on a cluster in use.
    std::thread::sleep(Duration::from_secs(3));
    let survivors = ["n1", "n3"];
    let before: Vec<Vec<String>> = survivors
        .iter()
        .map(|n| running_ids(hosts, system, n, "web"))
        .collect::<Result<_, _>>()?;
    must(&mut docker(&["kill", &hosts.node("n2").container]))
        .map_err(|e| format!("docker kill of n2: {e}"))?;
    let killed_ns = unix_nanos();
    let t0 = Instant::now();
    let mut polls = 0;
    loop {
        polls += 1;
        let now: Vec<Vec<String>> = survivors
            .iter()
            .map(|n| running_ids(hosts, system, n, "web"))
            .collect::<Result<_, _>>()?;
        let n: usize = now.iter().map(Vec::len).sum();
        if n >= NODELOSS_REPLICAS {
            // The figure: the kill to the last replacement's start, read from
            // the engines (polling only finds it, at ~0.3 s a round here).
            let mut started = None;
            for ((node, now), before) in survivors.iter().zip(&now).zip(&before) {
                let new: Vec<String> = now
                    .iter()
                    .filter(|id| !before.contains(id))
                    .cloned()
                    .collect();
                started = started.max(latest_start(hosts, node, &new)?);
            }
            let replaced = started
                .map(|t| t.saturating_sub(killed_ns) as f64 / 1e9)
                .ok_or_else(|| format!("{}: no replacement container found", system.name()))?;
            return Ok(NodeLossRep {
                replaced,
                polled: secs(t0.elapsed()),
                lost,
                polls,
            });
        }
        if t0.elapsed() > NODELOSS_TIMEOUT {
            return Err(format!(
                "{}: {n} of {NODELOSS_REPLICAS} replicas on n1 and n3 {NODELOSS_TIMEOUT:?} after n2 was killed",
                system.name()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One repetition of one system in fresh node containers (removed by
/// Hosts' Drop, Swarm left first by SwarmNodes' Drop).
fn nodeloss_rep(system: System, image: &str) -> Result<NodeLossRep, String> {
    let hosts = Hosts::builder(NODELOSS_NODES).image(image).start();
    *CLUSTER_HOSTS.lock().unwrap_or_else(|e| e.into_inner()) = Some((
        hosts.nodes().iter().map(|n| n.container.clone()).collect(),
        hosts.network.clone(),
        system == System::Swarm,
    ));
    let result = {
        let _swarm = (system == System::Swarm).then(|| SwarmNodes(&hosts));
        nodeloss_measure(&hosts, system, image)
    };
    CLUSTER_HOSTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    drop(hosts);
    result
}

fn bench_nodeloss(reps: usize, shoal: &Path) {
    let (env, profile) = header(&format!("nodeloss: {reps} repetitions"), shoal);
    let image = shoal_tests::images::web_image("v1");
    println!(
        "three node containers per system and repetition (n1 manager, n2 and n3 workers), {NODELOSS_REPLICAS} replicas\n\
         of {image} with --stop-grace-period 1s; docker kill of n2's container, then the survivors' engines\n\
         polled until {NODELOSS_REPLICAS} replicas run on n1 and n3; the figure runs from docker kill's return to\n\
         the last replacement's start (State.StartedAt on its engine; node containers share the host clock)\n"
    );
    let (done, errors) = alternate(
        reps,
        |system, _| nodeloss_rep(system, &image),
        |r: &NodeLossRep| {
            format!(
                "{} replicas of n2 started elsewhere {:.2} s after the kill (seen by polling after {:.2} s, {} polls)",
                r.lost, r.replaced, r.polled, r.polls
            )
        },
    );
    let figures = |reps: &[NodeLossRep]| reps.iter().map(|r| r.replaced).collect::<Vec<_>>();
    let (a, b) = (median(&figures(&done[0])), median(&figures(&done[1])));
    let ratio = match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} s"));
    println!(
        "\nmedians of {} shoal and {} Swarm repetitions (of {reps}):\n",
        done[0].len(),
        done[1].len()
    );
    println!(
        "{:<30} {:>11} {:>11} {:>12}",
        "FIGURE", "SHOAL", "SWARM", "SHOAL/SWARM"
    );
    println!(
        "{:<30} {:>11} {:>11} {:>12}",
        "node killed -> replicas back",
        show(a),
        show(b),
        ratio.map_or("-".to_string(), |r| format!("{r:.2}"))
    );
    for (k, system) in [System::Shoal, System::Swarm].into_iter().enumerate() {
        for e in &errors[k] {
            println!("\n{}: {e}", system.name());
        }
    }
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let line = json!({
        "bench": "nodeloss",
        "reps": reps,
        "load_end": loadavg(),
        "shoal_profile": profile,
        "machine": env,
        "replicas": NODELOSS_REPLICAS,
        "shoal_replaced_s": a.map(round),
        "swarm_replaced_s": b.map(round),
        "ratio_shoal_over_swarm": ratio.map(round),
        "shoal_reps_s": figures(&done[0]).into_iter().map(round).collect::<Vec<_>>(),
        "swarm_reps_s": figures(&done[1]).into_iter().map(round).collect::<Vec<_>>(),
        "shoal_errors": errors[0],
        "swarm_errors": errors[1],
    });
    println!("\n{line}");
}

// ---------------------------------------------------------------- sim

/// Default size of a `sim` run (the issue's first goal: under a minute).
const SIM_NODES: usize = 1000;
const SIM_PODS: usize = 20_000;
/// Managers of a `sim` cluster (`--managers`: comparing 1 with 3 tells
/// a manager's share of the memory figure).
const SIM_MANAGERS: u64 = 3;

/// The size of a `sim` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SimSetup {
    managers: u64,
    nodes: usize,
    pods: usize,
}
/// Worker threads of the managers' own runtime (`SimSize::manager_threads`):
/// as many as a small manager host has cores, and these 2 cores.
const SIM_MANAGER_THREADS: usize = 2;
/// The managers' Raft clock in `sim`: a heartbeat (and AppendEntries
/// deadline) of 250 ms instead of 75, elections after 1-2 s instead of
/// 250-500 ms. Three managers and thousands of agents share these two
/// cores (and other sessions' jobs) in one process: at 5,000 nodes the
/// daemon's 75 ms deadline was missed dozens of times during setup, before
/// any pod existed, and each miss resends the entries; see
/// docs/BENCHMARKS.md "Simulator at scale".
const SIM_RAFT_TIMING: RaftTiming = RaftTiming {
    heartbeat_ms: 250,
    election_min_ms: 1_000,
    election_max_ms: 2_000,
};
/// The service a `sim` run creates.
const SIM_SERVICE: &str = "simbench";
/// One in this many simulated nodes dies in the reschedule phase.
const SIM_KILL_ONE_IN: usize = 10;
/// Pause before each memory reading, so that work in flight (status
/// batches, the last session messages) has settled.
const SIM_SETTLE: Duration = Duration::from_secs(2);
/// Longest waits: they grow with the size (a slow run fails, it does not hang).
fn sim_converge_timeout(pods: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(5) * pods as u32
}
const SIM_RESCHEDULE_TIMEOUT: Duration = Duration::from_secs(180);
/// Shortest time between two reads of a wait's condition: each reads every
/// pod (milliseconds at 100,000 pods, as a long read the Raft apply waits
/// for rather than queueing on the lock), and the store changes hundreds of
/// times a second; the figures are seconds.
const SIM_WAIT_POLL: Duration = Duration::from_millis(10);
/// How often a wait prints where it is (stderr).
const SIM_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What one repetition of `sim` measured.
#[derive(Debug, Clone, Default)]
struct SimRep {
    /// Starting the cluster until every node is Ready (not a goal; shown).
    setup_s: f64,
    /// Create call -> every pod assigned (committed and applied).
    placed_s: f64,
    placements_per_s: f64,
    converge_s: f64,
    reschedule_s: f64,
    /// Pods that were on the nodes that died.
    moved_pods: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// VmRSS once the system allocator returned the free memory it holds
    /// to the kernel ([`release_free_heap`]), right after `rss_after_kib`:
    /// the difference is freed memory malloc kept, not live data.
    rss_trimmed_kib: u64,
    manager_bytes_per_pod: f64,
    /// Heap bytes the managers' threads hold, after - before, per manager
    /// and pod ([`shoal_tests::heap`]).
    manager_heap_bytes_per_pod: f64,
    /// Their live allocations, after - before, per manager and pod.
    manager_heap_allocs_per_pod: f64,
    /// `manager_heap_bytes_per_pod` by allocation size: (largest size of
    /// the class, 0 for the last, unbounded class; bytes per manager and
    /// pod), classes that moved by less than a byte per pod left out.
    manager_heap_by_size: Vec<(u64, f64)>,
    /// What the leader's store holds, after - before, per pod.
    store_bytes_per_pod: f64,
    /// Heap bytes of every other thread (agents, this program), after -
    /// before, per pod.
    other_heap_bytes_per_pod: f64,
    raft_log_bytes: u64,
    /// Raft log index after convergence (entries, including elections).
    raft_index: u64,
    snapshot_ms: f64,
    snapshot_bytes: u64,
}

impl SimRep {
    fn line(&self) -> String {
        format!(
            "setup {:.1} s, placed {:.2} s ({:.0} placements/s), converged {:.2} s, \
             reschedule of {} pods {:.2} s, RSS {:.1} -> {:.1} MiB ({:.0} B/pod; {:.1} MiB once malloc trimmed), \
             heap per pod: {:.0} B ({:.1} allocations) per manager, of which the store {:.0} B, \
             others {:.0} B, raft log {:.1} MiB at index {}, snapshot {:.0} ms ({:.1} MiB)",
            self.setup_s,
            self.placed_s,
            self.placements_per_s,
            self.converge_s,
            self.moved_pods,
            self.reschedule_s,
            mib(self.rss_before_kib),
            mib(self.rss_after_kib),
            self.manager_bytes_per_pod,
            mib(self.rss_trimmed_kib),
            self.manager_heap_bytes_per_pod,
            self.manager_heap_allocs_per_pod,
            self.store_bytes_per_pod,
            self.other_heap_bytes_per_pod,
            self.raft_log_bytes as f64 / 1048576.0,
            self.raft_index,
            self.snapshot_ms,
            self.snapshot_bytes as f64 / 1048576.0,
        )
    }
}

impl SimRep {
    fn to_json(&self) -> Value {
        json!({
            "setup_s": self.setup_s, "placed_s": self.placed_s,
            "placements_per_s": self.placements_per_s, "converge_s": self.converge_s,
            "reschedule_s": self.reschedule_s, "moved_pods": self.moved_pods,
            "rss_before_kib": self.rss_before_kib, "rss_after_kib": self.rss_after_kib,
            "rss_trimmed_kib": self.rss_trimmed_kib,
            "manager_bytes_per_pod": self.manager_bytes_per_pod,
            "manager_heap_bytes_per_pod": self.manager_heap_bytes_per_pod,
            "manager_heap_allocs_per_pod": self.manager_heap_allocs_per_pod,
            "manager_heap_by_size": self.manager_heap_by_size,
            "store_bytes_per_pod": self.store_bytes_per_pod,
            "other_heap_bytes_per_pod": self.other_heap_bytes_per_pod,
            "raft_log_bytes": self.raft_log_bytes, "raft_index": self.raft_index,
            "snapshot_ms": self.snapshot_ms, "snapshot_bytes": self.snapshot_bytes,
        })
    }

    fn from_json(v: &Value) -> Option<SimRep> {
        let f = |k: &str| v[k].as_f64();
        let n = |k: &str| v[k].as_u64();
        Some(SimRep {
            setup_s: f("setup_s")?,
            placed_s: f("placed_s")?,
            placements_per_s: f("placements_per_s")?,
            converge_s: f("converge_s")?,
            reschedule_s: f("reschedule_s")?,
            moved_pods: n("moved_pods")? as usize,
            rss_before_kib: n("rss_before_kib")?,
            rss_after_kib: n("rss_after_kib")?,
            rss_trimmed_kib: n("rss_trimmed_kib")?,
            manager_bytes_per_pod: f("manager_bytes_per_pod")?,
            manager_heap_bytes_per_pod: f("manager_heap_bytes_per_pod")?,
            manager_heap_allocs_per_pod: f("manager_heap_allocs_per_pod")?,
            manager_heap_by_size: v["manager_heap_by_size"]
                .as_array()?
                .iter()
                .map(|c| Some((c[0].as_u64()?, c[1].as_f64()?)))
                .collect::<Option<_>>()?,
            store_bytes_per_pod: f("store_bytes_per_pod")?,
            other_heap_bytes_per_pod: f("other_heap_bytes_per_pod")?,
            raft_log_bytes: n("raft_log_bytes")?,
            raft_index: n("raft_index")?,
            snapshot_ms: f("snapshot_ms")?,
            snapshot_bytes: n("snapshot_bytes")?,
        })
    }
}

/// One repetition in this process. SimCluster panics when its nodes do not
/// all come up: that fails the repetition, not the run.
fn sim_in_process(setup: SimSetup) -> Result<SimRep, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let rep = std::panic::AssertUnwindSafe(sim_rep(setup)).catch_unwind();
    rt.block_on(rep).unwrap_or_else(|p| {
        Err(p
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "panicked".into()))
    })
}

/// One repetition in a fresh process (this program, `--reps 1`), so that
/// its memory figure starts from a clean heap: the allocator keeps what an
/// earlier repetition freed, and a second cluster in the same process
/// grows into it without growing the resident set.
fn sim_in_child(setup: SimSetup) -> Result<SimRep, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this program's path: {e}"))?;
    let out = Command::new(exe)
        .args([
            "sim",
            "--managers",
            &setup.managers.to_string(),
            "--nodes",
            &setup.nodes.to_string(),
            "--pods",
            &setup.pods.to_string(),
            "--reps",
            "1",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run a repetition: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("a repetition printed no JSON ({}): {stdout}", out.status))?;
    match line["repetitions"].get(0).and_then(SimRep::from_json) {
        Some(rep) => Ok(rep),
        None => Err(line["errors"][0]
            .as_str()
            .unwrap_or("a repetition failed without saying why")
            .to_string()),
    }
}

/// The service of a `sim` run: `pods` replicas of an image the sim
/// executor runs until it is stopped.
fn sim_spec(pods: usize) -> ServiceSpec {
    ServiceSpec {
        name: SIM_SERVICE.into(),
        replicas: pods as u64,
        container: Some(ContainerSpec {
            image: "sim/bench:v1".into(),
            stop_grace_period_ms: 100,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The service's pods that should run: (assigned to a node, running),
/// and running on a node outside `dead`.
fn sim_counts(d: &StoreData, dead: &HashSet<String>) -> (usize, usize, usize) {
    let Some(dep) = d.deployment_by_name(SIM_SERVICE) else {
        return (0, 0, 0);
    };
    let (mut assigned, mut running, mut alive) = (0, 0, 0);
    for p in d
        .pods_of_deployment(&dep.id)
        .filter(|p| p.desired_state() == PodState::Running)
    {
        if p.node_id.is_empty() {
            continue;
        }
        assigned += 1;
        if observed(p) == PodState::Running {
            running += 1;
            if !dead.contains(&p.node_id) {
                alive += 1;
            }
        }
    }
    (assigned, running, alive)
}

/// What a timed-out wait last saw: the counts, and the states of the pods
/// not running (how many, on how many nodes).
fn sim_progress(d: &StoreData, dead: &HashSet<String>) -> String {
    let (assigned, running, alive) = sim_counts(d, dead);
    let mut states: BTreeMap<String, usize> = BTreeMap::new();
    let mut nodes: HashSet<&str> = HashSet::new();
    if let Some(dep) = d.deployment_by_name(SIM_SERVICE) {
        for p in d
            .pods_of_deployment(&dep.id)
            .filter(|p| p.desired_state() == PodState::Running && observed(p) != PodState::Running)
        {
            *states.entry(format!("{:?}", observed(p))).or_default() += 1;
            nodes.insert(&p.node_id);
        }
    }
    format!(
        "{assigned} assigned, {running} running, {alive} on live nodes; not running: {states:?} on {} nodes",
        nodes.len()
    )
}

/// Waits until `done` holds on `store`, re-reading it after every applied
/// change but at most every [`SIM_WAIT_POLL`]; returns when that was seen.
/// Fails after `timeout`, saying what was last seen (`show`).
async fn sim_wait(
    store: &shoal_manager::store::Store,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&StoreData) -> bool,
    show: impl Fn(&StoreData) -> String,
) -> Result<Instant, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut changes = store.subscribe();
    // Progress on stderr now and then, so a long or stuck run shows where
    // it is (the counts scan every pod: not on every change).
    let mut progress = tokio::time::Instant::now() + SIM_PROGRESS_EVERY;
    loop {
        changes.borrow_and_update();
        let scan = Instant::now();
        if store.read_long(&mut done) {
            return Ok(Instant::now());
        }
        // A scan of 100,000 pods takes milliseconds of a core the
        // managers share: at most a fifth of the time goes to looking.
        let scanned = scan.elapsed();
        if tokio::time::Instant::now() >= progress {
            eprintln!(
                "shoal-bench sim: waiting for {what}: {}",
                store.read_long(&show)
            );
            progress += SIM_PROGRESS_EVERY;
        }
        tokio::time::sleep(SIM_WAIT_POLL.max(scanned * 4)).await;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(format!("timed out after {timeout:?} waiting for {what} ({})", store.read_long(&show)));
            }
            r = changes.changed() => if r.is_err() {
                return Err(format!("the store closed while waiting for {what}"));
            }
        }
    }
}

/// The size of a file, 0 when it cannot be read.
fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| file_bytes(&e.path())).sum())
        .unwrap_or(0)
}

/// Asks glibc's malloc to give the free memory it holds (in every arena)
/// back to the kernel, so that the resident set shows what is live. Only
/// for the memory figures: `manager_bytes_per_pod` is read before it.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            /// glibc: returns 1 if memory was released.
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim only walks glibc's own arenas.
        unsafe { malloc_trim(0) };
    }
}

fn self_rss() -> u64 {
    rss_kib(std::process::id()).unwrap_or(0)
}

/// One repetition: a fresh cluster, the service, the kill, the teardown.
async fn sim_rep(setup: SimSetup) -> Result<SimRep, String> {
    let mut rep = SimRep::default();
    let started = Instant::now();
    let cluster = SimCluster::start_with(SimSize {
        managers: setup.managers,
        workers: setup.nodes,
        manager_threads: SIM_MANAGER_THREADS,
        raft_timing: SIM_RAFT_TIMING,
        membership: true,
    })
    .await;
    rep.setup_s = secs(started.elapsed());
    let result = sim_measure(&cluster, setup, &mut rep).await;
    cluster.stop().await;
    result.map(|()| rep)
}

/// The process's heap by owner at one moment, and what the leader's store
/// holds then.
struct SimHeap {
    managers: HeapUse,
    other: HeapUse,
    store: HeapUse,
}

impl SimHeap {
    fn now(store: &shoal_manager::store::Store) -> SimHeap {
        // A copy of the store holds what the store does: cloning a BTreeMap
        // copies its nodes as they are (as full), a HashMap its capacity,
        // a String its length (and the stored strings were decoded or
        // cloned to their length). The pods are shared (`Arc`) by a clone
        // of the store, so each is copied into an `Arc` of its own, as the
        // store holds it, less the vector that holds those. Dropped at once.
        let (copy, mut store) = heap::counted(|| {
            store.read(|d| {
                let pods: Vec<Arc<Pod>> = d.pods.values().map(|p| Arc::new(p.clone())).collect();
                (d.clone(), pods)
            })
        });
        store.bytes -= (copy.1.capacity() * std::mem::size_of::<Arc<Pod>>()) as i64;
        drop(copy);
        SimHeap {
            managers: heap::live(Owner::Managers),
            other: heap::live(Owner::Other),
            store,
        }
    }

    /// Fills `rep`'s heap figures from `before` to `self`.
    fn report(&self, before: &SimHeap, managers: u64, pods: usize, rep: &mut SimRep) {
        let per_pod = |n: i64| n as f64 / pods as f64;
        let per_manager = |n: i64| per_pod(n) / managers as f64;
        let grown = self.managers.since(&before.managers);
        rep.manager_heap_bytes_per_pod = per_manager(grown.bytes);
        rep.manager_heap_allocs_per_pod = per_manager(grown.allocations);
        rep.manager_heap_by_size = grown
            .by_size
            .iter()
            .enumerate()
            .map(|(class, &b)| {
                let limit = heap::size_class_limit(class).unwrap_or(0) as u64;
                (limit, (per_manager(b) * 10.0).round() / 10.0)
            })
            .filter(|(_, b)| b.abs() >= 1.0)
            .collect();
        rep.store_bytes_per_pod = per_pod(self.store.bytes - before.store.bytes);
        rep.other_heap_bytes_per_pod = per_pod(self.other.bytes - before.other.bytes);
    }
}

async fn sim_measure(
    cluster: &SimCluster,
    setup: SimSetup,
    rep: &mut SimRep,
) -> Result<(), String> {
    let SimSetup {
        managers,
        nodes,
        pods,
    } = setup;
    if !heap::installed() {
        return Err("this program's counting allocator is not installed".into());
    }
    tokio::time::sleep(SIM_SETTLE).await;
    let leader = cluster.leader().ok_or("no raft leader")?;
    let store = leader.store.clone();
    rep.rss_before_kib = self_rss();
    let heap_before = SimHeap::now(&store);
    let nobody = HashSet::new();
    let show = |d: &StoreData| sim_progress(d, &nobody);

    let t0 = Instant::now();
    leader
        .api
        .create_service(tonic::Request::new(CreateServiceRequest {
            spec: Some(sim_spec(pods)),
        }))
        .await
        .map_err(|e| format!("create service: {}", e.message()))?;
    let timeout = sim_converge_timeout(pods);
    let placed = sim_wait(
        &store,
        "every pod assigned",
        timeout,
        |d| sim_counts(d, &nobody).0 >= pods,
        show,
    )
    .await?;
    rep.placed_s = secs(placed - t0);
    rep.placements_per_s = pods as f64 / rep.placed_s;
    let running = sim_wait(
        &store,
        "every pod running",
        timeout,
        |d| sim_counts(d, &nobody).1 >= pods,
        show,
    )
    .await?;
    rep.converge_s = secs(running - t0);

    tokio::time::sleep(SIM_SETTLE).await;
    rep.rss_after_kib = self_rss();
    rep.manager_bytes_per_pod =
        (rep.rss_after_kib.saturating_sub(rep.rss_before_kib) * 1024) as f64 / pods as f64;
    SimHeap::now(&store).report(&heap_before, managers, pods, rep);
    release_free_heap();
    rep.rss_trimmed_kib = self_rss();
    let raft_dir = leader.data_dir().join("raft");
    rep.raft_log_bytes = file_bytes(&raft_dir.join("log.redb"));
    rep.raft_index = leader.raft.last_applied();
    let t = Instant::now();
    leader
        .raft
        .snapshot_now()
        .await
        .map_err(|e| format!("snapshot: {e}"))?;
    rep.snapshot_ms = t.elapsed().as_secs_f64() * 1000.0;
    rep.snapshot_bytes = dir_bytes(&raft_dir.join("snapshots"));

    // Every tenth node dies: its agent is killed.
    let dead: HashSet<String> = (0..nodes)
        .filter(|i| i % SIM_KILL_ONE_IN == 0)
        .map(worker_node_id)
        .collect();
    rep.moved_pods = store.read(|d| {
        let (_, running, alive) = sim_counts(d, &dead);
        running - alive
    });
    let t1 = Instant::now();
    for i in (0..nodes).filter(|i| i % SIM_KILL_ONE_IN == 0) {
        cluster.crash_worker(i);
    }
    let leader = cluster.leader().ok_or("no raft leader after the kill")?;
    let show_dead = |d: &StoreData| sim_progress(d, &dead);
    let moved = sim_wait(
        &leader.store,
        "every pod running on a live node",
        SIM_RESCHEDULE_TIMEOUT,
        |d| sim_counts(d, &dead).2 >= pods,
        show_dead,
    )
    .await?;
    rep.reschedule_s = secs(moved - t1);
    Ok(())
}

/// Runs `sim` `reps` times; prints each repetition, then one JSON line of
/// medians. Returns the exit code: 1 when no repetition succeeded.
fn bench_sim(reps: usize, setup: SimSetup) -> i32 {
    let SimSetup {
        managers,
        nodes,
        pods,
    } = setup;
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let load_start = loadavg();
    println!(
        "shoal-bench sim: {managers} managers, {nodes} simulated nodes, {pods} pods, \
         {reps} repetitions ({profile} build, {nproc} CPUs, load average at start {load_start})"
    );
    // The managers' and agents' logs, on stderr, only when asked for
    // (RUST_LOG=warn shows nodes marked down and sessions ended).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let mut done: Vec<SimRep> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for i in 1..=reps {
        let outcome = if reps == 1 {
            sim_in_process(setup)
        } else {
            sim_in_child(setup)
        };
        match outcome {
            Ok(r) => {
                println!("rep {i}: {} [load {}]", r.line(), loadavg());
                done.push(r);
            }
            Err(e) => {
                println!("rep {i}: FAILED: {e}");
                errors.push(e);
            }
        }
    }
    let med = |f: fn(&SimRep) -> f64| median(&done.iter().map(f).collect::<Vec<_>>());
    let round = |v: Option<f64>, places: i32| {
        let scale = 10f64.powi(places);
        v.map(|v| (v * scale).round() / scale)
    };
    let repetitions: Vec<Value> = done.iter().map(SimRep::to_json).collect();
    let line = json!({
        "bench": "sim",
        "managers": managers,
        "nodes": nodes,
        "pods": pods,
        "reps": reps,
        "ok_reps": done.len(),
        "placements_per_s": round(med(|r| r.placements_per_s), 0),
        "converge_s": round(med(|r| r.converge_s), 3),
        "reschedule_s": round(med(|r| r.reschedule_s), 3),
        "manager_bytes_per_pod": round(med(|r| r.manager_bytes_per_pod), 0),
        "manager_heap_bytes_per_pod": round(med(|r| r.manager_heap_bytes_per_pod), 0),
        "manager_heap_allocs_per_pod": round(med(|r| r.manager_heap_allocs_per_pod), 2),
        "store_bytes_per_pod": round(med(|r| r.store_bytes_per_pod), 0),
        "other_heap_bytes_per_pod": round(med(|r| r.other_heap_bytes_per_pod), 0),
        "raft_log_bytes": med(|r| r.raft_log_bytes as f64).map(|v| v as u64),
        "snapshot_ms": round(med(|r| r.snapshot_ms), 1),
        "placed_s": round(med(|r| r.placed_s), 3),
        "setup_s": round(med(|r| r.setup_s), 2),
        "snapshot_bytes": med(|r| r.snapshot_bytes as f64).map(|v| v as u64),
        "profile": profile,
        "nproc": nproc,
        "load_start": load_start,
        "load_end": loadavg(),
        "repetitions": repetitions,
        "errors": errors,
    });
    println!("{line}");
    if done.is_empty() {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_cluster_subcommand_parses_its_arguments() {
        let o = parse_args(&args(&["cluster", "--reps", "5"])).unwrap();
        assert_eq!((o.bench, o.reps), (Bench::Cluster, 5));
        let o = parse_args(&args(&["cluster", "--reps=2"])).unwrap();
        assert_eq!((o.bench, o.reps), (Bench::Cluster, 2));
        assert_eq!(parse_args(&args(&["cluster"])).unwrap().reps, 3);
        // --grace belongs to update only; a bad count is the usage.
        assert!(parse_args(&args(&["cluster", "--grace", "1s"])).is_none());
        assert!(parse_args(&args(&["cluster", "--reps", "0"])).is_none());
        assert!(parse_args(&args(&["cluster", "--reps"])).is_none());
        assert!(parse_args(&args(&["clusters"])).is_none());
        let o = parse_args(&args(&["cluster", "--attempt-timeout", "30"])).unwrap();
        assert_eq!((o.attempt_timeout, o.reps), (30, 3));
        assert_eq!(parse_args(&args(&["cluster"])).unwrap().attempt_timeout, 2);
        assert!(parse_args(&args(&["cluster", "--attempt-timeout=0"])).is_none());
        assert!(parse_args(&args(&["swarm", "--attempt-timeout", "3"])).is_none());
        let o = parse_args(&args(&["update", "--grace=500ms", "--reps", "1"])).unwrap();
        assert_eq!(
            (o.bench, o.reps, o.grace.as_str()),
            (Bench::Update, 1, "500ms")
        );
        assert!(parse_args(&args(&["update", "--grace", "1m"])).is_none());
        assert_eq!(parse_args(&args(&["swarm"])).unwrap().bench, Bench::Swarm);
        let o = parse_args(&args(&["nodeloss", "--reps", "2"])).unwrap();
        assert_eq!((o.bench, o.reps), (Bench::NodeLoss, 2));
        let o = parse_args(&args(&["all", "--reps", "3"])).unwrap();
        assert_eq!((o.bench, o.reps, o.grace.as_str()), (Bench::All, 3, "10s"));
    }

    #[test]
    fn the_sim_subcommand_parses_its_size() {
        let o = parse_args(&args(&["sim"])).unwrap();
        let default = SimSetup {
            managers: 3,
            nodes: 1000,
            pods: 20_000,
        };
        assert_eq!((o.bench, o.sim, o.reps), (Bench::Sim, default, 3));
        let o = parse_args(&args(&[
            "sim",
            "--nodes",
            "50",
            "--pods=500",
            "--reps",
            "1",
        ]))
        .unwrap();
        assert_eq!(
            (o.sim.nodes, o.sim.pods, o.sim.managers, o.reps),
            (50, 500, 3, 1)
        );
        let o = parse_args(&args(&["sim", "--managers", "1"])).unwrap();
        assert_eq!(o.sim.managers, 1);
        assert!(parse_args(&args(&["sim", "--managers", "0"])).is_none());
        assert!(parse_args(&args(&["sim", "--nodes", "0"])).is_none());
        assert!(parse_args(&args(&["sim", "--pods"])).is_none());
        // --nodes and --pods belong to sim only.
        assert!(parse_args(&args(&["swarm", "--nodes", "5"])).is_none());
    }

    #[test]
    fn a_sim_repetition_survives_the_trip_through_json() {
        let r = SimRep {
            setup_s: 1.5,
            placed_s: 2.0,
            placements_per_s: 10_000.0,
            converge_s: 4.25,
            reschedule_s: 6.5,
            moved_pods: 2000,
            rss_before_kib: 100,
            rss_after_kib: 300,
            rss_trimmed_kib: 250,
            manager_bytes_per_pod: 10.24,
            manager_heap_bytes_per_pod: 1900.5,
            manager_heap_allocs_per_pod: 12.25,
            manager_heap_by_size: vec![(32, 120.5), (0, -3.0)],
            store_bytes_per_pod: 726.0,
            other_heap_bytes_per_pod: 9000.0,
            raft_log_bytes: 1 << 20,
            raft_index: 1131,
            snapshot_ms: 47.5,
            snapshot_bytes: 4096,
        };
        let back = SimRep::from_json(&r.to_json()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{r:?}"));
        assert!(SimRep::from_json(&json!({"setup_s": 1.0})).is_none());
    }

    #[test]
    fn timings_from_inside_a_node_are_parsed() {
        let out = "joined a cluster as a worker\n__shoal_bench_timed 0 1000000000 1350000000\n";
        assert_eq!(parse_timed(out), Some(0.35));
        assert_eq!(parse_timed("no marker\n"), None);

        let ok = parse_attempt("ok 3 100 400").unwrap();
        assert!(ok.ok && ok.n == 3 && ok.end_ns - ok.start_ns == 300);
        let t = parse_attempt("fail 1 100 2100 124 ").unwrap();
        assert!(!t.ok && t.error.contains("timeout"), "{t:?}");
        let e =
            parse_attempt("fail 2 100 200 1 Error: no leader: the cluster has no quorum ").unwrap();
        assert_eq!(
            e.error,
            "exit 1: Error: no leader: the cluster has no quorum"
        );
        assert!(parse_attempt("ready").is_none());
    }

    #[test]
    fn leader_changes_are_read_from_a_shoal_log() {
        // 2026-12-02T09:30:01Z is 1796203801 s after the epoch.
        let t0 = parse_utc_nanos("2026-12-02T09:30:01Z").unwrap();
        assert_eq!(t0, 1_796_203_801_000_000_000);
        let log = "2026-12-02T09:30:00.900000Z  INFO shoal_manager::raft: raft leader changed leader=Some(1)\n\
                   2026-12-02T09:30:01.500000Z  INFO shoal_manager::raft: raft leader changed leader=None\n\
                   2026-12-02T09:30:01.750000Z  INFO shoal_manager::raft: raft leader changed leader=Some(3)\n";
        assert_eq!(
            leader_events(log, t0),
            "leader=None at 0.50 s, leader=Some(3) at 0.75 s"
        );
    }
}
