//! Issue 13, item 5: the winners export (`couponrush-issuer export`) against the real
//! MariaDB: every stored coupon exactly once, user ids byte for byte in JSON lines and
//! safely quoted in CSV, each with its audit trail (request id and token `jti`), and a
//! large round streamed in constant memory.

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use couponrush_core::event::{RoundId, Strategy};
use couponrush_e2e::load::rows;
use couponrush_e2e::{Scope, binary, token, token_with_claims};

struct Export {
    stdout: String,
    log: String,
}

/// Runs the export as marketing would, against this scope's backends.
async fn export(scope: &Scope, round: &RoundId, format: &str, keep_output: bool) -> anyhow::Result<Export> {
    let backends = scope.backends();
    let output = tokio::process::Command::new(binary("couponrush-issuer")?)
        .args(["export", "--namespace", &round.event.namespace, "--name", &round.event.name])
        .args(["--round", &round.round.to_string(), "--format", format])
        .env("REDIS_URL", &backends.redis_url)
        .env("DATABASE_URL", &backends.database_url)
        .env("NO_COLOR", "1")
        .stdout(if keep_output { Stdio::piped() } else { Stdio::null() })
        .output()
        .await?;
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    anyhow::ensure!(output.status.success(), "export failed: {log}");
    Ok(Export { stdout: String::from_utf8(output.stdout)?, log })
}

fn logged_number(log: &str, key: &str) -> Option<u64> {
    let start = log.rfind(key)? + key.len();
    log[start..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_lists_every_winner_with_awkward_ids_exactly() -> anyhow::Result<()> {
    let scope = Scope::new("export").await?;
    let round = scope.round("export")?;
    let awkward = ["alice", "alice ", "a,b", "say \"hi\"", "=1+2", "한국 사용자", "@home", "  spaced  "];
    let stock = 30;
    scope.prewarm(&round, Strategy::KafkaAsync, stock, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let client = reqwest::Client::new();
    let users: Vec<String> =
        awkward.iter().map(|u| (*u).to_owned()).chain((0..40).map(|i| format!("user-{i}"))).collect();
    let mut answered = HashSet::new();
    // Every other user sends a request id, and every third token carries a jti; one
    // request id would be a formula in a spreadsheet.
    let request_id = |i: usize| match i {
        0 => Some("=HYPERLINK(\"x\"),1".to_owned()),
        i if i.is_multiple_of(2) => Some(format!("req-{i}")),
        _ => None,
    };
    let jti = |i: usize| i.is_multiple_of(3).then(|| format!("jti-{i}"));
    let mut attributed = std::collections::HashMap::new();
    for (i, user) in users.iter().enumerate() {
        let bearer = match jti(i) {
            Some(jti) => token_with_claims(&serde_json::json!({"sub": user, "exp": 4_000_000_000_u64, "jti": jti})),
            None => token(user),
        };
        let mut request = client.post(issuer.issue_url(&round)).bearer_auth(bearer);
        if let Some(id) = request_id(i) {
            request = request.json(&serde_json::json!({"requestId": id}));
        }
        let response = request.send().await?;
        if response.status().as_u16() == 201 {
            let body: serde_json::Value = response.json().await?;
            answered.insert((user.clone(), u32::try_from(body["seq"].as_u64().context("seq")?)?));
            attributed.insert(user.clone(), (request_id(i), jti(i)));
        }
    }
    assert_eq!(answered.len(), stock as usize);
    scope.wait_for_rows(&round, u64::from(stock), Duration::from_secs(30)).await?;
    let stored: HashSet<(String, u32)> = rows(&scope.pool().await?, &round).await?.into_iter().collect();

    let jsonl = export(&scope, &round, "jsonl", true).await?;
    let exported: HashSet<(String, u32)> = jsonl
        .stdout
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)?;
            let user = value["userId"].as_str().context("userId")?.to_owned();
            anyhow::Ok((user, u32::try_from(value["seq"].as_u64().context("seq")?)?))
        })
        .collect::<Result<_, _>>()?;
    assert_eq!(jsonl.stdout.lines().count(), stock as usize, "one line per coupon");
    assert_eq!(exported, stored, "the export is MySQL's rows");
    assert_eq!(exported, answered, "and every 201");
    for line in jsonl.stdout.lines() {
        let value: serde_json::Value = serde_json::from_str(line)?;
        let user = value["userId"].as_str().context("userId")?;
        let (sent_id, sent_jti) = attributed.get(user).context("a 201")?;
        let exported_id = value["requestId"].as_str().context("every 201 has a request id")?;
        match sent_id {
            Some(id) => assert_eq!(exported_id, id, "{user}"),
            // The issuer's own: 128 random bits in hex.
            None => assert!(exported_id.len() == 32 && exported_id.bytes().all(|b| b.is_ascii_hexdigit())),
        }
        assert_eq!(value["jti"].as_str(), sent_jti.as_deref(), "{user}");
    }
    assert_eq!(logged_number(&jsonl.log, "written="), Some(u64::from(stock)), "{}", jsonl.log);
    assert!(!jsonl.log.contains("still draining"), "{}", jsonl.log);

    let csv = export(&scope, &round, "csv", true).await?;
    let lines: Vec<&str> = csv.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&couponrush_issuer::export::CSV_HEADER));
    assert_eq!(lines.len(), stock as usize + 1);
    for (user, expected_start) in
        [("a,b", "\"a,b\","), ("say \"hi\"", "\"say \"\"hi\"\"\","), ("=1+2", "'=1+2,"), ("alice ", "\"alice \",")]
    {
        if answered.iter().any(|(u, _)| u == user) {
            assert!(lines.iter().any(|l| l.starts_with(expected_start)), "{user}: {lines:?}");
        }
    }
    // The audit columns close each line: alice (user 0) sent a formula as her request id
    // with a jti; "alice " (user 1) sent neither (the issuer's id, an empty jti).
    if answered.iter().any(|(u, _)| u == "alice") {
        let alice = lines.iter().find(|l| l.starts_with("alice,")).context("alice's line")?;
        assert!(alice.ends_with(",\"'=HYPERLINK(\"\"x\"\"),1\",jti-0"), "{alice}");
    }
    if answered.iter().any(|(u, _)| u == "alice ") {
        let line = lines.iter().find(|l| l.starts_with("\"alice \",")).context("alice-space's line")?;
        let fields: Vec<&str> = line.rsplitn(3, ',').collect();
        assert_eq!(fields[0], "", "no jti: {line}");
        assert_eq!(fields[1].len(), 32, "the issuer's request id: {line}");
    }
    consumer.stop().await?;
    issuer.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_streams_a_large_round_in_constant_memory() -> anyhow::Result<()> {
    let scope = Scope::new("export-large").await?;
    let pool = scope.pool().await?;
    let (small, large) = (scope.round("small")?, scope.round("large")?);
    let mut peaks = Vec::new();
    for (round, count) in [(&small, 2_000_u32), (&large, 200_000)] {
        // MariaDB's sequence engine makes the rows in one statement.
        sqlx::query(&format!(
            "INSERT INTO coupons (event, round_no, user_id, slot, seq, issued_at) \
             SELECT ?, ?, CONCAT('user-', seq), 1, seq, NOW(3) FROM seq_1_to_{count}"
        ))
        .bind(round.event.to_string())
        .bind(round.round)
        .execute(&pool)
        .await?;
        let started = std::time::Instant::now();
        let run = export(&scope, round, "csv", false).await?;
        assert_eq!(logged_number(&run.log, "written="), Some(u64::from(count)), "{}", run.log);
        let peak = logged_number(&run.log, "peak_rss_kib=Some(").context("peak RSS reported")?;
        println!("export of {count} rows: {:?}, peak RSS {peak} KiB", started.elapsed());
        peaks.push(peak);
    }
    // A hundred times the rows, the same memory (give or take buffers).
    assert!(
        peaks[1] < peaks[0] + 16 * 1024,
        "peak RSS {} KiB for 200,000 rows vs {} KiB for 2,000",
        peaks[1],
        peaks[0]
    );
    Ok(())
}
