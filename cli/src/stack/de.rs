//! Lenient scalar types and the short/long syntaxes of a compose file.
//!
//! Every custom deserializer here reads a `serde_yaml_ng::Value` first and
//! converts it, so a string that interpolation produced ("3", "true", "10s")
//! reaches the type the key needs, and a bad value is reported with the value
//! itself in the message.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::Value;

/// Show a value in an error message: strings quoted, scalars as written.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn bad<E: serde::de::Error>(v: &Value, expected: &str) -> E {
    E::custom(format!("invalid value {}: expected {expected}", show(v)))
}

/// A scalar read as a string: numbers and booleans are written out.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn to_u64<E: serde::de::Error>(v: &Value) -> Result<u64, E> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| bad(v, "a non-negative integer")),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| bad(v, "a non-negative integer")),
        _ => Err(bad(v, "a non-negative integer")),
    }
}

fn to_f64<E: serde::de::Error>(v: &Value) -> Result<f64, E> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| bad(v, "a number")),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| bad(v, "a number")),
        _ => Err(bad(v, "a number")),
    }
}

fn to_bool<E: serde::de::Error>(v: &Value) -> Result<bool, E> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => Err(bad(v, "true or false")),
        },
        _ => Err(bad(v, "true or false")),
    }
}

pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => to_u64(&v).map(Some),
    }
}

/// A file mode: `0440` and `0o440` are octal (YAML 1.2 reads a leading-zero
/// number as a string, so it arrives here as one); a plain number is taken
/// as written.
pub fn opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Value::deserialize(d)?;
    let octal = |s: &str| u64::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777);
    if v.is_null() {
        return Ok(None);
    }
    match &v {
        Value::Number(n) => n.as_u64().filter(|m| *m <= 0o7777).map(Some),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0o").or_else(|| s.strip_prefix('0')) {
                Some(rest) if !rest.is_empty() => octal(rest).map(Some),
                _ => s.parse::<u64>().ok().filter(|m| *m <= 0o7777).map(Some),
            }
        }
        _ => None,
    }
    .ok_or_else(|| bad(&v, "a file mode such as 0440"))
}

pub fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => to_f64(&v).map(Some),
    }
}

pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => to_bool(&v).map(Some),
    }
}

pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => scalar_string(&v)
            .map(Some)
            .ok_or_else(|| bad(&v, "a string")),
    }
}

/// A list of strings, or one string as a list of one.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|v| scalar_string(v).ok_or_else(|| bad(v, "a string")))
            .collect(),
        v => scalar_string(&v)
            .map(|s| vec![s])
            .ok_or_else(|| bad(&v, "a string or a list of strings")),
    }
}

/// `KEY=VALUE` list or `KEY: VALUE` mapping. A value left out (`KEY` or
/// `KEY:`) is `None`.
pub fn env_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    let mut out = BTreeMap::new();
    match Value::deserialize(d)? {
        Value::Null => {}
        Value::Sequence(items) => {
            for v in &items {
                let s = scalar_string(v).ok_or_else(|| bad(v, "a KEY=VALUE string"))?;
                match s.split_once('=') {
                    Some((k, val)) => out.insert(k.to_string(), Some(val.to_string())),
                    None => out.insert(s, None),
                };
            }
        }
        Value::Mapping(m) => {
            for (k, v) in &m {
                let key = scalar_string(k).ok_or_else(|| bad(k, "a string key"))?;
                let val = match v {
                    Value::Null => None,
                    v => Some(scalar_string(v).ok_or_else(|| bad(v, "a string"))?),
                };
                out.insert(key, val);
            }
        }
        v => return Err(bad(&v, "a list of KEY=VALUE or a mapping")),
    }
    Ok(out)
}

/// Labels: like an environment, a missing value is the empty string.
pub fn label_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    Ok(env_map(d)?
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// A map whose values may be null (`networks: {front: }`): null is the
/// default value.
pub fn null_default_map<'de, D, T>(d: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    let m = Option::<BTreeMap<String, Option<T>>>::deserialize(d)?.unwrap_or_default();
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect())
}

/// A duration, kept in milliseconds. Reads Go/Compose durations such as
/// `10s`, `1m30s`, `1.5s`, `500ms`, `2h`; writes `10s` or `1500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Millis(pub u64);

pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_end == 0 {
            return None;
        }
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3600e3,
            _ => return None,
        };
        rest = &rest[unit_end..];
        total += n * factor;
    }
    Some(total.round() as u64)
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => parse_duration(s).map(Millis),
            Value::Number(n) if n.as_u64() == Some(0) => Some(Millis(0)),
            _ => None,
        }
        .ok_or_else(|| bad(&v, "a duration such as 10s, 1m30s or 500ms"))
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

/// A size in bytes. Reads `128M`, `1.5g`, `512kb`, `100b` or a plain number
/// of bytes (units are powers of 1024, as Docker reads them); writes bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Bytes(pub u64);

pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let n: f64 = s[..num_end].parse().ok()?;
    let factor: f64 = match s[num_end..].trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * factor).round() as u64)
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => parse_bytes(s).map(Bytes),
            Value::Number(n) => n.as_u64().map(Bytes),
            _ => None,
        }
        .ok_or_else(|| bad(&v, "a size such as 128M, 1g or a number of bytes"))
    }
}

/// CPUs in billionths of a CPU (Docker's NanoCPUs). Reads `0.5`, `"2"`;
/// writes `"0.5"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NanoCpus(pub u64);

impl<'de> Deserialize<'de> for NanoCpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let f: f64 = to_f64::<D::Error>(&v).map_err(|_| bad(&v, "a number of CPUs such as 0.5"))?;
        if !f.is_finite() || f < 0.0 {
            return Err(bad(&v, "a non-negative number of CPUs"));
        }
        Ok(NanoCpus((f * 1e9).round() as u64))
    }
}

impl Serialize for NanoCpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&(self.0 as f64 / 1e9))
    }
}

/// A published port, always in the long form once read. A short-syntax
/// range (`9000-9002:9000-9002`) becomes one entry per port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    #[serde(deserialize_with = "port_number")]
    pub target: u16,
    #[serde(
        default,
        deserialize_with = "opt_port_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub published: Option<u16>,
    #[serde(default = "tcp", deserialize_with = "protocol")]
    pub protocol: String,
    #[serde(default = "ingress", deserialize_with = "port_mode")]
    pub mode: String,
    /// Accepted and kept; a swarm-style deploy does not bind to one address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

fn tcp() -> String {
    "tcp".into()
}
fn ingress() -> String {
    "ingress".into()
}

fn check_port<E: serde::de::Error>(v: &Value, n: u64) -> Result<u16, E> {
    if (1..=65535).contains(&n) {
        Ok(n as u16)
    } else {
        Err(E::custom(format!(
            "port {} is out of range: expected 1 to 65535",
            show(v)
        )))
    }
}

fn port_number<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = Value::deserialize(d)?;
    let n = to_u64::<D::Error>(&v).map_err(|_| bad(&v, "a port number"))?;
    check_port(&v, n)
}

fn opt_port_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => {
            let n = to_u64::<D::Error>(&v).map_err(|_| bad(&v, "a port number"))?;
            check_port(&v, n).map(Some)
        }
    }
}

fn protocol<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    match scalar_string(&v).as_deref() {
        Some(p @ ("tcp" | "udp" | "sctp")) => Ok(p.to_string()),
        _ => Err(bad(&v, "tcp, udp or sctp")),
    }
}

fn port_mode<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    match scalar_string(&v).as_deref() {
        Some(p @ ("ingress" | "host")) => Ok(p.to_string()),
        _ => Err(bad(&v, "ingress or host")),
    }
}

fn parse_range<E: serde::de::Error>(whole: &Value, s: &str) -> Result<(u16, u16), E> {
    let num = |p: &str| -> Result<u16, E> {
        let n: u64 = p.trim().parse().map_err(|_| {
            bad::<E>(
                whole,
                "a port such as 8080:80, 8080:80/udp or 9000-9002:9000-9002",
            )
        })?;
        check_port(whole, n)
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (num(a)?, num(b)?);
            if b < a {
                return Err(E::custom(format!(
                    "invalid port range {}: the end is before the start",
                    show(whole)
                )));
            }
            Ok((a, b))
        }
        None => {
            let a = num(s)?;
            Ok((a, a))
        }
    }
}

/// Short syntax: `[HOST_IP:][PUBLISHED[-END]:]TARGET[-END][/PROTOCOL]`.
fn parse_short_port<E: serde::de::Error>(v: &Value) -> Result<Vec<Port>, E> {
    let s = scalar_string(v).ok_or_else(|| bad::<E>(v, "a port"))?;
    let (spec, proto) = match s.split_once('/') {
        Some((a, p)) => (a.to_string(), p.to_string()),
        None => (s.clone(), "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(E::custom(format!(
            "invalid protocol in port {}: expected tcp, udp or sctp",
            show(v)
        )));
    }
    let mut parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    parts.reverse();
    let (host_ip, published, target) = match parts.as_slice() {
        [t] => (None, None, *t),
        [p, t] => (None, Some(*p), *t),
        [ip, p, t] => (
            Some(ip.trim_matches(|c| c == '[' || c == ']')),
            Some(*p),
            *t,
        ),
        _ => return Err(bad(v, "a port")),
    };
    let (t0, t1) = parse_range::<E>(v, target)?;
    let published = match published {
        Some(p) if !p.is_empty() => Some(parse_range::<E>(v, p)?),
        _ => None,
    };
    let count = t1 - t0;
    if let Some((p0, p1)) = published {
        if p1 - p0 != count && count != 0 {
            return Err(E::custom(format!(
                "invalid port range {}: the published and target ranges differ in length",
                show(v)
            )));
        }
        if count == 0 && p1 != p0 {
            return Err(E::custom(format!(
                "invalid port {}: a range of published ports needs a range of targets",
                show(v)
            )));
        }
    }
    Ok((0..=count)
        .map(|i| Port {
            target: t0 + i,
            published: published.map(|(p0, _)| p0 + i),
            protocol: proto.clone(),
            mode: "ingress".into(),
            host_ip: host_ip.filter(|h| !h.is_empty()).map(str::to_string),
            name: None,
            app_protocol: None,
        })
        .collect())
}

pub fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Port>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        v => return Err(bad(&v, "a list of ports")),
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let wrap = |e: D::Error| D::Error::custom(format!("[{i}]: {e}"));
        match item {
            Value::Mapping(_) => {
                out.push(Port::deserialize(item).map_err(|e| wrap(D::Error::custom(e)))?)
            }
            v => out.extend(parse_short_port::<D::Error>(&v).map_err(wrap)?),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    #[default]
    Volume,
    Bind,
    Tmpfs,
    Npipe,
}

/// A service mount, always in the long form once read.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceVolume {
    #[serde(rename = "type")]
    pub kind: MountType,
    #[serde(deserialize_with = "opt_string")]
    pub source: Option<String>,
    pub target: String,
    #[serde(deserialize_with = "opt_bool")]
    pub read_only: Option<bool>,
    pub consistency: Option<String>,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeOptions>,
    pub tmpfs: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BindOptions {
    pub propagation: Option<String>,
    #[serde(deserialize_with = "opt_bool")]
    pub create_host_path: Option<bool>,
    pub selinux: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VolumeOptions {
    #[serde(deserialize_with = "opt_bool")]
    pub nocopy: Option<bool>,
    pub subpath: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TmpfsOptions {
    pub size: Option<Bytes>,
    #[serde(deserialize_with = "opt_mode")]
    pub mode: Option<u64>,
}

fn is_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with('.') || s.starts_with('~')
}

/// Short syntax: `TARGET`, `SOURCE:TARGET` or `SOURCE:TARGET:MODE`.
fn parse_short_volume<E: serde::de::Error>(v: &Value) -> Result<ServiceVolume, E> {
    let s = scalar_string(v).ok_or_else(|| bad::<E>(v, "a volume"))?;
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => (None, *t, None),
        [s, t] => (Some(*s), *t, None),
        [s, t, m] => (Some(*s), *t, Some(*m)),
        _ => return Err(bad(v, "a volume such as name:/path:ro")),
    };
    if !target.starts_with('/') {
        return Err(E::custom(format!(
            "invalid volume {}: the target {target:?} is not an absolute path",
            show(v)
        )));
    }
    let mut vol = ServiceVolume {
        target: target.to_string(),
        ..Default::default()
    };
    match source {
        Some(src) if is_path(src) => {
            vol.kind = MountType::Bind;
            vol.source = Some(src.to_string());
        }
        Some(src) => vol.source = Some(src.to_string()),
        None => {}
    }
    for m in mode.unwrap_or("").split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => vol.read_only = Some(true),
            "rw" => vol.read_only = Some(false),
            "nocopy" => {
                vol.volume = Some(VolumeOptions {
                    nocopy: Some(true),
                    subpath: None,
                })
            }
            "z" | "Z" => {
                vol.bind.get_or_insert_with(Default::default).selinux = Some(m.to_string())
            }
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                vol.bind.get_or_insert_with(Default::default).propagation = Some(m.to_string())
            }
            _ => {
                return Err(E::custom(format!(
                    "invalid volume {}: unknown mode {m:?}",
                    show(v)
                )))
            }
        }
    }
    Ok(vol)
}

pub fn volumes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServiceVolume>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        v => return Err(bad(&v, "a list of volumes")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let r = match item {
                Value::Mapping(_) => ServiceVolume::deserialize(item).map_err(D::Error::custom),
                v => parse_short_volume::<D::Error>(&v),
            };
            r.map_err(|e| D::Error::custom(format!("[{i}]: {e}")))
        })
        .collect()
}

/// A secret or config a service uses: `NAME` or the long form.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileRef {
    pub source: String,
    #[serde(deserialize_with = "opt_string")]
    pub target: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub uid: Option<String>,
    #[serde(deserialize_with = "opt_string")]
    pub gid: Option<String>,
    /// In decimal (0440 in the file is 288 here).
    #[serde(deserialize_with = "opt_mode")]
    pub mode: Option<u64>,
}

pub fn file_refs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FileRef>, D::Error> {
    let items = match Value::deserialize(d)? {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        v => return Err(bad(&v, "a list")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let r = match item {
                Value::Mapping(_) => FileRef::deserialize(item).map_err(D::Error::custom),
                v => scalar_string(&v)
                    .map(|source| FileRef {
                        source,
                        ..Default::default()
                    })
                    .ok_or_else(|| bad(&v, "a name or a mapping")),
            };
            r.map_err(|e| D::Error::custom(format!("[{i}]: {e}")))
        })
        .collect()
}
