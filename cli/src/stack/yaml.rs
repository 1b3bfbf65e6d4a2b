//! Value-level passes: merge keys, override merging, pruning, line lookup.

use std::fmt;

use serde_yaml_ng::{Mapping, Value};

use super::de::show;

pub fn key_str(k: &Value) -> String {
    super::de::scalar_string(k).unwrap_or_else(|| show(k))
}

pub fn join(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if p.starts_with('[') {
            s.push_str(p);
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(p);
        }
    }
    s
}

/// Applies YAML merge keys (`<<: *a`, `<<: [*a, *b]`) depth-first, so a
/// merged mapping's own merge keys are applied first; keys written in the
/// mapping win, then earlier sources win over later ones. Like
/// `Value::apply_merge`, but a bad merge key is reported with its path.
pub fn apply_merges(v: &mut Value, path: &mut Vec<String>) -> Result<(), (String, String)> {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m.iter_mut() {
                path.push(key_str(k));
                apply_merges(child, path)?;
                path.pop();
            }
            if let Some(merge) = m.remove("<<") {
                path.push("<<".into());
                let sources = match merge {
                    Value::Mapping(src) => vec![src],
                    Value::Sequence(items) => {
                        let mut out = Vec::new();
                        for (i, item) in items.into_iter().enumerate() {
                            match item {
                                Value::Mapping(src) => out.push(src),
                                other => {
                                    path.push(format!("[{i}]"));
                                    return Err((
                                        join(path),
                                        format!(
                                            "a merge key must point at a mapping, not {}",
                                            show(&other)
                                        ),
                                    ));
                                }
                            }
                        }
                        out
                    }
                    other => {
                        return Err((
                            join(path),
                            format!(
                                "a merge key must point at a mapping or a list of mappings, not {}",
                                show(&other)
                            ),
                        ))
                    }
                };
                path.pop();
                for src in sources {
                    for (k, val) in src {
                        if !m.contains_key(&k) {
                            m.insert(k, val);
                        }
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                path.push(format!("[{i}]"));
                apply_merges(child, path)?;
                path.pop();
            }
        }
        Value::Tagged(t) => apply_merges(&mut t.value, path)?,
        _ => {}
    }
    Ok(())
}

/// Merges an override file's normalized value into the base, as Compose
/// does: mappings by key, `ports` by (target, published, protocol),
/// `volumes` by target, `secrets`/`configs` by source, other lists replaced.
pub fn merge_override(base: &mut Value, over: Value, path: &[String]) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                let mut p = path.to_vec();
                p.push(key_str(&k));
                match b.get_mut(&k) {
                    Some(existing) => merge_override(existing, v, &p),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Sequence(b), Value::Sequence(o)) if is_service_list(path) => {
            let field = path.last().map(String::as_str).unwrap_or("");
            let key = |v: &Value| -> Vec<Value> {
                let get = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
                match field {
                    "ports" => vec![get("target"), get("published"), get("protocol")],
                    "volumes" => vec![get("target")],
                    _ => vec![get("source")],
                }
            };
            for item in o {
                let k = key(&item);
                match b.iter_mut().find(|e| key(e) == k) {
                    Some(e) => *e = item,
                    None => b.push(item),
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn is_service_list(path: &[String]) -> bool {
    path.len() == 3
        && path[0] == "services"
        && matches!(
            path[2].as_str(),
            "ports" | "volumes" | "secrets" | "configs"
        )
}

/// Removes nulls and empty collections from mappings, keeping the entries of
/// name-keyed maps (`networks: {front: {}}`) whose presence matters.
pub fn prune(v: &mut Value, keep_entries: bool, path: &[String]) {
    match v {
        Value::Mapping(m) => {
            let keys: Vec<Value> = m.keys().cloned().collect();
            for k in keys {
                let mut p = path.to_vec();
                p.push(key_str(&k));
                let child_keeps = keeps_entries(&p);
                let child = m.get_mut(&k).expect("key present");
                prune(child, child_keeps, &p);
                let empty = match child {
                    Value::Null => true,
                    Value::Sequence(s) => s.is_empty(),
                    Value::Mapping(cm) => cm.is_empty(),
                    _ => false,
                };
                if empty {
                    if keep_entries {
                        *m.get_mut(&k).expect("key present") = Value::Mapping(Mapping::new());
                    } else {
                        m.remove(&k);
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                prune(item, false, path);
            }
        }
        _ => {}
    }
}

fn keeps_entries(path: &[String]) -> bool {
    match path.len() {
        1 => matches!(
            path[0].as_str(),
            "services" | "networks" | "volumes" | "secrets" | "configs"
        ),
        3 => path[0] == "services" && matches!(path[2].as_str(), "networks" | "depends_on"),
        _ => false,
    }
}

/// Best-effort line of a key path in the source text, for error messages
/// (the YAML value tree carries no positions). Returns the line of the
/// deepest segment found.
pub fn find_line(src: &str, path: &[String]) -> Option<usize> {
    let lines: Vec<&str> = src.lines().collect();
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let significant = |l: &str| {
        let t = l.trim();
        !t.is_empty() && !t.starts_with('#') && t != "---"
    };
    let mut next_start = 0usize;
    let mut parent_indent: isize = -1;
    let mut found: Option<usize> = None;
    for seg in path {
        let mut hit = None;
        let start = next_start;
        if let Some(idx) = seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            let Ok(want) = idx.parse::<usize>() else {
                break;
            };
            let mut count = 0;
            let mut item_indent = None;
            for (n, l) in lines.iter().enumerate().skip(start) {
                if !significant(l) {
                    continue;
                }
                let ind = indent_of(l) as isize;
                if ind <= parent_indent && !l.trim_start().starts_with('-') {
                    break;
                }
                let t = l.trim_start();
                if t.starts_with("- ") || t == "-" {
                    let ii = *item_indent.get_or_insert(ind);
                    if ind == ii {
                        if count == want {
                            hit = Some((n, ind, n));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        } else {
            let mut child_indent: Option<usize> = None;
            for (n, l) in lines.iter().enumerate().skip(start) {
                if !significant(l) {
                    continue;
                }
                let mut t = l.trim_start();
                let mut ind = indent_of(l);
                while let Some(r) = t.strip_prefix("- ") {
                    ind += 2 + (r.len() - r.trim_start().len());
                    t = r.trim_start();
                }
                if (ind as isize) <= parent_indent && found.is_some() {
                    break;
                }
                // Only keys of this mapping, not of nested ones.
                if *child_indent.get_or_insert(ind) != ind {
                    continue;
                }
                let bare = t.trim_start_matches(['"', '\'']);
                if let Some(r) = bare.strip_prefix(seg.as_str()) {
                    let r = r.trim_start_matches(['"', '\'']);
                    if r.trim_start().starts_with(':') {
                        hit = Some((n, ind as isize, n + 1));
                        break;
                    }
                }
            }
        }
        match hit {
            Some((n, ind, next)) => {
                next_start = next;
                parent_indent = ind;
                found = Some(n + 1);
            }
            None => break,
        }
    }
    found
}

/// The most nodes a stack file may expand to, aliases included. A real
/// stack file has a few thousand; an alias bomb has billions.
pub const MAX_NODES: u64 = 200_000;

/// Counts the nodes the document expands to, aliases included, without
/// building them, and stops at `limit`: serde_yaml_ng's own repetition
/// limit bounds alias jumps, not the size they expand to.
pub fn check_expansion(src: &str, limit: u64) -> Result<(), serde_yaml_ng::Error> {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use std::cell::Cell;

    #[derive(Clone, Copy)]
    struct Count<'a> {
        n: &'a Cell<u64>,
        limit: u64,
    }
    impl<'a> Count<'a> {
        fn bump<E: Error>(self) -> Result<(), E> {
            self.n.set(self.n.get() + 1);
            if self.n.get() > self.limit {
                return Err(E::custom("alias bomb"));
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Count<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    macro_rules! scalar {
        ($($f:ident: $t:ty),*) => {$(
            fn $f<E: Error>(self, _: $t) -> Result<(), E> { self.bump() }
        )*};
    }
    impl<'de> Visitor<'de> for Count<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any YAML")
        }
        scalar!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            self.bump()
        }
        fn visit_none<E: Error>(self) -> Result<(), E> {
            self.bump()
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            self.bump()?;
            while a.next_element_seed(self)?.is_some() {}
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<(), A::Error> {
            self.bump()?;
            while a.next_key_seed(self)?.is_some() {
                a.next_value_seed(self)?;
            }
            Ok(())
        }
        fn visit_enum<A: serde::de::EnumAccess<'de>>(self, a: A) -> Result<(), A::Error> {
            use serde::de::VariantAccess;
            let ((), v) = a.variant_seed(self)?;
            v.newtype_variant_seed(self)
        }
    }
    let n = Cell::new(0);
    Count { n: &n, limit }.deserialize(serde_yaml_ng::Deserializer::from_str(src))
}
