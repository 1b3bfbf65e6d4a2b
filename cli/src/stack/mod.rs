//! Stack (compose) files: parsing, interpolation, merging and validation,
//! and `shoal stack config`. See docs/STACKS.md.

pub mod de;
mod interp;
pub mod model;
pub mod secrets;
pub mod shoal_ext;
pub mod translate;
mod yaml;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

pub use interp::Env;
pub use model::ComposeFile;
use yaml::{find_line, join, key_str};

/// One error in a stack file: the file, the key path, the line when known,
/// and a message that shows the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackError {
    pub file: String,
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for StackError {}

/// A loaded stack: the merged model, the `x-*` extensions kept aside
/// (top level under "", services under their name), and warnings.
#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub file: ComposeFile,
    pub extensions: BTreeMap<String, Mapping>,
    pub warnings: Vec<String>,
    /// Directory of the first file: relative paths resolve against it.
    pub project_dir: PathBuf,
}

/// Service keys a swarm-style deploy cannot honour: ignored with a warning.
const IGNORED_SERVICE_KEYS: &[&str] = &[
    "build",
    "cap_add",
    "cap_drop",
    "cgroup_parent",
    "cgroupns_mode",
    "container_name",
    "cpu_count",
    "cpu_percent",
    "cpu_quota",
    "cpu_period",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "device_cgroup_rules",
    "devices",
    "domainname",
    "expose",
    "external_links",
    "ipc",
    "isolation",
    "links",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "network_mode",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "privileged",
    "profiles",
    "pull_policy",
    "restart",
    "runtime",
    "scale",
    "security_opt",
    "shm_size",
    "storage_opt",
    "sysctls",
    "tmpfs",
    "ulimits",
    "userns_mode",
    "uts",
    "volume_driver",
];

/// Service keys that change what a service is and cannot be ignored.
const FORBIDDEN_SERVICE_KEYS: &[(&str, &str)] = &[
    (
        "extends",
        "extends is not supported by a stack deploy: inline the service or use YAML anchors",
    ),
    (
        "volumes_from",
        "volumes_from is not supported by a stack deploy: use a named volume",
    ),
];

struct Ctx<'a> {
    file: String,
    src: &'a str,
}

impl Ctx<'_> {
    fn err(&self, path: &[String], message: impl Into<String>) -> StackError {
        StackError {
            file: self.file.clone(),
            path: join(path),
            line: find_line(self.src, path),
            message: message.into(),
        }
    }
}

fn s(p: &[&str]) -> Vec<String> {
    p.iter().map(|x| x.to_string()).collect()
}

/// The environment for interpolation: `.env` beside the first file, under
/// the given variables (normally the process environment).
pub fn build_env(
    first: &Path,
    process: impl IntoIterator<Item = (String, String)>,
) -> Result<Env, StackError> {
    let mut env = Env::default();
    let dot = first.parent().unwrap_or(Path::new(".")).join(".env");
    if dot.is_file() {
        let text = std::fs::read_to_string(&dot).map_err(|e| StackError {
            file: dot.display().to_string(),
            path: String::new(),
            line: None,
            message: format!("cannot read: {e}"),
        })?;
        let pairs = interp::parse_env_file(&text).map_err(|m| StackError {
            file: dot.display().to_string(),
            path: String::new(),
            line: None,
            message: m,
        })?;
        env.vars.extend(pairs);
    }
    env.vars.extend(process);
    Ok(env)
}

/// Loads the files in order (later ones override), with `env` for
/// interpolation.
pub fn load(files: &[PathBuf], env: &Env) -> Result<Stack, StackError> {
    let Some(first) = files.first() else {
        return Err(StackError {
            file: "-".into(),
            path: String::new(),
            line: None,
            message: "no stack file given (-c FILE)".into(),
        });
    };
    let project_dir = first
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut stack = Stack {
        project_dir,
        ..Default::default()
    };
    let mut merged: Option<Value> = None;
    let mut first_src = String::new();
    for path in files {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| StackError {
            file: name.clone(),
            path: String::new(),
            line: None,
            message: format!("cannot read the file: {e}"),
        })?;
        let normalized = load_one(&name, &src, env, &mut stack)?;
        if first_src.is_empty() {
            first_src = src;
        }
        match &mut merged {
            None => merged = Some(normalized),
            Some(base) => yaml::merge_override(base, normalized, &[]),
        }
    }
    let label = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let merged = merged.unwrap_or(Value::Null);
    let file: ComposeFile = serde_path_to_error::deserialize(merged).map_err(|e| StackError {
        file: label.clone(),
        path: e.path().to_string(),
        line: None,
        message: e.inner().to_string(),
    })?;
    stack.file = file;
    finalize(&mut stack, env, &label)?;
    shoal_ext::check(&stack)
        .map_err(|(path, message)| StackError {
            file: label.clone(),
            path,
            line: None,
            message,
        })
        .and_then(|external| validate(&stack.file, &external, &label))
        .map_err(|mut e| {
            if files.len() == 1 {
                e.line = find_line(&first_src, &split_path(&e.path));
            }
            e
        })?;
    Ok(stack)
}

/// Parses one file to its normalized value: syntax, merge keys, version,
/// ignored/forbidden keys, interpolation, then the model (types, unknown
/// keys), serialized back.
fn load_one(name: &str, src: &str, env: &Env, stack: &mut Stack) -> Result<Value, StackError> {
    let cx = Ctx {
        file: name.to_string(),
        src,
    };
    // Count first: a Value would expand every alias in memory.
    let parsed = yaml::check_expansion(src, yaml::MAX_NODES)
        .and_then(|()| serde_yaml_ng::from_str::<Value>(src));
    let mut value: Value = parsed.map_err(|e| {
        let msg = e.to_string();
        let message = if msg.contains("repetition limit exceeded") || msg.contains("alias bomb") {
            "too many aliases (a YAML alias bomb?): refusing to expand it".to_string()
        } else if msg.contains("recursion limit exceeded") {
            "the document nests too deeply (recursion limit exceeded)".to_string()
        } else {
            format!("invalid YAML: {msg}")
        };
        StackError {
            file: name.to_string(),
            path: String::new(),
            line: e.location().map(|l| l.line()),
            message,
        }
    })?;
    if value.is_null() {
        return Err(cx.err(&[], "the file is empty"));
    }
    yaml::apply_merges(&mut value, &mut Vec::new()).map_err(|(path, message)| StackError {
        file: name.to_string(),
        line: find_line(src, &split_path(&path)),
        path,
        message,
    })?;
    let Value::Mapping(top) = &mut value else {
        return Err(cx.err(
            &[],
            format!("expected a mapping at the top, not {}", de::show(&value)),
        ));
    };
    if let Some(v) = top.get("version") {
        let ok = de::scalar_string(v).is_some_and(|ver| ver == "3" || ver.starts_with("3."));
        if !ok {
            return Err(cx.err(
                &s(&["version"]),
                format!(
                    "unsupported version {}: a stack file is version 3.x or has no version",
                    de::show(v)
                ),
            ));
        }
    }
    // Interpolate before taking keys out, so a `${X:?}` anywhere is checked.
    let mut warnings = Vec::new();
    interpolate_value(&mut value, &mut Vec::new(), env, &mut warnings, &cx)?;
    for w in warnings {
        push_unique(&mut stack.warnings, format!("{name}: {w}"));
    }
    let Value::Mapping(top) = &mut value else {
        unreachable!()
    };
    let top_ext = take_extensions(top);
    if !top_ext.is_empty() {
        stack
            .extensions
            .entry(String::new())
            .or_default()
            .extend(top_ext);
    }
    if let Some(Value::Mapping(services)) = top.get_mut("services") {
        for (svc, def) in services.iter_mut() {
            let svc = key_str(svc);
            let Value::Mapping(def) = def else { continue };
            let ext = take_extensions(def);
            if !ext.is_empty() {
                stack.extensions.entry(svc.clone()).or_default().extend(ext);
            }
            for (key, why) in FORBIDDEN_SERVICE_KEYS {
                if def.contains_key(*key) {
                    return Err(cx.err(&s(&["services", &svc, key]), *why));
                }
            }
            let ignored: Vec<&str> = IGNORED_SERVICE_KEYS
                .iter()
                .copied()
                .filter(|k| def.contains_key(*k))
                .collect();
            for key in ignored {
                def.remove(key);
                push_unique(
                    &mut stack.warnings,
                    format!(
                        "{name}: services.{svc}.{key}: not supported by a stack deploy, ignored"
                    ),
                );
            }
        }
    }
    for section in ["networks", "volumes", "secrets", "configs"] {
        if let Some(Value::Mapping(objs)) = top.get_mut(section) {
            for (_, def) in objs.iter_mut() {
                if let Value::Mapping(def) = def {
                    take_extensions(def);
                    fold_external_name(def);
                }
            }
        }
    }
    let file: ComposeFile = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path: Vec<String> = e
            .path()
            .iter()
            .map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
                other => other.to_string(),
            })
            .collect();
        let mut message = e.inner().to_string();
        // List items read by hand report their index as "[i]: ...".
        if let Some((idx, rest)) = message.split_once("]: ") {
            if idx.starts_with('[') && idx[1..].parse::<usize>().is_ok() {
                path.push(format!("{idx}]"));
                message = rest.to_string();
            }
        }
        cx.err(&path, message)
    })?;
    let mut v =
        serde_yaml_ng::to_value(&file).map_err(|e| cx.err(&[], format!("internal error: {e}")))?;
    yaml::prune(&mut v, false, &[]);
    Ok(v)
}

/// `services.web.ports[0]` to its segments.
fn split_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(rest[..i].to_string());
            }
            rest = &rest[i..];
            for idx in rest.split_inclusive(']') {
                out.push(idx.to_string());
            }
        } else {
            out.push(rest.to_string());
        }
    }
    out
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

fn take_extensions(m: &mut Mapping) -> Mapping {
    let keys: Vec<Value> = m
        .keys()
        .filter(|k| k.as_str().is_some_and(|k| k.starts_with("x-")))
        .cloned()
        .collect();
    let mut out = Mapping::new();
    for k in keys {
        if let Some(v) = m.remove(&k) {
            out.insert(k, v);
        }
    }
    out
}

/// `external: {name: N}` (v3.0–3.3) becomes `external: true, name: N`.
fn fold_external_name(def: &mut Mapping) {
    if let Some(Value::Mapping(ext)) = def.get("external") {
        if let Some(n) = ext.get("name").cloned() {
            def.insert("name".into(), n);
        }
        def.insert("external".into(), Value::Bool(true));
    }
}

fn interpolate_value(
    v: &mut Value,
    path: &mut Vec<String>,
    env: &Env,
    warnings: &mut Vec<String>,
    cx: &Ctx,
) -> Result<(), StackError> {
    match v {
        Value::String(s) => {
            *s = interp::interpolate(s, env, warnings).map_err(|m| cx.err(path, m))?;
        }
        Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                path.push(key_str(k));
                interpolate_value(child, path, env, warnings, cx)?;
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                interpolate_value(child, path, env, warnings, cx)?;
                path.pop();
            }
        }
        Value::Tagged(t) => interpolate_value(&mut t.value, path, env, warnings, cx)?,
        _ => {}
    }
    Ok(())
}

/// Reads `env_file`s into `environment`, fills `KEY` without a value from
/// the environment, and resolves relative paths against the project dir.
fn finalize(stack: &mut Stack, env: &Env, label: &str) -> Result<(), StackError> {
    let dir = stack.project_dir.clone();
    let resolve = |p: &str| -> String {
        if let Some(rest) = p.strip_prefix("~/") {
            if let Ok(home) = std::env::var("HOME") {
                return Path::new(&home).join(rest).display().to_string();
            }
        }
        if Path::new(p).is_relative() {
            dir.join(p.strip_prefix("./").unwrap_or(p))
                .display()
                .to_string()
        } else {
            p.to_string()
        }
    };
    for (name, svc) in &mut stack.file.services {
        for f in std::mem::take(&mut svc.env_file) {
            let path = resolve(&f);
            let err = |m: String| StackError {
                file: label.to_string(),
                path: format!("services.{name}.env_file"),
                line: None,
                message: m,
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(format!("cannot read {path:?}: {e}")))?;
            let pairs =
                interp::parse_env_file(&text).map_err(|m| err(format!("in {path:?}: {m}")))?;
            for (k, v) in pairs {
                svc.environment.entry(k).or_insert(Some(v));
            }
        }
        for (k, v) in svc.environment.iter_mut() {
            if v.is_none() {
                *v = env.get(k).map(str::to_string);
            }
        }
        for vol in &mut svc.volumes {
            if vol.kind == de::MountType::Bind {
                if let Some(src) = &vol.source {
                    vol.source = Some(resolve(src));
                }
            }
        }
    }
    for obj in stack
        .file
        .secrets
        .values_mut()
        .chain(stack.file.configs.values_mut())
    {
        if let Some(f) = &obj.file {
            obj.file = Some(resolve(f));
        }
    }
    Ok(())
}

/// Checks across the merged file: something to run, references, cycles.
/// `external_names`: services of type ExternalName (x-shoal), which run
/// nothing and so have no image.
fn validate(
    f: &ComposeFile,
    external_names: &BTreeSet<String>,
    label: &str,
) -> Result<(), StackError> {
    let err = |path: String, message: String| StackError {
        file: label.to_string(),
        path,
        line: None,
        message,
    };
    if f.services.is_empty() {
        return Err(err(
            "services".into(),
            "the stack defines no services".into(),
        ));
    }
    for (kind, objs) in [("secret", &f.secrets), ("config", &f.configs)] {
        for (name, o) in objs {
            let sources = [
                o.file.is_some(),
                o.content.is_some(),
                o.environment.is_some(),
            ];
            let n = sources.iter().filter(|b| **b).count();
            if o.is_external() && n > 0 {
                return Err(err(
                    format!("{kind}s.{name}"),
                    format!("an external {kind} cannot also have file, content or environment"),
                ));
            }
            if !o.is_external() && n != 1 {
                return Err(err(
                    format!("{kind}s.{name}"),
                    format!("a {kind} needs exactly one of file, content, environment, or external: true"),
                ));
            }
            if kind == "secret" && o.content.is_some() {
                return Err(err(
                    format!("secrets.{name}.content"),
                    "a secret cannot have inline content: use file or environment".into(),
                ));
            }
        }
    }
    for (name, svc) in &f.services {
        let p = |rest: &str| format!("services.{name}.{rest}");
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            return Err(err(
                format!("services.{name}"),
                format!("invalid service name {name:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit"),
            ));
        }
        if svc.image.as_deref().is_none_or(|i| i.trim().is_empty())
            && !external_names.contains(name)
        {
            return Err(err(
                format!("services.{name}"),
                "nothing to run: the service has no image (build is not supported by a stack deploy)"
                    .into(),
            ));
        }
        for net in svc.networks.keys() {
            if net != "default" && !f.networks.contains_key(net) {
                return Err(err(
                    p(&format!("networks.{net}")),
                    format!("undefined network {net:?}: declare it under the top-level networks"),
                ));
            }
        }
        for (i, v) in svc.volumes.iter().enumerate() {
            if v.kind == de::MountType::Volume {
                if let Some(src) = &v.source {
                    if !f.volumes.contains_key(src) {
                        return Err(err(
                            p(&format!("volumes[{i}]")),
                            format!(
                                "undefined volume {src:?}: declare it under the top-level volumes"
                            ),
                        ));
                    }
                }
            }
        }
        for (kind, refs, defined) in [
            ("secret", &svc.secrets, &f.secrets),
            ("config", &svc.configs, &f.configs),
        ] {
            for (i, r) in refs.iter().enumerate() {
                if !defined.contains_key(&r.source) {
                    return Err(err(
                        p(&format!("{kind}s[{i}]")),
                        format!(
                            "undefined {kind} {:?}: declare it under the top-level {kind}s",
                            r.source
                        ),
                    ));
                }
            }
        }
        for dep in svc.depends_on.keys() {
            if !f.services.contains_key(dep) {
                return Err(err(
                    p(&format!("depends_on.{dep}")),
                    format!("undefined service {dep:?}"),
                ));
            }
        }
        if let Some(d) = &svc.deploy {
            if d.mode == Some(model::Mode::Global) && d.replicas.is_some() {
                return Err(err(
                    p("deploy.replicas"),
                    "replicas cannot be set with mode: global".into(),
                ));
            }
            if d.endpoint_mode == Some(model::EndpointMode::Dnsrr)
                && svc
                    .ports
                    .iter()
                    .any(|pt| pt.mode == "ingress" && pt.published.is_some())
            {
                return Err(err(
                    p("deploy.endpoint_mode"),
                    "endpoint_mode dnsrr cannot publish ports in ingress mode: use mode: host"
                        .into(),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(f) {
        return Err(err(
            format!("services.{}.depends_on", cycle[0]),
            format!("depends_on cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

fn find_cycle(f: &ComposeFile) -> Option<Vec<String>> {
    fn visit<'a>(
        n: &'a str,
        f: &'a ComposeFile,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|s| *s == n) {
            let mut c: Vec<String> = stack[pos..].iter().map(|s| s.to_string()).collect();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n);
        if let Some(svc) = f.services.get(n) {
            for d in svc.depends_on.keys() {
                if let Some(c) = visit(d, f, stack, done) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for n in f.services.keys() {
        if let Some(c) = visit(n, f, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

/// The normalized YAML of a loaded stack, extensions put back.
pub fn to_yaml(stack: &Stack) -> Result<String, serde_yaml_ng::Error> {
    let mut v = serde_yaml_ng::to_value(&stack.file)?;
    yaml::prune(&mut v, false, &[]);
    if let Value::Mapping(top) = &mut v {
        for (owner, ext) in &stack.extensions {
            if owner.is_empty() {
                top.extend(ext.clone());
            } else if let Some(Value::Mapping(svc)) = top
                .get_mut("services")
                .and_then(|s| s.get_mut(owner.as_str()))
            {
                svc.extend(ext.clone());
            }
        }
    }
    escape_dollars(&mut v);
    serde_yaml_ng::to_string(&v)
}

/// The output is interpolated already: `$` is written `$$` so that reading
/// it back gives the same values.
fn escape_dollars(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('$') => *s = s.replace('$', "$$"),
        Value::Mapping(m) => m.values_mut().for_each(escape_dollars),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars),
        Value::Tagged(t) => escape_dollars(&mut t.value),
        _ => {}
    }
}

/// `shoal stack config`.
pub fn config(files: &[PathBuf]) -> anyhow::Result<()> {
    let first = files.first().cloned().unwrap_or_default();
    let env = build_env(&first, std::env::vars())?;
    let stack = load(files, &env)?;
    for w in &stack.warnings {
        eprintln!("WARNING: {w}");
    }
    print!("{}", to_yaml(&stack)?);
    Ok(())
}
