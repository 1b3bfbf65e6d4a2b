//! chitchat's [`Transport`] over UDP, every datagram sealed (see
//! [`super::sealed`]).
//!
//! chitchat hands the socket whole messages and expects whole messages back,
//! so the wrapping sits exactly at its `Transport`/`Socket` traits: chitchat
//! never sees a byte that did not pass the key, clock and replay checks, and
//! nothing it sends leaves the host in clear.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tracing::{debug, warn};

use super::keyring::Keyring;
use super::sealed::{Counters, Opener, Rejection, Sealer};

/// Opens sealed sockets that share one keyring and one set of counters.
pub(crate) struct SealedTransport {
    pub(crate) keyring: Arc<RwLock<Keyring>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) max_datagram_len: usize,
    pub(crate) max_age: Duration,
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        Ok(Box::new(self.open_sealed(listen_addr).await?))
    }
}

impl SealedTransport {
    /// [`Transport::open`] with the concrete type, for tests that need the
    /// bound address.
    pub(crate) async fn open_sealed(
        &self,
        listen_addr: SocketAddr,
    ) -> anyhow::Result<SealedSocket> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind the gossip socket {listen_addr}/udp: {e}"))?;
        Ok(SealedSocket {
            socket,
            keyring: self.keyring.clone(),
            counters: self.counters.clone(),
            sealer: Sealer::new(),
            opener: Opener::new(self.max_datagram_len, self.max_age),
            // One byte more than the largest datagram we accept: a read that
            // fills it was truncated by the kernel, hence oversized.
            recv_buf: vec![0; self.max_datagram_len + 1],
            max_datagram_len: self.max_datagram_len,
        })
    }
}

pub(crate) struct SealedSocket {
    socket: tokio::net::UdpSocket,
    keyring: Arc<RwLock<Keyring>>,
    counters: Arc<Counters>,
    sealer: Sealer,
    opener: Opener,
    recv_buf: Vec<u8>,
    max_datagram_len: usize,
}

impl SealedSocket {
    #[cfg(test)]
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound UDP socket has an address")
    }
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

#[async_trait]
impl Socket for SealedSocket {
    /// Seals and sends; a message too large to fit a datagram once sealed is
    /// dropped and counted, not an error: chitchat would only log it every
    /// round, and shoal keeps working on dispatcher sessions alone.
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        let plain = msg.serialize_to_vec();
        let sealed = {
            let keyring = self.keyring.read().unwrap_or_else(|p| p.into_inner());
            self.sealer.seal(&keyring, &plain)
        };
        if sealed.len() > self.max_datagram_len {
            if self.counters.send_oversized() == 0 {
                warn!(
                    sealed_len = sealed.len(),
                    max_datagram_len = self.max_datagram_len,
                    "a gossip message no longer fits one datagram: the cluster is past chitchat's \
                     ceiling; such messages are dropped (counted as send_oversized) and node \
                     liveness comes from dispatcher sessions alone. Logged once."
                );
            }
            return Ok(());
        }
        self.socket
            .send_to(&sealed, to)
            .await
            .map_err(|e| anyhow::anyhow!("cannot send a gossip datagram to {to}: {e}"))?;
        self.counters.sent();
        Ok(())
    }

    /// Waits for the next datagram that passes every check; all others are
    /// counted and dropped. Cancel-safe: state changes only after a read.
    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (len, from) = match self.socket.recv_from(&mut self.recv_buf).await {
                Ok(read) => read,
                Err(e) if is_transient(&e) => {
                    debug!(error = %e, "transient gossip receive error");
                    continue;
                }
                Err(e) => return Err(anyhow::anyhow!("the gossip socket failed: {e}")),
            };
            match self.open_one(len) {
                Ok(msg) => {
                    self.counters.accepted();
                    return Ok((from, msg));
                }
                Err(why) => {
                    self.counters.reject(why);
                    debug!(%from, len, reason = ?why, "gossip datagram dropped");
                }
            }
        }
    }
}

impl SealedSocket {
    fn open_one(&mut self, len: usize) -> Result<ChitchatMessage, Rejection> {
        // A panic while holding the lock cannot leave a keyring half-changed
        // (every change is one assignment or push), so poison is harmless.
        let keyring = self.keyring.read().unwrap_or_else(|p| p.into_inner());
        let mut plain = self.opener.open(&keyring, &mut self.recv_buf[..len])?;
        // Authentic but not a chitchat message: a node speaking another
        // chitchat wire version. Counted as malformed.
        ChitchatMessage::deserialize(&mut plain).map_err(|_| Rejection::Malformed)
    }
}
