//! The winners export for marketing: a round's stored coupons as CSV or JSON lines,
//! streamed from MySQL to a writer in seq order, in constant memory.
//!
//! CSV follows RFC 4180 (a field with a comma, a quote, a line break or an outer space
//! is quoted, quotes doubled). User ids are opaque, so an id that a spreadsheet would
//! run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return) is
//! written with a leading apostrophe in CSV, the usual neutralisation; JSON lines carry
//! every id exactly.
//!
//! Each coupon comes with its audit trail: the request id and the token's `jti` of the
//! request that was admitted, empty (CSV) or `null` (JSON) where the row has none
//! (reconciliation, the queue strategy, rows from before migration 0003). A request id
//! is the client's own text, so it is quoted and neutralised like a user id.

use std::borrow::Cow;
use std::io::Write;

use couponrush_core::db::{self, CouponRecord};
use couponrush_core::event::RoundId;
use futures::StreamExt;
use sqlx::MySqlPool;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the round's coupons from MySQL failed")]
    Database(#[from] sqlx::Error),
    #[error("writing the export failed")]
    Write(#[from] std::io::Error),
}

/// The CSV header; [`csv_line`] writes the fields in this order.
/// The audit columns come last, so that readers of the earlier five keep working.
pub const CSV_HEADER: &str = "user_id,slot,seq,issued_at,persisted_at,request_id,jti";

/// Writes every stored coupon of `round` to `out`; returns how many.
pub async fn write_round(
    pool: &MySqlPool,
    round: &RoundId,
    format: Format,
    out: impl Write,
) -> Result<u64, ExportError> {
    let mut out = std::io::BufWriter::new(out);
    if format == Format::Csv {
        writeln!(out, "{CSV_HEADER}")?;
    }
    let mut rows = std::pin::pin!(db::stream_round_coupons(pool, round));
    let mut written = 0;
    while let Some(record) = rows.next().await {
        let record = record?;
        match format {
            Format::Csv => writeln!(out, "{}", csv_line(&record))?,
            Format::Jsonl => writeln!(out, "{}", json_line(&record))?,
        }
        written += 1;
    }
    out.flush()?;
    Ok(written)
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

pub fn csv_line(record: &CouponRecord) -> String {
    format!(
        "{},{},{},{},{},{},{}",
        csv_field(&record.user),
        record.slot,
        record.seq,
        rfc3339(record.issued_at_ms),
        rfc3339(record.persisted_at_ms),
        csv_field(record.request_id.as_deref().unwrap_or_default()),
        csv_field(record.jti.as_deref().unwrap_or_default()),
    )
}

pub fn json_line(record: &CouponRecord) -> serde_json::Value {
    serde_json::json!({
        "userId": record.user,
        "slot": record.slot,
        "seq": record.seq,
        "issuedAt": rfc3339(record.issued_at_ms),
        "persistedAt": rfc3339(record.persisted_at_ms),
        "requestId": record.request_id,
        "jti": record.jti,
    })
}

/// One CSV field: formula-leading text neutralised, then quoted where RFC 4180 needs it.
pub fn csv_field(text: &str) -> Cow<'_, str> {
    let neutralised: Cow<'_, str> = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    };
    let needs_quotes = neutralised.contains([',', '"', '\n', '\r']) || neutralised.trim() != neutralised;
    if needs_quotes { Cow::Owned(format!("\"{}\"", neutralised.replace('"', "\"\""))) } else { neutralised }
}

/// Peak resident memory of this process in KiB (Linux), for the export's report.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_where_rfc_4180_needs_it() {
        assert_eq!(csv_field("alice"), "alice");
        assert_eq!(csv_field("한국 사용자"), "한국 사용자");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("alice "), "\"alice \"", "a trailing space survives a spreadsheet");
        assert_eq!(csv_field(" bob"), "\" bob\"");
    }

    #[test]
    fn formula_leading_ids_are_neutralised_in_csv_only() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("-1"), "'-1");
        assert_eq!(csv_field("@sum"), "'@sum");
        let record = CouponRecord {
            user: "=1+2".into(),
            slot: 1,
            seq: 7,
            issued_at_ms: 1_800_000_000_123,
            persisted_at_ms: 1_800_000_000_456,
            request_id: None,
            jti: None,
        };
        assert_eq!(json_line(&record)["userId"], "=1+2");
        assert_eq!(csv_line(&record), "'=1+2,1,7,2027-01-15T08:00:00.123Z,2027-01-15T08:00:00.456Z,,");
    }

    #[test]
    fn the_audit_columns_follow_and_are_quoted_like_user_ids() {
        let record = CouponRecord {
            user: "ann".into(),
            slot: 1,
            seq: 3,
            issued_at_ms: 1_800_000_000_123,
            persisted_at_ms: 1_800_000_000_456,
            request_id: Some("=cmd,1".into()),
            jti: Some("t-1".into()),
        };
        assert_eq!(CSV_HEADER.split(',').count(), csv_line(&record).split(',').count() - 1, "one comma is quoted");
        assert_eq!(csv_line(&record), "ann,1,3,2027-01-15T08:00:00.123Z,2027-01-15T08:00:00.456Z,\"'=cmd,1\",t-1");
        let json = json_line(&record);
        assert_eq!((json["requestId"].as_str(), json["jti"].as_str()), (Some("=cmd,1"), Some("t-1")));
        let unattributed = CouponRecord { request_id: None, jti: None, ..record };
        assert!(json_line(&unattributed)["requestId"].is_null() && json_line(&unattributed)["jti"].is_null());
    }
}
