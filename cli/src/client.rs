//! Reaching the daemon: the Control API over the local Unix socket.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use hyper_util::rt::TokioIo;
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

fn socket_path(host: &str) -> Result<PathBuf> {
    match host.strip_prefix("unix://") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => bail!(
            "unsupported daemon address {host:?}: use unix:///path/to/shoal.sock (remote tcp:// access arrives with mutual TLS)"
        ),
    }
}

fn unreachable(host: &str) -> anyhow::Error {
    anyhow!("cannot reach the shoal daemon at {host}: is it running? start it with shoal init or shoal daemon")
}

/// Connects to the daemon, failing with a message that says what to do.
pub async fn connect(host: &str) -> Result<Client> {
    let path = socket_path(host)?;
    if !path.exists() {
        return Err(unreachable(host));
    }
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://shoal.sock")?
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .map_err(|_| unreachable(host))?;
    Ok(ControlClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// A gRPC error as the user should read it: the server's message, or the
/// unreachable-daemon hint when the connection itself failed.
pub fn api_error(host: &str, status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::Unavailable && status.message().contains("transport") {
        return unreachable(host);
    }
    anyhow!("{}", status.message())
}
