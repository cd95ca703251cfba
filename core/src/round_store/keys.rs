//! The Redis key layout. Every key of a round starts with `cr:{namespace/name:round}:`;
//! the braces are a Redis Cluster hash tag, so all of a round lives on one shard and a
//! single Lua script may touch all of it. Event names cannot contain braces
//! ([`crate::event::EventId::new`] rejects them), so a tag can never be forged.

use crate::event::{EventId, RoundId};

/// Published (with the round id as payload) when a round's last coupon is admitted.
pub const SOLD_OUT_CHANNEL: &str = "couponrush:sold-out";

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
}

impl RoundKeys {
    pub fn new(round: &RoundId) -> Self {
        let prefix = format!("cr:{{{round}}}:");
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
        }
    }

    /// Every key of the round, for cleanup.
    pub fn all(&self) -> [&str; 9] {
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
}
