//! From a loaded stack to the ServiceSpecs `stack deploy` creates or
//! updates: one service per Compose service, named `<stack>_<service>`,
//! attached to the stack's networks (`<stack>_<network>`, `<stack>_default`
//! when a service names none), carrying the stack's name.
//!
//! Named volumes become Docker volumes `<stack>_<volume>` (labelled with
//! the stack, created by each node on first use and kept by `stack rm`, as
//! Docker does); external volumes and networks keep their own names and must
//! already exist.
//!
//! What this build cannot run yet is refused with an error naming the key,
//! stack's secrets and configs are created by `stack deploy` before its
//! services (see `super::secrets`).

use shoal_proto::defaults::{self as d, labels};
use shoal_proto::{
    mount,
    port_config::{Protocol, PublishMode},
    restart_policy::Condition,
    service::Type as ServiceType,
    update_config::{FailureAction, Order},
    ContainerSpec, DeploymentMode, EndpointMode, HealthCheck, Mount, NetworkAliases, Placement,
    PortConfig, RestartPolicy, ServiceSpec, UpdateConfig,
};

use super::de::{MountType, ServiceVolume};
use super::model::{self, Service, StringOrList};
use super::shoal_ext::{self, ShoalExtension};
use super::Stack;
use crate::commands::secret::Kind;

/// A translation error: the key path and what is wrong.
fn refuse(path: String, what: &str) -> String {
    format!("{path}: {what}")
}

/// Exec-form words of a `command` or `entrypoint` (a string is split on
/// whitespace; quote-aware splitting is not needed by the examples).
fn words(v: &Option<StringOrList>) -> Vec<String> {
    match v {
        None => vec![],
        Some(StringOrList::List(l)) => l.clone(),
        Some(StringOrList::String(s)) => s.split_whitespace().map(str::to_string).collect(),
    }
}

/// The name of a stack network as Docker knows it.
pub fn network_name(stack: &Stack, stack_name: &str, network: &str) -> String {
    match stack.file.networks.get(network) {
        Some(n) if n.external == Some(true) => {
            n.name.clone().unwrap_or_else(|| network.to_string())
        }
        Some(n) if n.name.is_some() => n.name.clone().unwrap_or_default(),
        _ => format!("{stack_name}_{network}"),
    }
}

/// Whether a top-level network is declared `external: true`.
fn is_external_network(stack: &Stack, network: &str) -> bool {
    stack
        .file
        .networks
        .get(network)
        .is_some_and(|n| n.external == Some(true))
}

/// A service's `volumes` as mounts. `path` names the key in errors.
fn mounts(
    stack: &Stack,
    stack_name: &str,
    volumes: &[ServiceVolume],
    path: &dyn Fn(&str) -> String,
) -> Result<Vec<Mount>, String> {
    volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let mut m = Mount {
                target: v.target.clone(),
                read_only: v.read_only == Some(true),
                ..Default::default()
            };
            match v.kind {
                MountType::Volume => {
                    m.r#type = mount::Type::Volume as i32;
                    m.volume_nocopy = v.volume.as_ref().and_then(|o| o.nocopy) == Some(true);
                    if let Some(src) = v.source.as_deref().filter(|s| !s.is_empty()) {
                        named_volume(stack, stack_name, src, &mut m);
                    }
                }
                MountType::Bind => {
                    m.r#type = mount::Type::Bind as i32;
                    let src = v.source.clone().unwrap_or_default();
                    if !src.starts_with('/') {
                        return Err(refuse(
                            path(&format!("volumes[{i}]")),
                            &format!("bind source {src:?} is not an absolute path of the node"),
                        ));
                    }
                    m.source = src;
                }
                MountType::Tmpfs => {
                    m.r#type = mount::Type::Tmpfs as i32;
                    m.tmpfs_size_bytes = v
                        .tmpfs
                        .as_ref()
                        .and_then(|t| t.size)
                        .map_or(0, |b| b.0 as i64);
                }
                MountType::Npipe => {
                    return Err(refuse(
                        path(&format!("volumes[{i}].type")),
                        "npipe mounts exist only on Windows hosts",
                    ))
                }
            }
            Ok(m)
        })
        .collect()
}

/// Fills a mount of the top-level volume `src`: its Docker name, and how a
/// node creates it (or that it must exist, when external).
fn named_volume(stack: &Stack, stack_name: &str, src: &str, m: &mut Mount) {
    let def = stack.file.volumes.get(src).cloned().unwrap_or_default();
    if def.external == Some(true) {
        m.source = def.name.unwrap_or_else(|| src.to_string());
        m.external = true;
        return;
    }
    m.source = def.name.unwrap_or_else(|| format!("{stack_name}_{src}"));
    m.volume_driver = def.driver.unwrap_or_default();
    m.volume_driver_opts = def.driver_opts.into_iter().collect();
    m.volume_labels = def.labels.into_iter().collect();
    m.volume_labels
        .insert(labels::STACK.to_string(), stack_name.to_string());
}

/// `deploy.resources.limits` or `.reservations` as the API counts them;
/// 0 where the file says nothing.
struct Amounts {
    nano_cpus: i64,
    memory_bytes: i64,
    pids: i64,
}

impl Amounts {
    fn of(spec: &Option<model::ResourceSpec>) -> Amounts {
        let spec = spec.clone().unwrap_or_default();
        Amounts {
            nano_cpus: spec.cpus.map_or(0, |c| c.0 as i64),
            memory_bytes: spec.memory.map_or(0, |m| m.0 as i64),
            pids: spec.pids.map_or(0, |p| p as i64),
        }
    }
}

fn update_config(u: &Option<model::UpdateConfig>) -> UpdateConfig {
    let u = u.clone().unwrap_or_default();
    UpdateConfig {
        parallelism: u.parallelism.unwrap_or(d::UPDATE_PARALLELISM),
        delay_ms: u.delay.map_or(d::UPDATE_DELAY_MS, |m| m.0),
        failure_action: u.failure_action.map_or(FailureAction::Pause, |a| match a {
            model::FailureAction::Continue => FailureAction::Continue,
            model::FailureAction::Rollback => FailureAction::Rollback,
            model::FailureAction::Pause => FailureAction::Pause,
        }) as i32,
        monitor_ms: u.monitor.map_or(d::UPDATE_MONITOR_MS, |m| m.0),
        max_failure_ratio: u
            .max_failure_ratio
            .map_or(d::UPDATE_MAX_FAILURE_RATIO, |r| r as f32),
        order: u.order.map_or(Order::StopFirst, |o| match o {
            model::Order::StopFirst => Order::StopFirst,
            model::Order::StartFirst => Order::StartFirst,
        }) as i32,
    }
}

fn service_spec(
    stack: &Stack,
    stack_name: &str,
    name: &str,
    s: &Service,
) -> Result<ServiceSpec, String> {
    let path = |k: &str| format!("services.{name}.{k}");
    let secrets = super::secrets::references(stack, stack_name, name, Kind::Secret, &s.secrets)?;
    let configs = super::secrets::references(stack, stack_name, name, Kind::Config, &s.configs)?;
    let deploy = s.deploy.clone().unwrap_or_default();
    let global = deploy.mode == Some(model::Mode::Global);
    let healthcheck = s.healthcheck.as_ref().map(|h| {
        if h.disable == Some(true) {
            HealthCheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }
        } else {
            HealthCheck {
                test: h.test.clone(),
                interval_ms: h.interval.map_or(d::HEALTH_INTERVAL_MS, |m| m.0),
                timeout_ms: h.timeout.map_or(d::HEALTH_TIMEOUT_MS, |m| m.0),
                retries: h.retries.map_or(d::HEALTH_RETRIES, |r| r as u32),
                start_period_ms: h.start_period.map_or(d::HEALTH_START_PERIOD_MS, |m| m.0),
            }
        }
    });
    let ext = service_kind(name, s, &deploy, stack)?;
    if ext.service_type == Some(ServiceType::ExternalName) {
        return Ok(external_name_spec(stack_name, name, &deploy, ext));
    }
    let resources = deploy.resources.clone().unwrap_or_default();
    let limits = Amounts::of(&resources.limits);
    let reservations = Amounts::of(&resources.reservations);
    let container = ContainerSpec {
        image: s.image.clone().unwrap_or_default(),
        command: words(&s.entrypoint),
        args: words(&s.command),
        env: s
            .environment
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect(),
        labels: s.labels.clone().into_iter().collect(),
        user: s.user.clone().unwrap_or_default(),
        workdir: s.working_dir.clone().unwrap_or_default(),
        hostname: s.hostname.clone().unwrap_or_default(),
        stop_grace_period_ms: s.stop_grace_period.map_or(d::STOP_GRACE_PERIOD_MS, |m| m.0),
        healthcheck,
        limit_nano_cpus: limits.nano_cpus,
        limit_memory_bytes: limits.memory_bytes,
        limit_pids: limits.pids,
        reserve_nano_cpus: reservations.nano_cpus,
        reserve_memory_bytes: reservations.memory_bytes,
        mounts: mounts(stack, stack_name, &s.volumes, &path)?,
        secrets,
        configs,
    };
    let ports = s
        .ports
        .iter()
        .map(|p| PortConfig {
            name: String::new(),
            protocol: if p.protocol == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            } as i32,
            target_port: u32::from(p.target),
            published_port: p.published.map_or(0, u32::from),
            publish_mode: if p.mode == "host" {
                PublishMode::Host
            } else {
                PublishMode::Ingress
            } as i32,
        })
        .collect();
    let networks = if s.networks.is_empty() {
        vec![format!("{stack_name}_default")]
    } else {
        s.networks
            .keys()
            .map(|n| network_name(stack, stack_name, n))
            .collect()
    };
    let network_aliases = s
        .networks
        .iter()
        .filter_map(|(n, attachment)| {
            let aliases = attachment.aliases.clone();
            (!aliases.is_empty()).then(|| NetworkAliases {
                network: network_name(stack, stack_name, n),
                aliases,
            })
        })
        .collect();
    let external_networks = s
        .networks
        .keys()
        .filter(|n| is_external_network(stack, n))
        .map(|n| network_name(stack, stack_name, n))
        .collect();
    let restart = deploy.restart_policy.clone().unwrap_or_default();
    let placement = deploy.placement.clone().unwrap_or_default();
    Ok(ServiceSpec {
        name: format!("{stack_name}_{name}"),
        labels: deploy.labels.clone().into_iter().collect(),
        mode: if global {
            DeploymentMode::Global
        } else {
            DeploymentMode::Replicated
        } as i32,
        replicas: if global {
            0
        } else {
            deploy.replicas.unwrap_or(d::REPLICAS)
        },
        container: Some(container),
        ports,
        restart_policy: Some(RestartPolicy {
            condition: match restart.condition.unwrap_or_default() {
                model::RestartCondition::Any => Condition::Any,
                model::RestartCondition::OnFailure => Condition::OnFailure,
                model::RestartCondition::None => Condition::None,
            } as i32,
            delay_ms: restart.delay.map_or(d::RESTART_DELAY_MS, |m| m.0),
            max_attempts: restart.max_attempts.unwrap_or(d::RESTART_MAX_ATTEMPTS),
            window_ms: restart.window.map_or(d::RESTART_WINDOW_MS, |m| m.0),
        }),
        update_config: Some(update_config(&deploy.update_config)),
        rollback_config: Some(update_config(&deploy.rollback_config)),
        placement: Some(Placement {
            constraints: placement.constraints.clone(),
            max_replicas_per_node: placement.max_replicas_per_node.unwrap_or(0),
            spread: placement
                .preferences
                .iter()
                .map(|p| p.spread.clone())
                .collect(),
        }),
        networks,
        external_networks,
        network_aliases,
        stack: stack_name.to_string(),
        endpoint_mode: endpoint_mode(&deploy) as i32,
        r#type: ext.service_type.map(|t| t as i32),
        external_name: String::new(),
    })
}

/// What a service waits for before its first deployment: each dependency's
/// service name (`<stack>_<service>`) and the condition, from `depends_on`.
pub fn dependencies(
    stack: &Stack,
    stack_name: &str,
) -> std::collections::BTreeMap<String, Vec<(String, model::Condition)>> {
    stack
        .file
        .services
        .iter()
        .map(|(name, s)| {
            let deps = s
                .depends_on
                .iter()
                .map(|(dep, d)| (format!("{stack_name}_{dep}"), d.condition))
                .collect();
            (format!("{stack_name}_{name}"), deps)
        })
        .collect()
}

fn endpoint_mode(deploy: &model::Deploy) -> EndpointMode {
    match deploy.endpoint_mode.unwrap_or_default() {
        model::EndpointMode::Vip => EndpointMode::Vip,
        model::EndpointMode::Dnsrr => EndpointMode::Dnsrr,
    }
}

/// The service's `x-shoal` type, checked against its ports and endpoint
/// mode here, so a contradiction is refused by key before anything is
/// deployed.
fn service_kind(
    name: &str,
    s: &Service,
    deploy: &model::Deploy,
    stack: &Stack,
) -> Result<ShoalExtension, String> {
    let ext = shoal_ext::of_service(stack, name).map_err(|(p, m)| refuse(p, &m))?;
    let path = format!("services.{name}.x-shoal.type");
    let ingress = s.ports.iter().any(|p| p.mode != "host");
    let dnsrr = endpoint_mode(deploy) == EndpointMode::Dnsrr;
    match ext.service_type {
        Some(ServiceType::ClusterIp) if ingress => Err(refuse(path, "ClusterIP cannot publish ports in ingress mode (a port published in ingress mode is a node port): use NodePort or mode: host")),
        Some(ServiceType::NodePort) if !ingress => Err(refuse(path, "NodePort needs a port published in ingress mode under ports")),
        Some(ServiceType::LoadBalancer) if dnsrr => Err(refuse(path, "LoadBalancer needs deploy.endpoint_mode vip (a dnsrr service is headless)")),
        Some(ServiceType::ExternalName) if dnsrr => Err(refuse(path, "ExternalName does not take deploy.endpoint_mode dnsrr (its name resolves to its external name)")),
        _ => Ok(ext),
    }
}

/// An ExternalName service: a name for `external_name`, with no pods (the
/// parser refused an image, ports and replicas for it).
fn external_name_spec(
    stack_name: &str,
    name: &str,
    deploy: &model::Deploy,
    ext: ShoalExtension,
) -> ServiceSpec {
    ServiceSpec {
        name: format!("{stack_name}_{name}"),
        labels: deploy.labels.clone().into_iter().collect(),
        r#type: ext.service_type.map(|t| t as i32),
        external_name: ext.external_name.unwrap_or_default(),
        stack: stack_name.to_string(),
        ..Default::default()
    }
}

/// Every service of the stack, in dependency order (a service after what it
/// depends on; the parser refused cycles).
pub fn services(stack: &Stack, stack_name: &str) -> Result<Vec<ServiceSpec>, String> {
    let mut order: Vec<&String> = Vec::new();
    let mut pending: Vec<&String> = stack.file.services.keys().collect();
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|name| {
            let deps = &stack.file.services[*name].depends_on;
            if deps.keys().all(|d| order.contains(&d)) {
                order.push(name);
                false
            } else {
                true
            }
        });
        if pending.len() == before {
            // Unknown dependencies were refused by the parser; keep the rest.
            order.append(&mut pending);
        }
    }
    order
        .into_iter()
        .map(|name| service_spec(stack, stack_name, name, &stack.file.services[name]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn load(text: &str) -> Stack {
        let dir = std::env::temp_dir().join(format!("shoal-translate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.yml", text.len()));
        std::fs::write(&file, text).unwrap();
        let env = super::super::build_env(&file, Vec::<(String, String)>::new()).unwrap();
        let stack = super::super::load(&[PathBuf::from(&file)], &env).unwrap();
        std::fs::remove_file(&file).ok();
        stack
    }

    #[test]
    fn services_become_specs_named_after_the_stack() {
        let stack = load(
            "services:\n  db:\n    image: postgres\n  web:\n    image: nginx\n    command: [\"nginx\", \"-g\", \"daemon off;\"]\n    environment:\n      A: \"1\"\n    ports: [\"8080:80\"]\n    depends_on: [db]\n    networks: [front]\n    deploy:\n      replicas: 3\n      update_config:\n        parallelism: 2\n        order: start-first\n      restart_policy:\n        condition: on-failure\n        delay: 2s\nnetworks:\n  front: {}\n",
        );
        let specs = services(&stack, "shop").unwrap();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["shop_db", "shop_web"], "dependencies first");
        let web = &specs[1];
        assert_eq!(web.replicas, 3);
        assert_eq!(web.stack, "shop");
        assert_eq!(web.networks, vec!["shop_front"]);
        assert_eq!(specs[0].networks, vec!["shop_default"]);
        let c = web.container.as_ref().unwrap();
        assert_eq!(c.args, vec!["nginx", "-g", "daemon off;"]);
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(web.ports[0].published_port, 8080);
        let u = web.update_config.unwrap();
        assert_eq!((u.parallelism, u.order()), (2, Order::StartFirst));
        let r = web.restart_policy.unwrap();
        assert_eq!((r.condition(), r.delay_ms), (Condition::OnFailure, 2_000));
    }

    #[test]
    fn volumes_become_mounts_named_after_the_stack() {
        let stack = load(
            "services:\n  db:\n    image: postgres\n    volumes:\n      - data:/var/lib/postgresql/data\n      - /srv/conf:/etc/conf:ro\n      - type: tmpfs\n        target: /scratch\n        tmpfs: {size: 16M}\n      - shared:/shared\n      - /anon\n    networks: [back, outside]\nvolumes:\n  data:\n    labels: {tier: db}\n  shared:\n    external: true\n    name: team-shared\nnetworks:\n  back: {}\n  outside:\n    external: true\n",
        );
        let spec = &services(&stack, "vote").unwrap()[0];
        let m = &spec.container.as_ref().unwrap().mounts;
        assert_eq!(m.len(), 5);
        assert_eq!(
            (m[0].r#type(), m[0].source.as_str(), m[0].target.as_str()),
            (mount::Type::Volume, "vote_data", "/var/lib/postgresql/data")
        );
        assert_eq!(m[0].volume_labels[labels::STACK], "vote");
        assert_eq!(m[0].volume_labels["tier"], "db");
        assert!(!m[0].external);
        assert_eq!(
            (m[1].r#type(), m[1].source.as_str(), m[1].read_only),
            (mount::Type::Bind, "/srv/conf", true)
        );
        assert_eq!(
            (m[2].r#type(), m[2].tmpfs_size_bytes),
            (mount::Type::Tmpfs, 16 << 20)
        );
        assert_eq!((m[3].source.as_str(), m[3].external), ("team-shared", true));
        assert_eq!((m[4].source.as_str(), m[4].target.as_str()), ("", "/anon"));
        assert_eq!(spec.networks, vec!["vote_back", "outside"]);
        assert_eq!(spec.external_networks, vec!["outside"]);
    }

    #[test]
    fn aliases_preferences_reservations_and_pids_are_carried() {
        let stack = load("services:\n  api:\n    image: busybox\n    networks:\n      front:\n        aliases: [backend]\n      back: {}\n    deploy:\n      placement:\n        preferences:\n          - spread: node.labels.zone\n      resources:\n        limits: {pids: 100}\n        reservations: {cpus: \"0.25\", memory: 64M}\nnetworks:\n  front: {}\n  back: {}\n");
        let spec = &services(&stack, "shop").unwrap()[0];
        assert_eq!(spec.network_aliases.len(), 1);
        assert_eq!(spec.network_aliases[0].network, "shop_front");
        assert_eq!(spec.network_aliases[0].aliases, vec!["backend"]);
        assert_eq!(
            spec.placement.as_ref().unwrap().spread,
            vec!["node.labels.zone"]
        );
        let c = spec.container.as_ref().unwrap();
        assert_eq!(
            (c.limit_pids, c.reserve_nano_cpus, c.reserve_memory_bytes),
            (100, 250_000_000, 64 << 20)
        );
    }

    #[test]
    fn global_mode_has_no_replicas() {
        let stack =
            load("services:\n  agent:\n    image: busybox\n    deploy:\n      mode: global\n");
        let spec = &services(&stack, "mon").unwrap()[0];
        assert_eq!((spec.mode(), spec.replicas), (DeploymentMode::Global, 0));
    }

    #[test]
    fn endpoint_mode_and_x_shoal_types_are_carried_over() {
        let stack = load(
            "services:\n  web:\n    image: nginx\n    ports: [\"8080:80\"]\n  dns:\n    image: dns\n    deploy:\n      endpoint_mode: dnsrr\n  lb:\n    image: nginx\n    x-shoal:\n      type: LoadBalancer\n  db:\n    x-shoal: {type: ExternalName, external_name: db.example.org}\n    deploy:\n      labels: [tier=data]\n",
        );
        let specs = services(&stack, "shop").unwrap();
        let by = |n: &str| specs.iter().find(|s| s.name == n).unwrap();
        assert_eq!(
            by("shop_web").r#type,
            None,
            "NodePort follows from the port"
        );
        assert_eq!(by("shop_dns").endpoint_mode(), EndpointMode::Dnsrr);
        assert_eq!(by("shop_lb").r#type(), ServiceType::LoadBalancer);
        let db = by("shop_db");
        assert_eq!(db.r#type(), ServiceType::ExternalName);
        assert_eq!(db.external_name, "db.example.org");
        assert_eq!((db.container.as_ref(), db.replicas), (None, 0));
        assert_eq!(db.labels["tier"], "data");
        assert_eq!(db.stack, "shop");
    }

    #[test]
    fn x_shoal_types_that_contradict_the_file_are_refused_by_key() {
        let err = |text: &str| services(&load(text), "s").unwrap_err();
        assert_eq!(
            err("services:\n  web:\n    image: nginx\n    x-shoal: {type: NodePort}\n"),
            "services.web.x-shoal.type: NodePort needs a port published in ingress mode under ports"
        );
        assert!(err("services:\n  web:\n    image: nginx\n    ports: [\"80:80\"]\n    x-shoal: {type: ClusterIP}\n")
            .starts_with("services.web.x-shoal.type: ClusterIP cannot publish ports"));
        assert!(err("services:\n  web:\n    image: nginx\n    deploy: {endpoint_mode: dnsrr}\n    x-shoal: {type: LoadBalancer}\n")
            .starts_with("services.web.x-shoal.type: LoadBalancer needs deploy.endpoint_mode vip"));
    }

    #[test]
    fn a_bad_x_shoal_type_fails_the_load_naming_key_and_value() {
        let dir = std::env::temp_dir().join(format!("shoal-xshoal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("bad.yml");
        std::fs::write(
            &file,
            "services:\n  web:\n    image: nginx\n    x-shoal:\n      type: Headless\n",
        )
        .unwrap();
        let env = super::super::build_env(&file, Vec::<(String, String)>::new()).unwrap();
        let err = super::super::load(std::slice::from_ref(&file), &env)
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            err.contains("services.web.x-shoal.type: invalid value \"Headless\""),
            "{err}"
        );
    }
}
