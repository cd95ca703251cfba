//! Issue 12, item 5: the audit trail, against the real Redis, Kafka and MariaDB.
//!
//! - A 201 is attributable: its row holds the request's `requestId` (or the id the issuer
//!   made for it) and the token's `jti`, through the Kafka path and a synchronous MySQL
//!   path; a `jti` that cannot be recorded is left out, the coupon is not.
//! - A `requestId` that cannot be recorded is a 400 that admits nothing.
//! - The message versions in a rolling upgrade: a version-1 message (an older issuer)
//!   and a version-2 one are both stored, v1 unattributed; a coupon re-published by
//!   reconciliation has no request (NULLs); an unknown version is dead-lettered.
//! - The issuer binary, logging at `trace` through a spike (admissions, sold-out, refused
//!   tokens, result polls, both paths), writes no token and not the JWT secret.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use couponrush_core::event::{RoundId, Strategy};
use couponrush_core::kafka::Publisher;
use couponrush_core::message::{Attribution, IssuedCoupon, MAX_AUDIT_ID_BYTES};
use couponrush_core::reconcile;
use couponrush_core::round_store::admission::{self, Admission};
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_e2e::{JWT_SECRET, Scope, binary, token_with_claims, wait_until};
use futures::StreamExt;
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use sqlx::MySqlPool;
use tokio::io::AsyncBufReadExt;

fn token_with_jti(user: &str, jti: Option<&str>) -> String {
    let exp = couponrush_core::wall_clock_ms() / 1000 + 3600;
    match jti {
        Some(jti) => token_with_claims(&json!({"sub": user, "exp": exp, "jti": jti})),
        None => token_with_claims(&json!({"sub": user, "exp": exp})),
    }
}

/// A row's `request_id` and `jti` columns, NULL or bytes.
type AuditBytes = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The (request_id, jti) of `user`'s row in the round, once it is there.
async fn audit_columns(
    pool: &MySqlPool,
    round: &RoundId,
    user: &str,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (request_id, jti) = loop {
        let row: Option<AuditBytes> =
            sqlx::query_as("SELECT request_id, jti FROM coupons WHERE event = ? AND round_no = ? AND user_id = ?")
                .bind(round.event.to_string())
                .bind(round.round)
                .bind(user)
                .fetch_optional(pool)
                .await?;
        match row {
            Some(row) => break row,
            None if std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            None => anyhow::bail!("no row of {user} in {round} within 30 s"),
        }
    };
    let text = |bytes: Option<Vec<u8>>| bytes.map(String::from_utf8).transpose();
    Ok((text(request_id)?, text(jti)?))
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut request = client.post(url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn a_201_is_attributable(strategy: Strategy) -> anyhow::Result<()> {
    let scope = Scope::new(&format!("audit-{strategy}")).await?;
    let round = scope.round("audit")?;
    scope.prewarm(&round, strategy, 10, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = if strategy == Strategy::KafkaAsync { Some(scope.start_consumer().await?) } else { None };
    let (url, client, pool) = (issuer.issue_url(&round), reqwest::Client::new(), scope.pool().await?);

    // The client's request id and the token's jti, both recorded.
    let ann = token_with_jti("ann", Some("jti-ann-1"));
    let (status, body) = post(&client, &url, &ann, Some(json!({"requestId": "req-1"}))).await?;
    assert_eq!(status, 201, "{body}");
    let (request_id, jti) = audit_columns(&pool, &round, "ann").await?;
    assert_eq!((request_id.as_deref(), jti.as_deref()), (Some("req-1"), Some("jti-ann-1")));

    // No body and no jti: the issuer's own request id (128 random bits in hex), no jti.
    let (status, body) = post(&client, &url, &token_with_jti("bob", None), None).await?;
    assert_eq!(status, 201, "{body}");
    let (request_id, jti) = audit_columns(&pool, &round, "bob").await?;
    let request_id = request_id.context("a generated request id")?;
    assert!(request_id.len() == 32 && request_id.bytes().all(|b| b.is_ascii_hexdigit()), "{request_id}");
    assert_eq!(jti, None);

    // A jti that cannot be recorded (too long, a control character) is left out; the
    // token was valid, so the coupon is issued and stored all the same.
    for (user, jti) in [("cid", "j".repeat(MAX_AUDIT_ID_BYTES + 1)), ("dee", "a\nforged log line".to_owned())] {
        let (status, body) =
            post(&client, &url, &token_with_jti(user, Some(&jti)), Some(json!({"requestId": format!("req-{user}")})))
                .await?;
        assert_eq!(status, 201, "{user}: {body}");
        let (request_id, recorded_jti) = audit_columns(&pool, &round, user).await?;
        assert_eq!((request_id, recorded_jti), (Some(format!("req-{user}")), None), "{user}");
    }

    // A request id that cannot be recorded is a 400 that admits nothing.
    let eve = token_with_jti("eve", Some("jti-eve"));
    let refused = [
        json!({"requestId": "x".repeat(MAX_AUDIT_ID_BYTES + 1)}),
        json!({"requestId": "한".repeat(22)}), // 22 characters, 66 bytes
        json!({"requestId": "a\u{1b}[31m"}),
        json!({"requestId": "req\r\nX-Forged: 1"}),
        json!({"requestId": ""}),
    ];
    for body in refused {
        let (status, answer) = post(&client, &url, &eve, Some(body.clone())).await?;
        assert_eq!((status, answer["status"].as_str()), (400, Some("BAD_REQUEST")), "{body}: {answer}");
    }
    let (status, _) = post(&client, &url, &eve, Some(json!({"requestId": "x".repeat(MAX_AUDIT_ID_BYTES)}))).await?;
    assert_eq!(status, 201, "a request id of exactly the bound is accepted");
    let (request_id, _) = audit_columns(&pool, &round, "eve").await?;
    assert_eq!(request_id, Some("x".repeat(MAX_AUDIT_ID_BYTES)));
    // Five coupons were issued, by five 201s, and the refused requests took none.
    let state: serde_json::Value = client
        .get(format!("{}/api/v1/events/{}/{}", issuer.base_url(), round.event.namespace, round.event.name))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(state["remaining"], 5, "{state}");
    scope.wait_for_rows(&round, 5, Duration::from_secs(30)).await?;
    assert_eq!(couponrush_core::db::count_coupons(&pool, &round).await?, 5);

    if let Some(consumer) = consumer {
        consumer.stop().await?;
    }
    issuer.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_is_attributable_through_kafka() -> anyhow::Result<()> {
    a_201_is_attributable(Strategy::KafkaAsync).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_is_attributable_through_a_mysql_transaction() -> anyhow::Result<()> {
    a_201_is_attributable(Strategy::DbLock).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_message_versions_are_stored_and_reconciled_coupons_are_unattributed() -> anyhow::Result<()> {
    let scope = Scope::new("audit-versions").await?;
    let round = scope.round("versions")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 5, Duration::ZERO).await?;
    let consumer = scope.start_consumer().await?;
    let (keys, label) = (RoundKeys::new(&round), round.to_string());
    let mut redis = scope.redis().await?;
    let pool = scope.pool().await?;
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &scope.env.kafka_brokers).create()?;
    let send = |key: &'static str, payload: Vec<u8>| {
        let (producer, topic) = (producer.clone(), scope.topic.clone());
        async move {
            producer
                .send(FutureRecord::to(&topic).key(key).payload(&payload), Duration::from_secs(5))
                .await
                .map_err(|(error, _)| error)
        }
    };
    let admit = |user: &'static str| {
        let (keys, label, mut redis) = (keys.clone(), label.clone(), redis.clone());
        async move {
            match admission::admit(&mut redis, &keys, &label, user).await? {
                Admission::Issued { seq, slot, at_ms, .. } => anyhow::Ok((seq, slot, at_ms)),
                other => anyhow::bail!("{user} not admitted: {other:?}"),
            }
        }
    };

    // What an issuer from before the audit trail writes, byte for byte.
    let (seq, slot, at_ms) = admit("old").await?;
    let v1 = format!(
        r#"{{"v":1,"event":"{}","round":{},"user":"old","seq":{seq},"slot":{slot},"issued_at_ms":{at_ms}}}"#,
        round.event, round.round
    );
    send("old", v1.into_bytes()).await?;
    // What this build writes.
    let (seq, slot, at_ms) = admit("new").await?;
    let attribution = Attribution::new(Some("req-new".into()), Some("jti-new".into()));
    send("new", IssuedCoupon::new(&round, "new", seq, slot, at_ms).attributed(attribution).encode()).await?;
    // An admission whose issuer died before publishing: reconciliation publishes it.
    admit("lost").await?;
    scope.wait_for_rows(&round, 2, Duration::from_secs(20)).await?;
    let publisher = Publisher::new(&scope.env.kafka(), &scope.topic, Duration::from_secs(5))?;
    let report = reconcile::reconcile_round(&mut redis, &pool, &publisher, &round).await?;
    assert_eq!(report.republished, 1, "{report:?}");

    assert_eq!(audit_columns(&pool, &round, "old").await?, (None, None), "a v1 message has no attribution");
    assert_eq!(audit_columns(&pool, &round, "new").await?, (Some("req-new".into()), Some("jti-new".into())));
    assert_eq!(audit_columns(&pool, &round, "lost").await?, (None, None), "reconciliation knows no request");

    // A version this build does not know is dead-lettered, with the reason.
    let v3 = br#"{"v":3,"event":"a/b","round":1,"user":"x","seq":1,"slot":1,"issued_at_ms":0}"#.to_vec();
    send("x", v3.clone()).await?;
    let letter = scope.first_dead_letter().await?;
    assert_eq!(letter.payload(), Some(&v3[..]));
    let reason = letter
        .headers()
        .and_then(|headers| headers.iter().find(|h| h.key == "reason").and_then(|h| h.value))
        .map(|v| String::from_utf8_lossy(v).into_owned());
    assert!(reason.as_deref().is_some_and(|r| r.contains("version 3 is not supported")), "{reason:?}");
    assert_eq!(couponrush_core::db::count_coupons(&pool, &round).await?, 3);
    consumer.stop().await
}

/// The issuer binary as a child process, its stderr collected as it comes.
struct LoggingIssuer {
    child: tokio::process::Child,
    base_url: String,
    log: Arc<Mutex<String>>,
    reader: tokio::task::JoinHandle<()>,
}

impl LoggingIssuer {
    async fn start(scope: &Scope, rust_log: &str) -> anyhow::Result<Self> {
        let backends = scope.backends();
        let mut child = tokio::process::Command::new(binary("couponrush-issuer")?)
            .env("REDIS_URL", &backends.redis_url)
            .env("DATABASE_URL", &backends.database_url)
            .env("KAFKA_BROKERS", &backends.kafka_brokers)
            .env("KAFKA_TOPIC", &backends.kafka_topic)
            // The environment, as the chart gives it, not argv.
            .env("JWT_HS256_SECRET", JWT_SECRET)
            .env("LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .env("SHUTDOWN_GRACE", "3s")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let reader = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut log) = log.lock() {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            })
        };
        let mut addr = None;
        wait_until("the issuer's listening line", Duration::from_secs(30), || {
            addr = log.lock().ok().and_then(|log| listening_addr(&log));
            let found = addr.is_some();
            async move { Ok(found) }
        })
        .await?;
        let base_url = format!("http://{}", addr.context("address")?);
        wait_until("issuer ready", Duration::from_secs(30), || async {
            Ok(reqwest::get(format!("{base_url}/readyz")).await.is_ok_and(|r| r.status().is_success()))
        })
        .await?;
        Ok(Self { child, base_url, log, reader })
    }

    /// Stops the issuer with SIGTERM (its graceful path logs too) and returns all it logged.
    async fn stop(mut self) -> anyhow::Result<String> {
        let pid = self.child.id().context("pid")?;
        let status = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.context("issuer did not stop")??;
        tokio::time::timeout(Duration::from_secs(10), &mut self.reader).await.context("stderr not closed")??;
        let log = self.log.lock().map_err(|_| anyhow::anyhow!("log lock poisoned"))?.clone();
        Ok(log)
    }
}

fn listening_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|line| line.contains("listening"))?;
    let start = line.find("addr=")? + "addr=".len();
    Some(line[start..].split_whitespace().next()?.to_owned())
}

/// The parts of `token` that must not appear in a log: the whole token, and its
/// signature on its own (what makes it a credential).
fn secrets_of(token: &str) -> Vec<String> {
    let mut parts = vec![token.to_owned()];
    if let Some(signature) = token.rsplit('.').next().filter(|s| s.len() >= 16) {
        parts.push(signature.to_owned());
    }
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuer_logs_no_token_and_no_secret_even_at_trace() -> anyhow::Result<()> {
    let scope = Scope::new("audit-logs").await?;
    let (kafka_round, sync_round) = (scope.round("logs-kafka")?, scope.round("logs-sync")?);
    scope.prewarm(&kafka_round, Strategy::KafkaAsync, 20, Duration::ZERO).await?;
    scope.prewarm(&sync_round, Strategy::DbLock, 5, Duration::ZERO).await?;
    let issuer = LoggingIssuer::start(&scope, "trace").await?;
    let consumer = scope.start_consumer().await?;
    let issue_url = |round: &RoundId| {
        format!("{}/api/v1/events/{}/{}/issue", issuer.base_url, round.event.namespace, round.event.name)
    };
    let client = reqwest::Client::new();

    // 40 users against 20 coupons, 16 at a time, each with its own token (and jti).
    let users: Vec<String> = (0..40).map(|i| format!("spiker-{i:02}")).collect();
    let tokens: Vec<String> = users.iter().map(|user| token_with_jti(user, Some(&format!("jti-{user}")))).collect();
    let requests = users.iter().zip(&tokens).enumerate().map(|(i, (user, token))| {
        let (client, url) = (client.clone(), issue_url(&kafka_round));
        let body = i.is_multiple_of(2).then(|| json!({"requestId": format!("req-{user}")}));
        async move { post(&client, &url, token, body).await.map(|(status, _)| status) }
    });
    let statuses: Vec<u16> = futures::stream::iter(requests)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 20, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 410).count(), 20, "{statuses:?}");

    // Result polls, a synchronous round, and tokens that are refused: a refusal must not
    // log the token it refused either.
    for token in &tokens[..5] {
        assert_eq!(client.get(issue_url(&kafka_round)).bearer_auth(token).send().await?.status().as_u16(), 200);
    }
    for (user, token) in users.iter().zip(&tokens).take(3) {
        let (status, body) = post(&client, &issue_url(&sync_round), token, Some(json!({"requestId": user}))).await?;
        assert_eq!(status, 201, "{body}");
    }
    let exp = couponrush_core::wall_clock_ms() / 1000 + 3600;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "mallory", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-secret"),
    )?;
    let expired = token_with_claims(&json!({"sub": "late", "exp": exp - 7200}));
    let bad_subject = token_with_claims(&json!({"sub": "a\nb", "exp": exp}));
    let refused = [forged, expired, bad_subject];
    for token in &refused {
        let (status, _) = post(&client, &issue_url(&sync_round), token, None).await?;
        assert_eq!(status, 401);
    }
    // A body the issuer refuses, with a valid token.
    let (status, _) = post(&client, &issue_url(&sync_round), &tokens[39], Some(json!({"requestId": "a\u{7}"}))).await?;
    assert_eq!(status, 400);
    scope.wait_for_rows(&kafka_round, 20, Duration::from_secs(30)).await?;
    consumer.stop().await?;
    let log = issuer.stop().await?;

    if let Ok(path) = std::env::var("AUDIT_LOG_DUMP") {
        std::fs::write(path, &log)?;
    }
    // The capture works and lets everything through: the decisions' debug lines are in
    // it. (Nothing the issuer links emits at trace today, and `log`-crate records such as
    // librdkafka's are not bridged into tracing; a trace-level line added later, like a
    // request-header dump, is caught here.)
    assert!(log.contains("issued") && log.contains("req-spiker-00"), "the debug 'issued' lines are missing");
    let mut leaks = Vec::new();
    for secret in tokens.iter().chain(&refused).flat_map(|token| secrets_of(token)) {
        if log.contains(&secret) {
            leaks.push(secret);
        }
    }
    if log.contains(JWT_SECRET) {
        leaks.push("the JWT secret".to_owned());
    }
    let lines = log.lines().count();
    assert!(leaks.is_empty(), "the issuer's log ({lines} lines) contains {leaks:?}");
    let levels: HashSet<&str> = log.lines().filter_map(|line| line.split_whitespace().nth(1)).collect();
    println!("{lines} log lines with RUST_LOG=trace (levels {levels:?}), none with a token or the secret");
    Ok(())
}
