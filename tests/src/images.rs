//! Test images built locally (no registry is reachable): a busybox-static
//! root file system assembled in memory and piped to `docker import`.
//!
//! `shoal-test/web:VERSION` serves `/www/index.html` = VERSION and
//! `/www/host.html` = the container's hostname (so that tests can tell
//! replicas apart) with busybox httpd on port 80. httpd ignores SIGTERM:
//! tests give services `--stop-grace-period 1s`.
//!
//! Images carry a label with a hash of their content and are rebuilt only
//! when it changes.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::docker::docker;

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";
const HASH_LABEL: &str = "io.shoal.test.hash";
/// Applets linked into /bin.
const APPLETS: &[&str] = &[
    "sh", "httpd", "nc", "wget", "sleep", "cat", "echo", "hostname", "ls", "date", "true", "false",
    "kill",
];
/// Bump when the way images are built changes.
const RECIPE: &str = "web-1";

static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The command the web image runs.
pub fn web_cmd() -> Vec<&'static str> {
    vec![
        "/bin/sh",
        "-c",
        "hostname > /www/host.html; exec /bin/httpd -f -p 80 -h /www",
    ]
}

/// FNV-1a, 64 bits: a content hash that is stable across Rust versions.
fn fnv(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain([0xffu8].iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// The root file system of the web image, as a tar archive.
pub fn web_rootfs(busybox: &[u8], version: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("www", 0o755),
        ("tmp", 0o1777),
        ("etc", 0o755),
    ] {
        b.append_data(
            &mut header(tar::EntryType::Directory, mode, 0),
            dir,
            std::io::empty(),
        )
        .expect("tar dir");
    }
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o755, busybox.len() as u64),
        "bin/busybox",
        busybox,
    )
    .expect("tar busybox");
    for a in APPLETS {
        b.append_link(
            &mut header(tar::EntryType::Symlink, 0o777, 0),
            format!("bin/{a}"),
            "busybox",
        )
        .expect("tar link");
    }
    let page = format!("{version}\n");
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, page.len() as u64),
        "www/index.html",
        page.as_bytes(),
    )
    .expect("tar page");
    b.into_inner().expect("tar finish")
}

/// Builds `shoal-test/web:VERSION` unless an image with the same content is
/// already there; returns its name.
pub fn web_image(version: &str) -> String {
    let name = format!("shoal-test/web:{version}");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.contains(&name) {
        return name;
    }
    let busybox = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("cannot read {BUSYBOX} ({e}): install busybox-static (apt-get install -y busybox-static)")
    });
    let cmd = serde_json::to_string(&web_cmd()).expect("json");
    let hash = fnv(&[
        RECIPE.as_bytes(),
        version.as_bytes(),
        cmd.as_bytes(),
        &busybox,
    ]);
    let fmt = format!("{{{{index .Config.Labels \"{HASH_LABEL}\"}}}}");
    let have = docker(&["image", "inspect", "--format", &fmt, &name]);
    if !(have.success() && have.stdout.trim() == hash) {
        let tar = web_rootfs(&busybox, version);
        let mut child = Command::new("docker")
            .args([
                "import",
                "-c",
                &format!("CMD {cmd}"),
                "-c",
                &format!("LABEL {HASH_LABEL}={hash}"),
                "-",
                &name,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker import");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&tar)
            .expect("write to docker import");
        let out = child.wait_with_output().expect("docker import");
        assert!(
            out.status.success(),
            "docker import of {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    built.insert(name.clone());
    name
}
