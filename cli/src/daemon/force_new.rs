//! `shoal init --force-new-cluster`: on a surviving manager, after the
//! others were lost for good, stop the local daemon if it runs, make a new
//! one-manager cluster from this node's state (see
//! `shoal_manager::recovery`), issue this node a manager certificate at the
//! new epoch, and start the daemon again.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use shoal_manager::recovery::{self, NewCluster, Survivor};

use super::config::{self, NodeConfig};
use super::{detach, pki};

/// How long a running daemon may take to stop after SIGTERM (it stops its
/// agent, its servers and Raft, a few seconds each at most).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What the command did, for the caller to print.
pub struct Recovered {
    pub cfg: NodeConfig,
    pub new: NewCluster,
    /// The pid of the daemon that was stopped, if one ran.
    pub stopped: Option<i32>,
}

/// Runs the whole procedure on `data_dir` and leaves the daemon serving on
/// `socket`.
pub async fn run(data_dir: &Path, socket: &Path) -> Result<Recovered> {
    if !config::exists(data_dir) {
        bail!(
            "{} holds no node (no node.json): --force-new-cluster recovers a cluster from a \
             surviving manager's state; run it on that manager, with its --data-dir",
            data_dir.display()
        );
    }
    let cfg = config::load(data_dir)?;
    if cfg.raft_id == 0 || !pki::is_manager_dir(data_dir) {
        bail!(
            "the node in {} is a worker: it holds no copy of the cluster's state; run \
             --force-new-cluster on a surviving manager",
            data_dir.display()
        );
    }
    let (pid_lock, stopped) = stop_running_daemon(data_dir).await?;
    // Checked before anything changes: the CA must be usable to issue this
    // node's certificate at the new epoch.
    let pki = pki::load(data_dir, &cfg)?.with_context(|| {
        format!(
            "{} has no cluster CA ({}): this data dir is from before shoal had one; start it \
             once with `shoal daemon` (which makes it), then retry",
            data_dir.display(),
            pki::ca_dir(data_dir).display()
        )
    })?;
    let new = recovery::force_new_cluster(Survivor {
        data_dir,
        node_id: &cfg.node_id,
        raft_id: cfg.raft_id,
        advertise_addr: &cfg.advertise_addr,
    })
    .await
    .context("--force-new-cluster failed")?;
    pki::issue_own(data_dir, &pki.ca, &cfg, new.epoch).with_context(|| {
        format!(
            "the new cluster (epoch {}) is committed in {}, but this node's certificate at that \
             epoch could not be issued; fix the cause and run `shoal init --force-new-cluster \
             --data-dir {}` again",
            new.epoch,
            data_dir.join("raft").display(),
            data_dir.display()
        )
    })?;
    // The daemon takes the pid file's lock itself.
    drop(pid_lock);
    start_daemon(data_dir, socket).await?;
    Ok(Recovered { cfg, new, stopped })
}

/// The data dir's pid file, locked by this command: a daemon holds the
/// same flock for as long as it runs, so holding it means none runs, and
/// none can start, while the Raft files are rebuilt.
struct PidLock {
    _file: std::fs::File,
}

/// Locks the pid file at `path` if no daemon holds it. The lock must be on
/// the file the path names now: a daemon that stops unlinks its pid file
/// while still holding the lock, and a lock on that unlinked file would
/// exclude no one.
fn try_lock_pid_file(path: &Path) -> Result<Option<PidLock>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Ok(None);
    }
    let same = match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(named)) => held.ino() == named.ino() && held.dev() == named.dev(),
        _ => false,
    };
    Ok(same.then_some(PidLock { _file: file }))
}

/// Stops the daemon that holds the data dir's pid file, if one does
/// (SIGTERM to the pid in it), waits until it is gone, and returns the
/// pid file locked so that no daemon starts while the Raft files change.
async fn stop_running_daemon(data_dir: &Path) -> Result<(PidLock, Option<i32>)> {
    let pid_file = data_dir.join(config::PID_FILE);
    if let Some(lock) = try_lock_pid_file(&pid_file)? {
        return Ok((lock, None));
    }
    let pid = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0)
        .with_context(|| {
            format!(
                "a shoal daemon holds {} but the pid in it is unreadable; stop the daemon \
                 yourself and retry",
                pid_file.display()
            )
        })?;
    // SAFETY: kill(2) with the pid the running daemon wrote in the pid
    // file it holds locked.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!(
            "cannot stop the shoal daemon (pid {pid}, from {}): {e}; stop it yourself and retry",
            pid_file.display()
        );
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(lock) = try_lock_pid_file(&pid_file)? {
            return Ok((lock, Some(pid)));
        }
        if Instant::now() > deadline {
            bail!(
                "the shoal daemon (pid {pid}, from {}) did not stop within {}s of SIGTERM; \
                 stop it (kill {pid}) and retry",
                pid_file.display(),
                STOP_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts the daemon detached, as `shoal daemon` does, and waits until it
/// serves.
async fn start_daemon(data_dir: &Path, socket: &Path) -> Result<()> {
    let args: Vec<OsString> = vec![
        "daemon".into(),
        "--foreground".into(),
        "--data-dir".into(),
        data_dir.into(),
        "--socket".into(),
        socket.into(),
    ];
    let host = format!("unix://{}", socket.display());
    detach::spawn_and_wait(args, data_dir, &host)
        .await
        .with_context(|| {
            format!(
                "the new cluster is committed in {}, but its daemon did not start; see {} and \
                 start it with `shoal daemon --data-dir {}`",
                data_dir.display(),
                data_dir.join(config::LOG_FILE).display(),
                data_dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(raft_id: u64) -> NodeConfig {
        NodeConfig {
            node_id: "n1".into(),
            raft_id,
            cluster_id: "c1".into(),
            listen_addr: "127.0.0.1:2377".into(),
            advertise_addr: "127.0.0.1:2377".into(),
            pod_network: "n".into(),
            pod_network_internal: false,
            managers: Vec::new(),
            gossip_port: 0,
        }
    }

    async fn error_of(dir: &Path) -> String {
        let socket = dir.join("shoal.sock");
        match run(dir, &socket).await {
            Ok(_) => panic!("--force-new-cluster succeeded on {}", dir.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn an_empty_data_dir_or_a_worker_is_refused_naming_the_dir_and_nothing_is_moved() {
        let dir = tempfile::tempdir().unwrap();
        let err = error_of(dir.path()).await;
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("no node.json"), "{err}");

        config::save(dir.path(), &cfg(0)).unwrap();
        std::fs::create_dir_all(pki::tls_dir(dir.path())).unwrap();
        let err = error_of(dir.path()).await;
        assert!(err.contains("is a worker"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_manager_without_raft_state_is_refused_before_anything_changes() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(7);
        config::save(dir.path(), &c).unwrap();
        pki::create(dir.path(), &c, 1).unwrap();
        let err = error_of(dir.path()).await;
        assert!(err.contains("holds no Raft state"), "{err}");
        let entries: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !entries.iter().any(|e| e.starts_with("raft")),
            "{entries:?}"
        );
    }
}
