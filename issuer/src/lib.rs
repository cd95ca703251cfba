//! couponrush-issuer: admits or rejects each coupon request.
//!
//! A request is authenticated ([`auth`]), checked ([`api`]), matched to the event's
//! current round ([`events`]), answered from memory if the round is sold out, and
//! otherwise decided by the round's strategy ([`strategies`], [`queue`]). The default
//! strategy admits with one Lua round trip to Redis and hands the coupon to Kafka; the
//! consumer makes it durable in MySQL.

pub mod api;
pub mod auth;
pub mod backends;
pub mod config;
pub mod error;
pub mod events;
pub mod export;
pub mod http;
pub mod metrics;
pub mod response;
pub mod state;
pub mod strategies;

use std::sync::Arc;

use couponrush_core::kafka::Publisher;
use couponrush_core::ops::Ops;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::config::{Backends, ServeConfig};
use crate::error::ServeError;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Connects the backends and builds the shared state; no background task yet.
pub async fn build_state(backends: &Backends, config: &ServeConfig) -> Result<(Arc<AppState>, Registry), ServeError> {
    let auth = Authenticator::from_config(config).map_err(ServeError::Auth)?;
    let redis = backends.redis().connect().await.map_err(ServeError::Redis)?;
    // Lazy: kafka-async serves without MySQL; the pool connects on first use.
    let db = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(config.database_max_connections)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect_lazy_with(backends.tls.database(&backends.database_url).map_err(ServeError::Database)?);
    let publisher = Publisher::new(&backends.kafka(), &backends.kafka_topic, backends.kafka_delivery_timeout)
        .map_err(ServeError::Producer)?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let state = AppState {
        auth,
        events: Arc::new(Events::new(redis.clone())),
        redis,
        db,
        publisher,
        metrics,
        lock_wait: config.lock_wait,
        body_timeout: config.http_body_timeout,
        admissions: Arc::default(),
    };
    Ok((Arc::new(state), registry))
}

/// Serves the API on `listener` until `shutdown`, then stops accepting, finishes
/// in-flight requests and flushes Kafka, each within the configured grace period.
pub async fn run(
    backends: Backends,
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let (state, registry) = build_state(&backends, &config).await?;
    let ops = Ops::new(registry);
    let background = CancellationToken::new();
    let target = backends.redis();
    let tasks = [
        tokio::spawn(events::refresh_loop(state.events.clone(), background.clone())),
        tokio::spawn(events::sold_out_listener(state.events.clone(), target, background.clone())),
        tokio::spawn(strategies::supervise(state.clone(), background.clone())),
    ];
    let router = api::app(state.clone()).merge(ops.router());
    ops.set_ready(true);

    let limits = http::Limits {
        header_timeout: config.http_header_timeout,
        idle_timeout: config.http_idle_timeout,
        max_connections: config.http_max_connections,
    };
    let serve = http::serve(listener, router, limits, state.metrics.http.clone(), shutdown.clone());
    let served = tokio::select! {
        served = serve => served,
        // Bound the drain: past the grace period in-flight requests are cut.
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(config.shutdown_grace).await;
        } => {
            tracing::warn!("in-flight requests outlived the shutdown grace period");
            Ok(())
        }
    };
    ops.set_ready(false);
    // Admissions whose clients hung up still run; their coupons must reach Kafka first.
    if tokio::time::timeout(config.shutdown_grace, state.admissions.idle()).await.is_err() {
        tracing::warn!(running = state.admissions.running(), "admissions outlived the shutdown grace period");
    }
    background.cancel();
    for task in tasks {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), task).await;
    }
    let publisher = state.publisher.clone();
    let grace = config.shutdown_grace;
    tokio::task::spawn_blocking(move || publisher.flush(grace))
        .await
        .map_err(ServeError::FlushTask)?
        .map_err(ServeError::Flush)?;
    tracing::info!("issuer stopped");
    served.map_err(ServeError::Http)
}
