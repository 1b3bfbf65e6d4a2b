//! Turning flags into API messages, with errors that say which flag and
//! value are wrong.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use shoal_proto::defaults as d;
use shoal_proto::{
    mount,
    port_config::{Protocol, PublishMode},
    restart_policy::Condition,
    service::Type as ServiceType,
    update_config::{FailureAction, Order},
    ContainerSpec, DeploymentMode, EndpointMode, FileReference, HealthCheck, Mount, Placement,
    PortConfig, RestartPolicy, ServiceSpec, UpdateConfig,
};

use crate::args::{CreateArgs, ResourceFlags, UpdateArgs};

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

/// A file mode as Docker reads one (Go's base-0 parsing): `0440` and
/// `0o440` are octal, `0x124` hexadecimal, anything else decimal.
pub fn file_mode(flag: &str, spec: &str, s: &str) -> Result<u32> {
    let bad = || anyhow!("invalid {flag} {spec:?}: mode {s:?} is not a file mode such as 0444");
    let t = s.trim();
    let n = if let Some(o) = t.strip_prefix("0o").or_else(|| t.strip_prefix("0O")) {
        u32::from_str_radix(o, 8)
    } else if let Some(x) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(x, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        u32::from_str_radix(&t[1..], 8)
    } else {
        t.parse()
    }
    .map_err(|_| bad())?;
    if n > 0o7777 {
        return Err(bad());
    }
    Ok(n)
}

fn id_number(flag: &str, spec: &str, what: &str, s: &str) -> Result<u32> {
    s.trim()
        .parse()
        .map_err(|_| anyhow!("invalid {flag} {spec:?}: {what} {s:?} is not a number"))
}

/// `--secret NAME` or `--secret source=NAME,target=T,uid=0,gid=0,mode=0400`
/// (and the same for `--config`), as Docker reads them. The manager fills
/// the defaults (target = the name, mode 0444).
pub fn file_reference(flag: &str, spec: &str) -> Result<FileReference> {
    let mut r = FileReference::default();
    if !spec.contains('=') {
        r.name = spec.trim().to_string();
    } else {
        for part in spec.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| anyhow!("invalid {flag} {spec:?}: {part:?} is not key=value"))?;
            match k.trim() {
                "source" | "src" => r.name = v.trim().to_string(),
                "target" => r.target = v.trim().to_string(),
                "uid" => r.uid = id_number(flag, spec, "uid", v)?,
                "gid" => r.gid = id_number(flag, spec, "gid", v)?,
                "mode" => r.mode = file_mode(flag, spec, v)?,
                other => bail!(
                    "invalid {flag} {spec:?}: unknown key {other:?} (use source, target, uid, gid, mode)"
                ),
            }
        }
    }
    if r.name.is_empty() {
        bail!("invalid {flag} {spec:?}: no source name");
    }
    Ok(r)
}

fn file_references(flag: &str, specs: &[String]) -> Result<Vec<FileReference>> {
    specs.iter().map(|s| file_reference(flag, s)).collect()
}

/// `--secret-add`/`--secret-rm` (or the config flags) applied to a list:
/// an added reference replaces one of the same name.
fn edit_references(
    refs: &mut Vec<FileReference>,
    add_flag: &str,
    add: &[String],
    remove: &[String],
) -> Result<()> {
    for name in remove {
        refs.retain(|r| &r.name != name);
    }
    for r in file_references(add_flag, add)? {
        refs.retain(|x| x.name != r.name);
        refs.push(r);
    }
    Ok(())
}

/// A number of CPUs as Docker's `--reserve-cpu`/`--limit-cpu` take it
/// ("0.5", "2"), in nano CPUs, exactly (no float rounding: 0.1 is
/// 100000000).
pub fn nano_cpus(flag: &str, s: &str) -> Result<i64> {
    let bad = |why: &str| anyhow!("invalid {flag} {s:?}: {why}");
    let (whole, frac) = s.trim().split_once('.').unwrap_or((s.trim(), ""));
    let digits = |d: &str| d.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return Err(bad("not a number of CPUs such as 0.5 or 2"));
    }
    if frac.len() > 9 {
        return Err(bad("more precise than a billionth of a CPU"));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad("too many CPUs"))?
    };
    let frac: i64 = format!("{frac:0<9}").parse().unwrap_or(0);
    whole
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(frac))
        .ok_or_else(|| bad("too many CPUs"))
}

/// An amount of memory as Docker takes it: bytes, or a number with a unit
/// b, k, m, g, t (case-insensitive, powers of 1024, an optional "b" or "ib"
/// after it: 64M = 64m = 64MB = 64MiB = 64 MiB).
pub fn memory_bytes(flag: &str, s: &str) -> Result<i64> {
    ram_bytes(s).ok_or_else(|| {
        anyhow!("invalid {flag} {s:?}: not an amount of memory such as 64M (units b, k, m, g)")
    })
}

fn ram_bytes(s: &str) -> Option<i64> {
    let s = s.trim().to_ascii_lowercase();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(num_end);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit
        .strip_suffix('i')
        .filter(|u| !u.is_empty())
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return None,
    };
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let bytes = n * (1u64 << shift) as f64;
    (bytes < i64::MAX as f64).then_some(bytes as i64)
}

/// `--reserve-*`/`--limit-*` onto a container spec; absent flags keep the
/// current values (so update changes only what it names).
fn apply_resources(c: &mut ContainerSpec, r: &ResourceFlags) -> Result<()> {
    if let Some(v) = &r.reserve_cpu {
        c.reserve_nano_cpus = nano_cpus("--reserve-cpu", v)?;
    }
    if let Some(v) = &r.reserve_memory {
        c.reserve_memory_bytes = memory_bytes("--reserve-memory", v)?;
    }
    if let Some(v) = &r.limit_cpu {
        c.limit_nano_cpus = nano_cpus("--limit-cpu", v)?;
    }
    if let Some(v) = &r.limit_memory {
        c.limit_memory_bytes = memory_bytes("--limit-memory", v)?;
    }
    Ok(())
}

/// `--placement-pref spread=node.labels.zone` as stored: the descriptor
/// ("node.labels.zone"). Spread is the only preference Swarm has; the
/// control API checks the descriptor.
pub fn placement_pref(flag: &str, s: &str) -> Result<String> {
    match s.trim().split_once('=') {
        Some(("spread", d)) if !d.trim().is_empty() => Ok(d.trim().to_string()),
        _ => bail!("invalid {flag} {s:?}: expected spread=node.labels.NAME"),
    }
}

fn restart_condition(s: &str) -> Result<Condition> {
    match s {
        "any" => Ok(Condition::Any),
        "on-failure" => Ok(Condition::OnFailure),
        "none" => Ok(Condition::None),
        _ => bail!("invalid --restart-condition {s:?}: use any, on-failure or none"),
    }
}

/// The healthcheck flags, as create and update take them.
pub struct HealthFlags<'a> {
    pub cmd: &'a Option<String>,
    pub interval: &'a Option<String>,
    pub timeout: &'a Option<String>,
    pub retries: Option<u32>,
    pub start_period: &'a Option<String>,
    pub none: bool,
}

impl HealthFlags<'_> {
    fn any(&self) -> bool {
        self.none || self.cmd.is_some() || self.timing_given()
    }

    fn timing_given(&self) -> bool {
        self.interval.is_some()
            || self.timeout.is_some()
            || self.retries.is_some()
            || self.start_period.is_some()
    }
}

fn healthcheck(h: &HealthFlags) -> Result<Option<HealthCheck>> {
    if h.none {
        return Ok(Some(HealthCheck {
            test: vec!["NONE".into()],
            ..Default::default()
        }));
    }
    let Some(cmd) = h.cmd else {
        if h.timing_given() {
            bail!("--health-interval, --health-timeout, --health-retries and --health-start-period need --health-cmd");
        }
        return Ok(None);
    };
    let opt = |flag: &str, v: &Option<String>, default: u64| -> Result<u64> {
        v.as_deref().map_or(Ok(default), |s| duration_ms(flag, s))
    };
    Ok(Some(HealthCheck {
        test: vec!["CMD-SHELL".into(), cmd.clone()],
        interval_ms: opt("--health-interval", h.interval, d::HEALTH_INTERVAL_MS)?,
        timeout_ms: opt("--health-timeout", h.timeout, d::HEALTH_TIMEOUT_MS)?,
        retries: h.retries.unwrap_or(d::HEALTH_RETRIES),
        start_period_ms: opt(
            "--health-start-period",
            h.start_period,
            d::HEALTH_START_PERIOD_MS,
        )?,
    }))
}

/// The type, endpoint mode and external name flags of `service create`.
fn service_type(a: &CreateArgs) -> Result<(Option<ServiceType>, EndpointMode)> {
    let ty = match a.service_type.as_deref() {
        None => None,
        Some(t) => Some(
            ServiceType::from_display(t)
                .ok_or_else(|| anyhow!("invalid --type {t:?}: use {}", ServiceType::choices()))?,
        ),
    };
    let mode = EndpointMode::from_display(&a.endpoint_mode).ok_or_else(|| {
        anyhow!(
            "invalid --endpoint-mode {:?}: use vip or dnsrr",
            a.endpoint_mode
        )
    })?;
    let external = ty == Some(ServiceType::ExternalName);
    match (&a.external_name, &a.image) {
        (Some(name), _) if !external => bail!(
            "--external-name {name:?} is only allowed with --type ExternalName"
        ),
        (None, _) if external => {
            bail!("--type ExternalName needs --external-name NAME (the DNS name the service stands for)")
        }
        (_, Some(image)) if external => bail!(
            "invalid image {image:?}: a service of --type ExternalName runs no pods, so it takes no image"
        ),
        _ => {}
    }
    Ok((ty, mode))
}

/// The ServiceSpec `service create` sends.
pub fn service_spec(a: &CreateArgs) -> Result<ServiceSpec> {
    let (ty, endpoint_mode) = service_type(a)?;
    if ty == Some(ServiceType::ExternalName) {
        return Ok(ServiceSpec {
            name: a.name.clone(),
            labels: key_values("--label", &a.labels)?,
            r#type: ty.map(|t| t as i32),
            external_name: a.external_name.clone().unwrap_or_default(),
            endpoint_mode: endpoint_mode as i32,
            ports: a
                .publish
                .iter()
                .map(|p| publish(p))
                .collect::<Result<Vec<_>>>()?,
            ..Default::default()
        });
    }
    let Some(image) = a.image.clone() else {
        bail!("an image is required (only a service of --type ExternalName has none)");
    };
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
    let mut container = ContainerSpec {
        image,
        command: a.command.clone(),
        args: vec![],
        env: a.env.clone(),
        labels: key_values("--container-label", &a.container_labels)?,
        user: a.user.clone().unwrap_or_default(),
        workdir: a.workdir.clone().unwrap_or_default(),
        hostname: a.hostname.clone().unwrap_or_default(),
        stop_grace_period_ms: duration_ms("--stop-grace-period", &a.stop_grace_period)?,
        healthcheck: healthcheck(&HealthFlags {
            cmd: &a.health_cmd,
            interval: &a.health_interval,
            timeout: &a.health_timeout,
            retries: a.health_retries,
            start_period: &a.health_start_period,
            none: a.no_healthcheck,
        })?,
        mounts: a.mounts.iter().map(|m| mount(m)).collect::<Result<_>>()?,
        secrets: file_references("--secret", &a.secrets)?,
        configs: file_references("--config", &a.configs)?,
        ..Default::default()
    };
    apply_resources(&mut container, &a.resources)?;
    let (mode, replicas) = match (a.mode.as_str(), a.replicas) {
        ("replicated", r) => (DeploymentMode::Replicated, r.unwrap_or(d::REPLICAS)),
        ("global", None) => (DeploymentMode::Global, 0),
        ("global", Some(_)) => bail!("--replicas cannot be used with --mode global"),
        (other, _) => bail!("invalid --mode {other:?}: expected replicated or global"),
    };
    Ok(ServiceSpec {
        name: a.name.clone(),
        labels: key_values("--label", &a.labels)?,
        mode: mode as i32,
        replicas,
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
            spread: a
                .placement_prefs
                .iter()
                .map(|p| placement_pref("--placement-pref", p))
                .collect::<Result<_>>()?,
        }),
        networks: vec![],
        external_networks: vec![],
        network_aliases: vec![],
        stack: String::new(),
        endpoint_mode: endpoint_mode as i32,
        r#type: ty.map(|t| t as i32),
        external_name: String::new(),
    })
}

/// `--mount type=volume|bind|tmpfs,source=S,target=/path[,readonly]
/// [,tmpfs-size=64M][,volume-nocopy]`, as `docker service create` takes it.
pub fn mount(spec: &str) -> Result<Mount> {
    let mut m = Mount::default();
    let mut kind = "volume";
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, "true"));
        let flag = |v: &str| -> Result<bool> {
            match v {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => bail!("invalid --mount {spec:?}: {k}={v:?} is not true or false"),
            }
        };
        match k {
            "type" => kind = v,
            "source" | "src" => m.source = v.to_string(),
            "target" | "destination" | "dst" => m.target = v.to_string(),
            "readonly" | "ro" => m.read_only = flag(v)?,
            "volume-nocopy" => m.volume_nocopy = flag(v)?,
            "volume-driver" => m.volume_driver = v.to_string(),
            "tmpfs-size" => {
                m.tmpfs_size_bytes = parse_size(v).ok_or_else(|| {
                    anyhow!("invalid --mount {spec:?}: tmpfs-size {v:?} is not a size such as 64M")
                })?
            }
            other => bail!(
                "invalid --mount {spec:?}: unknown key {other:?} (use type, source, target, readonly, tmpfs-size, volume-nocopy, volume-driver)"
            ),
        }
    }
    m.r#type = match kind {
        "volume" => mount::Type::Volume,
        "bind" => mount::Type::Bind,
        "tmpfs" => mount::Type::Tmpfs,
        other => bail!("invalid --mount {spec:?}: type {other:?} is not volume, bind or tmpfs"),
    } as i32;
    if !m.target.starts_with('/') {
        bail!("invalid --mount {spec:?}: target= must be an absolute path in the container");
    }
    match m.r#type() {
        mount::Type::Bind if !m.source.starts_with('/') => {
            bail!(
                "invalid --mount {spec:?}: a bind mount needs source= an absolute path of the node"
            )
        }
        mount::Type::Tmpfs if !m.source.is_empty() => {
            bail!("invalid --mount {spec:?}: a tmpfs mount takes no source")
        }
        _ => {}
    }
    Ok(m)
}

/// `64M`, `1g`, `512k` (powers of 1024) or a number of bytes.
fn parse_size(s: &str) -> Option<i64> {
    ram_bytes(s)
}

fn order(flag: &str, s: &str) -> Result<Order> {
    match s {
        "stop-first" => Ok(Order::StopFirst),
        "start-first" => Ok(Order::StartFirst),
        _ => bail!("invalid {flag} {s:?}: use stop-first or start-first"),
    }
}

fn failure_action(flag: &str, s: &str, allow_rollback: bool) -> Result<FailureAction> {
    match s {
        "pause" => Ok(FailureAction::Pause),
        "continue" => Ok(FailureAction::Continue),
        "rollback" if allow_rollback => Ok(FailureAction::Rollback),
        _ if allow_rollback => bail!("invalid {flag} {s:?}: use pause, continue or rollback"),
        _ => bail!("invalid {flag} {s:?}: use pause or continue"),
    }
}

/// Applies --update-* (prefix "update") or --rollback-* settings.
#[allow(clippy::too_many_arguments)]
fn apply_rollout_flags(
    cfg: &mut UpdateConfig,
    prefix: &str,
    parallelism: Option<u64>,
    delay: &Option<String>,
    ord: &Option<String>,
    monitor: &Option<String>,
    action: &Option<String>,
    ratio: Option<f32>,
) -> Result<()> {
    if let Some(p) = parallelism {
        cfg.parallelism = p;
    }
    if let Some(s) = delay {
        cfg.delay_ms = duration_ms(&format!("--{prefix}-delay"), s)?;
    }
    if let Some(s) = ord {
        cfg.order = order(&format!("--{prefix}-order"), s)? as i32;
    }
    if let Some(s) = monitor {
        cfg.monitor_ms = duration_ms(&format!("--{prefix}-monitor"), s)?;
    }
    if let Some(s) = action {
        cfg.failure_action =
            failure_action(&format!("--{prefix}-failure-action"), s, prefix == "update")? as i32;
    }
    if let Some(r) = ratio {
        if !(0.0..=1.0).contains(&r) {
            bail!("invalid --{prefix}-max-failure-ratio {r}: a fraction between 0 and 1");
        }
        cfg.max_failure_ratio = r;
    }
    Ok(())
}

/// Edits the current spec as `service update`'s flags say.
pub fn apply_update(spec: &mut ServiceSpec, a: &UpdateArgs) -> Result<()> {
    let c = spec.container.get_or_insert_with(Default::default);
    if let Some(image) = &a.image {
        c.image = image.clone();
    }
    for e in &a.env_add {
        let (k, _) = e
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow!("invalid --env-add {e:?}: expected KEY=VALUE"))?;
        c.env.retain(|x| x.split('=').next() != Some(k));
        c.env.push(e.clone());
    }
    for k in &a.env_rm {
        c.env.retain(|x| x.split('=').next() != Some(k.as_str()));
    }
    for (k, v) in key_values("--container-label-add", &a.container_label_add)? {
        c.labels.insert(k, v);
    }
    for k in &a.container_label_rm {
        c.labels.remove(k);
    }
    if let Some(args) = &a.args {
        c.args = args.split_whitespace().map(str::to_string).collect();
    }
    if let Some(g) = &a.stop_grace_period {
        c.stop_grace_period_ms = duration_ms("--stop-grace-period", g)?;
    }
    let health = HealthFlags {
        cmd: &a.health_cmd,
        interval: &a.health_interval,
        timeout: &a.health_timeout,
        retries: a.health_retries,
        start_period: &a.health_start_period,
        none: a.no_healthcheck,
    };
    if health.any() {
        c.healthcheck = healthcheck(&health)?;
    }
    edit_references(&mut c.secrets, "--secret-add", &a.secret_add, &a.secret_rm)?;
    edit_references(&mut c.configs, "--config-add", &a.config_add, &a.config_rm)?;
    apply_resources(c, &a.resources)?;
    edit_placement(spec.placement.get_or_insert_with(Default::default), a)?;
    for (k, v) in key_values("--label-add", &a.label_add)? {
        spec.labels.insert(k, v);
    }
    for k in &a.label_rm {
        spec.labels.remove(k);
    }
    if let Some(r) = a.replicas {
        spec.replicas = r;
    }
    for p in &a.publish_rm {
        let before = spec.ports.len();
        spec.ports.retain(|x| x.published_port != *p);
        if spec.ports.len() == before {
            bail!("invalid --publish-rm {p}: the service publishes no such port");
        }
    }
    for p in &a.publish_add {
        let port = publish(p)?;
        spec.ports
            .retain(|x| port.published_port == 0 || x.published_port != port.published_port);
        spec.ports.push(port);
    }
    let u = &a.update;
    apply_rollout_flags(
        spec.update_config.get_or_insert_with(Default::default),
        "update",
        u.update_parallelism,
        &u.update_delay,
        &u.update_order,
        &u.update_monitor,
        &u.update_failure_action,
        u.update_max_failure_ratio,
    )?;
    let r = &a.rollback;
    apply_rollout_flags(
        spec.rollback_config.get_or_insert_with(Default::default),
        "rollback",
        r.rollback_parallelism,
        &r.rollback_delay,
        &r.rollback_order,
        &r.rollback_monitor,
        &r.rollback_failure_action,
        r.rollback_max_failure_ratio,
    )?;
    Ok(())
}

/// `--constraint-add/-rm`, `--placement-pref-add/-rm` and
/// `--replicas-max-per-node`, removals first (as Docker applies them). A
/// removal that matches nothing is refused: a mistyped one would otherwise
/// leave the service placed as before without a word.
fn edit_placement(p: &mut Placement, a: &UpdateArgs) -> Result<()> {
    for c in &a.constraint_rm {
        let before = p.constraints.len();
        p.constraints
            .retain(|x| x.replace(' ', "") != c.replace(' ', ""));
        if p.constraints.len() == before {
            bail!("invalid --constraint-rm {c:?}: the service has no such constraint");
        }
    }
    for pref in &a.placement_pref_rm {
        let d = placement_pref("--placement-pref-rm", pref)?;
        let before = p.spread.len();
        p.spread.retain(|x| *x != d);
        if p.spread.len() == before {
            bail!("invalid --placement-pref-rm {pref:?}: the service has no such preference");
        }
    }
    for c in &a.constraint_add {
        if !p.constraints.contains(c) {
            p.constraints.push(c.clone());
        }
    }
    for pref in &a.placement_pref_add {
        p.spread.push(placement_pref("--placement-pref-add", pref)?);
    }
    if let Some(max) = a.replicas_max_per_node {
        p.max_replicas_per_node = max;
    }
    Ok(())
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
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn update_flags_edit_the_current_spec() {
        let mut spec = ServiceSpec {
            container: Some(ContainerSpec {
                image: "img:v1".into(),
                env: vec!["A=1".into(), "B=2".into()],
                ..Default::default()
            }),
            ports: vec![publish("8080:80").unwrap()],
            ..Default::default()
        };
        let cli = Cli::try_parse_from([
            "shoal",
            "service",
            "update",
            "--image",
            "img:v2",
            "--env-add",
            "A=9",
            "--env-rm",
            "B",
            "--replicas",
            "4",
            "--update-order",
            "start-first",
            "--update-parallelism",
            "2",
            "--update-failure-action",
            "rollback",
            "--rollback-monitor",
            "2s",
            "--publish-rm",
            "8080",
            "--publish-add",
            "9090:80",
            "web",
        ])
        .unwrap();
        let Command::Service(ServiceCommand::Update(a)) = cli.command else {
            panic!("not an update")
        };
        apply_update(&mut spec, &a).unwrap();
        let c = spec.container.as_ref().unwrap();
        assert_eq!(c.image, "img:v2");
        assert_eq!(c.env, vec!["A=9"]);
        assert_eq!(spec.replicas, 4);
        assert_eq!(spec.ports.len(), 1);
        assert_eq!(spec.ports[0].published_port, 9090);
        let u = spec.update_config.unwrap();
        assert_eq!((u.order(), u.parallelism), (Order::StartFirst, 2));
        assert_eq!(u.failure_action(), FailureAction::Rollback);
        assert_eq!(spec.rollback_config.unwrap().monitor_ms, 2_000);
    }

    #[test]
    fn bad_update_flags_name_the_flag() {
        let parse = |args: &[&str]| {
            let mut v = vec!["shoal", "service", "update"];
            v.extend_from_slice(args);
            v.push("web");
            let cli = Cli::try_parse_from(v).unwrap();
            let Command::Service(ServiceCommand::Update(a)) = cli.command else {
                panic!()
            };
            apply_update(&mut ServiceSpec::default(), &a)
                .unwrap_err()
                .to_string()
        };
        assert!(parse(&["--update-order", "random"]).contains("--update-order"));
        assert!(parse(&["--rollback-failure-action", "rollback"]).contains("use pause or continue"));
        assert!(parse(&["--update-delay", "soon"]).contains("--update-delay"));
        assert!(parse(&["--publish-rm", "1234"]).contains("no such port"));
    }

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
    fn secret_and_config_flags_become_references() {
        let cli = Cli::try_parse_from([
            "shoal",
            "service",
            "create",
            "--name",
            "web",
            "--secret",
            "pw",
            "--secret",
            "source=tls,target=cert.pem,uid=33,gid=33,mode=0400",
            "--config",
            "source=app,target=/etc/app.conf,mode=0o440",
            "img",
        ])
        .unwrap();
        let Command::Service(ServiceCommand::Create(a)) = cli.command else {
            panic!()
        };
        let c = service_spec(&a).unwrap().container.unwrap();
        assert_eq!(c.secrets[0].name, "pw");
        assert_eq!((c.secrets[0].target.as_str(), c.secrets[0].mode), ("", 0));
        let tls = &c.secrets[1];
        assert_eq!(
            (
                tls.name.as_str(),
                tls.target.as_str(),
                tls.uid,
                tls.gid,
                tls.mode
            ),
            ("tls", "cert.pem", 33, 33, 0o400)
        );
        assert_eq!(c.configs[0].target, "/etc/app.conf");
        assert_eq!(c.configs[0].mode, 0o440);
    }

    #[test]
    fn bad_secret_flags_name_the_flag_and_value() {
        let e = |s| file_reference("--secret", s).unwrap_err().to_string();
        assert_eq!(
            e("source=pw,mode=rw"),
            "invalid --secret \"source=pw,mode=rw\": mode \"rw\" is not a file mode such as 0444"
        );
        assert!(e("source=pw,mode=017777").contains("is not a file mode"));
        assert!(e("target=x").contains("no source name"));
        assert!(e("source=pw,owner=1").contains("unknown key \"owner\""));
        assert!(e("source=pw,uid=root").contains("uid \"root\" is not a number"));
        assert_eq!(file_mode("m", "", "0444").unwrap(), 0o444);
        assert_eq!(file_mode("m", "", "292").unwrap(), 0o444);
        assert_eq!(file_mode("m", "", "0").unwrap(), 0);
    }

    #[test]
    fn update_adds_and_removes_secrets_by_name() {
        let mut spec = ServiceSpec {
            container: Some(ContainerSpec {
                secrets: vec![
                    file_reference("--secret", "a").unwrap(),
                    file_reference("--secret", "b").unwrap(),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let cli = Cli::try_parse_from([
            "shoal",
            "service",
            "update",
            "--secret-rm",
            "a",
            "--secret-add",
            "source=b,target=bee",
            "--config-add",
            "conf",
            "web",
        ])
        .unwrap();
        let Command::Service(ServiceCommand::Update(a)) = cli.command else {
            panic!()
        };
        apply_update(&mut spec, &a).unwrap();
        let c = spec.container.unwrap();
        assert_eq!(c.secrets.len(), 1);
        assert_eq!(
            (c.secrets[0].name.as_str(), c.secrets[0].target.as_str()),
            ("b", "bee")
        );
        assert_eq!(c.configs[0].name, "conf");
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

    #[test]
    fn mounts_parse_as_docker_takes_them_and_bad_ones_name_the_problem() {
        let m = mount("type=volume,source=data,target=/data,readonly").unwrap();
        assert_eq!(m.r#type(), mount::Type::Volume);
        assert_eq!(
            (m.source.as_str(), m.target.as_str(), m.read_only),
            ("data", "/data", true)
        );
        let m = mount("type=tmpfs,target=/scratch,tmpfs-size=64M").unwrap();
        assert_eq!(
            (m.r#type(), m.tmpfs_size_bytes),
            (mount::Type::Tmpfs, 64 << 20)
        );
        let m = mount("type=bind,src=/srv,dst=/srv,ro=false").unwrap();
        assert_eq!((m.r#type(), m.read_only), (mount::Type::Bind, false));
        let e = |s| mount(s).unwrap_err().to_string();
        assert!(e("type=nfs,target=/x").contains("type \"nfs\" is not volume, bind or tmpfs"));
        assert!(e("source=data").contains("target= must be an absolute path"));
        assert!(e("type=bind,source=rel,target=/x").contains("absolute path of the node"));
        assert!(e("type=tmpfs,target=/x,tmpfs-size=lots").contains("tmpfs-size \"lots\""));
        assert!(e("target=/x,colour=red").contains("unknown key \"colour\""));
    }

    #[test]
    fn placement_and_resource_flags_become_the_spec() {
        let s = create(&[
            "--constraint",
            "node.labels.zone==a",
            "--constraint",
            "node.role!=manager",
            "--placement-pref",
            "spread=node.labels.zone",
            "--replicas-max-per-node",
            "2",
            "--reserve-cpu",
            "0.5",
            "--reserve-memory",
            "64M",
            "--limit-cpu",
            "1",
            "--limit-memory",
            "128mb",
            "img",
        ])
        .unwrap();
        let p = s.placement.unwrap();
        assert_eq!(
            p.constraints,
            vec!["node.labels.zone==a", "node.role!=manager"]
        );
        assert_eq!(p.spread, vec!["node.labels.zone"]);
        assert_eq!(p.max_replicas_per_node, 2);
        let c = s.container.unwrap();
        assert_eq!(
            (c.reserve_nano_cpus, c.reserve_memory_bytes),
            (500_000_000, 64 << 20)
        );
        assert_eq!(
            (c.limit_nano_cpus, c.limit_memory_bytes),
            (1_000_000_000, 128 << 20)
        );
    }

    #[test]
    fn amounts_parse_as_docker_takes_them() {
        for (s, n) in [
            ("64M", 64 << 20),
            ("64m", 64 << 20),
            ("64MB", 64 << 20),
            ("64MiB", 64 << 20),
            ("64 M", 64 << 20),
            ("1g", 1 << 30),
            ("1.5G", 3 << 29),
            ("512k", 512 << 10),
            ("100b", 100),
            ("4096", 4096),
            ("0", 0),
        ] {
            assert_eq!(memory_bytes("--reserve-memory", s).unwrap(), n, "{s}");
        }
        for (s, n) in [
            ("0.5", 500_000_000),
            ("2", 2_000_000_000),
            (".25", 250_000_000),
            ("0.000000001", 1),
            ("0", 0),
        ] {
            assert_eq!(nano_cpus("--limit-cpu", s).unwrap(), n, "{s}");
        }
        assert_eq!(
            memory_bytes("--reserve-memory", "64X").unwrap_err().to_string(),
            "invalid --reserve-memory \"64X\": not an amount of memory such as 64M (units b, k, m, g)"
        );
        for bad in ["", "M", "-1M", "1.M", "64MM"] {
            assert!(memory_bytes("--limit-memory", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            nano_cpus("--reserve-cpu", "half").unwrap_err().to_string(),
            "invalid --reserve-cpu \"half\": not a number of CPUs such as 0.5 or 2"
        );
        for bad in ["", ".", "-1", "1.2.3", "0.0000000001"] {
            assert!(nano_cpus("--limit-cpu", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_placement_and_resource_flags_name_the_flag_and_value() {
        let e = |args: &[&str]| create(args).unwrap_err().to_string();
        assert_eq!(
            e(&["--placement-pref", "node.labels.zone", "img"]),
            "invalid --placement-pref \"node.labels.zone\": expected spread=node.labels.NAME"
        );
        assert!(
            e(&["--reserve-memory", "64X", "img"]).starts_with("invalid --reserve-memory \"64X\"")
        );
        assert!(e(&["--limit-cpu", "lots", "img"]).starts_with("invalid --limit-cpu \"lots\""));
    }

    #[test]
    fn update_edits_placement_and_resources() {
        let mut spec = create(&[
            "--constraint",
            "node.labels.zone==a",
            "--constraint",
            "node.role!=manager",
            "--placement-pref",
            "spread=node.labels.zone",
            "--reserve-memory",
            "64M",
            "--limit-cpu",
            "2",
            "img",
        ])
        .unwrap();
        let update = |args: &[&str]| {
            let mut v = vec!["shoal", "service", "update"];
            v.extend_from_slice(args);
            v.push("db");
            let cli = Cli::try_parse_from(v).unwrap();
            let Command::Service(ServiceCommand::Update(a)) = cli.command else {
                panic!("not an update")
            };
            a
        };
        let a = update(&[
            "--constraint-rm",
            "node.labels.zone==a",
            "--constraint-add",
            "node.hostname==h",
            "--placement-pref-rm",
            "spread=node.labels.zone",
            "--placement-pref-add",
            "spread=node.labels.rack",
            "--replicas-max-per-node",
            "3",
            "--reserve-cpu",
            "0.25",
            "--limit-memory",
            "1g",
        ]);
        apply_update(&mut spec, &a).unwrap();
        let p = spec.placement.as_ref().unwrap();
        assert_eq!(
            p.constraints,
            vec!["node.role!=manager", "node.hostname==h"]
        );
        assert_eq!(p.spread, vec!["node.labels.rack"]);
        assert_eq!(p.max_replicas_per_node, 3);
        let c = spec.container.as_ref().unwrap();
        // What the update did not name stays as it was.
        assert_eq!(
            (c.reserve_nano_cpus, c.reserve_memory_bytes),
            (250_000_000, 64 << 20)
        );
        assert_eq!(
            (c.limit_nano_cpus, c.limit_memory_bytes),
            (2_000_000_000, 1 << 30)
        );

        let e = |args: &[&str]| {
            apply_update(&mut spec.clone(), &update(args))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            e(&["--constraint-rm", "node.labels.zone==b"]),
            "invalid --constraint-rm \"node.labels.zone==b\": the service has no such constraint"
        );
        assert!(e(&["--placement-pref-rm", "spread=node.labels.zone"])
            .contains("the service has no such preference"));
        assert!(e(&["--placement-pref-add", "zone"])
            .starts_with("invalid --placement-pref-add \"zone\""));
        assert!(e(&["--reserve-memory", "lots"]).starts_with("invalid --reserve-memory \"lots\""));
    }

    fn create(args: &[&str]) -> Result<ServiceSpec> {
        let mut v = vec!["shoal", "service", "create", "--name", "db"];
        v.extend_from_slice(args);
        let cli = Cli::try_parse_from(v).unwrap();
        let Command::Service(ServiceCommand::Create(a)) = cli.command else {
            panic!("not a create")
        };
        service_spec(&a)
    }

    #[test]
    fn type_and_endpoint_mode_flags() {
        let s = create(&["img"]).unwrap();
        assert_eq!((s.r#type, s.endpoint_mode()), (None, EndpointMode::Vip));
        let s = create(&["--endpoint-mode", "dnsrr", "--type", "clusterip", "img"]).unwrap();
        assert_eq!(s.r#type(), ServiceType::ClusterIp);
        assert_eq!(s.endpoint_mode(), EndpointMode::Dnsrr);
        let s = create(&["--type", "LoadBalancer", "-p", "80", "img"]).unwrap();
        assert_eq!(s.r#type(), ServiceType::LoadBalancer);

        let e = |args: &[&str]| create(args).unwrap_err().to_string();
        assert_eq!(
            e(&["--type", "Headless", "img"]),
            "invalid --type \"Headless\": use ClusterIP, NodePort, LoadBalancer or ExternalName"
        );
        assert_eq!(
            e(&["--endpoint-mode", "rr", "img"]),
            "invalid --endpoint-mode \"rr\": use vip or dnsrr"
        );
        assert!(e(&["--external-name", "db.example.org", "img"])
            .contains("only allowed with --type ExternalName"));
        assert!(e(&["--type", "ExternalName", "img"]).contains("needs --external-name NAME"));
        assert!(e(&[
            "--type",
            "ExternalName",
            "--external-name",
            "db.example.org",
            "postgres"
        ])
        .contains("takes no image"));
    }

    #[test]
    fn an_external_name_service_needs_no_image() {
        let s = create(&[
            "--type",
            "ExternalName",
            "--external-name",
            "db.example.org",
        ])
        .unwrap();
        assert_eq!(s.r#type(), ServiceType::ExternalName);
        assert_eq!(s.external_name, "db.example.org");
        assert_eq!((s.replicas, s.container), (0, None));
        let missing = Cli::try_parse_from(["shoal", "service", "create", "--name", "web"]);
        assert!(missing.unwrap_err().to_string().contains("<IMAGE>"));
    }
}
