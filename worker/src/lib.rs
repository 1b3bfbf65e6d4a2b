//! shoal worker
