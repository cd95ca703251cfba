//! Reconciliation: every admission in Redis must end up as a MySQL row. When an issuer
//! dies between admitting and publishing, or the delivery outcome was unknown, the
//! winners hash holds a coupon that MySQL lacks; this re-publishes those. Re-publishing is
//! always safe: the consumer confirms against Redis and inserts idempotently.
//!
//! A winner counts as persisted only if a row holds the same user, slot **and** seq. After
//! Redis lost writes (a restart without persistence, a failover to a lagging replica) it
//! can hand a seq that already has a row to another user; that coupon can never be stored
//! under its seq (`UNIQUE(event, round, seq)` keeps the first), so it is a conflict:
//! reported loudly and counted, never counted as persisted and never re-published.

use std::collections::HashMap;

use sqlx::MySqlPool;

use crate::event::RoundId;
use crate::kafka::Publisher;
use crate::message::IssuedCoupon;
use crate::redis_conn::RedisConn;
use crate::round_store::keys::parse_winner_field;
use crate::round_store::meta::all_winners;
use crate::{db, wall_clock_ms};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("reading the winners from Redis failed")]
    Redis(#[from] redis::RedisError),
    #[error("reading the persisted coupons from MySQL failed")]
    Database(#[from] sqlx::Error),
    #[error("re-publishing a missing coupon failed")]
    Publish(#[from] rdkafka::error::KafkaError),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Winners in Redis.
    pub admitted: u64,
    /// Winners with a row of the same user, slot and seq.
    pub persisted: u64,
    pub republished: u64,
    /// Winners that can never become their own row: their seq belongs to another user's
    /// row, or their user's slot holds a row with another seq. Non-zero means Redis lost
    /// writes; each one is logged at error level.
    pub conflicts: u64,
}

/// One winner that disagrees with MySQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub user: String,
    pub slot: u32,
    pub seq: u32,
    /// The row that holds this seq (or this user's slot) instead: its user and seq.
    pub row_user: String,
    pub row_seq: u32,
}

impl Conflict {
    /// The error line for a conflict, the same wherever one is found (the consumer's
    /// batches, reconciliation): operators grep for it.
    pub fn log(&self, round: &RoundId) {
        tracing::error!(
            round = %round,
            user = %self.user,
            slot = self.slot,
            seq = self.seq,
            row_user = %self.row_user,
            row_seq = self.row_seq,
            "an admitted coupon conflicts with a row: Redis handed out a seq twice (it lost writes); this coupon is not persisted"
        );
    }
}

/// What comparing the winners with the rows found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    pub persisted: u64,
    /// (user, slot, seq) of winners without any row: to re-publish.
    pub missing: Vec<(String, u32, u32)>,
    pub conflicts: Vec<Conflict>,
}

/// Compares winners (`winner_field` → seq) with rows (user, slot, seq), matching on all
/// three. User ids are compared byte for byte, as everywhere.
pub fn compare(winners: &[(String, u32)], rows: &[(String, u32, u32)]) -> Comparison {
    let by_seq: HashMap<u32, (&str, u32)> =
        rows.iter().map(|(user, slot, seq)| (*seq, (user.as_str(), *slot))).collect();
    let by_slot: HashMap<(&str, u32), u32> =
        rows.iter().map(|(user, slot, seq)| ((user.as_str(), *slot), *seq)).collect();
    let mut comparison = Comparison::default();
    for (field, seq) in winners {
        let Some((user, slot)) = parse_winner_field(field) else {
            // Not a field couponrush writes: nothing to re-publish from it.
            tracing::warn!(field, seq, "skipping a winners field that names no user slot");
            continue;
        };
        let conflict = |row_user: &str, row_seq: u32| Conflict {
            user: user.to_owned(),
            slot,
            seq: *seq,
            row_user: row_user.to_owned(),
            row_seq,
        };
        match (by_seq.get(seq), by_slot.get(&(user, slot))) {
            (Some(&(row_user, row_slot)), _) if row_user == user && row_slot == slot => comparison.persisted += 1,
            (Some(&(row_user, _)), _) => comparison.conflicts.push(conflict(row_user, *seq)),
            (None, Some(&row_seq)) => comparison.conflicts.push(conflict(user, row_seq)),
            (None, None) => comparison.missing.push((user.to_owned(), slot, *seq)),
        }
    }
    comparison
}

/// Compares the round's winners (of every stock bucket) with its rows, re-publishes what
/// is missing and reports conflicts.
pub async fn reconcile_round(
    redis: &mut RedisConn,
    pool: &MySqlPool,
    publisher: &Publisher,
    round: &RoundId,
) -> Result<ReconcileReport, ReconcileError> {
    let winners = all_winners(redis, round).await?;
    let rows = db::round_coupons(pool, round).await?;
    let comparison = compare(&winners, &rows);
    let mut report = ReconcileReport {
        admitted: winners.len() as u64,
        persisted: comparison.persisted,
        republished: 0,
        conflicts: comparison.conflicts.len() as u64,
    };
    for conflict in &comparison.conflicts {
        conflict.log(round);
    }
    for (user, slot, seq) in comparison.missing {
        tracing::info!(round = %round, user, seq, "re-publishing an admitted coupon without a row");
        // No request id and no jti: Redis' winners hash keeps neither, so the row gets
        // NULLs (the audit trail can only say that reconciliation wrote it).
        publisher.publish(&IssuedCoupon::new(round, &user, seq, slot, wall_clock_ms())).await?;
        report.republished += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round_store::keys::winner_field;

    fn winner(user: &str, slot: u32, seq: u32) -> (String, u32) {
        (winner_field(user, slot), seq)
    }

    fn row(user: &str, slot: u32, seq: u32) -> (String, u32, u32) {
        (user.to_owned(), slot, seq)
    }

    #[test]
    fn a_winner_is_persisted_only_with_its_own_user_slot_and_seq() {
        let winners = [winner("ann", 1, 1), winner("bob", 1, 2), winner("cid", 2, 3)];
        let rows = [row("ann", 1, 1), row("cid", 2, 3)];
        let found = compare(&winners, &rows);
        assert_eq!(found.persisted, 2);
        assert_eq!(found.missing, vec![("bob".to_owned(), 1, 2)]);
        assert!(found.conflicts.is_empty());
    }

    #[test]
    fn a_seq_reused_for_another_user_is_a_conflict_not_a_persisted_coupon() {
        // Redis lost ann's admission of seq 1 and gave seq 1 to bob.
        let found = compare(&[winner("bob", 1, 1)], &[row("ann", 1, 1)]);
        assert_eq!(found.persisted, 0);
        assert!(found.missing.is_empty(), "re-publishing would be dropped by UNIQUE(seq)");
        assert_eq!(
            found.conflicts,
            vec![Conflict { user: "bob".into(), slot: 1, seq: 1, row_user: "ann".into(), row_seq: 1 }]
        );
    }

    #[test]
    fn a_user_readmitted_under_a_new_seq_is_a_conflict() {
        let found = compare(&[winner("ann", 1, 7)], &[row("ann", 1, 1)]);
        assert_eq!(found.persisted, 0);
        assert_eq!(found.conflicts.len(), 1);
        assert_eq!(found.conflicts[0].row_seq, 1);
    }

    #[test]
    fn user_ids_are_compared_byte_for_byte() {
        let found = compare(&[winner("ann ", 1, 2)], &[row("ann", 1, 1)]);
        assert_eq!(found.missing, vec![("ann ".to_owned(), 1, 2)]);
    }
}
