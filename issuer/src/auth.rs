//! Who is asking: the `sub` of a verified JWT (HS256 with a shared secret, RS256 or
//! ES256 with a public key), or, only when switched on for load tests, a header taken
//! on trust.
//!
//! What a token must meet: a signature by a configured key, with the one algorithm
//! that key is for (the header's `alg` only picks among the configured keys, so an
//! HS256 token "signed" with an RSA or EC public key finds no HMAC key to check
//! against); `exp` (required) and `nbf` (when present) within the leeway; `iss` and
//! `aud` equal to the configured values when configured (a token without them is then
//! refused too); a `sub` that is a valid user id.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use couponrush_core::event::check_user_id;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use crate::config::ServeConfig;

/// Header read in trusted mode.
pub const TRUSTED_USER_HEADER: &str = "x-user-id";

/// Longest accepted `--jwt-leeway`: a larger one would all but switch `exp` off.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

pub enum Authenticator {
    Jwt(Vec<Verifier>),
    TrustHeader,
}

/// One configured key, pinned to the algorithm of its type, and the claim rules.
pub struct Verifier {
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "no way to verify callers: set --jwt-hs256-secret or --jwt-public-key-file (or --trust-user-header for load tests)"
    )]
    NothingConfigured,
    #[error("reading the JWT public key {path} failed")]
    ReadKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the JWT public key is neither an RSA nor an EC P-256 PEM key")]
    KeyFormat(#[source] jsonwebtoken::errors::Error),
    #[error("--jwt-leeway {0:?} is above the limit of {MAX_LEEWAY:?}")]
    Leeway(Duration),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    /// Read as any JSON value so that a `jti` of the wrong type never refuses a token
    /// (the rules above are the only ones); only a string is reported.
    #[serde(default)]
    jti: Option<serde_json::Value>,
}

/// Who is asking, for the audit trail: the user, and the token's `jti` when it has a
/// string one (not yet checked for recordability: see `message::Attribution::new`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub jti: Option<String>,
}

/// The rules every token must meet, for the one algorithm `alg`.
fn validation(alg: Algorithm, config: &ServeConfig) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = config.jwt_leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    // jsonwebtoken checks `iss` and `aud` only when the token has them: a configured one
    // must also be required, or a token without it would pass.
    let mut required = vec!["exp", "sub"];
    if let Some(issuer) = &config.jwt_issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &config.jwt_audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Why a token was refused, for the 401's message: says which rule, never the token.
fn refusal(error: &jsonwebtoken::errors::Error) -> &'static str {
    match error.kind() {
        ErrorKind::ExpiredSignature => "token expired (exp)",
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)",
        ErrorKind::InvalidIssuer => "token issuer (iss) not accepted",
        ErrorKind::InvalidAudience => "token audience (aud) not accepted",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "token has no exp claim",
            "sub" => "token has no sub claim",
            "iss" => "token has no iss claim, and an issuer is required",
            "aud" => "token has no aud claim, and an audience is required",
            _ => "token lacks a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "token claim has the wrong type",
        ErrorKind::InvalidSignature => "token signature invalid",
        ErrorKind::InvalidAlgorithm => "token algorithm not accepted",
        _ => "malformed token",
    }
}

impl Authenticator {
    pub fn from_config(config: &ServeConfig) -> Result<Self, AuthConfigError> {
        if config.trust_user_header {
            tracing::warn!(
                header = TRUSTED_USER_HEADER,
                "TRUSTED USER HEADER MODE: callers are not verified; use only for load tests"
            );
            return Ok(Self::TrustHeader);
        }
        if config.jwt_leeway > MAX_LEEWAY {
            return Err(AuthConfigError::Leeway(config.jwt_leeway));
        }
        let mut verifiers = Vec::new();
        if let Some(secret) = &config.jwt_hs256_secret {
            let alg = Algorithm::HS256;
            verifiers.push(Verifier {
                alg,
                key: DecodingKey::from_secret(secret.as_bytes()),
                validation: validation(alg, config),
            });
        }
        if let Some(path) = &config.jwt_public_key_file {
            let pem = std::fs::read(path)
                .map_err(|source| AuthConfigError::ReadKey { path: path.display().to_string(), source })?;
            // The key's type decides its one algorithm; nothing in a token can change it.
            let (alg, key) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (Algorithm::RS256, key),
                Err(_) => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem).map_err(AuthConfigError::KeyFormat)?),
            };
            verifiers.push(Verifier { alg, key, validation: validation(alg, config) });
        }
        if verifiers.is_empty() {
            return Err(AuthConfigError::NothingConfigured);
        }
        Ok(Self::Jwt(verifiers))
    }

    /// The caller's user id, or why the caller is not accepted.
    pub fn identify(&self, headers: &HeaderMap) -> Result<String, &'static str> {
        self.identify_caller(headers).map(|caller| caller.user)
    }

    /// The caller (user id and token `jti`), or why the caller is not accepted.
    pub fn identify_caller(&self, headers: &HeaderMap) -> Result<Caller, &'static str> {
        match self {
            Self::TrustHeader => {
                let user =
                    headers.get(TRUSTED_USER_HEADER).and_then(|v| v.to_str().ok()).ok_or("missing X-User-Id header")?;
                check_user_id(user).map_err(|_| "invalid X-User-Id header")?;
                Ok(Caller { user: user.to_owned(), jti: None })
            }
            Self::Jwt(verifiers) => {
                let token = headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or("missing bearer token")?;
                // `alg: none` and any algorithm without a configured key end here; the
                // verifier found checks with its own algorithm only.
                let alg = decode_header(token).map_err(|_| "malformed token")?.alg;
                let verifier = verifiers.iter().find(|v| v.alg == alg).ok_or("token algorithm not accepted")?;
                let claims = decode::<Claims>(token, &verifier.key, &verifier.validation)
                    .map_err(|error| refusal(&error))?
                    .claims;
                check_user_id(&claims.sub).map_err(|_| "token subject is not a valid user id")?;
                let jti = match claims.jti {
                    Some(serde_json::Value::String(jti)) => Some(jti),
                    _ => None,
                };
                Ok(Caller { user: claims.sub, jti })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "test-secret";
    const RS256_PRIVATE: &str = include_str!("testdata/rs256-private.pem");
    const RS256_PUBLIC: &str = include_str!("testdata/rs256-public.pem");
    const ES256_PRIVATE: &str = include_str!("testdata/es256-private.pem");
    const ES256_PUBLIC: &str = include_str!("testdata/es256-public.pem");

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
        headers
    }

    fn hs256(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret)).expect("token")
    }

    fn now_plus(offset: i64) -> i64 {
        couponrush_core::wall_clock_ms() / 1000 + offset
    }

    fn hs256_config() -> ServeConfig {
        ServeConfig { jwt_hs256_secret: Some(SECRET.to_owned()), ..ServeConfig::default() }
    }

    fn authenticator(config: &ServeConfig) -> Authenticator {
        Authenticator::from_config(config).expect("config")
    }

    #[test]
    fn accepts_a_valid_token() {
        let token = hs256(json!({"sub": "user-1", "exp": now_plus(60)}), SECRET.as_bytes());
        assert_eq!(authenticator(&hs256_config()).identify(&bearer(&token)), Ok("user-1".to_owned()));
    }

    /// The `jti` is reported for the audit trail and never decides anything: a token
    /// without one, or with one of another type, is accepted as before.
    #[test]
    fn reports_the_jti_and_never_refuses_a_token_over_it() {
        let auth = authenticator(&hs256_config());
        let caller = |claims: serde_json::Value| auth.identify_caller(&bearer(&hs256(claims, SECRET.as_bytes())));
        let exp = now_plus(60);
        assert_eq!(
            caller(json!({"sub": "u", "exp": exp, "jti": "t-1"})),
            Ok(Caller { user: "u".into(), jti: Some("t-1".into()) })
        );
        for claims in [
            json!({"sub": "u", "exp": exp}),
            json!({"sub": "u", "exp": exp, "jti": 42}),
            json!({"sub": "u", "exp": exp, "jti": null}),
            json!({"sub": "u", "exp": exp, "jti": {"a": 1}}),
        ] {
            assert_eq!(caller(claims.clone()), Ok(Caller { user: "u".into(), jti: None }), "{claims}");
        }
        // An oversized one is reported as is; the audit trail drops it (message.rs).
        let long = "j".repeat(500);
        assert_eq!(caller(json!({"sub": "u", "exp": exp, "jti": long})).map(|c| c.jti), Ok(Some("j".repeat(500))));
    }

    #[test]
    fn rejects_bad_tokens() {
        let auth = authenticator(&hs256_config());
        let secret = SECRET.as_bytes();
        let cases = [
            ("wrong signature", hs256(json!({"sub": "u", "exp": now_plus(60)}), b"other-secret")),
            ("expired", hs256(json!({"sub": "u", "exp": now_plus(-600)}), secret)),
            ("missing exp", hs256(json!({"sub": "u"}), secret)),
            ("exp a string", hs256(json!({"sub": "u", "exp": "tomorrow"}), secret)),
            ("missing sub", hs256(json!({"exp": now_plus(60)}), secret)),
            ("control character in sub", hs256(json!({"sub": "a\nb", "exp": now_plus(60)}), secret)),
            // alg:none: header {"alg":"none","typ":"JWT"}, payload {"sub":"u","exp":...}, no signature.
            (
                "alg none",
                format!(
                    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
                    base64_url(&json!({"sub": "u", "exp": now_plus(60)}).to_string())
                ),
            ),
            ("garbage", "not.a.token".to_owned()),
        ];
        for (case, token) in cases {
            assert!(auth.identify(&bearer(&token)).is_err(), "{case} must be rejected");
        }
        assert!(auth.identify(&HeaderMap::new()).is_err(), "no token must be rejected");
    }

    /// `exp` and `nbf` hold with the configured leeway (clocks of the token's signer and
    /// of the issuer differ a little), and not a second more.
    #[test]
    fn exp_and_nbf_are_enforced_with_the_leeway() {
        let auth = authenticator(&ServeConfig { jwt_leeway: Duration::from_secs(30), ..hs256_config() });
        let check = |claims: serde_json::Value| auth.identify(&bearer(&hs256(claims, SECRET.as_bytes())));
        assert!(check(json!({"sub": "u", "exp": now_plus(-10)})).is_ok(), "expired within the leeway");
        assert_eq!(check(json!({"sub": "u", "exp": now_plus(-60)})), Err("token expired (exp)"));
        assert!(check(json!({"sub": "u", "exp": now_plus(60), "nbf": now_plus(10)})).is_ok(), "nbf within the leeway");
        assert_eq!(
            check(json!({"sub": "u", "exp": now_plus(600), "nbf": now_plus(60)})),
            Err("token not valid yet (nbf)")
        );
        assert!(check(json!({"sub": "u", "exp": now_plus(60), "nbf": now_plus(-60)})).is_ok(), "nbf in the past");

        let strict = authenticator(&ServeConfig { jwt_leeway: Duration::ZERO, ..hs256_config() });
        let token = hs256(json!({"sub": "u", "exp": now_plus(-10)}), SECRET.as_bytes());
        assert_eq!(strict.identify(&bearer(&token)), Err("token expired (exp)"), "no leeway");
    }

    #[test]
    fn a_leeway_that_would_switch_exp_off_is_refused_at_start() {
        let config = ServeConfig { jwt_leeway: Duration::from_secs(3600), ..hs256_config() };
        assert!(matches!(Authenticator::from_config(&config), Err(AuthConfigError::Leeway(_))));
    }

    /// With an issuer and an audience configured, a token must carry both, equal to them.
    #[test]
    fn required_iss_and_aud_are_enforced() {
        let config = ServeConfig {
            jwt_issuer: Some("https://id.example".to_owned()),
            jwt_audience: Some("couponrush".to_owned()),
            ..hs256_config()
        };
        let auth = authenticator(&config);
        let exp = now_plus(60);
        let check = |claims: serde_json::Value| auth.identify(&bearer(&hs256(claims, SECRET.as_bytes())));
        let good = json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": "couponrush"});
        assert_eq!(check(good), Ok("u".to_owned()));
        let among_others = json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": ["shop", "couponrush"]});
        assert_eq!(check(among_others), Ok("u".to_owned()), "aud may list other audiences too");
        let cases = [
            (json!({"sub": "u", "exp": exp, "aud": "couponrush"}), "token has no iss claim, and an issuer is required"),
            (
                json!({"sub": "u", "exp": exp, "iss": "https://evil.example", "aud": "couponrush"}),
                "token issuer (iss) not accepted",
            ),
            (
                json!({"sub": "u", "exp": exp, "iss": "https://id.example"}),
                "token has no aud claim, and an audience is required",
            ),
            (
                json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": "shop"}),
                "token audience (aud) not accepted",
            ),
            (
                json!({"sub": "u", "exp": exp, "iss": "https://id.example", "aud": ["shop"]}),
                "token audience (aud) not accepted",
            ),
        ];
        for (claims, why) in cases {
            assert_eq!(check(claims.clone()), Err(why), "{claims}");
        }
    }

    #[test]
    fn without_iss_and_aud_configured_neither_is_checked() {
        let auth = authenticator(&hs256_config());
        let token = hs256(json!({"sub": "u", "exp": now_plus(60), "iss": "x", "aud": "y"}), SECRET.as_bytes());
        assert_eq!(auth.identify(&bearer(&token)), Ok("u".to_owned()));
    }

    fn key_file(public_pem: &str) -> std::path::PathBuf {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("couponrush-auth-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("public.pem");
        std::fs::write(&path, public_pem).expect("write key");
        path
    }

    fn with_key(public_pem: &str, hs256_secret: Option<&str>) -> Authenticator {
        let config = ServeConfig {
            jwt_public_key_file: Some(key_file(public_pem)),
            jwt_hs256_secret: hs256_secret.map(str::to_owned),
            ..ServeConfig::default()
        };
        authenticator(&config)
    }

    fn signed(alg: Algorithm, private_pem: &str, claims: &serde_json::Value) -> String {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
            _ => EncodingKey::from_ec_pem(private_pem.as_bytes()),
        }
        .expect("private key");
        encode(&Header::new(alg), claims, &key).expect("token")
    }

    #[test]
    fn accepts_rs256_and_es256_with_a_public_key() {
        let claims = json!({"sub": "user-7", "exp": now_plus(60)});
        for (alg, private, public) in
            [(Algorithm::RS256, RS256_PRIVATE, RS256_PUBLIC), (Algorithm::ES256, ES256_PRIVATE, ES256_PUBLIC)]
        {
            let auth = with_key(public, None);
            assert_eq!(auth.identify(&bearer(&signed(alg, private, &claims))), Ok("user-7".to_owned()), "{alg:?}");
            // The same claims signed with some HS256 secret are refused: no key for HS256.
            let hs = hs256(claims.clone(), SECRET.as_bytes());
            assert_eq!(auth.identify(&bearer(&hs)), Err("token algorithm not accepted"), "{alg:?}");
        }
    }

    /// The algorithm-confusion attack: the public key is public, so an attacker signs an
    /// HS256 token with its bytes as the HMAC secret, hoping the verifier feeds the same
    /// bytes to HMAC because the header says HS256. Refused with only the public key, and
    /// also when an HS256 secret is configured beside it (that secret is what HMAC checks).
    #[test]
    fn a_public_key_never_verifies_an_hs256_token_signed_with_it() {
        let claims = json!({"sub": "attacker", "exp": now_plus(60)});
        for public in [RS256_PUBLIC, ES256_PUBLIC] {
            let forged = [hs256(claims.clone(), public.as_bytes()), hs256(claims.clone(), public.trim().as_bytes())];
            for token in &forged {
                let only_key = with_key(public, None);
                assert_eq!(only_key.identify(&bearer(token)), Err("token algorithm not accepted"));
                let beside_a_secret = with_key(public, Some(SECRET));
                assert_eq!(beside_a_secret.identify(&bearer(token)), Err("token signature invalid"));
            }
        }
    }

    /// The other direction: an HS256-only issuer has no key for RS256 or ES256 tokens,
    /// however well signed, and an RSA key does not take an ES256 token.
    #[test]
    fn an_hs256_secret_never_accepts_rs256_or_es256() {
        let claims = json!({"sub": "u", "exp": now_plus(60)});
        let auth = authenticator(&hs256_config());
        for (alg, private) in [(Algorithm::RS256, RS256_PRIVATE), (Algorithm::ES256, ES256_PRIVATE)] {
            assert_eq!(auth.identify(&bearer(&signed(alg, private, &claims))), Err("token algorithm not accepted"));
        }
        let rsa = with_key(RS256_PUBLIC, None);
        let es256 = signed(Algorithm::ES256, ES256_PRIVATE, &claims);
        assert_eq!(rsa.identify(&bearer(&es256)), Err("token algorithm not accepted"));
    }

    #[test]
    fn trusted_header_mode_validates_the_user_id() {
        let auth = authenticator(&ServeConfig { trust_user_header: true, ..ServeConfig::default() });
        let mut headers = HeaderMap::new();
        headers.insert(TRUSTED_USER_HEADER, "u-9".parse().expect("header"));
        assert_eq!(auth.identify(&headers), Ok("u-9".to_owned()));
        assert!(auth.identify(&HeaderMap::new()).is_err());
    }

    #[test]
    fn refuses_to_start_without_a_way_to_verify() {
        assert!(Authenticator::from_config(&ServeConfig::default()).is_err());
    }

    fn base64_url(text: &str) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}
