//! Reading the CLI's docker-like tables: columns start where their header
//! starts (headers are separated by 3 spaces and may contain one space).

use std::collections::BTreeMap;

pub type Row = BTreeMap<String, String>;

/// Rows of a table, each a map from header to trimmed cell.
pub fn parse(text: &str) -> Vec<Row> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let hc: Vec<char> = header.chars().collect();
    // Column starts: the first char, and any non-space after 2+ spaces.
    let mut starts = Vec::new();
    for i in 0..hc.len() {
        if hc[i] != ' ' && (i == 0 || (i >= 2 && hc[i - 1] == ' ' && hc[i - 2] == ' ')) {
            starts.push(i);
        }
    }
    let names: Vec<String> = starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(hc.len());
            hc[s..end].iter().collect::<String>().trim().to_string()
        })
        .collect();
    lines
        .map(|l| {
            let c: Vec<char> = l.chars().collect();
            names
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    let s = starts[k].min(c.len());
                    let e = starts.get(k + 1).copied().unwrap_or(c.len()).min(c.len());
                    (
                        name.clone(),
                        c[s..e].iter().collect::<String>().trim().to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_follow_the_header() {
        let t = format!(
            "{:<5}{:<13}{:<16}{}\n{:<5}{:<13}{}\n{:<5}{:<13}{:<16}{}\n",
            "ID",
            "NAME",
            "DESIRED STATE",
            "ERROR",
            "abc",
            "web.1",
            "Running",
            "d",
            "\\_ web.1",
            "Shutdown",
            "\"x y\""
        );
        let t = t.as_str();
        let rows = super::parse(t);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["NAME"], "web.1");
        assert_eq!(rows[0]["DESIRED STATE"], "Running");
        assert_eq!(rows[0]["ERROR"], "");
        assert_eq!(rows[1]["ID"], "d");
        assert_eq!(rows[1]["NAME"], "\\_ web.1");
        assert_eq!(rows[1]["ERROR"], "\"x y\"");
    }
}
