//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use couponrush_core::kafka::Publisher;
use couponrush_core::redis_conn::RedisConn;
use sqlx::MySqlPool;

use crate::auth::Authenticator;
use crate::events::Events;
use crate::metrics::Metrics;

pub struct AppState {
    pub auth: Authenticator,
    pub events: Arc<Events>,
    pub redis: RedisConn,
    pub db: MySqlPool,
    pub publisher: Publisher,
    pub metrics: Metrics,
    pub lock_wait: Duration,
}
