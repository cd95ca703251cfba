//! couponrush-operator: reconciles CouponEvent resources.
//!
//! [`controller`] runs the loop; its pure parts are [`plan`] (which round, when),
//! [`phase`] (which phase, when to look again), [`status`] (the next status),
//! [`drain`] (deleting mid-round), [`pace`] (the reconcile rate), [`sizing`] (replicas
//! and resources) and [`resources`] (the workloads' manifests), all unit-tested without
//! a cluster. Time comes from a [`clock`]. Only
//! the replica holding the [`leader`] Lease reconciles.

pub mod backends;
pub mod clock;
pub mod config;
pub mod controller;
pub mod drain;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod pace;
pub mod phase;
pub mod plan;
pub mod resources;
pub mod sizing;
pub mod status;

use std::sync::Arc;

use couponrush_core::ops::{self, Ops};
use couponrush_crds::CouponEvent;
use kube::Api;
use kube::api::ListParams;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::controller::Context;
pub use crate::error::RunError;
use crate::leader::Election;
use crate::metrics::Metrics;

/// Runs until `shutdown`: serves the ops endpoints, takes part in leader election, and
/// reconciles while it leads. Losing the Lease ends the run (the pod restarts and
/// rejoins), so two replicas never reconcile at once.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    run_with_clock(config, listener, shutdown, Clock::system()).await
}

/// [`run`] with a given time source: tests pass a [`Clock::shifted`] one to reach a
/// daily event's next round without waiting a day. The binary always uses the system clock.
pub async fn run_with_clock(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    clock: Clock,
) -> Result<(), RunError> {
    let client = kube::Client::try_default().await.map_err(RunError::NoKubernetesConfig)?;
    run_with_client(config, client, listener, shutdown, clock).await
}

/// [`run_with_clock`] with a given Kubernetes client instead of the one the environment
/// configures: tests pass one that authenticates as the chart's ServiceAccount, to show
/// that its grants are enough.
pub async fn run_with_client(
    config: Config,
    client: kube::Client,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
    clock: Clock,
) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ops = Ops::new(registry);
    let ops_server = tokio::spawn(ops::serve(listener, ops.router(), shutdown.clone()));

    // Listing where it will watch: a missing CRD and a missing grant both show here.
    let probe = ListParams::default().limit(1);
    if config.watch_namespaces.is_empty() {
        Api::<CouponEvent>::all(client.clone())
            .list(&probe)
            .await
            .map_err(|source| RunError::CannotList { namespace: None, source })?;
    }
    for namespace in &config.watch_namespaces {
        Api::<CouponEvent>::namespaced(client.clone(), namespace)
            .list(&probe)
            .await
            .map_err(|source| RunError::CannotList { namespace: Some(namespace.clone()), source })?;
    }
    ops.set_ready(true);

    let (leading_tx, mut leading) = watch::channel(false);
    let election = Election {
        api: Api::namespaced(client.clone(), &config.leader_election_namespace),
        name: config.leader_election_lease.clone(),
        identity: config.identity.clone(),
        duration: config.lease_duration,
    };
    let election_stop = CancellationToken::new();
    let election_task = tokio::spawn(election.run(leading_tx, election_stop.clone()));

    let result = async {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            led = leading.wait_for(|leads| *leads) => { led.map_err(|_| RunError::ElectionStopped)?; }
        }
        tracing::info!(identity = %config.identity, "leading: reconciling CouponEvents");
        metrics.leader.set(1);
        let context = Arc::new(Context::new(client.clone(), config.clone(), metrics.clone(), clock.clone()));
        let stop = shutdown.child_token();
        let controller = tokio::spawn(controller::run(context, stop.clone()));
        let lost = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = leading.wait_for(|leads| !*leads) => true,
        };
        stop.cancel();
        // A pass stuck on a hung call must not keep acting after the Lease is gone.
        let abort = controller.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), controller).await.is_err() {
            tracing::warn!("in-flight reconciles did not finish in 5 s; aborting them");
            abort.abort();
        }
        metrics.leader.set(0);
        if lost {
            return Err(RunError::LostLease);
        }
        Ok(())
    }
    .await;

    election_stop.cancel();
    let _ = election_task.await;
    ops.set_ready(false);
    shutdown.cancel();
    let _ = ops_server.await;
    tracing::info!("operator stopped");
    result
}
