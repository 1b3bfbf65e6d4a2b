//! shoal test support: running commands with time limits, polling, Docker
//! helpers, locally built test images, a tiny HTTP client, and [`Node`], a
//! single-host shoal node started in a temporary data directory, and
//! [`Hosts`], several node containers (each with its own Docker Engine and
//! address) for multi-host tests.
//!
//! Everything that touches Docker goes through [`Node::start`] or
//! [`Hosts::start`], which hold a process-wide lock for their lifetime:
//! Docker tests run one at a time under `cargo test`'s default parallelism.
//! Docker being unreachable is a failure, never a skip.

pub mod cluster;
pub mod cmd;
pub mod docker;
pub mod heap;
pub mod hosts;
pub mod http;
pub mod images;
pub mod node;
pub mod table;
pub mod voting;
pub mod wait;

pub use cmd::{run, Output};
pub use hosts::Hosts;
pub use node::Node;
pub use wait::wait_for;

use std::path::PathBuf;

/// The `shoal` binary under test: `$SHOAL_BIN`, else `target/<profile>/shoal`
/// next to this test executable (`target/<profile>/deps/integration-*`).
/// Cargo does not build another package's binary for integration tests, so
/// the README's test command builds it first (`cargo build -p shoal-cli`).
pub fn shoal_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("shoal");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build -p shoal-cli` first (or set SHOAL_BIN)",
        bin.display()
    );
    bin
}

/// A short random hex string (for network names and the like).
pub fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}
