//! Docker-like output: aligned tables, short ids, relative times.

use shoal_proto::now_ms;

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    print!("{}", render_table(header, rows));
}

pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The first 12 characters of an id, as Docker shows them.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// "5 seconds ago", "3 minutes ago", as Docker writes times.
pub fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "unknown".into();
    }
    let secs = ((now_ms() - ms).max(0) / 1000) as u64;
    let (n, unit) = match secs {
        0 => return "less than a second ago".into(),
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s => (s / 86_400, "day"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "an" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Capitalised state name: "Running".
pub fn title(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out = render_table(
            &["ID", "NAME"],
            &[
                vec!["a".into(), "web".into()],
                vec!["abcdef".into(), "x".into()],
            ],
        );
        assert_eq!(out, "ID       NAME\na        web\nabcdef   x\n");
    }
}
