//! The command line, as clap derives it. Defaults shown in help come from
//! `shoal_proto::defaults`, the same values the daemon uses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use shoal_manager::ca::ClientName;
use shoal_proto::defaults as d;

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    version,
    about = "A Swarm-style container orchestrator",
    disable_help_subcommand = true
)]
pub struct Cli {
    /// Daemon to talk to: unix:///path/to/socket (default unix:///run/shoal/shoal.sock), or a
    /// manager's cluster port tcp://HOST:PORT (needs --tls-dir)
    #[arg(short = 'H', long = "host", global = true, env = d::HOST_ENV)]
    pub host: Option<String>,

    /// Client certificate directory for a tcp:// host (cert.pem, key.pem, ca.pem), as
    /// `shoal ca client-cert --out DIR` writes it; unused with a unix:// socket
    #[arg(long = "tls-dir", global = true, env = d::TLS_DIR_ENV, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a cluster: start this node's daemon as its first manager
    Init(InitArgs),
    /// Join a cluster as a worker or a manager (the token decides)
    Join(JoinArgs),
    /// Resume a node from its data directory
    Daemon(DaemonArgs),
    /// Manage services
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage nodes
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage rollouts: status, history, undo, pause, resume
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Manage stacks (compose files)
    #[command(subcommand)]
    Stack(StackCommand),
    /// Manage secrets (encrypted at rest; the data is never shown)
    #[command(subcommand)]
    Secret(FileObjectCommand),
    /// Manage configs
    #[command(subcommand)]
    Config(FileObjectCommand),
    /// Display objects as Kubernetes names them (deployments, replicasets, pods, services)
    Get(GetArgs),
    /// Show (or rotate) the command that adds a worker or a manager
    JoinToken(JoinTokenArgs),
    /// Show (or rotate) the key that seals gossip between nodes (ids only, never the key)
    GossipKey(GossipKeyArgs),
    /// Cluster certificate authority: client certificates for remote use
    #[command(subcommand)]
    Ca(CaCommand),
    /// Stop the local daemon and leave the cluster
    Leave(LeaveArgs),
    /// Show the client's and the daemon's versions
    Version,
    /// Show cluster-wide information
    Info(FormatArgs),
}

#[derive(Debug, Args, Clone)]
pub struct DaemonOpts {
    /// Where the node keeps its state (default /var/lib/shoal as root, else $XDG_DATA_HOME/shoal)
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Unix socket the daemon serves the CLI on
    #[arg(long, default_value = d::SOCKET_PATH)]
    pub socket: PathBuf,
    /// Stay attached to the terminal instead of detaching
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Args, Clone)]
pub struct InitArgs {
    #[command(flatten)]
    pub daemon: DaemonOpts,
    /// Address the cluster gRPC listens on (default: 127.0.0.1:2377 for a loopback advertise address, else 0.0.0.0:2377)
    #[arg(long)]
    pub listen_addr: Option<String>,
    /// Address other nodes reach this node at
    #[arg(long, default_value = "127.0.0.1")]
    pub advertise_addr: String,
    /// Docker network pods attach to unless their service names others: a user-defined
    /// bridge shoal creates, whose DNS resolves service names, or `bridge`, Docker's default
    /// (as Swarm's tasks without networks: no service-name DNS, faster container starts)
    #[arg(long, default_value = d::POD_NETWORK)]
    pub pod_network: String,
    /// Create the pod network with --internal (no route out of the host)
    #[arg(long)]
    pub pod_network_internal: bool,
    /// UDP port for gossip (liveness hints, sealed with the cluster's gossip key); 0: no gossip
    #[arg(long, default_value_t = d::GOSSIP_PORT)]
    pub gossip_port: u16,
    /// On a surviving manager after the others are lost for good: make a new one-manager
    /// cluster from this node's state (the daemon is stopped and restarted; the node keeps its
    /// addresses, other flags but --data-dir and --socket are not used); the other managers are
    /// removed and rejoin with `shoal leave --force` and `shoal join`
    #[arg(long)]
    pub force_new_cluster: bool,
}

#[derive(Debug, Args, Clone)]
pub struct JoinArgs {
    #[command(flatten)]
    pub daemon: DaemonOpts,
    /// Join token from `shoal join-token worker|manager` on a manager
    #[arg(long)]
    pub token: String,
    /// Address other nodes reach this node at (default: the local address that routes to the manager)
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// Address the cluster gRPC listens on, when this node is or becomes a manager (default: 0.0.0.0:2377, or 127.0.0.1:2377 for a loopback advertise address)
    #[arg(long)]
    pub listen_addr: Option<String>,
    /// Docker network pods attach to unless their service names others: a user-defined
    /// bridge shoal creates, whose DNS resolves service names, or `bridge`, Docker's default
    /// (as Swarm's tasks without networks: no service-name DNS, faster container starts)
    #[arg(long, default_value = d::POD_NETWORK)]
    pub pod_network: String,
    /// Create the pod network with --internal (no route out of the host)
    #[arg(long)]
    pub pod_network_internal: bool,
    /// UDP port for gossip (liveness hints, sealed with the cluster's gossip key); 0: no gossip
    #[arg(long, default_value_t = d::GOSSIP_PORT)]
    pub gossip_port: u16,
    /// A manager's address, HOST[:PORT] (port 2377 by default)
    pub manager: String,
}

#[derive(Debug, Args, Clone)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub daemon: DaemonOpts,
}

#[derive(Debug, Args, Clone)]
pub struct LeaveArgs {
    /// Leave even though this is the last manager (the cluster's state is lost)
    #[arg(short, long)]
    pub force: bool,
    /// Where the node keeps its state, to clean up when the daemon is not running
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// The role a join token admits a node as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JoinRole {
    Worker,
    Manager,
}

#[derive(Debug, Args, Clone)]
pub struct JoinTokenArgs {
    /// Which token: worker or manager
    #[arg(value_enum)]
    pub role: JoinRole,
    /// Only display the token
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace the token with a new one: the old one no longer admits new nodes
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, Args, Clone)]
pub struct GossipKeyArgs {
    /// Start a rotation: a new key is handed to every node, then seals, then the old one is
    /// dropped, each step once every ready node has the last one (the leader also rotates
    /// on its own every 12 hours)
    #[arg(long)]
    pub rotate: bool,
    #[command(flatten)]
    pub format: FormatArgs,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make a client certificate for remote use (`-H tcp://HOST:PORT --tls-dir DIR`)
    #[command(long_about = client_cert_about())]
    ClientCert(ClientCertArgs),
}

fn client_cert_about() -> String {
    format!(
        "Make a client certificate for remote use: the key pair is generated here (the private \
         key never leaves this machine), a manager signs it as role client, valid for {} days. \
         Then: shoal -H tcp://MANAGER:{} --tls-dir DIR <command>",
        d::CLIENT_CERT_VALIDITY_MS / (24 * 3_600_000),
        d::CLUSTER_PORT
    )
}

#[derive(Debug, Args, Clone)]
pub struct ClientCertArgs {
    /// Directory to write cert.pem, key.pem (mode 0600) and ca.pem into (created mode 0700)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name the certificate carries, 1 to 63 of a-z, 0-9 and '-' (default client-<random>)
    #[arg(long, value_parser = parse_client_name)]
    pub name: Option<ClientName>,
    /// Overwrite credentials already in DIR
    #[arg(long)]
    pub force: bool,
}

/// Checked here so a bad name is refused before a key is made, with clap
/// naming the flag; the manager checks it again.
fn parse_client_name(name: &str) -> Result<ClientName, String> {
    ClientName::parse(name).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Args, Clone, Default)]
pub struct FormatArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ListArgs {
    #[command(flatten)]
    pub format: FormatArgs,
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a new service
    Create(Box<CreateArgs>),
    /// List services
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List the pods of one or more services
    Ps(PsArgs),
    /// Scale one or more replicated services (NAME=REPLICAS ...)
    Scale(ScaleArgs),
    /// Display a service's spec and status as JSON
    Inspect(InspectArgs),
    /// Fetch the logs of a service's pods
    Logs(LogsArgs),
    /// Remove one or more services
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Update a service: a change of its pods' template rolls them to a new revision
    Update(Box<UpdateArgs>),
    /// Roll a service back to its previous revision (by the rollback settings)
    Rollback(RollbackArgs),
}

/// Rolling update settings, for --update-* and --rollback-*.
#[derive(Debug, Args, Clone, Default)]
pub struct RolloutFlags {
    #[arg(long = "update-parallelism", help = format!("Pods updated at once, 0 = all (default {})", d::UPDATE_PARALLELISM))]
    pub update_parallelism: Option<u64>,
    #[arg(long = "update-delay", help = format!("Delay between batches (default {})", d::format_duration_ms(d::UPDATE_DELAY_MS)))]
    pub update_delay: Option<String>,
    #[arg(long = "update-order", help = format!("stop-first or start-first (default {})", d::UPDATE_ORDER))]
    pub update_order: Option<String>,
    #[arg(long = "update-monitor", help = format!("How long new pods are watched for failure (default {})", d::format_duration_ms(d::UPDATE_MONITOR_MS)))]
    pub update_monitor: Option<String>,
    #[arg(long = "update-failure-action", help = format!("pause, continue or rollback (default {})", d::UPDATE_FAILURE_ACTION))]
    pub update_failure_action: Option<String>,
    #[arg(long = "update-max-failure-ratio", help = format!("Failure rate tolerated (default {})", d::UPDATE_MAX_FAILURE_RATIO))]
    pub update_max_failure_ratio: Option<f32>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct RollbackFlags {
    #[arg(long = "rollback-parallelism", help = format!("Pods rolled back at once, 0 = all (default {})", d::UPDATE_PARALLELISM))]
    pub rollback_parallelism: Option<u64>,
    #[arg(long = "rollback-delay", help = format!("Delay between batches (default {})", d::format_duration_ms(d::UPDATE_DELAY_MS)))]
    pub rollback_delay: Option<String>,
    #[arg(long = "rollback-order", help = format!("stop-first or start-first (default {})", d::UPDATE_ORDER))]
    pub rollback_order: Option<String>,
    #[arg(long = "rollback-monitor", help = format!("How long pods are watched for failure (default {})", d::format_duration_ms(d::UPDATE_MONITOR_MS)))]
    pub rollback_monitor: Option<String>,
    #[arg(long = "rollback-failure-action", help = format!("pause or continue (default {})", d::ROLLBACK_FAILURE_ACTION))]
    pub rollback_failure_action: Option<String>,
    #[arg(long = "rollback-max-failure-ratio", help = format!("Failure rate tolerated (default {})", d::UPDATE_MAX_FAILURE_RATIO))]
    pub rollback_max_failure_ratio: Option<f32>,
}

/// Reservations and limits, for create and update. Strings, so that a bad
/// value is reported naming the flag and value with the units Docker takes.
#[derive(Debug, Args, Clone, Default)]
pub struct ResourceFlags {
    /// CPUs reserved for each pod on its node (e.g. 0.5); the scheduler places a pod only where it fits (0 = none)
    #[arg(long = "reserve-cpu")]
    pub reserve_cpu: Option<String>,
    /// Memory reserved for each pod on its node: bytes or b, k, m, g units (64M = 64 MiB; 0 = none)
    #[arg(long = "reserve-memory")]
    pub reserve_memory: Option<String>,
    /// CPUs each container may use at most (e.g. 1.5; 0 = unlimited)
    #[arg(long = "limit-cpu")]
    pub limit_cpu: Option<String>,
    /// Memory each container may use at most: bytes or b, k, m, g units (0 = unlimited)
    #[arg(long = "limit-memory")]
    pub limit_memory: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct UpdateArgs {
    /// Service name or id
    pub service: String,
    /// Image to run
    #[arg(long)]
    pub image: Option<String>,
    /// Add or change an environment variable (KEY=VALUE)
    #[arg(long = "env-add")]
    pub env_add: Vec<String>,
    /// Remove an environment variable (KEY)
    #[arg(long = "env-rm")]
    pub env_rm: Vec<String>,
    /// Add or change a service label (key=value)
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a service label
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Add or change a container label (key=value)
    #[arg(long = "container-label-add")]
    pub container_label_add: Vec<String>,
    /// Remove a container label
    #[arg(long = "container-label-rm")]
    pub container_label_rm: Vec<String>,
    /// Number of pods
    #[arg(long)]
    pub replicas: Option<u64>,
    /// Arguments of the command, as one string split on spaces (replaces the current ones)
    #[arg(long, allow_hyphen_values = true)]
    pub args: Option<String>,
    /// Time to wait between SIGTERM and SIGKILL
    #[arg(long)]
    pub stop_grace_period: Option<String>,
    /// Add a published port (same syntax as create's -p)
    #[arg(long = "publish-add")]
    pub publish_add: Vec<String>,
    /// Remove a published port (its published port number)
    #[arg(long = "publish-rm")]
    pub publish_rm: Vec<u32>,
    #[arg(long)]
    pub health_cmd: Option<String>,
    #[arg(long)]
    pub health_interval: Option<String>,
    #[arg(long)]
    pub health_timeout: Option<String>,
    #[arg(long)]
    pub health_retries: Option<u32>,
    #[arg(long)]
    pub health_start_period: Option<String>,
    #[arg(long, conflicts_with = "health_cmd")]
    pub no_healthcheck: bool,
    /// Add or replace a secret (same syntax as create's --secret)
    #[arg(long = "secret-add")]
    pub secret_add: Vec<String>,
    /// Remove a secret (its name)
    #[arg(long = "secret-rm")]
    pub secret_rm: Vec<String>,
    /// Add or replace a config (same syntax as create's --config)
    #[arg(long = "config-add")]
    pub config_add: Vec<String>,
    /// Remove a config (its name)
    #[arg(long = "config-rm")]
    pub config_rm: Vec<String>,
    /// Add a placement constraint (e.g. node.labels.zone==a)
    #[arg(long = "constraint-add")]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint (as it was added)
    #[arg(long = "constraint-rm")]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference (spread=node.labels.NAME), after the current ones
    #[arg(long = "placement-pref-add")]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference (spread=node.labels.NAME)
    #[arg(long = "placement-pref-rm")]
    pub placement_pref_rm: Vec<String>,
    /// Maximum pods per node (0 = unlimited)
    #[arg(long = "replicas-max-per-node")]
    pub replicas_max_per_node: Option<u64>,
    #[command(flatten)]
    pub resources: ResourceFlags,
    #[command(flatten)]
    pub update: RolloutFlags,
    #[command(flatten)]
    pub rollback: RollbackFlags,
    /// Roll the pods even if nothing changed
    #[arg(long)]
    pub force: bool,
    /// Exit immediately instead of waiting for the rollout
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args, Clone)]
pub struct RollbackArgs {
    pub service: String,
    /// Exit immediately instead of waiting for the rollback
    #[arg(short, long)]
    pub detach: bool,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until the current rollout ends; the exit code says how it ended
    Status(RolloutTarget),
    /// List the kept revisions
    History(RolloutTarget),
    /// Roll back to the previous revision, or to --to-revision N
    Undo(UndoArgs),
    /// Pause the current rollout
    Pause(RolloutTarget),
    /// Resume a paused rollout
    Resume(RolloutTarget),
}

#[derive(Debug, Args, Clone)]
pub struct RolloutTarget {
    pub service: String,
}

#[derive(Debug, Args, Clone)]
pub struct UndoArgs {
    pub service: String,
    /// The revision to roll to (default: the previous one)
    #[arg(long, default_value_t = 0)]
    pub to_revision: u64,
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "deploy", alias = "deployment")]
    Deployments,
    #[value(alias = "rs", alias = "replicaset")]
    Replicasets,
    #[value(alias = "po", alias = "pod")]
    Pods,
    #[value(alias = "svc", alias = "service")]
    Services,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetOutput {
    Wide,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct GetArgs {
    #[arg(value_enum)]
    pub kind: Kind,
    /// Only this object: a service (deployment) name or id; for pods also a pod name (web.1 or web.1.<id>)
    pub name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum)]
    pub output: Option<GetOutput>,
}

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Service name
    #[arg(long)]
    pub name: String,
    /// Number of pods (replicated mode; default 1)
    #[arg(long)]
    pub replicas: Option<u64>,
    /// replicated, or global: one pod on every eligible node
    #[arg(long, default_value = "replicated")]
    pub mode: String,
    /// Publish a port: PUBLISHED:TARGET[/PROTO], or mode=host,published=P,target=T[,protocol=tcp]
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Attach a file system: type=volume|bind|tmpfs,source=S,target=/path[,readonly][,tmpfs-size=64M]
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Service label (key=value)
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Container label (key=value)
    #[arg(long = "container-label")]
    pub container_labels: Vec<String>,
    /// Placement constraint (e.g. node.labels.zone==a)
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,
    /// Placement preference: spread=node.labels.NAME spreads pods evenly over the label's values (repeat to nest)
    #[arg(long = "placement-pref")]
    pub placement_prefs: Vec<String>,
    /// Maximum pods per node (0 = unlimited)
    #[arg(long = "replicas-max-per-node", default_value_t = 0)]
    pub replicas_max_per_node: u64,
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// Time to wait between SIGTERM and SIGKILL
    #[arg(long, default_value_t = d::format_duration_ms(d::STOP_GRACE_PERIOD_MS))]
    pub stop_grace_period: String,
    /// Restart when: any, on-failure or none
    #[arg(long, default_value = d::RESTART_CONDITION)]
    pub restart_condition: String,
    /// Delay between restart attempts
    #[arg(long, default_value_t = d::format_duration_ms(d::RESTART_DELAY_MS))]
    pub restart_delay: String,
    /// Maximum number of restarts before giving up (0 = unlimited)
    #[arg(long, default_value_t = d::RESTART_MAX_ATTEMPTS)]
    pub restart_max_attempts: u64,
    /// Window used to evaluate the restart policy (0s = unbounded)
    #[arg(long, default_value_t = d::format_duration_ms(d::RESTART_WINDOW_MS))]
    pub restart_window: String,
    /// Command to run to check health (run by /bin/sh in the container)
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between health checks
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Maximum time a health check may run
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Consecutive failures before unhealthy
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Start period during which failures do not count
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Disable any healthcheck, including the image's
    #[arg(long, conflicts_with = "health_cmd")]
    pub no_healthcheck: bool,
    /// Username or UID
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Container hostname
    #[arg(long)]
    pub hostname: Option<String>,
    /// How the service's name resolves: vip or dnsrr (headless)
    #[arg(long, default_value = d::ENDPOINT_MODE)]
    pub endpoint_mode: String,
    /// ClusterIP, NodePort, LoadBalancer or ExternalName (default: NodePort when a port is published, else ClusterIP; LoadBalancer and ExternalName are not routed yet)
    #[arg(long = "type")]
    pub service_type: Option<String>,
    /// The DNS name an ExternalName service stands for (requires --type ExternalName)
    #[arg(long)]
    pub external_name: Option<String>,
    /// Give the containers a secret: NAME, or source=NAME[,target=T][,uid=0][,gid=0][,mode=0444]
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Give the containers a config: NAME, or source=NAME[,target=/path][,uid=0][,gid=0][,mode=0444]
    #[arg(long = "config")]
    pub configs: Vec<String>,
    /// Exit immediately instead of waiting for the service to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Suppress progress output
    #[arg(short, long)]
    pub quiet: bool,
    /// Image to run (none for --type ExternalName)
    #[arg(required_unless_present = "external_name")]
    pub image: Option<String>,
    /// Command and arguments (replace the image's entrypoint and command)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct PsArgs {
    /// Service names or ids
    #[arg(required = true)]
    pub services: Vec<String>,
    #[command(flatten)]
    pub pods: PodListArgs,
}

/// How `service ps` and `node ps` list pods.
#[derive(Debug, Args, Clone, Default)]
pub struct PodListArgs {
    #[command(flatten)]
    pub list: ListArgs,
    /// Do not show replaced pods
    #[arg(long)]
    pub no_history: bool,
    /// Do not truncate errors
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args, Clone)]
pub struct ScaleArgs {
    /// SERVICE=REPLICAS
    #[arg(required = true)]
    pub scales: Vec<String>,
    /// Exit immediately instead of waiting for the services to converge
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Debug, Args, Clone)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub services: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct LogsArgs {
    pub service: String,
    /// Follow log output, including pods started later
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of each pod's logs (default all)
    #[arg(short = 'n', long)]
    pub tail: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct RmArgs {
    #[arg(required = true)]
    pub services: Vec<String>,
}

/// `shoal secret ...` and `shoal config ...`.
#[derive(Debug, Subcommand)]
pub enum FileObjectCommand {
    /// Create one from a file, or from standard input with -
    Create(FileObjectCreateArgs),
    /// List them
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display details as JSON (a secret's data is never shown)
    Inspect(FileObjectNamesArgs),
    /// Remove one or more (refused while a service uses it)
    #[command(alias = "remove")]
    Rm(FileObjectNamesArgs),
}

#[derive(Debug, Args, Clone)]
pub struct FileObjectCreateArgs {
    /// Label (key=value)
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Name
    pub name: String,
    /// File with the content, or - to read standard input
    pub file: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct FileObjectNamesArgs {
    /// Names or ids
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display a node's details as JSON
    Inspect(NodeArgs),
    /// List the pods on nodes (the current node's when none is given), with their history
    Ps(NodePsArgs),
    /// Make workers managers
    Promote(NodesArgs),
    /// Make managers workers (refused when it would cost the managers their quorum)
    Demote(NodesArgs),
    /// Change a node's availability or labels
    Update(NodeUpdateArgs),
    /// Remove nodes from the cluster (they are refused from then on)
    #[command(alias = "remove")]
    Rm(NodeRmArgs),
}

#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// Node id, id prefix or hostname
    pub node: String,
}

#[derive(Debug, Args, Clone)]
pub struct NodePsArgs {
    /// Node ids, id prefixes or hostnames (default: this node)
    pub nodes: Vec<String>,
    #[command(flatten)]
    pub pods: PodListArgs,
}

#[derive(Debug, Args, Clone)]
pub struct NodesArgs {
    /// Node ids, id prefixes or hostnames
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

/// Node availability, as Swarm's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Availability {
    Active,
    Pause,
    Drain,
}

#[derive(Debug, Args, Clone)]
pub struct NodeUpdateArgs {
    /// active, pause (no new pods) or drain (its pods move elsewhere)
    #[arg(long, value_enum)]
    pub availability: Option<Availability>,
    /// Add or update a node label (key=value)
    #[arg(long = "label-add")]
    pub label_add: Vec<String>,
    /// Remove a node label
    #[arg(long = "label-rm")]
    pub label_rm: Vec<String>,
    /// Node id, id prefix or hostname
    pub node: String,
}

#[derive(Debug, Args, Clone)]
pub struct NodeRmArgs {
    /// Remove a node that still looks alive
    #[arg(short, long)]
    pub force: bool,
    /// Node ids, id prefixes or hostnames
    #[arg(required = true)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Print the final merged, interpolated stack file (no daemon needed)
    Config(StackConfigArgs),
    /// Deploy a new stack or update an existing one
    #[command(alias = "up")]
    Deploy(StackDeployArgs),
    /// List stacks
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List the services of a stack
    Services(StackNameArgs),
    /// List the pods of a stack
    Ps(StackNameArgs),
    /// Remove one or more stacks
    #[command(alias = "remove", alias = "down")]
    Rm(StackRmArgs),
}

#[derive(Debug, Args, Clone)]
pub struct StackDeployArgs {
    /// Stack (compose) file; repeat to merge overrides in order
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub compose_file: Vec<PathBuf>,
    /// Remove services that are no longer in the file
    #[arg(long)]
    pub prune: bool,
    /// Exit immediately instead of waiting for the services to converge
    #[arg(short, long)]
    pub detach: bool,
    /// Stack name
    pub name: String,
}

#[derive(Debug, Args, Clone)]
pub struct StackNameArgs {
    pub name: String,
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Debug, Args, Clone)]
pub struct StackRmArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args, Clone)]
pub struct StackConfigArgs {
    /// Stack (compose) file; repeat to merge overrides in order
    #[arg(short = 'c', long = "compose-file", required = true)]
    pub compose_file: Vec<PathBuf>,
}
