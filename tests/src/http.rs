//! A tiny HTTP/1.0 client: enough to ask a published port for a page, or to
//! post a form to it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends one request to 127.0.0.1:`port` (`headers` as `Name: value`
/// lines, `body` with its Content-Length when not empty); returns the status
/// code and the body.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(t)).map_err(|e| e.to_string())?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response from {addr}: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line from {addr}: {head:?}"))?;
    Ok((code, body.to_string()))
}

/// GET `path` from 127.0.0.1:`port`; returns the status code and the body.
pub fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    request(port, "GET", path, &[], "")
}

/// GET that must answer 200; the body, trimmed.
pub fn get_ok(port: u16, path: &str) -> Result<String, String> {
    match get(port, path)? {
        (200, body) => Ok(body.trim().to_string()),
        (code, body) => Err(format!("HTTP {code}: {body:?}")),
    }
}

/// POST of an `application/x-www-form-urlencoded` body, with extra headers
/// (a `Cookie: ...` line, say); returns the status code and the body.
pub fn post_form(
    port: u16,
    path: &str,
    headers: &[&str],
    form: &str,
) -> Result<(u16, String), String> {
    let mut h = vec!["Content-Type: application/x-www-form-urlencoded"];
    h.extend_from_slice(headers);
    request(port, "POST", path, &h, form)
}
