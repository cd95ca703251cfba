//! Managed backends: Redis over TLS with an ACL user, Kafka over SASL_SSL (SCRAM-SHA-512)
//! and plain SSL, MariaDB with `ssl-mode=VERIFY_IDENTITY`, each behind a CA made for the
//! run, configured only through the settings a backends Secret holds.
//!
//! Runs against `BACKENDS_TLS=1 local/backends.sh up redis mysql kafka` with its `env`
//! (e2e/test.sh does both); it refuses to run against plaintext backends, so it cannot
//! pass without testing TLS. A spike goes through all three over TLS with exact counts,
//! and each backend refuses what a client without the CA, or with the wrong
//! credentials, or without TLS, tries.

use std::time::Duration;

use couponrush_core::backend_tls::BackendTls;
use couponrush_core::event::Strategy;
use couponrush_core::kafka::{self, KafkaTarget, Publisher};
use couponrush_core::message::IssuedCoupon;
use couponrush_e2e::Scope;
use couponrush_e2e::load::{Spike, check_sold_out, rows};
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The test's premise: every backend is reached over TLS. Fails (never skips) otherwise.
fn require_tls(scope: &Scope) -> anyhow::Result<()> {
    let env = &scope.env;
    let checks = [
        ("REDIS_URL is rediss://", env.redis_url.starts_with("rediss://")),
        ("DATABASE_URL has ssl-mode=VERIFY_IDENTITY", env.database_url.contains("ssl-mode=VERIFY_IDENTITY")),
        ("KAFKA_SECURITY_PROTOCOL is SASL_SSL", env.tls.kafka_security_protocol.as_deref() == Some("SASL_SSL")),
        ("REDIS_CA_PEM, DATABASE_CA_PEM and KAFKA_CA_PEM are set", {
            let tls = &env.tls;
            tls.redis_ca_pem.is_some() && tls.database_ca_pem.is_some() && tls.kafka_ca_pem.is_some()
        }),
    ];
    for (what, holds) in checks {
        anyhow::ensure!(
            holds,
            "not TLS backends ({what} fails): run with `eval \"$(BACKENDS_TLS=1 local/backends.sh env)\"`"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_runs_through_tls_redis_kafka_and_mysql_with_exact_counts() -> anyhow::Result<()> {
    let scope = Scope::new("tls").await?;
    require_tls(&scope)?;
    let round = scope.round("managed")?;
    let stock = 300;
    scope.prewarm(&round, Strategy::KafkaAsync, stock, Duration::from_millis(500)).await?;
    let issuer = scope.start_issuer().await?;
    let consumer = scope.start_consumer().await?;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let spike = Spike { users: 2_000, requests_per_user: 2, concurrency: 64 };
    let tally = spike.run(&[issuer.issue_url(&round)]).await?;
    println!(
        "over TLS: {} requests in {:?}: {:?}",
        spike.users * spike.requests_per_user,
        tally.elapsed,
        tally.by_status
    );
    assert_eq!((tally.server_errors(), tally.transport_errors), (0, 0), "{:?}", tally.by_code);
    assert_eq!(tally.count("ISSUED"), u64::from(stock));
    scope.wait_for_rows(&round, u64::from(stock), Duration::from_secs(30)).await?;
    check_sold_out(stock, &tally.issued, &tally.already, &rows(&scope.pool().await?, &round).await?)?;
    issuer.stop().await?;
    consumer.stop().await
}

#[tokio::test]
async fn redis_refuses_plaintext_an_unknown_ca_and_a_wrong_password() -> anyhow::Result<()> {
    let scope = Scope::new("tls-redis").await?;
    require_tls(&scope)?;
    let url = &scope.env.redis_url;
    let ca = scope.env.tls.redis_ca_pem.as_deref();
    let ping = |url: String, ca: Option<&str>| {
        let target = couponrush_core::redis_conn::RedisTarget::new(&url, false).with_ca_pem(ca);
        async move {
            let mut conn = target.connect().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        }
    };
    assert_eq!(ping(url.clone(), ca).await?, "PONG", "the ACL user over TLS with the run's CA");
    assert!(ping(url.replacen("rediss://", "redis://", 1), ca).await.is_err(), "plaintext to the TLS port");
    assert!(ping(url.clone(), None).await.is_err(), "the system's CAs do not know the run's CA");
    let host = url.rsplit_once('@').map(|(_, host)| host).ok_or_else(|| anyhow::anyhow!("no user in REDIS_URL"))?;
    let wrong = format!("rediss://couponrush:not-the-password@{host}");
    assert!(ping(wrong, ca).await.is_err(), "a wrong password");
    let anonymous = format!("rediss://{host}");
    assert!(ping(anonymous, ca).await.is_err(), "the default user is off");
    Ok(())
}

#[tokio::test]
async fn mysql_refuses_plaintext_and_an_unknown_ca() -> anyhow::Result<()> {
    let scope = Scope::new("tls-mysql").await?;
    require_tls(&scope)?;
    let url = &scope.env.database_url;
    let ca = scope.env.tls.database_ca_pem.as_deref();
    async fn select(url: String, ca: Option<&str>) -> Result<String, sqlx::Error> {
        let pool = couponrush_core::db::connect_with(couponrush_core::db::connect_options(&url, ca)?, 1).await?;
        let cipher: (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'").fetch_one(&pool).await?;
        Ok(cipher.1)
    }
    let cipher = select(url.clone(), ca).await?;
    assert!(!cipher.is_empty(), "the session is encrypted");
    let plaintext = url.replace("ssl-mode=VERIFY_IDENTITY", "ssl-mode=DISABLED");
    assert!(select(plaintext, ca).await.is_err(), "the server requires TLS");
    assert!(select(url.clone(), None).await.is_err(), "the system's CAs do not know the run's CA");
    Ok(())
}

/// Publishes one coupon and reads the topic's end offsets over `kafka`.
async fn publish_and_count(kafka: &KafkaTarget, topic: &str) -> anyhow::Result<i64> {
    kafka::ensure_topics(kafka, topic, 1).await?;
    let round = couponrush_core::event::EventId::new("tls", "kafka")?.round(1);
    let coupon = IssuedCoupon::new(&round, "u ü 1", 1, 0, couponrush_core::wall_clock_ms());
    Publisher::new(kafka, topic, Duration::from_secs(10))?.publish(&coupon).await?;
    let (kafka, topic) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = kafka.client_config().create()?;
        Ok(reader.fetch_watermarks(&topic, 0, Duration::from_secs(10))?.1)
    })
    .await?
}

#[tokio::test]
async fn kafka_speaks_sasl_ssl_and_ssl_and_refuses_a_wrong_password() -> anyhow::Result<()> {
    let scope = Scope::new("tls-kafka").await?;
    require_tls(&scope)?;
    let sasl = scope.env.kafka();
    assert_eq!(publish_and_count(&sasl, &format!("{}.sasl", scope.topic)).await?, 1, "SASL_SSL with SCRAM-SHA-512");

    let ssl_brokers = std::env::var("KAFKA_SSL_BROKERS").map_err(|_| anyhow::anyhow!("KAFKA_SSL_BROKERS unset"))?;
    let ssl = KafkaTarget {
        brokers: ssl_brokers,
        tls: BackendTls {
            kafka_security_protocol: Some("SSL".to_owned()),
            kafka_ca_pem: scope.env.tls.kafka_ca_pem.clone(),
            ..BackendTls::default()
        },
    };
    assert_eq!(publish_and_count(&ssl, &format!("{}.ssl", scope.topic)).await?, 1, "plain SSL");

    let wrong = KafkaTarget {
        tls: BackendTls { kafka_sasl_password: Some("not-the-password".to_owned()), ..scope.env.tls.clone() },
        ..sasl.clone()
    };
    let refused = tokio::time::timeout(Duration::from_secs(15), kafka::ensure_topics(&wrong, "tls.refused", 1)).await;
    assert!(!matches!(refused, Ok(Ok(()))), "a wrong SCRAM password creates a topic");
    let no_ca = KafkaTarget { tls: BackendTls { kafka_ca_pem: None, ..scope.env.tls.clone() }, ..sasl };
    let refused = tokio::time::timeout(Duration::from_secs(15), kafka::ensure_topics(&no_ca, "tls.refused", 1)).await;
    assert!(!matches!(refused, Ok(Ok(()))), "the system's CAs do not know the run's CA");
    Ok(())
}
