//! The sealed gossip datagram: what travels on UDP instead of chitchat's
//! plain bytes, and the checks a datagram passes before chitchat sees it.
//!
//! ```text
//!  0         1            5                 29                        n-16     n
//!  | version | key id     | nonce           | ciphertext              | tag    |
//!  |  0x01   | u32 BE     | 24 random bytes | XChaCha20 of the payload| Poly1305
//!
//!  payload = incarnation u64 LE | counter u64 LE | sent_at_ms u64 LE | chitchat message
//! ```
//!
//! - Version and key id are the associated data: authenticated, not secret,
//!   so nobody can move a datagram to another key or format.
//! - XChaCha20-Poly1305 is ChaCha20-Poly1305 (same crate, same key) with a
//!   192-bit nonce, chosen so that a random nonce per datagram never repeats
//!   in practice: with ChaCha20-Poly1305's 96 bits, a thousand nodes
//!   gossiping every 250 ms (~36,000 datagrams/s) pass the 2^32 NIST allows random
//!   nonces under one key in about a day and a half, and a repeat would leak
//!   plaintexts and the authentication key. With 192 bits, the chance of any
//!   repeat after 2^48 datagrams is about 2^-97. Random rather than counter
//!   nonces: no state to keep across restarts.
//! - Replay protection, inside the sealed payload so only key holders can
//!   produce it: every socket picks a random `incarnation` when it opens and
//!   numbers its datagrams with `counter` from 0. The receiver keeps, per
//!   incarnation, the highest counter seen and a 128-bit bitmap of the ones
//!   below it (the IPsec/WireGuard sliding window: reordering up to 128
//!   datagrams is tolerated, a repeat or anything older is refused). That
//!   state must not grow forever, so `sent_at_ms` (the sender's wall clock)
//!   bounds a datagram's life: one sent more than `max_age` before or after
//!   the receiver's clock is refused as stale. A window not updated for
//!   `2 × max_age` is forgotten: every datagram it accepted is by then stale
//!   itself, so forgetting cannot let a replay in. The price is that nodes'
//!   clocks must agree within `max_age` (60 s by default; NTP does far
//!   better) — a node whose clock is off shows up in the `stale` count.
//! - What this does not stop: a datagram captured on its way to node B and
//!   replayed, within `max_age`, to node C that never saw it. C then hears
//!   genuine, recent gossip from its true author once; it cannot be made to
//!   hear it twice. Binding the destination address would stop this but
//!   breaks behind NAT and wildcard listen addresses, and gossip is
//!   advisory anyway (DESIGN.md §5).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XNonce};
use rand::RngCore;

use super::keyring::{KeyId, Keyring};

/// The format byte at the front of every sealed datagram.
pub const WIRE_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const REPLAY_FIELDS_LEN: usize = 8 + 8 + 8;
/// Bytes a sealed datagram adds to the chitchat message it carries.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + REPLAY_FIELDS_LEN + TAG_LEN;
/// Width of the per-sender sliding window, in datagrams.
const REPLAY_WINDOW_BITS: u64 = 128;
/// Senders whose windows are tracked at most; reached only by key holders
/// (windows are created after authentication), see [`ReplayGuard`].
const MAX_TRACKED_INCARNATIONS: usize = 16_384;

/// Why a datagram was dropped before chitchat saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Longer than the configured maximum datagram.
    Oversized,
    /// Too short, or not our format: stray traffic or garbage.
    Malformed,
    /// Names no installed key, or fails the tag check under the one it names.
    Forged,
    /// Authentic but sent outside the accepted clock window.
    Stale,
    /// Authentic and recent, but already seen (or too far behind to tell).
    Replayed,
}

/// The counters of a sealed transport. Each dropped datagram is counted
/// under exactly one reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Datagrams opened and handed to chitchat.
    pub accepted: u64,
    /// Datagrams sealed and sent.
    pub sent: u64,
    /// Naming no installed key, or failing the tag check: another cluster,
    /// a removed key, or an attacker.
    pub forged: u64,
    /// Authentic datagrams seen before (or too far behind to tell).
    pub replayed: u64,
    /// Authentic datagrams sent outside the clock window: a node whose clock
    /// is off by more than `max_age`, or an old capture.
    pub stale: u64,
    /// Longer than the configured maximum datagram.
    pub oversized: u64,
    /// Garbage, another format, or authentic bytes chitchat cannot decode.
    pub malformed: u64,
    /// Outgoing messages dropped because sealed they exceed the maximum
    /// datagram: the cluster is past the gossip ceiling (see
    /// `membership::ceiling`), liveness then comes from dispatcher sessions.
    pub send_oversized: u64,
}

/// The live counters behind [`TransportStats`], shared by the socket and
/// whoever reports them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    sent: AtomicU64,
    forged: AtomicU64,
    replayed: AtomicU64,
    stale: AtomicU64,
    oversized: AtomicU64,
    malformed: AtomicU64,
    send_oversized: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TransportStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TransportStats {
            accepted: get(&self.accepted),
            sent: get(&self.sent),
            forged: get(&self.forged),
            replayed: get(&self.replayed),
            stale: get(&self.stale),
            oversized: get(&self.oversized),
            malformed: get(&self.malformed),
            send_oversized: get(&self.send_oversized),
        }
    }

    pub(crate) fn reject(&self, why: Rejection) {
        let counter = match why {
            Rejection::Oversized => &self.oversized,
            Rejection::Malformed => &self.malformed,
            Rejection::Forged => &self.forged,
            Rejection::Stale => &self.stale,
            Rejection::Replayed => &self.replayed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn send_oversized(&self) -> u64 {
        self.send_oversized.fetch_add(1, Ordering::Relaxed)
    }
}

/// The sending half's identity: a random incarnation and the next counter.
pub(crate) struct Sealer {
    incarnation: u64,
    next_counter: u64,
}

impl Sealer {
    pub(crate) fn new() -> Sealer {
        Sealer {
            incarnation: rand::rng().next_u64(),
            next_counter: 0,
        }
    }

    /// Seals `message` into a datagram under the keyring's primary key.
    pub(crate) fn seal(&mut self, keyring: &Keyring, message: &[u8]) -> Vec<u8> {
        let (key_id, cipher) = keyring.primary_cipher();
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let counter = self.next_counter;
        self.next_counter += 1;

        let mut out = Vec::with_capacity(SEAL_OVERHEAD + message.len());
        out.push(WIRE_VERSION);
        out.extend_from_slice(&key_id.0.to_be_bytes());
        out.extend_from_slice(&nonce);
        let body_start = out.len();
        out.extend_from_slice(&self.incarnation.to_le_bytes());
        out.extend_from_slice(&counter.to_le_bytes());
        out.extend_from_slice(&now_ms().to_le_bytes());
        out.extend_from_slice(message);
        let (head, body) = out.split_at_mut(body_start);
        let tag = cipher
            .encrypt_in_place_detached(
                XNonce::from_slice(&head[HEADER_LEN..]),
                &head[..HEADER_LEN],
                body,
            )
            .expect("ChaCha20-Poly1305 seals any message shorter than 256 GiB");
        out.extend_from_slice(&tag);
        out
    }
}

/// The receiving half: checks, opens and de-duplicates datagrams.
pub(crate) struct Opener {
    max_datagram_len: usize,
    guard: ReplayGuard,
}

impl Opener {
    pub(crate) fn new(max_datagram_len: usize, max_age: Duration) -> Opener {
        Opener {
            max_datagram_len,
            guard: ReplayGuard::new(max_age),
        }
    }

    /// Opens `datagram` in place and returns the chitchat message inside.
    /// `datagram` holds what the socket read; its length may exceed
    /// `max_datagram_len` by one, which is how truncation is detected.
    pub(crate) fn open<'a>(
        &mut self,
        keyring: &Keyring,
        datagram: &'a mut [u8],
    ) -> Result<&'a [u8], Rejection> {
        if datagram.len() > self.max_datagram_len {
            return Err(Rejection::Oversized);
        }
        if datagram.len() < SEAL_OVERHEAD || datagram[0] != WIRE_VERSION {
            return Err(Rejection::Malformed);
        }
        let key_id = KeyId(u32::from_be_bytes(
            datagram[1..5].try_into().expect("4 bytes"),
        ));
        let cipher = keyring.cipher(key_id).ok_or(Rejection::Forged)?;
        let (head, rest) = datagram.split_at_mut(HEADER_LEN + NONCE_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(&head[HEADER_LEN..]),
                &head[..HEADER_LEN],
                body,
                Tag::from_slice(tag),
            )
            .map_err(|_| Rejection::Forged)?;
        let field = |i: usize| u64::from_le_bytes(body[i * 8..i * 8 + 8].try_into().expect("8"));
        let (incarnation, counter, sent_at_ms) = (field(0), field(1), field(2));
        self.guard
            .check(incarnation, counter, sent_at_ms, now_ms())?;
        Ok(&body[REPLAY_FIELDS_LEN..])
    }
}

/// Milliseconds since the Unix epoch on this node's wall clock.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One sender incarnation's sliding window.
struct Window {
    highest: u64,
    /// Bit i set: counter `highest - i` was seen.
    seen: u128,
    last_update: Instant,
}

/// The replay check described in the module documentation.
pub(crate) struct ReplayGuard {
    max_age_ms: u64,
    windows: HashMap<u64, Window>,
    last_prune: Instant,
}

impl ReplayGuard {
    pub(crate) fn new(max_age: Duration) -> ReplayGuard {
        ReplayGuard {
            max_age_ms: max_age.as_millis() as u64,
            windows: HashMap::new(),
            last_prune: Instant::now(),
        }
    }

    /// Accepts (and records) a datagram, or says why not. Call only for
    /// authenticated datagrams: a forger must not be able to move windows.
    pub(crate) fn check(
        &mut self,
        incarnation: u64,
        counter: u64,
        sent_at_ms: u64,
        now_ms: u64,
    ) -> Result<(), Rejection> {
        if sent_at_ms.abs_diff(now_ms) > self.max_age_ms {
            return Err(Rejection::Stale);
        }
        self.prune();
        let now = Instant::now();
        let Some(window) = self.windows.get_mut(&incarnation) else {
            self.windows.insert(
                incarnation,
                Window {
                    highest: counter,
                    seen: 1,
                    last_update: now,
                },
            );
            return Ok(());
        };
        if counter > window.highest {
            let shift = counter - window.highest;
            window.seen = if shift >= REPLAY_WINDOW_BITS {
                1
            } else {
                (window.seen << shift) | 1
            };
            window.highest = counter;
        } else {
            let behind = window.highest - counter;
            if behind >= REPLAY_WINDOW_BITS || window.seen & (1u128 << behind) != 0 {
                return Err(Rejection::Replayed);
            }
            window.seen |= 1u128 << behind;
        }
        window.last_update = now;
        Ok(())
    }

    /// Forgets windows idle for 2 × max_age (sound: see the module doc),
    /// and, past the size cap, the idlest ones. The cap is only reachable by
    /// key holders, who can forge any gossip anyway; evicting rather than
    /// refusing keeps a flood from shutting genuine newcomers out.
    fn prune(&mut self) {
        let now = Instant::now();
        let horizon = Duration::from_millis(self.max_age_ms.saturating_mul(2));
        if self.windows.len() < MAX_TRACKED_INCARNATIONS
            && now.duration_since(self.last_prune) < horizon / 4
        {
            return;
        }
        self.last_prune = now;
        self.windows
            .retain(|_, w| now.duration_since(w.last_update) <= horizon);
        while self.windows.len() >= MAX_TRACKED_INCARNATIONS {
            let idlest = self
                .windows
                .iter()
                .min_by_key(|(_, w)| w.last_update)
                .map(|(k, _)| *k)
                .expect("the map is not empty");
            self.windows.remove(&idlest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::keyring::GossipKey;

    fn open_copy(opener: &mut Opener, ring: &Keyring, d: &[u8]) -> Result<Vec<u8>, Rejection> {
        let mut d = d.to_vec();
        opener.open(ring, &mut d).map(<[u8]>::to_vec)
    }

    #[test]
    fn a_sealed_message_opens_once_and_only_under_its_key() {
        let ring = Keyring::new(GossipKey::generate());
        let other = Keyring::new(GossipKey::generate());
        let mut sealer = Sealer::new();
        let mut opener = Opener::new(65_507, Duration::from_secs(60));
        let d = sealer.seal(&ring, b"hello");
        assert_eq!(d.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(open_copy(&mut opener, &other, &d), Err(Rejection::Forged));
        assert_eq!(open_copy(&mut opener, &ring, &d).unwrap(), b"hello");
        assert_eq!(open_copy(&mut opener, &ring, &d), Err(Rejection::Replayed));
        let mut flipped = sealer.seal(&ring, b"hello");
        flipped[SEAL_OVERHEAD] ^= 1;
        assert_eq!(
            open_copy(&mut opener, &ring, &flipped),
            Err(Rejection::Forged)
        );
        let mut moved = sealer.seal(&ring, b"hello");
        moved[0] = 2;
        assert_eq!(
            open_copy(&mut opener, &ring, &moved),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            open_copy(&mut opener, &ring, b"junk"),
            Err(Rejection::Malformed)
        );
    }

    #[test]
    fn the_window_tolerates_reordering_and_refuses_repeats_and_the_too_old() {
        let mut guard = ReplayGuard::new(Duration::from_secs(60));
        let now = 1_000_000;
        for c in [5, 3, 4, 200, 100] {
            assert_eq!(guard.check(9, c, now, now), Ok(()), "counter {c}");
        }
        assert_eq!(guard.check(9, 100, now, now), Err(Rejection::Replayed));
        assert_eq!(guard.check(9, 200, now, now), Err(Rejection::Replayed));
        // 200 - 5 >= 128: too far behind to know, refused.
        assert_eq!(guard.check(9, 6, now, now), Err(Rejection::Replayed));
        // Another incarnation (a restarted sender) has its own window.
        assert_eq!(guard.check(10, 5, now, now), Ok(()));
        assert_eq!(guard.check(10, 5, now - 61_000, now), Err(Rejection::Stale));
        assert_eq!(guard.check(11, 0, now + 61_000, now), Err(Rejection::Stale));
    }

    #[test]
    fn an_oversized_datagram_is_refused_before_any_work() {
        let ring = Keyring::new(GossipKey::generate());
        let mut opener = Opener::new(100, Duration::from_secs(60));
        let d = Sealer::new().seal(&ring, &[0u8; 100 - SEAL_OVERHEAD + 1]);
        assert_eq!(open_copy(&mut opener, &ring, &d), Err(Rejection::Oversized));
    }
}
