//! Issue 11, finding 4 / guarantee 8: user ids are compared byte for byte everywhere.
//! A JWT `sub` is an opaque, case-sensitive string; ids that differ only by trailing or
//! inner spaces, case, or Unicode normalisation are different users in Redis, in Kafka
//! and in MySQL (whose `utf8mb4_bin` would pad trailing spaces: the column is binary).
//! Both the API answers and the rows are checked, for the Kafka path and a synchronous
//! MySQL path, against the real servers.

use std::collections::HashMap;
use std::time::Duration;

use couponrush_core::event::Strategy;
use couponrush_e2e::{Scope, token};

const USERS: [&str; 14] = [
    "alice",
    "alice ",
    "alice  ",
    " alice",
    "Alice",
    "a lice",
    "a  lice",
    "사용자",
    "사용자 ",
    "ÅSA",
    "åsa",
    "\u{e9}",   // é, one code point
    "e\u{301}", // e + combining acute: looks the same, other bytes
    "x\u{a0}",  // a no-break space is not a space either
];

async fn distinct_users_get_distinct_rows(strategy: Strategy) -> anyhow::Result<()> {
    let scope = Scope::new(&format!("user-ids-{strategy}")).await?;
    let round = scope.round("bytes")?;
    scope.prewarm(&round, strategy, 100, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = if strategy == Strategy::KafkaAsync { Some(scope.start_consumer().await?) } else { None };
    let url = issuer.issue_url(&round);
    let client = reqwest::Client::new();

    let mut seqs: HashMap<&str, u64> = HashMap::new();
    for user in USERS {
        let response = client.post(&url).bearer_auth(token(user)).send().await?;
        let code = response.status().as_u16();
        let body: serde_json::Value = response.json().await?;
        assert_eq!((code, body["status"].as_str()), (201, Some("ISSUED")), "{user:?}: {body}");
        let seq = body["seq"].as_u64().ok_or_else(|| anyhow::anyhow!("no seq for {user:?}"))?;
        assert!(!seqs.values().any(|s| *s == seq), "{user:?} got seq {seq} twice");
        seqs.insert(user, seq);
    }
    // A repeat is recognised as that user (and only that user) again.
    for user in USERS {
        let response = client.post(&url).bearer_auth(token(user)).send().await?;
        let code = response.status().as_u16();
        let body: serde_json::Value = response.json().await?;
        assert_eq!(code, 200, "{user:?}: {body}");
        assert_eq!(body["seq"].as_u64(), seqs.get(user).copied(), "{user:?}: {body}");
    }

    scope.wait_for_rows(&round, USERS.len() as u64, Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await; // a late extra row would show now
    let pool = scope.pool().await?;
    let rows: Vec<(Vec<u8>, u32)> = sqlx::query_as("SELECT user_id, seq FROM coupons WHERE event = ? AND round_no = ?")
        .bind(round.event.to_string())
        .bind(round.round)
        .fetch_all(&pool)
        .await?;
    let mut rows: Vec<(Vec<u8>, u64)> = rows.into_iter().map(|(user, seq)| (user, u64::from(seq))).collect();
    let mut expected: Vec<(Vec<u8>, u64)> = seqs.iter().map(|(user, seq)| (user.as_bytes().to_vec(), *seq)).collect();
    rows.sort();
    expected.sort();
    assert_eq!(rows, expected, "rows hold exactly the ids' bytes with their seqs");
    // `GET …/issue` finds each user's own row, by bytes.
    for user in USERS {
        let body: serde_json::Value = client.get(&url).bearer_auth(token(user)).send().await?.json().await?;
        assert_eq!(body["seq"].as_u64(), seqs.get(user).copied(), "{user:?}: {body}");
        assert_eq!(body["persisted"], true, "{user:?}: {body}");
    }
    if let Some(consumer) = consumer {
        consumer.stop().await?;
    }
    issuer.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_async_compares_user_ids_byte_for_byte() -> anyhow::Result<()> {
    distinct_users_get_distinct_rows(Strategy::KafkaAsync).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_lock_compares_user_ids_byte_for_byte() -> anyhow::Result<()> {
    distinct_users_get_distinct_rows(Strategy::DbLock).await
}
