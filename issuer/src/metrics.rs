//! The issuer's Prometheus metrics: answers by status word and strategy, and how long
//! admissions took.

use couponrush_core::event::Strategy;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub status: &'static str,
    pub strategy: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
}

/// The answers a round's crowd gets, whose counters exist at 0 from the start, for every
/// strategy and for `none` (a request answered before its event's strategy was known).
/// A round's admissions can all fall within one scrape interval (the seed round's 1,000
/// coupons go in well under a second): a series born on the first admission would reach
/// Prometheus already at 1,000, and `rate()` would see no admission at all (the local
/// scenario's Prometheus saw exactly that); born at 0, the round is an increase. The faults (what `CouponrushIssuerErrors` divides by all answers) make a
/// healthy issuer report an error ratio of 0 rather than no series.
pub const ROUND_STATUSES: [&str; 10] = [
    "ISSUED",
    "ALREADY_ISSUED",
    "QUEUED",
    "SOLD_OUT",
    "NOT_STARTED",
    "ENDED",
    "PAUSED",
    "UNAVAILABLE",
    "OUTCOME_UNKNOWN",
    "INTERNAL",
];

/// The strategy label values: each strategy's name, and `none`.
fn strategy_labels() -> impl Iterator<Item = &'static str> {
    Strategy::ALL.map(Strategy::as_str).into_iter().chain(["none"])
}

#[derive(Clone)]
pub struct Metrics {
    pub answers: Family<AnswerLabels, Counter>,
    pub backend_errors: Family<ErrorLabels, Counter>,
    pub admission_seconds: Family<AnswerLabels, Histogram>,
    pub http: crate::http::HttpMetrics,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            answers: Family::default(),
            backend_errors: Family::default(),
            admission_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_05, 2.0, 16))),
            http: crate::http::HttpMetrics::register(registry),
        };
        for strategy in strategy_labels() {
            for status in ROUND_STATUSES {
                metrics.answers.get_or_create(&AnswerLabels { status, strategy }).inc_by(0);
            }
            // The admission latency the dashboard and CouponrushAdmissionSlow read (an
            // ISSUED answer always has a strategy).
            if strategy != "none" {
                drop(metrics.admission_seconds.get_or_create(&AnswerLabels { status: "ISSUED", strategy }));
            }
        }
        registry.register(
            "couponrush_issuer_answers",
            "Issue requests answered, by status and strategy",
            metrics.answers.clone(),
        );
        registry.register(
            "couponrush_issuer_backend_errors",
            "Requests answered 503 because a backend failed, by step",
            metrics.backend_errors.clone(),
        );
        registry.register(
            "couponrush_issuer_admission_seconds",
            "Time spent deciding an issue request, by status and strategy",
            metrics.admission_seconds.clone(),
        );
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_answers_exist_at_zero_before_any_request() {
        let mut registry = Registry::default();
        Metrics::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoding to a String");
        let has = |line: String| assert!(text.lines().any(|l| l == line), "missing `{line}` in\n{text}");
        for strategy in strategy_labels() {
            for status in ROUND_STATUSES {
                has(format!("couponrush_issuer_answers_total{{status=\"{status}\",strategy=\"{strategy}\"}} 0"));
            }
        }
        for strategy in Strategy::ALL.map(Strategy::as_str) {
            has(format!("couponrush_issuer_admission_seconds_count{{status=\"ISSUED\",strategy=\"{strategy}\"}} 0"));
        }
        assert!(!text.contains("strategy=\"none\",le="), "{text}");
        // Answers to a malformed request are not invented.
        assert!(!text.contains("BAD_REQUEST"), "{text}");
    }
}
