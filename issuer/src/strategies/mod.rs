//! The six admission strategies behind one function, [`issue`]. Each keeps the same
//! guarantees (never more than stock, at most `per_user` per user, every 201 becomes a
//! row); they differ in where the contention lands, which is what the benchmark
//! compares. docs/strategies.md tells the design each one reproduces and where it
//! broke. One module per family: [`kafka_async`] (Redis decides, Kafka carries),
//! [`mysql`] (a MySQL transaction decides: `db-lock`), [`redis_lock`] and [`counters`]
//! (Redis gates in front of that transaction), [`queue`] (a scheduler decides).

mod admission_batches;
mod counters;
mod kafka_async;
mod mysql;
mod outcome;
mod queue;
mod redis_lock;
mod sold_out;

use couponrush_core::event::Strategy;
use couponrush_core::message::Attribution;
use couponrush_core::round_store::admission::Admission;

pub use admission_batches::AdmissionBatches;
pub use kafka_async::settle_unknown;
pub use outcome::Outcome;
pub use queue::{standing, supervise};

use crate::error::IssueError;
use crate::events::LiveRound;
use crate::state::AppState;

/// Admits or rejects `user` for the round with the round's strategy; an admitted coupon
/// carries `attribution` into its message or row (the queue strategy's cannot: see
/// `queue`).
pub async fn issue(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Outcome, IssueError> {
    let admission = match live.strategy {
        Strategy::KafkaAsync => kafka_async::admit(state, live, user, attribution).await?,
        Strategy::DbLock => mysql::db_lock(state, live, user, attribution).await?,
        Strategy::RedisLock => redis_lock::admit(state, live, user, attribution).await?,
        Strategy::RedisCounter => match counters::counter_gate(state, live, user, attribution).await? {
            // The gate's fast "no" is not final: places of requests in flight that end
            // without a coupon come back. Only MySQL's answer closes the round.
            counters::Gated::Full => return Ok(Outcome::Admission(Admission::SoldOut)),
            counters::Gated::Decided(admission) => admission,
        },
        Strategy::RedisCounterSet => match counters::counter_set_gate(state, live, user, attribution).await? {
            counters::Gated::Full => return Ok(Outcome::Admission(Admission::SoldOut)),
            counters::Gated::Decided(admission) => admission,
        },
        Strategy::Queue => match queue::enqueue(state, live, user).await? {
            Outcome::Admission(admission) => admission,
            queued @ Outcome::Queued { .. } => return Ok(queued),
        },
    };
    note_sold_out(state, live, &admission).await;
    Ok(Outcome::Admission(admission))
}

/// Remembers a sold-out round and, for the strategies whose Lua script does not publish
/// it, tells the other issuers. (A queue round's SOLD_OUT comes from `remaining`, which
/// its scheduler lowers and then announces itself; announcing twice is harmless.)
async fn note_sold_out(state: &AppState, live: &LiveRound, admission: &Admission) {
    // A round of several stock buckets: `kafka_async` notes each bucket it finds empty,
    // and the round is sold out once all are.
    if live.buckets > 1 {
        return;
    }
    let sold_out = matches!(admission, Admission::SoldOut | Admission::Issued { remaining: 0, .. });
    if !sold_out || live.is_sold_out() {
        return;
    }
    let published_by_script = matches!(live.strategy, Strategy::KafkaAsync);
    sold_out::announce(state, live, published_by_script).await;
}
