//! TLS for a node (rustls with the ring provider). The certificate and key of `--tls-cert`
//! and `--tls-key` serve every connection, clients' and peers' alike, and are also this
//! node's client certificate towards its peers. `--tls-ca` makes both directions verify: a
//! peer's server certificate must chain to it, and so must the client certificate of a
//! connection that carries peer RPC. SIGHUP reloads the three files; a reload that fails
//! keeps what is loaded, so a half-copied certificate never takes a node off the air.
//!
//! Must never: serve plain HTTP when TLS is configured, trust a system or bundled root
//! list, or log key material.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Where a node's TLS material lives.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub(crate) cert: PathBuf,
    /// PEM private key of the leaf.
    pub(crate) key: PathBuf,
    /// PEM CA certificates peers must chain to (`None`: peers do not verify each other).
    pub(crate) ca: Option<PathBuf>,
}

/// A node's TLS state: what its listener accepts with and what its peer client presents
/// and trusts, both swapped whole on reload.
#[derive(Debug)]
pub(crate) struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    identity: Arc<Identity>,
    peer_verifier: Arc<PeerVerifier>,
    server: RwLock<Arc<rustls::ServerConfig>>,
}

/// What the three files hold once parsed and checked.
struct Material {
    key: Arc<CertifiedKey>,
    roots: Option<Arc<RootCertStore>>,
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{what}: reading {}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("{what}: {} holds no PEM certificate", path.display());
    }
    Ok(certs)
}

impl Material {
    fn load(files: &TlsFiles, provider: &CryptoProvider) -> anyhow::Result<Material> {
        let chain = read_certs(&files.cert, "tls_cert")?;
        let der = PrivateKeyDer::from_pem_file(&files.key)
            .map_err(|e| anyhow::anyhow!("tls_key: reading {}: {e}", files.key.display()))?;
        let signing = provider
            .key_provider
            .load_private_key(der)
            .with_context(|| format!("tls_key: {} is not a usable key", files.key.display()))?;
        let key = CertifiedKey::new(chain, signing);
        key.keys_match().with_context(|| {
            format!(
                "tls_key: {} is not the key of the certificate in {}",
                files.key.display(),
                files.cert.display()
            )
        })?;
        let roots = match &files.ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path, "tls_ca")? {
                    roots
                        .add(cert)
                        .with_context(|| format!("tls_ca: a certificate in {}", path.display()))?;
                }
                Some(Arc::new(roots))
            }
        };
        Ok(Material {
            key: Arc::new(key),
            roots,
        })
    }
}

impl Tls {
    /// Loads and checks the files; an error names the file and what is wrong with it.
    pub(crate) fn load(files: TlsFiles) -> anyhow::Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let material = Material::load(&files, &provider)?;
        let identity = Arc::new(Identity(RwLock::new(material.key.clone())));
        let peer_verifier = Arc::new(PeerVerifier(RwLock::new(server_verifier(
            &material, &provider,
        )?)));
        let server = server_config(&material, &provider, &identity)?;
        Ok(Tls {
            files,
            provider,
            identity,
            peer_verifier,
            server: RwLock::new(Arc::new(server)),
        })
    }

    /// Reads the files again and swaps them in for new connections; on any error the
    /// loaded ones stay.
    pub(crate) fn reload(&self) -> anyhow::Result<()> {
        let material = Material::load(&self.files, &self.provider)?;
        let verifier = server_verifier(&material, &self.provider)?;
        let server = server_config(&material, &self.provider, &self.identity)?;
        *self.identity.0.write().unwrap_or_else(|e| e.into_inner()) = material.key;
        *self
            .peer_verifier
            .0
            .write()
            .unwrap_or_else(|e| e.into_inner()) = verifier;
        *self.server.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(server);
        Ok(())
    }

    /// Whether peers verify each other (a CA is configured).
    pub(crate) fn verifies_peers(&self) -> bool {
        self.files.ca.is_some()
    }

    /// The acceptor for the next connection (the configuration loaded last).
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(
            self.server
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// The peer client's configuration: it presents this node's certificate and verifies
    /// the peer's, both as loaded last.
    pub(crate) fn client_config(&self) -> anyhow::Result<rustls::ClientConfig> {
        let mut cfg = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .dangerous()
            .with_custom_certificate_verifier(self.peer_verifier.clone())
            .with_client_cert_resolver(self.identity.clone());
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

fn server_config(
    material: &Material,
    provider: &Arc<CryptoProvider>,
    identity: &Arc<Identity>,
) -> anyhow::Result<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    // Clients of the API have no certificate; a connection that presents one must present
    // a good one, and only such connections may carry peer RPC.
    let builder = match &material.roots {
        Some(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .allow_unauthenticated()
                .build()
                .context("tls_ca: building the client certificate verifier")?,
        ),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(identity.clone());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

fn server_verifier(
    material: &Material,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ServerCertVerifier>> {
    Ok(match &material.roots {
        Some(roots) => WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .context("tls_ca: building the server certificate verifier")?,
        None => Arc::new(Unverified(provider.clone())),
    })
}

/// This node's certificate and key, as server and as client, swapped on reload.
#[derive(Debug)]
struct Identity(RwLock<Arc<CertifiedKey>>);

impl Identity {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for Identity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// How the peer client checks a peer's certificate: the verifier built from the CA loaded
/// last (the reqwest client lives as long as the node, so the verifier inside it swaps).
#[derive(Debug)]
struct PeerVerifier(RwLock<Arc<dyn ServerCertVerifier>>);

impl PeerVerifier {
    fn current(&self) -> Arc<dyn ServerCertVerifier> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Without `--tls-ca` the link is encrypted but a peer's certificate is not checked against
/// anything (the cluster secret still authenticates requests; a warning says so at start).
/// The handshake's signatures are still verified, so the session is bound to the key the
/// peer presented.
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(cert),
            key: dir.join(key),
            ca: Some(dir.join("ca.pem")),
        }
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_and_reload_keeps_what_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = ["127.0.0.1".to_owned()];
        crate::certs::issue(dir.path(), "a", &hosts).unwrap();
        crate::certs::issue(dir.path(), "b", &hosts).unwrap();
        Tls::load(files(dir.path(), "a.pem", "a-key.pem")).unwrap();

        let err = |f: TlsFiles| format!("{:#}", Tls::load(f).unwrap_err());
        let e = err(files(dir.path(), "a.pem", "b-key.pem"));
        assert!(e.contains("tls_key") && e.contains("not the key"), "{e}");
        let e = err(files(dir.path(), "missing.pem", "a-key.pem"));
        assert!(e.contains("tls_cert") && e.contains("missing.pem"), "{e}");
        let e = err(files(dir.path(), "a-key.pem", "a-key.pem"));
        assert!(e.contains("no PEM certificate"), "{e}");

        let tls = Tls::load(files(dir.path(), "a.pem", "a-key.pem")).unwrap();
        let before = tls.identity.current();
        std::fs::write(dir.path().join("a-key.pem"), "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.identity.current()));
        std::fs::copy(dir.path().join("b.pem"), dir.path().join("a.pem")).unwrap();
        std::fs::copy(dir.path().join("b-key.pem"), dir.path().join("a-key.pem")).unwrap();
        tls.reload().unwrap();
        assert_ne!(before.cert, tls.identity.current().cert);
    }
}
