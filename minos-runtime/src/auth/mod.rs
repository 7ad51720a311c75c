//! Access tokens: JSON Web Tokens verified with a well-kept crate (`jsonwebtoken`), the access a route
//! requires, and the caller's token carried from a request to the requests it makes.
//!
//! The gateway and every service verify a request's `Authorization: Bearer …` token with the same
//! `auth:` configuration: HS256/384/512 with a shared `secret`, or RS256/ES256/EdDSA (and their
//! siblings) with keys from a PEM `public_key` or a JWKS file or URL (keys looked up by `kid` and
//! fetched again when an unknown `kid` arrives or the set is older than `jwks_refresh_secs`). Without
//! an `auth:` section nothing is verified: that is for development only.

mod keys;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
pub use jsonwebtoken::Algorithm;
pub use keys::SigningKey;
use keys::{KeySet, VerifyKey};

/// `auth:` of a service's (and the gateway's) configuration. With neither `secret`, `public_key` nor
/// `jwks`, tokens are not checked (development only).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Shared secret for HS256/HS384/HS512 tokens (`MINOS_AUTH_SECRET`).
    pub secret: String,
    /// A PEM file with the public key (RSA, EC or Ed25519) tokens are signed for.
    pub public_key: String,
    /// A JWKS: a file path, or an `http(s)://` URL such as an OpenID Connect provider's `jwks_uri`.
    pub jwks: String,
    /// How old a fetched JWKS may get before it is fetched again.
    pub jwks_refresh_secs: u64,
    /// The `iss` tokens must carry (not checked when empty).
    pub issuer: String,
    /// The `aud` tokens must carry (not checked when empty).
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The claim holding the caller's roles: a list of strings, or a space-separated string. A dotted
    /// path reads nested claims (`realm_access.roles`).
    pub roles_claim: String,
    /// The role the framework's own data endpoints (saga executions, specs, the registry's writes)
    /// require.
    pub admin_role: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &if self.secret.is_empty() { "" } else { "***" })
            .field("public_key", &self.public_key)
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .field("roles_claim", &self.roles_claim)
            .field("admin_role", &self.admin_role)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: String::new(),
            public_key: String::new(),
            jwks: String::new(),
            jwks_refresh_secs: 300,
            issuer: String::new(),
            audience: String::new(),
            leeway_secs: 30,
            roles_claim: "roles".into(),
            admin_role: "admin".into(),
        }
    }
}

impl AuthConfig {
    /// Whether tokens are checked (a secret or a key source is set).
    pub fn is_enabled(&self) -> bool {
        !(self.secret.is_empty() && self.public_key.is_empty() && self.jwks.is_empty())
    }
}

/// What a route requires of its caller, as declared next to it: `#[enroute(rest = "…", auth)]` or
/// `roles = ["admin"]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// Anyone (a token, when sent, is still verified).
    #[default]
    Open,
    /// Any valid token.
    Token,
    /// A valid token with at least one of these roles.
    Roles(&'static [&'static str]),
    /// A valid token with the configured `admin_role` (the framework's own data endpoints).
    Admin,
}

impl Access {
    /// Whether a caller must be authenticated.
    pub fn needs_token(&self) -> bool {
        !matches!(self, Access::Open)
    }

    /// The requirement, with `admin_role` for [`Access::Admin`].
    pub fn requirement(&self, admin_role: &str) -> Requirement {
        match self {
            Access::Open => Requirement::default(),
            Access::Token => Requirement {
                auth: true,
                roles: Vec::new(),
            },
            Access::Roles(roles) => Requirement {
                auth: true,
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            },
            Access::Admin => Requirement {
                auth: true,
                roles: vec![admin_role.to_owned()],
            },
        }
    }
}

/// A route's requirement as it travels with a registration: `{"auth": true, "roles": ["admin"]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Requirement {
    /// A valid token is needed.
    #[serde(default)]
    pub auth: bool,
    /// One of these roles is needed (implies `auth`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Requirement {
    /// Reads `{"auth", "roles"}`; anything else is an open route.
    pub fn from_json(value: &Value) -> Requirement {
        let roles: Vec<String> = value
            .get("roles")
            .and_then(Value::as_array)
            .map(|roles| {
                roles
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let auth = value.get("auth").and_then(Value::as_bool).unwrap_or(false) || !roles.is_empty();
        Requirement { auth, roles }
    }

    /// Whether anyone may call.
    pub fn is_open(&self) -> bool {
        !self.auth && self.roles.is_empty()
    }

    /// `{"auth": true, "roles": [...]}`, or `None` for an open route.
    pub fn to_json(&self) -> Option<Value> {
        (!self.is_open()).then(|| json!({"auth": true, "roles": self.roles}))
    }
}

/// A verified caller.
#[derive(Clone, Debug, PartialEq)]
pub struct Principal {
    /// The `sub` claim.
    pub subject: String,
    /// The roles from the configured roles claim.
    pub roles: Vec<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
    /// The token itself, passed on with the requests the handler makes.
    pub token: String,
}

impl Principal {
    /// Whether the caller has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a request was refused: 401 (no token, or a token that does not verify) or 403 (a valid token
/// without a required role).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` token.
    #[error("this route needs an access token: send `Authorization: Bearer <token>`")]
    Missing,
    /// The token does not verify.
    #[error("invalid access token: {0}")]
    Invalid(String),
    /// The token lacks every role the route accepts.
    #[error("this route needs one of the roles {}; the token has {}", list(.required), list(.held))]
    Forbidden {
        /// The roles the route accepts.
        required: Vec<String>,
        /// The roles the token has.
        held: Vec<String>,
    },
}

fn list(roles: &[String]) -> String {
    if roles.is_empty() {
        "none".into()
    } else {
        roles.join(", ")
    }
}

impl AuthError {
    /// 401 or 403.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden { .. } => 403,
            _ => 401,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750).
    pub fn www_authenticate(&self) -> String {
        let quoted = |text: &str| text.replace(['"', '\\'], "'");
        match self {
            AuthError::Missing => "Bearer realm=\"minos\"".into(),
            AuthError::Invalid(reason) => format!(
                "Bearer realm=\"minos\", error=\"invalid_token\", error_description=\"{}\"",
                quoted(reason)
            ),
            AuthError::Forbidden { required, .. } => format!(
                "Bearer realm=\"minos\", error=\"insufficient_scope\", scope=\"{}\"",
                quoted(&required.join(" "))
            ),
        }
    }

    /// What the caller is told.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

fn invalid(reason: impl Into<String>) -> AuthError {
    AuthError::Invalid(reason.into())
}

/// Verifies tokens with an `auth:` configuration. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    secret: Option<VerifyKey>,
    public_key: Option<VerifyKey>,
    jwks: Option<KeySet>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.inner.config)
            .finish()
    }
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Authenticator {
    /// The verifier of `config`; `None` when it checks nothing. A key file that cannot be read or parsed
    /// is a configuration error (a JWKS URL is fetched on first use, and again when needed).
    pub fn from_config(config: &AuthConfig) -> Result<Option<Self>> {
        if !config.is_enabled() {
            return Ok(None);
        }
        let secret = (!config.secret.is_empty()).then(|| VerifyKey::secret(&config.secret));
        let public_key = match config.public_key.trim() {
            "" => None,
            path => Some(VerifyKey::pem_file(path)?),
        };
        let jwks = match config.jwks.trim() {
            "" => None,
            source => Some(KeySet::open(
                source,
                Duration::from_secs(config.jwks_refresh_secs.max(1)),
            )?),
        };
        Ok(Some(Authenticator {
            inner: Arc::new(Inner {
                config: config.clone(),
                secret,
                public_key,
                jwks,
            }),
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// Verifies the token of an `Authorization` header value: `None` without a header or with
    /// another scheme than `Bearer` (`Basic` credentials are for the handler to read, a login route
    /// for example; a route that needs a token still refuses the request), an error when a bearer
    /// token is sent and does not verify (even on an open route: a caller that sends a token learns it
    /// is bad).
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
    ) -> Result<Option<Principal>, AuthError> {
        match authorization {
            None => Ok(None),
            Some(value) if !is_bearer(value) => Ok(None),
            Some(value) => self.verify(bearer(value)?, unix_now()).await.map(Some),
        }
    }

    /// Checks `principal` against `requirement`.
    pub fn authorize(
        &self,
        principal: Option<&Principal>,
        requirement: &Requirement,
    ) -> Result<(), AuthError> {
        authorize(principal, requirement)
    }

    /// Verifies `token` as of `at` (seconds since the epoch): signature, algorithm against the key,
    /// `iss`, `aud`, `exp` and `nbf` with the leeway, and a `sub`.
    pub async fn verify(&self, token: &str, at: i64) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("malformed token: {e}")))?;
        let key = self.key_for(&header).await?;
        let config = &self.inner.config;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        // `exp` and `nbf` are checked below, as of `at`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.required_spec_claims.clear();
        if config.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&config.issuer]);
        }
        if config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&config.audience]);
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding(), &validation)
            .map_err(|e| invalid(describe(&e)))?;
        let claims = data.claims;
        let leeway = config.leeway_secs as i64;
        match claims.get("exp").and_then(Value::as_i64) {
            None => return Err(invalid("the token has no `exp` (expiry) claim")),
            Some(exp) if exp + leeway < at => return Err(invalid("the token has expired")),
            Some(_) => {}
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64) {
            if nbf - leeway > at {
                return Err(invalid("the token is not valid yet (`nbf`)"));
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err(invalid("the token has no `sub` (subject) claim")),
        };
        let roles = roles_of(&claims, &config.roles_claim);
        Ok(Principal {
            subject,
            roles,
            claims,
            token: token.to_owned(),
        })
    }

    async fn key_for(&self, header: &Header) -> Result<VerifyKey, AuthError> {
        let alg = header.alg;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return self.inner.secret.clone().ok_or_else(|| {
                invalid(format!(
                    "{alg:?} tokens are not accepted here: keys are public keys"
                ))
            });
        }
        if let Some(key) = &self.inner.public_key {
            if key.accepts(alg) {
                return Ok(key.clone());
            }
        }
        if let Some(jwks) = &self.inner.jwks {
            return jwks.find(header.kid.as_deref(), alg).await;
        }
        Err(invalid(if self.inner.public_key.is_some() {
            format!("{alg:?} does not match the configured public key")
        } else {
            format!(
                "{alg:?} tokens are not accepted here: tokens are signed with the shared secret"
            )
        }))
    }

    /// Mints a token with the configured secret (services use it to call the registry's write API when
    /// no `discovery.token` is set). `None` without a secret.
    pub fn mint_with_secret(
        &self,
        subject: &str,
        roles: &[String],
        lifetime: Duration,
    ) -> Option<String> {
        let config = &self.inner.config;
        if config.secret.is_empty() {
            return None;
        }
        let spec = TokenSpec {
            subject: subject.to_owned(),
            roles: roles.to_vec(),
            lifetime,
            ..TokenSpec::for_config(config)
        };
        mint(&SigningKey::Secret(config.secret.clone()), &spec).ok()
    }
}

/// Whether an `Authorization` value is meant as a bearer token: the `Bearer` scheme, or a bare value
/// with no scheme (refused then as not `Bearer <token>`). `Basic …` and other schemes are not.
fn is_bearer(value: &str) -> bool {
    match value.trim().split_once(' ') {
        Some((scheme, _)) => scheme.eq_ignore_ascii_case("bearer"),
        None => true,
    }
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Result<&str, AuthError> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(invalid("the Authorization header must be `Bearer <token>`"));
    }
    match token.trim() {
        "" => Err(invalid("the Authorization header has no token")),
        token => Ok(token),
    }
}

/// Checks `principal` against `requirement`: 401 without a principal where one is needed, 403 without
/// any of the roles.
pub fn authorize(
    principal: Option<&Principal>,
    requirement: &Requirement,
) -> Result<(), AuthError> {
    if requirement.is_open() {
        return Ok(());
    }
    let principal = principal.ok_or(AuthError::Missing)?;
    if requirement.roles.is_empty() || requirement.roles.iter().any(|r| principal.has_role(r)) {
        return Ok(());
    }
    Err(AuthError::Forbidden {
        required: requirement.roles.clone(),
        held: principal.roles.clone(),
    })
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => "the signature does not verify".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "the token's algorithm does not match the key".into()
        }
        ErrorKind::InvalidIssuer => "the token was issued by another issuer (`iss`)".into(),
        ErrorKind::InvalidAudience => "the token is meant for another audience (`aud`)".into(),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => format!("malformed token: {error}"),
        _ => error.to_string(),
    }
}

/// The roles at a dotted claim path: a list of strings or a space-separated string.
fn roles_of(claims: &Map<String, Value>, path: &str) -> Vec<String> {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return Vec::new();
    };
    let mut value = claims.get(first);
    for part in parts {
        value = value.and_then(|v| v.get(part));
    }
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// What a minted token says.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenSpec {
    /// `sub`.
    pub subject: String,
    /// The roles, written under `roles_claim`.
    pub roles: Vec<String>,
    /// From now to `exp`.
    pub lifetime: Duration,
    /// `iss` (none when empty).
    pub issuer: String,
    /// `aud` (none when empty).
    pub audience: String,
    /// The claim the roles go in (a dotted path nests them).
    pub roles_claim: String,
}

impl TokenSpec {
    /// A one-hour token for nobody, with the issuer, audience and roles claim of `config`.
    pub fn for_config(config: &AuthConfig) -> Self {
        TokenSpec {
            subject: String::new(),
            roles: Vec::new(),
            lifetime: Duration::from_secs(3600),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            roles_claim: config.roles_claim.clone(),
        }
    }
}

/// Signs a token (`minos token`; tests): `sub`, `iat`, `nbf`, `exp`, `iss`/`aud` when set and the
/// roles.
pub fn mint(key: &SigningKey, spec: &TokenSpec) -> Result<String> {
    if spec.subject.is_empty() {
        return Err(Error::Config("a token needs a subject (`sub`)".into()));
    }
    let now = unix_now();
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(spec.subject));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert(
        "exp".into(),
        json!(now + spec.lifetime.as_secs().min(i64::MAX as u64 / 2) as i64),
    );
    if !spec.issuer.is_empty() {
        claims.insert("iss".into(), json!(spec.issuer));
    }
    if !spec.audience.is_empty() {
        claims.insert("aud".into(), json!(spec.audience));
    }
    if !spec.roles.is_empty() {
        let mut path: Vec<&str> = spec.roles_claim.split('.').collect();
        let last = path.pop().unwrap_or("roles");
        let mut target = &mut claims;
        for part in path {
            let entry = target
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else {
                unreachable!("made an object above")
            };
            target = next;
        }
        target.insert(last.to_owned(), json!(spec.roles));
    }
    let (encoding, mut header): (EncodingKey, Header) = key.encoding()?;
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, &claims, &encoding)
        .map_err(|e| Error::Config(format!("cannot sign the token: {e}")))
}

/// The caller a handler runs for: its verified token, passed on with the broker requests the handler
/// makes (and stored with the sagas it starts), and when that token was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The token.
    pub token: String,
    /// Its subject.
    pub subject: String,
    /// When the request that brought it was accepted (seconds since the epoch): requests it starts are
    /// verified as of then, so a saga started with a valid token finishes even after it expires.
    pub accepted_at: i64,
}

tokio::task_local! {
    static CALLER: Caller;
}

impl Caller {
    /// The caller of the running handler.
    pub fn current() -> Option<Caller> {
        CALLER.try_with(Caller::clone).ok()
    }

    /// Runs `future` for this caller.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CALLER.scope(self, future)
    }

    /// Puts the caller's token, acceptance time and subject in broker message headers (keeping an
    /// `authorization` already set).
    pub fn add_to(&self, headers: &mut BTreeMap<String, String>) {
        use crate::messaging::headers as names;
        if headers.contains_key(names::AUTHORIZATION) {
            return;
        }
        headers.insert(
            names::AUTHORIZATION.into(),
            format!("Bearer {}", self.token),
        );
        headers.insert(names::AUTH_AT.into(), self.accepted_at.to_string());
        headers.insert(names::USER.into(), self.subject.clone());
    }

    /// The caller a broker message carries, as sent (not verified).
    pub(crate) fn from_headers(headers: &BTreeMap<String, String>) -> Option<Caller> {
        use crate::messaging::headers as names;
        let token = bearer(headers.get(names::AUTHORIZATION)?).ok()?.to_owned();
        Some(Caller {
            token,
            subject: headers.get(names::USER).cloned().unwrap_or_default(),
            accepted_at: accepted_at(headers),
        })
    }
}

/// The `auth_at` of a broker message (never later than now).
pub(crate) fn accepted_at(headers: &BTreeMap<String, String>) -> i64 {
    let now = unix_now();
    headers
        .get(crate::messaging::headers::AUTH_AT)
        .and_then(|at| at.parse::<i64>().ok())
        .map_or(now, |at| at.min(now))
}

#[cfg(test)]
mod tests;
