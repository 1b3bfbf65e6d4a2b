//! The cluster PKI (DESIGN.md §6), as SwarmKit's manager/ca: the root CA
//! whose key never leaves the managers, join tokens that pin that CA by its
//! digest, node certificates whose identity comes from the signer (never from
//! the CSR), what a peer's certificate says about it, the rustls configs for
//! mutual TLS on tonic, and the default-deny authorization of every RPC.
//!
//! The pieces are small on purpose: the daemon and the gRPC servers wire them
//! together (`shoal init` creates a [`Ca`], `shoal join` runs the bootstrap
//! with [`JoinToken`] and [`tls::bootstrap_client_config`], every server sits
//! behind [`authz::AuthzLayer`]).

pub mod authz;
mod client_name;
mod credentials;
mod digest;
mod error;
mod files;
mod identity;
mod issue;
mod role;
mod root;
mod service;
pub mod tls;
mod token;

pub use client_name::ClientName;
pub use credentials::NodeCredentials;
pub use digest::CaDigest;
pub use error::CaError;
pub use identity::PeerIdentity;
pub use issue::{CertValidity, NodeKeys};
pub use role::Role;
pub use root::Ca;
pub use service::{Enrollment, NodeCaService};
pub use token::{JoinSecrets, JoinToken};

#[cfg(test)]
pub(crate) mod testutil;
#[cfg(test)]
mod tls_tests;
