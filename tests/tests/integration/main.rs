//! shoal's integration tests: one test binary (CI links it once).
//!
//! Tests that use Docker start a [`shoal_tests::Node`], which serializes them
//! and fails (never skips) when Docker is unreachable. Build the binary under
//! test first: `cargo build -p shoal-cli && cargo test --workspace`.

mod authz;
mod cli;
mod clientcert;
mod cluster;
mod examples;
mod get;
mod gossip;
mod health;
mod hosts;
mod logs;
mod nodeloss;
mod ports;
mod quorum;
mod recovery;
mod rollout;
mod secrets;
mod service;
mod sim_bench;
mod sim_placement;
mod sim_rollout;
mod stack;
mod tokens;
mod voting;
