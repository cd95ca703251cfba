//! The one place an issuer declares a round sold out (the refresh and the sold-out
//! channel only learn it, in `events`).

use couponrush_core::round_store;

use crate::events::LiveRound;
use crate::state::AppState;

/// Marks the round sold out in this issuer's memory and, unless the admission script
/// already did, publishes it to every issuer.
pub async fn announce(state: &AppState, live: &LiveRound, published_by_script: bool) {
    live.mark_sold_out();
    if published_by_script {
        return;
    }
    let mut redis = state.redis.clone();
    if let Err(error) = round_store::announce_sold_out(&mut redis, &live.label).await {
        tracing::warn!(%error, round = %live.label, "publishing sold-out failed; other issuers learn it from their own requests");
    }
}
