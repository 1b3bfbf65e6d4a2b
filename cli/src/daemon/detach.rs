//! Running the daemon in the background: `shoal init` and `shoal daemon`
//! re-run themselves with --foreground in a new session (setsid), with
//! stdin from /dev/null and output to the data dir's log, then wait until
//! the daemon answers on its socket. That is what lets `docker exec ...
//! shoal init` return.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::connect;

/// How long a starting daemon may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts `args` (this binary's own arguments plus --foreground) detached
/// and waits for the daemon at `host` to serve.
pub async fn spawn_and_wait(args: Vec<OsString>, data_dir: &Path, host: &str) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let log_path = data_dir.join(super::config::LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open log file {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the shoal binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and only detaches the child from
    // our session and terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the daemon")?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(mut client) = connect(host).await {
            if client.info(shoal_proto::InfoRequest {}).await.is_ok() {
                return Ok(());
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the daemon exited ({status}) before serving:\n{}",
                log_tail(&log_path, 15)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the daemon did not serve at {host} within {}s; its log ({}):\n{}",
                START_TIMEOUT.as_secs(),
                log_path.display(),
                log_tail(&log_path, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
