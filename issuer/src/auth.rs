//! Who is asking: the `sub` of a verified JWT (HS256 with a shared secret, RS256 or
//! ES256 with a public key), or, only when switched on for load tests, a header taken
//! on trust.

use std::path::Path;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use couponrush_core::event::check_user_id;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// Header read in trusted mode.
pub const TRUSTED_USER_HEADER: &str = "x-user-id";

pub enum Authenticator {
    Jwt(Vec<(Algorithm, DecodingKey, Validation)>),
    TrustHeader,
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
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

impl Authenticator {
    pub fn from_config(
        hs256_secret: Option<&str>,
        public_key_file: Option<&Path>,
        audience: Option<&str>,
        trust_header: bool,
    ) -> Result<Self, AuthConfigError> {
        if trust_header {
            tracing::warn!(
                header = TRUSTED_USER_HEADER,
                "TRUSTED USER HEADER MODE: callers are not verified; use only for load tests"
            );
            return Ok(Self::TrustHeader);
        }
        let validation = |alg: Algorithm| {
            let mut validation = Validation::new(alg);
            validation.set_required_spec_claims(&["exp", "sub"]);
            validation.leeway = 5;
            match audience {
                Some(aud) => validation.set_audience(&[aud]),
                None => validation.validate_aud = false,
            }
            validation
        };
        let mut keys = Vec::new();
        if let Some(secret) = hs256_secret {
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes()), validation(Algorithm::HS256)));
        }
        if let Some(path) = public_key_file {
            let pem = std::fs::read(path)
                .map_err(|source| AuthConfigError::ReadKey { path: path.display().to_string(), source })?;
            let (alg, key) = match DecodingKey::from_rsa_pem(&pem) {
                Ok(key) => (Algorithm::RS256, key),
                Err(_) => (Algorithm::ES256, DecodingKey::from_ec_pem(&pem).map_err(AuthConfigError::KeyFormat)?),
            };
            keys.push((alg, key, validation(alg)));
        }
        if keys.is_empty() {
            return Err(AuthConfigError::NothingConfigured);
        }
        Ok(Self::Jwt(keys))
    }

    /// The caller's user id, or why the caller is not accepted.
    pub fn identify(&self, headers: &HeaderMap) -> Result<String, &'static str> {
        match self {
            Self::TrustHeader => {
                let user =
                    headers.get(TRUSTED_USER_HEADER).and_then(|v| v.to_str().ok()).ok_or("missing X-User-Id header")?;
                check_user_id(user).map_err(|_| "invalid X-User-Id header")?;
                Ok(user.to_owned())
            }
            Self::Jwt(keys) => {
                let token = headers
                    .get(AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or("missing bearer token")?;
                // `alg: none` and any algorithm without a configured key end here.
                let alg = decode_header(token).map_err(|_| "malformed token")?.alg;
                let (_, key, validation) =
                    keys.iter().find(|(a, _, _)| *a == alg).ok_or("token algorithm not accepted")?;
                let claims = decode::<Claims>(token, key, validation).map_err(|_| "invalid or expired token")?.claims;
                check_user_id(&claims.sub).map_err(|_| "token subject is not a valid user id")?;
                Ok(claims.sub)
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

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
        headers
    }

    fn hs256(claims: serde_json::Value, secret: &str) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("token")
    }

    fn exp(offset: i64) -> i64 {
        couponrush_core::wall_clock_ms() / 1000 + offset
    }

    fn authenticator() -> Authenticator {
        Authenticator::from_config(Some(SECRET), None, None, false).expect("config")
    }

    #[test]
    fn accepts_a_valid_token() {
        let token = hs256(json!({"sub": "user-1", "exp": exp(60)}), SECRET);
        assert_eq!(authenticator().identify(&bearer(&token)), Ok("user-1".to_owned()));
    }

    #[test]
    fn rejects_bad_tokens() {
        let auth = authenticator();
        let cases = [
            ("wrong signature", hs256(json!({"sub": "u", "exp": exp(60)}), "other-secret")),
            ("expired", hs256(json!({"sub": "u", "exp": exp(-600)}), SECRET)),
            ("missing sub", hs256(json!({"exp": exp(60)}), SECRET)),
            ("control character in sub", hs256(json!({"sub": "a\nb", "exp": exp(60)}), SECRET)),
            // alg:none: header {"alg":"none","typ":"JWT"}, payload {"sub":"u","exp":...}, no signature.
            (
                "alg none",
                format!(
                    "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
                    base64_url(&json!({"sub": "u", "exp": exp(60)}).to_string())
                ),
            ),
            ("garbage", "not.a.token".to_owned()),
        ];
        for (case, token) in cases {
            assert!(auth.identify(&bearer(&token)).is_err(), "{case} must be rejected");
        }
        assert!(auth.identify(&HeaderMap::new()).is_err(), "no token must be rejected");
    }

    fn with_key(public_pem: &str) -> Authenticator {
        let dir = std::env::temp_dir().join(format!("couponrush-auth-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("public.pem");
        std::fs::write(&path, public_pem).expect("write key");
        Authenticator::from_config(None, Some(&path), None, false).expect("config")
    }

    fn rand_suffix() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    }

    #[test]
    fn accepts_rs256_and_es256_with_a_public_key() {
        let claims = json!({"sub": "user-7", "exp": exp(60)});
        let cases = [
            (Algorithm::RS256, include_str!("testdata/rs256-private.pem"), include_str!("testdata/rs256-public.pem")),
            (Algorithm::ES256, include_str!("testdata/es256-private.pem"), include_str!("testdata/es256-public.pem")),
        ];
        for (alg, private, public) in cases {
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()),
                _ => EncodingKey::from_ec_pem(private.as_bytes()),
            }
            .expect("private key");
            let token = encode(&Header::new(alg), &claims, &key).expect("token");
            let auth = with_key(public);
            assert_eq!(auth.identify(&bearer(&token)), Ok("user-7".to_owned()), "{alg:?}");
            // The same claims signed with the HS256 secret are refused: no key for HS256.
            assert!(auth.identify(&bearer(&hs256(claims.clone(), SECRET))).is_err(), "{alg:?} verifier took HS256");
        }
    }

    #[test]
    fn trusted_header_mode_validates_the_user_id() {
        let auth = Authenticator::from_config(None, None, None, true).expect("config");
        let mut headers = HeaderMap::new();
        headers.insert(TRUSTED_USER_HEADER, "u-9".parse().expect("header"));
        assert_eq!(auth.identify(&headers), Ok("u-9".to_owned()));
        assert!(auth.identify(&HeaderMap::new()).is_err());
    }

    #[test]
    fn refuses_to_start_without_a_way_to_verify() {
        assert!(Authenticator::from_config(None, None, None, false).is_err());
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
