//! Keys: the shared secret, a PEM public key, a JWKS (file or URL, fetched again when stale or when a
//! token names an unknown `kid`), and the keys `minos token` signs with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::Value;

use super::{invalid, AuthError};
use crate::error::{Error, Result};

const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const ED: &[Algorithm] = &[Algorithm::EdDSA];
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// A key that verifies signatures of some algorithms only: a token whose header names another
/// algorithm is refused before its signature is looked at (no algorithm confusion).
#[derive(Clone)]
pub(crate) struct VerifyKey {
    key: Arc<DecodingKey>,
    algorithms: Vec<Algorithm>,
}

impl VerifyKey {
    pub(crate) fn secret(secret: &str) -> Self {
        VerifyKey {
            key: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
            algorithms: HMAC.to_vec(),
        }
    }

    /// An RSA, EC or Ed25519 public key in a PEM file.
    pub(crate) fn pem_file(path: &str) -> Result<Self> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("auth.public_key: cannot read {path}: {e}")))?;
        Self::pem(&pem).ok_or_else(|| {
            Error::Config(format!(
                "auth.public_key: {path} holds no RSA, EC or Ed25519 public key in PEM form"
            ))
        })
    }

    fn pem(pem: &[u8]) -> Option<Self> {
        let (key, algorithms) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, RSA)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, EC)
        } else {
            (DecodingKey::from_ed_pem(pem).ok()?, ED)
        };
        Some(VerifyKey {
            key: Arc::new(key),
            algorithms: algorithms.to_vec(),
        })
    }

    /// A public key of a JWKS: symmetric keys and encryption keys are not used for verification.
    fn jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => RSA,
            AlgorithmParameters::EllipticCurve(_) => EC,
            AlgorithmParameters::OctetKeyPair(_) => ED,
            AlgorithmParameters::OctetKey(_) => return None,
        };
        let algorithms = match jwk.common.key_algorithm {
            Some(declared) => {
                let declared: Algorithm = declared.to_string().parse().ok()?;
                family.contains(&declared).then(|| vec![declared])?
            }
            None => family.to_vec(),
        };
        Some(VerifyKey {
            key: Arc::new(DecodingKey::from_jwk(jwk).ok()?),
            algorithms,
        })
    }

    pub(crate) fn accepts(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.key
    }
}

/// Where a JWKS comes from.
#[derive(Clone, Debug)]
enum Source {
    File(String),
    Url(String),
}

struct Loaded {
    keys: Vec<(Option<String>, VerifyKey)>,
    fetched: Option<Instant>,
}

/// A JWKS, fetched on first use and again when older than `refresh`, or when a token names a `kid` it
/// does not hold (at most every few seconds, so bad tokens cannot make it hammer the provider).
pub(crate) struct KeySet {
    source: Source,
    refresh: Duration,
    loaded: tokio::sync::RwLock<Loaded>,
    fetching: tokio::sync::Mutex<()>,
}

/// The least time between two fetches caused by unknown `kid`s.
const MIN_REFETCH: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

impl KeySet {
    pub(crate) fn open(source: &str, refresh: Duration) -> Result<Self> {
        let source = if source.starts_with("http://") || source.starts_with("https://") {
            Source::Url(source.to_owned())
        } else {
            let path = source.strip_prefix("file://").unwrap_or(source).to_owned();
            // A file is read now, so a wrong path stops the start.
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("auth.jwks: cannot read {path}: {e}")))?;
            parse_jwks(&text).map_err(|e| Error::Config(format!("auth.jwks {path}: {e}")))?;
            Source::File(path)
        };
        Ok(KeySet {
            source,
            refresh,
            loaded: tokio::sync::RwLock::new(Loaded {
                keys: Vec::new(),
                fetched: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) async fn find(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<VerifyKey, AuthError> {
        let stale = {
            let loaded = self.loaded.read().await;
            match loaded.fetched {
                None => true,
                Some(at) if at.elapsed() > self.refresh => true,
                Some(_) => {
                    if let Some(found) = pick(&loaded.keys, kid, alg) {
                        return found;
                    }
                    loaded.fetched.is_some_and(|at| at.elapsed() > MIN_REFETCH)
                }
            }
        };
        if stale {
            self.fetch().await;
        }
        let loaded = self.loaded.read().await;
        pick(&loaded.keys, kid, alg).unwrap_or_else(|| {
            Err(invalid(match kid {
                Some(kid) => format!("no key `{kid}` in the JWKS for {alg:?}"),
                None => format!("no {alg:?} key in the JWKS"),
            }))
        })
    }

    /// Fetches the set again (one fetch at a time); a failure keeps the keys already known.
    async fn fetch(&self) {
        let _one = self.fetching.lock().await;
        let recent = self
            .loaded
            .read()
            .await
            .fetched
            .is_some_and(|at| at.elapsed() < MIN_REFETCH.min(self.refresh));
        if recent {
            return;
        }
        let text = match &self.source {
            Source::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
            Source::Url(url) => {
                let url = url.clone();
                tokio::task::spawn_blocking(move || fetch_url(&url))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()))
            }
        };
        let mut loaded = self.loaded.write().await;
        loaded.fetched = Some(Instant::now());
        match text.and_then(|text: String| parse_jwks(&text)) {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), source = ?self.source, "JWKS loaded");
                loaded.keys = keys;
            }
            Err(error) => {
                tracing::warn!(%error, source = ?self.source, "could not load the JWKS; keeping the keys known");
            }
        }
    }
}

fn fetch_url(url: &str) -> std::result::Result<String, String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(FETCH_TIMEOUT))
            .build(),
    );
    agent
        .get(url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("reading {url}: {e}"))
}

/// The usable keys of a JWKS document (keys of unknown types are skipped, not fatal).
fn parse_jwks(text: &str) -> std::result::Result<Vec<(Option<String>, VerifyKey)>, String> {
    let document: Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON Web Key Set: {e}"))?;
    let keys = document
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JSON Web Key Set: no `keys` list")?;
    Ok(keys
        .iter()
        .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
        .filter_map(|jwk| Some((jwk.common.key_id.clone(), VerifyKey::jwk(&jwk)?)))
        .collect())
}

fn pick(
    keys: &[(Option<String>, VerifyKey)],
    kid: Option<&str>,
    alg: Algorithm,
) -> Option<Result<VerifyKey, AuthError>> {
    let candidates: Vec<&(Option<String>, VerifyKey)> = match kid {
        Some(kid) => keys
            .iter()
            .filter(|(id, _)| id.as_deref() == Some(kid))
            .collect(),
        None => keys.iter().collect(),
    };
    if candidates.is_empty() {
        return None;
    }
    Some(
        candidates
            .iter()
            .find(|(_, key)| key.accepts(alg))
            .map(|(_, key)| key.clone())
            .ok_or_else(|| invalid(format!("{alg:?} does not match the key's algorithm"))),
    )
}

/// A key tokens are signed with (`minos token`).
#[derive(Clone)]
pub enum SigningKey {
    /// HS256 with a shared secret.
    Secret(String),
    /// A private key in PEM form (RSA, EC or Ed25519) with the algorithm to sign with.
    Pem {
        /// The PEM text.
        pem: Vec<u8>,
        /// RS256/PS256…, ES256/ES384 or EdDSA; `None` picks RS256, ES256 or EdDSA by the key.
        algorithm: Option<Algorithm>,
        /// The `kid` to put in the header (the key's id in the JWKS).
        kid: Option<String>,
    },
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SigningKey::Secret(_) => f.write_str("SigningKey::Secret(***)"),
            SigningKey::Pem { algorithm, kid, .. } => f
                .debug_struct("SigningKey::Pem")
                .field("algorithm", algorithm)
                .field("kid", kid)
                .finish(),
        }
    }
}

impl SigningKey {
    pub(crate) fn encoding(&self) -> Result<(EncodingKey, Header)> {
        let bad = |what: &str| Error::Config(format!("the signing key {what}"));
        match self {
            SigningKey::Secret(secret) if secret.is_empty() => Err(bad("(secret) is empty")),
            SigningKey::Secret(secret) => Ok((
                EncodingKey::from_secret(secret.as_bytes()),
                Header::new(Algorithm::HS256),
            )),
            SigningKey::Pem {
                pem,
                algorithm,
                kid,
            } => {
                let (key, default) = if let Ok(key) = EncodingKey::from_rsa_pem(pem) {
                    (key, Algorithm::RS256)
                } else if let Ok(key) = EncodingKey::from_ec_pem(pem) {
                    (key, Algorithm::ES256)
                } else if let Ok(key) = EncodingKey::from_ed_pem(pem) {
                    (key, Algorithm::EdDSA)
                } else {
                    return Err(bad("is not an RSA, EC or Ed25519 private key in PEM form"));
                };
                let mut header = Header::new(algorithm.unwrap_or(default));
                header.kid = kid.clone();
                Ok((key, header))
            }
        }
    }
}
