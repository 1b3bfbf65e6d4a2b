//! Several hosts on one machine, for multi-host tests (DESIGN §8, tier 4):
//! [`Hosts`] starts node containers, each with its own Docker Engine, its own
//! address on a private `--internal` network under 10.213.0.0/16, and the
//! freshly built `shoal` binary bind-mounted read-only at
//! /usr/local/bin/shoal (code changes need no image rebuild). Faults are
//! Docker operations on the node containers: kill, pause, disconnect,
//! restart. Everything it created is removed on drop, after a panic too.
//!
//! The node image is built by tests/node-image/build.sh (debootstrap; cached
//! by a content hash, so a warm machine skips the build), once per process.
//! See docs/TESTING.md for the flags and how to debug a node.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::cmd::{run, try_run, Output};
use crate::docker::{self, docker};
use crate::wait::wait_for;

/// The script that builds the node image and prints its reference.
pub const NODE_IMAGE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/node-image/build.sh");
/// A cold build (debootstrap) took about 2 minutes here; a slow mirror may
/// take longer.
pub const NODE_IMAGE_BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// How long a node's Docker Engine may take to answer after its container
/// starts (about 1 s here).
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);
/// Commands run in a node with [`Hosts::exec`].
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// `shoal` client commands in a node (`service create` waits to converge).
pub const SHOAL_TIMEOUT: Duration = Duration::from_secs(180);
/// The label on every container and network a [`Hosts`] creates, valued with
/// its prefix.
pub const LABEL: &str = "io.shoal.test.hosts";
/// Every name a [`Hosts`] gives starts with this, then a random suffix.
pub const NAME_PREFIX: &str = "shoal-hosts-";
/// The node's shoal data directory (shoal's default as root), an anonymous
/// volume: on the host's disk (fast fsync for Raft), kept across a restart
/// of the node, removed with the container.
pub const SHOAL_DATA_DIR: &str = "/var/lib/shoal";
/// The /16 that test networks take their /24 from: outside Docker's default
/// address pools (172.17-31/16, 192.168/16). Its last /24 is never used, so
/// that tests can name an address nobody owns ([`UNOWNED_ADDR`]).
pub const SUBNET_POOL: [u8; 2] = [10, 213];
/// An address in [`SUBNET_POOL`] that no test network holds: a connection to
/// it from a node must fail at once (nodes have no route out: [`Hosts::seal`]).
pub const UNOWNED_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 255, 254);

static NODE_IMAGE: Mutex<Option<String>> = Mutex::new(None);

/// Builds the node image unless an image with the same content hash exists
/// (once per process); returns its reference (`shoal-test/node:<hash>`).
/// Panics with the script's output if the build fails.
pub fn node_image() -> String {
    let mut image = NODE_IMAGE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = image.as_ref() {
        return i.clone();
    }
    let out = run(
        Command::new("bash").arg(NODE_IMAGE_SCRIPT),
        NODE_IMAGE_BUILD_TIMEOUT,
    );
    let reference = out.stdout.lines().last().unwrap_or("").trim().to_string();
    assert!(
        out.success() && reference.starts_with("shoal-test/node:"),
        "building the node image failed:\n{out}"
    );
    *image = Some(reference.clone());
    reference
}

/// Where a node's Docker Engine keeps its images and containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineStorage {
    /// `--tmpfs /var/lib/docker` (RECIPES.md): in memory, fastest; a restart
    /// of the node starts its engine empty ([`Hosts::restart`] reloads the
    /// images that were loaded, but containers are gone, as after a reinstall).
    Tmpfs,
    /// An anonymous volume on the host's disk: a restart keeps the engine's
    /// images and (stopped) containers, like a rebooted host.
    Volume,
}

/// One node container.
#[derive(Debug, Clone)]
pub struct NodeHost {
    /// The node's name: its hostname, and what tests call it (`n1`, `n2`...).
    pub name: String,
    /// The container's name (`shoal-hosts-<suffix>-n1`), unique on the machine.
    pub container: String,
    /// Its fixed address on the test network.
    pub ip: Ipv4Addr,
}

/// What Docker says about a node container (`docker inspect .State`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// created, running, paused, restarting, exited, dead.
    pub status: String,
    pub running: bool,
    pub paused: bool,
    /// Whether it is attached to the test network.
    pub connected: bool,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (running={} paused={} connected={})",
            self.status, self.running, self.paused, self.connected
        )
    }
}

/// How to start a [`Hosts`].
#[derive(Debug, Clone)]
pub struct HostsBuilder {
    nodes: usize,
    storage: EngineStorage,
    images: Vec<String>,
}

impl HostsBuilder {
    /// Where the nodes' engines keep their data (default [`EngineStorage::Tmpfs`]).
    pub fn storage(mut self, storage: EngineStorage) -> Self {
        self.storage = storage;
        self
    }

    /// An image of the host's engine to load into every node once it runs.
    pub fn image(mut self, image: &str) -> Self {
        self.images.push(image.to_string());
        self
    }

    /// Takes the Docker lock, builds the node image if needed, creates the
    /// network and starts the nodes, waiting for every node's engine.
    pub fn start(self) -> Hosts {
        Hosts::start_with(self)
    }
}

/// Node containers on one `--internal` network, removed on drop.
pub struct Hosts {
    /// `shoal-hosts-<suffix>`: the network's name and the containers' prefix.
    pub prefix: String,
    /// The network (named like the prefix).
    pub network: String,
    /// Its subnet, a /24 under 10.213.0.0/16.
    pub subnet: String,
    /// The network's gateway (.1): the host's side of the bridge, which
    /// [`Hosts::seal`] makes unreachable from the nodes.
    pub gateway: Ipv4Addr,
    pub image: String,
    pub storage: EngineStorage,
    nodes: Vec<NodeHost>,
    /// Images loaded into every node, in order (loaded again when a node starts).
    loaded: Mutex<Vec<String>>,
    network_created: bool,
    // Dropped last: the next Docker test starts after this one cleaned up.
    _docker: MutexGuard<'static, ()>,
}

impl Hosts {
    /// `n` nodes with the defaults (engines on tmpfs, no image loaded).
    pub fn start(n: usize) -> Hosts {
        Hosts::builder(n).start()
    }

    pub fn builder(n: usize) -> HostsBuilder {
        HostsBuilder {
            nodes: n,
            storage: EngineStorage::Tmpfs,
            images: Vec::new(),
        }
    }

    fn start_with(b: HostsBuilder) -> Hosts {
        assert!(
            (1..=200).contains(&b.nodes),
            "Hosts: 1 to 200 nodes, not {}",
            b.nodes
        );
        let guard = docker::lock();
        docker::require_docker();
        let image = node_image();
        let prefix = format!("{NAME_PREFIX}{}", crate::random_suffix());
        let mut hosts = Hosts {
            network: prefix.clone(),
            prefix,
            subnet: String::new(),
            gateway: Ipv4Addr::UNSPECIFIED,
            image,
            storage: b.storage,
            nodes: Vec::new(),
            loaded: Mutex::new(Vec::new()),
            network_created: false,
            _docker: guard,
        };
        // From here on a panic drops `hosts`, which removes what exists.
        let third = hosts.create_network();
        for i in 1..=b.nodes {
            let name = format!("n{i}");
            let node = NodeHost {
                container: format!("{}-{name}", hosts.prefix),
                ip: Ipv4Addr::new(SUBNET_POOL[0], SUBNET_POOL[1], third, 10 + i as u8),
                name,
            };
            hosts.nodes.push(node.clone());
            hosts.run_node(&node);
        }
        for node in &hosts.nodes {
            hosts.seal(&node.name);
            hosts.wait_engine(&node.name);
        }
        for image in &b.images {
            hosts.load_image(image);
        }
        hosts
    }

    /// Creates the network on the first free /24 of 10.213.0-254.0, trying
    /// from a random one (other test runs on the machine hold some).
    fn create_network(&mut self) -> u8 {
        let start = u32::from_str_radix(&crate::random_suffix()[..4], 16).unwrap_or(0) % 255;
        let mut last = String::new();
        for k in 0..255u32 {
            let third = ((start + k) % 255) as u8;
            let subnet = format!("{}.{}.{third}.0/24", SUBNET_POOL[0], SUBNET_POOL[1]);
            let gateway = Ipv4Addr::new(SUBNET_POOL[0], SUBNET_POOL[1], third, 1);
            let gw = gateway.to_string();
            let label = format!("{LABEL}={}", self.prefix);
            let out = docker(&[
                "network",
                "create",
                "--internal",
                "--driver",
                "bridge",
                "--subnet",
                &subnet,
                "--gateway",
                &gw,
                "--label",
                &label,
                &self.network,
            ]);
            if out.success() {
                self.subnet = subnet;
                self.gateway = gateway;
                self.network_created = true;
                return third;
            }
            if !out.stderr.contains("overlap") {
                panic!("cannot create the test network {}:\n{out}", self.network);
            }
            last = out.stderr;
        }
        panic!("no free /24 under 10.213.0.0/16 for the test network; last error: {last}");
    }

    fn run_node(&self, node: &NodeHost) {
        let label = format!("{LABEL}={}", self.prefix);
        let ip = node.ip.to_string();
        let shoal = format!("{}:/usr/local/bin/shoal:ro", crate::shoal_bin().display());
        let mut args: Vec<&str> = vec![
            "run",
            "-d",
            "--name",
            &node.container,
            "--hostname",
            &node.name,
            "--label",
            &label,
            "--network",
            &self.network,
            "--ip",
            &ip,
            // tini as pid 1 reaps the detached shoal daemon and what it forks.
            "--init",
            // --privileged fails here (no CAP_SYS_RESOURCE in the bounding set).
            "--cap-add",
            "ALL",
            "--cap-drop",
            "SYS_RESOURCE",
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--cgroupns",
            "host",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup",
            "-v",
            SHOAL_DATA_DIR,
            "-v",
            &shoal,
            // As on a host, /run starts empty at boot: no stale pid files
            // (dockerd refuses to start over one) or sockets after a kill.
            "--tmpfs",
            "/run:exec,mode=755",
        ];
        match self.storage {
            EngineStorage::Tmpfs => args.extend(["--tmpfs", "/var/lib/docker:exec,dev,suid"]),
            EngineStorage::Volume => args.extend(["-v", "/var/lib/docker"]),
        }
        args.push(&self.image);
        let out = docker(&args);
        assert!(
            out.success(),
            "cannot start node container {}:\n{out}",
            node.container
        );
    }

    /// The nodes, in order (n1, n2, ...).
    pub fn nodes(&self) -> &[NodeHost] {
        &self.nodes
    }

    /// A node by name (`n1`); panics if there is none.
    #[track_caller]
    pub fn node(&self, name: &str) -> &NodeHost {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in {}", self.prefix))
    }

    /// A node's address on the test network.
    pub fn ip(&self, name: &str) -> Ipv4Addr {
        self.node(name).ip
    }

    /// Runs `ARGS` in a node (`docker exec`), 60 s at most.
    pub fn exec(&self, name: &str, args: &[&str]) -> Output {
        self.exec_timeout(name, args, EXEC_TIMEOUT)
    }

    /// Runs `ARGS` in a node; panics (with its output so far) after `timeout`.
    pub fn exec_timeout(&self, name: &str, args: &[&str], timeout: Duration) -> Output {
        run(&mut self.exec_command(name, args), timeout)
    }

    /// `docker exec CONTAINER ARGS`, not yet run.
    pub fn exec_command(&self, name: &str, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.arg("exec").arg(&self.node(name).container).args(args);
        c
    }

    /// Runs `shoal ARGS` in a node (the CLI talks to that node's daemon on
    /// its default socket).
    pub fn shoal(&self, name: &str, args: &[&str]) -> Output {
        let mut a = vec!["shoal"];
        a.extend_from_slice(args);
        self.exec_timeout(name, &a, SHOAL_TIMEOUT)
    }

    /// Runs `docker ARGS` against a node's own engine.
    pub fn docker(&self, name: &str, args: &[&str]) -> Output {
        let mut a = vec!["docker"];
        a.extend_from_slice(args);
        self.exec(name, &a)
    }

    /// Waits until a node's Docker Engine answers `docker info`; panics with
    /// the engine's log if it does not within [`ENGINE_TIMEOUT`].
    pub fn wait_engine(&self, name: &str) {
        let node = self.node(name);
        let deadline = std::time::Instant::now() + ENGINE_TIMEOUT;
        loop {
            let mut c =
                self.exec_command(name, &["docker", "info", "--format", "{{.ServerVersion}}"]);
            let last = match try_run(&mut c, Duration::from_secs(15)) {
                Ok(out) if out.success() && !out.stdout.trim().is_empty() => return,
                Ok(out) => out.to_string(),
                Err(e) => e,
            };
            if std::time::Instant::now() > deadline {
                panic!(
                    "the Docker Engine of {} ({}) did not answer within {ENGINE_TIMEOUT:?}; last:\n{last}\n--- state: {}\n--- engine log (tail)\n{}",
                    node.name,
                    node.container,
                    self.state(name),
                    self.engine_log(name, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Loads an image of the host's engine into every running node
    /// (`docker save IMAGE | docker exec -i NODE docker load`); a node that
    /// is down gets it when it starts again ([`Hosts::start_node`],
    /// [`Hosts::restart`]); a paused one from [`Hosts::load_image_into`].
    pub fn load_image(&self, image: &str) {
        for node in &self.nodes {
            let s = self.state(&node.name);
            if s.running && !s.paused {
                self.load_image_into(&node.name, image);
            }
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if !loaded.iter().any(|i| i == image) {
            loaded.push(image.to_string());
        }
    }

    /// Loads an image of the host's engine into one node.
    pub fn load_image_into(&self, name: &str, image: &str) {
        let container = &self.node(name).container;
        let out = run(
            Command::new("bash").args([
                "-o",
                "pipefail",
                "-c",
                r#"docker save "$1" | docker exec -i "$2" docker load"#,
                "load-image",
                image,
                container,
            ]),
            Duration::from_secs(300),
        );
        assert!(
            out.success(),
            "cannot load {image} into {name} ({container}):\n{out}"
        );
    }

    /// What Docker says about a node container now.
    pub fn state(&self, name: &str) -> NodeState {
        let fmt = format!(
            "{{{{.State.Status}}}} {{{{.State.Running}}}} {{{{.State.Paused}}}} {{{{if index .NetworkSettings.Networks \"{}\"}}}}true{{{{else}}}}false{{{{end}}}}",
            self.network
        );
        // try_run: drop calls this, and must not panic.
        let out = try_run(
            Command::new("docker").args(["inspect", "--format", &fmt, &self.node(name).container]),
            Duration::from_secs(60),
        );
        let (ok, text) = match &out {
            Ok(o) => (o.success(), o.stdout.as_str()),
            Err(e) => (false, e.as_str()),
        };
        let f: Vec<&str> = text.split_whitespace().collect();
        if !ok || f.len() != 4 {
            let why = out.map(|o| o.all()).unwrap_or_else(|e| e);
            return NodeState {
                status: format!("unknown: {}", why.trim()),
                running: false,
                paused: false,
                connected: false,
            };
        }
        NodeState {
            status: f[0].to_string(),
            running: f[1] == "true",
            paused: f[2] == "true",
            connected: f[3] == "true",
        }
    }

    /// The node container's process on the host (0 when it is not running).
    pub fn host_pid(&self, name: &str) -> u32 {
        docker(&[
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &self.node(name).container,
        ])
        .stdout
        .trim()
        .parse()
        .unwrap_or(0)
    }

    /// `docker kill` of a node (a host's power cut); waits until it is down.
    pub fn kill(&self, name: &str) {
        self.fault(name, &["kill"]);
        self.wait_state(name, "down", |s| !s.running);
    }

    /// `docker pause` of a node: every process in it, its engine's containers
    /// too, stops (a host that hangs); waits until Docker reports it paused.
    pub fn pause(&self, name: &str) {
        self.fault(name, &["pause"]);
        self.wait_state(name, "paused", |s| s.paused);
    }

    pub fn unpause(&self, name: &str) {
        self.fault(name, &["unpause"]);
        self.wait_state(name, "unpaused", |s| s.running && !s.paused);
    }

    /// Takes a node off the test network (its cable pulled): it keeps
    /// running, reaching nothing but itself.
    pub fn disconnect(&self, name: &str) {
        let c = self.node(name).container.clone();
        let out = docker(&["network", "disconnect", &self.network, &c]);
        assert!(out.success(), "cannot disconnect {name}:\n{out}");
        self.wait_state(name, "disconnected", |s| !s.connected);
    }

    /// Puts a node back on the test network, at its address (the node must
    /// run unpaused: its seal is lifted while Docker attaches the network).
    pub fn reconnect(&self, name: &str) {
        let node = self.node(name);
        let ip = node.ip.to_string();
        // Docker checks the route to the gateway while it attaches.
        let gw = format!("{}/32", self.gateway);
        let unseal = r#"while ip rule del to "$1" unreachable 2>/dev/null; do :; done"#;
        let out = self.exec(name, &["sh", "-c", unseal, "unseal", &gw]);
        assert!(out.success(), "cannot lift {name}'s seal:\n{out}");
        let out = docker(&[
            "network",
            "connect",
            "--ip",
            &ip,
            &self.network,
            &node.container,
        ]);
        assert!(out.success(), "cannot reconnect {name}:\n{out}");
        self.wait_state(name, "connected", |s| s.connected);
        self.seal(name);
    }

    /// Leaves a node a route to its own subnet only. Docker 20.10 gives
    /// containers on an `--internal` network a default route through the
    /// gateway (the host), and only its iptables rules drop what goes
    /// further: a stray connection would hang until it times out, and the
    /// host's own services would answer on the gateway address. Without a
    /// default route, and with a policy rule making the gateway unreachable,
    /// such a connection fails at once (ENETUNREACH) and leaves the node not
    /// at all. (A rule, not an `unreachable` route: Docker refuses to attach
    /// the network again while a route covers the gateway's address; the
    /// rule is lifted while [`Hosts::reconnect`] attaches it.) Docker sets
    /// the default route again whenever it attaches the network (start,
    /// restart, reconnect), so those call this again.
    pub fn seal(&self, name: &str) {
        let gw = format!("{}/32", self.gateway);
        let script = r#"ip route del default 2>/dev/null || true
ip rule del to "$1" unreachable 2>/dev/null || true
ip rule add to "$1" unreachable"#;
        let out = self.exec(name, &["sh", "-c", script, "seal", &gw]);
        assert!(out.success(), "cannot remove {name}'s routes out:\n{out}");
    }

    /// Starts a node container that was killed or stopped, waits for its
    /// engine and loads the images [`Hosts::load_image`] loaded. The shoal
    /// daemon is not started: run `shoal daemon` in it, as a host's init
    /// would.
    pub fn start_node(&self, name: &str) {
        self.fault(name, &["start"]);
        self.after_boot(name);
    }

    /// `docker restart` of a node (a reboot), then as [`Hosts::start_node`].
    pub fn restart(&self, name: &str) {
        self.fault(name, &["restart", "--time", "2"]);
        self.after_boot(name);
    }

    fn after_boot(&self, name: &str) {
        self.wait_state(name, "running", |s| s.running && !s.paused);
        self.seal(name);
        self.wait_engine(name);
        // Needed on tmpfs; on a volume it adds what was loaded while the
        // node was down (a load of an image the engine has is quick).
        let images = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for image in &images {
            self.load_image_into(name, image);
        }
    }

    fn fault(&self, name: &str, verb: &[&str]) {
        let mut args = verb.to_vec();
        let c = self.node(name).container.clone();
        args.push(&c);
        let out = run(Command::new("docker").args(&args), Duration::from_secs(60));
        assert!(out.success(), "docker {} of {name} failed:\n{out}", verb[0]);
    }

    #[track_caller]
    fn wait_state(&self, name: &str, what: &str, ok: impl Fn(&NodeState) -> bool) {
        wait_for(
            &format!("{name} to be {what}"),
            Duration::from_secs(30),
            || {
                let s = self.state(name);
                if ok(&s) {
                    Ok(())
                } else {
                    Err(s.to_string())
                }
            },
        );
    }

    /// Whether `from` opens a TCP connection to `addr:port` within 3 s
    /// (bash's /dev/tcp, inside the node); `Err` says why not.
    pub fn tcp_connect(&self, from: &str, addr: &str, port: u16) -> Result<(), String> {
        let out = self.exec(
            from,
            &[
                "timeout",
                "3",
                "bash",
                "-c",
                r#"exec 3<>"/dev/tcp/$1/$2""#,
                "tcp-connect",
                addr,
                &port.to_string(),
            ],
        );
        if out.success() {
            Ok(())
        } else {
            Err(out.all().trim().to_string())
        }
    }

    /// The last `lines` lines of a node's Docker Engine log (`docker logs`).
    pub fn engine_log(&self, name: &str, lines: usize) -> String {
        let c = self.node(name).container.clone();
        try_run(
            Command::new("docker").args(["logs", "--tail", &lines.to_string(), &c]),
            Duration::from_secs(30),
        )
        .map(|o| o.all())
        .unwrap_or_else(|e| e)
    }

    /// Forms a shoal cluster: `shoal init` on `first` (advertising its
    /// address, internal pod network), then `shoal join` with the manager
    /// token on `managers` and the worker token on `workers`. Returns the
    /// first manager's address.
    pub fn form_cluster(&self, first: &str, managers: &[&str], workers: &[&str]) -> String {
        let ip = self.ip(first).to_string();
        self.shoal(
            first,
            &["init", "--advertise-addr", &ip, "--pod-network-internal"],
        )
        .ok();
        for (role, nodes) in [("manager", managers), ("worker", workers)] {
            if nodes.is_empty() {
                continue;
            }
            let token = self.join_token(first, role);
            for n in nodes {
                let joined = self
                    .shoal(
                        n,
                        &["join", "--token", &token, "--pod-network-internal", &ip],
                    )
                    .ok();
                assert!(joined.stdout.contains(&format!("as a {role}")), "{joined}");
            }
        }
        ip
    }

    /// `shoal join-token ROLE -q` on `on`.
    pub fn join_token(&self, on: &str, role: &str) -> String {
        self.shoal(on, &["join-token", role, "-q"])
            .ok()
            .stdout
            .trim()
            .to_string()
    }

    /// `shoal service create --name NAME --replicas N --stop-grace-period 1s
    /// [EXTRA...] IMAGE` on `on`, waiting until it converges.
    pub fn create_service(&self, on: &str, name: &str, replicas: u32, image: &str, extra: &[&str]) {
        let replicas = replicas.to_string();
        let mut args = vec![
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            &replicas,
            "--stop-grace-period",
            "1s",
        ];
        args.extend(extra);
        args.push(image);
        self.shoal(on, &args).ok();
    }

    /// Names of the running containers of `service` on `node`'s own
    /// engine, sorted.
    pub fn running(&self, node: &str, service: &str) -> Vec<String> {
        let out = self
            .docker(
                node,
                &[
                    "ps",
                    "--filter",
                    &format!("label=io.shoal.service.name={service}"),
                    "--format",
                    "{{.Names}}",
                ],
            )
            .ok();
        let mut names: Vec<String> = out.stdout.lines().map(str::to_string).collect();
        names.sort();
        names
    }

    /// The last `lines` lines of the shoal daemon's log in a node.
    pub fn shoal_log(&self, name: &str, lines: usize) -> String {
        let log = format!("{SHOAL_DATA_DIR}/shoal.log");
        try_run(
            &mut self.exec_command(name, &["tail", "-n", &lines.to_string(), &log]),
            Duration::from_secs(30),
        )
        .map(|o| o.all())
        .unwrap_or_else(|e| e)
    }

    /// Names of the containers and networks with this run's label that
    /// exist now (empty after drop).
    pub fn leftovers(prefix: &str) -> Vec<String> {
        let filter = format!("label={LABEL}={prefix}");
        let mut v = Vec::new();
        for (kind, field) in [
            (&["ps", "-a"][..], "{{.Names}}"),
            (&["network", "ls"][..], "{{.Name}}"),
        ] {
            let mut args = kind.to_vec();
            args.extend(["--filter", &filter, "--format", field]);
            let out = docker(&args);
            assert!(out.success(), "listing leftovers failed:\n{out}");
            v.extend(out.stdout.split_whitespace().map(str::to_string));
        }
        v
    }

    /// What a failed test needs to see of every node.
    fn diagnose(&self) {
        eprintln!(
            "--- hosts {} on {} ({})",
            self.prefix, self.network, self.subnet
        );
        for node in &self.nodes {
            let state = self.state(&node.name);
            eprintln!("--- {} {} {}: {state}", node.name, node.container, node.ip);
            eprintln!(
                "--- {} engine log (tail)\n{}",
                node.name,
                self.engine_log(&node.name, 20).trim_end()
            );
            if state.running && !state.paused {
                let t = Duration::from_secs(20);
                if let Ok(ps) = try_run(
                    &mut self.exec_command(&node.name, &["docker", "ps", "-a"]),
                    t,
                ) {
                    eprintln!("--- {} docker ps -a\n{}", node.name, ps.all().trim_end());
                }
                eprintln!(
                    "--- {} shoal log (tail)\n{}",
                    node.name,
                    self.shoal_log(&node.name, 40).trim_end()
                );
            }
        }
    }

    /// Removes every container (with its volumes) and the network of this
    /// run; never panics.
    fn remove_all(&self) {
        let t = Duration::from_secs(60);
        let filter = format!("label={LABEL}={}", self.prefix);
        let mut ids = BTreeSet::new();
        if let Ok(out) = try_run(
            Command::new("docker").args(["ps", "-aq", "--no-trunc", "--filter", &filter]),
            t,
        ) {
            ids.extend(out.stdout.split_whitespace().map(str::to_string));
        }
        for node in &self.nodes {
            if self.state(&node.name).paused {
                let _ = try_run(Command::new("docker").args(["unpause", &node.container]), t);
            }
        }
        let mut names: Vec<&str> = self.nodes.iter().map(|n| n.container.as_str()).collect();
        names.extend(ids.iter().map(String::as_str));
        // rm -f of a missing name fails for that name only.
        let _ = try_run(Command::new("docker").args(["rm", "-fv"]).args(&names), t);
        if self.network_created {
            let _ = try_run(
                Command::new("docker").args(["network", "rm", &self.network]),
                t,
            );
        }
    }
}

impl Drop for Hosts {
    // Cleanup never panics: a panic while unwinding would abort the run.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnose();
        }
        if std::env::var_os("SHOAL_KEEP_HOSTS").is_some() {
            eprintln!(
                "--- SHOAL_KEEP_HOSTS: kept {p}; remove with: docker rm -fv $(docker ps -aq --filter label={LABEL}={p}); docker network rm {p}",
                p = self.prefix
            );
            return;
        }
        self.remove_all();
    }
}
