//! Membership over loopback: discovery, loss, the transport's refusals, key
//! rotation and the gossip ceiling. Only 127.0.0.1 is ever addressed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chitchat::transport::Socket;
use chitchat::ChitchatMessage;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::sealed::{Counters, SEAL_OVERHEAD};
use super::transport::{SealedSocket, SealedTransport};
use super::*;

const CLUSTER: &str = "test-cluster";

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free loopback port")
        .port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct Node {
    membership: Membership,
    stop: CancellationToken,
}

async fn start_node(id: &str, port: u16, seeds: &[u16], keyring: Keyring) -> Node {
    start_node_with(id, port, seeds, keyring, DEFAULT_PHI_THRESHOLD).await
}

async fn start_node_with(
    id: &str,
    port: u16,
    seeds: &[u16],
    keyring: Keyring,
    phi_threshold: f64,
) -> Node {
    let mut config = MembershipConfig::new(id, CLUSTER, loopback(port), keyring);
    config.listen_addr = loopback(port);
    config.seeds = seeds.iter().map(|p| loopback(*p).to_string()).collect();
    config.gossip_interval = Duration::from_millis(100);
    config.phi_threshold = phi_threshold;
    let stop = CancellationToken::new();
    let membership = Membership::start(config, stop.clone())
        .await
        .unwrap_or_else(|e| panic!("node {id} starts: {e}"));
    Node { membership, stop }
}

fn ids(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Waits until `node` sees exactly `want` as live; the time it took.
async fn until_live(node: &Node, want: &BTreeSet<String>, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut live = node.membership.live_nodes();
    let reached = matches!(
        tokio::time::timeout(limit, live.wait_for(|set| set == want)).await,
        Ok(Ok(_))
    );
    match reached {
        true => started.elapsed(),
        false => panic!(
            "{:?} never saw exactly {want:?} within {limit:?}; it sees {:?}",
            node.membership,
            *live.borrow()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_find_each_other_from_one_seed_and_lose_a_stopped_one() {
    let key = Keyring::new(GossipKey::generate());
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    let a = start_node("a", pa, &[], key.clone()).await;
    let b = start_node("b", pb, &[pa], key.clone()).await;
    let c = start_node("c", pc, &[pa], key.clone()).await;

    let all = ids(&["a", "b", "c"]);
    for node in [&a, &b, &c] {
        let took = until_live(node, &all, Duration::from_secs(10)).await;
        println!("{:?} sees all three after {took:?}", node.membership);
    }

    c.stop.cancel();
    let stopped_at = Instant::now();
    c.membership.stop().await;
    let rest = ids(&["a", "b"]);
    for node in [&a, &b] {
        until_live(node, &rest, Duration::from_secs(20)).await;
        println!(
            "{:?} marks c dead {:?} after it stopped",
            node.membership,
            stopped_at.elapsed()
        );
    }
    // It comes back (a new generation on the same address) and is live again.
    let c = start_node("c", pc, &[pa], key.clone()).await;
    for node in [&a, &b, &c] {
        let took = until_live(node, &all, Duration::from_secs(10)).await;
        println!("{:?} sees c back after {took:?}", node.membership);
    }
    for node in [&a, &b] {
        let stats = node.membership.stats();
        assert!(stats.accepted > 0 && stats.sent > 0, "{stats:?}");
        assert_eq!(
            stats.forged + stats.replayed + stats.malformed,
            0,
            "{stats:?}"
        );
    }
    for node in [a, b, c] {
        node.stop.cancel();
        node.membership.stop().await;
    }
}

/// A sealed socket on a loopback port, with its counters.
async fn sealed_socket(keyring: Keyring, max_datagram_len: usize) -> (SealedSocket, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let transport = SealedTransport {
        keyring: Arc::new(RwLock::new(keyring)),
        counters: counters.clone(),
        max_datagram_len,
        max_age: Duration::from_secs(60),
    };
    let socket = transport.open_sealed(loopback(0)).await.unwrap();
    (socket, counters)
}

/// What `from` seals for `BadCluster` (the one chitchat message with no
/// fields), as captured off the wire.
async fn capture(from: &mut SealedSocket) -> Vec<u8> {
    let tap = UdpSocket::bind(loopback(0)).await.unwrap();
    from.send(tap.local_addr().unwrap(), ChitchatMessage::BadCluster)
        .await
        .unwrap();
    let mut buf = vec![0; 70_000];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), tap.recv_from(&mut buf))
        .await
        .expect("the sealed datagram arrives")
        .unwrap();
    buf.truncate(len);
    buf
}

async fn recv_one(socket: &mut SealedSocket) -> ChitchatMessage {
    tokio::time::timeout(Duration::from_secs(5), socket.recv())
        .await
        .expect("a valid datagram is delivered")
        .expect("the socket works")
        .1
}

#[tokio::test]
async fn the_transport_drops_and_counts_forged_replayed_oversized_and_garbage_datagrams() {
    let key = Keyring::new(GossipKey::generate());
    let (mut receiver, counters) = sealed_socket(key.clone(), 2048).await;
    let (mut sender, _) = sealed_socket(key.clone(), 2048).await;
    let (mut stranger, _) = sealed_socket(Keyring::new(GossipKey::generate()), 2048).await;
    let to = receiver.local_addr();
    let raw = UdpSocket::bind(loopback(0)).await.unwrap();

    let valid = capture(&mut sender).await;
    let forged = capture(&mut stranger).await;
    let mut tampered = capture(&mut sender).await;
    tampered[SEAL_OVERHEAD] ^= 0x40;
    let oversized = vec![1u8; 2049];
    let garbage = b"\x01 not a sealed datagram at all, just bytes".to_vec();

    for datagram in [
        &forged,
        &tampered,
        &oversized,
        &garbage,
        &b"junk".to_vec(),
        &valid,
    ] {
        raw.send_to(datagram, to).await.unwrap();
    }
    assert_eq!(recv_one(&mut receiver).await, ChitchatMessage::BadCluster);
    let stats = counters.snapshot();
    assert_eq!(
        (
            stats.forged,
            stats.oversized,
            stats.malformed,
            stats.accepted
        ),
        (2, 1, 2, 1),
        "{stats:?}"
    );

    // The captured valid datagram, replayed, then a fresh one.
    raw.send_to(&valid, to).await.unwrap();
    let fresh = capture(&mut sender).await;
    raw.send_to(&fresh, to).await.unwrap();
    assert_eq!(recv_one(&mut receiver).await, ChitchatMessage::BadCluster);
    let stats = counters.snapshot();
    assert_eq!((stats.replayed, stats.accepted), (1, 2), "{stats:?}");
    println!("{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_one_node_at_a_time_without_any_node_going_dead() {
    let old = GossipKey::generate();
    let new = GossipKey::generate();
    let ring = Keyring::new(old.clone());
    let (pa, pb, pc) = (free_port(), free_port(), free_port());
    // A lenient detector (about 3 s of silence at 100 ms gossip), so that a
    // CPU stall on a loaded CI machine is not mistaken for a key problem; the
    // zero forged count below is the sharp check.
    let lenient = 40.0;
    let nodes = [
        start_node_with("a", pa, &[], ring.clone(), lenient).await,
        start_node_with("b", pb, &[pa], ring.clone(), lenient).await,
        start_node_with("c", pc, &[pa], ring.clone(), lenient).await,
    ];
    let all = ids(&["a", "b", "c"]);
    for node in &nodes {
        until_live(node, &all, Duration::from_secs(10)).await;
    }

    // Watch every node's live set throughout; any dip fails the test.
    let watchers: Vec<_> = nodes
        .iter()
        .map(|n| {
            let mut live = n.membership.live_nodes();
            let all = all.clone();
            live.borrow_and_update();
            tokio::spawn(async move {
                while live.changed().await.is_ok() {
                    let now = live.borrow_and_update().clone();
                    assert_eq!(now, all, "a node went dead during the rotation");
                }
            })
        })
        .collect();

    let pause = Duration::from_millis(700);
    let new_id = new.id();
    for node in &nodes {
        node.membership.install_key(new.clone()).unwrap();
        tokio::time::sleep(pause).await;
    }
    for node in &nodes {
        node.membership.use_key(new_id).unwrap();
        tokio::time::sleep(pause).await;
    }
    for node in &nodes {
        node.membership.remove_key(old.id()).unwrap();
        tokio::time::sleep(pause).await;
    }
    for node in &nodes {
        assert_eq!(node.membership.keyring().ids(), vec![new_id]);
        let stats = node.membership.stats();
        assert_eq!(
            stats.forged, 0,
            "no datagram refused during rotation: {stats:?}"
        );
        assert!(stats.accepted > 0, "{stats:?}");
    }

    // A node still holding only the old key is now shut out, and counted.
    let before = nodes[0].membership.stats().forged;
    let laggard = start_node("old", free_port(), &[pa], ring).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(nodes[0].membership.stats().forged > before);
    assert_eq!(*nodes[0].membership.live_nodes().borrow(), all);
    laggard.stop.cancel();

    for (node, watcher) in nodes.iter().zip(watchers) {
        assert!(!watcher.is_finished(), "a watcher failed: a node went dead");
        watcher.abort();
        node.stop.cancel();
    }
}

#[tokio::test]
async fn the_gossip_ceiling_is_measured_and_past_it_messages_are_dropped_and_counted() {
    let node_id_len = 25; // shoal's object ids
    for max in [MAX_UDP_PAYLOAD, 8_192, 1_400] {
        let n = ceiling::max_nodes(max, node_id_len, CLUSTER);
        println!(
            "gossip ceiling: {n} nodes fit one {max}-byte sealed SYN \
             ({} bytes a node, {SEAL_OVERHEAD} bytes of seal)",
            ceiling::syn_len(2, node_id_len, CLUSTER) - ceiling::syn_len(1, node_id_len, CLUSTER)
        );
    }
    let n = ceiling::max_nodes(MAX_UDP_PAYLOAD, node_id_len, CLUSTER);
    assert!((500..2_000).contains(&n), "about a thousand, got {n}");

    // At the ceiling the SYN goes through; one node more and it is dropped.
    let key = Keyring::new(GossipKey::generate());
    let (mut receiver, _) = sealed_socket(key.clone(), MAX_UDP_PAYLOAD).await;
    let (mut sender, counters) = sealed_socket(key, MAX_UDP_PAYLOAD).await;
    let to = receiver.local_addr();
    let at_ceiling = ceiling::syn_message(n, node_id_len, CLUSTER);
    sender.send(to, at_ceiling).await.unwrap();
    match recv_one(&mut receiver).await {
        ChitchatMessage::Syn { cluster_id, .. } => assert_eq!(cluster_id, CLUSTER),
        other => panic!("expected the SYN, got {other:?}"),
    }
    let past = ceiling::syn_message(n + 1, node_id_len, CLUSTER);
    sender
        .send(to, past)
        .await
        .expect("dropping is not an error");
    let stats = counters.snapshot();
    assert_eq!((stats.sent, stats.send_oversized), (1, 1), "{stats:?}");
}

#[tokio::test]
async fn a_keyring_handed_out_whole_replaces_the_old_one() {
    let old = GossipKey::generate();
    let new = GossipKey::generate();
    let node = start_node("a", free_port(), &[], Keyring::new(old.clone())).await;
    let mut next = Keyring::new(new.clone());
    next.install(old.clone()).unwrap();
    node.membership.set_keyring(next);
    let ring = node.membership.keyring();
    assert_eq!(
        (ring.ids(), ring.primary()),
        (vec![new.id(), old.id()], new.id())
    );
    node.stop.cancel();
    node.membership.stop().await;
}

#[tokio::test]
async fn a_busy_port_or_a_bad_setting_is_a_clear_error() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let ring = Keyring::new(GossipKey::generate());
    let mut config = MembershipConfig::new("a", CLUSTER, addr, ring.clone());
    config.listen_addr = addr;
    let err = Membership::start(config, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&addr.to_string()) && err.contains("udp"),
        "{err}"
    );

    let mut config = MembershipConfig::new("a", CLUSTER, addr, ring);
    config.max_datagram_len = 100_000;
    let err = Membership::start(config, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_datagram_len = 100000"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_past_the_ceiling_keeps_running_and_counts_what_it_drops() {
    // A tiny datagram makes the ceiling a handful of nodes instead of ~1000.
    let max_datagram_len = SEAL_OVERHEAD + 512;
    let fit = ceiling::max_nodes(max_datagram_len, 3, CLUSTER);
    let count = fit + 4;
    println!("{fit} nodes fit a {max_datagram_len}-byte datagram; starting {count}");
    let key = Keyring::new(GossipKey::generate());
    let seed = free_port();
    let mut nodes = Vec::new();
    for i in 0..count {
        let port = if i == 0 { seed } else { free_port() };
        let mut config =
            MembershipConfig::new(format!("n{i:02}"), CLUSTER, loopback(port), key.clone());
        config.listen_addr = loopback(port);
        config.seeds = vec![loopback(seed).to_string()];
        config.gossip_interval = Duration::from_millis(100);
        config.max_datagram_len = max_datagram_len;
        let stop = CancellationToken::new();
        let membership = Membership::start(config, stop.clone()).await.unwrap();
        nodes.push(Node { membership, stop });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Who crosses first is the node that learns of the most nodes (the
    // seed): its SYN and SYN-ACK no longer fit, it falls silent. Nodes that
    // know fewer go on gossiping among themselves, and see the silent ones
    // go — which is why the manager must stop using the hint once the store
    // holds more nodes than `capacity()`.
    for node in &nodes {
        println!(
            "{:?}: degraded {}, live {}, {:?}",
            node.membership,
            node.membership.degraded(),
            node.membership.live_nodes().borrow().len(),
            node.membership.stats()
        );
        assert_eq!(node.membership.capacity(), fit);
    }
    assert!(nodes[0].membership.degraded(), "the seed knows every node");
    let frozen: Vec<_> = nodes
        .iter()
        .map(|n| {
            let mut live = n.membership.live_nodes();
            live.borrow_and_update();
            live
        })
        .collect();
    let before: Vec<_> = nodes.iter().map(|n| n.membership.stats()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut dropped = 0;
    for ((node, before), live) in nodes.iter().zip(before).zip(&frozen) {
        let now = node.membership.stats();
        assert!(
            now.sent + now.send_oversized > before.sent + before.send_oversized,
            "{:?} keeps gossiping (or trying to): {now:?}",
            node.membership
        );
        if node.membership.degraded() {
            assert!(
                !live.has_changed().unwrap(),
                "{:?}: a degraded node's hint is frozen",
                node.membership
            );
        }
        dropped += now.send_oversized;
    }
    println!("messages dropped past the ceiling: {dropped}");
    assert!(dropped > 0, "past the ceiling some messages cannot be sent");
    for node in nodes {
        node.stop.cancel();
        node.membership.stop().await;
    }
}

#[tokio::test]
async fn dropping_a_member_frees_its_port() {
    let port = free_port();
    let ring = Keyring::new(GossipKey::generate());
    let first = start_node("a", port, &[], ring.clone()).await;
    drop(first.membership);
    // The socket closes once the gossip task has wound down.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut config = MembershipConfig::new("a", CLUSTER, loopback(port), ring.clone());
        config.listen_addr = loopback(port);
        match Membership::start(config, CancellationToken::new()).await {
            Ok(again) => {
                again.stop().await;
                break;
            }
            Err(e) if Instant::now() < deadline => {
                println!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the port stayed taken after the member was dropped: {e}"),
        }
    }
}

/// The daemon's gossip as session messages drive it: nothing runs before
/// keys arrive; the first config starts gossip with the managers as seeds
/// (this node's own address left out); a new keyring (a rotation step)
/// replaces the old and is echoed as the held version; bad keys change
/// nothing.
#[tokio::test]
async fn node_gossip_starts_with_the_first_keys_and_takes_each_new_keyring() {
    let (pa, pb) = (free_port(), free_port());
    let stop = CancellationToken::new();
    let a = NodeGossip::new("a", CLUSTER, loopback(pa), loopback(pa), stop.clone());
    let b = NodeGossip::new("b", CLUSTER, loopback(pb), loopback(pb), stop.clone());
    assert_eq!(a.live_nodes(), None, "not running before keys arrive");
    assert!(!a.info().running);

    let k1 = GossipKey::generate();
    let seeds = vec![loopback(pa).to_string()];
    let config = |keys: Vec<&GossipKey>, version| shoal_proto::GossipConfig {
        keys: keys.into_iter().map(GossipKey::to_bytes).collect(),
        seeds: seeds.clone(),
        version,
    };
    a.apply(&config(vec![&k1], 1)).await;
    b.apply(&config(vec![&k1], 1)).await;
    assert_eq!((a.version(), b.version()), (1, 1));
    let both = ids(&["a", "b"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.live_nodes().as_ref() != Some(&both) || b.live_nodes().as_ref() != Some(&both) {
        assert!(
            Instant::now() < deadline,
            "a: {:?}, b: {:?}",
            a.info(),
            b.info()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(a.info().primary_key_id, k1.id().0);

    // A rotation's steps, each a whole keyring with its version.
    let k2 = GossipKey::generate();
    for (keys, version) in [(vec![&k1, &k2], 2), (vec![&k2, &k1], 3), (vec![&k2], 4)] {
        a.apply(&config(keys.clone(), version)).await;
        b.apply(&config(keys, version)).await;
    }
    assert_eq!((a.version(), b.version()), (4, 4));
    let info = b.info();
    assert_eq!(
        (info.key_ids.clone(), info.primary_key_id),
        (vec![k2.id().0], k2.id().0)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.live_nodes(),
        Some(both.clone()),
        "still together under the new key"
    );

    // Keys that do not make a keyring are refused; the version stays.
    a.apply(&shoal_proto::GossipConfig {
        keys: vec![vec![0u8; 3]],
        seeds: Vec::new(),
        version: 5,
    })
    .await;
    assert_eq!(a.version(), 4);
    assert_eq!(a.info().primary_key_id, k2.id().0);
    stop.cancel();
}
