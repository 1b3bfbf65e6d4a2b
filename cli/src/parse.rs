//! Turning flags into API messages, with errors that say which flag and
//! value are wrong.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use shoal_proto::defaults as d;
use shoal_proto::{
    port_config::{Protocol, PublishMode},
    restart_policy::Condition,
    ContainerSpec, HealthCheck, Placement, PortConfig, RestartPolicy, ServiceSpec,
};

use crate::args::CreateArgs;

/// Parses durations as Docker writes them: "500ms", "10s", "2m30s", "1h", or
/// a bare "0".
pub fn duration_ms(flag: &str, s: &str) -> Result<u64> {
    let bad = || anyhow!("invalid duration {s:?} for {flag}: use e.g. 500ms, 10s, 2m30s, 1h");
    let s = s.trim();
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_end == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_end..];
    }
    Ok(total.round() as u64)
}

/// `key=value` pairs into a map; the error names the flag.
pub fn key_values(flag: &str, items: &[String]) -> Result<HashMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !kv.is_empty() => Ok((kv.to_string(), String::new())),
            _ => bail!("invalid {flag} {kv:?}: expected key=value"),
        })
        .collect()
}

fn port_number(what: &str, spec: &str, s: &str) -> Result<u32> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid -p {spec:?}: {what} port {s:?} is not a number"))?;
    if n == 0 || n > 65535 {
        bail!("invalid -p {spec:?}: {what} port {n} is not in 1-65535");
    }
    Ok(n)
}

fn protocol(spec: &str, s: &str) -> Result<Protocol> {
    match s {
        "tcp" | "" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => bail!("invalid -p {spec:?}: protocol {s:?} is not tcp or udp"),
    }
}

/// `-p PUBLISHED:TARGET[/PROTO]`, `-p TARGET` (published port assigned), or
/// the long form `mode=host,published=P,target=T,protocol=tcp`.
pub fn publish(spec: &str) -> Result<PortConfig> {
    let mut port = PortConfig::default();
    if spec.contains('=') {
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid -p {spec:?}: {part:?} is not key=value"))?;
            match k.trim() {
                "mode" => {
                    port.publish_mode = match v {
                        "ingress" => PublishMode::Ingress,
                        "host" => PublishMode::Host,
                        _ => bail!("invalid -p {spec:?}: mode {v:?} is not ingress or host"),
                    } as i32
                }
                "published" => port.published_port = port_number("published", spec, v)?,
                "target" => port.target_port = port_number("target", spec, v)?,
                "protocol" => port.protocol = protocol(spec, v)? as i32,
                other => bail!("invalid -p {spec:?}: unknown key {other:?} (use mode, published, target, protocol)"),
            }
        }
        if port.target_port == 0 {
            bail!("invalid -p {spec:?}: target= is required");
        }
        return Ok(port);
    }
    let (ports, proto) = spec.split_once('/').unwrap_or((spec, ""));
    port.protocol = protocol(spec, proto)? as i32;
    match ports.split_once(':') {
        Some((published, target)) => {
            port.published_port = port_number("published", spec, published)?;
            port.target_port = port_number("target", spec, target)?;
        }
        None => port.target_port = port_number("target", spec, ports)?,
    }
    Ok(port)
}

fn restart_condition(s: &str) -> Result<Condition> {
    match s {
        "any" => Ok(Condition::Any),
        "on-failure" => Ok(Condition::OnFailure),
        "none" => Ok(Condition::None),
        _ => bail!("invalid --restart-condition {s:?}: use any, on-failure or none"),
    }
}

fn healthcheck(a: &CreateArgs) -> Result<Option<HealthCheck>> {
    if a.no_healthcheck {
        return Ok(Some(HealthCheck {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    let timing_given = a.health_interval.is_some()
        || a.health_timeout.is_some()
        || a.health_retries.is_some()
        || a.health_start_period.is_some();
    let Some(cmd) = &a.health_cmd else {
        if timing_given {
            bail!("--health-interval, --health-timeout, --health-retries and --health-start-period need --health-cmd");
        }
        return Ok(None);
    };
    let opt = |flag: &str, v: &Option<String>, default: u64| -> Result<u64> {
        v.as_deref().map_or(Ok(default), |s| duration_ms(flag, s))
    };
    Ok(Some(HealthCheck {
        test: vec!["CMD-SHELL".into(), cmd.clone()],
        interval_ms: opt(
            "--health-interval",
            &a.health_interval,
            d::HEALTH_INTERVAL_MS,
        )?,
        timeout_ms: opt("--health-timeout", &a.health_timeout, d::HEALTH_TIMEOUT_MS)?,
        retries: a.health_retries.unwrap_or(d::HEALTH_RETRIES),
        start_period_ms: opt(
            "--health-start-period",
            &a.health_start_period,
            d::HEALTH_START_PERIOD_MS,
        )?,
    }))
}

/// The ServiceSpec `service create` sends.
pub fn service_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let ports = a
        .publish
        .iter()
        .map(|p| publish(p))
        .collect::<Result<Vec<_>>>()?;
    for e in &a.env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("invalid -e {e:?}: expected KEY=VALUE");
        }
    }
    let container = ContainerSpec {
        image: a.image.clone(),
        command: a.command.clone(),
        args: vec![],
        env: a.env.clone(),
        labels: key_values("--container-label", &a.container_labels)?,
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        stop_grace_period_ms: duration_ms("--stop-grace-period", &a.stop_grace_period)?,
        healthcheck: healthcheck(a)?,
        limit_nano_cpus: 0,
        limit_memory_bytes: 0,
    };
    Ok(ServiceSpec {
        name: a.name.clone(),
        labels: key_values("--label", &a.labels)?,
        mode: shoal_proto::DeploymentMode::Replicated as i32,
        replicas: a.replicas,
        container: Some(container),
        ports,
        restart_policy: Some(RestartPolicy {
            condition: restart_condition(&a.restart_condition)? as i32,
            delay_ms: duration_ms("--restart-delay", &a.restart_delay)?,
            max_attempts: a.restart_max_attempts,
            window_ms: duration_ms("--restart-window", &a.restart_window)?,
        }),
        update_config: None,
        rollback_config: None,
        placement: Some(Placement {
            constraints: a.constraints.clone(),
            max_replicas_per_node: a.replicas_max_per_node,
        }),
        networks: vec![],
        stack: String::new(),
    })
}

/// `web=5` into ("web", 5).
pub fn scale(s: &str) -> Result<(String, u64)> {
    let (name, n) = s
        .split_once('=')
        .with_context(|| format!("invalid scale {s:?}: expected SERVICE=REPLICAS"))?;
    if name.is_empty() {
        bail!("invalid scale {s:?}: no service name before '='");
    }
    let n: u64 = n
        .parse()
        .map_err(|_| anyhow!("invalid scale {s:?}: replicas {n:?} is not a number"))?;
    Ok((name.to_string(), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command, ServiceCommand};
    use clap::Parser;

    #[test]
    fn durations() {
        assert_eq!(duration_ms("x", "1s").unwrap(), 1_000);
        assert_eq!(duration_ms("x", "500ms").unwrap(), 500);
        assert_eq!(duration_ms("x", "2m30s").unwrap(), 150_000);
        assert_eq!(duration_ms("x", "1.5s").unwrap(), 1_500);
        assert_eq!(duration_ms("x", "0").unwrap(), 0);
        assert!(duration_ms("--restart-delay", "5 seconds")
            .unwrap_err()
            .to_string()
            .contains("--restart-delay"));
        assert!(duration_ms("x", "10").is_err());
    }

    #[test]
    fn publish_short_and_long_forms() {
        let p = publish("18080:80").unwrap();
        assert_eq!((p.published_port, p.target_port), (18080, 80));
        assert_eq!(p.publish_mode(), PublishMode::Ingress);
        let p = publish("53:53/udp").unwrap();
        assert_eq!(p.protocol(), Protocol::Udp);
        let p = publish("mode=host,published=8080,target=80").unwrap();
        assert_eq!(p.publish_mode(), PublishMode::Host);
        assert_eq!((p.published_port, p.target_port), (8080, 80));
        let p = publish("80").unwrap();
        assert_eq!((p.published_port, p.target_port), (0, 80));
    }

    #[test]
    fn bad_publish_values_name_the_problem() {
        let e = |s| publish(s).unwrap_err().to_string();
        assert!(e("70000:80").contains("published port 70000 is not in 1-65535"));
        assert!(e("abc:80").contains("published port \"abc\" is not a number"));
        assert!(e("80:80/sctp").contains("protocol \"sctp\""));
        assert!(e("mode=bridge,target=80").contains("mode \"bridge\""));
        assert!(e("mode=host,published=80").contains("target= is required"));
    }

    #[test]
    fn scale_arguments() {
        assert_eq!(scale("web=5").unwrap(), ("web".to_string(), 5));
        assert!(scale("web=five")
            .unwrap_err()
            .to_string()
            .contains("replicas \"five\" is not a number"));
        assert!(scale("web").is_err());
    }

    #[test]
    fn replicas_must_be_a_number() {
        let r = Cli::try_parse_from([
            "shoal",
            "service",
            "create",
            "--name",
            "w",
            "--replicas",
            "three",
            "img",
        ]);
        let err = r.unwrap_err().to_string();
        assert!(err.contains("three"), "{err}");
    }

    #[test]
    fn create_flags_become_a_service_spec() {
        let cli = Cli::try_parse_from([
            "shoal",
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "3",
            "-p",
            "18080:80",
            "-e",
            "A=1",
            "--label",
            "tier=front",
            "--stop-grace-period",
            "1s",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "2s",
            "--restart-max-attempts",
            "4",
            "--health-cmd",
            "true",
            "--health-interval",
            "2s",
            "img:v1",
            "httpd",
            "-f",
            "-p",
            "80",
        ])
        .unwrap();
        let Command::Service(ServiceCommand::Create(a)) = cli.command else {
            panic!("not a create")
        };
        let spec = service_spec(&a).unwrap();
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.ports[0].published_port, 18080);
        let c = spec.container.unwrap();
        assert_eq!(c.command, vec!["httpd", "-f", "-p", "80"]);
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.stop_grace_period_ms, 1_000);
        let h = c.healthcheck.unwrap();
        assert_eq!(h.test, vec!["CMD-SHELL", "true"]);
        assert_eq!(h.interval_ms, 2_000);
        assert_eq!(h.retries, d::HEALTH_RETRIES);
        let r = spec.restart_policy.unwrap();
        assert_eq!(r.condition(), Condition::OnFailure);
        assert_eq!((r.delay_ms, r.max_attempts), (2_000, 4));
        assert_eq!(spec.labels["tier"], "front");
    }

    #[test]
    fn health_timing_without_a_command_is_refused() {
        let cli = Cli::try_parse_from([
            "shoal",
            "service",
            "create",
            "--name",
            "web",
            "--health-interval",
            "2s",
            "img",
        ])
        .unwrap();
        let Command::Service(ServiceCommand::Create(a)) = cli.command else {
            panic!()
        };
        assert!(service_spec(&a)
            .unwrap_err()
            .to_string()
            .contains("need --health-cmd"));
    }
}
