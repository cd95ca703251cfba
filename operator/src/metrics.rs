//! The operator's Prometheus metrics: reconciles, failures by kind, leadership, and
//! how long events spend in each phase.

use couponrush_crds::{CouponEventStatus, Phase};
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

/// One event (never a user: no label carries a user id).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub namespace: String,
    pub event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventPhaseLabels {
    pub namespace: String,
    pub event: String,
    pub phase: &'static str,
}

/// Each event's status as gauges, so dashboards and alerts see what `kubectl get
/// couponevents` shows: counts, the phase (1 for the current one), the round's opening
/// instant, and whether it is paused or degraded. Written by the leader on every pass.
#[derive(Clone, Default)]
pub struct EventGauges {
    pub stock: Family<EventLabels, Gauge>,
    pub issued: Family<EventLabels, Gauge>,
    pub persisted: Family<EventLabels, Gauge>,
    pub remaining: Family<EventLabels, Gauge>,
    pub phase: Family<EventPhaseLabels, Gauge>,
    pub round_start: Family<EventLabels, Gauge>,
    pub paused: Family<EventLabels, Gauge>,
    pub degraded: Family<EventLabels, Gauge>,
}

/// Every phase, as the phase gauge's label values (the names `status.phase` uses).
const PHASES: [(Phase, &str); 7] = [
    (Phase::Scheduled, "Scheduled"),
    (Phase::Warming, "Warming"),
    (Phase::Live, "Live"),
    (Phase::SoldOut, "SoldOut"),
    (Phase::Draining, "Draining"),
    (Phase::Completed, "Completed"),
    (Phase::Failed, "Failed"),
];

impl EventGauges {
    /// Writes an event's gauges from the status just written.
    pub fn record(&self, namespace: &str, event: &str, stock: u32, status: &CouponEventStatus, paused: bool) {
        let labels = EventLabels { namespace: namespace.to_owned(), event: event.to_owned() };
        let set = |family: &Family<EventLabels, Gauge>, value: i64| {
            family.get_or_create(&labels).set(value);
        };
        set(&self.stock, i64::from(stock));
        set(&self.issued, i64::from(status.issued.unwrap_or(0)));
        set(&self.persisted, i64::from(status.persisted.unwrap_or(0)));
        set(&self.remaining, i64::from(status.remaining.unwrap_or(stock)));
        set(&self.round_start, status.round_starts_at.as_ref().map_or(0, |t| t.0.as_second()));
        set(&self.paused, i64::from(paused));
        let degraded = status.conditions.iter().any(|c| c.type_ == crate::status::DEGRADED && c.status == "True");
        set(&self.degraded, i64::from(degraded));
        for (phase, name) in PHASES {
            let labels = EventPhaseLabels { namespace: namespace.to_owned(), event: event.to_owned(), phase: name };
            self.phase.get_or_create(&labels).set(i64::from(status.phase == phase));
        }
    }

    /// Removes a deleted event's series.
    pub fn forget(&self, namespace: &str, event: &str) {
        let labels = EventLabels { namespace: namespace.to_owned(), event: event.to_owned() };
        for family in [
            &self.stock,
            &self.issued,
            &self.persisted,
            &self.remaining,
            &self.round_start,
            &self.paused,
            &self.degraded,
        ] {
            family.remove(&labels);
        }
        for (_, name) in PHASES {
            self.phase.remove(&EventPhaseLabels {
                namespace: namespace.to_owned(),
                event: event.to_owned(),
                phase: name,
            });
        }
    }
}

#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Counter,
    /// Passes not run because nothing they depend on changed before they were due.
    pub reconciles_deferred: Counter,
    pub failures: Family<KindLabels, Counter>,
    pub leader: Gauge,
    pub phase_seconds: Family<PhaseLabels, Histogram>,
    pub events: EventGauges,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            reconciles: Counter::default(),
            reconciles_deferred: Counter::default(),
            failures: Family::default(),
            leader: Gauge::default(),
            phase_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 16))),
            events: EventGauges::default(),
        };
        for kind in crate::error::Error::METRIC_LABELS {
            metrics.failures.get_or_create(&KindLabels { kind }).inc_by(0);
        }
        let gauges = &metrics.events;
        for (name, help, family) in [
            ("couponrush_event_stock", "The round's stock (spec.stock)", &gauges.stock),
            ("couponrush_event_issued", "Coupons the round has issued (status.issued)", &gauges.issued),
            ("couponrush_event_persisted", "Coupons of the round in MySQL (status.persisted)", &gauges.persisted),
            ("couponrush_event_remaining", "Coupons the round has left (status.remaining)", &gauges.remaining),
            (
                "couponrush_event_paused",
                "Whether spec.paused stops the round's admissions (1) or not (0)",
                &gauges.paused,
            ),
            (
                "couponrush_event_degraded",
                "Whether the event's Degraded condition is True (1) or not (0)",
                &gauges.degraded,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "couponrush_event_round_start_timestamp_seconds",
            "When the event's current round opens (status.roundStartsAt), Unix seconds",
            gauges.round_start.clone(),
        );
        registry.register(
            "couponrush_event_phase",
            "The event's phase: 1 for the current one, 0 for the others",
            gauges.phase.clone(),
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encodes");
        text
    }

    #[test]
    fn an_event_is_one_set_of_series_until_it_is_forgotten() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let status = CouponEventStatus {
            phase: Phase::Live,
            issued: Some(7),
            persisted: Some(5),
            remaining: Some(3),
            ..Default::default()
        };
        metrics.events.record("shop", "sale", 10, &status, false);
        let text = exposition(&registry);
        for line in [
            r#"couponrush_event_phase{namespace="shop",event="sale",phase="Live"} 1"#,
            r#"couponrush_event_phase{namespace="shop",event="sale",phase="Draining"} 0"#,
            r#"couponrush_event_issued{namespace="shop",event="sale"} 7"#,
            r#"couponrush_event_persisted{namespace="shop",event="sale"} 5"#,
            r#"couponrush_event_remaining{namespace="shop",event="sale"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(
            text.lines().any(|l| l == r#"couponrush_operator_failures_total{kind="redis"} 0"#),
            "failures start at 0"
        );
        metrics.events.forget("shop", "sale");
        assert!(!exposition(&registry).contains(r#"event="sale""#), "forgotten");
    }
}
