//! Variable interpolation, as Compose does it, on string scalars.

use std::collections::HashMap;

/// The variables interpolation reads: a `.env` file under the process
/// environment (the environment wins).
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: HashMap<String, String>,
}

impl Env {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Parses a `.env` / `env_file`: `KEY=VALUE` lines, `#` comments, an
/// optional `export `, values optionally quoted. Errors name the line.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE, got {raw:?}", n + 1));
        };
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(format!("line {}: invalid variable name {k:?}", n + 1));
        }
        let v = v.trim();
        let v = if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            v[1..v.len() - 1].replace("\\n", "\n").replace("\\\"", "\"")
        } else if v.len() >= 2 && v.starts_with('\'') && v.ends_with('\'') {
            v[1..v.len() - 1].to_string()
        } else {
            // An unquoted value ends at ` #`.
            match v.find(" #") {
                Some(i) => v[..i].trim_end().to_string(),
                None => v.to_string(),
            }
        };
        out.push((k.to_string(), v));
    }
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Interpolates one string. `warnings` collects variables that are unset
/// and have no default (they become the empty string, as in Compose).
pub fn interpolate(s: &str, env: &Env, warnings: &mut Vec<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('$') => {
                out.push('$');
                i += 2;
            }
            Some('{') => {
                // Find the matching brace, allowing nested ${...} in defaults.
                let mut depth = 1;
                let mut j = i + 2;
                while j < chars.len() {
                    match chars[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(format!("invalid interpolation format in {s:?}: missing }}"));
                }
                let inner: String = chars[i + 2..j].iter().collect();
                out.push_str(&expand_braced(&inner, s, env, warnings)?);
                i = j + 1;
            }
            Some(&c2) if is_name_start(c2) => {
                let mut j = i + 1;
                while j < chars.len() && is_name(chars[j]) {
                    j += 1;
                }
                let name: String = chars[i + 1..j].iter().collect();
                out.push_str(&lookup(&name, env, warnings));
                i = j;
            }
            _ => {
                return Err(format!(
                    "invalid interpolation format in {s:?}: a lone $ (write $$ for a literal $)"
                ))
            }
        }
    }
    Ok(out)
}

fn lookup(name: &str, env: &Env, warnings: &mut Vec<String>) -> String {
    match env.get(name) {
        Some(v) => v.to_string(),
        None => {
            warnings.push(format!(
                "the {name} variable is not set: substituting an empty string"
            ));
            String::new()
        }
    }
}

fn expand_braced(
    inner: &str,
    whole: &str,
    env: &Env,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    let end = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
    let name = &inner[..end];
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(format!(
            "invalid interpolation format in {whole:?}: bad variable name in ${{{inner}}}"
        ));
    }
    let rest = &inner[end..];
    let value = env.get(name);
    let ops = [":-", ":?", ":+", "-", "?", "+"];
    let Some(op) = ops.iter().find(|op| rest.starts_with(**op)) else {
        if rest.is_empty() {
            return Ok(lookup(name, env, warnings));
        }
        return Err(format!(
            "invalid interpolation format in {whole:?}: unexpected {rest:?} after {name}"
        ));
    };
    let arg = &rest[op.len()..];
    let unset_or_empty = value.is_none_or(str::is_empty);
    let unset = value.is_none();
    match *op {
        ":-" | "-" => {
            let use_default = if *op == ":-" { unset_or_empty } else { unset };
            if use_default {
                interpolate(arg, env, warnings)
            } else {
                Ok(value.unwrap_or_default().to_string())
            }
        }
        ":+" | "+" => {
            let set = if *op == ":+" { !unset_or_empty } else { !unset };
            if set {
                interpolate(arg, env, warnings)
            } else {
                Ok(String::new())
            }
        }
        _ => {
            let fail = if *op == ":?" { unset_or_empty } else { unset };
            if fail {
                let msg = interpolate(arg, env, warnings)?;
                let why = if unset { "not set" } else { "empty" };
                Err(if msg.is_empty() {
                    format!("required variable {name} is {why}")
                } else {
                    format!("required variable {name} is {why}: {msg}")
                })
            } else {
                Ok(value.unwrap_or_default().to_string())
            }
        }
    }
}
