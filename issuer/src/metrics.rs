//! The issuer's Prometheus metrics: answers by status word and strategy, and how long
//! admissions took.

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
