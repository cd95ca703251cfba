//! The admission script on a real Redis, deciding a batch of users at once (the issuer
//! gathers a round's concurrent admissions into one run): each user is decided as if it
//! had come alone in the batch's order, the counters and the sold-out message come out as
//! with single runs, and an outcome of the round is every user's.

use std::time::Duration;

use couponrush_core::event::{RoundId, RoundSpec, Strategy};
use couponrush_core::round_store::admission::{self, Admission};
use couponrush_core::round_store::keys::{RoundKeys, SOLD_OUT_CHANNEL};
use couponrush_core::round_store::meta::round_meta;
use couponrush_e2e::Scope;
use futures::StreamExt;
use rand::{Rng, SeedableRng};

fn spec(stock: u32, per_user: u32) -> RoundSpec {
    RoundSpec {
        stock,
        per_user,
        start_ms: couponrush_core::wall_clock_ms(),
        end_ms: None,
        strategy: Strategy::KafkaAsync,
        buckets: 1,
    }
}

async fn admit_batch(scope: &Scope, round: &RoundId, users: &[&str], floor: u32) -> anyhow::Result<Vec<Admission>> {
    let mut redis = scope.redis().await?;
    Ok(admission::admit_many_above(&mut redis, &RoundKeys::new(round), &round.to_string(), users, floor).await?)
}

/// The outcome without the admission's instant, which differs between two runs.
fn timeless(outcome: Admission) -> Admission {
    match outcome {
        Admission::Issued { seq, slot, remaining, .. } => Admission::Issued { seq, slot, remaining, at_ms: 0 },
        other => other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_decides_each_user_in_order_and_announces_the_sell_out_once() -> anyhow::Result<()> {
    let scope = Scope::new("batch").await?;
    let round = scope.round("order")?;
    scope.prewarm_spec(&round, &spec(3, 1)).await?;
    let mut sold_out = redis::Client::open(scope.env.redis_url.as_str())?.get_async_pubsub().await?;
    sold_out.subscribe(SOLD_OUT_CHANNEL).await?;

    let decided = admit_batch(&scope, &round, &["ann", "bob", "ann", "chloé d", "dan", "bob"], 0).await?;
    let decided: Vec<Admission> = decided.into_iter().map(timeless).collect();
    assert_eq!(
        decided,
        vec![
            Admission::Issued { seq: 1, slot: 1, remaining: 2, at_ms: 0 },
            Admission::Issued { seq: 2, slot: 1, remaining: 1, at_ms: 0 },
            Admission::AlreadyIssued { seq: 1 },
            Admission::Issued { seq: 3, slot: 1, remaining: 0, at_ms: 0 },
            Admission::SoldOut,
            Admission::AlreadyIssued { seq: 2 },
        ]
    );
    let meta = round_meta(&mut scope.redis().await?, &RoundKeys::new(&round)).await?.expect("the round's meta");
    assert_eq!((meta.remaining, meta.seq), (0, 3));

    // Exactly one sold-out message for this round, although two batches saw no stock
    // (other tests' rounds announce on the same channel).
    admit_batch(&scope, &round, &["eve"], 0).await?;
    let mut messages = sold_out.on_message();
    let mut ours = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(message)) = tokio::time::timeout_at(until, messages.next()).await {
        ours += usize::from(message.get_payload::<String>()? == round.to_string());
    }
    assert_eq!(ours, 1, "sold-out messages for {round}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_named_twice_in_a_batch_takes_the_next_slot_up_to_the_limit() -> anyhow::Result<()> {
    let scope = Scope::new("batch").await?;
    let round = scope.round("slots")?;
    scope.prewarm_spec(&round, &spec(10, 2)).await?;
    let decided: Vec<Admission> =
        admit_batch(&scope, &round, &["ann", "ann", "ann"], 0).await?.into_iter().map(timeless).collect();
    assert_eq!(
        decided,
        vec![
            Admission::Issued { seq: 1, slot: 1, remaining: 9, at_ms: 0 },
            Admission::Issued { seq: 2, slot: 2, remaining: 8, at_ms: 0 },
            Admission::AlreadyIssued { seq: 2 },
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_of_the_round_is_every_users() -> anyhow::Result<()> {
    let scope = Scope::new("batch").await?;
    let later = scope.round("later")?;
    let opens_at = couponrush_core::wall_clock_ms() + 60_000;
    scope.prewarm_spec(&later, &RoundSpec { start_ms: opens_at, ..spec(5, 1) }).await?;
    assert_eq!(
        admit_batch(&scope, &later, &["ann", "bob"], 0).await?,
        vec![Admission::NotStarted { starts_at_ms: opens_at }; 2]
    );

    let open = scope.round("open")?;
    scope.prewarm_spec(&open, &spec(5, 1)).await?;
    // A caller that saw seq 7 where Redis holds 0: Redis lost writes, nobody is admitted.
    assert_eq!(
        admit_batch(&scope, &open, &["ann", "bob"], 7).await?,
        vec![Admission::Regressed { seq_in_redis: 0 }; 2]
    );
    let meta = round_meta(&mut scope.redis().await?, &RoundKeys::new(&open)).await?.expect("the round's meta");
    assert_eq!((meta.remaining, meta.seq), (5, 0));

    let unknown = scope.round("never-prewarmed")?;
    assert_eq!(admit_batch(&scope, &unknown, &["ann"], 0).await?, vec![Admission::UnknownRound]);
    Ok(())
}

/// The same 400 presses (300 users, some pressing twice, stock 200, two coupons each)
/// decided once in batches of random sizes and once one by one, on two rounds with the
/// same settings: the same outcomes, seqs and counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_decide_exactly_what_single_admissions_decide() -> anyhow::Result<()> {
    let scope = Scope::new("batch").await?;
    let (batched, single) = (scope.round("batched")?, scope.round("single")?);
    for round in [&batched, &single] {
        scope.prewarm_spec(round, &spec(200, 2)).await?;
    }
    let mut random = rand::rngs::StdRng::seed_from_u64(20_261_202);
    let names: Vec<String> = (0..400).map(|_| format!("user {}", random.random_range(0..300))).collect();
    let presses: Vec<&str> = names.iter().map(String::as_str).collect();

    let mut in_batches = Vec::new();
    let mut rest = presses.as_slice();
    while !rest.is_empty() {
        let (batch, after) = rest.split_at(random.random_range(1..=64).min(rest.len()));
        in_batches.extend(admit_batch(&scope, &batched, batch, 0).await?);
        rest = after;
    }
    let mut one_by_one = Vec::new();
    let mut redis = scope.redis().await?;
    let keys = RoundKeys::new(&single);
    for user in &presses {
        one_by_one.push(admission::admit(&mut redis, &keys, &single.to_string(), user).await?);
    }
    let in_batches: Vec<Admission> = in_batches.into_iter().map(timeless).collect();
    let one_by_one: Vec<Admission> = one_by_one.into_iter().map(timeless).collect();
    assert_eq!(in_batches, one_by_one);
    let issued = in_batches.iter().filter(|outcome| matches!(outcome, Admission::Issued { .. })).count();
    assert_eq!(issued, 200, "the whole stock, not more");
    Ok(())
}
