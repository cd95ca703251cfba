//! The MySQL side: schema (embedded migrations), the idempotent batch insert the
//! consumer uses, and the synchronous issue transaction of the non-Kafka strategies.
//! The SQL is plain MySQL 8 / MariaDB 10.11 syntax.

use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{MySql, QueryBuilder, Row};

use crate::event::{RoundId, RoundSpec};
use crate::message::{Attribution, IssuedCoupon};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// MySQL's "duplicate entry" error code.
const ER_DUP_ENTRY: &str = "23000";
/// Rows per multi-row INSERT stay under MySQL's placeholder limit with a wide margin.
const MAX_ROWS_PER_INSERT: usize = 2_000;

pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    connect_with(connect_options(url, None)?, max_connections).await
}

/// The options of MySQL at `url`, the server's certificate checked against `ca_pem` (PEM
/// text) when given. The URL's `ssl-mode` says whether TLS is required and what is
/// verified (`VERIFY_IDENTITY`: the CA and the host name).
pub fn connect_options(url: &str, ca_pem: Option<&str>) -> Result<MySqlConnectOptions, sqlx::Error> {
    let options: MySqlConnectOptions = url.parse()?;
    Ok(match ca_pem {
        Some(ca_pem) => options.ssl_ca_from_pem(ca_pem.as_bytes().to_vec()),
        None => options,
    })
}

/// A pool of at most `max_connections`.
pub async fn connect_with(options: MySqlConnectOptions, max_connections: u32) -> Result<MySqlPool, sqlx::Error> {
    MySqlPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
}

/// Applies the embedded migrations. sqlx holds a MySQL advisory lock while migrating,
/// so several replicas starting at once apply each migration once.
pub async fn migrate(pool: &MySqlPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// Inserts the coupons in one multi-row statement per chunk inside one transaction.
/// Rows that already exist (same round and user slot, or same seq) are skipped, which
/// makes redelivery harmless (the first row keeps its attribution). Returns how many
/// rows were new.
pub async fn insert_coupons(pool: &MySqlPool, coupons: &[IssuedCoupon]) -> Result<u64, sqlx::Error> {
    if coupons.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    let mut inserted = 0;
    for chunk in coupons.chunks(MAX_ROWS_PER_INSERT) {
        let mut insert: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT IGNORE INTO coupons (event, round_no, user_id, slot, seq, request_id, jti, issued_at) ",
        );
        insert.push_values(chunk, |mut row, coupon| {
            row.push_bind(&coupon.event)
                .push_bind(coupon.round)
                .push_bind(&coupon.user)
                .push_bind(coupon.slot)
                .push_bind(coupon.seq)
                .push_bind(coupon.request_id.as_deref())
                .push_bind(coupon.jti.as_deref())
                .push("FROM_UNIXTIME(")
                .push_bind_unseparated(coupon.issued_at_ms)
                .push_unseparated(" / 1000)");
        });
        inserted += insert.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(inserted)
}

/// Writes (or updates) the round's stock row. `issued` is left as it is, so calling it
/// again, for example with more stock, never forgets coupons already issued.
pub async fn upsert_round(pool: &MySqlPool, round: &RoundId, spec: &RoundSpec) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO coupon_rounds (event, round_no, stock, per_user, start_ms, end_ms, stock_buckets) \
         VALUES (?, ?, ?, ?, ?, ?, ?) \
         ON DUPLICATE KEY UPDATE stock = VALUES(stock), per_user = VALUES(per_user), \
         start_ms = VALUES(start_ms), end_ms = VALUES(end_ms), stock_buckets = VALUES(stock_buckets)",
    )
    .bind(round.event.to_string())
    .bind(round.round)
    .bind(spec.stock)
    .bind(spec.per_user)
    .bind(spec.start_ms)
    .bind(spec.end_ms.unwrap_or(0))
    .bind(spec.buckets)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes the round's stock row (its coupons stay: they are the record).
pub async fn delete_round(pool: &MySqlPool, round: &RoundId) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM coupon_rounds WHERE event = ? AND round_no = ?")
        .bind(round.event.to_string())
        .bind(round.round)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many coupons of the round are in MySQL.
pub async fn count_coupons(pool: &MySqlPool, round: &RoundId) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM coupons WHERE event = ? AND round_no = ?")
        .bind(round.event.to_string())
        .bind(round.round)
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// The seqs of the round that have a row.
pub async fn persisted_seqs(pool: &MySqlPool, round: &RoundId) -> Result<Vec<u32>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM coupons WHERE event = ? AND round_no = ?")
        .bind(round.event.to_string())
        .bind(round.round)
        .fetch_all(pool)
        .await
}

/// Every row of the round: (user, slot, seq). User ids are stored as bytes (they came in
/// as UTF-8, so they decode; anything else would be shown lossily, never dropped).
pub async fn round_coupons(pool: &MySqlPool, round: &RoundId) -> Result<Vec<(String, u32, u32)>, sqlx::Error> {
    let rows: Vec<(Vec<u8>, u16, u32)> =
        sqlx::query_as("SELECT user_id, slot, seq FROM coupons WHERE event = ? AND round_no = ?")
            .bind(round.event.to_string())
            .bind(round.round)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(user, slot, seq)| (stored_text(user), u32::from(slot), seq)).collect())
}

/// The rows of the round that hold one of `seqs` or belong to one of `users`: (user,
/// slot, seq). The consumer uses it to tell a harmless duplicate (the same coupon again)
/// from a conflict (another coupon under the same seq or user slot).
pub async fn coupons_matching(
    pool: &MySqlPool,
    round: &RoundId,
    seqs: &[u32],
    users: &[&str],
) -> Result<Vec<(String, u32, u32)>, sqlx::Error> {
    if seqs.is_empty() && users.is_empty() {
        return Ok(Vec::new());
    }
    let mut query: QueryBuilder<MySql> = QueryBuilder::new("SELECT user_id, slot, seq FROM coupons WHERE event = ");
    query.push_bind(round.event.to_string()).push(" AND round_no = ").push_bind(round.round).push(" AND (seq IN (");
    let mut separated = query.separated(", ");
    // `IN ()` is not SQL: 0 is never a seq.
    separated.push_bind(0u32);
    for seq in seqs {
        separated.push_bind(*seq);
    }
    query.push(") OR user_id IN (");
    let mut separated = query.separated(", ");
    separated.push_bind("");
    for user in users {
        separated.push_bind(*user);
    }
    query.push("))");
    let rows: Vec<(Vec<u8>, u16, u32)> = query.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(user, slot, seq)| (stored_text(user), u32::from(slot), seq)).collect())
}

fn stored_text(user: Vec<u8>) -> String {
    String::from_utf8(user).unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// The seqs `user` holds in the round, in slot order.
pub async fn user_seqs(pool: &MySqlPool, round: &RoundId, user: &str) -> Result<Vec<u32>, sqlx::Error> {
    sqlx::query_scalar("SELECT seq FROM coupons WHERE event = ? AND round_no = ? AND user_id = ? ORDER BY slot")
        .bind(round.event.to_string())
        .bind(round.round)
        .bind(user)
        .fetch_all(pool)
        .await
}

/// The stock row of a round: stock, issued so far, and the gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoundRow {
    pub stock: u32,
    pub per_user: u32,
    pub issued: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The round's stock buckets (1 for a round without).
    pub buckets: u32,
}

pub async fn round_row(pool: &MySqlPool, round: &RoundId) -> Result<Option<RoundRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT stock, per_user, issued, start_ms, end_ms, stock_buckets FROM coupon_rounds \
         WHERE event = ? AND round_no = ?",
    )
    .bind(round.event.to_string())
    .bind(round.round)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(RoundRow {
            stock: row.try_get(0)?,
            per_user: row.try_get(1)?,
            issued: row.try_get(2)?,
            start_ms: row.try_get(3)?,
            end_ms: row.try_get(4)?,
            buckets: row.try_get(5)?,
        })
    })
    .transpose()
}

/// Whether [`issue_sync`] locks the stock row before it reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowLock {
    /// `SELECT … FOR UPDATE`: every request queues on the row (the `db-lock` design).
    ForUpdate,
    /// A plain read; the conditional `UPDATE … WHERE issued < stock` still decides.
    None,
}

/// Outcome of [`issue_sync`]; the same vocabulary as the Redis admission.
pub use crate::round_store::admission::Admission as SyncOutcome;

/// Issues one coupon to `user` in one MySQL transaction, gated by the database clock;
/// the row records `attribution`.
/// Correct on its own under any concurrency: the stock decrement is a conditional
/// update (never below zero), the seq comes from that same update, and the unique keys
/// reject a second coupon for the same user slot.
pub async fn issue_sync(
    pool: &MySqlPool,
    round: &RoundId,
    user: &str,
    lock: RowLock,
    attribution: &Attribution,
) -> Result<SyncOutcome, sqlx::Error> {
    let event = round.event.to_string();
    let mut tx = pool.begin().await?;
    let read = match lock {
        RowLock::ForUpdate => {
            "SELECT stock, per_user, issued, start_ms, end_ms, CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) \
             FROM coupon_rounds WHERE event = ? AND round_no = ? FOR UPDATE"
        }
        RowLock::None => {
            "SELECT stock, per_user, issued, start_ms, end_ms, CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) \
             FROM coupon_rounds WHERE event = ? AND round_no = ?"
        }
    };
    let Some(row) = sqlx::query(read).bind(&event).bind(round.round).fetch_optional(&mut *tx).await? else {
        return Ok(SyncOutcome::UnknownRound);
    };
    let (stock, per_user, issued): (u32, u32, u32) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let (start_ms, end_ms, now_ms): (i64, i64, i64) = (row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
    if now_ms < start_ms {
        return Ok(SyncOutcome::NotStarted { starts_at_ms: start_ms });
    }
    if end_ms > 0 && now_ms >= end_ms {
        return Ok(SyncOutcome::Ended);
    }
    let held: Vec<u32> =
        sqlx::query_scalar("SELECT seq FROM coupons WHERE event = ? AND round_no = ? AND user_id = ? ORDER BY slot")
            .bind(&event)
            .bind(round.round)
            .bind(user)
            .fetch_all(&mut *tx)
            .await?;
    if let Some(&seq) = held.last().filter(|_| held.len() >= per_user as usize) {
        return Ok(SyncOutcome::AlreadyIssued { seq });
    }
    if issued >= stock {
        return Ok(SyncOutcome::SoldOut);
    }
    // LAST_INSERT_ID(expr) hands the new value back in the OK packet: the seq.
    let updated = sqlx::query(
        "UPDATE coupon_rounds SET issued = LAST_INSERT_ID(issued + 1) \
         WHERE event = ? AND round_no = ? AND issued < stock",
    )
    .bind(&event)
    .bind(round.round)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(SyncOutcome::SoldOut);
    }
    let seq = u32::try_from(updated.last_insert_id()).unwrap_or(u32::MAX);
    let slot = u32::try_from(held.len()).unwrap_or(u32::MAX) + 1;
    let inserted = sqlx::query(
        "INSERT INTO coupons (event, round_no, user_id, slot, seq, request_id, jti, issued_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, NOW(3))",
    )
    .bind(&event)
    .bind(round.round)
    .bind(user)
    .bind(slot)
    .bind(seq)
    .bind(attribution.request_id.as_deref())
    .bind(attribution.jti.as_deref())
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some(ER_DUP_ENTRY) => {
            // The same user won a concurrent request for this slot: undo our decrement.
            tx.rollback().await?;
            let seqs = user_seqs(pool, round, user).await?;
            return Ok(match seqs.last() {
                Some(&seq) => SyncOutcome::AlreadyIssued { seq },
                None => SyncOutcome::SoldOut,
            });
        }
        Err(error) => return Err(error),
    }
    tx.commit().await?;
    Ok(SyncOutcome::Issued { seq, slot, remaining: stock.saturating_sub(seq), at_ms: now_ms })
}

/// Whether an error is worth retrying as is (deadlock, lock wait timeout, lost connection).
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001") | Some("HY000")),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        _ => false,
    }
}

/// One stored coupon, as the winners export shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CouponRecord {
    pub user: String,
    pub slot: u32,
    pub seq: u32,
    /// Admission time on the Redis clock (the message's), epoch milliseconds.
    pub issued_at_ms: i64,
    /// When the row was written, epoch milliseconds.
    pub persisted_at_ms: i64,
    /// The admitted request's id; `None` where the row has NULL (see migration 0003).
    pub request_id: Option<String>,
    /// The admitted request's token `jti`, if it had one.
    pub jti: Option<String>,
}

/// The round's coupons in seq order, streamed from the server row by row (the
/// `(event, round_no, seq)` unique key serves the order, so nothing is sorted or held
/// in memory: a million rows cost what one does).
pub fn stream_round_coupons<'a>(
    pool: &'a MySqlPool,
    round: &RoundId,
) -> impl futures::Stream<Item = Result<CouponRecord, sqlx::Error>> + 'a {
    use futures::StreamExt;
    // The times go in and come out through the same session time zone (FROM_UNIXTIME
    // on insert), so the epoch value is the one that was written.
    sqlx::query(
        "SELECT user_id, slot, seq, CAST(ROUND(UNIX_TIMESTAMP(issued_at) * 1000) AS SIGNED), \
         CAST(ROUND(UNIX_TIMESTAMP(persisted_at) * 1000) AS SIGNED), request_id, jti \
         FROM coupons WHERE event = ? AND round_no = ? ORDER BY seq",
    )
    .bind(round.event.to_string())
    .bind(round.round)
    .fetch(pool)
    .map(|row| {
        let row = row?;
        let slot: u16 = row.try_get(1)?;
        Ok(CouponRecord {
            user: stored_text(row.try_get(0)?),
            slot: u32::from(slot),
            seq: row.try_get(2)?,
            issued_at_ms: row.try_get(3)?,
            persisted_at_ms: row.try_get(4)?,
            request_id: row.try_get::<Option<Vec<u8>>, _>(5)?.map(stored_text),
            jti: row.try_get::<Option<Vec<u8>>, _>(6)?.map(stored_text),
        })
    })
}
