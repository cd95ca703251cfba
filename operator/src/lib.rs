//! couponrush-operator: reconciles CouponEvent resources.
//!
//! This first cut only starts up, serves the ops endpoints and stops on SIGTERM; the
//! reconcile loop comes with the CouponEvent CRD.

pub mod config;

use couponrush_core::ops::{self, Ops};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

pub async fn run(
    _config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ops = Ops::new(Registry::default());
    ops.set_ready(true);
    ops::serve(listener, ops.router(), shutdown).await?;
    tracing::info!("operator stopped");
    Ok(())
}
