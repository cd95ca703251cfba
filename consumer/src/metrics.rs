//! The consumer's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    pub consumed: Counter,
    pub inserted: Counter,
    pub duplicates: Counter,
    pub revoked: Counter,
    pub conflicts: Counter,
    pub dead_lettered: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub batch_size: Histogram,
    pub batch_seconds: Histogram,
    pub lag: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            consumed: Counter::default(),
            inserted: Counter::default(),
            duplicates: Counter::default(),
            revoked: Counter::default(),
            conflicts: Counter::default(),
            dead_lettered: Counter::default(),
            errors: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            batch_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 14)),
            lag: Gauge::default(),
        };
        let r = registry;
        r.register("couponrush_consumer_consumed", "Messages read from Kafka", metrics.consumed.clone());
        r.register("couponrush_consumer_inserted", "Coupon rows inserted", metrics.inserted.clone());
        r.register(
            "couponrush_consumer_duplicates",
            "Messages whose row already existed (redelivery, re-publish)",
            metrics.duplicates.clone(),
        );
        r.register(
            "couponrush_consumer_revoked",
            "Messages of admissions that were rolled back, skipped",
            metrics.revoked.clone(),
        );
        r.register(
            "couponrush_consumer_conflicts",
            "Coupons dropped because another coupon holds their seq or user slot (Redis lost writes)",
            metrics.conflicts.clone(),
        );
        r.register(
            "couponrush_consumer_dead_lettered",
            "Undecodable messages sent to the dead-letter topic",
            metrics.dead_lettered.clone(),
        );
        r.register("couponrush_consumer_errors", "Failed batch attempts (retried), by step", metrics.errors.clone());
        r.register("couponrush_consumer_batch_size", "Messages per batch", metrics.batch_size.clone());
        r.register("couponrush_consumer_batch_seconds", "Time to make a batch durable", metrics.batch_seconds.clone());
        r.register(
            "couponrush_consumer_lag",
            "Messages behind the end of the assigned partitions",
            metrics.lag.clone(),
        );
        metrics
    }
}
