use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use super::*;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/auth/testdata");

fn data(name: &str) -> String {
    format!("{DATA}/{name}")
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

fn authenticator(config: AuthConfig) -> Authenticator {
    Authenticator::from_config(&config).unwrap().unwrap()
}

fn secret_config() -> AuthConfig {
    AuthConfig {
        secret: "s3cret".into(),
        issuer: "minos-tests".into(),
        audience: "shop".into(),
        ..AuthConfig::default()
    }
}

fn spec(subject: &str, roles: &[&str]) -> TokenSpec {
    TokenSpec {
        subject: subject.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        ..TokenSpec::for_config(&secret_config())
    }
}

fn secret() -> SigningKey {
    SigningKey::Secret("s3cret".into())
}

fn with_claims(key: &SigningKey, claims: Value) -> String {
    let (encoding, header) = key.encoding().unwrap();
    jsonwebtoken::encode(&header, &claims, &encoding).unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn refused(auth: &Authenticator, token: &str) -> String {
    match auth.verify(token, unix_now()).await {
        Ok(principal) => panic!("accepted {token}: {principal:?}"),
        Err(error) => {
            assert_eq!(error.status(), 401, "{error}");
            error.to_string()
        }
    }
}

#[tokio::test]
async fn a_valid_token_names_its_subject_and_roles() {
    let auth = authenticator(secret_config());
    let token = mint(&secret(), &spec("alice", &["admin", "sales"])).unwrap();
    let principal = auth
        .authenticate(Some(&format!("Bearer {token}")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(principal.subject, "alice");
    assert_eq!(principal.roles, ["admin", "sales"]);
    assert_eq!(principal.claims["iss"], json!("minos-tests"));
    assert_eq!(principal.token, token);
    assert_eq!(auth.authenticate(None).await.unwrap(), None);
    // The scheme is case-insensitive.
    assert!(auth
        .authenticate(Some(&format!("bearer {token}")))
        .await
        .is_ok());
}

#[tokio::test]
async fn every_bad_token_is_a_401() {
    let auth = authenticator(secret_config());
    let good = mint(&secret(), &spec("alice", &[])).unwrap();
    let now = unix_now();

    // No token where one is needed.
    let needed = Requirement {
        auth: true,
        roles: vec![],
    };
    let error = auth.authorize(None, &needed).unwrap_err();
    assert_eq!(
        (error.status(), error.www_authenticate().as_str()),
        (401, "Bearer realm=\"minos\"")
    );

    // `alg: none`, unsigned.
    let parts: Vec<&str> = good.split('.').collect();
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        parts[1]
    );
    assert!(refused(&auth, &none).await.contains("malformed"));

    // A tampered payload keeps the old signature.
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let mut forged = claims.clone();
    forged["sub"] = json!("mallory");
    let tampered = format!("{}.{}.{}", parts[0], b64(&forged), parts[2]);
    assert!(refused(&auth, &tampered).await.contains("signature"));

    // Signed with another secret.
    let other = mint(&SigningKey::Secret("guess".into()), &spec("alice", &[])).unwrap();
    assert!(refused(&auth, &other).await.contains("signature"));

    // Expired beyond the leeway; not valid yet; no expiry; no subject.
    let base = json!({"sub": "alice", "iss": "minos-tests", "aud": "shop"});
    let with = |extra: Value| {
        let mut claims = base.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        with_claims(&secret(), claims)
    };
    assert!(refused(&auth, &with(json!({"exp": now - 31})))
        .await
        .contains("expired"));
    // Within the leeway it is still accepted.
    assert!(auth
        .verify(&with(json!({"exp": now - 20})), now)
        .await
        .is_ok());
    assert!(
        refused(&auth, &with(json!({"exp": now + 60, "nbf": now + 120})))
            .await
            .contains("not valid yet")
    );
    assert!(refused(&auth, &with(json!({}))).await.contains("`exp`"));
    let no_sub = with_claims(
        &secret(),
        json!({"iss": "minos-tests", "aud": "shop", "exp": now + 60}),
    );
    assert!(refused(&auth, &no_sub).await.contains("`sub`"));

    // Another issuer, another audience.
    let mut elsewhere = spec("alice", &[]);
    elsewhere.issuer = "evil".into();
    assert!(refused(&auth, &mint(&secret(), &elsewhere).unwrap())
        .await
        .contains("issuer"));
    let mut elsewhere = spec("alice", &[]);
    elsewhere.audience = "bank".into();
    assert!(refused(&auth, &mint(&secret(), &elsewhere).unwrap())
        .await
        .contains("audience"));

    // Malformed base64, JSON, shape; a header that is not Bearer.
    for token in [
        "abc",
        "a.b.c",
        "!!!.???.***",
        &format!("{}.e30.", b64(&json!("x"))),
    ] {
        refused(&auth, token).await;
    }
    let not_json = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode("{nope"),
        parts[2]
    );
    refused(&auth, &not_json).await;
    for header in ["Bearer", "Bearer   ", good.as_str()] {
        let error = auth.authenticate(Some(header)).await.unwrap_err();
        assert_eq!(error.status(), 401, "{header}: {error}");
        assert!(error.www_authenticate().contains("invalid_token"));
    }
    // Another scheme is not a token: the handler reads it (a login route), and a route that needs a
    // token refuses the request for having none.
    let basic = auth.authenticate(Some("Basic YWxpY2U6cHc=")).await.unwrap();
    assert_eq!(basic, None);
    let needed = crate::auth::Requirement {
        auth: true,
        roles: Vec::new(),
    };
    assert_eq!(
        auth.authorize(basic.as_ref(), &needed)
            .unwrap_err()
            .status(),
        401
    );
}

#[tokio::test]
async fn roles_are_matched_against_the_configured_claim() {
    let config = AuthConfig {
        roles_claim: "realm_access.roles".into(),
        ..secret_config()
    };
    let auth = authenticator(config.clone());
    let mut token_spec = TokenSpec::for_config(&config);
    token_spec.subject = "bob".into();
    token_spec.roles = vec!["clerk".into()];
    let token = mint(&secret(), &token_spec).unwrap();
    let principal = auth.verify(&token, unix_now()).await.unwrap();
    assert_eq!(principal.roles, ["clerk"]);
    assert_eq!(principal.claims["realm_access"]["roles"], json!(["clerk"]));

    let admins = Access::Roles(&["admin", "owner"]).requirement("admin");
    let error = auth.authorize(Some(&principal), &admins).unwrap_err();
    assert_eq!(error.status(), 403);
    assert!(error.to_string().contains("admin, owner"), "{error}");
    assert!(error.www_authenticate().contains("insufficient_scope"));
    let clerks = Access::Roles(&["clerk"]).requirement("admin");
    auth.authorize(Some(&principal), &clerks).unwrap();
    auth.authorize(Some(&principal), &Access::Token.requirement("admin"))
        .unwrap();
    auth.authorize(None, &Access::Open.requirement("admin"))
        .unwrap();
    assert_eq!(Access::Admin.requirement("root").roles, ["root".to_owned()]);

    // A space-separated string (OAuth `scope` style) is read too.
    let scoped = with_claims(
        &secret(),
        json!({"sub": "c", "exp": unix_now() + 60, "iss": "minos-tests", "aud": "shop", "scope": "read write"}),
    );
    let config = AuthConfig {
        roles_claim: "scope".into(),
        ..secret_config()
    };
    let principal = authenticator(config)
        .verify(&scoped, unix_now())
        .await
        .unwrap();
    assert_eq!(principal.roles, ["read", "write"]);
}

#[tokio::test]
async fn public_keys_verify_rs256_es256_and_eddsa_without_algorithm_confusion() {
    let rsa = SigningKey::Pem {
        pem: pem("rsa.pem"),
        algorithm: None,
        kid: Some("rsa-1".into()),
    };
    let ed = SigningKey::Pem {
        pem: pem("ed.pem"),
        algorithm: None,
        kid: Some("ed-1".into()),
    };
    let ec = SigningKey::Pem {
        pem: pem("ec.pem"),
        algorithm: None,
        kid: Some("ec-1".into()),
    };
    let jwks = authenticator(AuthConfig {
        jwks: data("jwks.json"),
        ..AuthConfig::default()
    });
    let plain = TokenSpec {
        subject: "carol".into(),
        ..TokenSpec::for_config(&AuthConfig::default())
    };
    for key in [&rsa, &ed, &ec] {
        let token = mint(key, &plain).unwrap();
        assert_eq!(
            jwks.verify(&token, unix_now()).await.unwrap().subject,
            "carol",
            "{key:?}"
        );
    }
    // The EC key through a PEM public key.
    let pem_auth = authenticator(AuthConfig {
        public_key: data("ec.pub.pem"),
        ..AuthConfig::default()
    });
    pem_auth
        .verify(&mint(&ec, &plain).unwrap(), unix_now())
        .await
        .unwrap();
    // An RSA token refused by the EC key.
    assert!(refused(&pem_auth, &mint(&rsa, &plain).unwrap())
        .await
        .contains("RS256"));

    // Algorithm confusion: HS256 signed with the RSA public key as the secret.
    let public_pem = String::from_utf8(pem("rsa.pub.pem")).unwrap();
    let confused = mint(&SigningKey::Secret(public_pem.clone()), &plain).unwrap();
    assert!(refused(&jwks, &confused).await.contains("HS256"));
    let rsa_pem_auth = authenticator(AuthConfig {
        public_key: data("rsa.pub.pem"),
        ..AuthConfig::default()
    });
    refused(&rsa_pem_auth, &confused).await;
    // The JWKS's symmetric key is never used to verify.
    let oct = {
        let (encoding, _) = SigningKey::Secret("not-a-verification-key".into())
            .encoding()
            .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("oct-1".into());
        jsonwebtoken::encode(
            &header,
            &json!({"sub": "x", "exp": unix_now() + 60}),
            &encoding,
        )
        .unwrap()
    };
    refused(&jwks, &oct).await;

    // The RSA key is declared RS256: a PS256 token under its kid is refused.
    let ps = SigningKey::Pem {
        pem: pem("rsa.pem"),
        algorithm: Some(Algorithm::PS256),
        kid: Some("rsa-1".into()),
    };
    assert!(refused(&jwks, &mint(&ps, &plain).unwrap())
        .await
        .contains("PS256"));
    // An unknown kid.
    let unknown = SigningKey::Pem {
        pem: pem("rsa.pem"),
        algorithm: None,
        kid: Some("rotated-away".into()),
    };
    assert!(refused(&jwks, &mint(&unknown, &plain).unwrap())
        .await
        .contains("rotated-away"));
}

#[tokio::test]
async fn a_token_is_verified_as_of_when_its_request_was_accepted() {
    let auth = authenticator(secret_config());
    let now = unix_now();
    let token = with_claims(
        &secret(),
        json!({"sub": "alice", "iss": "minos-tests", "aud": "shop", "exp": now - 600}),
    );
    // Expired now, valid when the saga that carries it was started.
    refused(&auth, &token).await;
    auth.verify(&token, now - 900).await.unwrap();

    let mut headers = BTreeMap::new();
    let caller = Caller {
        token: token.clone(),
        subject: "alice".into(),
        accepted_at: now - 900,
    };
    caller.add_to(&mut headers);
    assert_eq!(headers["authorization"], format!("Bearer {token}"));
    assert_eq!(Caller::from_headers(&headers), Some(caller));
    // A time in the future is read as now.
    headers.insert("auth_at".into(), (now + 10_000).to_string());
    assert!(accepted_at(&headers) <= unix_now());
}

#[test]
fn configuration_problems_are_named() {
    assert!(Authenticator::from_config(&AuthConfig::default())
        .unwrap()
        .is_none());
    let error = Authenticator::from_config(&AuthConfig {
        public_key: "/nonexistent.pem".into(),
        ..AuthConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("auth.public_key"), "{error}");
    let error = Authenticator::from_config(&AuthConfig {
        jwks: data("README.md"),
        ..AuthConfig::default()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("JSON Web Key Set"), "{error}");
    assert!(mint(&secret(), &spec("", &[])).is_err());
    assert!(!format!("{:?}", secret_config()).contains("s3cret"));
    let token = authenticator(secret_config())
        .mint_with_secret("svc", &["admin".into()], Duration::from_secs(60))
        .unwrap();
    assert_eq!(token.split('.').count(), 3);
}

#[test]
fn requirements_travel_as_json() {
    let requirement = Requirement::from_json(&json!({"roles": ["admin"]}));
    assert!(requirement.auth);
    assert_eq!(
        requirement.to_json(),
        Some(json!({"auth": true, "roles": ["admin"]}))
    );
    assert!(Requirement::from_json(&json!(null)).is_open());
    assert_eq!(Requirement::default().to_json(), None);
}
