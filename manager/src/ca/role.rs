//! What a certificate lets its holder be. Workers and managers are nodes (in
//! the store, as `NodeRole`); clients are remote CLI users (`shoal ca
//! client-cert`) and never appear in the store as nodes.

use std::fmt;
use std::str::FromStr;

use shoal_proto::NodeRole;

use super::CaError;

/// Ordered by rights only in [`super::authz`]; written lowercase in
/// certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Worker,
    Manager,
    Client,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
            Role::Client => "client",
        }
    }

    /// The role a node has in the store; `None` for an unset role.
    pub fn from_node_role(role: NodeRole) -> Option<Role> {
        match role {
            NodeRole::Worker => Some(Role::Worker),
            NodeRole::Manager => Some(Role::Manager),
            NodeRole::Unspecified => None,
        }
    }

    /// The store's role for a node role; clients are not nodes.
    pub fn node_role(self) -> Option<NodeRole> {
        match self {
            Role::Worker => Some(NodeRole::Worker),
            Role::Manager => Some(NodeRole::Manager),
            Role::Client => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "worker" => Ok(Role::Worker),
            "manager" => Ok(Role::Manager),
            "client" => Ok(Role::Client),
            other => Err(CaError::BadIdentity(format!(
                "unknown role {other:?} (expected worker, manager or client)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names_and_unknown_names_are_refused() {
        for role in [Role::Worker, Role::Manager, Role::Client] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let err = "admin".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("\"admin\""), "{err}");
    }

    #[test]
    fn only_workers_and_managers_are_store_nodes() {
        assert_eq!(Role::Client.node_role(), None);
        assert_eq!(
            Role::from_node_role(Role::Manager.node_role().unwrap()),
            Some(Role::Manager)
        );
        assert_eq!(Role::from_node_role(NodeRole::Unspecified), None);
    }
}
