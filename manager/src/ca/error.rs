//! The one error type of the CA module: every variant names what failed and,
//! where a user can act, what to do next.

use std::path::PathBuf;

/// Everything that can go wrong with keys, certificates, tokens and TLS.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} is readable by other users (mode {mode:04o}); a private key must be \
         mode 0600: run `chmod 600 {}`, and rotate the key if others may have read it",
        path.display(),
        path.display()
    )]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    #[error("{} is not a valid {what}: {reason}", path.display())]
    BadFile {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("a CA already exists in {}; refusing to overwrite it", .0.display())]
    CaExists(PathBuf),
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("not a shoal join token: {0}")]
    BadToken(String),
    #[error(
        "the server's CA does not match the join token (token digest {expected}, \
         server CA digest {found}): the token belongs to another cluster, or \
         something between you and the manager is impersonating it; check the \
         address and ask a manager for the token (`shoal join-token worker`)"
    )]
    CaMismatch { expected: String, found: String },
    #[error(
        "the join token is not valid for this cluster: it was mistyped or rotated \
         out; ask a manager for the current one (`shoal join-token worker` or \
         `shoal join-token manager`)"
    )]
    TokenRefused,
    #[error(
        "the join token is for another cluster (its CA digest is {token}, this \
         cluster's is {ours}); ask this cluster's manager for a token"
    )]
    TokenForAnotherCa { token: String, ours: String },
    #[error("certificate signing request refused: {0}")]
    BadCsr(String),
    #[error("invalid certificate identity: {0}")]
    BadIdentity(String),
    #[error("certificate refused: {0}")]
    BadCertificate(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
}

impl CaError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CaError::Io {
            action,
            path,
            source,
        }
    }
}
