//! The authentication service: registration, log-in and token checks.
//!
//! - `POST /login` `{username, password, name, surname, address}` registers: a saga creates the
//!   customer in the customer service (`CreateCustomer`) and then the credentials here, all or
//!   nothing; answers `{"user": <customer uuid>}`.
//! - `GET /login` with `Authorization: Basic base64(username:password)` logs in: answers
//!   `{"token": <JWT>}`, signed with the system's `auth.secret` (`MINOS_AUTH_SECRET`), whose subject is
//!   the customer's uuid, with the role `customer`, for `app.token_lifetime_secs` (default 1 day).
//! - `POST /token` with `Authorization: Bearer <JWT>` answers the token's claims (400 when it does
//!   not verify), as the original's gateway expected.
//! - `DELETE /login` `{"uuid": <credentials uuid>}` deletes credentials: their customer's token (or an
//!   admin's) is needed.
//!
//! Unlike the original, passwords are stored as Argon2id hashes (never in clear, never in events),
//! tokens expire, the secret is the system's configuration and not a constant in the code, and
//! credentials deleted (directly or with their customer) can no longer log in.

use std::time::Duration;

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use minos::prelude::*;
use minos_ecommerce::{own_or_admin, run_saga};
use serde::Deserialize;

/// Who may log in, and as which customer.
#[root_entity]
pub struct Credentials {
    pub username: String,
    /// The Argon2id hash of the password (PHC string).
    pub password: String,
    pub active: bool,
    /// The customer (in the customer service).
    pub user: Uuid,
}

/// The service's own settings (`app:` in its configuration).
#[derive(Deserialize)]
struct Settings {
    #[serde(default = "one_day")]
    token_lifetime_secs: u64,
}

fn one_day() -> u64 {
    86_400
}

fn hash(password: &str) -> Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|hash| hash.to_string())
        .map_err(|e| Error::with_status(500, format!("hashing a password: {e}")))
}

fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

async fn by_username(username: &str) -> Result<Option<Root<Credentials>>> {
    let found = Credentials::find(Condition::eq("username", username))
        .limit(1)
        .await?;
    Ok(found.into_iter().next())
}

/// `Basic base64(username:password)` → (username, password).
fn basic(request: &Request) -> Result<(String, String)> {
    let header = request.header("authorization").unwrap_or_default().trim();
    let Some((scheme, encoded)) = header.split_once(' ') else {
        return Err(Error::bad_request(
            "Only 'Basic Authentication' is supported",
        ));
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Error::bad_request(
            "Only 'Basic Authentication' is supported",
        ));
    }
    let decoded = base64_decode(encoded.trim())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| Error::bad_request("the Basic credentials are not base64 text"))?;
    let (username, password) = decoded
        .split_once(':')
        .ok_or_else(|| Error::bad_request("the Basic credentials must be `username:password`"))?;
    Ok((username.to_owned(), password.to_owned()))
}

/// Standard base64 (with or without padding).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
        .ok()
}

pub struct CredentialsCommandService;

#[command_service]
impl CredentialsCommandService {
    /// Registers a customer and their credentials (the saga `REGISTER`).
    #[enroute(rest = "POST /login")]
    async fn create_credentials(&self, request: Request) -> Result<Response> {
        let mut content: minos::serde_json::Map<String, Value> = request.content()?;
        let username = match content.remove("username") {
            Some(Value::String(u)) if !u.trim().is_empty() && u.len() <= 64 => u,
            _ => {
                return Err(Error::bad_request(
                    "`username` must be a non-empty text of at most 64 characters",
                ))
            }
        };
        let password = match content.remove("password") {
            Some(Value::String(p)) if p.chars().count() >= 8 => p,
            _ => {
                return Err(Error::bad_request(
                    "`password` must have at least 8 characters",
                ))
            }
        };
        if by_username(&username).await?.is_some() {
            return Err(Error::bad_request(format!("'{username}' already exists")));
        }
        let context = SagaContext::new()
            .with("username", &username)
            .with("password", hash(&password)?)
            .with("metadata", Value::Object(content));
        // The saga pauses while the customer service answers; the registration waits for its end.
        let execution = run_saga(&self.sagas()?, &REGISTER, context).await?;
        Ok(Response::json(
            json!({"user": execution.context.get::<Uuid>("user")?}),
        ))
    }

    /// Deletes credentials: their customer or an admin.
    #[enroute(rest = "DELETE /login", auth)]
    async fn delete_credentials(&self, request: Request) -> Result<Response> {
        let uuid: Uuid = request
            .json()
            .get("uuid")
            .and_then(Value::as_str)
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| Error::bad_request("`uuid`: the credentials' uuid"))?;
        let credentials = Credentials::get(uuid).await.map_err(|e| {
            Error::bad_request(format!("The credentials could not be retrieved: {e}"))
        })?;
        own_or_admin(&request, credentials.user)?;
        credentials.delete().await?;
        Ok(Response::empty())
    }
}

pub struct CredentialsQueryService;

#[query_service]
impl CredentialsQueryService {
    /// A customer deleted: their credentials go too.
    #[enroute(event = "CustomerDeleted")]
    async fn customer_deleted(&self, request: Request) -> Result<()> {
        let event: minos::Event = request.content()?;
        for credentials in Credentials::find(Condition::eq("user", event.uuid)).await? {
            credentials.delete().await?;
        }
        Ok(())
    }

    /// Logs in with Basic credentials: a token for the customer.
    #[enroute(rest = "GET /login")]
    async fn generate_token(&self, request: Request) -> Result<Response> {
        let (username, password) = basic(&request)?;
        let found = by_username(&username).await?;
        let valid = match &found {
            Some(credentials) => credentials.active && verify(&password, &credentials.password),
            None => {
                // As long as a real check, so that timing does not tell which usernames exist.
                let _ = verify(&password, DUMMY_HASH);
                false
            }
        };
        let (true, Some(credentials)) = (valid, found) else {
            return Err(Error::bad_request("Invalid username or password"));
        };
        let context = Context::current()?;
        let lifetime = context
            .settings::<Settings>()
            .map_or(one_day(), |s| s.token_lifetime_secs);
        let token = context
            .auth()
            .and_then(|auth| {
                auth.mint_with_secret(
                    &credentials.user.to_string(),
                    &["customer".to_owned()],
                    Duration::from_secs(lifetime),
                )
            })
            .ok_or_else(|| {
                Error::with_status(
                    503,
                    "tokens cannot be issued: this service has no auth.secret (MINOS_AUTH_SECRET)",
                )
            })?;
        Ok(Response::json(json!({"token": token})))
    }

    /// The claims of a valid bearer token; 400 with the reason otherwise.
    #[enroute(rest = "POST /token")]
    async fn validate_token(&self, request: Request) -> Result<Response> {
        let header = request.header("authorization").unwrap_or_default();
        let token = minos::auth::bearer(header)
            .map_err(|_| Error::bad_request("Only 'Bearer Authentication' is supported"))?;
        let context = Context::current()?;
        let auth = context.auth().ok_or_else(|| {
            Error::with_status(
                503,
                "tokens cannot be checked: this service has no auth section",
            )
        })?;
        let now = Utc::now().timestamp();
        let principal = auth
            .verify(token, now)
            .await
            .map_err(|e| Error::bad_request(e.to_string()))?;
        Ok(Response::json(Value::Object(principal.claims)))
    }

    /// `{"username": …}` → the username when it exists.
    #[enroute(broker = "GetByUsername")]
    async fn get_by_username(&self, request: Request) -> Result<Response> {
        let username = request.json()["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match by_username(&username).await? {
            Some(_) => Ok(Response::json(username)),
            None => Err(Error::bad_request("Username does not exist")),
        }
    }

    /// `{"username": …}` → `true` when nobody has it.
    #[enroute(broker = "UniqueUsername")]
    async fn unique_username(&self, request: Request) -> Result<Response> {
        let username = request.json()["username"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match by_username(&username).await? {
            Some(_) => Err(Error::bad_request(format!("'{username}' already exists"))),
            None => Ok(Response::json(true)),
        }
    }
}

/// A valid Argon2id hash of nothing anyone types, checked when the username is unknown.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ";

/// Step 1 (remote): the customer service creates the customer, inside this saga's transaction.
async fn create_customer(ctx: SagaContext) -> Result<SagaRequest> {
    let metadata: Value = ctx.get("metadata")?;
    Ok(SagaRequest::new("CreateCustomer", metadata))
}

async fn customer_created(mut ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    let customer: Value = response.content()?;
    let user: Uuid = customer["uuid"]
        .as_str()
        .and_then(|u| u.parse().ok())
        .ok_or_else(|| Error::with_status(500, "CreateCustomer answered no uuid"))?;
    ctx.set("user", user);
    Ok(ctx)
}

async fn customer_refused(_ctx: SagaContext, response: SagaResponse) -> Result<SagaContext> {
    Err(Error::bad_request(format!(
        "the customer could not be created: {}",
        response.message()
    )))
}

/// Step 2 (local): the credentials, unless the username was taken meanwhile.
async fn create_credentials(mut ctx: SagaContext) -> Result<SagaContext> {
    let username: String = ctx.get("username")?;
    if by_username(&username).await?.is_some() {
        return Err(Error::bad_request(format!(
            "The given username already exists: {username}"
        )));
    }
    Credentials::create(Credentials {
        username,
        password: ctx.get("password")?,
        active: true,
        user: ctx.get("user")?,
    })
    .await?;
    // The hash is in the credentials now: the stored execution does not keep a copy.
    ctx.remove("password");
    Ok(ctx)
}

minos::saga! {
    /// Registers a customer and their credentials: both are committed, or neither.
    pub static REGISTER = Saga::builder()
        .remote_step(create_customer)
        .on_success(customer_created)
        .on_error(customer_refused)
        .local_step(create_credentials)
        .commit();
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/authentication.yml"
    ))?
    .run()
}
