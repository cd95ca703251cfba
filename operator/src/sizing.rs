//! Sizing, with no API calls: from the node profile and the expected peak to the issuer
//! and consumer replicas, their requests and limits, and the topic's partitions.
//!
//! An issuer pod gets a little under half a node's CPU, so two fit on a node next to
//! the system pods, and the replicas are the expected peak divided by what one such
//! pod sustains (measured with `make bench`; see BENCH.md), never fewer than two (one
//! may be disrupted) nor more than the event's `maxReplicas`.

use couponrush_crds::{Capacity, NodeProfile};

/// Requests one issuer pod is planned to take on the admission path, per whole vCPU it
/// gets. The benchmark (BENCH.md) measured the issuer's own CPU at 40 µs per admission
/// (25,000/s per vCPU) and 10 µs per sold-out answer; planning for a third of that
/// leaves room for real networks, noisy neighbours and the opening's burst.
pub const ISSUER_RPS_PER_VCPU: u32 = 8_000;
/// Upper bound on issuer replicas when the event does not set one.
pub const DEFAULT_MAX_REPLICAS: u32 = 50;
/// Rows one consumer pod writes per second in batches (MySQL-bound).
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

    fn capacity(peak: u32, max: Option<u32>) -> Capacity {
        Capacity { expected_peak_rps: peak, node_profile: NodeProfile::T3Medium, max_replicas: max }
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
        // One t3.medium issuer: 0.9 vCPU × 8,000 = 7,200 req/s.
        assert_eq!(size(&capacity(20_000, None)).issuer_replicas, 3);
        assert_eq!(size(&capacity(72_000, None)).issuer_replicas, 10);
        assert_eq!(size(&capacity(72_001, None)).issuer_replicas, 11);
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

    /// `e2e/bench/pod.sh` measures one pod under these limits; the constants above come
    /// from its results, so its defaults must be what the operator gives a t3.medium pod.
    #[test]
    fn the_pod_benchmark_measures_the_pods_sized_here() {
        let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../e2e/bench/pod.sh"))
            .expect("e2e/bench/pod.sh");
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
        let big =
            size(&Capacity { expected_peak_rps: 20_000, node_profile: NodeProfile::C6iXlarge, max_replicas: None });
        assert_eq!(big.issuer.cpu_request_millis, 1_800);
        assert_eq!(big.issuer_replicas, 2);
    }
}
