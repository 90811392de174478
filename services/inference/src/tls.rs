//! TLS for the gRPC port: the PEM files of `--tls-cert`, `--tls-key` and `--tls-client-ca`,
//! read and checked once at start-up so that a bad file stops the pod with a message naming
//! the flag and the file, instead of every handshake failing later.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::config::Config;
use crate::error::Error;

/// A client that opens a connection and never finishes the handshake is dropped after this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC port's TLS settings, or `None` when `--tls-cert` is not set (plain text).
pub fn server_tls(config: &Config) -> Result<Option<ServerTlsConfig>, Error> {
    let (Some(cert_path), Some(key_path)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let cert = read("tls-cert", cert_path)?;
    certificates("tls-cert", cert_path, &cert)?;
    let key = read("tls-key", key_path)?;
    private_key(key_path, &key)?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(HANDSHAKE_TIMEOUT);
    // rustls checks that the key belongs to the certificate and that the certificate
    // parses; building the acceptor now turns its verdict into a start-up error.
    try_build(&tls).map_err(|why| {
        bad(
            "tls-key",
            key_path,
            &format!(
                "cannot be used with --tls-cert {}: {why}",
                cert_path.display()
            ),
        )
    })?;
    let Some(ca_path) = &config.tls_client_ca else {
        return Ok(Some(tls));
    };
    let ca = read("tls-client-ca", ca_path)?;
    certificates("tls-client-ca", ca_path, &ca)?;
    let tls = tls.client_ca_root(Certificate::from_pem(ca));
    try_build(&tls).map_err(|why| bad("tls-client-ca", ca_path, &why))?;
    Ok(Some(tls))
}

fn bad(flag: &str, path: &Path, why: &str) -> Error {
    Error::Config(format!("--{flag}: {}: {why}", path.display()))
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| bad(flag, path, &format!("cannot read: {e}")))
}

/// Checks that `pem` holds at least one certificate and nothing malformed.
fn certificates(flag: &str, path: &Path, pem: &[u8]) -> Result<(), Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(flag, path, &invalid_pem(&e)))?;
    if certs.is_empty() {
        return Err(bad(flag, path, "no PEM CERTIFICATE block found"));
    }
    Ok(())
}

fn private_key(path: &Path, pem: &[u8]) -> Result<(), Error> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(_) => Ok(()),
        Err(pem::Error::NoItemsFound) => Err(bad(
            "tls-key",
            path,
            "no PEM PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1) found",
        )),
        Err(e) => Err(bad("tls-key", path, &invalid_pem(&e))),
    }
}

/// The parser's own text shows markers as byte arrays; this names them as text.
fn invalid_pem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "invalid PEM: no \"-----END {}-----\" line",
            String::from_utf8_lossy(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "invalid PEM: malformed BEGIN line {:?}",
            String::from_utf8_lossy(line)
        ),
        other => format!("invalid PEM: {other}"),
    }
}

/// Builds the rustls acceptor the server would build and returns the innermost reason
/// when it cannot (tonic's own message is only "transport error").
fn try_build(tls: &ServerTlsConfig) -> Result<(), String> {
    Server::builder()
        .tls_config(tls.clone())
        .map(|_| ())
        .map_err(|e| {
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            cause.to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::PathBuf;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn config(cert: &Path, key: &Path, ca: Option<&Path>) -> Config {
        let mut args = vec![
            "x".to_string(),
            "--tls-cert".into(),
            cert.display().to_string(),
            "--tls-key".into(),
            key.display().to_string(),
        ];
        if let Some(ca) = ca {
            args.extend(["--tls-client-ca".into(), ca.display().to_string()]);
        }
        Config::try_parse_from(args).unwrap()
    }

    fn error(config: &Config) -> String {
        server_tls(config).unwrap_err().to_string()
    }

    #[test]
    fn no_certificate_means_plain_text() {
        let c = Config::try_parse_from(["x"]).unwrap();
        assert!(server_tls(&c).unwrap().is_none());
    }

    #[test]
    fn a_matching_pair_and_a_ca_load() {
        let f = Files::new();
        let (cert, key) = self_signed("localhost");
        let (ca, _) = self_signed("client-ca");
        let c = config(
            &f.write("s.pem", &cert),
            &f.write("s.key", &key),
            Some(&f.write("ca.pem", &ca)),
        );
        assert!(server_tls(&c).unwrap().is_some());
    }

    #[test]
    fn unreadable_files_name_the_flag_and_the_file() {
        let f = Files::new();
        let (cert, key) = self_signed("localhost");
        let missing = f.dir.path().join("missing.pem");
        let err = error(&config(&missing, &f.write("s.key", &key), None));
        assert_eq!(
            err,
            format!(
                "invalid configuration: --tls-cert: {}: cannot read: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let err = error(&config(&f.write("s.pem", &cert), &missing, None));
        assert!(
            err.starts_with(&format!(
                "invalid configuration: --tls-key: {}: cannot read: ",
                missing.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn invalid_pem_names_the_flag_and_the_file() {
        let f = Files::new();
        let (cert, key) = self_signed("localhost");
        let junk = f.write("junk.pem", "not a certificate\n");
        let err = error(&config(&junk, &f.write("s.key", &key), None));
        assert_eq!(
            err,
            format!(
                "invalid configuration: --tls-cert: {}: no PEM CERTIFICATE block found",
                junk.display()
            )
        );
        let cert_path = f.write("s.pem", &cert);
        // A certificate where the key should be: no key in the file.
        let err = error(&config(&cert_path, &cert_path, None));
        assert_eq!(
            err,
            format!(
                "invalid configuration: --tls-key: {}: no PEM PRIVATE KEY block (PKCS#8, PKCS#1 \
                 or SEC1) found",
                cert_path.display()
            )
        );
        let torn = f.write("torn.pem", &cert[..cert.len() / 2]);
        let err = error(&config(&torn, &f.write("s2.key", &key), None));
        assert_eq!(
            err,
            format!(
                "invalid configuration: --tls-cert: {}: invalid PEM: no \"-----END CERTIFICATE-----\" line",
                torn.display()
            )
        );
        let key_path = f.write("s3.key", &key);
        let err = error(&config(&cert_path, &key_path, Some(&junk)));
        assert_eq!(
            err,
            format!(
                "invalid configuration: --tls-client-ca: {}: no PEM CERTIFICATE block found",
                junk.display()
            )
        );
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let f = Files::new();
        let (cert, _) = self_signed("localhost");
        let (_, other_key) = self_signed("localhost");
        let cert_path = f.write("s.pem", &cert);
        let key_path = f.write("other.key", &other_key);
        let err = error(&config(&cert_path, &key_path, None));
        assert_eq!(
            err,
            format!(
                "invalid configuration: --tls-key: {}: cannot be used with --tls-cert {}: keys \
                 may not be consistent: KeyMismatch",
                key_path.display(),
                cert_path.display()
            )
        );
    }
}
