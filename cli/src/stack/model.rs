//! The compose file as shoal reads it. Every struct with fixed keys denies
//! unknown ones, so a typo is an error; `x-*` keys are taken out before
//! deserializing (see `load`). Values are normalized on the way in:
//! durations in milliseconds, sizes in bytes, CPUs in nano-CPUs, ports and
//! volumes in their long form, environment and labels as maps.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::de::{self, Bytes, FileRef, Millis, NanoCpus, Port, ServiceVolume};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeFile {
    #[serde(deserialize_with = "de::opt_string")]
    pub version: Option<String>,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::null_default_map")]
    pub services: BTreeMap<String, Service>,
    #[serde(deserialize_with = "de::null_default_map")]
    pub networks: BTreeMap<String, Network>,
    #[serde(deserialize_with = "de::null_default_map")]
    pub volumes: BTreeMap<String, Volume>,
    #[serde(deserialize_with = "de::null_default_map")]
    pub secrets: BTreeMap<String, FileObject>,
    #[serde(deserialize_with = "de::null_default_map")]
    pub configs: BTreeMap<String, FileObject>,
}

/// `command` and `entrypoint`: a string (split by the runtime as Docker
/// does) or an exec-form list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Service {
    pub image: Option<String>,
    pub command: Option<StringOrList>,
    pub entrypoint: Option<StringOrList>,
    #[serde(deserialize_with = "de::env_map")]
    pub environment: BTreeMap<String, Option<String>>,
    /// Read at load time into `environment` (values set there win); empty
    /// in a loaded file.
    #[serde(deserialize_with = "de::string_list")]
    pub env_file: Vec<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "de::ports")]
    pub ports: Vec<Port>,
    #[serde(deserialize_with = "service_networks")]
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(deserialize_with = "de::volumes")]
    pub volumes: Vec<ServiceVolume>,
    pub healthcheck: Option<Healthcheck>,
    pub stop_grace_period: Option<Millis>,
    pub stop_signal: Option<String>,
    #[serde(deserialize_with = "de::opt_string")]
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    #[serde(deserialize_with = "de::file_refs")]
    pub secrets: Vec<FileRef>,
    #[serde(deserialize_with = "de::file_refs")]
    pub configs: Vec<FileRef>,
    #[serde(deserialize_with = "depends_on")]
    pub depends_on: BTreeMap<String, DependsOn>,
    pub deploy: Option<Deploy>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub tty: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub stdin_open: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub init: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub read_only: Option<bool>,
    #[serde(deserialize_with = "de::string_list")]
    pub dns: Vec<String>,
    #[serde(deserialize_with = "de::string_list")]
    pub dns_search: Vec<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub extra_hosts: BTreeMap<String, String>,
    pub logging: Option<Logging>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceNetwork {
    #[serde(deserialize_with = "de::string_list")]
    pub aliases: Vec<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
}

fn service_networks<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, ServiceNetwork>, D::Error> {
    use serde::de::Error;
    use serde_yaml_ng::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok(BTreeMap::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|v| {
                de::scalar_string(v)
                    .map(|n| (n, ServiceNetwork::default()))
                    .ok_or_else(|| {
                        D::Error::custom(format!(
                            "invalid value {}: expected a network name",
                            de::show(v)
                        ))
                    })
            })
            .collect(),
        v @ Value::Mapping(_) => {
            de::null_default_map(v).map_err(|e: serde_yaml_ng::Error| D::Error::custom(e))
        }
        v => Err(D::Error::custom(format!(
            "invalid value {}: expected a list or a mapping of networks",
            de::show(&v)
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // the names Compose gives them
pub enum Condition {
    #[default]
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DependsOn {
    pub condition: Condition,
    #[serde(deserialize_with = "de::opt_bool")]
    pub restart: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub required: Option<bool>,
}

fn depends_on<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, DependsOn>, D::Error> {
    use serde::de::Error;
    use serde_yaml_ng::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok(BTreeMap::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|v| {
                de::scalar_string(v)
                    .map(|n| (n, DependsOn::default()))
                    .ok_or_else(|| {
                        D::Error::custom(format!(
                            "invalid value {}: expected a service name",
                            de::show(v)
                        ))
                    })
            })
            .collect(),
        v @ Value::Mapping(_) => {
            de::null_default_map(v).map_err(|e: serde_yaml_ng::Error| D::Error::custom(e))
        }
        v => Err(D::Error::custom(format!(
            "invalid value {}: expected a list or a mapping of services",
            de::show(&v)
        ))),
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Healthcheck {
    /// Exec form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`; a
    /// string is read as `["CMD-SHELL", string]`.
    #[serde(deserialize_with = "health_test")]
    pub test: Vec<String>,
    pub interval: Option<Millis>,
    pub timeout: Option<Millis>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub retries: Option<u64>,
    pub start_period: Option<Millis>,
    pub start_interval: Option<Millis>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub disable: Option<bool>,
}

fn health_test<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use serde_yaml_ng::Value;
    let v = Value::deserialize(d)?;
    match v {
        Value::String(s) => Ok(vec!["CMD-SHELL".into(), s]),
        v => de::string_list(v).map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Replicated,
    Global,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Deploy {
    pub mode: Option<Mode>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub replicas: Option<u64>,
    pub placement: Option<Placement>,
    pub resources: Option<Resources>,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    #[serde(deserialize_with = "de::label_map")]
    pub labels: BTreeMap<String, String>,
    pub endpoint_mode: Option<EndpointMode>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Placement {
    #[serde(deserialize_with = "de::string_list")]
    pub constraints: Vec<String>,
    pub preferences: Vec<Preference>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Preference {
    pub spread: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    pub limits: Option<ResourceSpec>,
    pub reservations: Option<ResourceSpec>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceSpec {
    pub cpus: Option<NanoCpus>,
    pub memory: Option<Bytes>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    pub condition: Option<RestartCondition>,
    pub delay: Option<Millis>,
    #[serde(deserialize_with = "de::opt_u64")]
    pub max_attempts: Option<u64>,
    pub window: Option<Millis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Continue,
    Rollback,
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    StopFirst,
    StartFirst,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpdateConfig {
    #[serde(deserialize_with = "de::opt_u64")]
    pub parallelism: Option<u64>,
    pub delay: Option<Millis>,
    pub failure_action: Option<FailureAction>,
    pub monitor: Option<Millis>,
    #[serde(deserialize_with = "de::opt_f64")]
    pub max_failure_ratio: Option<f64>,
    pub order: Option<Order>,
}

/// `external: true`, or the v3.0–3.3 form `external: {name: N}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExternalName {
    pub name: Option<String>,
}

fn external<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<(Option<bool>, Option<String>), D::Error> {
    use serde::de::Error;
    use serde_yaml_ng::Value;
    match Value::deserialize(d)? {
        Value::Null => Ok((None, None)),
        v @ Value::Mapping(_) => {
            let e = ExternalName::deserialize(v).map_err(D::Error::custom)?;
            Ok((Some(true), e.name))
        }
        v => de::opt_bool(v).map(|b| (b, None)).map_err(D::Error::custom),
    }
}

macro_rules! external_field {
    ($t:ident) => {
        #[allow(dead_code)] // the stack translator uses it
        impl $t {
            /// Whether the object must already exist outside the stack.
            pub fn is_external(&self) -> bool {
                self.external == Some(true)
            }
        }
    };
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Network {
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub attachable: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub internal: Option<bool>,
    #[serde(deserialize_with = "de::opt_bool")]
    pub enable_ipv6: Option<bool>,
    #[serde(deserialize_with = "ext_bool")]
    pub external: Option<bool>,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub labels: BTreeMap<String, String>,
    /// Kept as written; not interpreted yet.
    pub ipam: Option<serde_yaml_ng::Value>,
}
external_field!(Network);

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Volume {
    pub driver: Option<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(deserialize_with = "ext_bool")]
    pub external: Option<bool>,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub labels: BTreeMap<String, String>,
}
external_field!(Volume);

/// A top-level secret or config: from a file (or, for configs, inline
/// content; for secrets, an environment variable), or external.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileObject {
    pub file: Option<String>,
    pub content: Option<String>,
    pub environment: Option<String>,
    #[serde(deserialize_with = "ext_bool")]
    pub external: Option<bool>,
    pub name: Option<String>,
    #[serde(deserialize_with = "de::label_map")]
    pub labels: BTreeMap<String, String>,
    pub driver: Option<String>,
    pub template_driver: Option<String>,
}
external_field!(FileObject);

/// Reads `external` into the boolean; a legacy `external: {name: N}` is
/// folded into `name` by `fold_external_names` before deserializing.
fn ext_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    external(d).map(|(b, _)| b)
}
