//! TLS to PostgreSQL, on rustls, with libpq's connection parameters:
//!
//! - `sslmode`: `disable` (and no `sslmode` at all): plain TCP; `prefer`: TLS when the server offers it,
//!   unverified; `require`: TLS or no connection, unverified — verified as with `verify-ca` when
//!   `sslrootcert` is given, as libpq does; `verify-ca`: the server's certificate must chain to the CA;
//!   `verify-full`: and name the host connected to.
//! - `sslrootcert=PATH`: the CA certificates (PEM) to verify against; `sslrootcert=system`: the
//!   well-known public CAs.
//! - `sslcert=PATH` and `sslkey=PATH`: a client certificate and its key (PEM), for servers that ask for
//!   one (`clientcert=verify-full` in `pg_hba.conf`).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error as TlsError, RootCertStore};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::BACKEND;
use crate::store::StoreError;

/// How a connection is secured, from the URL's `ssl*` parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    mode: Mode,
    root_cert: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

fn error(message: impl Into<String>) -> StoreError {
    StoreError::backend(BACKEND, message.into())
}

impl TlsSettings {
    /// Takes the `ssl*` parameters out of `pairs` (a URL's query, split), leaving the others.
    pub(crate) fn take(pairs: &mut Vec<&str>) -> Result<TlsSettings, StoreError> {
        let mut settings = TlsSettings::default();
        let mut error_in = None;
        pairs.retain(|pair| {
            let Some((key, value)) = pair.split_once('=') else {
                return true;
            };
            // Paths are often written encoded (`%2F`).
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            match key {
                "sslmode" => {
                    settings.mode = match value.as_str() {
                        "disable" => Mode::Disable,
                        "allow" | "prefer" => Mode::Prefer,
                        "require" => Mode::Require,
                        "verify-ca" => Mode::VerifyCa,
                        "verify-full" => Mode::VerifyFull,
                        other => {
                            error_in = Some(format!(
                                "sslmode `{other}`: use disable, prefer, require, verify-ca or verify-full"
                            ));
                            Mode::Disable
                        }
                    }
                }
                "sslrootcert" => settings.root_cert = Some(value),
                "sslcert" => settings.client_cert = Some(value),
                "sslkey" => settings.client_key = Some(value),
                _ => return true,
            }
            false
        });
        if let Some(message) = error_in {
            return Err(error(message));
        }
        if settings.client_cert.is_some() != settings.client_key.is_some() {
            return Err(error(
                "a client certificate needs both sslcert=PATH and sslkey=PATH",
            ));
        }
        // As libpq: `require` with a CA to check against checks it.
        if settings.mode == Mode::Require && settings.root_cert.is_some() {
            settings.mode = Mode::VerifyCa;
        }
        if matches!(settings.mode, Mode::VerifyCa | Mode::VerifyFull)
            && settings.root_cert.is_none()
        {
            return Err(error(
                "sslmode=verify-ca and verify-full need the CA to verify against: add \
                 sslrootcert=PATH (a PEM file), or sslrootcert=system for the public CAs",
            ));
        }
        Ok(settings)
    }

    /// Whether connections use TLS at all.
    pub(crate) fn enabled(&self) -> bool {
        self.mode != Mode::Disable
    }

    /// The mode tokio-postgres negotiates with.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector: certificates read and checked now, so a wrong path fails at start-up.
    pub(crate) fn connector(&self) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| error(format!("TLS: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.mode {
            Mode::Disable | Mode::Prefer | Mode::Require => {
                Arc::new(Unverified(Arc::clone(&provider)))
            }
            Mode::VerifyCa | Mode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                        .build()
                        .map_err(|e| error(format!("TLS: the CA certificates: {e}")))?;
                match self.mode {
                    Mode::VerifyFull => webpki,
                    _ => Arc::new(AnyName(webpki)),
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certificates(cert, "sslcert")?;
                let key = PrivateKeyDer::from_pem_file(cert_path(key))
                    .map_err(|e| error(format!("sslkey `{key}`: {e}")))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| error(format!("sslcert/sslkey: {e}")))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<RootCertStore, StoreError> {
        let mut roots = RootCertStore::empty();
        match self.root_cert.as_deref() {
            Some("system") => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                for certificate in read_certificates(path, "sslrootcert")? {
                    roots
                        .add(certificate)
                        .map_err(|e| error(format!("sslrootcert `{path}`: {e}")))?;
                }
            }
            None => {}
        }
        Ok(roots)
    }
}

fn cert_path(path: &str) -> &Path {
    Path::new(path)
}

fn read_certificates(
    path: &str,
    parameter: &str,
) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certificates = CertificateDer::pem_file_iter(cert_path(path))
        .and_then(|all| all.collect::<Result<Vec<_>, _>>())
        .map_err(|e| error(format!("{parameter} `{path}`: {e}")))?;
    if certificates.is_empty() {
        return Err(error(format!(
            "{parameter} `{path}`: no PEM certificate in the file"
        )));
    }
    Ok(certificates)
}

/// Encrypts without checking who answers (`prefer`, `require`): what libpq does in those modes.
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
    ) -> Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, TlsError> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the CA; the name in the certificate is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(query: &str) -> Result<(TlsSettings, Vec<String>), StoreError> {
        let mut pairs: Vec<&str> = query.split('&').collect();
        let settings = TlsSettings::take(&mut pairs)?;
        Ok((settings, pairs.into_iter().map(str::to_owned).collect()))
    }

    #[test]
    fn ssl_parameters_are_taken_and_the_rest_kept() {
        let (settings, rest) =
            take("sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3").unwrap();
        assert_eq!(settings.mode, Mode::VerifyFull);
        assert_eq!(settings.root_cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(rest, ["connect_timeout=3"]);
        assert!(!take("application_name=x").unwrap().0.enabled());
        // As libpq: require with a CA verifies it.
        assert_eq!(
            take("sslmode=require&sslrootcert=/ca.pem").unwrap().0.mode,
            Mode::VerifyCa
        );
        assert_eq!(take("sslmode=require").unwrap().0.mode, Mode::Require);
    }

    #[test]
    fn wrong_ssl_parameters_say_what_to_write() {
        let bad = take("sslmode=sure").unwrap_err().to_string();
        assert!(bad.contains("verify-full"), "{bad}");
        let no_ca = take("sslmode=verify-full").unwrap_err().to_string();
        assert!(no_ca.contains("sslrootcert=PATH"), "{no_ca}");
        let half = take("sslcert=/a.pem").unwrap_err().to_string();
        assert!(half.contains("sslkey"), "{half}");
        let missing = take("sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem")
            .unwrap()
            .0
            .connector()
            .err()
            .unwrap()
            .to_string();
        assert!(missing.contains("/nonexistent/ca.pem"), "{missing}");
    }
}
