//! shoal manager
