//! `kafka-async` admissions of one round, gathered into batches for the admission script.
//!
//! Every admission is one Lua run on the round's shard, and at the opening thousands
//! arrive in the same millisecond. The script's fixed part (the gate, the meta read and
//! write, Lua's call overhead, the effects Redis appends to its AOF and replicas) is most
//! of its cost, so admissions of the same round that arrive while earlier runs are still
//! in flight share one run. Nothing waits for a batch to fill: with fewer than
//! [`RUNS_IN_FLIGHT`] runs out, an admission goes at once (a batch of one, as before);
//! only when that many are out do new ones queue, and the next run takes all of them
//! (up to [`MAX_BATCH`]). The script decides a batch's users in arrival order, as if each
//! had come alone, so batching changes the cost and nothing else.

use std::sync::{Arc, OnceLock};

use couponrush_core::redis_conn::RedisConn;
use couponrush_core::round_store::admission::{self, Admission, ScriptError};
use couponrush_core::round_store::keys::RoundKeys;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::events::LiveRound;

/// Script runs of one round in flight at once from this issuer. A few keep the shard busy
/// while replies travel; more would only make smaller batches.
pub const RUNS_IN_FLIGHT: usize = 4;
/// Users per script run: bounds the run's time on the shard (each user is two hash
/// commands), so one run never holds Redis for long.
pub const MAX_BATCH: usize = 64;

struct Waiting {
    user: String,
    /// The round's seq as this admission's issuer had seen it (see [`LiveRound::seq_floor`]).
    seq_floor: u32,
    answer: oneshot::Sender<Result<Admission, ScriptError>>,
}

/// The queue in front of one round's admission script; its task starts with the first
/// admission and ends when the round ([`LiveRound`], which owns this) is dropped.
#[derive(Default)]
pub struct AdmissionBatches {
    queue: OnceLock<mpsc::UnboundedSender<Waiting>>,
}

impl std::fmt::Debug for AdmissionBatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdmissionBatches").field("started", &self.queue.get().is_some()).finish()
    }
}

impl AdmissionBatches {
    /// Admits `user` in the next run of the round's admission script.
    pub async fn admit(&self, live: &LiveRound, redis: &RedisConn, user: &str) -> Result<Admission, ScriptError> {
        let queue = self.queue.get_or_init(|| {
            let (queue, waiting) = mpsc::unbounded_channel();
            let (keys, label) = live.bucket(0);
            tokio::spawn(run_batches(keys.clone(), label.to_owned(), redis.clone(), waiting));
            queue
        });
        let (answer, answered) = oneshot::channel();
        if queue.send(Waiting { user: user.to_owned(), seq_floor: live.seq_floor(0), answer }).is_err() {
            return Err(batch_lost());
        }
        answered.await.unwrap_or_else(|_| Err(batch_lost()))
    }
}

/// A batch whose run never answered (its task ended): the script may have run, so the
/// outcome is unknown and the caller settles it as after a lost reply.
fn batch_lost() -> ScriptError {
    ScriptError::Redis(redis::RedisError::from(std::io::Error::other("the admission batch ended without an answer")))
}

async fn run_batches(keys: RoundKeys, label: String, redis: RedisConn, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let round = Arc::new((keys, label));
    let runs = Arc::new(Semaphore::new(RUNS_IN_FLIGHT));
    // A run slot first, then the waiting admissions: while every slot is out, new
    // admissions gather in the queue and leave together.
    while let Ok(slot) = runs.clone().acquire_owned().await {
        let Some(first) = waiting.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (round, mut redis) = (round.clone(), redis.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let (keys, label) = round.as_ref();
            let users: Vec<&str> = batch.iter().map(|waiting| waiting.user.as_str()).collect();
            let seq_floor = batch.iter().map(|waiting| waiting.seq_floor).max().unwrap_or(0);
            let decided = admission::admit_many_above(&mut redis, keys, label, &users, seq_floor).await;
            match decided {
                Ok(outcomes) => {
                    for (waiting, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = waiting.answer.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    for waiting in batch {
                        let _ = waiting.answer.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}
