//! What every request handler shares, and the count of admissions still running.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use couponrush_core::kafka::Publisher;
use couponrush_core::redis_conn::RedisConn;
use sqlx::MySqlPool;
use tokio::sync::Notify;

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
    /// How long a request's body may take to arrive (`api`).
    pub body_timeout: Duration,
    /// Admissions running detached from their request (see `api::issue`); shutdown
    /// waits for them before it flushes Kafka.
    pub admissions: Arc<InFlight>,
}

/// Counts tasks in flight and wakes whoever waits for the count to reach zero.
#[derive(Debug, Default)]
pub struct InFlight {
    running: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// Counts one task until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Resolves once no task is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.running() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Holds one place in an [`InFlight`] count.
#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
