//! The six admission strategies a round can use: their names and the facts the other
//! crates decide by. A crate of its own with no I/O, so that the CouponEvent types
//! (`couponrush-crds`, and its `crdgen`) use it without the backend clients `core` brings
//! (Redis, Kafka, MySQL, HTTP). `couponrush_core::event` re-exports it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a round admits requests and persists coupons; docs/strategies.md tells the design
/// each one reproduces and where it broke.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// MySQL `SELECT … FOR UPDATE` on the round's stock row; insert in the same transaction.
    DbLock,
    /// A Redis lock (token, expiry, compare-and-delete unlock) around the database check.
    RedisLock,
    /// Redis `INCR` as a fast-fail gate in front of a synchronous insert.
    RedisCounter,
    /// Redis `SADD` (one per user) and `INCR` as fast-fail gates in front of a synchronous insert.
    RedisCounterSet,
    /// One Lua script admits in one round trip; Kafka and the consumer persist.
    #[default]
    KafkaAsync,
    /// A Redis sorted-set waiting queue; a scheduler admits up to the remaining stock per tick.
    Queue,
}

impl Strategy {
    pub const ALL: [Strategy; 6] = [
        Strategy::DbLock,
        Strategy::RedisLock,
        Strategy::RedisCounter,
        Strategy::RedisCounterSet,
        Strategy::KafkaAsync,
        Strategy::Queue,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::DbLock => "db-lock",
            Strategy::RedisLock => "redis-lock",
            Strategy::RedisCounter => "redis-counter",
            Strategy::RedisCounterSet => "redis-counter-set",
            Strategy::KafkaAsync => "kafka-async",
            Strategy::Queue => "queue",
        }
    }

    /// Whether the round's counts (coupons issued and remaining) live in Redis: the
    /// winners hash and the meta hash's `remaining`. Otherwise an admission is a MySQL
    /// transaction and the round's MySQL stock row holds the counts (Redis `remaining`
    /// is then at most a fast-fail gate or a working copy, never the answer).
    pub fn counts_in_redis(self) -> bool {
        matches!(self, Strategy::KafkaAsync)
    }

    /// Whether Redis `remaining` reaches 0 when the round sells out, so that an issuer
    /// can remember "sold out" from it: the Lua admission keeps it, and the queue's
    /// scheduler sets it as it admits.
    pub fn redis_remaining_is_current(self) -> bool {
        matches!(self, Strategy::KafkaAsync | Strategy::Queue)
    }

    /// Whether admitted coupons travel through Kafka to the consumer, so that a round is
    /// drained only once the consumer has written them, and a coupon the consumer never
    /// saw can be re-published from the winners hash.
    pub fn persists_through_kafka(self) -> bool {
        matches!(self, Strategy::KafkaAsync)
    }

    /// The most coupons one user may hold per round, whatever `perUser` says: the
    /// queue keeps one result per user.
    pub fn max_per_user(self) -> Option<u32> {
        matches!(self, Strategy::Queue).then_some(1)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown strategy {0:?}: expected one of db-lock, redis-lock, redis-counter, redis-counter-set, kafka-async, queue"
)]
pub struct UnknownStrategy(pub String);

impl FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL.into_iter().find(|strategy| strategy.as_str() == s).ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}
