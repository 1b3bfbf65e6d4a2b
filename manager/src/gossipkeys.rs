//! The cluster's gossip keys (docs/GOSSIP.md "Keys and rotation"), kept in
//! the Cluster object and changed only by the leader, one step at a time.
//!
//! A rotation is three steps, each taken only once every ready node holds
//! the keyring of the step before (nodes echo its version in heartbeats), or
//! once [`GOSSIP_KEY_STEP_WAIT_MS`](shoal_proto::defaults::GOSSIP_KEY_STEP_WAIT_MS)
//! has passed without them: install the new key (it opens, the old one still
//! seals), make it the primary (it seals), retire the old one. Taking a step
//! early only costs a straggler its gossip for a while, which is a hint;
//! sessions decide Down.

use rand::RngCore;
use shoal_proto::{gossip_key_id, Cluster, GossipKey, GossipKeyring, Mutation, GOSSIP_KEY_LEN};

use crate::keys::{ClusterKey, KeyError};
use crate::objects::{touch, version};
use crate::store::put;

/// The next change a keyring needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No key yet (a new cluster, or one made before gossip): make one.
    Generate,
    /// Add a new key beside the primary (a rotation's first step); on a
    /// keyring with no key, the new key is the primary.
    Install,
    /// Make the newest key the one that seals.
    Promote(u32),
    /// Drop every key but the primary.
    Retire,
}

/// What the keyring needs next. `settled`: every ready node holds its
/// current version (or the wait for them is over); no rotation step is
/// taken before. A key older than `rotate_every_ms` is rotated.
pub fn next_step(
    ring: Option<&GossipKeyring>,
    settled: bool,
    now_ms: i64,
    rotate_every_ms: u64,
) -> Option<Step> {
    let Some(ring) = ring.filter(|r| !r.keys.is_empty()) else {
        return Some(Step::Generate);
    };
    if !settled {
        return None;
    }
    let newest = ring.keys.iter().max_by_key(|k| (k.created_ms, k.id))?;
    if newest.id != ring.primary {
        return Some(Step::Promote(newest.id));
    }
    if ring.keys.len() > 1 {
        return Some(Step::Retire);
    }
    let age = now_ms.saturating_sub(newest.created_ms);
    (age >= rotate_every_ms as i64).then_some(Step::Install)
}

/// The keyring after `step`, its version raised.
pub fn apply(
    ring: Option<&GossipKeyring>,
    step: Step,
    cluster_key: &ClusterKey,
    now_ms: i64,
) -> Result<GossipKeyring, KeyError> {
    let mut next = ring.cloned().unwrap_or_default();
    match step {
        Step::Install if !next.keys.is_empty() => next.keys.push(new_key(cluster_key, now_ms)?),
        Step::Generate | Step::Install => {
            let key = new_key(cluster_key, now_ms)?;
            next.primary = key.id;
            next.keys = vec![key];
        }
        Step::Promote(id) => next.primary = id,
        Step::Retire => {
            let primary = next.primary;
            next.keys.retain(|k| k.id == primary);
        }
    }
    next.version += 1;
    Ok(next)
}

/// The write that takes `step` on `cluster`'s keyring (checked against the
/// version read), and the keyring it leaves.
pub fn change(
    cluster: &Cluster,
    step: Step,
    cluster_key: &ClusterKey,
    now_ms: i64,
) -> Result<(Mutation, GossipKeyring), KeyError> {
    let next = apply(cluster.gossip.as_ref(), step, cluster_key, now_ms)?;
    let mut updated = cluster.clone();
    updated.gossip = Some(next.clone());
    touch(&mut updated.meta, now_ms);
    Ok((put(updated, version(&cluster.meta)), next))
}

/// The keys in the clear, the primary first, as a session message carries
/// them to a node. A key that does not open (never expected: every key was
/// sealed by this cluster's key) is left out and logged.
pub fn open(ring: &GossipKeyring, cluster_key: &ClusterKey) -> Vec<Vec<u8>> {
    let mut keys: Vec<&GossipKey> = ring.keys.iter().collect();
    keys.sort_by_key(|k| k.id != ring.primary);
    keys.into_iter()
        .filter_map(|k| match cluster_key.open("gossip key", &k.sealed) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::error!(key_id = k.id, error = %e, "cannot open a gossip key");
                None
            }
        })
        .collect()
}

fn new_key(cluster_key: &ClusterKey, now_ms: i64) -> Result<GossipKey, KeyError> {
    let mut bytes = [0u8; GOSSIP_KEY_LEN];
    rand::rng().fill_bytes(&mut bytes);
    Ok(GossipKey {
        id: gossip_key_id(&bytes),
        sealed: cluster_key.seal("gossip key", &bytes)?,
        created_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 24 * 3600 * 1000;

    fn step(ring: &GossipKeyring, settled: bool, now: i64) -> Option<Step> {
        next_step(Some(ring), settled, now, DAY)
    }

    #[test]
    fn a_rotation_installs_promotes_and_retires_each_only_when_settled() {
        let ck = ClusterKey::generate();
        assert_eq!(next_step(None, false, 0, DAY), Some(Step::Generate));
        let ring = apply(None, Step::Generate, &ck, 1_000).unwrap();
        assert_eq!(ring.keys.len(), 1);
        assert_eq!(ring.primary, ring.keys[0].id);
        assert_eq!(ring.version, 1);
        let first = ring.primary;
        assert_eq!(step(&ring, true, 2_000), None, "a young key stays");

        // An explicit rotation (or an old key) installs a second key...
        let ring = apply(Some(&ring), Step::Install, &ck, 3_000).unwrap();
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(ring.primary, first, "the old key still seals");
        let second = ring.keys[1].id;
        // ...which is promoted only once every node holds it...
        assert_eq!(step(&ring, false, 4_000), None);
        assert_eq!(step(&ring, true, 4_000), Some(Step::Promote(second)));
        let ring = apply(Some(&ring), Step::Promote(second), &ck, 4_000).unwrap();
        assert_eq!(ring.primary, second);
        assert_eq!(ring.keys.len(), 2, "the old key still opens");
        // ...and the old one retired only once every node seals with it.
        assert_eq!(step(&ring, false, 5_000), None);
        assert_eq!(step(&ring, true, 5_000), Some(Step::Retire));
        let ring = apply(Some(&ring), Step::Retire, &ck, 5_000).unwrap();
        assert_eq!(ring.keys.len(), 1);
        assert_eq!(ring.primary, second);
        assert_eq!(ring.version, 4, "every step is a new version");
        assert_eq!(step(&ring, true, 6_000), None);
        assert_eq!(
            step(&ring, true, 3_000 + DAY as i64),
            Some(Step::Install),
            "a key past its lifetime is rotated"
        );
    }

    #[test]
    fn keys_open_primary_first_and_match_their_ids() {
        let ck = ClusterKey::generate();
        let ring = apply(None, Step::Generate, &ck, 1).unwrap();
        let ring = apply(Some(&ring), Step::Install, &ck, 2).unwrap();
        let keys = open(&ring, &ck);
        assert_eq!(keys.len(), 2);
        assert_eq!(gossip_key_id(&keys[0]), ring.primary);
        assert_eq!(gossip_key_id(&keys[1]), ring.keys[1].id);
        for k in &ring.keys {
            assert!(
                !k.sealed
                    .windows(GOSSIP_KEY_LEN)
                    .any(|w| keys.iter().any(|c| c == w)),
                "the store holds keys sealed, never in the clear"
            );
        }
        // A rotation asked for before the first key exists makes it.
        let first = apply(None, Step::Install, &ck, 3).unwrap();
        assert_eq!(first.keys.len(), 1);
        assert_eq!(first.primary, first.keys[0].id);
        let other = ClusterKey::generate();
        assert!(
            open(&ring, &other).is_empty(),
            "another cluster's key opens nothing"
        );
    }
}
