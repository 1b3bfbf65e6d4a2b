//! shoal's API definitions: the object model kept in Raft, the Control API
//! (CLI -> manager), the Dispatcher API (worker <-> manager), the Raft
//! transport and the node CA service, all generated from proto/ at build
//! time. Every default value lives in [`defaults`], read by the runtime and
//! the CLI's help alike.

pub mod defaults;
mod gossip;
mod service_types;
mod util;

/// Generated messages and services of package `shoal.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("shoal.v1");
    include!(concat!(env!("OUT_DIR"), "/shoal.v1.serde.rs"));
    include!(concat!(env!("OUT_DIR"), "/method_paths.rs"));
}

pub use gossip::{gossip_key_id, GOSSIP_KEY_LEN};
pub use util::*;
pub use v1::*;
