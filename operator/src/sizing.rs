//! Sizing, with no API calls: from the node profile and the expected peak to the issuer
//! and consumer replicas, their requests and limits, and the topic's partitions.
//!
//! An issuer pod gets a little under half a node's CPU, so two fit on a node next to
//! the system pods, and the replicas are the expected peak divided by what one such
//! pod is planned to take (measured in a container with these limits by
//! `bench/pod.sh`, part of `make bench`; see BENCH.md), never fewer than two (one
//! may be disrupted) nor more than the event's `maxReplicas`.

use couponrush_core::round_store::buckets::MAX_STOCK_BUCKETS;
use couponrush_crds::{Capacity, NodeProfile};

/// Requests one issuer pod is planned to take on the admission path, per vCPU of its
/// CPU *request* (what it is guaranteed when its node is full; a t3.medium pod: 0.9 vCPU,
/// so 6,120 requests/s).
///
/// Measured by `bench/pod.sh` (bench/results/2026-12-02-pod.md and
/// 2026-12-02-pod-2.md): one issuer in a container with the limits below (CFS quota
/// checked inside its cgroup), the backends and the generator on the same 2 vCPUs
/// outside it. The container's own CPU (cgroup cpuacct: HTTP, JWT, the Lua call,
/// librdkafka's threads) was 46–52 µs per admission at saturation on a quiet machine and
/// 73 µs with another build running beside it; planned here on the worst, 73 µs
/// (13,700 admissions per vCPU-second), with a **safety factor of 2** for the opening's
/// burst, real networks and the latency tail: 1,000,000 / 73 / 2 ≈ 6,800. Sold-out
/// answers cost less (34–40k/s from one pod at saturation).
///
/// Not taken from the bench: its "highest rate held with p99 < 25 ms" (800–2,800/s),
/// which on that machine is set by the shared backends' tail (Kafka's acks under a
/// 5 ms linger, on the same two cores), not by the pod: the container used 0.15–0.3 of
/// a core, unthrottled, in the steps that missed, and doubling its quota did not raise
/// the figure. That target is checked on a real cluster, not derived here.
pub const ISSUER_RPS_PER_VCPU: u32 = 6_800;
/// Upper bound on issuer replicas when the event does not set one.
pub const DEFAULT_MAX_REPLICAS: u32 = 50;
/// Rows one consumer pod writes per second in batches (MySQL-bound). `bench/pod.sh`
/// measured one consumer container draining 200,000 queued coupons at 24,400–42,200
/// rows/s (0.5 vCPU, its request) and 37,500–40,400 (1 vCPU, its limit), 3–4 µs of its
/// own CPU per row, MariaDB with fsync on every commit; planned at 20,000 (a safety
/// factor of 1.2 on the worst run: the rows wait in Kafka meanwhile, nothing is lost).
pub const CONSUMER_ROWS_PER_SECOND: u32 = 20_000;

/// Allocatable resources of a node kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeShape {
    pub cpu_millis: u32,
    pub memory_mib: u32,
}

pub fn node_shape(profile: NodeProfile) -> NodeShape {
    match profile {
        NodeProfile::T3Medium => NodeShape { cpu_millis: 2_000, memory_mib: 4_096 },
        NodeProfile::T3Large => NodeShape { cpu_millis: 2_000, memory_mib: 8_192 },
        NodeProfile::C6iXlarge => NodeShape { cpu_millis: 4_000, memory_mib: 8_192 },
    }
}

/// CPU and memory of one container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodResources {
    pub cpu_request_millis: u32,
    pub cpu_limit_millis: u32,
    pub memory_request_mib: u32,
    pub memory_limit_mib: u32,
}

/// Admissions one Redis shard (one core) makes per second: 1 s / 18 µs per kafka-async
/// admission (one Lua call; BENCH.md, 2026-11-22; docs/scale.md).
pub const REDIS_SHARD_ADMISSIONS_PER_SECOND: u32 = 55_000;

/// Why a round's admissions would outrun one Redis shard, if they would: the crowd
/// offers more requests per second than the shard admits, and the stock keeps the shard
/// admitting longer than an issuer waits for a Redis reply, so admissions queue past that
/// wait and come back as 503s (exactness holds; speed does not). A round of `buckets`
/// stock buckets spreads both over that many shards (docs/scale.md): each shard sees
/// peak / N requests and holds stock / N coupons.
pub fn redis_shard_overload(expected_peak_rps: u32, stock: u32, buckets: u32) -> Option<String> {
    let buckets = buckets.max(1);
    let shard_rps = expected_peak_rps / buckets;
    let shard_stock = stock.div_ceil(buckets);
    let busy_seconds = f64::from(shard_stock) / f64::from(REDIS_SHARD_ADMISSIONS_PER_SECOND);
    let wait_seconds = couponrush_core::redis_conn::RESPONSE_TIMEOUT.as_secs_f64();
    (shard_rps > REDIS_SHARD_ADMISSIONS_PER_SECOND && busy_seconds > wait_seconds).then(|| {
        let needed = expected_peak_rps.div_ceil(REDIS_SHARD_ADMISSIONS_PER_SECOND).min(MAX_STOCK_BUCKETS);
        format!(
            "{expected_peak_rps} requests/s for a stock of {stock} over {buckets} stock bucket(s) outrun a Redis \
             shard ({REDIS_SHARD_ADMISSIONS_PER_SECOND} admissions/s): admitting a bucket's {shard_stock} coupons \
             keeps its shard busy {busy_seconds:.1} s, longer than the {wait_seconds:.0} s an issuer waits for \
             Redis, so requests will time out as 503s; set capacity.stockBuckets to at least {needed} (kafka-async, \
             perUser 1) on a Redis Cluster with as many shards (docs/scale.md)"
        )
    })
}

/// Everything the operator sizes for one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub issuer_replicas: u32,
    pub issuer: PodResources,
    pub consumer_replicas: u32,
    pub consumer: PodResources,
    pub partitions: i32,
}

pub fn size(capacity: &Capacity) -> Sizing {
    let node = node_shape(capacity.node_profile);
    // 45 % of the node: two issuers per node, with room left for the node's own pods.
    let issuer_cpu = node.cpu_millis * 45 / 100;
    let issuer = PodResources {
        cpu_request_millis: issuer_cpu,
        cpu_limit_millis: issuer_cpu * 2,
        memory_request_mib: 256,
        memory_limit_mib: 512,
    };
    let per_pod_rps = (ISSUER_RPS_PER_VCPU as u64 * issuer_cpu as u64 / 1_000).max(1);
    let max_replicas = capacity.max_replicas.unwrap_or(DEFAULT_MAX_REPLICAS).max(1);
    let wanted = (capacity.expected_peak_rps as u64).div_ceil(per_pod_rps);
    let issuer_replicas = u32::try_from(wanted).unwrap_or(u32::MAX).clamp(2.min(max_replicas), max_replicas);

    // Admissions per second cannot exceed requests per second; the consumer keeps up
    // with a sold-out round within seconds.
    let consumer_replicas = capacity.expected_peak_rps.div_ceil(CONSUMER_ROWS_PER_SECOND).clamp(1, 4);
    let consumer = PodResources {
        cpu_request_millis: node.cpu_millis / 4,
        cpu_limit_millis: node.cpu_millis / 2,
        memory_request_mib: 128,
        memory_limit_mib: 256,
    };
    // Enough partitions for every consumer, and for the issuers' producers to spread.
    let partitions = i32::try_from(issuer_replicas.max(consumer_replicas).clamp(4, 64)).unwrap_or(64);
    Sizing { issuer_replicas, issuer, consumer_replicas, consumer, partitions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_outruns_one_redis_shard_only_with_a_big_crowd_and_a_big_stock() {
        // The plan's two cases (docs/scale.md): a million presses for 1,000 coupons is
        // 18 ms of one shard; for 1,000,000 coupons it is 18 s.
        assert_eq!(redis_shard_overload(1_000_000, 1_000, 1), None);
        let warning = redis_shard_overload(1_000_000, 1_000_000, 1).expect("overload");
        assert!(warning.contains("18.2 s"), "{warning}");
        // A big stock under a crowd one shard keeps up with is fine, and so is the seed event.
        assert_eq!(redis_shard_overload(50_000, 10_000_000, 1), None);
        assert_eq!(redis_shard_overload(20_000, 1_000, 1), None);
        // The edge: the shard busy for just over the reply wait.
        assert_eq!(redis_shard_overload(60_000, 110_000, 1), None);
        assert!(redis_shard_overload(60_000, 111_000, 1).is_some());
    }

    /// The schema's bound on `stockBuckets` is core's: the CRD crate does no I/O and does
    /// not depend on core, so the two are checked against each other here.
    #[test]
    fn the_schema_allows_the_buckets_core_can_hold() -> anyhow::Result<()> {
        use kube::CustomResourceExt;
        let crd = serde_json::to_value(couponrush_crds::CouponEvent::crd())?;
        let field = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["capacity"]
            ["properties"]["stockBuckets"];
        assert_eq!(field["maximum"].as_f64(), Some(f64::from(MAX_STOCK_BUCKETS)), "{field}");
        assert_eq!(field["minimum"].as_f64(), Some(1.0), "{field}");
        Ok(())
    }

    #[test]
    fn stock_buckets_spread_the_load_over_shards() {
        // A million presses for a million coupons: the warning names the buckets needed.
        let warning = redis_shard_overload(1_000_000, 1_000_000, 1).expect("overload");
        assert!(warning.contains("stockBuckets to at least 19"), "{warning}");
        // Eight buckets: 125,000 requests/s and 125,000 coupons per shard, still too much.
        assert!(redis_shard_overload(1_000_000, 1_000_000, 8).is_some());
        // Nineteen: each shard sees 52,631 requests/s, under its 55,000.
        assert_eq!(redis_shard_overload(1_000_000, 1_000_000, 19), None);
        // The 64-bucket bound is the most the warning asks for.
        let huge = redis_shard_overload(10_000_000, 10_000_000, 1).expect("overload");
        assert!(huge.contains("at least 64"), "{huge}");
    }

    fn capacity(peak: u32, max: Option<u32>) -> Capacity {
        Capacity { expected_peak_rps: peak, node_profile: NodeProfile::T3Medium, max_replicas: max, stock_buckets: 1 }
    }

    #[test]
    fn issuers_fit_two_per_t3_medium() {
        let sizing = size(&capacity(20_000, None));
        assert_eq!(sizing.issuer.cpu_request_millis, 900);
        assert!(2 * sizing.issuer.cpu_request_millis < 2_000, "two requests fit a node with headroom");
        assert!(2 * sizing.issuer.memory_limit_mib < 4_096);
    }

    #[test]
    fn replicas_follow_the_expected_peak() {
        // One t3.medium issuer: 0.9 vCPU × 6,800 = 6,120 req/s (was 7,200 at 8,000/vCPU
        // before the per-pod benchmark: 20,000 req/s took 3 replicas then, 4 now).
        assert_eq!(size(&capacity(20_000, None)).issuer_replicas, 4);
        assert_eq!(size(&capacity(61_200, None)).issuer_replicas, 10);
        assert_eq!(size(&capacity(61_201, None)).issuer_replicas, 11);
    }

    /// The README's sizing table (t3.medium).
    #[test]
    fn the_readme_sizing_table() {
        let row = |peak, max| {
            let s = size(&capacity(peak, max));
            (s.issuer_replicas, s.consumer_replicas, s.partitions)
        };
        assert_eq!(row(10_000, None), (2, 1, 4));
        assert_eq!(row(100_000, None), (17, 4, 17));
        assert_eq!(row(1_000_000, None), (50, 4, 50), "capped by the default maxReplicas");
        assert_eq!(row(1_000_000, Some(500)), (164, 4, 64));
    }

    #[test]
    fn replicas_are_bounded() {
        assert_eq!(size(&capacity(1, None)).issuer_replicas, 2, "never fewer than two");
        assert_eq!(size(&capacity(10_000_000, None)).issuer_replicas, DEFAULT_MAX_REPLICAS);
        assert_eq!(size(&capacity(10_000_000, Some(7))).issuer_replicas, 7);
        assert_eq!(size(&capacity(1, Some(1))).issuer_replicas, 1, "an explicit maximum of one wins");
    }

    #[test]
    fn partitions_cover_consumers_and_issuers() {
        let small = size(&capacity(1, None));
        assert_eq!((small.consumer_replicas, small.partitions), (1, 4));
        let big = size(&capacity(1_000_000, None));
        assert_eq!(big.consumer_replicas, 4);
        assert_eq!(big.partitions, 50);
    }

    /// `bench/pod.sh` measures one pod under these limits; the constants above come
    /// from its results, so its defaults must be what the operator gives a t3.medium pod.
    #[test]
    fn the_pod_benchmark_measures_the_pods_sized_here() {
        let script =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/pod.sh")).expect("bench/pod.sh");
        let default = |var: &str| {
            let start = format!("{var}=\"${{{var}:-");
            let at = script.find(&start).unwrap_or_else(|| panic!("pod.sh sets a default for {var}")) + start.len();
            script[at..].split('}').next().expect("default").to_owned()
        };
        assert_eq!(default("NODE_PROFILE"), "t3.medium");
        let sizing = size(&capacity(20_000, None));
        let cpu = |millis: u32| format!("{millis}m");
        let mem = |mib: u32| format!("{mib}Mi");
        assert_eq!(default("ISSUER_CPU_REQUEST"), cpu(sizing.issuer.cpu_request_millis));
        assert_eq!(default("ISSUER_CPU_LIMIT"), cpu(sizing.issuer.cpu_limit_millis));
        assert_eq!(default("ISSUER_MEMORY_LIMIT"), mem(sizing.issuer.memory_limit_mib));
        assert_eq!(default("CONSUMER_CPU_REQUEST"), cpu(sizing.consumer.cpu_request_millis));
        assert_eq!(default("CONSUMER_CPU_LIMIT"), cpu(sizing.consumer.cpu_limit_millis));
        assert_eq!(default("CONSUMER_MEMORY_LIMIT"), mem(sizing.consumer.memory_limit_mib));
    }

    #[test]
    fn bigger_nodes_get_bigger_pods() {
        let big = size(&Capacity { node_profile: NodeProfile::C6iXlarge, ..Capacity::default() });
        assert_eq!(big.issuer.cpu_request_millis, 1_800);
        assert_eq!(big.issuer_replicas, 2);
    }
}
