//! The Redis key layout. Every key of a round starts with `cr:{namespace/name:round}:`;
//! the braces are a Redis Cluster hash tag, so all of a round lives on one shard and a
//! single Lua script may touch all of it. A round whose stock is split into buckets
//! ([`super::buckets`]) keeps bucket 0 under that tag and bucket b ≥ 1 under
//! `{namespace/name:round#b}`, so each bucket may live on its own shard. Event names
//! cannot contain braces or `#` ([`crate::event::EventId::new`] rejects them), so a tag
//! can never be forged.

use crate::event::{EventId, RoundId};

/// Published when a bucket's last coupon is admitted, with the bucket's label
/// ([`bucket_label`]) as payload: the round id for a round of one bucket.
pub const SOLD_OUT_CHANNEL: &str = "couponrush:sold-out";

/// Bucket `bucket`'s label: its hash tag's content and its sold-out payload. Bucket 0 is
/// the round itself (`namespace/name:round`), bucket b ≥ 1 is `namespace/name:round#b`.
pub fn bucket_label(round: &RoundId, bucket: u32) -> String {
    if bucket == 0 { round.to_string() } else { format!("{round}#{bucket}") }
}

/// Splits a sold-out payload into the round label and the bucket ([`bucket_label`]'s
/// inverse); `None` for a bucket suffix that is not a number.
pub fn parse_bucket_label(label: &str) -> Option<(&str, u32)> {
    match label.rsplit_once('#') {
        Some((round, bucket)) => bucket.parse().ok().filter(|bucket| *bucket > 0).map(|bucket| (round, bucket)),
        None => Some((label, 0)),
    }
}

/// The event's pointer to its current round: a hash with `round` and `strategy`.
pub fn current_round_key(event: &EventId) -> String {
    format!("cr:{{{event}}}:current")
}

/// The winners-hash field of a user's slot: the user id for slot 1 (the common
/// one-per-user case), `user\x1fslot` beyond. User ids cannot hold control characters,
/// so the separator is unambiguous.
pub fn winner_field(user: &str, slot: u32) -> String {
    if slot <= 1 { user.to_owned() } else { format!("{user}\u{1f}{slot}") }
}

/// Splits a winners-hash field back into user and slot; `None` for a field no version
/// of [`winner_field`] writes (a slot that is not a number above 1).
pub fn parse_winner_field(field: &str) -> Option<(&str, u32)> {
    match field.rsplit_once('\u{1f}') {
        Some((user, slot)) => slot.parse().ok().filter(|slot| *slot > 1).map(|slot| (user, slot)),
        None => Some((field, 1)),
    }
}

/// The keys of one round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundKeys {
    /// Hash: `start_ms`, `end_ms` (0 = none), `stock`, `per_user`, `remaining`, `seq`
    /// (never decremented), `strategy`.
    pub meta: String,
    /// Hash: [`winner_field`] (user and slot) → the seq admitted to that slot.
    pub winners: String,
    /// Hash: seq → user id, written by the consumer before it inserts the row. An
    /// admission whose seq is here can no longer be rolled back.
    pub confirmed: String,
    /// `redis-counter` and `redis-counter-set`: admissions granted or in flight.
    pub admitted: String,
    /// `redis-counter-set`: users who passed the one-per-user gate.
    pub users: String,
    /// `redis-lock`: the lock around the database check.
    pub lock: String,
    /// `queue`: sorted set of waiting users, scored by arrival ticket.
    pub queue: String,
    /// `queue`: the ticket counter that orders arrivals.
    pub queue_ticket: String,
    /// `queue`: hash of users the scheduler turned away (user → outcome).
    pub queue_results: String,
    /// Bucketed `kafka-async`, in a user's home bucket: user → `ms:token`, a request
    /// that found the home bucket empty and is taking a coupon from another bucket.
    pub spill_reservations: String,
    /// Bucketed `kafka-async`, in the bucket that gave the coupon: user → `seq:token`,
    /// coupons this bucket gave to users of other home buckets.
    pub spilled: String,
}

impl RoundKeys {
    /// The round's keys: bucket 0's, the only ones a round of one bucket has.
    pub fn new(round: &RoundId) -> Self {
        Self::bucket(round, 0)
    }

    /// Bucket `bucket`'s keys (bucket 0: [`RoundKeys::new`]).
    pub fn bucket(round: &RoundId, bucket: u32) -> Self {
        let prefix = format!("cr:{{{}}}:", bucket_label(round, bucket));
        let key = |suffix: &str| format!("{prefix}{suffix}");
        Self {
            meta: key("meta"),
            winners: key("winners"),
            confirmed: key("confirmed"),
            admitted: key("admitted"),
            users: key("users"),
            lock: key("lock"),
            queue: key("queue"),
            queue_ticket: key("queue-ticket"),
            queue_results: key("queue-results"),
            spill_reservations: key("spill-reservations"),
            spilled: key("spilled"),
        }
    }

    /// Every key of the bucket, for cleanup.
    pub fn all(&self) -> [&str; 11] {
        [
            &self.meta,
            &self.winners,
            &self.confirmed,
            &self.admitted,
            &self.users,
            &self.lock,
            &self.queue,
            &self.queue_ticket,
            &self.queue_results,
            &self.spill_reservations,
            &self.spilled,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn winner_fields_round_trip() {
        assert_eq!(parse_winner_field(&winner_field("u-1", 1)), Some(("u-1", 1)));
        assert_eq!(parse_winner_field(&winner_field("u-1", 3)), Some(("u-1", 3)));
        assert_eq!(parse_winner_field("u-1\u{1f}x"), None);
        assert_eq!(parse_winner_field("u-1\u{1f}1"), None, "slot 1 is written without a separator");
    }

    #[test]
    fn all_keys_of_a_round_share_one_hash_tag() -> anyhow::Result<()> {
        let keys = RoundKeys::new(&EventId::new("marketing", "opening-day")?.round(3));
        for key in keys.all() {
            assert!(key.starts_with("cr:{marketing/opening-day:3}:"), "{key}");
        }
        Ok(())
    }

    #[test]
    fn bucket_zero_is_the_round_and_each_other_bucket_has_its_own_tag() -> anyhow::Result<()> {
        let round = EventId::new("marketing", "opening-day")?.round(3);
        assert_eq!(RoundKeys::bucket(&round, 0), RoundKeys::new(&round));
        assert_eq!(RoundKeys::new(&round).winners, "cr:{marketing/opening-day:3}:winners");
        for key in RoundKeys::bucket(&round, 2).all() {
            assert!(key.starts_with("cr:{marketing/opening-day:3#2}:"), "{key}");
        }
        for bucket in [0, 1, 63] {
            let label = bucket_label(&round, bucket);
            assert_eq!(parse_bucket_label(&label), Some(("marketing/opening-day:3", bucket)));
        }
        assert_eq!(parse_bucket_label("ns/a:1#x"), None);
        Ok(())
    }
}
