//! The reconcile loop. Each pass: dereference (backends Secret, connections) →
//! validate (plan the round) → observe (Redis and MySQL counts) → decide the phase
//! ([`crate::phase`], no API calls) → apply what the phase needs (topic, schema,
//! pre-warm, workloads; reconciliation while draining; teardown when completed) →
//! write the status if it changed, and an Event per transition.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use couponrush_core::event::{EventId, RoundId, RoundSpec, Strategy};
use couponrush_core::keys::RoundKeys;
use couponrush_core::prewarm::{self, PrewarmError};
use couponrush_core::{db, kafka, reconcile};
use couponrush_crds::{CouponEvent, CouponEventStatus, Phase};
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backends::{ClientCache, Clients};
use crate::config::Config;
use crate::error::{Error, chain};
use crate::metrics::{KindLabels, Metrics, PhaseLabels};
use crate::phase::{Decision, IDLE, Observed, decide};
use crate::plan::{plan_round, timing};
use crate::resources::{self, WorkloadInputs, topic_name, workload_name};
use crate::sizing::size;

pub const FINALIZER: &str = "couponrush.io/cleanup";
const MANAGER: &str = "couponrush-operator";

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub recorder: Recorder,
    pub clients: ClientCache,
    pub metrics: Metrics,
    /// Consecutive failures per event, for backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, config: Config, metrics: Metrics) -> Self {
        let reporter = Reporter { controller: MANAGER.to_owned(), instance: Some(config.identity.clone()) };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            clients: ClientCache::default(),
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(context: Arc<Context>, shutdown: tokio_util::sync::CancellationToken) {
    let events: Api<CouponEvent> = Api::all(context.client.clone());
    let owned = |client: &Client| Api::<Deployment>::all(client.clone());
    Controller::new(events, watcher::Config::default().any_semantic())
        .owns(owned(&context.client), watcher::Config::default().labels("app.kubernetes.io/part-of=couponrush"))
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
    context.metrics.reconciles.inc();
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let key = format!("{namespace}/{}", ce.name_any());
    let api: Api<CouponEvent> = Api::namespaced(context.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, ce, |event| async {
        match event {
            finalizer::Event::Apply(ce) => apply(&ce, &context).await,
            finalizer::Event::Cleanup(ce) => cleanup(&ce, &context).await,
        }
    })
    .await
    .map_err(|error| Error::Finalizer(Box::new(error)));
    if result.is_ok()
        && let Ok(mut failures) = context.failures.lock()
    {
        failures.remove(&key);
    }
    result
}

fn error_policy(ce: Arc<CouponEvent>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.failures.get_or_create(&KindLabels { kind: error.metric_label() }).inc();
    let key = format!("{}/{}", ce.namespace().unwrap_or_default(), ce.name_any());
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

/// What Redis and MySQL hold for the round; `None` before it was pre-warmed.
async fn observe(clients: &Clients, round: &RoundId, strategy: Strategy) -> Result<Option<Observed>, Error> {
    let keys = RoundKeys::new(round);
    let mut redis = clients.redis.clone();
    let Some(meta) = prewarm::round_meta(&mut redis, &keys).await.map_err(Error::ObserveRedis)? else {
        return Ok(None);
    };
    let persisted =
        u32::try_from(db::count_coupons(&clients.db, round).await.map_err(Error::ObserveDatabase)?).unwrap_or(u32::MAX);
    let observed = match strategy {
        Strategy::KafkaAsync => {
            let issued: u32 = redis.hlen(&keys.winners).await.map_err(Error::ObserveRedis)?;
            Observed { remaining: meta.remaining, issued, persisted }
        }
        _ => match db::round_row(&clients.db, round).await.map_err(Error::ObserveDatabase)? {
            Some(row) => Observed { remaining: row.stock.saturating_sub(row.issued), issued: row.issued, persisted },
            None => return Ok(None),
        },
    };
    Ok(Some(observed))
}

async fn apply(ce: &CouponEvent, context: &Context) -> Result<Action, Error> {
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let name = ce.name_any();
    let previous = ce.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    let mut refusals: Vec<(&'static str, String)> = Vec::new();

    let plan = match timing(&ce.spec).and_then(|timing| Ok((timing, plan_round(&ce.spec, &previous, now)?))) {
        Ok(planned) => planned,
        Err(spec_error) => {
            let mut status = previous.clone();
            status.phase = Phase::Failed;
            status.message = Some(spec_error.to_string());
            set_condition(
                &mut status.conditions,
                ce,
                "SpecAccepted",
                false,
                "InvalidSpec",
                &spec_error.to_string(),
                now,
            );
            write_status(ce, context, &previous, status).await?;
            return Ok(Action::await_change());
        }
    };
    let (timing, mut plan) = plan;
    // A round that opened keeps its start: moving it would change the rules mid-game.
    let opened =
        previous.round == Some(plan.round) && matches!(previous.phase, Phase::Live | Phase::SoldOut | Phase::Draining);
    if let Some(locked) = previous.round_starts_at.as_ref().filter(|_| opened)
        && locked.0 != plan.starts_at
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
            set_condition(&mut status.conditions, ce, "Ready", false, "BackendsUnavailable", &chain(&error), now);
            status.message = Some(format!("backends unavailable: {}", chain(&error)));
            write_status(ce, context, &previous, status).await?;
            return Err(error);
        }
    };
    let event = EventId::new(&namespace, &name).map_err(|_| Error::NoNamespace)?;
    let round = event.round(plan.round);
    let observed = observe(&clients, &round, ce.spec.strategy).await?;
    let decision: Decision = decide(&plan, &timing, &previous, observed, now);
    let sizing = size(&ce.spec.capacity);
    let topic = topic_name(&namespace, &name);

    match decision.phase {
        Phase::Warming | Phase::Live => {
            kafka::ensure_topics(&clients.kafka_brokers, &topic, sizing.partitions)
                .await
                .map_err(Error::CreateTopic)?;
            clients.migrate_once().await?;
            let spec = RoundSpec {
                stock: ce.spec.stock,
                per_user: ce.spec.per_user,
                start_ms: plan.starts_at.as_millisecond(),
                end_ms: plan.ends_at.map(|t| t.as_millisecond()),
                strategy: ce.spec.strategy,
            };
            let mut redis = clients.redis.clone();
            let current = prewarm::current_round(&mut redis, &event).await.map_err(Error::ObserveRedis)?;
            match current {
                Some((current, strategy))
                    if current == round
                        && strategy != spec.strategy
                        && observed.is_some()
                        && decision.phase == Phase::Live =>
                {
                    refusals.push((
                        "StrategyLocked",
                        format!("strategy cannot change after the round opened; {strategy} stands"),
                    ));
                }
                _ => match prewarm::prewarm(&mut redis, &clients.db, &round, &spec).await {
                    Ok(_) => {}
                    Err(error @ PrewarmError::RoundAlreadyRan(_)) => {
                        let mut status = previous.clone();
                        status.phase = Phase::Failed;
                        status.message = Some(error.to_string());
                        set_condition(
                            &mut status.conditions,
                            ce,
                            "SpecAccepted",
                            false,
                            "RoundAlreadyRan",
                            &error.to_string(),
                            now,
                        );
                        write_status(ce, context, &previous, status).await?;
                        return Ok(Action::await_change());
                    }
                    Err(PrewarmError::StockBelowIssued { requested, issued }) => refusals.push((
                        "StockBelowIssued",
                        format!(
                            "stock {requested} is below the {issued} coupons already issued; the round keeps its stock"
                        ),
                    )),
                    Err(error) => {
                        // The database may have been replaced under us (restored, recreated):
                        // check the schema again before the retry.
                        clients.schema_unverified();
                        return Err(Error::Prewarm(error));
                    }
                },
            }
            let inputs = WorkloadInputs {
                issuer_image: context.config.issuer_image.clone(),
                consumer_image: context.config.consumer_image.clone(),
                backends_secret: backends_secret(ce, &context.config),
                topic: topic.clone(),
                sizing,
            };
            apply_workloads(ce, context, &namespace, &inputs).await?;
        }
        Phase::Draining => {
            if let Some(observed) = observed.filter(|o| o.persisted < o.issued) {
                let stalled = previous
                    .sold_out_at
                    .as_ref()
                    .or(previous.started_at.as_ref())
                    .is_some_and(|t| now.duration_since(t.0) > jiff::SignedDuration::from_secs(10));
                if stalled && ce.spec.strategy == Strategy::KafkaAsync {
                    let publisher = clients.publisher(&topic)?;
                    let mut redis = clients.redis.clone();
                    let report = reconcile::reconcile_round(&mut redis, &clients.db, &publisher, &round)
                        .await
                        .map_err(Error::ReconcileCoupons)?;
                    tracing::info!(%round, issued = observed.issued, persisted = observed.persisted, republished = report.republished, "draining: reconciled");
                }
            }
        }
        Phase::Completed => {
            delete_workloads(context, &namespace, &name).await?;
            let mut redis = clients.redis.clone();
            prewarm::remove_round(&mut redis, &clients.db, &round).await.map_err(Error::Prewarm)?;
        }
        Phase::Scheduled | Phase::SoldOut | Phase::Failed => {}
    }

    let status = next_status(ce, &previous, &plan, decision, observed, &refusals, now);
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
    for (reason, message) in &refusals {
        publish(context, ce, EventType::Warning, reason, Some(message.clone())).await;
    }
    write_status(ce, context, &previous, status).await?;
    if decision.phase == Phase::Completed && ce.spec.schedule.is_none() {
        return Ok(Action::requeue(IDLE));
    }
    Ok(Action::requeue(decision.requeue.max(Duration::from_millis(200))))
}

fn phase_entered(status: &CouponEventStatus) -> Option<Timestamp> {
    let at = match status.phase {
        Phase::Live => status.started_at.as_ref(),
        Phase::SoldOut => status.sold_out_at.as_ref(),
        Phase::Draining => status.drained_at.as_ref().or(status.sold_out_at.as_ref()),
        _ => None,
    };
    at.map(|t| t.0)
}

/// The next status: phase, counts, timestamps (each set once per round), conditions.
fn next_status(
    ce: &CouponEvent,
    previous: &CouponEventStatus,
    plan: &crate::plan::RoundPlan,
    decision: Decision,
    observed: Option<Observed>,
    refusals: &[(&'static str, String)],
    now: Timestamp,
) -> CouponEventStatus {
    let same_round = previous.round == Some(plan.round);
    let mut status = if same_round {
        previous.clone()
    } else {
        CouponEventStatus { conditions: previous.conditions.clone(), ..CouponEventStatus::default() }
    };
    status.phase = decision.phase;
    status.round = Some(plan.round);
    status.round_starts_at = Some(Time(plan.starts_at));
    status.round_ends_at = plan.ends_at.map(Time);
    status.observed_generation = ce.metadata.generation;
    if let Some(observed) = observed {
        status.remaining = Some(observed.remaining);
        status.issued = Some(observed.issued);
        status.persisted = Some(observed.persisted);
    }
    let stamp = |slot: &mut Option<Time>, condition: bool| {
        if condition && slot.is_none() {
            *slot = Some(Time(now));
        }
    };
    let phase = decision.phase;
    stamp(&mut status.started_at, matches!(phase, Phase::Live | Phase::SoldOut | Phase::Draining | Phase::Completed));
    // Once the round's keys are removed (Completed), the last counts stand.
    let sold_out = observed.map_or(previous.remaining == Some(0) && same_round, |o| o.remaining == 0);
    stamp(&mut status.sold_out_at, sold_out);
    let closed = matches!(phase, Phase::SoldOut | Phase::Draining | Phase::Completed);
    let drained = closed && observed.map_or(same_round && previous.drained_at.is_some(), |o| o.persisted >= o.issued);
    stamp(&mut status.drained_at, drained && phase != Phase::SoldOut);
    stamp(&mut status.completed_at, phase == Phase::Completed);
    status.message = Some(match phase {
        Phase::Scheduled => format!("round {} opens at {}", plan.round, plan.starts_at),
        Phase::Warming => format!("warming up: round {} opens at {}", plan.round, plan.starts_at),
        Phase::Live => "open".to_owned(),
        Phase::SoldOut => "sold out".to_owned(),
        Phase::Draining if drained => "every coupon is in MySQL; workloads stay until teardownAfter".to_owned(),
        Phase::Draining => "waiting for every coupon to reach MySQL".to_owned(),
        Phase::Completed => "completed; workloads removed".to_owned(),
        Phase::Failed => status.message.clone().unwrap_or_default(),
    });
    let workloads_up = matches!(phase, Phase::Warming | Phase::Live | Phase::SoldOut | Phase::Draining);
    let conditions = &mut status.conditions;
    set_condition(
        conditions,
        ce,
        "Ready",
        workloads_up,
        if workloads_up { "WorkloadsApplied" } else { "NoWorkloads" },
        "issuer and consumer Deployments",
        now,
    );
    set_condition(
        conditions,
        ce,
        "Live",
        phase == Phase::Live,
        if phase == Phase::Live { "Open" } else { "Closed" },
        "the round admits requests",
        now,
    );
    set_condition(
        conditions,
        ce,
        "SoldOut",
        sold_out,
        if sold_out { "NoStockLeft" } else { "StockLeft" },
        "every coupon of the round is issued",
        now,
    );
    set_condition(
        conditions,
        ce,
        "Drained",
        drained,
        if drained { "AllPersisted" } else { "NotYet" },
        "every issued coupon is in MySQL",
        now,
    );
    match refusals.first() {
        Some((reason, message)) => set_condition(conditions, ce, "SpecAccepted", false, reason, message, now),
        None => set_condition(conditions, ce, "SpecAccepted", true, "Accepted", "the spec is being carried out", now),
    }
    status
}

/// Sets a condition, keeping its transition time while its status does not change.
fn set_condition(
    conditions: &mut Vec<Condition>,
    ce: &CouponEvent,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let status = if value { "True" } else { "False" }.to_owned();
    let transition = conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != kind);
    conditions.push(Condition {
        type_: kind.to_owned(),
        status,
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: transition,
        observed_generation: ce.metadata.generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// Writes the status only when it changed, so a status write never triggers a storm.
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
    let patch = serde_json::json!({ "status": status });
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

/// Deleting a CouponEvent: workloads (owner references would too), the round's Redis
/// keys and MySQL stock row. Coupon rows stay: they are the record.
async fn cleanup(ce: &CouponEvent, context: &Context) -> Result<Action, Error> {
    let namespace = ce.namespace().ok_or(Error::NoNamespace)?;
    let name = ce.name_any();
    delete_workloads(context, &namespace, &name).await?;
    if let Some(round) = ce.status.as_ref().and_then(|s| s.round) {
        match connect(ce, context).await {
            Ok(clients) => {
                let round = EventId::new(&namespace, &name).map_err(|_| Error::NoNamespace)?.round(round);
                let mut redis = clients.redis.clone();
                prewarm::remove_round(&mut redis, &clients.db, &round).await.map_err(Error::Prewarm)?;
            }
            // With the Secret gone there is nothing to reach: let the deletion finish.
            Err(error @ (Error::ReadBackendsSecret { .. } | Error::BackendsSecretKey { .. })) => {
                tracing::warn!(event = %name, error = %chain(&error), "backends unknown; the round's Redis keys are left");
            }
            Err(error) => return Err(error),
        }
    }
    publish(context, ce, EventType::Normal, "Deleted", Some("workloads and round keys removed".to_owned())).await;
    Ok(Action::await_change())
}
