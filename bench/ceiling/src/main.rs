//! The benchmark's ceiling: answers every `POST /api/v1/events/{namespace}/{name}/issue`
//! with the issuer's sold-out answer (410 and a small JSON body) without looking at
//! anything, on the same HTTP stack as the issuer (axum 0.8, tokio's multi-threaded
//! runtime with one worker per core). Whatever rate the load generator reaches against
//! this is the most any strategy can reach on the same machine with the same generator.
//!
//! `LISTEN` (default `127.0.0.1:18070`) is the address; `GET /healthz` answers 200.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

const SOLD_OUT: &str = r#"{"status":"SOLD_OUT","message":"all coupons of this round have been issued"}"#;

/// Takes the path apart as the issuer does, then gives the sold-out answer.
async fn issue(Path((_namespace, _name)): Path<(String, String)>) -> impl IntoResponse {
    (StatusCode::GONE, [(header::CONTENT_TYPE, "application/json")], SOLD_OUT)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:18070".to_owned());
    let app = Router::new()
        .route("/api/v1/events/{namespace}/{name}/issue", post(issue))
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("ceiling: listening on {listen}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
