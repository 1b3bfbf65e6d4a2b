//! `x-shoal`: shoal's own service keys in a stack file. Compose ignores
//! `x-*` keys, so a file that uses them still works with `docker stack
//! deploy`; the parser keeps them aside (`Stack::extensions`) and this
//! module reads them:
//!
//! ```yaml
//! services:
//!   web:
//!     x-shoal:
//!       type: LoadBalancer            # ClusterIP | NodePort | LoadBalancer | ExternalName
//!   db:
//!     x-shoal: {type: ExternalName, external_name: db.example.org}
//! ```

use std::collections::BTreeSet;

use serde_yaml_ng::Value;
use shoal_proto::service::Type as ServiceType;

use super::de::show;
use super::Stack;

/// A service's `x-shoal` settings (all unset when it has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShoalExtension {
    pub service_type: Option<ServiceType>,
    pub external_name: Option<String>,
}

/// An error: the key path and the message.
pub type ExtError = (String, String);

/// Reads `services.<service>.x-shoal`; errors name the key and the value.
pub fn of_service(stack: &Stack, service: &str) -> Result<ShoalExtension, ExtError> {
    let mut ext = ShoalExtension::default();
    let Some(v) = stack.extensions.get(service).and_then(|m| m.get("x-shoal")) else {
        return Ok(ext);
    };
    let path = format!("services.{service}.x-shoal");
    let Value::Mapping(m) = v else {
        return Err((
            path,
            format!(
                "invalid value {}: expected a mapping with type and external_name",
                show(v)
            ),
        ));
    };
    for (k, v) in m {
        let key = k.as_str().unwrap_or_default();
        let key_path = format!("{path}.{key}");
        let text = |v: &Value| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err((
                key_path.clone(),
                format!("invalid value {}: expected a string", show(other)),
            )),
        };
        match key {
            "type" => {
                let t = text(v)?;
                ext.service_type = Some(ServiceType::from_display(&t).ok_or_else(|| {
                    (
                        key_path.clone(),
                        format!("invalid value {t:?}: expected {}", ServiceType::choices()),
                    )
                })?);
            }
            "external_name" => ext.external_name = Some(text(v)?),
            _ => {
                return Err((
                    key_path.clone(),
                    format!(
                        "unknown field {}, expected `type` or `external_name`",
                        show(k)
                    ),
                ))
            }
        }
    }
    let external = ext.service_type == Some(ServiceType::ExternalName);
    match &ext.external_name {
        None if external => Err((
            format!("{path}.external_name"),
            "required with type ExternalName: the DNS name the service stands for".into(),
        )),
        Some(n) if !external => Err((
            format!("{path}.external_name"),
            format!("{n:?} is only allowed with type: ExternalName"),
        )),
        _ => Ok(ext),
    }
}

/// Checks every service's `x-shoal`, and what an ExternalName service must
/// not have (it runs no pods); returns the ExternalName services, which
/// need no image.
pub fn check(stack: &Stack) -> Result<BTreeSet<String>, ExtError> {
    let mut external = BTreeSet::new();
    for (name, svc) in &stack.file.services {
        let ext = of_service(stack, name)?;
        if ext.service_type != Some(ServiceType::ExternalName) {
            continue;
        }
        let path = |k: &str| format!("services.{name}.{k}");
        let why = "an ExternalName service runs no pods";
        if let Some(image) = &svc.image {
            return Err((
                path("image"),
                format!("{image:?}: {why}, so it takes no image"),
            ));
        }
        if !svc.ports.is_empty() {
            return Err((path("ports"), format!("{why}, so it publishes no ports")));
        }
        if let Some(d) = &svc.deploy {
            if d.replicas.is_some_and(|r| r > 0) {
                return Err((path("deploy.replicas"), why.to_string()));
            }
            if d.mode == Some(super::model::Mode::Global) {
                return Err((
                    path("deploy.mode"),
                    format!("{why}, so global mode does not apply"),
                ));
            }
        }
        external.insert(name.clone());
    }
    Ok(external)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_yaml_ng::Mapping;

    fn stack(service: &str, x_shoal: &str, extra: &str) -> Stack {
        let mut stack = Stack::default();
        let def: super::super::model::Service =
            serde_yaml_ng::from_str(if extra.is_empty() { "{}" } else { extra }).unwrap();
        stack.file.services.insert(service.into(), def);
        let mut ext = Mapping::new();
        ext.insert("x-shoal".into(), serde_yaml_ng::from_str(x_shoal).unwrap());
        stack.extensions.insert(service.into(), ext);
        stack
    }

    #[test]
    fn types_and_external_names_are_read() {
        let s = stack("web", "{type: LoadBalancer}", "");
        assert_eq!(
            of_service(&s, "web").unwrap().service_type,
            Some(ServiceType::LoadBalancer)
        );
        let s = stack(
            "db",
            "{type: ExternalName, external_name: db.example.org}",
            "",
        );
        let ext = of_service(&s, "db").unwrap();
        assert_eq!(ext.external_name.as_deref(), Some("db.example.org"));
        assert_eq!(check(&s).unwrap(), BTreeSet::from(["db".to_string()]));
        assert_eq!(of_service(&s, "other").unwrap(), ShoalExtension::default());
    }

    #[test]
    fn bad_values_name_the_key_and_value() {
        let err = |x: &str, extra: &str| check(&stack("web", x, extra)).unwrap_err();
        assert_eq!(
            err("{type: Headless}", ""),
            (
                "services.web.x-shoal.type".to_string(),
                "invalid value \"Headless\": expected ClusterIP, NodePort, LoadBalancer or ExternalName".to_string()
            )
        );
        assert_eq!(err("{type: 3}", "").0, "services.web.x-shoal.type");
        assert!(err("{typ: NodePort}", "")
            .1
            .contains("unknown field \"typ\""));
        assert_eq!(err("LoadBalancer", "").0, "services.web.x-shoal");
        assert_eq!(
            err("{type: ExternalName}", "").0,
            "services.web.x-shoal.external_name"
        );
        assert!(err("{external_name: a.b}", "")
            .1
            .contains("only allowed with type: ExternalName"));
        let (path, msg) = err(
            "{type: ExternalName, external_name: a.b}",
            "image: postgres",
        );
        assert_eq!(path, "services.web.image");
        assert!(msg.contains("takes no image"), "{msg}");
        assert_eq!(
            err(
                "{type: ExternalName, external_name: a.b}",
                "ports: [\"80\"]"
            )
            .0,
            "services.web.ports"
        );
    }
}
