//! Reaching the daemon: the Control API over the local Unix socket
//! (`unix:///path`, authorized by the socket file's permissions), or over
//! mutual TLS on a manager's cluster port (`tcp://HOST:PORT` with
//! `--tls-dir`, a client certificate from `shoal ca client-cert`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use shoal_manager::ca::{tls, CaError, NodeCredentials};
use shoal_proto::control_client::ControlClient;
use shoal_proto::defaults as d;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

pub type Client = ControlClient<Channel>;

/// The daemon address: -H, else $SHOAL_HOST, else the default socket.
pub fn host_or_default(host: Option<&str>) -> String {
    host.map(str::to_string)
        .unwrap_or_else(|| format!("unix://{}", d::SOCKET_PATH))
}

/// Where the client commands go: the address (-H) and, for a tcp:// one,
/// the client certificate directory (--tls-dir). Shown as its address.
#[derive(Debug, Clone)]
pub struct Host {
    addr: String,
    tls_dir: Option<PathBuf>,
}

impl Host {
    pub fn new(host: Option<&str>, tls_dir: Option<PathBuf>) -> Host {
        Host {
            addr: host_or_default(host),
            tls_dir,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// A bare address is a host without a certificate directory: what the
/// daemon's own start-up (`shoal init`, `shoal daemon`) dials on its socket.
impl From<&str> for Host {
    fn from(addr: &str) -> Host {
        Host::new(Some(addr), None)
    }
}

impl From<&Host> for Host {
    fn from(host: &Host) -> Host {
        host.clone()
    }
}

/// How an address is reached.
enum Transport<'a> {
    Unix(PathBuf),
    /// host:port of a manager's cluster port.
    Tls(&'a str),
}

fn transport(host: &str) -> Result<Transport<'_>> {
    if let Some(p) = host.strip_prefix("unix://").filter(|p| !p.is_empty()) {
        return Ok(Transport::Unix(PathBuf::from(p)));
    }
    if let Some(addr) = host.strip_prefix("tcp://") {
        let port = addr.rsplit_once(':').map(|(_, port)| port);
        if addr.starts_with(':') || port.and_then(|p| p.parse::<u16>().ok()).is_none() {
            bail!(
                "-H {host:?}: expected tcp://HOST:PORT, a manager's cluster port (default \
                 port {})",
                d::CLUSTER_PORT
            );
        }
        return Ok(Transport::Tls(addr));
    }
    bail!(
        "unsupported daemon address {host:?}: use unix:///path/to/shoal.sock (the local \
         daemon), or tcp://HOST:PORT (a manager's cluster port) with --tls-dir DIR"
    )
}

fn unreachable(host: &str) -> anyhow::Error {
    anyhow!("cannot reach the shoal daemon at {host}: is it running? start it with shoal init or shoal daemon")
}

/// Connects to the daemon, failing with a message that says what to do.
pub async fn connect(host: impl Into<Host>) -> Result<Client> {
    let host = host.into();
    let channel = match transport(&host.addr)? {
        Transport::Unix(path) => unix_channel(&host, path).await?,
        Transport::Tls(addr) => tls_channel(&host, addr).await?,
    };
    Ok(ControlClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

async fn unix_channel(host: &Host, path: PathBuf) -> Result<Channel> {
    let unreachable = || match host.tls_dir {
        // SHOAL_TLS_DIR set, -H forgotten: say what --tls-dir is for.
        Some(_) => anyhow!(
            "{} (--tls-dir is used only with -H tcp://HOST:PORT)",
            unreachable(&host.addr)
        ),
        None => unreachable(&host.addr),
    };
    if !path.exists() {
        return Err(unreachable());
    }
    // The URI is required by tonic but unused: the connector dials the socket.
    Endpoint::try_from("http://shoal.sock")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|_| unreachable())
}

/// Dials `addr` presenting the client certificate in --tls-dir and trusting
/// only the CA next to it: a server of another cluster is refused here.
async fn tls_channel(host: &Host, addr: &str) -> Result<Channel> {
    let Some(dir) = &host.tls_dir else {
        bail!(
            "{host} needs a client certificate: run `shoal ca client-cert --out DIR` on a \
             manager, then use --tls-dir DIR (or SHOAL_TLS_DIR=DIR)"
        );
    };
    let creds = load_credentials(dir)?;
    let config = tls::client_config(&creds).with_context(|| {
        format!(
            "cannot use the client certificate in --tls-dir {}",
            dir.display()
        )
    })?;
    tls::connect(addr, config)
        .await
        .map_err(|e| connect_error(addr, dir, e))
}

fn load_credentials(dir: &Path) -> Result<NodeCredentials> {
    // The error's text, not a chain: CaError repeats its io source.
    let creds = NodeCredentials::load(dir).map_err(|e| {
        anyhow!(
            "cannot use the client certificate in --tls-dir {} (written by `shoal ca \
             client-cert --out DIR`): {e}",
            dir.display()
        )
    })?;
    let not_after = creds.validity()?.not_after;
    if let Err(e) = not_after.duration_since(SystemTime::now()) {
        bail!(
            "the client certificate in --tls-dir {} expired {} days ago: get a new one with \
             `shoal ca client-cert --out DIR` on a manager",
            dir.display(),
            e.duration().as_secs() / 86_400
        );
    }
    Ok(creds)
}

/// Why the TLS connection to a manager failed, in the user's terms.
fn connect_error(addr: &str, dir: &Path, err: CaError) -> anyhow::Error {
    let reason = match &err {
        CaError::Connect { reason, .. } => reason.as_str(),
        _ => return anyhow!(err),
    };
    if reason.contains("invalid peer certificate") {
        return anyhow!(
            "the server at {addr} is not a manager of the cluster whose CA is {} \
             ({reason}): check the address, or use a --tls-dir made by that server's cluster",
            dir.join("ca.pem").display()
        );
    }
    if reason.contains("alert") {
        return refused(addr, dir, reason);
    }
    if reason.contains("corrupt message") {
        return anyhow!(
            "the server at {addr} does not speak TLS ({reason}): it is not a shoal manager's \
             cluster port, or runs a shoal from before mutual TLS"
        );
    }
    anyhow!(
        "cannot reach the manager at {addr}: {reason}; check the address, and that the \
         manager serves its cluster port there (`shoal info` on it: Listen address)"
    )
}

/// A manager that closed the TLS connection on our certificate: in TLS 1.3
/// the client finishes its handshake first, so this shows on the first call.
fn refused(addr: &str, dir: &Path, reason: &str) -> anyhow::Error {
    anyhow!(
        "the manager at {addr} refused the client certificate in --tls-dir {} ({reason}): \
         it takes only certificates of its own cluster's CA that are valid by its clock \
         (compare both machines' clocks); get a new one with `shoal ca client-cert --out \
         DIR` on a manager of that cluster",
        dir.display()
    )
}

/// A refusal the managers give while they elect a leader or move
/// leadership (not a broken connection to the daemon): worth retrying.
pub fn transient(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && std::error::Error::source(status).is_none()
        && !status.message().starts_with("transport error")
        && !status.message().starts_with("h2 protocol error")
}

/// A gRPC error as the user should read it: the server's message, or the
/// unreachable-daemon hint when the connection itself failed.
pub fn api_error(host: impl Into<Host>, status: tonic::Status) -> anyhow::Error {
    let host = host.into();
    // A status with a local cause (tonic's transport, hyper) never reached
    // the server's handler: the connection broke or was cut.
    let broken = std::error::Error::source(&status).is_some()
        || status.message().starts_with("transport error")
        || status.message().starts_with("h2 protocol error");
    match (&host.tls_dir, transport(&host.addr)) {
        (Some(dir), Ok(Transport::Tls(addr))) => match status.code() {
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => anyhow!(
                "the manager at {addr} refused the call: {}",
                status.message()
            ),
            _ if broken => broken_connection(addr, dir, &status),
            _ => anyhow!("{}", status.message()),
        },
        _ if status.code() == tonic::Code::Unavailable && broken => unreachable(&host.addr),
        _ => anyhow!("{}", status.message()),
    }
}

/// A TLS connection that broke during a call. A manager that rejects our
/// certificate in its handshake sends an alert and closes; we often write
/// the request before reading the alert, and then see only a broken pipe.
/// So without the alert the certificate is named as the likely cause, not
/// the certain one (a manager that stops mid-call breaks it too).
fn broken_connection(addr: &str, dir: &Path, status: &tonic::Status) -> anyhow::Error {
    // The causes only: a Status's own text repeats them in Debug form.
    let detail = std::error::Error::source(status)
        .map(tls::error_chain)
        .unwrap_or_else(|| status.message().to_string());
    if detail.contains("alert") {
        return refused(addr, dir, &detail);
    }
    anyhow!(
        "the manager at {addr} closed the connection ({detail}); if it does so on every \
         command, it refused the client certificate in --tls-dir {}, most likely as not \
         valid by its clock (compare both machines' clocks); get a new one with `shoal ca \
         client-cert --out DIR` on a manager of that cluster",
        dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_unix_sockets_or_tcp_host_ports_and_others_are_refused_clearly() {
        assert!(matches!(
            transport("unix:///run/x.sock").unwrap(),
            Transport::Unix(p) if p == Path::new("/run/x.sock")
        ));
        assert!(matches!(
            transport("tcp://10.0.0.1:2377").unwrap(),
            Transport::Tls("10.0.0.1:2377")
        ));
        assert!(matches!(
            transport("tcp://[::1]:2377").unwrap(),
            Transport::Tls("[::1]:2377")
        ));
        for bad in ["tcp://10.0.0.1", "tcp://:2377", "tcp://h:port", "tcp://"] {
            let err = transport(bad).err().unwrap().to_string();
            assert!(err.contains("expected tcp://HOST:PORT"), "{bad}: {err}");
        }
        for bad in ["unix://", "http://h:1", "/run/x.sock"] {
            let err = transport(bad).err().unwrap().to_string();
            assert!(err.contains("unsupported daemon address"), "{bad}: {err}");
            assert!(err.contains("tcp://HOST:PORT"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn tcp_without_tls_dir_says_how_to_get_a_client_certificate() {
        let err = connect(&Host::new(Some("tcp://127.0.0.1:1"), None))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("needs a client certificate"), "{err}");
        assert!(err.contains("shoal ca client-cert --out DIR"), "{err}");
        assert!(err.contains("--tls-dir DIR"), "{err}");
    }

    #[tokio::test]
    async fn an_unreadable_tls_dir_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let host = Host::new(Some("tcp://127.0.0.1:1"), Some(dir.path().to_path_buf()));
        let err = format!("{:#}", connect(&host).await.err().unwrap());
        assert!(err.contains("--tls-dir"), "{err}");
        assert!(
            err.contains(&dir.path().join("cert.pem").display().to_string()),
            "{err}"
        );
    }
}
