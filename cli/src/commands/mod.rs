//! Client commands, one module per noun.

pub mod ca;
pub mod get;
pub mod node;
pub mod rollout;
pub mod secret;
pub mod service;
pub mod stack;
pub mod system;
