//! The kafka-async spike against a three-node Redis Cluster (local/backends.sh up
//! redis-cluster): every key of a round shares one hash tag, so the Lua admission runs
//! on one shard, and the guarantees hold as on a single node.

use std::time::Duration;

use couponrush_core::event::Strategy;
use couponrush_e2e::Scope;
use couponrush_e2e::load::{Spike, check_sold_out, rows};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_async_spike_on_a_redis_cluster() -> anyhow::Result<()> {
    let scope = Scope::new_on_redis_cluster("cluster").await?;
    let mut redis = scope.redis().await?;
    let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(&mut redis).await?;
    assert!(info.contains("cluster_state:ok") && info.contains("cluster_size:3"), "{info}");

    let round = scope.round("spike")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 1_000, Duration::from_millis(500)).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally =
        Spike { users: 10_000, requests_per_user: 5, concurrency: 128 }.run(&[issuer.issue_url(&round)]).await?;
    println!("kafka-async on Redis Cluster: 50000 requests in {:?}: {:?}", tally.elapsed, tally.by_status);
    assert_eq!(tally.server_errors(), 0, "{:?}", tally.by_code);
    scope.wait_for_rows(&round, 1_000, Duration::from_secs(30)).await?;
    check_sold_out(1_000, &tally.issued, &tally.already, &rows(&scope.pool().await?, &round).await?)?;
    consumer.stop().await?;
    issuer.stop().await
}
