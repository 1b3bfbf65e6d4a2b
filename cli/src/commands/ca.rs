//! `shoal ca client-cert`: credentials for a remote CLI. The key pair is
//! made here and only a CSR goes to the manager, so the private key never
//! leaves this machine; the files are those `--tls-dir` loads.

use std::path::Path;

use anyhow::{bail, Context, Result};
use shoal_manager::ca::{NodeCredentials, NodeKeys, Role};
use shoal_proto::{defaults as d, now_ms, IssueClientCertificateRequest};

use crate::args::ClientCertArgs;
use crate::client::{api_error, connect, Host};

pub async fn client_cert(host: &Host, a: &ClientCertArgs) -> Result<()> {
    refuse_to_overwrite(&a.out, a.force)?;
    let keys = NodeKeys::generate()?;
    let request = IssueClientCertificateRequest {
        name: a.name.as_ref().map(ToString::to_string).unwrap_or_default(),
        csr_der: keys.csr_der()?,
    };
    let mut client = connect(host).await?;
    let answer = client
        .issue_client_certificate(request)
        .await
        .map_err(|s| api_error(host, s))?
        .into_inner();
    let creds = NodeCredentials::new(
        answer.certificate_der.into(),
        &keys,
        answer.ca_certificate_der.into(),
    )
    .context("the manager's answer is not a certificate for the key made here")?;
    let id = creds.identity();
    let wanted = a.name.as_ref().map(|n| n.as_str());
    if id.role != Role::Client || wanted.is_some_and(|n| n != id.node_id) {
        bail!(
            "the manager issued a certificate for {id}, not for client {}; not saving it",
            wanted.unwrap_or("<any name>")
        );
    }
    creds.save(&a.out).with_context(|| {
        format!(
            "cannot write the client certificate into --out {}",
            a.out.display()
        )
    })?;
    let days = (answer.not_after - now_ms() + 43_200_000) / 86_400_000;
    let manager = if answer.manager_addr.is_empty() {
        format!("MANAGER:{}", d::CLUSTER_PORT)
    } else {
        answer.manager_addr
    };
    let [cert, key, ca] = NodeCredentials::paths_in(&a.out);
    println!(
        "Client certificate for {} (cluster {}), valid for {days} days:",
        id.node_id, id.cluster_id
    );
    let width = [&cert, &key, &ca]
        .iter()
        .map(|p| p.display().to_string().len())
        .max()
        .unwrap_or(0);
    let row = |path: &Path, what: &str| println!("  {:<width$}  {what}", path.display());
    row(&cert, "the certificate");
    row(
        &key,
        "its private key (mode 0600): made here, never sent; keep it secret",
    );
    row(&ca, "the cluster's CA certificate");
    println!();
    println!("Use it with:");
    println!();
    println!(
        "    shoal -H tcp://{manager} --tls-dir {} service ls",
        a.out.display()
    );
    Ok(())
}

/// Checked before a certificate is issued, so none is issued in vain.
fn refuse_to_overwrite(dir: &Path, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    if let Some(existing) = NodeCredentials::paths_in(dir)
        .into_iter()
        .find(|p| p.symlink_metadata().is_ok())
    {
        bail!(
            "{} already exists: --out {} holds credentials; choose another directory, or \
             pass --force to replace them",
            existing.display(),
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_credentials_are_kept_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        refuse_to_overwrite(dir.path(), false).unwrap();
        std::fs::write(dir.path().join("key.pem"), "x").unwrap();
        let err = refuse_to_overwrite(dir.path(), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key.pem already exists"), "{err}");
        assert!(err.contains("--force"), "{err}");
        refuse_to_overwrite(dir.path(), true).unwrap();
    }
}
