//! Placement constraints as Swarm writes them: `node.id==X`,
//! `node.hostname!=h`, `node.role==manager`, `node.labels.zone==a`.

use std::fmt;

use shoal_proto::{Node, NodeRole};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    key: String,
    equal: bool,
    value: String,
}

impl Constraint {
    /// Parses one expression; the error says what is wrong with it.
    pub fn parse(expr: &str) -> Result<Constraint, String> {
        let (key, equal, value) = if let Some((k, v)) = expr.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = expr.split_once("==") {
            (k, true, v)
        } else {
            return Err(format!(
                "invalid constraint {expr:?}: expected KEY==VALUE or KEY!=VALUE"
            ));
        };
        let key = key.trim();
        let value = value.trim();
        if !known_key(key) {
            return Err(format!(
                "invalid constraint {expr:?}: unknown key {key:?} (use node.id, node.hostname, node.role or node.labels.<name>)"
            ));
        }
        if value.is_empty() {
            return Err(format!("invalid constraint {expr:?}: empty value"));
        }
        Ok(Constraint {
            key: key.into(),
            equal,
            value: value.into(),
        })
    }

    pub fn matches(&self, node: &Node) -> bool {
        let same = node_attribute(node, &self.key).is_some_and(|a| a == self.value);
        same == self.equal
    }
}

/// The node attributes constraints and spread preferences can name:
/// `node.id`, `node.hostname`, `node.role` and `node.labels.<name>`. One
/// list for both, so a key that constrains can also spread.
pub fn known_key(key: &str) -> bool {
    matches!(key, "node.id" | "node.hostname" | "node.role")
        || key
            .strip_prefix("node.labels.")
            .is_some_and(|l| !l.is_empty())
}

/// The value of a node attribute (see [`known_key`]); None when the node
/// lacks it (a missing label, a node that never reported its hostname).
pub fn node_attribute(node: &Node, key: &str) -> Option<String> {
    match key {
        "node.id" => Some(node.id.clone()),
        "node.hostname" => node
            .status
            .as_ref()
            .map(|s| s.hostname.clone())
            .filter(|h| !h.is_empty()),
        "node.role" => node.spec.as_ref().map(|s| match s.role() {
            NodeRole::Manager => "manager".to_string(),
            _ => "worker".to_string(),
        }),
        k => k
            .strip_prefix("node.labels.")
            .and_then(|l| node.spec.as_ref().and_then(|s| s.labels.get(l).cloned())),
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{}{}{}", self.key, op, self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{NodeSpec, NodeStatus};

    fn node() -> Node {
        let mut spec = NodeSpec {
            role: NodeRole::Manager as i32,
            ..Default::default()
        };
        spec.labels.insert("zone".into(), "a".into());
        Node {
            id: "n1".into(),
            spec: Some(spec),
            status: Some(NodeStatus {
                hostname: "h1".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn matches_labels_roles_and_hostnames() {
        let n = node();
        assert!(Constraint::parse("node.labels.zone==a")
            .unwrap()
            .matches(&n));
        assert!(!Constraint::parse("node.labels.zone==b")
            .unwrap()
            .matches(&n));
        assert!(Constraint::parse("node.labels.rack!=r1")
            .unwrap()
            .matches(&n));
        assert!(Constraint::parse("node.role==manager").unwrap().matches(&n));
        assert!(!Constraint::parse("node.role!=manager").unwrap().matches(&n));
        assert!(Constraint::parse("node.hostname==h1").unwrap().matches(&n));
        assert!(Constraint::parse("node.id!=n2").unwrap().matches(&n));
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        assert!(Constraint::parse("zone=a")
            .unwrap_err()
            .contains("expected KEY==VALUE"));
        assert!(Constraint::parse("node.color==red")
            .unwrap_err()
            .contains("unknown key"));
        assert!(Constraint::parse("node.labels.zone==")
            .unwrap_err()
            .contains("empty value"));
    }
}
