//! The shoal manager: keeps the desired state in Raft and runs the
//! controllers that turn it into pods on nodes. Laid out like SwarmKit's
//! manager/: one module per role.

pub mod ca;
pub mod controlapi;
pub mod controller;
pub mod dispatcher;
pub mod enrollment;
pub mod gossipkeys;
pub mod ids;
pub mod keys;
pub mod leader;
pub mod managers;
pub mod objects;
pub mod orchestrator;
pub mod proposer;
pub mod quorum;
pub mod raft;
pub mod recovery;
pub mod rolemanager;
pub mod scheduler;
pub mod store;

#[cfg(test)]
mod testutil;
