//! `couponrush-issuer`: serve the API, or run an admin command (prewarm, reconcile,
//! recover, export, migrate) against the same backends.

use clap::Parser;
use couponrush_core::event::{EventId, RoundSpec};
use couponrush_core::kafka::Publisher;
use couponrush_core::{db, prewarm, reconcile, shutdown, telemetry};
use couponrush_issuer::config::{Backends, Cli, Command, ExportArgs, PrewarmArgs, RecoverArgs, RoundArgs};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_json);
    let backends = cli.backends.clone();
    match cli.into_command() {
        Command::Serve(config) => {
            let listener = couponrush_core::ops::bind(config.listen).await?;
            Ok(couponrush_issuer::run(backends, config, listener, shutdown::on_signal()).await?)
        }
        Command::Prewarm(args) => prewarm_round(&backends, args).await,
        Command::Reconcile(args) => reconcile_round(&backends, args).await,
        Command::Recover(args) => recover_round(&backends, args).await,
        Command::Export(args) => export_round(&backends, args).await,
        Command::Migrate => {
            db::migrate(&backends.connect_database(2).await?).await?;
            tracing::info!("schema is up to date");
            Ok(())
        }
    }
}

async fn prewarm_round(backends: &Backends, args: PrewarmArgs) -> anyhow::Result<()> {
    let round = EventId::new(&args.round.namespace, &args.round.name)?.round(args.round.round);
    let now = couponrush_core::wall_clock_ms();
    let start_ms = match (args.starts_at, args.starts_in) {
        (Some(at), _) => at.as_millisecond(),
        (None, Some(delay)) => now + i64::try_from(delay.as_millis())?,
        (None, None) => now,
    };
    let spec = RoundSpec {
        stock: args.stock,
        per_user: args.per_user,
        start_ms,
        end_ms: args.ends_at.map(|t| t.as_millisecond()),
        strategy: args.strategy,
        buckets: args.stock_buckets,
    };
    let mut redis = backends.redis().connect().await?;
    let pool = backends.connect_database(2).await?;
    db::migrate(&pool).await?;
    if args.strategy == couponrush_core::event::Strategy::KafkaAsync {
        couponrush_core::kafka::ensure_topics(&backends.kafka(), &backends.kafka_topic, 4).await?;
    }
    let done = prewarm::prewarm(&mut redis, &pool, &round, &spec).await?;
    tracing::info!(%round, stock = spec.stock, remaining = done.remaining, created = done.created, strategy = %spec.strategy, "round pre-warmed");
    Ok(())
}

async fn reconcile_round(backends: &Backends, args: RoundArgs) -> anyhow::Result<()> {
    let round = EventId::new(&args.namespace, &args.name)?.round(args.round);
    let mut redis = backends.redis().connect().await?;
    let pool = backends.connect_database(2).await?;
    let publisher = Publisher::new(&backends.kafka(), &backends.kafka_topic, backends.kafka_delivery_timeout)?;
    let report = reconcile::reconcile_round(&mut redis, &pool, &publisher, &round).await?;
    publisher.flush(std::time::Duration::from_secs(10))?;
    tracing::info!(%round, admitted = report.admitted, persisted = report.persisted, republished = report.republished, "reconciled");
    Ok(())
}

async fn recover_round(backends: &Backends, args: RecoverArgs) -> anyhow::Result<()> {
    let round = EventId::new(&args.round.namespace, &args.round.name)?.round(args.round.round);
    let mut redis = backends.redis().connect().await?;
    let pool = backends.connect_database(2).await?;
    let deadline = std::time::Instant::now() + args.timeout;
    let topic = &backends.kafka_topic;
    let done =
        prewarm::recover_round(&mut redis, &pool, &backends.kafka(), topic, &round, args.strategy, deadline).await?;
    tracing::info!(%round, winners = done.winners, from_kafka_only = done.from_kafka_only, conflicts = done.conflicts, seq = done.seq, remaining = done.remaining, "round recovered");
    Ok(())
}

async fn export_round(backends: &Backends, args: ExportArgs) -> anyhow::Result<()> {
    let round = EventId::new(&args.round.namespace, &args.round.name)?.round(args.round.round);
    let pool = backends.connect_database(1).await?;
    let written = couponrush_issuer::export::write_round(&pool, &round, args.format, std::io::stdout().lock()).await?;
    // Redis' winners (of every stock bucket), where the strategy keeps them, say whether
    // every coupon is stored yet.
    let stored_all = match backends.redis().connect().await {
        Ok(mut redis) => {
            let winners = couponrush_core::round_store::meta::count_winners(&mut redis, &round).await.ok();
            winners.is_none_or(|winners| winners <= written)
        }
        Err(_) => true,
    };
    let peak_rss_kib = couponrush_issuer::export::peak_rss_kib();
    tracing::info!(%round, written, ?peak_rss_kib, "winners exported");
    if !stored_all {
        tracing::warn!(%round, written, "Redis holds more winners than MySQL: the round is still draining; export again once it is Completed");
    }
    Ok(())
}
