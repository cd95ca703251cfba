//! The `CouponEvent` custom resource (`couponrush.io/v1alpha1`): what marketing applies
//! with `kubectl` to run a first-come-first-served coupon event. The `///` comments on
//! every field are the user manual: `kubectl explain couponevent.spec` prints them.
//! No I/O here; `crdgen` prints the CRD YAML that is committed beside this crate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use couponrush_strategy::Strategy;

/// A first-come-first-served coupon event: `stock` coupons per round, handed out from
/// the start time to the first users who ask, at most `perUser` each.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "couponrush.io",
    version = "v1alpha1",
    kind = "CouponEvent",
    plural = "couponevents",
    shortname = "ce",
    namespaced,
    status = "CouponEventStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Round","type":"integer","jsonPath":".status.round"}"#,
    printcolumn = r#"{"name":"Stock","type":"integer","jsonPath":".spec.stock"}"#,
    printcolumn = r#"{"name":"Issued","type":"integer","jsonPath":".status.issued"}"#,
    printcolumn = r#"{"name":"Persisted","type":"integer","jsonPath":".status.persisted"}"#,
    printcolumn = r#"{"name":"Start","type":"date","jsonPath":".status.roundStartsAt"}"#,
    printcolumn = r#"{"name":"Paused","type":"boolean","jsonPath":".spec.paused"}"#,
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.strategy","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // The workloads are named `<name>-issuer` and `<name>-consumer` (Services and
    // Deployments: DNS-1035 labels of at most 63 characters), so the name must fit them
    // before anything is pre-warmed. MAX_EVENT_NAME_LEN below is the same bound.
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= 54").message("the event name must be a DNS-1035 label of at most 54 characters (a-z, 0-9 and '-', starting with a letter): the workloads are named <name>-issuer and <name>-consumer")
)]
#[x_kube(validation = Rule::new("has(self.startTime) != has(self.schedule)").message("set exactly one of startTime (a one-off event) or schedule (a round every day)"))]
#[x_kube(validation = Rule::new("!has(self.endTime) || !has(self.startTime) || timestamp(self.endTime) > timestamp(self.startTime)").message("endTime must be after startTime"))]
#[x_kube(validation = Rule::new("!has(self.endTime) || has(self.startTime)").message("endTime is for a one-off event; a daily schedule closes each round with schedule.openFor"))]
#[x_kube(validation = Rule::new("!has(self.strategy) || self.strategy != 'queue' || !has(self.perUser) || self.perUser == 1").message("the queue strategy gives one coupon per user: perUser must be 1"))]
#[x_kube(validation = Rule::new("!has(self.capacity) || !has(self.capacity.stockBuckets) || self.capacity.stockBuckets == 1 || ((!has(self.strategy) || self.strategy == 'kafka-async') && (!has(self.perUser) || self.perUser == 1) && self.capacity.stockBuckets <= self.stock)").message("capacity.stockBuckets above 1 needs strategy kafka-async, perUser 1 and a stock of at least one coupon per bucket"))]
#[serde(rename_all = "camelCase")]
pub struct CouponEventSpec {
    /// The coupon every winner receives.
    pub coupon: Coupon,
    /// Coupons per round. Raising it while the round is live adds the difference;
    /// lowering it below what was already issued is refused.
    #[schemars(range(min = 1, max = 10_000_000))]
    pub stock: u32,
    /// When the one round of a one-off event opens (RFC 3339, e.g.
    /// "2026-12-01T10:00:00+09:00"). Set this or `schedule`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// A round every day at a local time. Set this or `startTime`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Closes a one-off round even if stock is left (RFC 3339, after `startTime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// How requests are admitted: `kafka-async` (default, fastest), `db-lock`,
    /// `redis-lock`, `redis-counter`, `redis-counter-set` or `queue`. All keep the same
    /// guarantees. Cannot change once a round has opened.
    #[serde(default)]
    pub strategy: Strategy,
    /// Coupons one user may hold per round (1 with the `queue` strategy).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 100))]
    pub per_user: u32,
    /// Lead time before the start: Redis is pre-warmed and the issuers are scaled up
    /// this long before the round opens (e.g. "5m").
    #[serde(default = "five_minutes")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub warmup: String,
    /// How long the workloads stay after the round sold out (or ended) and every coupon
    /// is in MySQL; then they are removed and the event is Completed (e.g. "10m").
    #[serde(default = "ten_minutes")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub teardown_after: String,
    /// What the issuers must withstand; the operator sizes and scales them from it.
    #[serde(default)]
    pub capacity: Capacity,
    /// Where Redis, Kafka and MySQL are. Without it the operator's defaults are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<BackendsRef>,
    /// The emergency stop: while true, issuers answer `503 PAUSED` (with Retry-After)
    /// instead of admitting; sold-out answers and results stay as they are. Setting it
    /// back to false continues the same round, with its counts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

fn one() -> u32 {
    1
}
fn five_minutes() -> String {
    "5m".to_owned()
}
fn ten_minutes() -> String {
    "10m".to_owned()
}

/// The coupon handed out.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Coupon {
    /// What users see, e.g. "10,000 KRW off".
    #[schemars(length(min = 1, max = 200))]
    pub name: String,
    /// Face value in the currency's smallest common unit, e.g. 10000.
    #[schemars(range(min = 1))]
    pub amount: u64,
    /// ISO 4217 code, e.g. KRW.
    #[schemars(regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
}

/// A round every day.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// Local opening time, "HH:MM" (24-hour), e.g. "10:00".
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub daily: String,
    /// IANA time zone of `daily`, e.g. "Asia/Seoul".
    #[serde(default = "utc")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: String,
    /// Closes each round this long after it opens even if stock is left (e.g. "1h").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub open_for: Option<String>,
}

fn utc() -> String {
    "UTC".to_owned()
}

/// Sizing input.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Requests per second expected at the peak (the seconds after the start).
    #[serde(default = "default_peak")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub expected_peak_rps: u32,
    /// The kind of node the issuers run on.
    #[serde(default)]
    pub node_profile: NodeProfile,
    /// Upper bound on issuer replicas, whatever the peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 500))]
    pub max_replicas: Option<u32>,
    /// Splits the stock over this many buckets, each under its own Redis Cluster hash
    /// tag, so that as many shards share the round's admissions (one shard admits about
    /// 55,000 a second). `kafka-async` with `perUser` 1 only, at most the stock. Exact
    /// all the same; a user whose own bucket ran out is served by the next one, a little
    /// slower, so near the end the order across buckets is only roughly first come,
    /// first served. A round keeps the buckets it was pre-warmed with.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    #[schemars(range(min = 1, max = 64))]
    pub stock_buckets: u32,
}

fn is_one(value: &u32) -> bool {
    *value == 1
}

fn default_peak() -> u32 {
    20_000
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            expected_peak_rps: default_peak(),
            node_profile: NodeProfile::default(),
            max_replicas: None,
            stock_buckets: 1,
        }
    }
}

/// Node kinds the operator knows how to size for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum NodeProfile {
    /// 2 vCPU, 4 GiB.
    #[default]
    #[serde(rename = "t3.medium")]
    T3Medium,
    /// 2 vCPU, 8 GiB.
    #[serde(rename = "t3.large")]
    T3Large,
    /// 4 vCPU, 8 GiB, compute-optimised.
    #[serde(rename = "c6i.xlarge")]
    C6iXlarge,
}

/// The Secret that holds the backends' addresses, as the environment variables the
/// workloads read: `REDIS_URL`, `DATABASE_URL`, `KAFKA_BROKERS`, `JWT_HS256_SECRET`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendsRef {
    /// Name of a Secret in the event's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_ref: String,
}

/// Where an event is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Phase {
    /// Waiting for the round's warm-up.
    #[default]
    Scheduled,
    /// Backends prepared, issuers scaling up; the round has not opened.
    Warming,
    /// The round is open.
    Live,
    /// Every coupon of the round is issued.
    SoldOut,
    /// Waiting until every issued coupon is in MySQL, then for `teardownAfter`.
    Draining,
    /// Done: every coupon persisted, workloads removed. The resource stays as the record.
    Completed,
    /// Cannot proceed; `status.message` and the conditions say why.
    Failed,
}

/// What the operator observed and did; written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CouponEventStatus {
    pub phase: Phase,
    /// The current (or last) round, 1 for a one-off event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// When the current round opens (or opened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_starts_at: Option<Time>,
    /// When the current round closes, if it has an end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_ends_at: Option<Time>,
    /// Coupons left in the round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u32>,
    /// Coupons admitted in the round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<u32>,
    /// Coupons of the round in MySQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sold_out_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drained_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// A sentence for humans about the last transition or problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready, Live, SoldOut, Drained (and BackendsReachable, SpecAccepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The longest event name the workloads can carry: `<name>-consumer` must be a DNS-1035
/// label (63 characters). The schema enforces it (a CEL rule on `metadata.name`).
pub const MAX_EVENT_NAME_LEN: usize = 63 - "-consumer".len();
const _: () = assert!(MAX_EVENT_NAME_LEN == 54, "the CEL rule on metadata.name says 54");

impl CouponEventStatus {
    /// A JSON merge patch that makes the stored status exactly `self`: every status field
    /// `self` leaves empty is sent as `null`, so that starting a new round clears the last
    /// round's timestamps and counts instead of leaving them behind.
    pub fn merge_patch(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut fields = match serde_json::to_value(self)? {
            serde_json::Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        for name in status_field_names() {
            fields.entry(name.clone()).or_insert(serde_json::Value::Null);
        }
        Ok(serde_json::Value::Object(fields))
    }
}

/// Every field of the status, from its schema (so a new field is cleared too).
fn status_field_names() -> &'static [String] {
    static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let schema = schemars::schema_for!(CouponEventStatus);
        schema.get("properties").and_then(|p| p.as_object()).map(|p| p.keys().cloned().collect()).unwrap_or_default()
    });
    &NAMES
}

/// The CRD as YAML, as `crdgen` prints it and as committed in `crds/couponevent.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&CouponEvent::crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_crd_yaml_is_current() -> anyhow::Result<()> {
        let committed = include_str!("../couponevent.yaml");
        assert!(
            committed == crd_yaml()?,
            "crds/couponevent.yaml is stale: run `cargo run -p couponrush-crds --bin crdgen > crds/couponevent.yaml`"
        );
        Ok(())
    }

    #[test]
    fn the_charts_crd_is_the_generated_one() -> anyhow::Result<()> {
        let chart = include_str!("../../charts/couponrush/crds/couponevent.yaml");
        assert!(
            chart == crd_yaml()?,
            "charts/couponrush/crds/couponevent.yaml is stale: cp crds/couponevent.yaml charts/couponrush/crds/"
        );
        Ok(())
    }

    #[test]
    fn a_minimal_event_gets_the_documented_defaults() -> anyhow::Result<()> {
        let spec: CouponEventSpec = serde_json::from_value(serde_json::json!({
            "coupon": {"name": "10,000 KRW off", "amount": 10000, "currency": "KRW"},
            "stock": 1000,
            "startTime": "2026-12-01T10:00:00+09:00"
        }))?;
        assert_eq!(spec.strategy, Strategy::KafkaAsync);
        assert_eq!(spec.per_user, 1);
        assert_eq!(spec.warmup, "5m");
        assert_eq!(spec.teardown_after, "10m");
        assert_eq!(spec.capacity.node_profile, NodeProfile::T3Medium);
        Ok(())
    }

    #[test]
    fn a_status_patch_clears_what_the_new_status_leaves_empty() -> anyhow::Result<()> {
        let fresh = CouponEventStatus { phase: Phase::Warming, round: Some(2), ..CouponEventStatus::default() };
        let patch = fresh.merge_patch()?;
        assert_eq!(patch["phase"], "Warming");
        assert_eq!(patch["round"], 2);
        for cleared in
            ["startedAt", "soldOutAt", "drainedAt", "completedAt", "issued", "persisted", "remaining", "conditions"]
        {
            assert!(patch[cleared].is_null() && patch.get(cleared).is_some(), "{cleared} is not cleared: {patch}");
        }
        // Every field a full status serializes is among the ones a patch can clear.
        let full = serde_json::to_value(CouponEventStatus {
            round: Some(1),
            round_starts_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            round_ends_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            remaining: Some(1),
            issued: Some(1),
            persisted: Some(1),
            started_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            sold_out_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            drained_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            completed_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            message: Some("m".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "R".into(),
                message: String::new(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            observed_generation: Some(1),
            ..CouponEventStatus::default()
        })?;
        let keys = full.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(keys.len(), status_field_names().len(), "{keys:?}");
        for key in keys {
            assert!(status_field_names().contains(&key), "{key}");
        }
        Ok(())
    }

    #[test]
    fn the_schema_carries_validation_and_docs() -> anyhow::Result<()> {
        let yaml = crd_yaml()?;
        for expected in [
            "set exactly one of startTime",
            "endTime must be after startTime",
            "the event name must be a DNS-1035 label of at most 54 characters",
            "minimum: 1",
            "t3.medium",
            "kafka-async",
            "Coupons per round",
            "shortNames:",
            "status: {}",
            "the event name must be a DNS-1035 label",
            "capacity.stockBuckets above 1 needs strategy kafka-async",
            "maximum: 64",
        ] {
            assert!(yaml.contains(expected), "CRD lacks {expected:?}");
        }
        assert!(yaml.contains(&format!("size(self.metadata.name) <= {MAX_EVENT_NAME_LEN}")), "the rule's limit");
        Ok(())
    }
}
