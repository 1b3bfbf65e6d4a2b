//! shoal test support
