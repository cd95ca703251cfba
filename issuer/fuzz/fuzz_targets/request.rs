//! The request path on arbitrary input: path segments, an `Authorization` header
//! (random bytes, or a correctly signed HS256 token around random header and claims
//! bytes, so that claim parsing is reached past the signature check) and a body. Every
//! refusal must be a 4xx; a panic or a 5xx is a finding.
#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use couponrush_issuer::auth::Authenticator;
use couponrush_issuer::config::ServeConfig;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-of-at-least-32-bytes-length";

static AUTH: LazyLock<Authenticator> = LazyLock::new(|| {
    let config = ServeConfig { jwt_hs256_secret: Some(SECRET.to_owned()), ..ServeConfig::default() };
    Authenticator::from_config(&config).expect("an HS256 configuration")
});

#[derive(Debug, Arbitrary)]
enum Authorization {
    Raw(Vec<u8>),
    /// `Bearer` + a token signed with the issuer's own key: only its content is random.
    Signed {
        header: Vec<u8>,
        claims: Vec<u8>,
    },
}

#[derive(Debug, Arbitrary)]
struct Request {
    namespace: String,
    name: String,
    authorization: Authorization,
    body: Vec<u8>,
}

fn header_bytes(authorization: &Authorization) -> Vec<u8> {
    match authorization {
        Authorization::Raw(bytes) => bytes.clone(),
        Authorization::Signed { header, claims } => {
            let message = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
            let key = EncodingKey::from_secret(SECRET.as_bytes());
            let signature =
                jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).expect("HS256 signs");
            format!("Bearer {message}.{signature}").into_bytes()
        }
    }
}

fuzz_target!(|request: Request| {
    let authorization = header_bytes(&request.authorization);
    let statuses = couponrush_issuer::api::refusals_of_untrusted(
        &AUTH,
        &request.namespace,
        &request.name,
        &authorization,
        &request.body,
    );
    for status in statuses {
        assert!(status.is_client_error(), "{status} for {request:?}");
    }
});
