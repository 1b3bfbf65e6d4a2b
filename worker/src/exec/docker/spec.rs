//! Translation of an [`Assignment`] into Docker's container create body.
//! Pure functions, so the mapping is unit-tested without an engine.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount as DockerMount,
    MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use shoal_proto::defaults::labels;
use shoal_proto::port_config::{Protocol, PublishMode};
use shoal_proto::{mount, Assignment, ContainerSpec, HealthCheck, Mount, PodTemplate};

/// Docker wants durations in nanoseconds.
const NANOS_PER_MS: i64 = 1_000_000;

/// Docker's own default network, where Swarm runs the tasks of a service
/// that names no network. The engine starts a container there without its
/// embedded DNS (cheaper per container than on a user-defined network) and
/// refuses network-scoped aliases on it.
pub const DOCKER_DEFAULT_BRIDGE: &str = "bridge";

/// The networks a pod attaches to: the template's, or the node's pod network.
/// The first is attached at create time (API 1.41 accepts only one there).
pub fn pod_networks(template: &PodTemplate, default_network: &str) -> Vec<String> {
    let named: Vec<String> = template
        .networks
        .iter()
        .filter(|n| !n.is_empty())
        .cloned()
        .collect();
    if named.is_empty() {
        vec![default_network.to_string()]
    } else {
        named
    }
}

/// Seconds Docker waits between SIGTERM and SIGKILL, rounded up so a
/// sub-second grace period still gets a chance to stop cleanly.
pub fn grace_seconds(grace_ms: u64) -> i64 {
    i64::try_from(grace_ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// The labels shoal puts on a pod's container: the user's, then shoal's own
/// (which win, so a user label cannot disguise a container's pod).
pub fn container_labels(assignment: &Assignment, node_id: &str) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = assignment
        .template
        .as_ref()
        .and_then(|t| t.container.as_ref())
        .map(|c| c.labels.clone().into_iter().collect())
        .unwrap_or_default();
    let pod = assignment.pod.clone().unwrap_or_default();
    out.insert(labels::POD_ID.into(), pod.id);
    out.insert(labels::POD_NAME.into(), assignment.pod_name.clone());
    out.insert(labels::DEPLOYMENT_ID.into(), pod.deployment_id);
    out.insert(labels::SERVICE_NAME.into(), assignment.service_name.clone());
    out.insert(labels::NODE_ID.into(), node_id.to_string());
    out.insert(labels::SLOT.into(), pod.slot.to_string());
    if !assignment.stack.is_empty() {
        out.insert(labels::STACK.into(), assignment.stack.clone());
    }
    out
}

/// The create body for an assignment's container. `networks` comes from
/// [`pod_networks`]; the first one is attached here.
pub fn create_body(
    assignment: &Assignment,
    node_id: &str,
    networks: &[String],
) -> ContainerCreateBody {
    let template = assignment.template.clone().unwrap_or_default();
    let spec = template.container.clone().unwrap_or_default();
    let (entrypoint, cmd) = command_and_args(&spec);
    let (exposed_ports, port_bindings) = host_ports(&template);

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint,
        cmd,
        env: non_empty(spec.env.clone()),
        labels: Some(container_labels(assignment, node_id)),
        user: non_empty_str(&spec.user),
        working_dir: non_empty_str(&spec.workdir),
        hostname: non_empty_str(&spec.hostname),
        healthcheck: spec.healthcheck.as_ref().and_then(healthcheck),
        stop_timeout: (spec.stop_grace_period_ms > 0)
            .then(|| grace_seconds(spec.stop_grace_period_ms)),
        exposed_ports,
        host_config: Some(HostConfig {
            // shoal's orchestrator restarts pods (as new pods), never Docker.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            nano_cpus: (spec.limit_nano_cpus > 0).then_some(spec.limit_nano_cpus),
            memory: (spec.limit_memory_bytes > 0).then_some(spec.limit_memory_bytes),
            pids_limit: (spec.limit_pids > 0).then_some(spec.limit_pids),
            network_mode: networks.first().cloned(),
            port_bindings,
            mounts: (!spec.mounts.is_empty())
                .then(|| spec.mounts.iter().map(docker_mount).collect()),
            ..Default::default()
        }),
        networking_config: networks.first().map(|network| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.clone(),
                endpoint_settings(assignment, network),
            )])),
        }),
        ..Default::default()
    }
}

/// Named volumes that must already exist on the node.
pub fn external_volumes(template: &PodTemplate) -> impl Iterator<Item = &str> {
    template
        .container
        .iter()
        .flat_map(|c| c.mounts.iter())
        .filter(|m| m.external && m.r#type() == mount::Type::Volume)
        .map(|m| m.source.as_str())
}

/// Docker's form of a mount. A named volume that does not exist yet is
/// created by the engine at container create, with the driver and labels
/// given here (the stack's label, so its volumes can be found).
fn docker_mount(m: &Mount) -> DockerMount {
    let (typ, volume_options, tmpfs_options) = match m.r#type() {
        mount::Type::Volume => {
            let options = (!m.external).then(|| MountVolumeOptions {
                no_copy: m.volume_nocopy.then_some(true),
                labels: (!m.volume_labels.is_empty())
                    .then(|| m.volume_labels.clone().into_iter().collect()),
                driver_config: (!m.volume_driver.is_empty()).then(|| {
                    MountVolumeOptionsDriverConfig {
                        name: Some(m.volume_driver.clone()),
                        options: Some(m.volume_driver_opts.clone().into_iter().collect()),
                    }
                }),
                ..Default::default()
            });
            (MountType::VOLUME, options, None)
        }
        mount::Type::Bind => (MountType::BIND, None, None),
        mount::Type::Tmpfs => (
            MountType::TMPFS,
            None,
            (m.tmpfs_size_bytes > 0).then(|| MountTmpfsOptions {
                size_bytes: Some(m.tmpfs_size_bytes),
                ..Default::default()
            }),
        ),
    };
    DockerMount {
        target: Some(m.target.clone()),
        source: non_empty_str(&m.source),
        typ: Some(typ),
        read_only: m.read_only.then_some(true),
        volume_options,
        tmpfs_options,
        ..Default::default()
    }
}

/// The endpoint on a pod network: the service name as an alias, so Docker's
/// DNS resolves services on one host. A stack's service answers to valid DNS
/// names, its short name (`redis`) and `<service>.<stack>` (`redis.vote`),
/// and, for stacks written for Swarm, to its full name (`vote_redis`, which
/// Docker's resolver accepts although `_` is not valid in a DNS label).
/// The template's own aliases for `network` (a stack's `aliases:`) come
/// first. On Docker's default bridge there are none: it has no DNS to
/// answer them and the engine refuses them there.
pub fn endpoint_settings(assignment: &Assignment, network: &str) -> EndpointSettings {
    if network == DOCKER_DEFAULT_BRIDGE {
        return EndpointSettings::default();
    }
    let full = assignment.service_name.clone();
    let mut aliases: Vec<String> = assignment
        .template
        .iter()
        .flat_map(|t| t.network_aliases.iter())
        .filter(|a| a.network == network)
        .flat_map(|a| a.aliases.iter().cloned())
        .collect();
    if let Some(short) = full
        .strip_prefix(&format!("{}_", assignment.stack))
        .filter(|s| !assignment.stack.is_empty() && !s.is_empty())
    {
        aliases.push(short.to_string());
        aliases.push(format!("{short}.{}", assignment.stack));
    }
    if !full.is_empty() {
        aliases.push(full);
    }
    EndpointSettings {
        aliases: (!aliases.is_empty()).then_some(aliases),
        ..Default::default()
    }
}

/// Swarm's semantics: `command` replaces the image's ENTRYPOINT (and with it
/// the image's CMD), `args` replace CMD.
fn command_and_args(spec: &ContainerSpec) -> (Option<Vec<String>>, Option<Vec<String>>) {
    (
        non_empty(spec.command.clone()),
        non_empty(spec.args.clone()),
    )
}

/// Host-mode ports: the container binds the published port itself.
type PortBindings = Option<HashMap<String, Option<Vec<PortBinding>>>>;
fn host_ports(template: &PodTemplate) -> (Option<Vec<String>>, PortBindings) {
    let mut exposed = Vec::new();
    let mut bindings = HashMap::new();
    for port in &template.host_ports {
        if port.publish_mode() != PublishMode::Host || port.target_port == 0 {
            continue;
        }
        let proto = match port.protocol() {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        let key = format!("{}/{proto}", port.target_port);
        let published = if port.published_port == 0 {
            port.target_port
        } else {
            port.published_port
        };
        exposed.push(key.clone());
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                host_port: Some(published.to_string()),
            });
    }
    if exposed.is_empty() {
        (None, None)
    } else {
        (Some(exposed), Some(bindings))
    }
}

/// Docker's healthcheck from the spec's; an empty test keeps the image's
/// own, `["NONE"]` disables it, zero durations mean Docker's defaults.
fn healthcheck(check: &HealthCheck) -> Option<HealthConfig> {
    if check.test.is_empty() {
        return None;
    }
    let nanos = |ms: u64| {
        (ms > 0).then(|| i64::try_from(ms).unwrap_or(i64::MAX / NANOS_PER_MS) * NANOS_PER_MS)
    };
    Some(HealthConfig {
        test: Some(check.test.clone()),
        interval: nanos(check.interval_ms),
        timeout: nanos(check.timeout_ms),
        retries: (check.retries > 0).then_some(i64::from(check.retries)),
        start_period: nanos(check.start_period_ms),
        start_interval: None,
    })
}

fn non_empty(v: Vec<String>) -> Option<Vec<String>> {
    (!v.is_empty()).then_some(v)
}

fn non_empty_str(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{Pod, PortConfig};

    fn assignment(spec: ContainerSpec, host_ports: Vec<PortConfig>) -> Assignment {
        Assignment {
            pod: Some(Pod {
                id: "p1".into(),
                deployment_id: "d1".into(),
                slot: 2,
                ..Default::default()
            }),
            template: Some(PodTemplate {
                container: Some(spec),
                host_ports,
                ..Default::default()
            }),
            pod_name: "web.2".into(),
            service_name: "web".into(),
            stack: "shop".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_body_carries_labels_restart_no_and_network() {
        let a = assignment(
            ContainerSpec {
                image: "img:v1".into(),
                labels: [(labels::POD_ID.to_string(), "forged".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            vec![],
        );
        let body = create_body(&a, "n1", &["shoal".into()]);
        let labels_out = body.labels.unwrap();
        assert_eq!(labels_out[labels::POD_ID], "p1");
        assert_eq!(labels_out[labels::POD_NAME], "web.2");
        assert_eq!(labels_out[labels::NODE_ID], "n1");
        assert_eq!(labels_out[labels::SLOT], "2");
        assert_eq!(labels_out[labels::STACK], "shop");
        assert_eq!(labels_out[labels::SERVICE_NAME], "web");
        assert_eq!(labels_out[labels::DEPLOYMENT_ID], "d1");
        let host = body.host_config.unwrap();
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        assert_eq!(host.network_mode.as_deref(), Some("shoal"));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints["shoal"].aliases, Some(vec!["web".to_string()]));
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd, None);
    }

    #[test]
    fn command_overrides_entrypoint_and_args_override_cmd() {
        let spec = ContainerSpec {
            image: "i".into(),
            command: vec!["/bin/sh".into(), "-c".into()],
            args: vec!["echo hi".into()],
            ..Default::default()
        };
        let body = create_body(&assignment(spec, vec![]), "n", &[]);
        assert_eq!(body.entrypoint.unwrap(), vec!["/bin/sh", "-c"]);
        assert_eq!(body.cmd.unwrap(), vec!["echo hi"]);

        let args_only = ContainerSpec {
            image: "i".into(),
            args: vec!["-p".into(), "81".into()],
            ..Default::default()
        };
        let body = create_body(&assignment(args_only, vec![]), "n", &[]);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.cmd.unwrap(), vec!["-p", "81"]);
    }

    #[test]
    fn healthcheck_limits_and_stop_timeout_are_mapped() {
        let spec = ContainerSpec {
            image: "i".into(),
            healthcheck: Some(HealthCheck {
                test: vec!["CMD".into(), "true".into()],
                interval_ms: 500,
                retries: 2,
                ..Default::default()
            }),
            stop_grace_period_ms: 1_500,
            limit_nano_cpus: 500_000_000,
            limit_memory_bytes: 64 << 20,
            ..Default::default()
        };
        let body = create_body(&assignment(spec, vec![]), "n", &[]);
        let hc = body.healthcheck.unwrap();
        assert_eq!(hc.interval, Some(500_000_000));
        assert_eq!(hc.timeout, None);
        assert_eq!(hc.retries, Some(2));
        assert_eq!(body.stop_timeout, Some(2));
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));

        let disabled = ContainerSpec {
            image: "i".into(),
            healthcheck: Some(HealthCheck {
                test: vec!["NONE".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = create_body(&assignment(disabled, vec![]), "n", &[]);
        assert_eq!(body.healthcheck.unwrap().test.unwrap(), vec!["NONE"]);
    }

    #[test]
    fn only_host_mode_ports_are_bound() {
        let ports = vec![
            PortConfig {
                target_port: 80,
                published_port: 8080,
                publish_mode: PublishMode::Host as i32,
                ..Default::default()
            },
            PortConfig {
                target_port: 81,
                published_port: 8081,
                publish_mode: PublishMode::Ingress as i32,
                ..Default::default()
            },
        ];
        let body = create_body(
            &assignment(
                ContainerSpec {
                    image: "i".into(),
                    ..Default::default()
                },
                ports,
            ),
            "n",
            &[],
        );
        assert_eq!(body.exposed_ports.unwrap(), vec!["80/tcp"]);
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(bindings.len(), 1);
        let b = bindings["80/tcp"].as_ref().unwrap();
        assert_eq!(b[0].host_port.as_deref(), Some("8080"));
    }

    #[test]
    fn template_networks_replace_the_default() {
        let t = PodTemplate {
            networks: vec!["stack_default".into()],
            ..Default::default()
        };
        assert_eq!(pod_networks(&t, "shoal"), vec!["stack_default"]);
        assert_eq!(
            pod_networks(&PodTemplate::default(), "shoal"),
            vec!["shoal"]
        );
    }

    #[test]
    fn mounts_reach_docker_with_the_volume_labels_and_tmpfs_size() {
        let mounts = vec![
            Mount {
                source: "vote_data".into(),
                target: "/data".into(),
                volume_labels: [(labels::STACK.to_string(), "vote".to_string())]
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
            Mount {
                r#type: mount::Type::Tmpfs as i32,
                target: "/scratch".into(),
                tmpfs_size_bytes: 1 << 20,
                ..Default::default()
            },
            Mount {
                source: "shared".into(),
                target: "/shared".into(),
                external: true,
                read_only: true,
                ..Default::default()
            },
        ];
        let a = assignment(
            ContainerSpec {
                image: "img".into(),
                mounts,
                ..Default::default()
            },
            vec![],
        );
        let body = create_body(&a, "n1", &["shoal".into()]);
        let m = body.host_config.unwrap().mounts.unwrap();
        assert_eq!(m[0].typ, Some(MountType::VOLUME));
        assert_eq!(m[0].source.as_deref(), Some("vote_data"));
        let opts = m[0].volume_options.clone().unwrap();
        assert_eq!(opts.labels.unwrap()[labels::STACK], "vote");
        assert_eq!(m[1].typ, Some(MountType::TMPFS));
        assert_eq!(
            m[1].tmpfs_options.clone().unwrap().size_bytes,
            Some(1 << 20)
        );
        assert!(
            m[2].volume_options.is_none(),
            "an external volume is never created"
        );
        assert_eq!(m[2].read_only, Some(true));
        let template = a.template.unwrap();
        assert_eq!(
            external_volumes(&template).collect::<Vec<_>>(),
            vec!["shared"]
        );
    }
}

#[cfg(test)]
mod alias_tests {
    use super::*;

    #[test]
    fn stack_services_answer_to_their_short_name_too() {
        let a = Assignment {
            service_name: "vote_redis".into(),
            stack: "vote".into(),
            ..Default::default()
        };
        assert_eq!(
            endpoint_settings(&a, "vote_default").aliases.unwrap(),
            vec![
                "redis".to_string(),
                "redis.vote".to_string(),
                "vote_redis".to_string()
            ]
        );
        let plain = Assignment {
            service_name: "web".into(),
            ..Default::default()
        };
        assert_eq!(
            endpoint_settings(&plain, "shoal").aliases.unwrap(),
            vec!["web".to_string()]
        );
    }

    #[test]
    fn a_networks_own_aliases_come_first_and_only_on_that_network() {
        let a = Assignment {
            service_name: "shop_api".into(),
            stack: "shop".into(),
            template: Some(PodTemplate {
                network_aliases: vec![shoal_proto::NetworkAliases {
                    network: "shop_front".into(),
                    aliases: vec!["backend".into()],
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let front = endpoint_settings(&a, "shop_front").aliases.unwrap();
        assert_eq!(front, vec!["backend", "api", "api.shop", "shop_api"]);
        let back = endpoint_settings(&a, "shop_back").aliases.unwrap();
        assert_eq!(back, vec!["api", "api.shop", "shop_api"]);
    }

    #[test]
    fn no_alias_on_dockers_default_bridge() {
        let a = Assignment {
            service_name: "web".into(),
            template: Some(PodTemplate {
                network_aliases: vec![shoal_proto::NetworkAliases {
                    network: DOCKER_DEFAULT_BRIDGE.into(),
                    aliases: vec!["www".into()],
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(endpoint_settings(&a, "shoal").aliases.unwrap(), vec!["web"]);
        assert_eq!(endpoint_settings(&a, DOCKER_DEFAULT_BRIDGE).aliases, None);
        let body = create_body(&a, "n1", &[DOCKER_DEFAULT_BRIDGE.to_string()]);
        assert_eq!(
            body.host_config.unwrap().network_mode.as_deref(),
            Some(DOCKER_DEFAULT_BRIDGE)
        );
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints[DOCKER_DEFAULT_BRIDGE].aliases, None);
    }
}
