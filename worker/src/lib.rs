//! shoal's worker: everything a node does to run pods.
//!
//! - [`exec`]: the narrow [`exec::Executor`] trait between shoal and a
//!   container runtime, with a Docker implementation and an in-memory one for
//!   simulations.
//! - [`controller`]: one pod's lifecycle, advanced one step per call, so each
//!   transition can be tested on its own.
//! - [`agent`]: the session with the dispatcher; drives one controller per
//!   assigned pod, removes what is no longer wanted and reports status.
//! - [`ingress`]: the published-port proxy that balances across a service's
//!   ready endpoints.
//! - [`membership`]: gossip (chitchat over an authenticated, encrypted UDP
//!   transport), a fast liveness hint for the managers.

pub mod agent;
pub mod controller;
pub mod exec;
pub mod ingress;
pub mod membership;
