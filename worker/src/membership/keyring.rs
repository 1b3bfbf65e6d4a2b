//! The gossip keyring: which keys open incoming datagrams, which one seals
//! outgoing ones.
//!
//! Rotation follows memberlist's three steps, each applied on every node
//! before the next begins, so no two live nodes ever lack a common key:
//! 1. [`Keyring::install`] the new key everywhere (it now opens datagrams);
//! 2. [`Keyring::use_key`] it everywhere (it now seals them; the old key still
//!    opens datagrams from nodes not switched yet);
//! 3. [`Keyring::remove`] the old key everywhere.
//!
//! Switching senders before every node holds the new key would make the
//! laggards drop (and count as forged) everything the switched nodes send.

use std::fmt;

use chacha20poly1305::aead::KeyInit;
use chacha20poly1305::{Key, XChaCha20Poly1305};
use rand::RngCore;

/// Bytes of a gossip key.
pub use shoal_proto::GOSSIP_KEY_LEN;

/// The errors of keyring changes and of reading a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error("a gossip key is {GOSSIP_KEY_LEN} bytes, this one is {len}")]
    KeyLength { len: usize },
    #[error("gossip key {id} is not in the keyring (installed: {installed}); install it first")]
    NotInstalled { id: KeyId, installed: String },
    #[error("gossip key {id} seals outgoing datagrams; switch to another key before removing it")]
    RemovePrimary { id: KeyId },
    #[error(
        "gossip key {id} has the same id as a different key already in the keyring; \
         generate another key"
    )]
    IdCollision { id: KeyId },
    #[error("a keyring needs at least one key")]
    Empty,
}

/// The public name of a key: the first 4 bytes of SHA-256 over a label and
/// the key. It travels in clear in every datagram so the receiver picks the
/// right key at once instead of trying each (a forged datagram then costs one
/// tag check, not one per installed key). 32 bits leak nothing useful about a
/// 256-bit key, and [`Keyring::install`] refuses a colliding id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 256-bit XChaCha20-Poly1305 key shared by every node of the cluster.
/// Its Debug output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey {
    bytes: [u8; GOSSIP_KEY_LEN],
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKey({})", self.id())
    }
}

impl GossipKey {
    /// A new random key (rand's thread-local CSPRNG, seeded by the OS).
    pub fn generate() -> GossipKey {
        let mut bytes = [0u8; GOSSIP_KEY_LEN];
        rand::rng().fill_bytes(&mut bytes);
        GossipKey { bytes }
    }

    /// A key received from a manager over mutual TLS ([`GossipKey::to_bytes`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<GossipKey, KeyringError> {
        let bytes: [u8; GOSSIP_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyringError::KeyLength { len: bytes.len() })?;
        Ok(GossipKey { bytes })
    }

    /// The raw key, only for handing it to another node over mutual TLS.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    /// See [`KeyId`].
    pub fn id(&self) -> KeyId {
        KeyId(shoal_proto::gossip_key_id(&self.bytes))
    }

    pub(crate) fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.bytes))
    }
}

/// The keys a node accepts, and the one it seals with (the primary).
#[derive(Clone)]
pub struct Keyring {
    /// Installed keys with their ciphers, built once rather than per datagram.
    keys: Vec<(KeyId, GossipKey, XChaCha20Poly1305)>,
    primary: KeyId,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.ids())
            .field("primary", &self.primary)
            .finish()
    }
}

impl Keyring {
    /// A keyring holding one key, which is also the primary.
    pub fn new(primary: GossipKey) -> Keyring {
        let id = primary.id();
        let cipher = primary.cipher();
        Keyring {
            keys: vec![(id, primary, cipher)],
            primary: id,
        }
    }

    /// Accepts datagrams sealed with `key` from now on (step 1 of a
    /// rotation). Installing a key already present does nothing.
    pub fn install(&mut self, key: GossipKey) -> Result<KeyId, KeyringError> {
        let id = key.id();
        match self.keys.iter().find(|(kid, _, _)| *kid == id) {
            Some((_, existing, _)) if *existing == key => Ok(id),
            Some(_) => Err(KeyringError::IdCollision { id }),
            None => {
                let cipher = key.cipher();
                self.keys.push((id, key, cipher));
                Ok(id)
            }
        }
    }

    /// Seals outgoing datagrams with key `id` from now on (step 2).
    pub fn use_key(&mut self, id: KeyId) -> Result<(), KeyringError> {
        self.require(id)?;
        self.primary = id;
        Ok(())
    }

    /// Stops accepting key `id` (step 3). The primary cannot be removed.
    pub fn remove(&mut self, id: KeyId) -> Result<(), KeyringError> {
        if id == self.primary {
            return Err(KeyringError::RemovePrimary { id });
        }
        self.require(id)?;
        self.keys.retain(|(kid, _, _)| *kid != id);
        Ok(())
    }

    /// The key that seals outgoing datagrams.
    pub fn primary(&self) -> KeyId {
        self.primary
    }

    /// Every installed key's id, in installation order.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|(id, _, _)| *id).collect()
    }

    pub(crate) fn primary_cipher(&self) -> (KeyId, &XChaCha20Poly1305) {
        let (id, _, cipher) = self
            .keys
            .iter()
            .find(|(id, _, _)| *id == self.primary)
            .expect("the primary key is always installed: remove() refuses it");
        (*id, cipher)
    }

    pub(crate) fn cipher(&self, id: KeyId) -> Option<&XChaCha20Poly1305> {
        self.keys
            .iter()
            .find(|(kid, _, _)| *kid == id)
            .map(|(_, _, c)| c)
    }

    fn require(&self, id: KeyId) -> Result<(), KeyringError> {
        if self.keys.iter().any(|(kid, _, _)| *kid == id) {
            Ok(())
        } else {
            Err(KeyringError::NotInstalled {
                id,
                installed: self
                    .ids()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_steps_keep_the_primary_installed() {
        let old = GossipKey::generate();
        let new = GossipKey::generate();
        let mut ring = Keyring::new(old.clone());
        assert!(matches!(
            ring.use_key(new.id()),
            Err(KeyringError::NotInstalled { .. })
        ));
        let new_id = ring.install(new.clone()).unwrap();
        assert_eq!(ring.install(new).unwrap(), new_id, "idempotent");
        assert_eq!(ring.ids(), vec![old.id(), new_id]);
        assert_eq!(
            ring.remove(old.id()),
            Err(KeyringError::RemovePrimary { id: old.id() })
        );
        ring.use_key(new_id).unwrap();
        ring.remove(old.id()).unwrap();
        assert_eq!(ring.ids(), vec![new_id]);
        assert_eq!(ring.primary(), new_id);
        assert!(ring.cipher(old.id()).is_none());
    }

    #[test]
    fn a_key_of_the_wrong_length_is_refused_and_debug_hides_the_bytes() {
        assert_eq!(
            GossipKey::from_bytes(&[1; 16]),
            Err(KeyringError::KeyLength { len: 16 })
        );
        let key = GossipKey::from_bytes(&[7; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("7, 7"), "{shown}");
        assert_eq!(GossipKey::from_bytes(&key.to_bytes()).unwrap(), key);
    }
}
