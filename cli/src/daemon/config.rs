//! What a node remembers about itself between restarts (`node.json` in the
//! data dir), and where things live.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shoal_proto::defaults as d;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeConfig {
    pub node_id: String,
    pub raft_id: u64,
    pub cluster_id: String,
    pub listen_addr: String,
    /// host:port other nodes reach this node's cluster gRPC at.
    pub advertise_addr: String,
    pub pod_network: String,
    pub pod_network_internal: bool,
    /// The managers' cluster addresses, as this node last heard them (the
    /// join address at first): where it reports after a restart.
    #[serde(default)]
    pub managers: Vec<String>,
    /// The gossip port (UDP) on this node's addresses; 0: no gossip.
    #[serde(default = "default_gossip_port")]
    pub gossip_port: u16,
}

fn default_gossip_port() -> u16 {
    d::GOSSIP_PORT
}

const CONFIG_FILE: &str = "node.json";
pub const PID_FILE: &str = "shoal.pid";
pub const LOG_FILE: &str = "shoal.log";

/// The data dir: the flag, else /var/lib/shoal as root, else
/// $XDG_DATA_HOME/shoal (or ~/.local/share/shoal).
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from(d::DATA_DIR_ROOT);
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("shoal");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/shoal")
}

pub fn exists(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).exists()
}

pub fn load(dir: &Path) -> Result<NodeConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no node state in {}: this node is not part of a cluster (create one with shoal init)",
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid node state", path.display()))
}

/// Writes atomically (temp file + rename), so a crash never leaves half a file.
pub fn save(dir: &Path, cfg: &NodeConfig) -> Result<()> {
    let path = dir.join(CONFIG_FILE);
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(cfg)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Forgets the node's cluster state (after leave --force).
pub fn wipe(dir: &Path) -> Result<()> {
    for name in [
        CONFIG_FILE,
        "raft",
        d::CLUSTER_KEY_FILE,
        d::CA_DIR,
        d::NODE_TLS_DIR,
    ] {
        let p = dir.join(name);
        if p.is_dir() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("cannot remove {}", p.display()))?;
        } else if p.exists() {
            std::fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    Ok(())
}

/// Parses the cluster gRPC listen address (IP:PORT). Any address is
/// allowed: every connection to it is mutual TLS.
pub fn check_listen_addr(addr: &str) -> Result<std::net::SocketAddr> {
    addr.parse().with_context(|| {
        format!(
            "invalid --listen-addr {addr:?}: expected IP:PORT, e.g. {}",
            d::LISTEN_ADDR
        )
    })
}

/// Refuses a pod network no pod could run on (`host`, an internal default
/// bridge), before anything is written or detached.
pub fn check_pod_network(name: &str, internal: bool) -> Result<()> {
    shoal_worker::exec::docker::PodNetwork {
        name: name.to_string(),
        internal,
    }
    .check()?;
    Ok(())
}

/// The listen address when none is given: loopback for a node that
/// advertises a loopback address (the single-host default), every
/// interface otherwise (as Swarm's 0.0.0.0:2377), so that other hosts can
/// reach the address it advertises.
pub fn default_listen_addr(advertise: &str) -> String {
    let host = advertise
        .parse::<std::net::SocketAddr>()
        .map(|sa| sa.ip())
        .or_else(|_| advertise.parse::<std::net::IpAddr>());
    match host {
        Ok(ip) if !ip.is_loopback() => format!("0.0.0.0:{}", d::CLUSTER_PORT),
        _ => d::LISTEN_ADDR.to_string(),
    }
}

/// Joins an advertise address (IP or host, with or without port) with the
/// listen port.
pub fn advertise_with_port(advertise: &str, listen: &std::net::SocketAddr) -> String {
    if advertise.contains(':') && advertise.parse::<std::net::SocketAddr>().is_ok() {
        advertise.to_string()
    } else {
        format!("{advertise}:{}", listen.port())
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addr_is_any_ip_and_port_defaulting_by_the_advertise_address() {
        assert!(check_listen_addr("127.0.0.1:2377").is_ok());
        assert!(check_listen_addr("0.0.0.0:2377").is_ok());
        assert_eq!(default_listen_addr("127.0.0.1"), "127.0.0.1:2377");
        assert_eq!(default_listen_addr("10.213.0.11"), "0.0.0.0:2377");
        assert_eq!(default_listen_addr("10.213.0.11:2377"), "0.0.0.0:2377");
        assert!(check_listen_addr("nonsense")
            .unwrap_err()
            .to_string()
            .contains("--listen-addr"));
    }

    #[test]
    fn advertise_gets_the_listen_port() {
        let l: std::net::SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(advertise_with_port("127.0.0.1", &l), "127.0.0.1:4000");
        assert_eq!(advertise_with_port("127.0.0.2:5000", &l), "127.0.0.2:5000");
    }
}
