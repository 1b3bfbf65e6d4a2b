//! The ingress proxy: published ports served by the daemon itself.
//!
//! Docker lets only one container bind a host port, so a service published
//! in ingress mode (the default) is served by shoal: it listens on
//! `0.0.0.0:<published_port>` and forwards each connection to one of the
//! service's ready endpoints, round robin, skipping endpoints that refuse.
//! Endpoint lists change live without touching the listener; a listener
//! closes when its port leaves the set. Only TCP for now.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use shoal_proto::port_config::{Protocol, PublishMode};
use shoal_proto::ServiceEndpoints;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// How long a connect to one endpoint may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_000);

/// The live state of one published port.
struct Route {
    service: String,
    backends: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Route {
    /// Endpoints in the order to try them for the next connection: round
    /// robin start, then the others as fallbacks.
    fn candidates(&self) -> Vec<SocketAddr> {
        let backends = self.backends.read().unwrap_or_else(|e| e.into_inner());
        if backends.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        backends[start..]
            .iter()
            .chain(&backends[..start])
            .copied()
            .collect()
    }
}

struct Listener {
    route: Arc<Route>,
    stop: CancellationToken,
}

struct Inner {
    listeners: Mutex<HashMap<u16, Listener>>,
    warned_udp: AtomicBool,
}

/// Serves every ingress-mode published port of the services it is given.
/// Cheap to clone; all clones share the listeners. Dropping the last clone
/// does not close listeners: call [`IngressProxy::update`] with no services.
#[derive(Clone)]
pub struct IngressProxy {
    inner: Arc<Inner>,
}

impl Default for IngressProxy {
    fn default() -> Self {
        Self::new()
    }
}

impl IngressProxy {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                listeners: Mutex::new(HashMap::new()),
                warned_udp: AtomicBool::new(false),
            }),
        }
    }

    fn listeners(&self) -> MutexGuard<'_, HashMap<u16, Listener>> {
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The published ports currently listened on.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.listeners().keys().copied().collect();
        ports.sort_unstable();
        ports
    }

    /// Makes the listeners match `services`: opens new ports, updates the
    /// endpoints of existing ones, closes the ports that are gone. A port
    /// that cannot be bound is logged and tried again on the next update.
    /// Must be called within a Tokio runtime.
    pub fn update(&self, services: &[ServiceEndpoints]) {
        let wanted = self.wanted_routes(services);
        let mut listeners = self.listeners();
        listeners.retain(|port, listener| {
            let keep = wanted.contains_key(port);
            if !keep {
                info!(port, service = %listener.route.service, "closing ingress port");
                listener.stop.cancel();
            }
            keep
        });
        for (port, (service, backends)) in wanted {
            if let Some(existing) = listeners.get(&port) {
                *existing
                    .route
                    .backends
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = backends;
                continue;
            }
            let route = Arc::new(Route {
                service,
                backends: RwLock::new(backends),
                next: AtomicUsize::new(0),
            });
            if let Some(listener) = open(port, route) {
                listeners.insert(port, listener);
            }
        }
    }

    /// Published port -> (service, endpoint addresses) for every TCP
    /// ingress port. The first service claiming a port gets it.
    fn wanted_routes(
        &self,
        services: &[ServiceEndpoints],
    ) -> HashMap<u16, (String, Vec<SocketAddr>)> {
        let mut wanted: HashMap<u16, (String, Vec<SocketAddr>)> = HashMap::new();
        for svc in services {
            for port in &svc.ports {
                if port.publish_mode() != PublishMode::Ingress || port.published_port == 0 {
                    continue;
                }
                if port.protocol() == Protocol::Udp {
                    if !self.inner.warned_udp.swap(true, Ordering::Relaxed) {
                        warn!(service = %svc.service_name, port = port.published_port, "udp ingress not supported yet");
                    }
                    continue;
                }
                let Ok(published) = u16::try_from(port.published_port) else {
                    error!(service = %svc.service_name, port = port.published_port, "published port out of range");
                    continue;
                };
                let Ok(target) = u16::try_from(port.target_port) else {
                    error!(service = %svc.service_name, port = port.target_port, "target port out of range");
                    continue;
                };
                if let Some((owner, _)) = wanted.get(&published) {
                    if owner != &svc.service_name {
                        error!(port = published, service = %svc.service_name, owner = %owner, "published port already used by another service");
                    }
                    continue;
                }
                let backends = svc
                    .endpoints
                    .iter()
                    .filter_map(|e| match e.ip.parse::<IpAddr>() {
                        Ok(ip) => Some(SocketAddr::new(ip, target)),
                        Err(_) => {
                            warn!(service = %svc.service_name, ip = %e.ip, "endpoint address is not an IP");
                            None
                        }
                    })
                    .collect();
                wanted.insert(published, (svc.service_name.clone(), backends));
            }
        }
        wanted
    }
}

/// Binds `0.0.0.0:port` (so loopback works too) and spawns its accept loop.
fn open(port: u16, route: Arc<Route>) -> Option<Listener> {
    let bound = std::net::TcpListener::bind(("0.0.0.0", port))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(TcpListener::from_std);
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            error!(port, service = %route.service, error = %e, "cannot listen on published port; will retry on the next update");
            return None;
        }
    };
    info!(port, service = %route.service, "serving ingress port");
    let stop = CancellationToken::new();
    tokio::spawn(accept_loop(listener, route.clone(), stop.clone()));
    Some(Listener { route, stop })
}

async fn accept_loop(listener: TcpListener, route: Arc<Route>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, peer)) => {
                tokio::spawn(forward(client, peer, route.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep going.
                warn!(service = %route.service, error = %e, "ingress accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Connects to the first endpoint that answers and copies both ways.
async fn forward(mut client: TcpStream, peer: SocketAddr, route: Arc<Route>) {
    for backend in route.candidates() {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                debug!(%peer, %backend, service = %route.service, "ingress connection");
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                    debug!(%peer, %backend, error = %e, "ingress connection ended");
                }
                return;
            }
            Ok(Err(e)) => debug!(%backend, error = %e, "endpoint refused; trying the next"),
            Err(_) => debug!(%backend, "endpoint connect timed out; trying the next"),
        }
    }
    warn!(%peer, service = %route.service, "no reachable endpoint; connection dropped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Endpoint, PortConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on `ip:port` (port 0: any) that answers every connection
    /// with its name. Endpoints of one service share the target port, so
    /// the servers differ by loopback address (127.0.0.x), not by port.
    async fn named_server(ip: &str, port: u16, name: &'static str) -> u16 {
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = conn.write_all(name.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        port
    }

    /// A port nothing listens on (bound then released).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn service(published: u16, target: u16, ips: &[&str]) -> ServiceEndpoints {
        ServiceEndpoints {
            service_id: "s1".into(),
            service_name: "web".into(),
            ports: vec![PortConfig {
                target_port: u32::from(target),
                published_port: u32::from(published),
                ..Default::default()
            }],
            endpoints: ips
                .iter()
                .enumerate()
                .map(|(i, ip)| Endpoint {
                    pod_id: format!("p{i}"),
                    ip: ip.to_string(),
                    node_id: "n1".into(),
                })
                .collect(),
        }
    }

    async fn fetch(port: u16) -> String {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn connections_are_balanced_follow_endpoint_changes_and_skip_refusers() {
        let target = named_server("127.0.0.2", 0, "a").await;
        named_server("127.0.0.3", target, "b").await;
        // 127.0.0.4 listens on nothing: connects are refused.
        let published = free_port();
        let proxy = IngressProxy::new();

        // Two endpoints: both get connections.
        proxy.update(&[service(published, target, &["127.0.0.2", "127.0.0.3"])]);
        assert_eq!(proxy.ports(), vec![published]);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(fetch(published).await);
        }
        assert!(
            seen.iter().any(|s| s == "a") && seen.iter().any(|s| s == "b"),
            "{seen:?}"
        );

        // One endpoint removed: everything goes to the other, same listener.
        proxy.update(&[service(published, target, &["127.0.0.3"])]);
        for _ in 0..3 {
            assert_eq!(fetch(published).await, "b");
        }

        // An endpoint that refuses connections is skipped.
        proxy.update(&[service(published, target, &["127.0.0.4", "127.0.0.2"])]);
        for _ in 0..4 {
            assert_eq!(fetch(published).await, "a");
        }

        // The port disappears: the listener closes.
        proxy.update(&[]);
        assert!(proxy.ports().is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(("127.0.0.1", published)).await.is_err());
    }

    #[tokio::test]
    async fn a_port_that_cannot_be_bound_is_retried_on_the_next_update() {
        let target = named_server("127.0.0.1", 0, "a").await;
        let blocker = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let published = blocker.local_addr().unwrap().port();
        let proxy = IngressProxy::new();
        proxy.update(&[service(published, target, &["127.0.0.1"])]);
        assert!(proxy.ports().is_empty());
        drop(blocker);
        proxy.update(&[service(published, target, &["127.0.0.1"])]);
        assert_eq!(proxy.ports(), vec![published]);
        assert_eq!(fetch(published).await, "a");
        proxy.update(&[]);
    }

    #[test]
    fn host_mode_and_udp_ports_are_not_served() {
        let proxy = IngressProxy::new();
        let mut svc = service(18080, 80, &["127.0.0.1"]);
        svc.ports[0].set_publish_mode(PublishMode::Host);
        svc.ports.push(PortConfig {
            target_port: 53,
            published_port: 18053,
            protocol: Protocol::Udp as i32,
            ..Default::default()
        });
        assert!(proxy.wanted_routes(&[svc]).is_empty());
    }
}
