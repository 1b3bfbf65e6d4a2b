//! Every default in one place (like SwarmKit's api/defaults): the managers,
//! the workers and the CLI's help text all read these, so they cannot drift.
//! Durations are in milliseconds, as the object model stores them.

/// Default Unix socket the daemon serves the CLI on.
pub const SOCKET_PATH: &str = "/run/shoal/shoal.sock";
/// Data directory when running as root; otherwise `$XDG_DATA_HOME/shoal`.
pub const DATA_DIR_ROOT: &str = "/var/lib/shoal";
/// Cluster gRPC listen address. Loopback only until cluster traffic is
/// mutually authenticated with TLS (multi-host support).
pub const LISTEN_ADDR: &str = "127.0.0.1:2377";
/// Response header naming the leader's cluster address when a manager that
/// does not lead refuses a dispatcher call, so the node goes there directly.
pub const LEADER_METADATA: &str = "shoal-leader";
/// Cluster gRPC port, as Swarm's.
pub const CLUSTER_PORT: u16 = 2377;
/// Environment variable naming the daemon a client talks to.
pub const HOST_ENV: &str = "SHOAL_HOST";
/// Environment variable naming the client credentials directory a remote
/// client (`-H tcp://HOST:PORT`) presents (`--tls-dir`).
pub const TLS_DIR_ENV: &str = "SHOAL_TLS_DIR";

/// Docker bridge network pods attach to when their template names none.
pub const POD_NETWORK: &str = "shoal";

/// Replicas of a replicated service when none are given.
pub const REPLICAS: u64 = 1;
/// How a service's name resolves when none is given (Swarm's default).
pub const ENDPOINT_MODE: &str = "vip";
/// Time a container gets between SIGTERM and SIGKILL (Swarm: 10 s).
pub const STOP_GRACE_PERIOD_MS: u64 = 10_000;

/// Restart policy (Swarm's defaults: any, 5 s, unlimited, unbounded window).
pub const RESTART_CONDITION: &str = "any";
pub const RESTART_DELAY_MS: u64 = 5_000;
pub const RESTART_MAX_ATTEMPTS: u64 = 0;
pub const RESTART_WINDOW_MS: u64 = 0;

/// Dead pods kept per slot (Swarm's task history retention limit).
pub const POD_HISTORY_LIMIT: u64 = 5;
/// Revisions (ReplicaSets) kept per deployment.
pub const REVISION_HISTORY_LIMIT: u64 = 10;

/// Rolling update settings (Swarm's defaults).
pub const UPDATE_PARALLELISM: u64 = 1;
pub const UPDATE_DELAY_MS: u64 = 0;
pub const UPDATE_MONITOR_MS: u64 = 5_000;
pub const UPDATE_FAILURE_ACTION: &str = "pause";
pub const UPDATE_MAX_FAILURE_RATIO: f32 = 0.0;
pub const UPDATE_ORDER: &str = "stop-first";
pub const ROLLBACK_FAILURE_ACTION: &str = "pause";

/// Healthcheck timing when --health-cmd is given without the others
/// (Docker's defaults: 30 s, 30 s, 3 retries, 0 s start period).
pub const HEALTH_INTERVAL_MS: u64 = 30_000;
pub const HEALTH_TIMEOUT_MS: u64 = 30_000;
pub const HEALTH_RETRIES: u32 = 3;
pub const HEALTH_START_PERIOD_MS: u64 = 0;

/// Worker heartbeat period handed out by the dispatcher, up to
/// [`MAX_HEARTBEATS_PER_S`] nodes per second of it (see
/// [`heartbeat_period_ms`]).
pub const HEARTBEAT_PERIOD_MS: u64 = 1_000;
/// Most heartbeats per second the leader asks of the whole cluster: past
/// this many nodes the period grows with them, as Nomad caps heartbeats
/// per second (its `max_heartbeats_per_second`). 1,000 nodes beat every
/// second, 5,000 every 5 s (Swarm's own period at any size). A node that
/// dies is still seen at once by its closed session
/// ([`SESSION_CLOSED_GRACE_MS`]); only a silent one waits the longer
/// expiry.
pub const MAX_HEARTBEATS_PER_S: u64 = 1_000;

/// The heartbeat period for a cluster of `nodes` nodes: never shorter than
/// [`HEARTBEAT_PERIOD_MS`], and long enough that all of them together beat
/// at most [`MAX_HEARTBEATS_PER_S`] times a second.
pub fn heartbeat_period_ms(nodes: usize) -> u64 {
    HEARTBEAT_PERIOD_MS.max((nodes as u64).saturating_mul(1_000) / MAX_HEARTBEATS_PER_S)
}
/// Missed heartbeat periods before a node is marked down.
pub const HEARTBEAT_MISSES_BEFORE_DOWN: u64 = 5;
/// How often the leader looks for nodes whose heartbeats stopped: a
/// fraction of the period, so a dead node is marked Down close to the
/// expiry rather than up to a period after it.
pub const NODE_MONITOR_TICK_MS: u64 = 250;
/// A node without heartbeats that gossip still hears is Disconnected, not
/// Down (a one-way loss between it and the leader); past this it is marked
/// Down anyway: its pods then run elsewhere.
pub const DISCONNECTED_MAX_MS: u64 = 60_000;
/// A node whose session was closed from its side (the connection ended: its
/// process or its host is gone, it did not merely fall silent), that did
/// not say it was stopping, and that gossip no longer hears is Down after
/// this instead of the heartbeat expiry. Long enough for a daemon killed
/// and started again at once to open a new session first; gossip takes
/// about as long to lose a node (see the worker's membership module).
pub const SESSION_CLOSED_GRACE_MS: u64 = 2_500;
/// The gossip port (UDP), as Swarm's, so firewall rules carry over.
pub const GOSSIP_PORT: u16 = 7946;
/// How often the leader replaces the gossip key (Swarm: 12 h).
pub const GOSSIP_KEY_ROTATION_MS: u64 = 12 * 3600 * 1000;
/// How long a gossip key rotation waits at each step for every ready node
/// to hold the keyring before it goes on without the stragglers (they only
/// drop out of gossip, which is a hint; sessions decide Down).
pub const GOSSIP_KEY_STEP_WAIT_MS: u64 = 30_000;
/// How often a worker reconciles its containers with its assignments even
/// without a change (catches containers removed behind shoal's back).
pub const WORKER_RECONCILE_MS: u64 = 1_000;

/// Raft timing: heartbeat and election timeout range. openraft 0.9 starts
/// an election only after its leader lease (the maximum timeout) plus a
/// random timeout in the range without a heartbeat, so a failover takes
/// 0.75-1 s of silence here; heartbeats every 75 ms leave ten of them per
/// lease, so a loaded machine does not call spurious elections.
pub const RAFT_HEARTBEAT_MS: u64 = 75;
pub const RAFT_ELECTION_TIMEOUT_MIN_MS: u64 = 250;
pub const RAFT_ELECTION_TIMEOUT_MAX_MS: u64 = 500;
/// Log entries since the last snapshot that trigger a new one.
pub const RAFT_SNAPSHOT_LOGS_SINCE_LAST: u64 = 5_000;
/// How long a Control API write waits for Raft to commit it (and a
/// linearizable read for the leader to confirm it still leads) before the
/// client gets "no quorum". A leader that lost its quorum keeps believing it
/// leads, and a proposal there would otherwise wait until the managers come
/// back. Long enough for an election and a slow fsync, short enough for an
/// operator at a terminal.
pub const QUORUM_WAIT_MS: u64 = 10_000;
/// `shoal init --force-new-cluster` moves the old Raft directory aside as
/// `raft.old-<unix seconds>` in the data dir; it is never deleted.
pub const RAFT_OLD_DIR_PREFIX: &str = "raft.old-";

/// `service create` / `scale` wait at most this long to converge.
pub const CONVERGE_TIMEOUT_MS: u64 = 120_000;

/// Largest secret (Docker's limit: 500 KiB).
pub const SECRET_MAX_BYTES: usize = 500 * 1024;
/// Largest config (Docker's limit: 1000 KiB).
pub const CONFIG_MAX_BYTES: usize = 1000 * 1024;
/// Mode of a secret or config file in a container when none is given
/// (Docker's: world-readable, read-only).
pub const FILE_MODE: u32 = 0o444;
/// Directory in a container where secrets appear (`/run/secrets/<target>`).
pub const SECRETS_MOUNT_DIR: &str = "/run/secrets";
/// Where a worker writes the secret and config files of its pods, one
/// directory per node and pod; it must be a tmpfs, and the worker mounts
/// one there when it is not (see docs/DECISIONS.md).
pub const POD_FILES_DIR: &str = "/run/shoal/pods";
/// The cluster key's file in the data dir (mode 0600).
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// The cluster's root CA in a manager's data dir (`ca.crt`, and `ca.key`
/// mode 0600: never leaves the managers).
pub const CA_DIR: &str = "ca";
/// This node's own credentials in the data dir (`cert.pem`, `key.pem` mode
/// 0600, `ca.pem`: Docker's `--tlsverify` layout).
pub const NODE_TLS_DIR: &str = "tls";
/// The epoch a new cluster starts in (raised by `--force-new-cluster`).
pub const FIRST_CLUSTER_EPOCH: u64 = 1;
/// Validity of the cluster's root CA certificate (20 years, as Swarm's).
pub const CA_CERT_VALIDITY_MS: u64 = 20 * 365 * 24 * 3_600_000;
/// Validity of node and client certificates (90 days, as Swarm's). A node
/// renews its certificate when less than [`CERT_RENEW_FRACTION_LEFT`] of the
/// validity is left.
pub const NODE_CERT_VALIDITY_MS: u64 = 90 * 24 * 3_600_000;
/// Environment variable that shortens the node certificates a manager
/// issues (seconds), for tests and for operators who want short-lived
/// certificates; unset, [`NODE_CERT_VALIDITY_MS`] holds.
pub const NODE_CERT_VALIDITY_ENV: &str = "SHOAL_NODE_CERT_VALIDITY_SECS";

/// The validity of the node certificates this process issues.
pub fn node_cert_validity() -> std::time::Duration {
    std::env::var(NODE_CERT_VALIDITY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|secs| *secs > 0)
        .map(std::time::Duration::from_secs)
        .unwrap_or(std::time::Duration::from_millis(NODE_CERT_VALIDITY_MS))
}
/// Validity of a client certificate (`shoal ca client-cert`): 90 days, as a
/// node's. Clients do not renew: an operator issues a new one, so an
/// unattended copy stops working by itself.
pub const CLIENT_CERT_VALIDITY_MS: u64 = 90 * 24 * 3_600_000;
/// Renew a certificate when less than 1/N of its validity is left (N = 3).
pub const CERT_RENEW_FRACTION_LEFT: u32 = 3;
/// Server name every manager certificate carries (as a DNS SAN) and every
/// client asks for: managers are reached by IP or by any host name, so the
/// pinned CA plus this name is what proves "a manager of this cluster".
pub const MANAGER_SERVER_NAME: &str = "shoal-manager";

/// Container labels shoal puts on every container it creates.
pub mod labels {
    pub const POD_ID: &str = "io.shoal.pod.id";
    pub const POD_NAME: &str = "io.shoal.pod.name";
    pub const DEPLOYMENT_ID: &str = "io.shoal.deployment.id";
    pub const SERVICE_NAME: &str = "io.shoal.service.name";
    pub const NODE_ID: &str = "io.shoal.node.id";
    pub const SLOT: &str = "io.shoal.slot";
    pub const STACK: &str = "io.shoal.stack.namespace";
}

/// Current format numbers of the versioned Raft payloads.
pub const BATCH_FORMAT: u32 = 1;
pub const ENTRY_FORMAT: u32 = 1;
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Formats a millisecond duration the way the CLI accepts it ("1s", "2m30s",
/// "500ms"), for help text and tables.
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = ms / 1000;
    let mut out = String::new();
    let h = s / 3600;
    s %= 3600;
    let m = s / 60;
    s %= 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_the_cli_parses_them() {
        assert_eq!(format_duration_ms(0), "0s");
        assert_eq!(format_duration_ms(500), "500ms");
        assert_eq!(format_duration_ms(5_000), "5s");
        assert_eq!(format_duration_ms(150_000), "2m30s");
        assert_eq!(format_duration_ms(3_600_000), "1h");
    }

    #[test]
    fn the_heartbeat_period_grows_past_the_cap_of_heartbeats_per_second() {
        assert_eq!(heartbeat_period_ms(0), HEARTBEAT_PERIOD_MS);
        assert_eq!(heartbeat_period_ms(1_000), 1_000);
        assert_eq!(heartbeat_period_ms(2_000), 2_000);
        assert_eq!(heartbeat_period_ms(5_000), 5_000);
        assert_eq!(
            heartbeat_period_ms(usize::MAX),
            u64::MAX / MAX_HEARTBEATS_PER_S
        );
    }
}
