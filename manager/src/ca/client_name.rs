//! The name a client certificate carries (`shoal ca client-cert --name`).
//! It becomes the certificate's node id, shows in audit logs and is what an
//! operator revokes, so it is kept to what reads well in all three: a DNS
//! label's alphabet, lowercase only, so "Alice" and "alice" cannot be two
//! different clients.

use std::fmt;

use rand::Rng;

use super::CaError;

const MAX_LEN: usize = 63;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Random characters after "client-" in a default name: 36^8 (about 2.8e12)
/// names make a collision between two unnamed clients unlikely.
const RANDOM_LEN: usize = 8;

/// A checked client name: 1 to 63 of `a-z`, `0-9` and `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientName(String);

impl ClientName {
    pub fn parse(name: &str) -> Result<ClientName, CaError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_LEN
            && name
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
        if ok {
            Ok(ClientName(name.to_string()))
        } else {
            Err(CaError::BadIdentity(format!(
                "client name {name:?} must be 1 to {MAX_LEN} characters of a-z, 0-9 and '-'"
            )))
        }
    }

    /// `client-<8 random letters and digits>`, for a client given no name.
    pub fn random() -> ClientName {
        let mut rng = rand::rng();
        let suffix: String = (0..RANDOM_LEN)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect();
        ClientName(format!("client-{suffix}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_lowercase_letters_digits_and_dashes_are_accepted() {
        for name in ["a", "alice", "ci-runner-2", "0", &"x".repeat(63)] {
            assert_eq!(ClientName::parse(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn other_names_are_refused_naming_the_value_and_the_rule() {
        for name in [
            "",
            "Alice",
            "a_b",
            "a.b",
            "a/b",
            "é",
            "a b",
            &"x".repeat(64),
        ] {
            let err = ClientName::parse(name).unwrap_err().to_string();
            assert!(err.contains(&format!("{name:?}")), "{err}");
            assert!(
                err.contains("1 to 63 characters of a-z, 0-9 and '-'"),
                "{err}"
            );
        }
    }

    #[test]
    fn random_names_are_valid_and_differ() {
        let a = ClientName::random();
        let b = ClientName::random();
        assert!(a.as_str().starts_with("client-"), "{a}");
        assert_eq!(ClientName::parse(a.as_str()).unwrap(), a);
        assert_ne!(a, b);
    }
}
