//! Object identifiers: 25 lower-case alphanumerics, as Swarm's, so they are
//! unique without coordination and short prefixes are unambiguous enough for
//! humans to type.

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A fresh random object id.
pub fn new_id() -> String {
    let mut rng = rand::rng();
    (0..25)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_25_lowercase_alphanumerics_and_distinct() {
        let a = super::new_id();
        let b = super::new_id();
        assert_eq!(a.len(), 25);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(a, b);
    }
}
