//! The reconcile loop. Each pass: dereference (backends Secret, connections) →
//! validate (plan the round) → observe (Redis and MySQL counts) → decide the phase
//! ([`crate::phase`], no API calls) → apply what the phase needs (topic, schema,
//! pre-warm, workloads; reconciliation while draining; teardown when completed) →
//! write the status if it changed, and an Event per transition. The pure parts live in
//! [`crate::plan`], [`crate::phase`], [`crate::status`], [`crate::drain`] and
//! [`crate::pace`]; this module is the orchestration.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use couponrush_core::event::{EventId, RoundId, RoundSpec, Strategy};
use couponrush_core::prewarm::{self, PrewarmError};
use couponrush_core::round_store::meta::{
    RoundTotals, count_winners, current_round, round_buckets, round_totals, set_paused,
};
use couponrush_core::{db, reconcile};
use couponrush_crds::{CouponEvent, CouponEventStatus, Phase};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backends::{ClientCache, Clients};
use crate::clock::Clock;
use crate::config::Config;
use crate::drain::{self, Drain, GiveUp, Step};
use crate::error::{Error, chain};
use crate::metrics::{KindLabels, Metrics, PhaseLabels};
use crate::pace::{Fingerprint, Pace};
use crate::phase::{Decision, IDLE, Observed, RoundState, decide, round_state};
use crate::plan::{plan_round, start_moved, timing};
use crate::resources::{self, WorkloadInputs, topic_name, workload_name};
use crate::sizing::{redis_shard_overload, size};
use crate::status::{
    DEGRADED, Inputs, PAUSED, ROUND_STATE_LOST, TERMINATING, is_true, next_status, phase_entered, set_condition,
};

pub const FINALIZER: &str = "couponrush.io/cleanup";
const MANAGER: &str = "couponrush-operator";

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub clients: ClientCache,
    pub metrics: Metrics,
    /// Where *now* comes from (the system clock outside tests).
    pub clock: Clock,
    /// Consecutive failures per event, for backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// When each event's next pass is due (see [`crate::pace`]).
    pace: Pace,
    /// Deletions draining, by event.
    drains: Mutex<HashMap<String, Drain>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Metrics, clock: Clock) -> Self {
        let reporter = Reporter { controller: MANAGER.to_owned(), instance: Some(config.identity.clone()) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            clients: ClientCache::default(),
            metrics,
            clock,
            failures: Mutex::new(HashMap::new()),
            pace: Pace::default(),
            drains: Mutex::new(HashMap::new()),
        }
    }
}

/// Runs the controllers until `shutdown`: one over every namespace, or one per watched
/// namespace ([`Config::watch_namespaces`]), so that a namespaced operator never lists or
/// watches anything cluster-wide. They share the [`Context`]: its per-event state is
/// keyed by namespace and name.
pub async fn run(context: Arc<Context>, shutdown: tokio_util::sync::CancellationToken) {
    let scopes: Vec<Option<String>> = if context.config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        context.config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    futures::future::join_all(
        scopes.into_iter().map(|namespace| run_scope(context.clone(), namespace, shutdown.clone())),
    )
    .await;
}

/// One controller: the CouponEvents of `namespace` (all namespaces for `None`) and the
/// Deployments it made there.
async fn run_scope(context: Arc<Context>, namespace: Option<String>, shutdown: tokio_util::sync::CancellationToken) {
    let client = context.client.clone();
    let (events, deployments): (Api<CouponEvent>, Api<Deployment>) = match &namespace {
        Some(namespace) => (Api::namespaced(client.clone(), namespace), Api::namespaced(client, namespace)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    tracing::info!(namespace = namespace.as_deref().unwrap_or("(all)"), "watching CouponEvents");
    let clock_moves = context.clock.moves();
    Controller::new(events, watcher::Config::default().any_semantic())
        .owns(deployments, watcher::Config::default().labels("app.kubernetes.io/part-of=couponrush"))
        .reconcile_all_on(clock_moves)
        .graceful_shutdown_on(async move { shutdown.cancelled().await })
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %chain(&error), "reconcile stream item");
            }
        })
        .await;
}

async fn reconcile(ce: Arc<CouponEvent>, context: Arc<Context>) -> Result<Action, Error> {
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let key = format!("{namespace}/{}", ce.name_any());
    let fingerprint = Fingerprint {
        generation: ce.metadata.generation,
        deleting: ce.metadata.deletion_timestamp.is_some(),
        finalized: ce.finalizers().iter().any(|f| f == FINALIZER),
        clock_moves: context.clock.moves_so_far(),
    };
    let started = Instant::now();
    if let Some(wait) = context.pace.wait(&key, &fingerprint, started).filter(|wait| *wait <= DEFER_AT_MOST) {
        // A watch event (our own status write, a Deployment's rollout) for an event whose
        // next pass is already scheduled soon: the kube scheduler keeps the earlier of the
        // two runs, so asking again for the same instant changes nothing. Only short
        // waits are deferred: that is the status-write storm of a live round, and an idle
        // event gets no watch events to defer anyway.
        context.metrics.reconciles_deferred.inc();
        tracing::debug!(event = %key, wait_ms = wait.as_millis(), "pass deferred: its scheduled run is due later");
        return Ok(Action::requeue(wait));
    }
    context.metrics.reconciles.inc();
    let api: Api<CouponEvent> = Api::namespaced(context.client.clone(), &namespace);
    let draining =
        if fingerprint.deleting && fingerprint.finalized { drain_before_delete(&ce, &context).await? } else { None };
    // The pass' own idea of when to look again (the finalizer helper hides it in an Action).
    let scheduled = Mutex::new(NEVER);
    let result = match draining {
        Some(next) => Ok(next),
        None => finalizer(&api, FINALIZER, ce, |event| async {
            match event {
                finalizer::Event::Apply(ce) => {
                    let next = apply_pass(&ce, &context).await?;
                    if let Ok(mut scheduled) = scheduled.lock() {
                        *scheduled = next;
                    }
                    Ok(action_after(next))
                }
                finalizer::Event::Cleanup(ce) => cleanup(&ce, &context).await,
            }
        })
        .await
        .map(|_| scheduled.lock().map_or(NEVER, |next| *next))
        .map_err(|error| Error::Finalizer(Box::new(error))),
    };
    let next = result?;
    tracing::debug!(event = %key, next_ms = next.as_millis(), "pass done");
    if let Ok(mut failures) = context.failures.lock() {
        failures.remove(&key);
    }
    if next == NEVER {
        // Deleted (or waiting for a change only): nothing is scheduled.
        context.pace.forget(&key);
    } else {
        context.pace.done(&key, fingerprint, started, next);
    }
    Ok(action_after(next))
}

fn action_after(next: Duration) -> Action {
    if next == NEVER { Action::await_change() } else { Action::requeue(next) }
}

/// The longest wait a watch-triggered pass is deferred by (one count interval).
const DEFER_AT_MOST: Duration = crate::phase::COUNT_EVERY;

/// "Only when something changes", as a requeue duration.
const NEVER: Duration = Duration::MAX;

fn error_policy(ce: Arc<CouponEvent>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.failures.get_or_create(&KindLabels { kind: error.metric_label() }).inc();
    let key = format!("{}/{}", ce.namespace().unwrap_or_default(), ce.name_any());
    context.pace.forget(&key);
    let attempts = context
        .failures
        .lock()
        .map(|mut failures| {
            let n = failures.entry(key).or_insert(0);
            *n += 1;
            *n
        })
        .unwrap_or(1);
    // 1 s, 2 s, 4 s … up to 5 minutes: never a tight loop against a dead backend.
    let backoff = Duration::from_secs(1u64 << attempts.min(8).saturating_sub(1)).min(Duration::from_secs(300));
    tracing::warn!(event = %ce.name_any(), error = %chain(error), retry_in_s = backoff.as_secs(), "reconcile failed");
    Action::requeue(backoff)
}

fn backends_secret(ce: &CouponEvent, config: &Config) -> String {
    ce.spec.backends.as_ref().map_or_else(|| config.default_backends_secret.clone(), |b| b.secret_ref.clone())
}

async fn connect(ce: &CouponEvent, context: &Context) -> Result<Arc<Clients>, Error> {
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let endpoints =
        crate::backends::endpoints(&context.client, &namespace, &backends_secret(ce, &context.config)).await?;
    context.clients.get(&endpoints).await
}

/// The strategy the round runs with: the one it was pre-warmed with (pinned in Redis),
/// whatever the spec says now; the spec's before the round is pre-warmed.
async fn pinned_strategy(clients: &Clients, round: &RoundId, spec: Strategy) -> Result<Option<Strategy>, Error> {
    let mut redis = clients.redis.clone();
    let current = current_round(&mut redis, &round.event).await.map_err(Error::ObserveRedis)?;
    Ok(current.filter(|(current, _)| current == round).map(|(_, strategy)| strategy).filter(|s| *s != spec))
}

/// What Redis and MySQL hold for the round (summed over its stock buckets); `None`
/// before it was pre-warmed.
async fn observe(clients: &Clients, round: &RoundId, strategy: Strategy) -> Result<Option<Observed>, Error> {
    let mut redis = clients.redis.clone();
    let Some(RoundTotals { meta, missing }) = round_totals(&mut redis, round).await.map_err(Error::ObserveRedis)?
    else {
        return Ok(None);
    };
    let persisted =
        u32::try_from(db::count_coupons(&clients.db, round).await.map_err(Error::ObserveDatabase)?).unwrap_or(u32::MAX);
    let observed = if strategy.counts_in_redis() {
        let issued = count_winners(&mut redis, round).await.map_err(Error::ObserveRedis)?;
        let issued = u32::try_from(issued).unwrap_or(u32::MAX);
        Observed { remaining: meta.remaining, issued, persisted, admitted: meta.seq, missing_buckets: missing }
    } else {
        match db::round_row(&clients.db, round).await.map_err(Error::ObserveDatabase)? {
            Some(row) => Observed {
                remaining: row.stock.saturating_sub(row.issued),
                issued: row.issued,
                persisted,
                admitted: row.issued,
                missing_buckets: 0,
            },
            None => return Ok(None),
        }
    };
    Ok(Some(observed))
}

/// One pass over a live (not deleted) event; returns when to look again.
async fn apply_pass(ce: &CouponEvent, context: &Context) -> Result<Duration, Error> {
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let name = ce.name_any();
    let generation = ce.metadata.generation;
    let mut previous = ce.status.clone().unwrap_or_default();
    let now = context.clock.now();
    let mut refusals: Vec<(&'static str, String)> = Vec::new();

    let plan = match timing(&ce.spec).and_then(|timing| Ok((timing, plan_round(&ce.spec, &previous, now)?))) {
        Ok(planned) => planned,
        Err(spec_error) => {
            let mut status = previous.clone();
            status.phase = Phase::Failed;
            status.message = Some(spec_error.to_string());
            let message = spec_error.to_string();
            set_condition(&mut status.conditions, generation, "SpecAccepted", false, "InvalidSpec", &message, now);
            set_condition(&mut status.conditions, generation, DEGRADED, true, "InvalidSpec", &message, now);
            write_status(ce, context, &previous, status).await?;
            return Ok(NEVER);
        }
    };
    let (timing, mut plan) = plan;
    // A round that opened keeps its start: moving it would change the rules mid-game.
    let opened =
        previous.round == Some(plan.round) && matches!(previous.phase, Phase::Live | Phase::SoldOut | Phase::Draining);
    if let Some(locked) = previous.round_starts_at.as_ref().filter(|_| opened)
        && start_moved(locked.0, plan.starts_at)
    {
        refusals.push((
            "StartTimeLocked",
            "startTime cannot change after the round opened; the original start stands".to_owned(),
        ));
        plan.starts_at = locked.0;
    }

    let clients = match connect(ce, context).await {
        Ok(clients) => clients,
        Err(error) => {
            let mut status = previous.clone();
            let message = chain(&error);
            set_condition(&mut status.conditions, generation, "Ready", false, "BackendsUnavailable", &message, now);
            set_condition(&mut status.conditions, generation, DEGRADED, true, "BackendsUnavailable", &message, now);
            status.message = Some(format!("backends unavailable: {message}"));
            write_status(ce, context, &previous, status).await?;
            return Err(error);
        }
    };
    let event = EventId::new(&namespace, &name).map_err(|_| Error::NoNamespace)?;
    let round = event.round(plan.round);
    // Everything about a running round comes from its own pinned settings.
    let other_strategy = pinned_strategy(&clients, &round, ce.spec.strategy).await?;
    let strategy = other_strategy.unwrap_or(ce.spec.strategy);
    let mut observed = observe(&clients, &round, strategy).await?;
    let mut state = round_state(&plan, &previous, observed);
    if state != RoundState::Intact {
        // This pass' status may predate our own teardown (which reports Completed before
        // it removes anything): judge against the stored status before alarming anyone.
        let api: Api<CouponEvent> = Api::namespaced(context.client.clone(), &namespace);
        let fresh = api.get_status(&name).await.map_err(Error::PatchStatus)?.status.unwrap_or_default();
        if fresh != previous {
            previous = fresh;
            observed = observe(&clients, &round, strategy).await?;
            state = round_state(&plan, &previous, observed);
        }
    }
    let decision: Decision = decide(&plan, &timing, &previous, observed, now);
    let sizing = size(&ce.spec.capacity);
    let topic = topic_name(&namespace, &name);
    if let Some(pinned) = other_strategy.filter(|_| decision.phase != Phase::Warming) {
        refusals.push(("StrategyLocked", format!("strategy cannot change after the round opened; {pinned} stands")));
    }

    match (decision.phase, state) {
        // A lost round is left exactly as it is: no pre-warm (fresh keys would hand out
        // its seqs again), no teardown (coupons are in flight), no re-publish (the
        // winners are gone). The status and a Warning event say so.
        (_, RoundState::Lost(_)) => {}
        (Phase::Warming | Phase::Live, RoundState::Intact) => {
            clients.ensure_topic_once(&topic, sizing.partitions).await?;
            clients.migrate_once().await?;
            let mut redis = clients.redis.clone();
            // A pre-warmed round keeps its stock buckets (its seqs and users are spread by
            // them); a change applies from the next round.
            let wanted = ce.spec.capacity.stock_buckets;
            let buckets = match round_buckets(&mut redis, &round).await.map_err(Error::ObserveRedis)? {
                Some(pinned) if pinned != wanted => {
                    refusals.push((
                        "StockBucketsLocked",
                        format!("stockBuckets cannot change for a pre-warmed round; its {pinned} stand"),
                    ));
                    pinned
                }
                _ => wanted,
            };
            let spec = RoundSpec {
                stock: ce.spec.stock,
                per_user: ce.spec.per_user,
                start_ms: plan.starts_at.as_millisecond(),
                end_ms: plan.ends_at.map(|t| t.as_millisecond()),
                // Before the round opens the strategy may still change; after, it is pinned.
                strategy: if decision.phase == Phase::Warming { ce.spec.strategy } else { strategy },
                buckets,
            };
            match prewarm::prewarm(&mut redis, &clients.db, &round, &spec).await {
                Ok(_) => {}
                Err(error @ PrewarmError::RoundAlreadyRan(_)) => {
                    let mut status = previous.clone();
                    status.phase = Phase::Failed;
                    status.message = Some(error.to_string());
                    let message = error.to_string();
                    let conditions = &mut status.conditions;
                    set_condition(conditions, generation, "SpecAccepted", false, "RoundAlreadyRan", &message, now);
                    set_condition(conditions, generation, DEGRADED, true, "RoundAlreadyRan", &message, now);
                    write_status(ce, context, &previous, status).await?;
                    return Ok(NEVER);
                }
                Err(PrewarmError::StockBelowIssued { requested, issued }) => refusals.push((
                    "StockBelowIssued",
                    format!(
                        "stock {requested} is below the {issued} coupons already issued; the round keeps its stock"
                    ),
                )),
                Err(error) => {
                    // The database may have been replaced under us (restored, recreated):
                    // check the schema and the topic again before the retry.
                    clients.schema_unverified();
                    return Err(Error::Prewarm(error));
                }
            }
            // Every pass, so a flag lost with Redis' state is written again too.
            set_paused(&mut redis, &round, ce.spec.paused).await.map_err(Error::ObserveRedis)?;
            let inputs = WorkloadInputs {
                issuer_image: context.config.issuer_image.clone(),
                consumer_image: context.config.consumer_image.clone(),
                backends_secret: backends_secret(ce, &context.config),
                topic: topic.clone(),
                sizing,
            };
            apply_workloads(ce, context, &namespace, &inputs).await?;
        }
        (Phase::Draining, RoundState::Intact) => {
            if let Some(observed) = observed.filter(|o| o.persisted < o.issued) {
                let stalled = previous
                    .sold_out_at
                    .as_ref()
                    .or(previous.started_at.as_ref())
                    .is_some_and(|t| now.duration_since(t.0) > jiff::SignedDuration::from_secs(10));
                if stalled && strategy.persists_through_kafka() {
                    let report = republish(&clients, &topic, &round).await?;
                    tracing::info!(%round, issued = observed.issued, persisted = observed.persisted, republished = report.republished, "draining: reconciled");
                }
            }
        }
        (Phase::Scheduled, RoundState::Intact) if previous.phase == Phase::Completed => {
            // The pass after a completed round: make sure its teardown finished (it may
            // have failed after Completed was written).
            if let Some(last) = previous.round.filter(|last| *last != plan.round) {
                teardown(context, &clients, &namespace, &name, &event.round(last)).await?;
            }
        }
        (Phase::Scheduled | Phase::SoldOut | Phase::Failed | Phase::Completed, RoundState::Intact) => {}
    }

    let status = next_status(&Inputs {
        generation,
        previous: &previous,
        plan: &plan,
        decision,
        observed,
        state,
        refusals: &refusals,
        paused: ce.spec.paused,
        now,
    });
    if is_true(&status, PAUSED) != is_true(&previous, PAUSED) {
        let (reason, note) = if is_true(&status, PAUSED) {
            ("Paused", "admissions stopped by spec.paused: issuers answer 503 PAUSED")
        } else {
            ("Resumed", "admissions continue the same round")
        };
        publish(context, ce, EventType::Normal, reason, Some(note.to_owned())).await;
    }
    if status.phase != previous.phase {
        let reason = format!("{:?}", status.phase);
        let note = status.message.clone();
        publish(context, ce, EventType::Normal, &reason, note).await;
        if let Some(entered) = phase_entered(&previous) {
            let seconds = now.duration_since(entered).as_secs_f64().max(0.0);
            context
                .metrics
                .phase_seconds
                .get_or_create(&PhaseLabels { phase: format!("{:?}", previous.phase) })
                .observe(seconds);
        }
    }
    // Said once per round, as it starts warming: nothing the operator does can fix it.
    if status.phase == Phase::Warming
        && previous.phase != Phase::Warming
        && let Some(warning) =
            redis_shard_overload(ce.spec.capacity.expected_peak_rps, ce.spec.stock, ce.spec.capacity.stock_buckets)
    {
        tracing::warn!(%round, "{warning}");
        publish(context, ce, EventType::Warning, "RedisShardOverloaded", Some(warning)).await;
    }
    if let Some(reason) = state.lost_reason()
        && !is_true(&previous, ROUND_STATE_LOST)
    {
        tracing::error!(%round, reason, "the round's Redis state is lost; the round is held as it was");
        publish(context, ce, EventType::Warning, ROUND_STATE_LOST, status.message.clone()).await;
    }
    for (reason, message) in &refusals {
        publish(context, ce, EventType::Warning, reason, Some(message.clone())).await;
    }
    context.metrics.events.record(&namespace, &name, ce.spec.stock, &status, ce.spec.paused);
    write_status(ce, context, &previous, status).await?;
    // Completed is on record before anything is removed: a pass that finds the keys gone
    // then knows why (and a failed teardown is retried by the next pass).
    // (Again while its keys are still there: a teardown that failed half-way.)
    if decision.phase == Phase::Completed && (previous.phase != Phase::Completed || observed.is_some()) {
        teardown(context, &clients, &namespace, &name, &round).await?;
    }
    if decision.phase == Phase::Completed && ce.spec.schedule.is_none() {
        return Ok(IDLE);
    }
    Ok(decision.requeue.max(Duration::from_millis(200)))
}

async fn republish(clients: &Clients, topic: &str, round: &RoundId) -> Result<reconcile::ReconcileReport, Error> {
    let publisher = clients.publisher(topic)?;
    let mut redis = clients.redis.clone();
    reconcile::reconcile_round(&mut redis, &clients.db, &publisher, round).await.map_err(Error::ReconcileCoupons)
}

/// Removes a completed round's workloads and its Redis keys and stock row.
async fn teardown(
    context: &Context,
    clients: &Clients,
    namespace: &str,
    name: &str,
    round: &RoundId,
) -> Result<(), Error> {
    delete_workloads(context, namespace, name).await?;
    let mut redis = clients.redis.clone();
    prewarm::remove_round(&mut redis, &clients.db, round).await.map_err(Error::Prewarm)
}

/// Writes the status only when it changed, so a status write never triggers a storm.
/// The patch names every status field, with `null` for the empty ones, so that what a
/// new round leaves empty is cleared on the server too.
async fn write_status(
    ce: &CouponEvent,
    context: &Context,
    previous: &CouponEventStatus,
    status: CouponEventStatus,
) -> Result<(), Error> {
    if *previous == status {
        return Ok(());
    }
    let api: Api<CouponEvent> = Api::namespaced(context.client.clone(), &ce.namespace().ok_or(Error::NoNamespace)?);
    let patch = serde_json::json!({ "status": status.merge_patch().map_err(Error::EncodeStatus)? });
    api.patch_status(&ce.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::PatchStatus)?;
    Ok(())
}

async fn publish(context: &Context, ce: &CouponEvent, type_: EventType, reason: &str, note: Option<String>) {
    let event = Event { type_, reason: reason.to_owned(), note, action: "Reconcile".to_owned(), secondary: None };
    if let Err(error) = context.recorder.publish(&event, &ce.object_ref(&())).await {
        tracing::debug!(%error, "publishing an Event failed");
    }
}

async fn apply_one<K>(client: &Client, namespace: &str, object: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object))
        .await
        .map_err(|source| Error::ApplyWorkload { kind: <K as k8s_openapi::Resource>::KIND, name, source })?;
    Ok(())
}

async fn apply_workloads(
    ce: &CouponEvent,
    context: &Context,
    namespace: &str,
    inputs: &WorkloadInputs,
) -> Result<(), Error> {
    let client = &context.client;
    apply_one(client, namespace, &resources::issuer_deployment(ce, inputs)).await?;
    apply_one(client, namespace, &resources::consumer_deployment(ce, inputs)).await?;
    apply_one(client, namespace, &resources::issuer_service(ce)).await?;
    apply_one(client, namespace, &resources::issuer_disruption_budget(ce)).await?;
    Ok(())
}

async fn delete_one<K>(client: &Client, namespace: &str, name: &str) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(client.clone(), namespace).delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => {
            Err(Error::DeleteWorkload { kind: <K as k8s_openapi::Resource>::KIND, name: name.to_owned(), source })
        }
    }
}

async fn delete_workloads(context: &Context, namespace: &str, event: &str) -> Result<(), Error> {
    let client = &context.client;
    let issuer = workload_name(event, resources::ISSUER);
    delete_one::<Deployment>(client, namespace, &issuer).await?;
    delete_one::<Deployment>(client, namespace, &workload_name(event, resources::CONSUMER)).await?;
    delete_one::<Service>(client, namespace, &issuer).await?;
    delete_one::<PodDisruptionBudget>(client, namespace, &issuer).await?;
    Ok(())
}

/// Deleting an event whose round may still have coupons on their way to MySQL: stop
/// admitting (the issuer goes first), then wait for the drain ([`crate::drain`] has the
/// policy). Returns when to look again, or `None` once the finalizer may clean up.
async fn drain_before_delete(ce: &CouponEvent, context: &Context) -> Result<Option<Duration>, Error> {
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let name = ce.name_any();
    let key = format!("{namespace}/{name}");
    let Some(number) = ce.status.as_ref().and_then(|s| s.round) else {
        return Ok(None);
    };
    let round = EventId::new(&namespace, &name).map_err(|_| Error::NoNamespace)?.round(number);
    let client = &context.client;
    let issuer = workload_name(&name, resources::ISSUER);
    delete_one::<Deployment>(client, &namespace, &issuer).await?;
    delete_one::<Service>(client, &namespace, &issuer).await?;
    delete_one::<PodDisruptionBudget>(client, &namespace, &issuer).await?;

    let look = async {
        let clients = connect(ce, context).await?;
        let strategy = pinned_strategy(&clients, &round, ce.spec.strategy).await?.unwrap_or(ce.spec.strategy);
        let observed = observe(&clients, &round, strategy).await?;
        Ok::<_, Error>((clients, strategy, observed))
    };
    let mut secret_gone = false;
    let looked = match tokio::time::timeout(BACKEND_CALL, look).await {
        Ok(Ok(looked)) => Ok(looked),
        Ok(Err(error)) => {
            // No Secret (a namespace being deleted removes it too): nothing can be reached.
            secret_gone = matches!(&error, Error::BackendsSecretKey { .. })
                || matches!(&error, Error::ReadBackendsSecret { source: kube::Error::Api(status), .. } if status.code == 404);
            Err(chain(&error))
        }
        Err(_) => Err("the backends did not answer in time".to_owned()),
    };
    if let Err(error) = &looked {
        tracing::warn!(event = %key, %error, "deleting: backends unreachable");
    }
    let step = {
        let mut drains = context.drains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let drain = drains.entry(key.clone()).or_insert_with(|| Drain::new(Instant::now()));
        let seen = looked.as_ref().map(|(_, _, observed)| *observed).map_err(|_| ());
        if secret_gone { Step::GiveUp(GiveUp::SecretGone) } else { drain.step(seen, Instant::now()) }
    };
    let (message, give_up) = match step {
        Step::Done => (None, None),
        Step::Wait { republish: again } => {
            if let Ok((clients, strategy, Some(observed))) = &looked {
                if again && strategy.persists_through_kafka() {
                    let topic = topic_name(&namespace, &name);
                    match republish(clients, &topic, &round).await {
                        Ok(report) => {
                            tracing::info!(%round, republished = report.republished, "deleting: re-published missing coupons")
                        }
                        Err(error) => tracing::warn!(%round, error = %chain(&error), "deleting: re-publishing failed"),
                    }
                }
                (
                    Some(format!(
                        "waiting for {} of {} coupons to reach MySQL before the round is removed",
                        observed.issued.saturating_sub(observed.persisted),
                        observed.issued
                    )),
                    None,
                )
            } else {
                (Some("the backends are unreachable; waiting before giving up".to_owned()), None)
            }
        }
        Step::GiveUp(reason) => {
            let note = match reason {
                GiveUp::SecretGone => format!(
                    "the backends Secret {} is gone; deleting without draining, the round's Redis keys are left behind",
                    backends_secret(ce, &context.config)
                ),
                GiveUp::Unreachable => format!(
                    "the backends stayed unreachable for {} s; deleting without draining, the round's Redis keys are left behind",
                    drain::UNREACHABLE_LIMIT.as_secs()
                ),
                GiveUp::Stalled { issued, persisted } | GiveUp::Deadline { issued, persisted } => format!(
                    "gave up draining ({reason:?}): {} of {issued} admitted coupons are not in MySQL; the Kafka topic still holds them",
                    issued.saturating_sub(persisted)
                ),
            };
            (None, Some(note))
        }
    };
    if let Some(message) = message {
        let previous = ce.status.clone().unwrap_or_default();
        let mut status = previous.clone();
        set_condition(
            &mut status.conditions,
            ce.metadata.generation,
            TERMINATING,
            true,
            "Draining",
            &message,
            context.clock.now(),
        );
        status.message = Some(message);
        write_status(ce, context, &previous, status).await?;
        return Ok(Some(drain::LOOK_EVERY));
    }
    if let Ok(mut drains) = context.drains.lock() {
        drains.remove(&key);
    }
    if let Some(note) = give_up {
        tracing::error!(event = %key, note, "deleting without a complete drain");
        publish(context, ce, EventType::Warning, "DrainAbandoned", Some(note)).await;
    }
    Ok(None)
}

/// How long one look at the backends may take while deleting.
const BACKEND_CALL: Duration = Duration::from_secs(10);

/// Deleting a CouponEvent, once drained: workloads (owner references would too), the
/// round's Redis keys and MySQL stock row. Coupon rows stay: they are the record. Never
/// blocks the deletion on the backends: what cannot be removed is left, with a Warning.
async fn cleanup(ce: &CouponEvent, context: &Context) -> Result<Action, Error> {
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let name = ce.name_any();
    delete_workloads(context, &namespace, &name).await?;
    if let Some(round) = ce.status.as_ref().and_then(|s| s.round) {
        let round = EventId::new(&namespace, &name).map_err(|_| Error::NoNamespace)?.round(round);
        let remove = async {
            let clients = connect(ce, context).await?;
            let mut redis = clients.redis.clone();
            prewarm::remove_round(&mut redis, &clients.db, &round).await.map_err(Error::Prewarm)
        };
        let failed = match tokio::time::timeout(BACKEND_CALL, remove).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(chain(&error)),
            Err(_) => Some("the backends did not answer in time".to_owned()),
        };
        if let Some(error) = failed {
            tracing::warn!(event = %name, %error, "the round's Redis keys and stock row are left");
            let note = format!("the round's Redis keys and MySQL stock row could not be removed: {error}");
            publish(context, ce, EventType::Warning, "RoundKeysLeft", Some(note)).await;
        }
    }
    publish(context, ce, EventType::Normal, "Deleted", Some("workloads and round keys removed".to_owned())).await;
    context.metrics.events.forget(&namespace, &name);
    Ok(Action::await_change())
}
