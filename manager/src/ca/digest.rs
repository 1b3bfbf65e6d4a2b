//! The CA digest a join token carries: SHA-256 of the CA certificate's DER,
//! in lowercase base32 without padding (52 characters of `a-z2-7`: compact,
//! case-insensitive to read aloud, and free of the `-` that separates a
//! token's parts). A joining node compares it with the CA the server presents
//! before it sends anything secret.

use std::fmt;

use super::CaError;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
/// 256 bits in 5-bit characters.
pub(crate) const DIGEST_LEN: usize = 52;

/// A CA certificate's digest, as written in join tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CaDigest(String);

impl CaDigest {
    /// The digest of a CA certificate (DER).
    pub fn of(ca_cert_der: &[u8]) -> CaDigest {
        let sha = ring::digest::digest(&ring::digest::SHA256, ca_cert_der);
        CaDigest(base32_lower(sha.as_ref()))
    }

    /// A digest as written in a token, checked for shape only.
    pub fn parse(s: &str) -> Result<CaDigest, CaError> {
        if s.len() != DIGEST_LEN || !s.bytes().all(|c| ALPHABET.contains(&c)) {
            return Err(CaError::BadToken(format!(
                "the CA digest {s:?} must be {DIGEST_LEN} characters of a-z and 2-7"
            )));
        }
        Ok(CaDigest(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CaDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 4648 base32, lowercase, no padding.
fn base32_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_the_rfc_4648_test_vectors() {
        assert_eq!(base32_lower(b""), "");
        assert_eq!(base32_lower(b"f"), "my");
        assert_eq!(base32_lower(b"fo"), "mzxq");
        assert_eq!(base32_lower(b"foo"), "mzxw6");
        assert_eq!(base32_lower(b"foob"), "mzxw6yq");
        assert_eq!(base32_lower(b"fooba"), "mzxw6ytb");
        assert_eq!(base32_lower(b"foobar"), "mzxw6ytboi");
    }

    #[test]
    fn digest_is_sha256_in_52_base32_characters_and_parses_back() {
        // SHA-256("abc") = ba7816bf...; its base32 starts with "xj4bnp4p".
        let d = CaDigest::of(b"abc");
        assert_eq!(d.as_str().len(), DIGEST_LEN);
        assert!(d.as_str().starts_with("xj4bnp4p"), "{d}");
        assert_eq!(CaDigest::parse(d.as_str()).unwrap(), d);
        assert_ne!(CaDigest::of(b"abd"), d);
    }

    #[test]
    fn malformed_digests_are_refused_with_the_expected_shape() {
        for bad in ["", "abc", &"1".repeat(DIGEST_LEN), &"A".repeat(DIGEST_LEN)] {
            let err = CaDigest::parse(bad).unwrap_err().to_string();
            assert!(err.contains("52 characters of a-z and 2-7"), "{err}");
        }
    }
}
