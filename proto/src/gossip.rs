//! What managers and nodes must agree on about gossip keys.

/// The id a sealed gossip datagram names its key by: the first 4 bytes of
/// SHA-256("shoal gossip key id\0" || key), big-endian. Managers record it
/// with each key (`GossipKey.id`), nodes compute it from the key itself, so
/// both must use this one function.
pub fn gossip_key_id(key: &[u8]) -> u32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"shoal gossip key id\0");
    ctx.update(key);
    let digest = ctx.finish();
    let d = digest.as_ref();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Length of a gossip key (XChaCha20-Poly1305).
pub const GOSSIP_KEY_LEN: usize = 32;
