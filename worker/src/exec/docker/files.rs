//! The secret and config files of a node's pods, kept in memory only.
//!
//! Each pod that uses secrets or configs gets a directory
//! `<base>/<node id>/<pod id>/` (base: /run/shoal/pods) holding one file per
//! reference, written with the reference's mode and owner, and bind-mounted
//! read-only into the container at its target. The base must be a tmpfs so
//! that no secret ever reaches a disk: when it is not (here /run is not a
//! tmpfs), the worker mounts one there, once per host, under a file lock so
//! two daemons on one host do not stack two mounts. The directory goes when
//! the pod's container is removed; directories of pods without a container
//! are removed when the worker starts (a crash between the two steps, or a
//! container removed behind shoal's back).

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bollard::models::{Mount, MountType};
use shoal_proto::{Assignment, FilePayload, FileReference};
use tracing::{info, warn};

use crate::exec::{ExecError, PodRef};

/// Where one node's pods' files live.
#[derive(Debug, Clone)]
pub struct PodFiles {
    /// The tmpfs (shared by every node on the host).
    base: PathBuf,
    /// `<base>/<node id>`.
    root: PathBuf,
}

/// `statfs` says the file system at `path` is a tmpfs.
fn is_tmpfs(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == libc::TMPFS_MAGIC as i64)
}

/// Mounts a tmpfs (mode 0700, no exec, no devices, no setuid) on `path`.
fn mount_tmpfs(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let fstype = c"tmpfs";
    let data = c"mode=0700";
    // SAFETY: every pointer is a valid NUL-terminated string for the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn io_create(pod: &PodRef, what: &str, e: impl std::fmt::Display) -> ExecError {
    ExecError::Create {
        container: pod.container_name(),
        reason: format!("{what}: {e}"),
    }
}

impl PodFiles {
    pub fn new(base: impl Into<PathBuf>, node_id: &str) -> Self {
        let base = base.into();
        let root = base.join(node_id);
        PodFiles { base, root }
    }

    /// The directory of one pod's files.
    pub fn pod_dir(&self, pod_id: &str) -> PathBuf {
        self.root.join(pod_id)
    }

    /// Makes sure the base is a tmpfs, mounting one when it is not.
    fn ensure_tmpfs(&self) -> Result<(), String> {
        let base = &self.base;
        let fail = |what: &str, e: std::io::Error| {
            format!(
                "{what} {}: {e} (secrets and configs are only ever written to a tmpfs: run the daemon as root, or mount a tmpfs there)",
                base.display()
            )
        };
        std::fs::create_dir_all(base).map_err(|e| fail("cannot create", e))?;
        if is_tmpfs(base).map_err(|e| fail("cannot inspect", e))? {
            return Ok(());
        }
        let lock_path = base.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| fail("cannot lock", e))?;
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the call's duration; the lock
        // is released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(fail("cannot lock", std::io::Error::last_os_error()));
        }
        // Another daemon may have mounted it while we waited for the lock.
        if !is_tmpfs(base).map_err(|e| fail("cannot inspect", e))? {
            mount_tmpfs(base).map_err(|e| fail("cannot mount a tmpfs on", e))?;
            info!(path = %base.display(), "mounted a tmpfs for pods' secret and config files");
        }
        Ok(())
    }

    /// Writes the assignment's secret and config files and returns the
    /// read-only bind mounts that put them into the container. A reference
    /// without its payload fails the pod, naming the secret or config.
    pub fn write(&self, assignment: &Assignment) -> Result<Vec<Mount>, ExecError> {
        let pod = PodRef::of(assignment);
        let Some(c) = assignment
            .template
            .as_ref()
            .and_then(|t| t.container.as_ref())
        else {
            return Ok(vec![]);
        };
        if c.secrets.is_empty() && c.configs.is_empty() {
            return Ok(vec![]);
        }
        self.ensure_tmpfs()
            .map_err(|e| io_create(&pod, "secret and config files", e))?;
        let dir = self.pod_dir(&pod.pod_id);
        std::fs::create_dir_all(&self.root)
            .and_then(|()| {
                std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            })
            .and_then(|()| std::fs::create_dir_all(&dir))
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| io_create(&pod, &format!("cannot create {}", dir.display()), e))?;
        let mut mounts = Vec::new();
        for (kind, refs, payloads, secret) in [
            ("secret", &c.secrets, &assignment.secrets, true),
            ("config", &c.configs, &assignment.configs, false),
        ] {
            for (i, r) in refs.iter().enumerate() {
                let data = payload(payloads, r).ok_or_else(|| {
                    io_create(
                        &pod,
                        &format!("{kind} {}", r.name),
                        "was not delivered to this node (removed, or sealed with another cluster key)",
                    )
                })?;
                let file = dir.join(format!("{kind}-{i}"));
                write_file(&file, data, r)
                    .map_err(|e| io_create(&pod, &format!("cannot write {kind} {}", r.name), e))?;
                mounts.push(Mount {
                    target: Some(r.container_path(secret)),
                    source: Some(file.display().to_string()),
                    typ: Some(MountType::BIND),
                    read_only: Some(true),
                    ..Default::default()
                });
            }
        }
        Ok(mounts)
    }

    /// Removes a pod's files (nothing to do when it has none).
    pub fn remove(&self, pod_id: &str) {
        if pod_id.is_empty() {
            return;
        }
        let dir = self.pod_dir(pod_id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                info!(dir = %dir.display(), "removed pod's secret and config files");
                // The node's directory goes with its last pod (fails while
                // other pods have files: that is fine).
                let _ = std::fs::remove_dir(&self.root);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(dir = %dir.display(), error = %e, "cannot remove pod's files"),
        }
    }

    /// Removes the files of every pod not in `live` (pods whose container
    /// still exists keep theirs: they are bind-mounted).
    pub fn remove_stale(&self, live: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                self.remove(&name);
            }
        }
    }
}

fn payload<'a>(payloads: &'a [FilePayload], r: &FileReference) -> Option<&'a [u8]> {
    payloads
        .iter()
        .find(|p| p.id == r.id)
        .map(|p| p.data.as_slice())
}

/// Writes `data` to a temporary file with the reference's mode and owner,
/// then renames it into place, so a container never sees half a file.
fn write_file(path: &Path, data: &[u8], r: &FileReference) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    let meta = std::fs::metadata(&tmp)?;
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != r.uid || meta.gid() != r.gid {
        std::os::unix::fs::chown(&tmp, Some(r.uid), Some(r.gid))?;
    }
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(r.mode & 0o7777))?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ContainerSpec, Pod, PodTemplate};

    fn assignment(pod_id: &str, with_payload: bool) -> Assignment {
        let me = nix_ids();
        let r = |id: &str, name: &str, target: &str, mode: u32| FileReference {
            id: id.into(),
            name: name.into(),
            target: target.into(),
            uid: me.0,
            gid: me.1,
            mode,
        };
        Assignment {
            pod: Some(Pod {
                id: pod_id.into(),
                ..Default::default()
            }),
            pod_name: "web.1".into(),
            template: Some(PodTemplate {
                container: Some(ContainerSpec {
                    image: "img".into(),
                    secrets: vec![r("s1", "pw", "pw", 0o400)],
                    configs: vec![r("c1", "conf", "/etc/app.conf", 0o444)],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            secrets: if with_payload {
                vec![FilePayload {
                    id: "s1".into(),
                    data: b"hunter2".to_vec(),
                }]
            } else {
                vec![]
            },
            configs: vec![FilePayload {
                id: "c1".into(),
                data: b"port=1".to_vec(),
            }],
            ..Default::default()
        }
    }

    fn nix_ids() -> (u32, u32) {
        // SAFETY: getuid/getgid cannot fail.
        unsafe { (libc::getuid(), libc::getgid()) }
    }

    /// A base that is already a tmpfs, so the test mounts nothing.
    fn base() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm").expect("/dev/shm is a tmpfs on Linux")
    }

    #[test]
    fn files_are_written_with_their_modes_and_mounted_read_only() {
        let base = base();
        let files = PodFiles::new(base.path(), "node1");
        let mounts = files.write(&assignment("p1", true)).unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target.as_deref(), Some("/run/secrets/pw"));
        assert_eq!(mounts[1].target.as_deref(), Some("/etc/app.conf"));
        assert!(mounts
            .iter()
            .all(|m| m.read_only == Some(true) && m.typ == Some(MountType::BIND)));
        let secret = PathBuf::from(mounts[0].source.clone().unwrap());
        assert!(secret.starts_with(base.path().join("node1").join("p1")));
        assert_eq!(std::fs::read(&secret).unwrap(), b"hunter2");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&secret), 0o400);
        assert_eq!(mode(Path::new(mounts[1].source.as_deref().unwrap())), 0o444);
        assert_eq!(mode(&files.pod_dir("p1")), 0o700);

        // Writing again (an adopted container) keeps the same files.
        assert_eq!(files.write(&assignment("p1", true)).unwrap(), mounts);
        files.remove("p1");
        assert!(!files.pod_dir("p1").exists());
    }

    #[test]
    fn a_missing_payload_fails_the_pod_naming_the_secret() {
        let base = base();
        let files = PodFiles::new(base.path(), "node1");
        let err = files
            .write(&assignment("p1", false))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret pw: was not delivered to this node"),
            "{err}"
        );
    }

    #[test]
    fn stale_pod_directories_are_removed_and_live_ones_kept() {
        let base = base();
        let files = PodFiles::new(base.path(), "node1");
        files.write(&assignment("live", true)).unwrap();
        files.write(&assignment("gone", true)).unwrap();
        files.remove_stale(&HashSet::from(["live".to_string()]));
        assert!(files.pod_dir("live").exists());
        assert!(!files.pod_dir("gone").exists());
    }

    #[test]
    fn a_pod_without_secrets_or_configs_needs_no_files() {
        let files = PodFiles::new("/nonexistent/never-created", "n");
        let a = Assignment {
            template: Some(PodTemplate::default()),
            ..Default::default()
        };
        assert!(files.write(&a).unwrap().is_empty());
        assert!(!Path::new("/nonexistent/never-created").exists());
    }
}
