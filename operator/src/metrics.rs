//! The operator's Prometheus metrics: reconciles, failures by kind, leadership, and
//! how long events spend in each phase.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    /// Passes not run because nothing they depend on changed before they were due.
    pub reconciles_deferred: Counter,
    pub failures: Family<KindLabels, Counter>,
    pub leader: Gauge,
    pub phase_seconds: Family<PhaseLabels, Histogram>,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Counter::default(),
            reconciles_deferred: Counter::default(),
            failures: Family::default(),
            leader: Gauge::default(),
            phase_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 16))),
        };
        registry.register("couponrush_operator_reconciles", "Reconciles run", metrics.reconciles.clone());
        registry.register(
            "couponrush_operator_reconciles_deferred",
            "Watch events that started no pass: the object had not changed and its next pass was not due",
            metrics.reconciles_deferred.clone(),
        );
        registry.register("couponrush_operator_failures", "Reconciles that failed, by kind", metrics.failures.clone());
        registry.register(
            "couponrush_operator_leader",
            "Whether this replica holds the leader Lease (1) or not (0)",
            metrics.leader.clone(),
        );
        registry.register(
            "couponrush_operator_phase_seconds",
            "How long events stayed in a phase, recorded when they left it",
            metrics.phase_seconds.clone(),
        );
        metrics
    }
}
