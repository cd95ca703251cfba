//! Issue 14, item 3: many events at once on the local control plane (kwok nodes). The
//! operator runs as its own process (so its CPU and memory are its own, read from
//! /proc), `SCALE_EVENTS` CouponEvents (10 in `make test`; `make bench` runs 100 and 500)
//! are applied at once, and the test reports:
//!
//! - the time until every one is `Scheduled` (target for 500: within 60 s);
//! - reconciles per event per minute in the idle steady state (target: below one);
//! - API requests per event (the apiserver's own counter; it counts every client, so the
//!   test's creates, its polling and the Lease renewals are included);
//! - the operator's CPU seconds and peak memory (target: below 150 MiB);
//! - the time until every one is gone after deleting them at once.
//!
//! The test asserts what must hold at any size (every event Scheduled, every one
//! deleted, within generous bounds); the targets are printed beside the measurements,
//! not asserted, as for every performance figure here.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use couponrush_crds::{CouponEvent, Phase};
use couponrush_e2e::{Scope, binary, coupon_event, unique, wait_until};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// Reads an operator process' CPU seconds (user + system) and peak resident memory.
fn process_usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').context("stat")?.1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("VmHWM")?
        .parse()?;
    // Linux reports CPU time in clock ticks of 100 Hz on every platform we run on.
    Ok((ticks / 100.0, peak_kib))
}

async fn metric(url: &str, name: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(url).await?.text().await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, value)| value.parse::<f64>().ok()))
        .sum())
}

/// The apiserver's count of requests served so far (every client).
async fn apiserver_requests(client: &Client) -> anyhow::Result<f64> {
    let request = axum::http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    Ok(text
        .lines()
        .filter(|line| line.starts_with("apiserver_request_total{"))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, value)| value.parse::<f64>().ok()))
        .sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_events_at_once() -> anyhow::Result<()> {
    let count: usize = std::env::var("SCALE_EVENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(10);
    let client = Client::try_default().await.context("no cluster: run local/cluster/cluster.sh up")?;
    couponrush_e2e::install_crd(&client).await?;
    couponrush_e2e::clear_test_namespaces(&client).await?;
    let scope = Scope::new("scale").await?;
    let namespace = unique("scale");
    let labels = json!({ couponrush_e2e::TEST_NAMESPACE_LABEL: "true" });
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace, "labels": labels}}))?,
        )
        .await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "couponrush-backends"},
        "stringData": {
            "REDIS_URL": scope.env.redis_url,
            "DATABASE_URL": scope.database_url,
            "KAFKA_BROKERS": scope.env.kafka_brokers,
            "JWT_HS256_SECRET": couponrush_e2e::JWT_SECRET,
        }
    }))?;
    Api::<Secret>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &secret).await?;

    // The operator binary, watching only this namespace (earlier tests' leftovers elsewhere
    // must not count), leading through its own Lease.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut operator = tokio::process::Command::new(binary("couponrush-operator")?)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("LEADER_ELECTION_NAMESPACE", &namespace)
        .env("POD_NAME", "scale-operator")
        .env("WATCH_NAMESPACES", &namespace)
        .env("ISSUER_IMAGE", "couponrush:scale")
        .env("CONSUMER_IMAGE", "couponrush:scale")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = operator.id().context("operator pid")?;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    wait_until("the operator to lead", Duration::from_secs(30), || async {
        Ok(metric(&metrics_url, "couponrush_operator_leader").await.unwrap_or(0.0) >= 1.0)
    })
    .await?;

    let api: Api<CouponEvent> = Api::namespaced(client.clone(), &namespace);
    let requests_before = apiserver_requests(&client).await?;
    let applied = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let event = coupon_event(&format!("event-{i:04}"), 100, Duration::from_secs(3_600), "1m", 2_000)?;
                api.create(&PostParams::default(), &event).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<()>()
        .await?;
    let created_in = applied.elapsed();
    let scheduled = |api: Api<CouponEvent>| async move {
        let events = api.list(&ListParams::default()).await?;
        anyhow::Ok(
            events.items.iter().filter(|e| e.status.as_ref().is_some_and(|s| s.phase == Phase::Scheduled)).count(),
        )
    };
    let bound = Duration::from_secs(60 + 2 * count as u64 / 10);
    wait_until("every event Scheduled", bound, || async { Ok(scheduled(api.clone()).await? == count) }).await?;
    let all_scheduled_in = applied.elapsed();
    let requests_to_schedule = apiserver_requests(&client).await? - requests_before;

    // Idle: nothing changes; the operator may only look again when a round is due (in
    // an hour) or a watch event says something changed.
    let idle = Duration::from_secs(60);
    let reconciles_before = metric(&metrics_url, "couponrush_operator_reconciles_total").await?;
    tokio::time::sleep(idle).await;
    let idle_reconciles = metric(&metrics_url, "couponrush_operator_reconciles_total").await? - reconciles_before;
    let per_event_per_minute = idle_reconciles / count as f64 * (60.0 / idle.as_secs_f64());
    let (cpu_seconds, peak_kib) = process_usage(pid)?;

    let deleting = Instant::now();
    api.delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
    wait_until("every event deleted", bound, || async { Ok(api.list(&ListParams::default()).await?.items.is_empty()) })
        .await?;
    let all_deleted_in = deleting.elapsed();

    println!("scale: {count} CouponEvents at once (operator as a process, kwok control plane, this machine)");
    println!(
        "  created in {created_in:.1?}; all Scheduled {all_scheduled_in:.1?} after the first create (target for 500: 60 s)"
    );
    println!(
        "  API requests until all Scheduled: {requests_to_schedule:.0} = {:.1} per event (all clients)",
        requests_to_schedule / count as f64
    );
    println!(
        "  idle: {idle_reconciles:.0} reconciles in {}s = {per_event_per_minute:.3} per event per minute (target: < 1)",
        idle.as_secs()
    );
    println!(
        "  operator: {cpu_seconds:.1} CPU s so far, peak RSS {:.1} MiB (target: < 150 MiB)",
        peak_kib as f64 / 1024.0
    );
    println!("  all deleted {all_deleted_in:.1?} after deleting them at once");
    operator.kill().await?;
    Api::<Namespace>::all(client).delete(&namespace, &DeleteParams::default()).await?;
    Ok(())
}
