//! The operator on a real Kubernetes control plane (local/cluster/cluster.sh up: etcd,
//! kube-apiserver, controller-manager, scheduler, kwok nodes) with the real Redis,
//! Kafka and MariaDB: the CRD's validation, the whole lifecycle of an event from
//! Warming to Completed, a daily event's next round, deletion mid-Live, and leader
//! election between two replicas.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use couponrush_core::db;
use couponrush_core::event::EventId;
use couponrush_core::prewarm::recover_round;
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_core::round_store::meta::round_meta;
use couponrush_crds::{CouponEvent, CouponEventStatus, Phase};
use couponrush_e2e::load::{Spike, check_sold_out, rows};
use couponrush_e2e::{Scope, Service, token, unique, wait_until};
use couponrush_issuer::config::{Backends, ServeConfig};
use couponrush_operator::clock::Clock;
use couponrush_operator::config::Config;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use redis::AsyncCommands;
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Cluster {
    client: Client,
    namespace: String,
    scope: Scope,
}

/// Installs the CRD, makes a namespace with the backends Secret.
async fn cluster(name: &str) -> anyhow::Result<Cluster> {
    let client =
        Client::try_default().await.context("no cluster: run local/cluster/cluster.sh up and export its KUBECONFIG")?;
    couponrush_e2e::install_crd(&client).await?;
    couponrush_e2e::clear_test_namespaces(&client).await?;
    let namespace = unique(name);
    let labels = json!({ couponrush_e2e::TEST_NAMESPACE_LABEL: "true" });
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace, "labels": labels}}))?,
        )
        .await?;
    let scope = Scope::new(name).await?;
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
    Ok(Cluster { client, namespace, scope })
}

struct Operator {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), couponrush_operator::RunError>>,
}

async fn start_operator(namespace: &str, identity: &str) -> anyhow::Result<Operator> {
    start_operator_with_clock(namespace, identity, Clock::system()).await
}

/// An operator whose *now* the test controls (see `couponrush_operator::clock`).
async fn start_operator_with_clock(namespace: &str, identity: &str, clock: Clock) -> anyhow::Result<Operator> {
    start_operator_with(namespace, identity, clock, STEADY_LEASE).await
}

/// The Lease of the tests that do not test fail-over: a replica that misses its own
/// Lease's deadline stops (in a cluster its pod restarts; here nothing would restart
/// it), and a loaded two-core machine can stall a renewal for a few seconds.
const STEADY_LEASE: Duration = Duration::from_secs(15);

async fn start_operator_with(
    namespace: &str,
    identity: &str,
    clock: Clock,
    lease_duration: Duration,
) -> anyhow::Result<Operator> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let config = Config {
        listen: addr,
        issuer_image: "couponrush:test".into(),
        consumer_image: "couponrush:test".into(),
        default_backends_secret: "couponrush-backends".into(),
        leader_election_namespace: namespace.to_owned(),
        leader_election_lease: "couponrush-operator".into(),
        identity: identity.to_owned(),
        lease_duration,
        watch_namespaces: Vec::new(),
        log_json: false,
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(couponrush_operator::run_with_clock(config, listener, stop.clone(), clock));
    Ok(Operator { addr, stop, task })
}

impl Operator {
    async fn leads(&self) -> anyhow::Result<bool> {
        let metrics = reqwest::get(format!("http://{}/metrics", self.addr)).await?.text().await?;
        Ok(metrics.lines().any(|line| line == "couponrush_operator_leader 1"))
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await.context("operator did not stop")???;
        Ok(())
    }
}

fn event(name: &str, stock: u32, starts_in: Duration, teardown_after: &str) -> anyhow::Result<CouponEvent> {
    couponrush_e2e::coupon_event(name, stock, starts_in, teardown_after, 20_000)
}

async fn wait_for_phase(
    api: &Api<CouponEvent>,
    name: &str,
    phase: Phase,
    within: Duration,
) -> anyhow::Result<CouponEvent> {
    wait_until(&format!("{name} to be {phase:?}"), within, || async {
        Ok(api.get(name).await?.status.is_some_and(|s| s.phase == phase))
    })
    .await?;
    Ok(api.get(name).await?)
}

/// Starts an issuer and a consumer as the operator configured them: the topic from the
/// issuer Deployment's environment, the backends from the Secret it references.
async fn start_workloads_as_configured(cluster: &Cluster, event: &str) -> anyhow::Result<(Service, Service)> {
    let (issuer, scope) = start_issuer_as_configured(cluster, event).await?;
    let consumer = scope.start_consumer().await?;
    Ok((issuer, consumer))
}

/// The issuer of [`start_workloads_as_configured`], and the scope (with the event's
/// topic) to start a consumer from.
async fn start_issuer_as_configured(cluster: &Cluster, event: &str) -> anyhow::Result<(Service, Scope)> {
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let issuer = deployments.get(&format!("{event}-issuer")).await?;
    let container =
        issuer.spec.and_then(|s| s.template.spec).map(|p| p.containers[0].clone()).context("no container")?;
    let env = |name: &str| container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.clone());
    let secret_name = container
        .env_from
        .iter()
        .flatten()
        .find_map(|e| e.secret_ref.as_ref())
        .map(|s| s.name.clone())
        .context("no Secret")?;
    let secret = Api::<Secret>::namespaced(cluster.client.clone(), &cluster.namespace).get(&secret_name).await?;
    let data = secret.data.unwrap_or_default();
    let value = |key: &str| data.get(key).map(|v| String::from_utf8_lossy(&v.0).into_owned()).context(key.to_owned());
    let backends = Backends {
        redis_url: value("REDIS_URL")?,
        redis_cluster: false,
        database_url: value("DATABASE_URL")?,
        kafka_brokers: value("KAFKA_BROKERS")?,
        kafka_topic: env("KAFKA_TOPIC").context("KAFKA_TOPIC")?,
        kafka_delivery_timeout: Duration::from_secs(5),
        tls: couponrush_core::backend_tls::BackendTls::from_lookup(|key| value(key).ok())?,
    };
    let mut scope = cluster.scope.clone();
    scope.topic = backends.kafka_topic.clone();
    let serve = ServeConfig { jwt_hs256_secret: Some(value("JWT_HS256_SECRET")?), ..ServeConfig::default() };
    let issuer = scope.start_issuer_with(backends, serve).await?;
    Ok((issuer, scope))
}

fn condition(ce: &CouponEvent, kind: &str) -> Option<(String, String)> {
    ce.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == kind).map(|c| (c.status.clone(), c.reason.clone())))
}

/// The reasons of the Warning events recorded about `name`.
async fn warnings(cluster: &Cluster, name: &str) -> anyhow::Result<Vec<String>> {
    event_reasons(cluster, name, Some("Warning")).await
}

/// The reasons of every event recorded about `name`.
async fn all_event_reasons(cluster: &Cluster, name: &str) -> anyhow::Result<Vec<String>> {
    event_reasons(cluster, name, None).await
}

async fn event_reasons(cluster: &Cluster, name: &str, kind: Option<&str>) -> anyhow::Result<Vec<String>> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    Ok(events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| kind.is_none_or(|kind| e.type_.as_deref() == Some(kind)))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect())
}

async fn reconciles(operator: &Operator) -> anyhow::Result<u64> {
    let metrics = reqwest::get(format!("http://{}/metrics", operator.addr)).await?.text().await?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("couponrush_operator_reconciles_total "))
        .context("no reconciles metric")?
        .trim()
        .parse()
        .context("reconciles metric")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_rejected_with_a_readable_message() -> anyhow::Result<()> {
    let cluster = cluster("invalid").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut zero = event("zero-stock", 1, Duration::from_secs(60), "1m")?;
    zero.spec.stock = 0;
    let mut both = event("both-starts", 10, Duration::from_secs(60), "1m")?;
    both.spec.schedule =
        Some(couponrush_crds::Schedule { daily: "10:00".into(), time_zone: "Asia/Seoul".into(), open_for: None });
    let mut queue_two_each = event("queue-two-each", 10, Duration::from_secs(60), "1m")?;
    queue_two_each.spec.strategy = couponrush_core::event::Strategy::Queue;
    queue_two_each.spec.per_user = 2;
    let mut backwards = event("backwards", 10, Duration::from_secs(60), "1m")?;
    backwards.spec.end_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time("2020-01-01T00:00:00Z".parse()?));
    // Names the workloads cannot carry: rejected before anything is pre-warmed.
    let name_rule = "the event name must be a DNS-1035 label";
    let dotted = event("sale.v2", 10, Duration::from_secs(60), "1m")?;
    let too_long = event(&"a".repeat(couponrush_crds::MAX_EVENT_NAME_LEN + 1), 10, Duration::from_secs(60), "1m")?;
    let leading_digit = event("2026-opening", 10, Duration::from_secs(60), "1m")?;
    for (manifest, expected) in [
        (zero, "spec.stock: Invalid value: 0"),
        (both, "set exactly one of startTime"),
        (backwards, "endTime must be after startTime"),
        (queue_two_each, "the queue strategy gives one coupon per user"),
        (dotted, name_rule),
        (too_long, name_rule),
        (leading_digit, name_rule),
    ] {
        match api.create(&PostParams::default(), &manifest).await {
            Err(kube::Error::Api(status)) => {
                assert!(status.message.contains(expected), "{}: {}", manifest.name_any(), status.message)
            }
            other => anyhow::bail!("{} was not rejected: {other:?}", manifest.name_any()),
        }
    }
    // The longest name that fits is accepted (and removed again: no operator runs here).
    let longest = event(&"a".repeat(couponrush_crds::MAX_EVENT_NAME_LEN), 10, Duration::from_secs(60), "1m")?;
    api.create(&PostParams::default(), &longest).await.context("a 54-character name was refused")?;
    api.delete(&longest.name_any(), &Default::default()).await?;
    // An unknown strategy cannot even be written through the typed client; send raw JSON.
    let raw = json!({"apiVersion": "couponrush.io/v1alpha1", "kind": "CouponEvent", "metadata": {"name": "fastest"},
        "spec": {"coupon": {"name": "c", "amount": 1, "currency": "KRW"}, "stock": 1, "startTime": "2030-01-01T00:00:00Z", "strategy": "fastest"}});
    let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(
        cluster.client.clone(),
        &cluster.namespace,
        &kube::api::ApiResource::erase::<CouponEvent>(&()),
    );
    match dynamic.create(&PostParams::default(), &serde_json::from_value(raw)?).await {
        Err(kube::Error::Api(status)) => {
            assert!(status.message.contains("Unsupported value: \"fastest\""), "{}", status.message)
        }
        other => anyhow::bail!("an unknown strategy was accepted: {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_runs_from_warming_to_completed() -> anyhow::Result<()> {
    let cluster = cluster("lifecycle").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let stock = 300;
    api.create(&PostParams::default(), &event("opening-day", stock, Duration::from_secs(8), "3s")?).await?;

    // Warming: workloads sized for 20,000 req/s on t3.medium (4 issuers of 6,120/s:
    // operator/src/sizing.rs), keys pre-warmed, topic made.
    wait_for_phase(&api, "opening-day", Phase::Warming, Duration::from_secs(30)).await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let issuer = deployments.get("opening-day-issuer").await?;
    let spec = issuer.spec.clone().context("spec")?;
    assert_eq!(spec.replicas, Some(4));
    let requests = spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.containers[0].resources.as_ref())
        .and_then(|r| r.requests.clone())
        .context("requests")?;
    assert_eq!(requests["cpu"].0, "900m");
    assert!(deployments.get_opt("opening-day-consumer").await?.is_some());
    // kwok makes the pods Ready: availability is real API behaviour.
    // A bound, not a measurement: on a loaded 2-core machine the fake nodes and the
    // controller-manager have taken over a minute (seen once in a full run).
    wait_until("issuer pods available", Duration::from_secs(150), || async {
        Ok(deployments.get("opening-day-issuer").await?.status.and_then(|s| s.available_replicas) == Some(4))
    })
    .await?;
    let round = EventId::new(&cluster.namespace, "opening-day")?.round(1);
    let meta = round_meta(&mut cluster.scope.redis().await?, &RoundKeys::new(&round))
        .await?
        .context("round keys pre-warmed")?;
    assert_eq!((meta.stock, meta.remaining), (stock, stock));

    // Live at the start; drive the spike through an issuer configured like the Deployment.
    wait_for_phase(&api, "opening-day", Phase::Live, Duration::from_secs(30)).await?;
    let (issuer_service, consumer) = start_workloads_as_configured(&cluster, "opening-day").await?;
    let tally =
        Spike { users: 3_000, requests_per_user: 2, concurrency: 64 }.run(&[issuer_service.issue_url(&round)]).await?;
    assert_eq!(tally.server_errors(), 0);

    // SoldOut → Draining → Completed, with everything persisted and the workloads gone.
    let done = wait_for_phase(&api, "opening-day", Phase::Completed, Duration::from_secs(60)).await?;
    let status = done.status.context("status")?;
    assert_eq!((status.issued, status.persisted, status.remaining), (Some(stock), Some(stock), Some(0)));
    assert!(status.sold_out_at.is_some() && status.drained_at.is_some() && status.completed_at.is_some());
    for condition in ["SoldOut", "Drained"] {
        assert!(
            status.conditions.iter().any(|c| c.type_ == condition && c.status == "True"),
            "{condition}: {:?}",
            status.conditions
        );
    }
    // Completed is recorded before the teardown starts (so a pass that finds the keys
    // gone knows why): the workloads and keys go within moments after.
    wait_until("the workloads and the round's keys removed", Duration::from_secs(15), || async {
        let mut redis = cluster.scope.redis().await?;
        Ok(deployments.get_opt("opening-day-issuer").await?.is_none()
            && deployments.get_opt("opening-day-consumer").await?.is_none()
            && round_meta(&mut redis, &RoundKeys::new(&round)).await?.is_none())
    })
    .await?;
    check_sold_out(stock, &tally.issued, &tally.already, &rows(&cluster.scope.pool().await?, &round).await?)?;

    consumer.stop().await?;
    issuer_service.stop().await?;
    operator.stop().await
}

/// Every status the event goes through, as the watch delivers them (one item per write).
fn record_statuses(api: &Api<CouponEvent>, name: &str) -> Arc<Mutex<Vec<CouponEventStatus>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stream = kube::runtime::watcher(
        api.clone(),
        kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}")),
    );
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.applied_objects());
        while let Some(Ok(ce)) = stream.next().await {
            if let (Some(status), Ok(mut seen)) = (ce.status, sink.lock())
                && seen.last() != Some(&status)
            {
                seen.push(status);
            }
        }
    });
    seen
}

/// A daily event runs round after round, each for real. The operator's clock starts a
/// day behind, so round 1 opens at "yesterday's" opening time (the issuers, on Redis
/// time, see it as long open); it sells out, drains and completes, and round 2 is
/// scheduled a day later, with nothing running and nothing pre-warmed. Then the clock is
/// set right: round 2 falls due on both clocks and must go Warming → Live → SoldOut →
/// Draining → Completed with its own counts and timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_event_runs_round_after_round() -> anyhow::Result<()> {
    let cluster = cluster("daily").await?;
    let clock = Clock::shifted(jiff::SignedDuration::from_hours(-24));
    let operator = start_operator_with_clock(&cluster.namespace, "operator-a", clock.clone()).await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    // The schedule has minute resolution: the first whole minute at least 20 s away.
    let now_s = jiff::Timestamp::now().as_second();
    let opens = jiff::Timestamp::from_second((now_s + 20 + 59) / 60 * 60)?;
    let yesterday = opens - jiff::SignedDuration::from_hours(24);
    let daily = opens.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M").to_string();
    let stock = 10;
    let mut daily_event = event("daily", stock, Duration::from_secs(60), "1s")?;
    daily_event.spec.start_time = None;
    daily_event.spec.schedule =
        Some(couponrush_crds::Schedule { daily: daily.clone(), time_zone: "UTC".into(), open_for: None });
    let seen = record_statuses(&api, "daily");
    api.create(&PostParams::default(), &daily_event).await?;

    let scheduled = wait_for_phase(&api, "daily", Phase::Scheduled, Duration::from_secs(30)).await?;
    let status = scheduled.status.context("status")?;
    assert_eq!(status.round, Some(1));
    assert_eq!(status.round_starts_at.map(|t| t.0), Some(yesterday), "round 1 at {daily} UTC on the operator's clock");

    wait_for_phase(&api, "daily", Phase::Live, Duration::from_secs(160)).await?;
    let round = EventId::new(&cluster.namespace, "daily")?.round(1);
    let (issuer, consumer) = start_workloads_as_configured(&cluster, "daily").await?;
    let tally = Spike { users: 50, requests_per_user: 2, concurrency: 16 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(tally.server_errors(), 0);

    // Round 1 completes; the next pass plans round 2 for the same time a day later.
    wait_until("round 2 to be scheduled", Duration::from_secs(60), || async {
        Ok(api.get("daily").await?.status.is_some_and(|s| s.round == Some(2) && s.phase == Phase::Scheduled))
    })
    .await?;
    let status = api.get("daily").await?.status.context("status")?;
    assert_eq!(status.round_starts_at.map(|t| t.0), Some(opens));
    check_sold_out(stock, &tally.issued, &tally.already, &rows(&cluster.scope.pool().await?, &round).await?)?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert!(deployments.get_opt("daily-issuer").await?.is_none(), "nothing runs between rounds");
    let mut redis = cluster.scope.redis().await?;
    assert!(round_meta(&mut redis, &RoundKeys::new(&round)).await?.is_none(), "round 1's keys removed");
    let tomorrow = EventId::new(&cluster.namespace, "daily")?.round(2);
    assert!(round_meta(&mut redis, &RoundKeys::new(&tomorrow)).await?.is_none(), "round 2 not warmed a day early");
    consumer.stop().await?;
    issuer.stop().await?;
    let round_1 = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .rev()
        .find(|s| s.round == Some(1) && s.phase == Phase::Completed)
        .cloned()
        .context("round 1 was seen Completed")?;

    // A day passes: round 2 is due (on the real clock too, since `opens` has passed).
    clock.set_offset(jiff::SignedDuration::ZERO);
    wait_until("round 2 to be Live", Duration::from_secs(60), || async {
        Ok(api.get("daily").await?.status.is_some_and(|s| s.round == Some(2) && s.phase == Phase::Live))
    })
    .await?;
    let (issuer, consumer) = start_workloads_as_configured(&cluster, "daily").await?;
    let tally = Spike { users: 40, requests_per_user: 2, concurrency: 16 }.run(&[issuer.issue_url(&tomorrow)]).await?;
    assert_eq!(tally.server_errors(), 0);
    assert_eq!(tally.issued.len(), stock as usize, "round 2 hands out its own stock");
    wait_until("round 2 to be Completed", Duration::from_secs(60), || async {
        let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        Ok(seen.iter().any(|s| s.round == Some(2) && s.phase == Phase::Completed))
    })
    .await?;
    check_sold_out(stock, &tally.issued, &tally.already, &rows(&cluster.scope.pool().await?, &tomorrow).await?)?;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let phases: Vec<Phase> = seen.iter().filter(|s| s.round == Some(2)).map(|s| s.phase).collect();
    let mut order = phases.clone();
    order.dedup();
    assert_eq!(
        order,
        [Phase::Scheduled, Phase::Warming, Phase::Live, Phase::SoldOut, Phase::Draining, Phase::Completed],
        "round 2's phases: {phases:?}"
    );
    let done = seen.iter().find(|s| s.round == Some(2) && s.phase == Phase::Completed).context("round 2 done")?;
    assert_eq!((done.issued, done.persisted, done.remaining), (Some(stock), Some(stock), Some(0)), "{done:?}");
    let stamp = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.as_ref().map(|t| t.0);
    let round_1_done = stamp(&round_1.completed_at).context("round 1 completedAt")?;
    for (what, at) in [
        ("startedAt", stamp(&done.started_at)),
        ("soldOutAt", stamp(&done.sold_out_at)),
        ("drainedAt", stamp(&done.drained_at)),
        ("completedAt", stamp(&done.completed_at)),
    ] {
        let at = at.with_context(|| format!("round 2 has no {what}: {done:?}"))?;
        assert!(at > round_1_done && at >= opens, "round 2's {what} {at} is round 1's (done {round_1_done})");
    }
    assert!(
        seen.iter().filter(|s| s.round == Some(2) && s.phase == Phase::Warming).all(|s| s.started_at.is_none()
            && s.issued.is_none_or(|n| n == 0)
            && s.sold_out_at.is_none()
            && s.completed_at.is_none()),
        "round 2 started from a clean slate: {seen:?}"
    );

    consumer.stop().await?;
    issuer.stop().await?;
    operator.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_live_event_cleans_up() -> anyhow::Result<()> {
    let cluster = cluster("delete").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.create(&PostParams::default(), &event("short-lived", 50, Duration::from_secs(4), "1m")?).await?;
    wait_for_phase(&api, "short-lived", Phase::Live, Duration::from_secs(30)).await?;
    let round = EventId::new(&cluster.namespace, "short-lived")?.round(1);
    assert!(round_meta(&mut cluster.scope.redis().await?, &RoundKeys::new(&round)).await?.is_some());

    api.delete("short-lived", &DeleteParams::default()).await?;
    wait_until("the event is gone", Duration::from_secs(30), || async {
        Ok(api.get_opt("short-lived").await?.is_none())
    })
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    assert!(deployments.get_opt("short-lived-issuer").await?.is_none());
    assert!(
        round_meta(&mut cluster.scope.redis().await?, &RoundKeys::new(&round)).await?.is_none(),
        "round keys removed"
    );
    assert!(db::round_row(&cluster.scope.pool().await?, &round).await?.is_none(), "stock row removed");
    operator.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_one_leads() -> anyhow::Result<()> {
    let cluster = cluster("leader").await?;
    // A short Lease, so that the take-over is quick.
    let lease = Duration::from_secs(3);
    let a = start_operator_with(&cluster.namespace, "operator-a", Clock::system(), lease).await?;
    wait_until("a leads", Duration::from_secs(20), || a.leads()).await?;
    let b = start_operator_with(&cluster.namespace, "operator-b", Clock::system(), lease).await?;
    tokio::time::sleep(Duration::from_secs(4)).await; // longer than the 3 s lease
    let (a_leads, b_leads) = (a.leads().await?, b.leads().await?);
    let lease = Api::<Lease>::namespaced(cluster.client.clone(), &cluster.namespace).get("couponrush-operator").await?;
    assert!(a_leads && !b_leads, "exactly one leader: a {a_leads}, b {b_leads}, lease {:?}", lease.spec);
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let holder = leases.get("couponrush-operator").await?.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("operator-a"));

    a.stop().await?;
    wait_until("b takes over", Duration::from_secs(20), || b.leads()).await?;
    let holder = leases.get("couponrush-operator").await?.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("operator-b"));
    b.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_live_add_stock_and_refuse_what_would_break_the_round() -> anyhow::Result<()> {
    let cluster = cluster("changes").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.create(&PostParams::default(), &event("flash", 20, Duration::from_secs(4), "1m")?).await?;
    wait_for_phase(&api, "flash", Phase::Live, Duration::from_secs(30)).await?;
    // The topic exists, with partitions from the capacity.
    let topic = format!("couponrush.{}.flash", cluster.namespace);
    let brokers = cluster.scope.env.kafka_brokers.clone();
    let partitions = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        Ok(metadata.topics().first().map_or(0, |t| t.partitions().len()))
    })
    .await??;
    assert_eq!(partitions, 4);

    // Ten coupons go out.
    let round = EventId::new(&cluster.namespace, "flash")?.round(1);
    let (issuer, consumer) = start_workloads_as_configured(&cluster, "flash").await?;
    let tally = Spike { users: 10, requests_per_user: 1, concurrency: 10 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(tally.count("ISSUED"), 10);

    let patch = |spec: serde_json::Value| {
        let api = api.clone();
        async move { api.patch("flash", &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await }
    };
    // Raising the stock adds the difference to what remains.
    patch(json!({"stock": 120})).await?;
    wait_until("stock raised", Duration::from_secs(20), || async {
        Ok(api.get("flash").await?.status.and_then(|s| s.remaining) == Some(110))
    })
    .await?;
    // Lowering it below what was issued is refused, and the round keeps its stock.
    patch(json!({"stock": 5})).await?;
    wait_until("stock cut refused", Duration::from_secs(20), || async {
        Ok(condition(&api.get("flash").await?, "SpecAccepted") == Some(("False".into(), "StockBelowIssued".into())))
    })
    .await?;
    let meta = round_meta(&mut cluster.scope.redis().await?, &RoundKeys::new(&round)).await?.context("keys")?;
    assert_eq!((meta.stock, meta.remaining), (120, 110));
    // Moving the start of an open round is refused too.
    patch(json!({"stock": 120, "startTime": "2030-01-01T00:00:00Z"})).await?;
    wait_until("start move refused", Duration::from_secs(20), || async {
        Ok(condition(&api.get("flash").await?, "SpecAccepted") == Some(("False".into(), "StartTimeLocked".into())))
    })
    .await?;
    assert_eq!(api.get("flash").await?.status.map(|s| s.phase), Some(Phase::Live));

    api.delete("flash", &DeleteParams::default()).await?;
    wait_until("the event is gone", Duration::from_secs(30), || async { Ok(api.get_opt("flash").await?.is_none()) })
        .await?;
    consumer.stop().await?;
    issuer.stop().await?;
    operator.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backends_are_reported_and_retried() -> anyhow::Result<()> {
    let cluster = cluster("unreachable").await?;
    let dead: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dead-backends"},
        "stringData": {"REDIS_URL": "redis://127.0.0.1:1", "DATABASE_URL": cluster.scope.database_url, "KAFKA_BROKERS": "127.0.0.1:1"}
    }))?;
    Api::<Secret>::namespaced(cluster.client.clone(), &cluster.namespace).create(&PostParams::default(), &dead).await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let mut manifest = event("stranded", 10, Duration::from_secs(2), "1m")?;
    manifest.spec.backends = Some(couponrush_crds::BackendsRef { secret_ref: "dead-backends".into() });
    api.create(&PostParams::default(), &manifest).await?;
    wait_until("a BackendsUnavailable condition", Duration::from_secs(30), || async {
        let ce = api.get("stranded").await?;
        Ok(ce
            .status
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.reason == "BackendsUnavailable")))
    })
    .await?;
    let message = api.get("stranded").await?.status.and_then(|s| s.message).unwrap_or_default();
    assert!(message.contains("backends unavailable"), "{message}");
    // The operator keeps running and retrying (backoff), rather than crashing.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(operator.leads().await?, "the operator is still up");
    api.delete("stranded", &DeleteParams::default()).await?;
    operator.stop().await
}

/// Finding 2: deleting an event mid-round drains first. 300 coupons are admitted while
/// the consumer writes 30 rows a second; the event is deleted at once. The consumer
/// runs as long as its Deployment exists (as its pods would), and every 201 must be a
/// row when the event is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_event_mid_round_drains_every_admitted_coupon_first() -> anyhow::Result<()> {
    let cluster = cluster("drain").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let stock = 300;
    api.create(&PostParams::default(), &event("drain", stock, Duration::from_secs(4), "1m")?).await?;
    wait_for_phase(&api, "drain", Phase::Live, Duration::from_secs(30)).await?;
    let round = EventId::new(&cluster.namespace, "drain")?.round(1);
    let (issuer, scope) = start_issuer_as_configured(&cluster, "drain").await?;
    let mut consumer = scope.spawn_consumer_process(30)?;
    // The consumer's pods go when its Deployment goes.
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let consumer_gone = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            let gone = wait_until("the consumer Deployment to be deleted", Duration::from_secs(120), || async {
                Ok(deployments.get_opt("drain-consumer").await?.is_none())
            })
            .await;
            let _ = consumer.kill().await;
            gone
        })
    };
    let tally =
        Spike { users: stock as usize, requests_per_user: 1, concurrency: 32 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(tally.server_errors(), 0);
    assert_eq!(tally.issued.len(), stock as usize);
    let persisted_at_delete = db::count_coupons(&cluster.scope.pool().await?, &round).await?;
    assert!(persisted_at_delete < u64::from(stock), "the consumer is throttled: {persisted_at_delete} rows already");

    api.delete("drain", &DeleteParams::default()).await?;
    // The drain is visible while it lasts.
    wait_until("a Terminating condition", Duration::from_secs(15), || async {
        Ok(api
            .get_opt("drain")
            .await?
            .is_some_and(|ce| condition(&ce, "Terminating").is_some_and(|(s, _)| s == "True")))
    })
    .await?;
    wait_until("the event is gone", Duration::from_secs(90), || async { Ok(api.get_opt("drain").await?.is_none()) })
        .await?;
    consumer_gone.await??;
    check_sold_out(stock, &tally.issued, &tally.already, &rows(&cluster.scope.pool().await?, &round).await?)?;
    assert!(
        round_meta(&mut cluster.scope.redis().await?, &RoundKeys::new(&round)).await?.is_none(),
        "round keys removed after the drain"
    );
    issuer.stop().await?;
    operator.stop().await
}

/// Finding 2: an event whose backends are gone for good stays deletable: its Secret is
/// pointed at closed ports mid-Live (the shared backends keep running), and deleting it
/// finishes within a minute, with a Warning event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_backends_are_gone_is_deleted_within_a_minute() -> anyhow::Result<()> {
    let cluster = cluster("gone").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.create(&PostParams::default(), &event("gone", 10, Duration::from_secs(4), "1m")?).await?;
    wait_for_phase(&api, "gone", Phase::Live, Duration::from_secs(30)).await?;
    let closed = json!({"stringData": {
        "REDIS_URL": "redis://127.0.0.1:1",
        "DATABASE_URL": "mysql://couponrush:couponrush@127.0.0.1:1/couponrush",
        "KAFKA_BROKERS": "127.0.0.1:1",
    }});
    Api::<Secret>::namespaced(cluster.client.clone(), &cluster.namespace)
        .patch("couponrush-backends", &PatchParams::default(), &Patch::Merge(&closed))
        .await?;
    let started = std::time::Instant::now();
    api.delete("gone", &DeleteParams::default()).await?;
    wait_until("the event is gone", Duration::from_secs(60), || async { Ok(api.get_opt("gone").await?.is_none()) })
        .await?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "deleted with the backends gone");
    let warnings = warnings(&cluster, "gone").await?;
    assert!(warnings.iter().any(|r| r == "DrainAbandoned"), "a Warning event: {warnings:?}");
    operator.stop().await
}

/// Finding 3: a round whose Redis state vanishes mid-Live (FLUSHALL on this test's own
/// Redis) is never declared Completed and keeps its workloads; a RoundStateLost
/// condition and a Warning event say what happened. Once the round is recovered it runs
/// to its end, every coupon once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_whose_redis_state_is_flushed_is_never_completed() -> anyhow::Result<()> {
    let cluster = cluster("flushed").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.create(&PostParams::default(), &event("flushed", 100, Duration::from_secs(4), "1s")?).await?;
    wait_for_phase(&api, "flushed", Phase::Live, Duration::from_secs(30)).await?;
    let round = EventId::new(&cluster.namespace, "flushed")?.round(1);
    let (issuer, consumer) = start_workloads_as_configured(&cluster, "flushed").await?;
    let tally = Spike { users: 20, requests_per_user: 1, concurrency: 8 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(tally.issued.len(), 20);
    wait_until("20 issued reported", Duration::from_secs(20), || async {
        Ok(api.get("flushed").await?.status.and_then(|s| s.issued) == Some(20))
    })
    .await?;

    let mut redis = cluster.scope.redis().await?;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut redis).await?;
    wait_until("a RoundStateLost condition", Duration::from_secs(20), || async {
        Ok(condition(&api.get("flushed").await?, "RoundStateLost") == Some(("True".into(), "KeysGone".into())))
    })
    .await?;
    // Several passes later (one every 2 s; teardownAfter is 1 s) it still is not Completed.
    let watch_until = std::time::Instant::now() + Duration::from_secs(8);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    while std::time::Instant::now() < watch_until {
        let status = api.get("flushed").await?.status.context("status")?;
        assert_eq!(status.phase, Phase::Live, "{status:?}");
        assert_eq!(status.issued, Some(20), "the last counts stand");
        assert!(deployments.get_opt("flushed-issuer").await?.is_some(), "workloads kept");
        assert!(deployments.get_opt("flushed-consumer").await?.is_some(), "workloads kept");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(round_meta(&mut redis, &RoundKeys::new(&round)).await?.is_none(), "not re-warmed");
    let warnings = warnings(&cluster, "flushed").await?;
    assert!(warnings.iter().any(|r| r == "RoundStateLost"), "a Warning event: {warnings:?}");

    // The documented recovery (`couponrush-issuer recover`) rebuilds the round from MySQL
    // and the topic; the condition clears and the round runs to its end.
    let topic = couponrush_operator::resources::topic_name(&cluster.namespace, "flushed");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let pool = cluster.scope.pool().await?;
    let kafka = cluster.scope.env.kafka();
    let strategy = couponrush_core::event::Strategy::KafkaAsync;
    let recovered = recover_round(&mut redis, &pool, &kafka, &topic, &round, strategy, deadline).await?;
    assert_eq!((recovered.winners, recovered.seq, recovered.remaining), (20, 20, 80), "{recovered:?}");
    wait_until("RoundStateLost cleared", Duration::from_secs(20), || async {
        Ok(condition(&api.get("flushed").await?, "RoundStateLost").is_some_and(|(status, _)| status == "False"))
    })
    .await?;
    let rest = Spike { users: 200, requests_per_user: 1, concurrency: 8 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(rest.server_errors(), 0);
    let done = wait_for_phase(&api, "flushed", Phase::Completed, Duration::from_secs(60)).await?;
    let status = done.status.context("status")?;
    assert_eq!((status.issued, status.persisted, status.remaining), (Some(100), Some(100), Some(0)), "{status:?}");
    let winners: Vec<_> = tally.issued.iter().chain(&rest.issued).cloned().collect();
    check_sold_out(100, &winners, &rest.already, &rows(&pool, &round).await?)?;

    api.delete("flushed", &DeleteParams::default()).await?;
    wait_until("the event is gone", Duration::from_secs(60), || async { Ok(api.get_opt("flushed").await?.is_none()) })
        .await?;
    consumer.stop().await?;
    issuer.stop().await?;
    operator.stop().await
}

/// Finding 6: changing the strategy mid-round is refused, and the round still runs to
/// the end by its pinned strategy (counted where that strategy keeps its counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_strategy_mid_round_is_refused_and_the_round_completes() -> anyhow::Result<()> {
    let cluster = cluster("switch").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let stock = 20;
    api.create(&PostParams::default(), &event("switch", stock, Duration::from_secs(4), "1s")?).await?;
    wait_for_phase(&api, "switch", Phase::Live, Duration::from_secs(30)).await?;
    let round = EventId::new(&cluster.namespace, "switch")?.round(1);
    let (issuer, consumer) = start_workloads_as_configured(&cluster, "switch").await?;
    let first = Spike { users: 10, requests_per_user: 1, concurrency: 10 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(first.issued.len(), 10);

    api.patch("switch", &PatchParams::default(), &Patch::Merge(json!({"spec": {"strategy": "db-lock"}}))).await?;
    wait_until("the strategy change refused", Duration::from_secs(20), || async {
        Ok(condition(&api.get("switch").await?, "SpecAccepted") == Some(("False".into(), "StrategyLocked".into())))
    })
    .await?;
    let second = Spike { users: 40, requests_per_user: 1, concurrency: 10 }.run(&[issuer.issue_url(&round)]).await?;
    assert_eq!(second.server_errors(), 0);
    let done = wait_for_phase(&api, "switch", Phase::Completed, Duration::from_secs(60)).await?;
    let status = done.status.context("status")?;
    assert_eq!((status.issued, status.persisted, status.remaining), (Some(stock), Some(stock), Some(0)));
    let winners: Vec<_> = first.issued.iter().chain(&second.issued).cloned().collect();
    check_sold_out(stock, &winners, &second.already, &rows(&cluster.scope.pool().await?, &round).await?)?;
    consumer.stop().await?;
    issuer.stop().await?;
    operator.stop().await
}

/// Finding 8: while a round is live and coupons trickle out (every pass sees new counts
/// and writes the status), the operator runs about one pass per count interval, not one
/// per status write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_per_minute_stay_bounded_while_live() -> anyhow::Result<()> {
    let cluster = cluster("pace").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    api.create(&PostParams::default(), &event("pace", 10_000, Duration::from_secs(4), "1m")?).await?;
    wait_for_phase(&api, "pace", Phase::Live, Duration::from_secs(30)).await?;
    let round = EventId::new(&cluster.namespace, "pace")?.round(1);
    let (issuer, consumer) = start_workloads_as_configured(&cluster, "pace").await?;
    let client = reqwest::Client::new();
    let url = issuer.issue_url(&round);
    let before = reconciles(&operator).await?;
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut user = 0;
    while started.elapsed() < Duration::from_secs(30) {
        tick.tick().await;
        user += 1;
        let answer = client.post(&url).bearer_auth(token(&format!("trickle-{user}"))).send().await?;
        assert_eq!(answer.status().as_u16(), 201);
    }
    let passes = reconciles(&operator).await? - before;
    let per_minute = passes as f64 * 60.0 / started.elapsed().as_secs_f64();
    println!("reconciles while live: {passes} in {:?} = {per_minute:.1} per minute", started.elapsed());
    // One pass per 2 s count interval is 30 a minute; allow the odd extra.
    assert!(per_minute <= 45.0, "{per_minute:.1} reconciles per minute while live");
    let status = api.get("pace").await?.status.context("status")?;
    assert!(status.issued.is_some_and(|n| n >= 500), "counts kept up: {status:?}");

    api.delete("pace", &DeleteParams::default()).await?;
    wait_until("the event is gone", Duration::from_secs(60), || async { Ok(api.get_opt("pace").await?.is_none()) })
        .await?;
    consumer.stop().await?;
    issuer.stop().await?;
    operator.stop().await
}

/// Issue 13: `spec.paused` is the emergency stop. A trickle of new users runs through
/// the whole test; once the first answer says PAUSED no request is admitted until the
/// pause is lifted (every answer in between is 503 PAUSED with Retry-After, and Redis'
/// winners do not move), the status and an Event show it, and resuming continues the
/// same round to an exact sell-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_live_round_stops_admissions_and_resuming_continues_it() -> anyhow::Result<()> {
    let cluster = cluster("pause").await?;
    let operator = start_operator(&cluster.namespace, "operator-a").await?;
    let api: Api<CouponEvent> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let stock = 120;
    api.create(&PostParams::default(), &event("pause", stock, Duration::from_secs(4), "1s")?).await?;
    wait_for_phase(&api, "pause", Phase::Live, Duration::from_secs(30)).await?;
    let round = EventId::new(&cluster.namespace, "pause")?.round(1);
    let (issuer, consumer) = start_workloads_as_configured(&cluster, "pause").await?;
    let keys = RoundKeys::new(&round);

    // The trickle: one new user every 20 ms until the round is sold out (bounded).
    // (HTTP code, status word, Retry-After, user) of every answer, in order.
    type Answer = (u16, String, Option<String>, String);
    let answers: Arc<Mutex<Vec<Answer>>> = Arc::default();
    let trickle = {
        let (url, answers) = (issuer.issue_url(&round), answers.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in 0..6_000 {
                let user = format!("trickle-{n}");
                let response = client.post(&url).bearer_auth(token(&user)).send().await?;
                let code = response.status().as_u16();
                let retry_after =
                    response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
                let body: serde_json::Value = response.json().await?;
                let status = body["status"].as_str().unwrap_or_default().to_owned();
                answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push((
                    code,
                    status.clone(),
                    retry_after,
                    user,
                ));
                if status == "SOLD_OUT" {
                    return anyhow::Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::bail!("the round never sold out")
        })
    };
    let count = |status: &'static str| {
        let answers = answers.clone();
        move || answers.lock().map(|a| a.iter().filter(|(_, s, _, _)| s == status).count()).unwrap_or(0)
    };
    let issued = count("ISSUED");
    let paused = count("PAUSED");
    wait_until("some coupons issued", Duration::from_secs(20), || async { Ok(issued() >= 20) }).await?;

    let pause = |on: bool| {
        let api = api.clone();
        async move {
            let patch = Patch::Merge(json!({"spec": {"paused": on}}));
            api.patch("pause", &PatchParams::default(), &patch).await
        }
    };
    pause(true).await?;
    wait_until("a Paused condition", Duration::from_secs(15), || async {
        Ok(condition(&api.get("pause").await?, "Paused") == Some(("True".into(), "PausedBySpec".into())))
    })
    .await?;
    wait_until("the issuer to answer PAUSED", Duration::from_secs(5), || async { Ok(paused() >= 1) }).await?;
    let mut redis = cluster.scope.redis().await?;
    let winners_paused: u64 = redis.hlen(&keys.winners).await?;
    // Two seconds of requests while paused: nothing moves.
    let before = answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let winners_later: u64 = redis.hlen(&keys.winners).await?;
    assert_eq!(winners_later, winners_paused, "admitted while paused");
    let state: serde_json::Value =
        reqwest::get(issuer.issue_url(&round).trim_end_matches("/issue")).await?.json().await?;
    assert_eq!(state["state"], "PAUSED", "{state}");
    let status = api.get("pause").await?.status.context("status")?;
    assert_eq!(status.phase, Phase::Live, "paused is not a phase: the round stays Live");

    pause(false).await?;
    wait_until("the Paused condition cleared", Duration::from_secs(15), || async {
        Ok(condition(&api.get("pause").await?, "Paused").is_some_and(|(status, _)| status == "False"))
    })
    .await?;
    tokio::time::timeout(Duration::from_secs(120), trickle).await.context("trickle")???;
    let answers = answers.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    // Between the first PAUSED and the last one, nothing but PAUSED, each with Retry-After.
    let first = answers.iter().position(|(_, s, _, _)| s == "PAUSED").context("a PAUSED answer")?;
    let last = answers.iter().rposition(|(_, s, _, _)| s == "PAUSED").context("a PAUSED answer")?;
    assert!(last > before + 20, "the two paused seconds were answered PAUSED ({first}..={last}, {before})");
    for (code, status, retry_after, user) in &answers[first..=last] {
        assert_eq!((code, status.as_str()), (&503, "PAUSED"), "{user} while paused");
        assert_eq!(retry_after.as_deref(), Some("5"), "{user}: Retry-After");
    }
    let winners: Vec<(String, u32)> = {
        let mut redis = cluster.scope.redis().await?;
        let all: std::collections::HashMap<String, u32> = redis.hgetall(&keys.winners).await?;
        all.into_iter().collect()
    };
    assert_eq!(answers.iter().filter(|(_, s, _, _)| s == "ISSUED").count(), stock as usize);
    let done = wait_for_phase(&api, "pause", Phase::Completed, Duration::from_secs(60)).await?;
    let status = done.status.context("status")?;
    assert_eq!((status.issued, status.persisted, status.remaining), (Some(stock), Some(stock), Some(0)));
    check_sold_out(stock, &winners, &[], &rows(&cluster.scope.pool().await?, &round).await?)?;
    let reasons = all_event_reasons(&cluster, "pause").await?;
    assert!(reasons.iter().any(|r| r == "Paused") && reasons.iter().any(|r| r == "Resumed"), "{reasons:?}");
    consumer.stop().await?;
    issuer.stop().await?;
    operator.stop().await
}
