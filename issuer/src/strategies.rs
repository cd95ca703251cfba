//! The six admission strategies behind one function, [`issue`]. Each keeps the same
//! guarantees (never more than stock, at most `per_user` per user, every 201 becomes a
//! row); they differ in where the contention lands, which is what the benchmark
//! compares. docs/strategies.md tells the design each one reproduces and where it
//! broke.

use std::time::{Duration, Instant};

use couponrush_core::admission::{self, Admission, RollBack};
use couponrush_core::db::{self, RowLock};
use couponrush_core::event::Strategy;
use couponrush_core::keys::{SOLD_OUT_CHANNEL, winner_field};
use couponrush_core::message::{Attribution, IssuedCoupon};
use rand::Rng;
use redis::AsyncCommands;

use crate::error::IssueError;
use crate::events::LiveRound;
use crate::queue;
use crate::state::AppState;

/// What one request ends as, before it becomes an HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Admission(Admission),
    Queued { position: u64 },
}

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
        Strategy::KafkaAsync => kafka_async(state, live, user, attribution).await?,
        Strategy::DbLock => {
            with_retry(|| db::issue_sync(&state.db, &live.round, user, RowLock::ForUpdate, attribution)).await?
        }
        Strategy::RedisLock => redis_lock(state, live, user, attribution).await?,
        Strategy::RedisCounter => match counter_gate(state, live, user, attribution).await? {
            // The gate's fast "no" is not final: places of requests in flight that end
            // without a coupon come back. Only MySQL's answer closes the round.
            Gated::Full => return Ok(Outcome::Admission(Admission::SoldOut)),
            Gated::Decided(admission) => admission,
        },
        Strategy::RedisCounterSet => match counter_set_gate(state, live, user, attribution).await? {
            Gated::Full => return Ok(Outcome::Admission(Admission::SoldOut)),
            Gated::Decided(admission) => admission,
        },
        Strategy::Queue => return queue::enqueue(state, live, user).await,
    };
    note_sold_out(state, live, &admission).await;
    Ok(Outcome::Admission(admission))
}

/// Remembers a sold-out round and, for the strategies whose Lua script does not publish
/// it, tells the other issuers.
async fn note_sold_out(state: &AppState, live: &LiveRound, admission: &Admission) {
    let sold_out = matches!(admission, Admission::SoldOut | Admission::Issued { remaining: 0, .. });
    if !sold_out || live.is_sold_out() {
        return;
    }
    live.mark_sold_out();
    if !matches!(live.strategy, Strategy::KafkaAsync) {
        let mut redis = state.redis.clone();
        let published: redis::RedisResult<i64> = redis.publish(SOLD_OUT_CHANNEL, &live.label).await;
        if let Err(error) = published {
            tracing::warn!(%error, round = %live.label, "publishing sold-out failed; other issuers learn it from their own requests");
        }
    }
}

/// `kafka-async`: one Lua round trip admits; then the coupon goes to Kafka. If Kafka
/// definitely refuses it, the admission is rolled back (unless the consumer already
/// confirmed it) and the caller gets 503 with nothing admitted.
async fn kafka_async(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Admission, IssueError> {
    let mut redis = state.redis.clone();
    let floor = live.seq_floor();
    let admission =
        admission::admit_above(&mut redis, &live.keys, &live.label, user, floor).await.map_err(IssueError::Admit)?;
    let Admission::Issued { seq, slot, at_ms, .. } = admission else {
        return match admission {
            // This issuer loaded the round from those keys: they vanished since.
            Admission::UnknownRound => {
                live.mark_vanished();
                Err(IssueError::RoundVanished)
            }
            Admission::Regressed { seq_in_redis } => Err(IssueError::RoundRegressed { seq_in_redis, seen: floor }),
            other => Ok(other),
        };
    };
    live.saw_seq(seq);
    let coupon = IssuedCoupon::new(&live.round, user, seq, slot, at_ms).attributed(attribution.clone());
    let Err(error) = state.publisher.publish(&coupon).await else {
        return Ok(admission);
    };
    tracing::warn!(%error, round = %live.label, user, seq, "Kafka refused the coupon; rolling the admission back");
    match admission::roll_back(&mut redis, &live.keys, user, slot, seq).await {
        Ok(RollBack::RolledBack | RollBack::Absent) => Err(IssueError::Publish(error)),
        Ok(RollBack::AlreadyConfirmed) => Ok(admission),
        Err(rollback_error) => {
            // Unknown state: the admission stands in Redis, and reconciliation will
            // publish it. The caller holds the coupon.
            tracing::error!(error = %rollback_error, round = %live.label, user, seq, "roll-back failed; the admission stands for reconciliation");
            Ok(admission)
        }
    }
}

/// After a `kafka-async` admission whose reply never came: the script may have run (or
/// may still run, from a socket buffer, once a stalled Redis resumes), leaving a winner
/// whose coupon nobody publishes. Once Redis answers again, this publishes whatever the
/// user holds, twice a few seconds apart; re-publishing is harmless (the consumer
/// confirms against Redis and inserts idempotently). Past its deadline the operator's
/// reconciliation is the last resort.
pub async fn settle_unknown(state: &AppState, live: &LiveRound, user: &str) {
    const CHECKS: [Duration; 2] = [Duration::ZERO, Duration::from_secs(5)];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut published = std::collections::HashSet::new();
    for wait in CHECKS {
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_millis(100);
        let held = loop {
            match held_seqs(state, live, user).await {
                Ok(held) => break held,
                Err(error) if Instant::now() < deadline => {
                    tracing::debug!(%error, round = %live.label, user, "settling an unknown admission: Redis not answering yet");
                }
                Err(error) => {
                    tracing::error!(%error, round = %live.label, user, "gave up settling an unknown admission; reconciliation will");
                    return;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        for (slot, seq) in held {
            if !published.insert(seq) {
                continue;
            }
            // Unattributed (NULL in the row): the user may hold several coupons, and which
            // of them was this request's is not known.
            let coupon = IssuedCoupon::new(&live.round, user, seq, slot, couponrush_core::wall_clock_ms());
            match state.publisher.publish(&coupon).await {
                Ok(()) => {
                    live.saw_seq(seq);
                    tracing::info!(round = %live.label, user, seq, "published the coupon of an admission whose reply was lost");
                }
                Err(error) => {
                    tracing::error!(%error, round = %live.label, user, seq, "publishing a settled admission failed; reconciliation will");
                }
            }
        }
    }
}

/// The (slot, seq) of every coupon `user` holds in the round's winners hash.
async fn held_seqs(state: &AppState, live: &LiveRound, user: &str) -> redis::RedisResult<Vec<(u32, u32)>> {
    let mut redis = state.redis.clone();
    let per_user: Option<u32> = redis.hget(&live.keys.meta, "per_user").await?;
    let slots: Vec<u32> = (1..=per_user.unwrap_or(1).max(1)).collect();
    let fields: Vec<String> = slots.iter().map(|slot| winner_field(user, *slot)).collect();
    let held: Vec<Option<u32>> =
        redis::cmd("HMGET").arg(&live.keys.winners).arg(&fields).query_async(&mut redis).await?;
    Ok(slots.into_iter().zip(held).filter_map(|(slot, seq)| seq.map(|seq| (slot, seq))).collect())
}

/// Retries a synchronous issue a few times on deadlocks and lost connections.
async fn with_retry<F, Fut>(mut attempt: F) -> Result<Admission, IssueError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Admission, sqlx::Error>>,
{
    let mut tries = 0;
    loop {
        match attempt().await {
            Ok(admission) => return Ok(admission),
            Err(error) if db::is_transient(&error) && tries < 3 => {
                tries += 1;
                tracing::debug!(%error, tries, "transient database error; retrying");
                tokio::time::sleep(Duration::from_millis(5 * tries)).await;
            }
            Err(error) => return Err(IssueError::Database(error)),
        }
    }
}

/// `redis-lock`: one lock per round (token, expiry, compare-and-delete unlock) around
/// the database transaction. The expiry bounds a crashed holder; if a slow holder
/// outlives it, the transaction's conditional update still keeps stock exact.
async fn redis_lock(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Admission, IssueError> {
    let mut redis = state.redis.clone();
    let token: u64 = rand::rng().random();
    let deadline = Instant::now() + state.lock_wait;
    loop {
        let acquired: Option<String> = redis::cmd("SET")
            .arg(&live.keys.lock)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(3_000)
            .query_async(&mut redis)
            .await
            .map_err(IssueError::Lock)?;
        if acquired.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(IssueError::LockTimeout);
        }
        // Spinning is the design under test (docs/strategies.md#redis-lock); jitter
        // spreads the herd.
        let pause = rand::rng().random_range(1..=4);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let result = with_retry(|| db::issue_sync(&state.db, &live.round, user, RowLock::None, attribution)).await;
    let unlock = redis::Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
    );
    let released: redis::RedisResult<i64> = unlock.key(&live.keys.lock).arg(token).invoke_async(&mut redis).await;
    if let Err(error) = released {
        tracing::warn!(%error, round = %live.label, "releasing the lock failed; it expires by itself");
    }
    result
}

/// What a counter gate decided.
enum Gated {
    /// Every place is taken by coupons issued or in flight: fail fast.
    Full,
    /// MySQL decided.
    Decided(Admission),
}

/// `redis-counter`: `INCR` counts admissions granted or in flight; past the stock the
/// request fails fast without touching MySQL. A request that does not end in a coupon
/// gives its place back, so the round still sells exactly its stock.
async fn counter_gate(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Gated, IssueError> {
    let mut redis = state.redis.clone();
    let stock = live.stock.load(std::sync::atomic::Ordering::Relaxed);
    let place: u32 = match redis.incr(&live.keys.admitted, 1).await {
        Ok(place) => place,
        Err(error) => {
            // The INCR may have counted: give the place back. If it had not, the gate
            // is one place too lenient, which costs one more MySQL check and never a
            // coupon (MySQL decides); a place never given back would leave stock unsold.
            if admission::may_have_run(&error) {
                give_back_place(state, live).await;
            }
            return Err(IssueError::Gate(error));
        }
    };
    if place > stock {
        give_back_place(state, live).await;
        return Ok(Gated::Full);
    }
    let result = with_retry(|| db::issue_sync(&state.db, &live.round, user, RowLock::None, attribution)).await;
    if !matches!(result, Ok(Admission::Issued { .. })) {
        give_back_place(state, live).await;
    }
    result.map(Gated::Decided)
}

async fn give_back_place(state: &AppState, live: &LiveRound) {
    let mut redis = state.redis.clone();
    let released: redis::RedisResult<i64> = redis.decr(&live.keys.admitted, 1).await;
    if let Err(error) = released {
        // A lost place only makes the gate stricter; MySQL still decides.
        tracing::warn!(%error, round = %live.label, "giving back a counter place failed");
    }
}

/// `redis-counter-set`: `SADD` turns repeat requests away before the counter
/// (docs/strategies.md#redis-counter-set); the counter gate and MySQL do the rest.
async fn counter_set_gate(
    state: &AppState,
    live: &LiveRound,
    user: &str,
    attribution: &Attribution,
) -> Result<Gated, IssueError> {
    let mut redis = state.redis.clone();
    let first: bool = redis.sadd(&live.keys.users, user).await.map_err(IssueError::Gate)?;
    if !first {
        // A repeat: MySQL knows its seq (or, if the first request is still in flight or
        // failed, handles it as a fresh request; it is correct on its own).
        return with_retry(|| db::issue_sync(&state.db, &live.round, user, RowLock::None, attribution))
            .await
            .map(Gated::Decided);
    }
    let result = counter_gate(state, live, user, attribution).await;
    if !matches!(result, Ok(Gated::Decided(Admission::Issued { .. } | Admission::AlreadyIssued { .. }))) {
        let removed: redis::RedisResult<i64> = redis.srem(&live.keys.users, user).await;
        if let Err(error) = removed {
            tracing::warn!(%error, round = %live.label, user, "removing a user from the gate set failed");
        }
    }
    result
}
