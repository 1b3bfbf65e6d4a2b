//! rustls configurations for cluster gRPC (ring is the only crypto provider,
//! TLS 1.3 only: shoal speaks only to shoal), and the glue that runs tonic
//! over them: [`incoming`] for a server, [`connect`] for a client.
//!
//! - [`server_config`]: every connection may present a client certificate,
//!   which must chain to our CA; a connection without one is let through so
//!   the CA bootstrap call can be served, and [`super::authz`] refuses it on
//!   every other RPC.
//! - [`client_config`]: trusts only our CA (pinned, no system roots) and
//!   presents the node's (or CLI client's) certificate.
//! - [`bootstrap_client_config`]: for a node that has no certificate yet: it
//!   accepts the server only if the CA certificate the server sends in its
//!   chain has the join token's digest, before any secret is sent.
//!
//! Servers are always reached as [`MANAGER_SERVER_NAME`], which only manager
//! certificates carry: managers are dialled by IP or any host name, and the
//! pinned CA plus that name is what proves "a manager of this cluster".

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use shoal_proto::defaults::MANAGER_SERVER_NAME;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::{CaDigest, CaError, JoinToken, NodeCredentials};

/// A client that connects but never finishes its handshake is dropped after
/// this long, so it cannot hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past that, accepting waits, so a flood of
/// half-open connections cannot exhaust memory.
const MAX_PENDING_HANDSHAKES: usize = 256;
const ALPN_H2: &[u8] = b"h2";

/// The crypto provider of every config: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls(e: impl std::fmt::Display) -> CaError {
    CaError::Tls(e.to_string())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, CaError> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| {
        tls(format!(
            "the CA certificate is unusable as a trust anchor: {e}"
        ))
    })?;
    Ok(Arc::new(roots))
}

/// Our certificate followed by the CA's: a joining node needs the CA's to
/// compare with its token's digest.
fn chain(creds: &NodeCredentials) -> Vec<CertificateDer<'static>> {
    vec![
        creds.certificate_der().clone(),
        creds.ca_certificate_der().clone(),
    ]
}

fn key(creds: &NodeCredentials) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(creds.private_key_der().clone_key())
}

/// The server side of cluster gRPC on a manager.
pub fn server_config(creds: &NodeCredentials) -> Result<Arc<ServerConfig>, CaError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(creds.ca_certificate_der())?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(tls)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(creds), key(creds))
        .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A node's or CLI client's connection to a manager of its cluster.
pub fn client_config(creds: &NodeCredentials) -> Result<Arc<ClientConfig>, CaError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .with_root_certificates(roots(creds.ca_certificate_der())?)
        .with_client_auth_cert(chain(creds), key(creds))
        .map_err(tls)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// A joining node's connection for the CA bootstrap call: no client
/// certificate, and the server's CA pinned by the token's digest.
pub fn bootstrap_client_config(token: &JoinToken) -> Result<Arc<ClientConfig>, CaError> {
    let verifier = PinnedCaVerifier {
        digest: token.digest().clone(),
        provider: provider(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts a server only if its chain carries the CA the token names, and
/// its certificate is a manager certificate that CA signed (checked by
/// webpki with that CA as the only root).
#[derive(Debug)]
struct PinnedCaVerifier {
    digest: CaDigest,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .find(|c| CaDigest::of(c) == self.digest)
        else {
            let found = intermediates
                .last()
                .map(|c| CaDigest::of(c).to_string())
                .unwrap_or_else(|| "none: the server sent no CA certificate".into());
            let err = CaError::CaMismatch {
                expected: self.digest.to_string(),
                found,
            };
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(err))),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming`: tonic then exposes the peer's certificates to
/// [`super::authz::AuthzLayer`]. Each handshake runs in its own task (a slow
/// or failing client delays no one; at most `MAX_PENDING_HANDSHAKES` at
/// once); failed handshakes are logged and dropped. Accepting stops when the
/// stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = pending.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => return,
                },
                () = tx.closed() => return,
            };
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(error = %e, "cluster listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Raft heartbeats are small writes: no Nagle delay (as tonic's
            // own listener).
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                match handshake {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Dials TCP then TLS with a rustls client config, for tonic's
/// `connect_with_connector`; the server is always verified as
/// [`MANAGER_SERVER_NAME`].
#[derive(Clone)]
pub struct TlsConnectorService {
    connector: TlsConnector,
}

impl TlsConnectorService {
    pub fn new(config: Arc<ClientConfig>) -> TlsConnectorService {
        TlsConnectorService {
            connector: TlsConnector::from(config),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for TlsConnectorService {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| format!("{uri} has no host:port"))?
                .as_str()
                .to_string();
            let tcp = TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(MANAGER_SERVER_NAME)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A gRPC channel to the manager at `addr` (host:port) over TLS with
/// `config`, connected now so that a server this client refuses (another
/// CA, a CA that does not match the join token, not a manager) is reported
/// here with its reason. A client certificate the server refuses shows on
/// the first call instead, as a broken connection: in TLS 1.3 the client
/// finishes its side of the handshake before the server judges it.
pub async fn connect(addr: &str, config: Arc<ClientConfig>) -> Result<Channel, CaError> {
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| CaError::Connect {
            addr: addr.to_string(),
            reason: format!("not a host:port address: {e}"),
        })?;
    endpoint
        .connect_timeout(HANDSHAKE_TIMEOUT)
        .connect_with_connector(TlsConnectorService::new(config))
        .await
        .map_err(|e| CaError::Connect {
            addr: addr.to_string(),
            reason: error_chain(&e),
        })
}

/// A gRPC channel to the manager at `addr` (host:port) over TLS with
/// `config` that connects on first use and reconnects by itself: for
/// long-lived clients (a node's agent, Raft peers) that must ride out a
/// manager being down.
pub fn connect_lazy(addr: &str, config: Arc<ClientConfig>) -> Result<Channel, CaError> {
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}")).map_err(|e| CaError::Connect {
            addr: addr.to_string(),
            reason: format!("not a host:port address: {e}"),
        })?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(TlsConnectorService::new(config)))
}

/// An error and its sources on one line: tonic's transport error alone
/// says only "transport error", and rustls prints our own verifier's error
/// (a CA that does not match the token) with `Debug`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = describe(err);
    let mut source = err.source();
    while let Some(e) = source {
        let text = describe(e);
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) =
        err.downcast_ref::<rustls::Error>()
    {
        return other.0.to_string();
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        return describe(inner);
    }
    err.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::testutil::{ca, credentials};
    use crate::ca::Role;

    fn verify(
        token: &JoinToken,
        leaf: &CertificateDer<'static>,
        chain: &[CertificateDer<'static>],
    ) -> Result<(), String> {
        let verifier = PinnedCaVerifier {
            digest: token.digest().clone(),
            provider: provider(),
        };
        let name = ServerName::try_from(MANAGER_SERVER_NAME).unwrap();
        verifier
            .verify_server_cert(leaf, chain, &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| error_chain(&e))
    }

    fn token_of(ca: &crate::ca::Ca) -> JoinToken {
        ca.join_token(&crate::ca::token::new_secret()).unwrap()
    }

    #[test]
    fn the_bootstrap_verifier_accepts_a_manager_of_the_tokens_ca() {
        let ours = ca("c1");
        let m1 = credentials(&ours, "m1", Role::Manager);
        verify(&token_of(&ours), m1.certificate_der(), &chain(&m1)[1..]).unwrap();
    }

    #[test]
    fn the_bootstrap_verifier_refuses_a_server_that_hides_or_swaps_its_ca() {
        let ours = ca("c1");
        let theirs = ca("c1");
        let token = token_of(&ours);
        let m1 = credentials(&ours, "m1", Role::Manager);

        let err = verify(&token, m1.certificate_der(), &[]).unwrap_err();
        assert!(err.contains("the server sent no CA certificate"), "{err}");

        let stranger = credentials(&theirs, "m1", Role::Manager);
        let err = verify(&token, stranger.certificate_der(), &chain(&stranger)[1..]).unwrap_err();
        assert!(err.contains("does not match the join token"), "{err}");
    }

    #[test]
    fn the_bootstrap_verifier_refuses_our_public_ca_cert_next_to_a_forged_leaf() {
        // The CA certificate is public: a man in the middle can send it.
        // What he cannot do is present a leaf that CA signed.
        let ours = ca("c1");
        let theirs = ca("c1");
        let forged = credentials(&theirs, "m1", Role::Manager);
        let err = verify(
            &token_of(&ours),
            forged.certificate_der(),
            &[ours.certificate_der().clone()],
        )
        .unwrap_err();
        assert!(err.contains("invalid peer certificate"), "{err}");
    }

    #[test]
    fn the_bootstrap_verifier_refuses_a_worker_posing_as_a_manager() {
        let ours = ca("c1");
        let w1 = credentials(&ours, "w1", Role::Worker);
        let err = verify(&token_of(&ours), w1.certificate_der(), &chain(&w1)[1..]).unwrap_err();
        assert!(err.contains("invalid peer certificate"), "{err}");
    }

    #[test]
    fn error_chain_names_the_cause_behind_a_transport_error() {
        let inner = rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
            rustls::OtherError(Arc::new(CaError::TokenRefused)),
        ));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let text = error_chain(&io);
        assert!(text.contains("mistyped or rotated out"), "{text}");
    }
}
