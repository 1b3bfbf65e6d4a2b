//! The names users write and read for service types and endpoint modes
//! (`ClusterIP`, `dnsrr`), shared by the CLI's flags, the stack translator,
//! the control API's errors and `shoal get services`.

use crate::v1::{service::Type, EndpointMode};

impl Type {
    /// Every type, in the order help texts list them.
    pub const ALL: [Type; 4] = [
        Type::ClusterIp,
        Type::NodePort,
        Type::LoadBalancer,
        Type::ExternalName,
    ];

    /// The name as Kubernetes spells it ("ClusterIP").
    pub fn display(self) -> &'static str {
        match self {
            Type::ClusterIp => "ClusterIP",
            Type::NodePort => "NodePort",
            Type::LoadBalancer => "LoadBalancer",
            Type::ExternalName => "ExternalName",
        }
    }

    /// Reads a type name as Kubernetes spells it; case is not significant
    /// ("nodeport" is NodePort), since a typo of case is not ambiguous.
    pub fn from_display(s: &str) -> Option<Type> {
        Type::ALL
            .into_iter()
            .find(|t| t.display().eq_ignore_ascii_case(s.trim()))
    }

    /// "ClusterIP, NodePort, LoadBalancer or ExternalName", for errors.
    pub fn choices() -> String {
        let names: Vec<&str> = Type::ALL.iter().map(|t| t.display()).collect();
        format!(
            "{} or {}",
            names[..names.len() - 1].join(", "),
            names[names.len() - 1]
        )
    }
}

impl EndpointMode {
    /// "vip" or "dnsrr", as Swarm writes them.
    pub fn display(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }

    pub fn from_display(s: &str) -> Option<EndpointMode> {
        match s {
            "vip" => Some(EndpointMode::Vip),
            "dnsrr" => Some(EndpointMode::Dnsrr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_read_back_in_any_case() {
        for t in Type::ALL {
            assert_eq!(Type::from_display(t.display()), Some(t));
            assert_eq!(Type::from_display(&t.display().to_lowercase()), Some(t));
        }
        assert_eq!(Type::from_display("Headless"), None);
        assert_eq!(
            Type::choices(),
            "ClusterIP, NodePort, LoadBalancer or ExternalName"
        );
    }

    #[test]
    fn endpoint_modes_read_back() {
        assert_eq!(
            EndpointMode::from_display("dnsrr"),
            Some(EndpointMode::Dnsrr)
        );
        assert_eq!(EndpointMode::from_display("vip"), Some(EndpointMode::Vip));
        assert_eq!(EndpointMode::from_display("rr"), None);
    }
}
