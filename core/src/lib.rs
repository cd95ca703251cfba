//! couponrush-core: what two or more couponrush binaries must agree on, in one place.
//!
//! - [`event`]: the name of an event and of its round, the strategy enum, a round's settings.
//! - [`round_store`]: the Redis contract of a round: key layout (one hash tag per round,
//!   or per stock bucket of a round split over several, so a Redis Cluster keeps each on
//!   one shard and one Lua script can touch all of it), the round's meta, the buckets'
//!   arithmetic, every Lua script (admit, the spill path, roll back, confirm, the queue's,
//!   the gates') and the strict parsers of their replies.
//! - [`redis_conn`]: one connection type for a single Redis node or a Redis Cluster.
//! - [`message`]: the Kafka message that carries an admitted coupon to the consumer.
//! - [`db`]: the MySQL schema (embedded migrations) and the statements that write coupons.
//! - [`prewarm`]: writes a round's Redis keys and MySQL row before it opens.
//! - [`reconcile`]: re-publishes admitted coupons that have no MySQL row yet.
//! - [`kafka`]: producer and admin settings, topic creation, the publisher.
//! - [`duration`], [`ops`], [`telemetry`], [`shutdown`]: what every binary serves and how it starts and stops.
//! - [`workload`]: the start-up contract of the binaries in a pod (command, environment
//!   names, ports, probe paths) that the operator's Deployments and the binaries' own
//!   configurations share.

pub mod backend_tls;
pub mod db;
pub mod duration;
pub mod event;
pub mod kafka;
pub mod message;
pub mod ops;
pub mod prewarm;
pub mod reconcile;
pub mod redis_conn;
pub mod round_store;
pub mod shutdown;
pub mod telemetry;
pub mod workload;

/// Milliseconds since the Unix epoch on this machine's clock. Only for timestamps that
/// are reported, never for admission decisions: those use the backend's clock.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An error and its causes on one line (`outer: cause: root cause`), for logs and status
/// messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `url` with its user and password replaced by `***`, for debug output.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => format!("{}***{}", &url[..scheme_end + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_url_hides_user_and_password() {
        assert_eq!(super::redact_url("rediss://app:s3cr@t@redis:6380"), "rediss://***@redis:6380");
        assert_eq!(super::redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
