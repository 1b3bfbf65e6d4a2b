//! Certificates and keys on disk, as PEM so `openssl x509 -text` can read
//! them. A private key is written mode 0600 from its creation (never widened
//! then narrowed) and refused on load if group or others can read it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::CaError;

/// PEM text of one DER object (`label` as in "CERTIFICATE").
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Writes `contents` to `path` through a temporary file created with `mode`,
/// then renames it into place, so a crash never leaves half a key.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(CaError::io("create", &tmp))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(CaError::io("write", &tmp))?;
    fs::rename(&tmp, path).map_err(CaError::io("rename into place", path))
}

/// Creates `dir` (and its parents) mode 0700 if it does not exist: it holds
/// private keys.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(CaError::io("create", dir))
}

pub(crate) fn write_certs(path: &Path, certs: &[CertificateDer<'_>]) -> Result<(), CaError> {
    let text: String = certs.iter().map(|c| pem("CERTIFICATE", c)).collect();
    write_atomic(path, text.as_bytes(), 0o644)
}

pub(crate) fn write_key(path: &Path, key: &PrivatePkcs8KeyDer<'_>) -> Result<(), CaError> {
    write_atomic(
        path,
        pem("PRIVATE KEY", key.secret_pkcs8_der()).as_bytes(),
        0o600,
    )
}

/// Every certificate in a PEM file, in order; at least one.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let text = fs::read(path).map_err(CaError::io("read", path))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, "PEM certificate file", e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(
            path,
            "PEM certificate file",
            "no CERTIFICATE block".into(),
        ));
    }
    Ok(certs)
}

/// A PKCS#8 private key, refused when group or others may read the file.
pub(crate) fn read_key(path: &Path) -> Result<PrivatePkcs8KeyDer<'static>, CaError> {
    let meta = fs::metadata(path).map_err(CaError::io("read", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyFileTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read(path).map_err(CaError::io("read", path))?;
    PrivatePkcs8KeyDer::from_pem_slice(&text)
        .map_err(|e| bad(path, "PEM PKCS#8 private key file", e.to_string()))
}

pub(crate) fn bad(path: &Path, what: &'static str, reason: String) -> CaError {
    CaError::BadFile {
        path: path.to_path_buf(),
        what,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_written_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let key = PrivatePkcs8KeyDer::from(vec![1u8; 100]);
        write_key(&path, &key).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_key(&path).unwrap().secret_pkcs8_der(), &[1u8; 100][..]);
    }

    #[test]
    fn a_key_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        write_key(&path, &PrivatePkcs8KeyDer::from(vec![1u8; 10])).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_key(&path).unwrap_err().to_string();
        assert!(err.contains("mode 0644"), "{err}");
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[test]
    fn certificate_files_round_trip_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.crt");
        let certs = vec![
            CertificateDer::from(vec![7u8; 70]),
            CertificateDer::from(vec![9u8; 3]),
        ];
        write_certs(&path, &certs).unwrap();
        assert_eq!(read_certs(&path).unwrap(), certs);

        fs::write(&path, "hello").unwrap();
        let err = read_certs(&path).unwrap_err().to_string();
        assert!(
            err.contains("c.crt is not a valid PEM certificate file"),
            "{err}"
        );
        let err = read_certs(&dir.path().join("missing.crt"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
