//! Join tokens, `SHOAL-1-<ca digest>-<secret>` (Swarm's SWMTKN-1-...): the
//! digest lets a joining node pin the CA before it sends anything secret; the
//! secret, one for workers and one for managers, decides the role the node
//! joins as. Rotating a secret (a new random one in the store) makes every
//! token with the old one useless for new joins; nodes already in keep their
//! certificates.

use std::fmt;

use rand::Rng;
use shoal_proto::Cluster;

use super::{CaDigest, CaError, Role};

const PREFIX: &str = "SHOAL";
const VERSION: &str = "1";
const SHAPE: &str = "expected SHOAL-1-<digest>-<secret>";
const SECRET_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// 32 base-36 characters: 165 bits.
const SECRET_LEN: usize = 32;
/// The shortest secret accepted: 26 base-36 characters are 134 bits, above
/// the 128 a secret must have (older clusters' 50-character secrets pass).
const MIN_SECRET_LEN: usize = 26;

/// A parsed join token; `Display` gives it back as users paste it, `Debug`
/// leaves the secret out.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    digest: CaDigest,
    secret: String,
}

impl JoinToken {
    pub fn new(digest: CaDigest, secret: &str) -> Result<JoinToken, CaError> {
        check_secret(secret)?;
        Ok(JoinToken {
            digest,
            secret: secret.to_string(),
        })
    }

    /// Parses a token as a user pasted it (surrounding whitespace ignored).
    pub fn parse(token: &str) -> Result<JoinToken, CaError> {
        let parts: Vec<&str> = token.trim().split('-').collect();
        let [prefix, version, digest, secret] = parts[..] else {
            return Err(CaError::BadToken(SHAPE.into()));
        };
        if prefix != PREFIX {
            return Err(CaError::BadToken(SHAPE.into()));
        }
        if version != VERSION {
            return Err(CaError::BadToken(format!(
                "version {version:?} is not supported (this shoal reads SHOAL-{VERSION}- tokens)"
            )));
        }
        JoinToken::new(CaDigest::parse(digest)?, secret)
    }

    pub fn digest(&self) -> &CaDigest {
        &self.digest
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The joining side's check, before it sends the secret: the CA the
    /// server presented must be the one the token names.
    pub fn verify_ca(&self, ca_cert_der: &[u8]) -> Result<(), CaError> {
        let found = CaDigest::of(ca_cert_der);
        if found == self.digest {
            Ok(())
        } else {
            Err(CaError::CaMismatch {
                expected: self.digest.to_string(),
                found: found.to_string(),
            })
        }
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{VERSION}-{}-{}", self.digest, self.secret)
    }
}

impl fmt::Debug for JoinToken {
    /// Leaves the secret out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinToken({PREFIX}-{VERSION}-{}-<secret>)", self.digest)
    }
}

fn check_secret(secret: &str) -> Result<(), CaError> {
    if secret.len() >= MIN_SECRET_LEN && secret.bytes().all(|c| SECRET_ALPHABET.contains(&c)) {
        Ok(())
    } else {
        Err(CaError::BadToken(format!(
            "the secret must be at least {MIN_SECRET_LEN} characters of a-z and 0-9 ({SHAPE})"
        )))
    }
}

/// The two secrets the store keeps (in `Cluster`); `Debug` prints neither.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinSecrets {
    pub worker: String,
    pub manager: String,
}

impl fmt::Debug for JoinSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinSecrets(..)")
    }
}

impl JoinSecrets {
    pub fn generate() -> JoinSecrets {
        JoinSecrets {
            worker: new_secret(),
            manager: new_secret(),
        }
    }

    pub fn of_cluster(cluster: &Cluster) -> JoinSecrets {
        JoinSecrets {
            worker: cluster.worker_join_secret.clone(),
            manager: cluster.manager_join_secret.clone(),
        }
    }

    /// Replaces the worker secret: worker tokens given out so far stop
    /// admitting new nodes.
    pub fn rotate_worker(&mut self) {
        self.worker = new_secret();
    }

    /// Replaces the manager secret.
    pub fn rotate_manager(&mut self) {
        self.manager = new_secret();
    }

    /// The role a token admits a new node as, on the signer's side. Both
    /// secrets are compared in constant time, so timing reveals neither.
    pub fn admit(&self, token: &JoinToken, ca_digest: &CaDigest) -> Result<Role, CaError> {
        if token.digest() != ca_digest {
            return Err(CaError::TokenForAnotherCa {
                token: token.digest().to_string(),
                ours: ca_digest.to_string(),
            });
        }
        let worker = secrets_equal(token.secret(), &self.worker);
        let manager = secrets_equal(token.secret(), &self.manager);
        match (worker, manager) {
            (_, true) => Ok(Role::Manager),
            (true, false) => Ok(Role::Worker),
            (false, false) => Err(CaError::TokenRefused),
        }
    }
}

/// A fresh secret of [`SECRET_LEN`] base-36 characters from the thread's
/// CSPRNG (rand's ThreadRng: ChaCha seeded by the OS).
pub(crate) fn new_secret() -> String {
    let mut rng = rand::rng();
    (0..SECRET_LEN)
        .map(|_| SECRET_ALPHABET[rng.random_range(0..SECRET_ALPHABET.len())] as char)
        .collect()
}

/// Constant-time equality of two secrets: both are hashed to 32 bytes first
/// (so neither length nor a common prefix shows in the timing), then every
/// byte is compared without an early exit. ring's `constant_time` module is
/// deprecated with no promise about side channels, hence our own.
fn secrets_equal(a: &str, b: &str) -> bool {
    let a = ring::digest::digest(&ring::digest::SHA256, a.as_bytes());
    let b = ring::digest::digest(&ring::digest::SHA256, b.as_bytes());
    let diff = a
        .as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> CaDigest {
        CaDigest::of(b"some CA certificate")
    }

    #[test]
    fn tokens_format_and_parse_back() {
        let secret = new_secret();
        assert_eq!(secret.len(), SECRET_LEN);
        let token = JoinToken::new(digest(), &secret).unwrap();
        let text = token.to_string();
        assert_eq!(text, format!("SHOAL-1-{}-{secret}", digest()));
        assert_eq!(JoinToken::parse(&format!(" {text}\n")).unwrap(), token);
        assert!(
            !format!("{token:?}").contains(&secret),
            "Debug hides the secret"
        );
    }

    #[test]
    fn malformed_tokens_get_a_clear_error_and_no_panic() {
        let d = digest();
        let s = new_secret();
        for (bad, why) in [
            (String::new(), "expected SHOAL-1-<digest>-<secret>"),
            ("hello".into(), "expected SHOAL-1-<digest>-<secret>"),
            (
                format!("SWMTKN-1-{d}-{s}"),
                "expected SHOAL-1-<digest>-<secret>",
            ),
            (
                format!("SHOAL-1-{d}-{s}-x"),
                "expected SHOAL-1-<digest>-<secret>",
            ),
            (format!("SHOAL-2-{d}-{s}"), "version \"2\" is not supported"),
            (format!("SHOAL-1-abc-{s}"), "CA digest \"abc\""),
            (format!("SHOAL-1-{d}-short"), "at least 26 characters"),
            (
                format!("SHOAL-1-{d}-{}", s.to_uppercase()),
                "at least 26 characters",
            ),
            (format!("SHOAL-1-{d}-{s}é"), "at least 26 characters"),
        ] {
            let err = JoinToken::parse(&bad).unwrap_err().to_string();
            assert!(err.starts_with("not a shoal join token: "), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_joining_side_refuses_a_ca_other_than_the_tokens() {
        let token = JoinToken::new(CaDigest::of(b"our CA"), &new_secret()).unwrap();
        token.verify_ca(b"our CA").unwrap();
        let err = token.verify_ca(b"their CA").unwrap_err().to_string();
        assert!(err.contains("does not match the join token"), "{err}");
    }

    #[test]
    fn the_secret_decides_the_role_and_rotation_revokes_old_tokens() {
        let d = digest();
        let mut secrets = JoinSecrets::generate();
        let worker = JoinToken::new(d.clone(), &secrets.worker).unwrap();
        let manager = JoinToken::new(d.clone(), &secrets.manager).unwrap();
        assert_eq!(secrets.admit(&worker, &d).unwrap(), Role::Worker);
        assert_eq!(secrets.admit(&manager, &d).unwrap(), Role::Manager);

        secrets.rotate_worker();
        let err = secrets.admit(&worker, &d).unwrap_err().to_string();
        assert!(err.contains("mistyped or rotated out"), "{err}");
        assert_eq!(secrets.admit(&manager, &d).unwrap(), Role::Manager);
        let fresh = JoinToken::new(d.clone(), &secrets.worker).unwrap();
        assert_eq!(secrets.admit(&fresh, &d).unwrap(), Role::Worker);

        secrets.rotate_manager();
        assert!(secrets.admit(&manager, &d).is_err());
    }

    #[test]
    fn a_token_for_another_ca_is_refused_by_the_signer() {
        let secrets = JoinSecrets::generate();
        let token = JoinToken::new(CaDigest::of(b"theirs"), &secrets.worker).unwrap();
        let err = secrets
            .admit(&token, &CaDigest::of(b"ours"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("another cluster"), "{err}");
    }

    #[test]
    fn secret_comparison_is_exact() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
        assert!(!secrets_equal("", "a"));
    }
}
