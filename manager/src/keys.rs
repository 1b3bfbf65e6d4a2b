//! The cluster key: seals secrets at rest in Raft.
//!
//! A 256-bit key made at `shoal init` and kept in the data dir in its own
//! file (mode 0600), never in Raft and never in an API response. Each secret
//! is sealed with ChaCha20-Poly1305 under a fresh random 96-bit nonce, so
//! the log and snapshots hold only `nonce || ciphertext || tag`; a wrong key
//! or a flipped bit fails the tag check instead of yielding garbage. The
//! control API seals, the dispatcher opens (to hand a secret to the nodes
//! that run a pod using it); both get the key injected by the daemon.

use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

/// Bytes of the key.
pub const KEY_LEN: usize = 32;
/// Bytes of the nonce in front of every sealed value.
pub const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the cluster key {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write the cluster key {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("the cluster key {path} is not {KEY_LEN} bytes of hex: {reason}")]
    Malformed { path: String, reason: String },
    #[error(
        "{what}: cannot be decrypted with this cluster's key (sealed by another key, or corrupted)"
    )]
    Open { what: String },
    #[error("{what}: cannot be encrypted")]
    Seal { what: String },
}

/// The key that seals secrets. Its Debug output never shows the bytes.
#[derive(Clone)]
pub struct ClusterKey {
    key: [u8; KEY_LEN],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A new random key from the operating system's generator (through
    /// rand's thread-local CSPRNG, seeded by it).
    pub fn generate() -> ClusterKey {
        let mut key = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        ClusterKey { key }
    }

    /// Writes the key as hex to `path`, created with mode 0600 (never
    /// readable by others, even for a moment). Refuses to overwrite.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |e: std::io::Error| KeyError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(format!("{}\n", hex(&self.key)).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(err)
    }

    /// Reads a key written by [`ClusterKey::save`].
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let malformed = |reason: &str| KeyError::Malformed {
            path: path.display().to_string(),
            reason: reason.to_string(),
        };
        let text = text.trim();
        if text.len() != KEY_LEN * 2 {
            return Err(malformed(&format!("{} characters", text.len())));
        }
        let mut key = [0u8; KEY_LEN];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| malformed("not hexadecimal"))?;
        }
        Ok(ClusterKey { key })
    }

    /// The raw key, only for handing it to a new manager over mutual TLS.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.key.to_vec()
    }

    /// A key received from another manager ([`ClusterKey::to_bytes`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<ClusterKey, KeyError> {
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Malformed {
            path: "the key received from the manager".into(),
            reason: format!("{} bytes, expected {KEY_LEN}", bytes.len()),
        })?;
        Ok(ClusterKey { key })
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(&self.key))
    }

    /// `nonce || ciphertext || tag` of `plaintext`, under a fresh nonce.
    /// `what` names the value in errors ("secret db_password").
    pub fn seal(&self, what: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .map_err(|_| KeyError::Seal {
                what: what.to_string(),
            })?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a value sealed by [`ClusterKey::seal`] with this key.
    pub fn open(&self, what: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let fail = || KeyError::Open {
            what: what.to_string(),
        };
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(Nonce::from_slice(nonce), body)
            .map_err(|_| fail())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_with_the_same_key_and_hides_the_plaintext() {
        let key = ClusterKey::generate();
        let plain = b"s3cr3t-password";
        let sealed = key.seal("secret pw", plain).unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + plain.len() + 16);
        assert!(!sealed.windows(plain.len()).any(|w| w == plain));
        assert_eq!(key.open("secret pw", &sealed).unwrap(), plain);
        // A fresh nonce each time: sealing twice gives different bytes.
        assert_ne!(key.seal("secret pw", plain).unwrap(), sealed);
    }

    #[test]
    fn a_wrong_key_or_tampered_data_fails_naming_the_secret() {
        let sealed = ClusterKey::generate().seal("secret pw", b"x").unwrap();
        let err = ClusterKey::generate()
            .open("secret pw", &sealed)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("secret pw: cannot be decrypted"), "{err}");
        let key = ClusterKey::generate();
        let mut sealed = key.seal("s", b"hello").unwrap();
        sealed[NONCE_LEN] ^= 1;
        assert!(key.open("s", &sealed).is_err());
        assert!(key.open("s", &[1, 2, 3]).is_err());
    }

    #[test]
    fn the_key_file_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let key = ClusterKey::generate();
        key.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = ClusterKey::load(&path).unwrap();
        let sealed = key.seal("s", b"data").unwrap();
        assert_eq!(loaded.open("s", &sealed).unwrap(), b"data");
        assert!(
            key.save(&path).is_err(),
            "an existing key is never replaced"
        );
        std::fs::write(&path, "zz").unwrap();
        let err = ClusterKey::load(&path).unwrap_err().to_string();
        assert!(err.contains("is not 32 bytes of hex"), "{err}");
        assert_eq!(format!("{key:?}"), "ClusterKey(..)");
    }
}
