//! `raftmq certs`: a private CA and node certificates for test and development clusters, so
//! a secured cluster can be tried, tested and benchmarked without an outside PKI. The CA is
//! made once per directory; each call issues one more certificate from it (valid for
//! server and client use, so one file serves a node's listener and its peer client).
//!
//! Must never: overwrite an existing CA (its key signs everything issued in the directory),
//! or be needed by a production deployment, which brings its own PKI.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// Files written by one call.
#[derive(Debug)]
pub(crate) struct Issued {
    /// The CA certificate (`--tls-ca`).
    pub(crate) ca: PathBuf,
    /// The new certificate (`--tls-cert`).
    pub(crate) cert: PathBuf,
    /// Its key (`--tls-key`).
    pub(crate) key: PathBuf,
}

/// The CA's certificate parameters: always the same, so the certificate rebuilt from the
/// stored key names the same issuer as the one written first.
fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "raftmq development CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Writes `contents` to a new file only the owner can read (keys), failing if it exists.
fn write_new(path: &Path, contents: &str, private: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Issues `{name}.pem` and `{name}-key.pem` in `dir` for `hosts` (IP addresses or DNS
/// names), signed by the directory's CA, which is created on first use.
pub(crate) fn issue(dir: &Path, name: &str, hosts: &[String]) -> anyhow::Result<Issued> {
    if name.is_empty()
        || name == "ca"
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!("name: must match ^[A-Za-z0-9_-]+$ and not be `ca`");
    }
    if hosts.is_empty() {
        bail!("hosts: name at least one IP address or DNS name");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_cert_path, ca_key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca_key = if ca_key_path.exists() {
        let pem = std::fs::read_to_string(&ca_key_path)
            .with_context(|| format!("reading {}", ca_key_path.display()))?;
        KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a key", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_new(&ca_key_path, &key.serialize_pem(), true)?;
        write_new(&ca_cert_path, &cert.pem(), false)?;
        key
    };
    let ca = ca_params()?.self_signed(&ca_key)?;

    let mut params = CertificateParams::new(hosts.to_vec())
        .context("hosts: each must be an IP address or a DNS name")?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    let issued = Issued {
        ca: ca_cert_path,
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    write_new(&issued.cert, &cert.pem(), false)?;
    write_new(&issued.key, &key.serialize_pem(), true)?;
    Ok(issued)
}
