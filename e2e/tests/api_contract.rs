//! Guarantee 5 and the gate: bad input gets a clear 4xx and changes nothing in Redis,
//! Kafka or MySQL; before start → 409 NOT_STARTED with startsAt; after end → 409 ENDED.

use std::collections::HashMap;
use std::time::Duration;

use couponrush_core::db;
use couponrush_core::event::{RoundId, RoundSpec, Strategy};
use couponrush_core::round_store::keys::RoundKeys;
use couponrush_e2e::{Scope, token, token_with_claims, wait_until};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use redis::AsyncCommands;
use serde_json::Value;

/// Everything a request could have changed: the round's Redis keys, its MySQL rows,
/// and the end offsets of the coupon topic.
#[derive(Debug, PartialEq)]
struct Snapshot {
    meta: HashMap<String, String>,
    winners: HashMap<String, String>,
    rows: u64,
    topic_end: Vec<i64>,
}

async fn snapshot(scope: &Scope, round: &RoundId) -> anyhow::Result<Snapshot> {
    let keys = RoundKeys::new(round);
    let mut redis = scope.redis().await?;
    let brokers = scope.env.kafka_brokers.clone();
    let topic = scope.topic.clone();
    let topic_end = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<i64>> {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
        (0..4).map(|p| Ok(consumer.fetch_watermarks(&topic, p, Duration::from_secs(5))?.1)).collect()
    })
    .await??;
    Ok(Snapshot {
        meta: redis.hgetall(&keys.meta).await?,
        winners: redis.hgetall(&keys.winners).await?,
        rows: db::count_coupons(&scope.pool().await?, round).await?,
        topic_end,
    })
}

struct Case {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    status: u16,
    word: &'static str,
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() -> anyhow::Result<()> {
    let scope = Scope::new("bad-input").await?;
    let round = scope.round("contract")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 10, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let path = format!("/api/v1/events/{}/{}/issue", round.event.namespace, round.event.name);
    let bearer = |user: &str| vec![("authorization", format!("Bearer {}", token(user)))];
    let case = |what, method, path: &str, headers, body: Option<&str>, status, word| Case {
        what,
        method,
        path: path.to_owned(),
        headers,
        body: body.map(str::to_owned),
        status,
        word,
    };
    let post = reqwest::Method::POST;
    let cases = vec![
        case("no token", post.clone(), &path, vec![], None, 401, "UNAUTHORIZED"),
        case(
            "malformed token",
            post.clone(),
            &path,
            vec![("authorization", "Bearer abc".into())],
            None,
            401,
            "UNAUTHORIZED",
        ),
        case(
            "basic auth",
            post.clone(),
            &path,
            vec![("authorization", "Basic dXNlcjpwdw==".into())],
            None,
            401,
            "UNAUTHORIZED",
        ),
        case("malformed JSON", post.clone(), &path, bearer("u1"), Some("{not json"), 400, "BAD_REQUEST"),
        case("unknown field", post.clone(), &path, bearer("u1"), Some(r#"{"stock": 1000000}"#), 400, "BAD_REQUEST"),
        case("JSON array", post.clone(), &path, bearer("u1"), Some("[]"), 400, "BAD_REQUEST"),
        case(
            "control chars in requestId",
            post.clone(),
            &path,
            bearer("u1"),
            Some("{\"requestId\": \"a\\u0001\"}"),
            400,
            "BAD_REQUEST",
        ),
        case(
            "too large",
            post.clone(),
            &path,
            bearer("u1"),
            Some(&format!(r#"{{"requestId": "{}"}}"#, "x".repeat(4096))),
            413,
            "TOO_LARGE",
        ),
        case(
            "invalid event name",
            post.clone(),
            "/api/v1/events/NS/Bad_Name/issue",
            bearer("u1"),
            None,
            400,
            "BAD_REQUEST",
        ),
        case(
            "unknown event",
            post.clone(),
            &format!("/api/v1/events/{}/nope/issue", round.event.namespace),
            bearer("u1"),
            None,
            404,
            "UNKNOWN_EVENT",
        ),
        case("wrong method", reqwest::Method::DELETE, &path, bearer("u1"), None, 405, "METHOD_NOT_ALLOWED"),
        case("unknown route", reqwest::Method::GET, "/api/v2/whatever", vec![], None, 404, "NOT_FOUND"),
    ];
    // A user id over the limit and one with a control character, inside valid tokens.
    let long_user = "u".repeat(129);
    let mut cases = cases;
    cases.push(case("overlong user id", post.clone(), &path, bearer(&long_user), None, 401, "UNAUTHORIZED"));
    cases.push(case("control char in user id", post.clone(), &path, bearer("a\u{7}b"), None, 401, "UNAUTHORIZED"));

    let before = snapshot(&scope, &round).await?;
    let client = reqwest::Client::new();
    for case in cases {
        let mut request = client.request(case.method.clone(), format!("{}{}", issuer.base_url(), case.path));
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        if let Some(body) = &case.body {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        assert_eq!(status, case.status, "{}: {body}", case.what);
        assert_eq!(body["status"], case.word, "{}: {body}", case.what);
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}: a human message: {body}", case.what);
    }
    assert_eq!(snapshot(&scope, &round).await?, before, "bad input changed a backend");

    // And a good request does change them, so the snapshot can see a change.
    let response = client.post(issuer.issue_url(&round)).bearer_auth(token("u1")).send().await?;
    assert_eq!(response.status().as_u16(), 201);
    let after = snapshot(&scope, &round).await?;
    assert_ne!(after.winners, before.winners);
    issuer.stop().await
}

/// An issuer that requires an issuer and an audience (`JWT_ISSUER`, `JWT_AUDIENCE`)
/// turns away a validly signed token minted for another audience, or for none, or by
/// another issuer, with a 401 that says which claim failed, and nothing changes.
#[tokio::test]
async fn a_token_for_another_audience_gets_401_and_changes_nothing() -> anyhow::Result<()> {
    let scope = Scope::new("audience").await?;
    let round = scope.round("aud")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 10, Duration::ZERO).await?;
    let config = couponrush_issuer::config::ServeConfig {
        jwt_hs256_secret: Some(couponrush_e2e::JWT_SECRET.to_owned()),
        jwt_issuer: Some("https://id.shop.example".to_owned()),
        jwt_audience: Some("couponrush".to_owned()),
        ..Default::default()
    };
    let issuer = scope.start_issuer_with(scope.backends(), config).await?;
    let exp = couponrush_core::wall_clock_ms() / 1000 + 600;
    let claims = |iss: Option<&str>, aud: Option<&str>| {
        let mut claims = serde_json::json!({"sub": "u-aud", "exp": exp});
        if let Some(iss) = iss {
            claims["iss"] = iss.into();
        }
        if let Some(aud) = aud {
            claims["aud"] = aud.into();
        }
        token_with_claims(&claims)
    };
    let ours = Some("https://id.shop.example");
    let cases = [
        ("another audience", claims(ours, Some("payments")), "token audience (aud) not accepted"),
        ("no audience", claims(ours, None), "token has no aud claim, and an audience is required"),
        ("another issuer", claims(Some("https://evil.example"), Some("couponrush")), "token issuer (iss) not accepted"),
        ("no issuer", claims(None, Some("couponrush")), "token has no iss claim, and an issuer is required"),
    ];
    let before = snapshot(&scope, &round).await?;
    let client = reqwest::Client::new();
    for (what, token, why) in cases {
        let response = client.post(issuer.issue_url(&round)).bearer_auth(token).send().await?;
        assert_eq!(response.status().as_u16(), 401, "{what}");
        let body: Value = response.json().await?;
        assert_eq!((body["status"].as_str(), body["message"].as_str()), (Some("UNAUTHORIZED"), Some(why)), "{what}");
    }
    assert_eq!(snapshot(&scope, &round).await?, before, "a refused token changed a backend");
    let right = claims(ours, Some("couponrush"));
    let response = client.post(issuer.issue_url(&round)).bearer_auth(right).send().await?;
    assert_eq!(response.status().as_u16(), 201, "the right iss and aud are admitted");
    issuer.stop().await
}

/// `redis-lock`: a request that cannot take the round's lock within the wait limit is
/// answered 503 UNAVAILABLE with Retry-After, and nothing was issued; once the lock is
/// free the same user is admitted.
#[tokio::test]
async fn a_lock_held_past_the_wait_limit_gets_503_and_changes_nothing() -> anyhow::Result<()> {
    let scope = Scope::new("lock-wait").await?;
    let round = scope.round("lock")?;
    scope.prewarm(&round, Strategy::RedisLock, 10, Duration::ZERO).await?;
    let config = couponrush_issuer::config::ServeConfig {
        lock_wait: Duration::from_millis(300),
        ..couponrush_e2e::issuer_config()
    };
    let issuer = scope.start_issuer_with(scope.backends(), config).await?;
    let lock = RoundKeys::new(&round).lock;
    let mut redis = scope.redis().await?;
    // Another holder (a stalled issuer) keeps the lock for longer than the wait limit.
    let _: () =
        redis::cmd("SET").arg(&lock).arg("a-stalled-holder").arg("PX").arg(30_000).query_async(&mut redis).await?;
    let before = snapshot(&scope, &round).await?;
    let client = reqwest::Client::new();
    let response = client.post(issuer.issue_url(&round)).bearer_auth(token("u-waits")).send().await?;
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers().get("retry-after").map(|v| v.as_bytes()), Some(&b"1"[..]));
    assert_eq!(response.json::<Value>().await?["status"], "UNAVAILABLE");
    assert_eq!(snapshot(&scope, &round).await?, before, "a lock timeout changed a backend");
    assert_eq!(redis.get::<_, String>(&lock).await?, "a-stalled-holder", "the other holder's lock was touched");

    let _: () = redis.del(&lock).await?;
    let response = client.post(issuer.issue_url(&round)).bearer_auth(token("u-waits")).send().await?;
    assert_eq!(response.status().as_u16(), 201, "the lock is free again");
    issuer.stop().await
}

/// After the sell-out nearly every request is for a sold-out round, so the issuer answers
/// it from memory before it spends a signature check on the token: 410 even without a
/// valid token (the round's state is public anyway), and still nothing changes.
#[tokio::test]
async fn a_sold_out_round_answers_before_the_token_is_checked() -> anyhow::Result<()> {
    let scope = Scope::new("sold-out-first").await?;
    let round = scope.round("one")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 1, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let client = reqwest::Client::new();
    let post = || client.post(issuer.issue_url(&round));

    let unauthenticated = post().send().await?;
    assert_eq!(unauthenticated.status().as_u16(), 401, "a live round checks the token first");
    let won = post().bearer_auth(token("winner")).send().await?;
    assert_eq!(won.status().as_u16(), 201);
    let seq = won.json::<Value>().await?["seq"].clone();
    let sold_out = snapshot(&scope, &round).await?;
    for (what, request) in [
        ("no token", post()),
        ("a forged token", post().bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.forged")),
        ("a valid token", post().bearer_auth(token("too-late"))),
    ] {
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), 410, "{what}");
        assert_eq!(response.json::<Value>().await?["status"], "SOLD_OUT", "{what}");
    }
    assert_eq!(snapshot(&scope, &round).await?, sold_out, "answering sold-out changed a backend");
    // The winner's own retry is answered from memory too (410: the round is sold out), so
    // a client that lost its 201 (or got OUTCOME_UNKNOWN) learns its coupon from GET.
    assert_eq!(post().bearer_auth(token("winner")).send().await?.status().as_u16(), 410);
    let mine: Value = client.get(issuer.issue_url(&round)).bearer_auth(token("winner")).send().await?.json().await?;
    assert_eq!((mine["status"].clone(), mine["seq"].clone()), (Value::from("ISSUED"), seq), "{mine}");
    issuer.stop().await
}

/// `perUser: 2`: a user gets two coupons (two seqs, two rows), a third request is
/// answered ALREADY_ISSUED with the latest seq, and GET reports that latest coupon; for
/// every strategy that allows more than one per user.
// The in-process consumer reads its lag with block_in_place: a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_user_limit_of_two_gives_two_coupons_and_no_third() -> anyhow::Result<()> {
    for strategy in
        [Strategy::KafkaAsync, Strategy::DbLock, Strategy::RedisLock, Strategy::RedisCounter, Strategy::RedisCounterSet]
    {
        let scope = Scope::new("per-user").await?;
        let round = scope.round("two-each")?;
        let spec = RoundSpec {
            stock: 10,
            per_user: 2,
            start_ms: couponrush_core::wall_clock_ms(),
            end_ms: None,
            strategy,
            buckets: 1,
        };
        scope.prewarm_spec(&round, &spec).await?;
        let issuer = scope.start_issuer().await?;
        let consumer = scope.start_consumer().await?;
        let client = reqwest::Client::new();
        let mut answers = Vec::new();
        for user in ["ann", "ann", "ann", "bob"] {
            let response = client.post(issuer.issue_url(&round)).bearer_auth(token(user)).send().await?;
            let code = response.status().as_u16();
            let body: Value = response.json().await?;
            answers.push((code, body["status"].as_str().unwrap_or_default().to_owned(), body["seq"].as_u64()));
        }
        let seq = |i: usize| answers[i].2;
        let codes: Vec<(u16, &str)> = answers.iter().map(|(code, word, _)| (*code, word.as_str())).collect();
        assert_eq!(
            codes,
            [(201, "ISSUED"), (201, "ISSUED"), (200, "ALREADY_ISSUED"), (201, "ISSUED")],
            "{strategy}: {answers:?}"
        );
        assert_ne!(seq(0), seq(1), "{strategy}: two coupons, two seqs");
        assert_eq!(seq(2), seq(1), "{strategy}: the repeat names the latest coupon");

        scope.wait_for_rows(&round, 3, Duration::from_secs(20)).await?;
        let mut held = couponrush_e2e::load::rows(&scope.pool().await?, &round).await?;
        held.sort();
        let expected: Vec<(String, u32)> = [("ann", seq(0)), ("ann", seq(1)), ("bob", seq(3))]
            .into_iter()
            .map(|(user, seq)| Ok((user.to_owned(), u32::try_from(seq.unwrap_or_default())?)))
            .collect::<anyhow::Result<_>>()?;
        let mut expected = expected;
        expected.sort();
        assert_eq!(held, expected, "{strategy}: rows");
        let mine: Value = client.get(issuer.issue_url(&round)).bearer_auth(token("ann")).send().await?.json().await?;
        assert_eq!(mine["seq"].as_u64(), seq(1), "{strategy}: GET names the latest coupon: {mine}");
        assert_eq!(mine["persisted"], true, "{strategy}: {mine}");
        consumer.stop().await?;
        issuer.stop().await?;
    }
    Ok(())
}

/// The queue keeps one result per user, so a queue round with `perUser` above 1 is
/// refused at pre-warm (and by the CRD) instead of silently giving one each.
#[tokio::test]
async fn a_queue_round_refuses_more_than_one_per_user() -> anyhow::Result<()> {
    let scope = Scope::new("queue-per-user").await?;
    let round = scope.round("two-each")?;
    let spec = RoundSpec {
        stock: 10,
        per_user: 2,
        start_ms: couponrush_core::wall_clock_ms(),
        end_ms: None,
        strategy: Strategy::Queue,
        buckets: 1,
    };
    let refused = scope.prewarm_spec(&round, &spec).await.expect_err("a queue round with perUser 2");
    assert!(format!("{refused:#}").contains("perUser must be 1"), "{refused:#}");
    Ok(())
}

#[tokio::test]
async fn the_gate_opens_at_start_and_closes_at_end() -> anyhow::Result<()> {
    let scope = Scope::new("gate").await?;
    let round = scope.round("gated")?;
    // The round's instants are set from the Redis clock, which is what the gate reads.
    let mut redis = scope.redis().await?;
    let (seconds, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await?;
    let redis_now_ms = seconds * 1000 + micros / 1000;
    let spec = RoundSpec {
        stock: 10,
        per_user: 1,
        start_ms: redis_now_ms + 2_000,
        end_ms: Some(redis_now_ms + 4_000),
        strategy: Strategy::KafkaAsync,
        buckets: 1,
    };
    scope.prewarm_spec(&round, &spec).await?;
    let issuer = scope.start_issuer().await?;
    let client = reqwest::Client::new();
    let issue = |user: &str| client.post(issuer.issue_url(&round)).bearer_auth(token(user)).send();

    let early = issue("early").await?;
    assert_eq!(early.status().as_u16(), 409);
    assert!(early.headers().contains_key("retry-after"));
    let body: Value = early.json().await?;
    assert_eq!(body["status"], "NOT_STARTED");
    assert_eq!(body["startsAt"], couponrush_issuer::response::rfc3339(spec.start_ms));

    wait_until("the round opens", Duration::from_secs(5), || async {
        Ok(issue("on-time").await?.status().as_u16() == 201)
    })
    .await?;
    wait_until("the round closes", Duration::from_secs(5), || async {
        let response = issue("late").await?;
        Ok(response.status().as_u16() == 409 && response.json::<Value>().await?["status"] == "ENDED")
    })
    .await?;
    issuer.stop().await
}

// The in-process consumer reads its lag with block_in_place: a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_safe_and_results_are_readable() -> anyhow::Result<()> {
    let scope = Scope::new("results").await?;
    let round = scope.round("results")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 5, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let client = reqwest::Client::new();
    let first: Value = client.post(issuer.issue_url(&round)).bearer_auth(token("alice")).send().await?.json().await?;
    assert_eq!(first["status"], "ISSUED");
    let retry = client.post(issuer.issue_url(&round)).bearer_auth(token("alice")).send().await?;
    assert_eq!(retry.status().as_u16(), 200);
    let retry: Value = retry.json().await?;
    assert_eq!(retry["status"], "ALREADY_ISSUED");
    assert_eq!(retry["seq"], first["seq"], "a retry gets the same seq back");

    scope.wait_for_rows(&round, 1, Duration::from_secs(20)).await?;
    let mine: Value = client.get(issuer.issue_url(&round)).bearer_auth(token("alice")).send().await?.json().await?;
    assert_eq!(mine["status"], "ISSUED");
    assert_eq!(mine["seq"], first["seq"]);
    assert_eq!(mine["persisted"], true);
    let nobody: Value = client.get(issuer.issue_url(&round)).bearer_auth(token("bob")).send().await?.json().await?;
    assert_eq!(nobody["status"], "NOT_ISSUED");

    let state: Value = client
        .get(format!("{}/api/v1/events/{}/{}", issuer.base_url(), round.event.namespace, round.event.name))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(state["stock"], 5);
    assert_eq!(state["remaining"], 4);
    assert_eq!(state["state"], "LIVE");
    assert_eq!(state["strategy"], "kafka-async");

    let metrics = client.get(format!("{}/metrics", issuer.base_url())).send().await?.text().await?;
    assert!(
        metrics.contains("couponrush_issuer_answers_total{status=\"ISSUED\",strategy=\"kafka-async\"} 1"),
        "{metrics}"
    );
    consumer.stop().await?;
    issuer.stop().await
}

// The in-process consumer reads its lag with block_in_place: a multi-threaded runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_down_round_is_never_prewarmed_again() -> anyhow::Result<()> {
    let scope = Scope::new("rewarm").await?;
    let round = scope.round("once")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 5, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    let response = reqwest::Client::new().post(issuer.issue_url(&round)).bearer_auth(token("alice")).send().await?;
    assert_eq!(response.status().as_u16(), 201);
    scope.wait_for_rows(&round, 1, Duration::from_secs(20)).await?;
    couponrush_core::prewarm::remove_round(&mut scope.redis().await?, &scope.pool().await?, &round).await?;
    // Fresh keys would hand out seq 1 again and MySQL would drop that coupon as a duplicate.
    let again = scope.prewarm(&round, Strategy::KafkaAsync, 5, Duration::ZERO).await;
    let error = again.expect_err("prewarming a round that already ran must fail");
    assert!(error.to_string().contains("already ran"), "{error:#}");
    consumer.stop().await?;
    issuer.stop().await
}

/// The HTTP half of the fuzzing (the parsing half is the cargo-fuzz target in
/// issuer/fuzz): 600 requests with random path segments, bodies and Authorization headers, built from
/// a seeded generator, against a live round. None may get a 5xx, and the issuer must
/// still answer afterwards.
#[tokio::test]
async fn random_malformed_requests_never_get_a_5xx() -> anyhow::Result<()> {
    use rand::{Rng, SeedableRng};
    let scope = Scope::new("malformed").await?;
    let round = scope.round("fuzz")?;
    scope.prewarm(&round, Strategy::KafkaAsync, 1_000, Duration::ZERO).await?;
    let issuer = scope.start_issuer().await?;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let valid = token("fuzz-user");
    let segments = [
        round.event.namespace.clone(),
        round.event.name.clone(),
        String::new(),
        "..".to_owned(),
        "%00".to_owned(),
        "%2F".to_owned(),
        "%FF%FE".to_owned(),
        "a".repeat(300),
        "UPPER".to_owned(),
        "-".to_owned(),
        "%E2%80%AE".to_owned(),
    ];
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    for i in 0..600 {
        let pick = |rng: &mut rand::rngs::StdRng| segments[rng.random_range(0..segments.len())].clone();
        let path = match rng.random_range(0..4) {
            0 => format!("/api/v1/events/{}/{}/issue", pick(&mut rng), pick(&mut rng)),
            1 => format!("/api/v1/events/{}/{}", pick(&mut rng), pick(&mut rng)),
            2 => format!("/api/v1/events/{}/{}/issue/{}", pick(&mut rng), pick(&mut rng), pick(&mut rng)),
            _ => format!("/api/v1/events/{}/{}/issue", round.event.namespace, round.event.name),
        };
        let body: Vec<u8> = match rng.random_range(0..5) {
            0 => Vec::new(),
            1 => (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            2 => format!(r#"{{"requestId": "{}"}}"#, "x".repeat(rng.random_range(0..100))).into_bytes(),
            3 => br#"{"requestId": null, "requestId": 1}"#.to_vec(),
            _ => b"[{\"a\":".repeat(rng.random_range(1..100)),
        };
        let auth = match rng.random_range(0..5) {
            0 => None,
            1 => Some(format!("Bearer {valid}")),
            2 => Some(format!("Bearer {}", &valid[..rng.random_range(0..valid.len())])),
            3 => Some(format!("Bearer {}.{}.", "eyJhbGciOiJIUzI1NiJ9", "e30")),
            _ => Some((0..rng.random_range(0..80)).map(|_| char::from(rng.random_range(0x21u8..0x7f))).collect()),
        };
        let method = if rng.random_bool(0.8) { reqwest::Method::POST } else { reqwest::Method::GET };
        let mut request = client.request(method, format!("{}{path}", issuer.base_url())).body(body);
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let status = request.send().await?.status();
        assert!(!status.is_server_error(), "request {i} (seed {seed}) to {path} got {status}");
    }
    let health = client.get(format!("{}/healthz", issuer.base_url())).send().await?;
    assert!(health.status().is_success());
    issuer.stop().await
}
