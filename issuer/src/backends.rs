//! The API's [`Backends`] on the real servers: the events this issuer serves (memory
//! first, then Redis), the strategies (Redis, MySQL, Kafka), and the reads behind `GET`.

use std::sync::Arc;
use std::time::Duration;

use couponrush_core::db;
use couponrush_core::event::{EventId, Strategy};
use couponrush_core::message::Attribution;
use couponrush_core::round_store::admission;
use couponrush_core::round_store::buckets::home_bucket;
use couponrush_core::round_store::meta::{RoundTotals, round_totals};

use crate::api::{Backends, Holding, RoundCounts};
use crate::auth::Authenticator;
use crate::error::IssueError;
use crate::events::LiveRound;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::strategies::{self, Outcome};

impl Backends for AppState {
    fn auth(&self) -> &Authenticator {
        &self.auth
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn body_timeout(&self) -> Duration {
        self.body_timeout
    }

    fn sold_out_from_memory(&self, event: &EventId) -> Option<Strategy> {
        self.events.sold_out_from_memory(event)
    }

    async fn lookup(&self, event: &EventId) -> Result<Option<Arc<LiveRound>>, IssueError> {
        self.events.get(event).await.map_err(IssueError::LookupEvent)
    }

    /// Everything from the admission on runs in its own task, so an admitted coupon is
    /// always published (or rolled back), a counter place always given back, and an
    /// unknown outcome settled, whoever is still listening. Shutdown waits for these
    /// tasks (`admissions`) before it flushes Kafka.
    async fn issue(
        self: Arc<Self>,
        live: Arc<LiveRound>,
        user: String,
        attribution: Attribution,
    ) -> Result<Outcome, IssueError> {
        let guard = self.admissions.enter();
        let decision = tokio::spawn(async move {
            let _guard = guard;
            let result = strategies::issue(&self, &live, &user, &attribution).await;
            if let Err(error) = &result
                && error.needs_settling()
                && live.strategy == Strategy::KafkaAsync
            {
                let guard = self.admissions.enter();
                tokio::spawn(async move {
                    let _guard = guard;
                    strategies::settle_unknown(&self, &live, &user).await;
                });
            }
            result
        });
        decision.await.map_err(IssueError::Panicked).and_then(|decided| decided)
    }

    async fn holding(&self, live: &LiveRound, user: &str) -> Result<Holding, IssueError> {
        if live.strategy == Strategy::Queue {
            return strategies::standing(self, live, user).await.map(Holding::InQueue);
        }
        let persisted = db::user_seqs(&self.db, &live.round, user).await.map_err(IssueError::Database)?;
        if live.strategy != Strategy::KafkaAsync {
            return Ok(Holding::Coupon { seq: persisted.last().copied(), persisted: true });
        }
        // The latest coupon the user holds (the highest slot), as for the other strategies;
        // in the user's home bucket, which holds the user's record whatever bucket gave it.
        let mut redis = self.redis.clone();
        let (home_keys, _) = live.bucket(home_bucket(user, live.buckets));
        let held = admission::held_coupons(&mut redis, home_keys, user)
            .await
            .map_err(|error| IssueError::ReadResult(error.into()))?;
        Ok(match held.last().map(|(_, seq)| *seq) {
            Some(seq) => Holding::Coupon { seq: Some(seq), persisted: persisted.contains(&seq) },
            None => Holding::Coupon { seq: None, persisted: false },
        })
    }

    async fn counts(&self, live: &LiveRound) -> Result<Option<RoundCounts>, IssueError> {
        let mut redis = self.redis.clone();
        // Summed over the round's stock buckets (one, unless it has more).
        let Some(RoundTotals { meta, missing: 0 }) =
            round_totals(&mut redis, &live.round).await.map_err(|error| IssueError::ReadResult(error.into()))?
        else {
            return Ok(None);
        };
        // Where the counts live is a fact of the strategy (the operator reads the same place).
        let remaining = if live.strategy.counts_in_redis() {
            meta.remaining
        } else {
            match db::round_row(&self.db, &live.round).await.map_err(IssueError::Database)? {
                Some(row) => row.stock.saturating_sub(row.issued),
                None => return Ok(None),
            }
        };
        Ok(Some(RoundCounts { meta, remaining }))
    }
}
