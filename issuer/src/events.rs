//! The issuer's memory of events: which round is current, its strategy and stock, and
//! whether it is sold out. A sold-out round is answered from here without touching
//! Redis. Entries are refreshed in the background, and the sold-out channel tells every
//! issuer the moment any of them admits the last coupon.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::strategies::AdmissionBatches;
use couponrush_core::event::{EventId, RoundId, Strategy};
use couponrush_core::redis_conn::{RedisConn, RedisTarget};
use couponrush_core::round_store::buckets::{bucket_of_seq, count_of_seq};
use couponrush_core::round_store::keys::{RoundKeys, SOLD_OUT_CHANNEL, bucket_label, parse_bucket_label};
use couponrush_core::round_store::meta::{RoundMeta, bucket_metas, current_round, round_meta};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long "no such event" is remembered, so a flood of requests for an unknown
/// event costs one Redis lookup per interval.
const UNKNOWN_TTL: Duration = Duration::from_secs(1);
const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// Until this long before a round opens, NOT_STARTED is answered from memory (see
/// [`LiveRound::opens_after`]); in the margin Redis decides. Well above the skew that
/// chrony with a cloud time service leaves between nodes (about a millisecond), and
/// small because every press in it costs Redis a call: at 1,000,000 presses/s, 100 ms
/// is 100,000 calls (docs/scale.md). A clock behind Redis' by more than this opens this
/// issuer that much late; it never admits early (only Redis admits).
pub const OPENING_MARGIN: Duration = Duration::from_millis(100);

/// The current round of an event, as this issuer knows it.
#[derive(Debug)]
pub struct LiveRound {
    pub round: RoundId,
    /// `namespace/name:round`, the sold-out channel's payload (of bucket 0).
    pub label: String,
    /// Bucket 0's keys: all of the round's keys unless its stock is split into buckets.
    pub keys: RoundKeys,
    pub strategy: Strategy,
    pub stock: AtomicU32,
    /// The round's stock buckets (1 for a round without; see `strategies::kafka_async`).
    pub buckets: u32,
    /// Each bucket's keys and label (the hash tag's content and its sold-out payload).
    bucket_keys: Vec<(RoundKeys, String)>,
    sold_out: AtomicBool,
    /// Per bucket: sold out, as far as this issuer knows. The round is sold out (answered
    /// from memory) once every bucket is.
    bucket_sold_out: Vec<AtomicBool>,
    /// Per bucket, the highest seq counter this issuer has seen it reach (by its own
    /// admissions or in Redis; for one bucket, the highest seq). Redis' counter never
    /// goes below it unless Redis lost writes; the admission scripts refuse to admit then.
    seq_seen: Vec<AtomicU32>,
    /// The round's pointer or keys vanished from Redis while this issuer served it.
    vanished: AtomicBool,
    /// The event's owner stopped admissions (`spec.paused`, written to the round's meta
    /// by the operator); read with the meta on every refresh.
    paused: AtomicBool,
    /// When the round opens (ms since the epoch), from the meta on every refresh.
    start_ms: AtomicI64,
    /// `kafka-async`: the queue in front of the round's admission script.
    pub admissions: AdmissionBatches,
}

impl LiveRound {
    /// A round of one bucket (the tests' rounds).
    #[cfg(test)]
    pub(crate) fn new(round: RoundId, strategy: Strategy, stock: u32, seq_seen: u32, start_ms: i64) -> Self {
        Self::with_buckets(round, strategy, stock, &[seq_seen], start_ms)
    }

    /// A round of `seq_seen.len()` buckets (at least one), each with the seq counter seen.
    pub(crate) fn with_buckets(
        round: RoundId,
        strategy: Strategy,
        stock: u32,
        seq_seen: &[u32],
        start_ms: i64,
    ) -> Self {
        let floors = if seq_seen.is_empty() { &[0][..] } else { seq_seen };
        let buckets = u32::try_from(floors.len()).unwrap_or(1);
        Self {
            seq_seen: floors.iter().map(|seen| AtomicU32::new(*seen)).collect(),
            vanished: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            start_ms: AtomicI64::new(start_ms),
            label: round.to_string(),
            keys: RoundKeys::new(&round),
            bucket_keys: (0..buckets)
                .map(|bucket| (RoundKeys::bucket(&round, bucket), bucket_label(&round, bucket)))
                .collect(),
            buckets,
            bucket_sold_out: (0..buckets).map(|_| AtomicBool::new(false)).collect(),
            round,
            strategy,
            stock: AtomicU32::new(stock),
            sold_out: AtomicBool::new(false),
            admissions: AdmissionBatches::default(),
        }
    }

    /// Bucket `bucket`'s keys and label (bucket 0's for a bucket the round does not have).
    pub fn bucket(&self, bucket: u32) -> (&RoundKeys, &str) {
        let (keys, label) = self.bucket_keys.get(bucket as usize).unwrap_or(&self.bucket_keys[0]);
        (keys, label)
    }

    /// The highest seq counter of `bucket` seen so far: Redis' counter must be at least this.
    pub fn seq_floor(&self, bucket: u32) -> u32 {
        self.seq_seen.get(bucket as usize).map_or(0, |seen| seen.load(Ordering::Relaxed))
    }

    /// Every bucket's floor, bucket 0 first.
    fn seq_floors(&self) -> Vec<u32> {
        self.seq_seen.iter().map(|seen| seen.load(Ordering::Relaxed)).collect()
    }

    /// Notes that `seq` was handed out (by the bucket the seq belongs to).
    pub fn saw_seq(&self, seq: u32) {
        self.saw_count(bucket_of_seq(seq, self.buckets), count_of_seq(seq, self.buckets));
    }

    fn saw_count(&self, bucket: u32, count: u32) {
        if let Some(seen) = self.seq_seen.get(bucket as usize) {
            seen.fetch_max(count, Ordering::Relaxed);
        }
    }

    /// Whether the round's state vanished from Redis: admissions stay paused (503) rather
    /// than start again from nothing, until the keys are back.
    pub fn has_vanished(&self) -> bool {
        self.vanished.load(Ordering::Relaxed)
    }

    pub fn mark_vanished(&self) {
        if !self.vanished.swap(true, Ordering::Relaxed) {
            tracing::error!(round = %self.label, "the round's keys vanished from Redis (restart without its data, flush?): admissions are paused");
        }
    }

    fn reappeared(&self) {
        if self.vanished.swap(false, Ordering::Relaxed) {
            tracing::warn!(round = %self.label, "the round's keys are back in Redis");
        }
    }

    /// Whether admissions are paused by the event's owner (not a fault: sold-out
    /// answers and results stay as they are).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        if self.paused.swap(paused, Ordering::Relaxed) != paused {
            tracing::warn!(round = %self.label, paused, "admissions paused by the event's owner: {paused}");
        }
    }

    pub fn is_sold_out(&self) -> bool {
        self.sold_out.load(Ordering::Relaxed)
    }

    /// Whether `bucket` is sold out as far as this issuer knows.
    pub fn is_bucket_sold_out(&self, bucket: u32) -> bool {
        self.bucket_sold_out.get(bucket as usize).is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// The opening, if this issuer's clock puts `now_ms` more than [`OPENING_MARGIN`]
    /// before it: the request can be answered NOT_STARTED without asking Redis. Redis'
    /// clock decides the opening itself (the admission script's gate); the margin covers
    /// the skew between this machine's clock and Redis', so memory never says "not
    /// started" to a request Redis would have admitted.
    pub fn opens_after(&self, now_ms: i64) -> Option<i64> {
        let start_ms = self.start_ms.load(Ordering::Relaxed);
        let margin_ms = i64::try_from(OPENING_MARGIN.as_millis()).unwrap_or(i64::MAX);
        (now_ms < start_ms.saturating_sub(margin_ms)).then_some(start_ms)
    }

    /// The whole round (every bucket) is sold out.
    pub fn mark_sold_out(&self) {
        for flag in &self.bucket_sold_out {
            flag.store(true, Ordering::Relaxed);
        }
        if !self.sold_out.swap(true, Ordering::Relaxed) {
            tracing::info!(round = %self.label, "round sold out: answering from memory from now on");
        }
    }

    /// `bucket` is sold out; the round is once every bucket is.
    pub fn mark_bucket_sold_out(&self, bucket: u32) {
        if let Some(flag) = self.bucket_sold_out.get(bucket as usize) {
            flag.store(true, Ordering::Relaxed);
        }
        if self.bucket_sold_out.iter().all(|flag| flag.load(Ordering::Relaxed)) {
            self.mark_sold_out();
        }
    }

    /// `bucket` has stock again (raised stock, a coupon given back).
    fn reopen_bucket(&self, bucket: u32) {
        if let Some(flag) = self.bucket_sold_out.get(bucket as usize) {
            flag.store(false, Ordering::Relaxed);
        }
        if self.sold_out.swap(false, Ordering::Relaxed) {
            tracing::info!(round = %self.label, bucket, "round has stock again");
        }
    }

    fn reopen(&self) {
        for bucket in 0..self.buckets {
            self.reopen_bucket(bucket);
        }
    }
}

enum Cached {
    Known(Arc<LiveRound>),
    Unknown(Instant),
}

pub struct Events {
    cache: RwLock<HashMap<EventId, Cached>>,
    /// The highest seq counters seen (per bucket) of rounds that left the cache (their
    /// pointer vanished or moved): if such a round comes back, it must not restart below.
    seq_seen: RwLock<HashMap<RoundId, Vec<u32>>>,
    redis: RedisConn,
}

impl Events {
    pub fn new(redis: RedisConn) -> Self {
        Self { cache: RwLock::new(HashMap::new()), seq_seen: RwLock::new(HashMap::new()), redis }
    }

    fn forget(&self, event: &EventId) {
        let removed = self.cache.write().ok().and_then(|mut cache| cache.remove(event));
        if let Some(Cached::Known(live)) = removed
            && let Ok(mut seen) = self.seq_seen.write()
        {
            let floors = seen.entry(live.round.clone()).or_default();
            let seen_now = live.seq_floors();
            floors.resize(floors.len().max(seen_now.len()), 0);
            for (floor, now) in floors.iter_mut().zip(seen_now) {
                *floor = (*floor).max(now);
            }
        }
    }

    /// The event's current round; `None` if the event was never pre-warmed.
    pub async fn get(&self, event: &EventId) -> redis::RedisResult<Option<Arc<LiveRound>>> {
        if let Ok(cache) = self.cache.read() {
            match cache.get(event) {
                Some(Cached::Known(round)) => return Ok(Some(round.clone())),
                Some(Cached::Unknown(at)) if at.elapsed() < UNKNOWN_TTL => return Ok(None),
                _ => {}
            }
        }
        let loaded = self.load(event).await?;
        if let Ok(mut cache) = self.cache.write() {
            let entry = match &loaded {
                Some(round) => Cached::Known(round.clone()),
                None => Cached::Unknown(Instant::now()),
            };
            // Keep an entry a concurrent load already put there: it carries the flags.
            match (cache.get(event), &loaded) {
                (Some(Cached::Known(existing)), Some(new)) if existing.round == new.round => {
                    return Ok(Some(existing.clone()));
                }
                _ => {
                    cache.insert(event.clone(), entry);
                }
            }
        }
        Ok(loaded)
    }

    /// The strategy of the event's current round if this issuer already knows that round
    /// is sold out; memory only, never a Redis call.
    pub fn sold_out_from_memory(&self, event: &EventId) -> Option<Strategy> {
        match self.cache.read().ok()?.get(event) {
            Some(Cached::Known(round)) if round.is_sold_out() => Some(round.strategy),
            _ => None,
        }
    }

    async fn load(&self, event: &EventId) -> redis::RedisResult<Option<Arc<LiveRound>>> {
        let mut redis = self.redis.clone();
        let Some((round, strategy)) = current_round(&mut redis, event).await? else {
            return Ok(None);
        };
        let keys = RoundKeys::new(&round);
        let Some(meta) = round_meta(&mut redis, &keys).await? else {
            return Ok(None);
        };
        let metas =
            if meta.buckets > 1 { bucket_metas(&mut redis, &round, meta.buckets).await? } else { vec![Some(meta)] };
        let remembered = self.seq_seen.read().ok().and_then(|seen| seen.get(&round).cloned()).unwrap_or_default();
        let mut floors = Vec::with_capacity(metas.len());
        for (bucket, meta) in metas.iter().enumerate() {
            let seq = meta.as_ref().map_or(0, |meta| meta.seq);
            let floor = remembered.get(bucket).copied().unwrap_or(0);
            if seq < floor {
                tracing::error!(%round, bucket, seq_in_redis = seq, seq_seen = floor, "the round came back in Redis with a lower seq counter: Redis lost writes; admissions stay paused");
            }
            floors.push(seq.max(floor));
        }
        let present: Vec<&RoundMeta> = metas.iter().flatten().collect();
        let stock = present.iter().map(|meta| meta.stock).sum();
        let first = present.first().map_or(0, |meta| meta.start_ms);
        let live = LiveRound::with_buckets(round, strategy, stock, &floors, first);
        if present.len() < metas.len() {
            // A bucket's keys are gone (its shard lost them): admitting in the others
            // would look fine while that bucket's seqs could be handed out again.
            live.mark_vanished();
        }
        if let Some(meta) = present.first() {
            live.set_paused(meta.paused);
        }
        if tracks_remaining(strategy) {
            for (bucket, meta) in (0u32..).zip(&metas) {
                if meta.as_ref().is_some_and(|meta| meta.remaining == 0) {
                    live.mark_bucket_sold_out(bucket);
                }
            }
        }
        Ok(Some(Arc::new(live)))
    }

    /// Every round this issuer currently knows.
    pub fn known_rounds(&self) -> Vec<Arc<LiveRound>> {
        self.known().into_iter().map(|(_, live)| live).collect()
    }

    fn known(&self) -> Vec<(EventId, Arc<LiveRound>)> {
        self.cache
            .read()
            .map(|cache| {
                cache
                    .iter()
                    .filter_map(|(event, cached)| match cached {
                        Cached::Known(round) => Some((event.clone(), round.clone())),
                        Cached::Unknown(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Re-reads every known event: a new round replaces the old one, raised stock
    /// reopens a sold-out round, a rolled-back last coupon reopens it too.
    async fn refresh(&self) {
        let mut redis = self.redis.clone();
        for (event, live) in self.known() {
            let current = match current_round(&mut redis, &event).await {
                Ok(current) => current,
                Err(error) => {
                    tracing::debug!(%error, %event, "refreshing event failed");
                    continue;
                }
            };
            let Some((round, strategy)) = current else {
                // Removed after the round (then this issuer is being torn down too), or
                // lost by Redis: either way, answer 503 rather than admit from nothing.
                live.mark_vanished();
                continue;
            };
            if round != live.round || strategy != live.strategy {
                self.forget(&event);
                continue;
            }
            // The floors are read before Redis is asked: admissions answered while the
            // read is on its way raise them past what the read can show, and comparing
            // with a raised floor called a healthy Redis "lost writes" (35-41 false errors
            // per saturating run in bench/pod.sh). Every seq seen before the read was
            // handed out by Redis before it, so a read below these floors is a real loss.
            let floors_before_read = live.seq_floors();
            let metas = if live.buckets > 1 {
                bucket_metas(&mut redis, &live.round, live.buckets).await
            } else {
                round_meta(&mut redis, &live.keys).await.map(|meta| vec![meta])
            };
            let Ok(metas) = metas else {
                continue;
            };
            if metas.iter().any(Option::is_none) {
                live.mark_vanished();
                continue;
            }
            live.reappeared();
            let mut stock = 0u32;
            for (bucket, meta) in (0u32..).zip(metas.iter().flatten()) {
                let floor = floors_before_read.get(bucket as usize).copied().unwrap_or(0);
                if meta.seq < floor {
                    tracing::error!(round = %live.label, bucket, seq_in_redis = meta.seq, seq_seen = floor, "Redis' seq counter went back: Redis lost writes; admissions are paused");
                }
                live.saw_count(bucket, meta.seq);
                stock = stock.saturating_add(meta.stock);
                if tracks_remaining(live.strategy) {
                    if meta.remaining > 0 {
                        live.reopen_bucket(bucket);
                    } else {
                        live.mark_bucket_sold_out(bucket);
                    }
                }
            }
            if let Some(meta) = metas.first().and_then(Option::as_ref) {
                live.set_paused(meta.paused);
                live.start_ms.store(meta.start_ms, Ordering::Relaxed);
            }
            let old_stock = live.stock.swap(stock, Ordering::Relaxed);
            if !tracks_remaining(live.strategy) && stock > old_stock {
                live.reopen();
            }
        }
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|_, cached| !matches!(cached, Cached::Unknown(at) if at.elapsed() >= UNKNOWN_TTL));
        }
    }

    /// A bucket's sold-out message (its label: the round's for bucket 0).
    fn mark_sold_out_by_label(&self, label: &str) {
        let Some((round_label, bucket)) = parse_bucket_label(label) else {
            return;
        };
        for (_, live) in self.known() {
            if live.label == round_label {
                live.mark_bucket_sold_out(bucket);
            }
        }
    }
}

/// Strategies whose Redis `remaining` is authoritative (the others count in MySQL).
fn tracks_remaining(strategy: Strategy) -> bool {
    strategy.redis_remaining_is_current()
}

/// Refreshes the cache until `shutdown`.
pub async fn refresh_loop(events: Arc<Events>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => events.refresh().await,
        }
    }
}

/// Listens on the sold-out channel until `shutdown`, reconnecting with backoff.
pub async fn sold_out_listener(events: Arc<Events>, target: RedisTarget, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let subscribed = async {
            let mut pubsub = target.pubsub_client()?.get_async_pubsub().await?;
            pubsub.subscribe(SOLD_OUT_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                backoff = Duration::from_millis(100);
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => {
                                if let Ok(label) = message.get_payload::<String>() {
                                    events.mark_sold_out_by_label(&label);
                                }
                            }
                            None => break,
                        },
                    }
                }
                tracing::warn!("sold-out subscription ended; reconnecting");
            }
            Err(error) => {
                tracing::warn!(%error, "subscribing to the sold-out channel failed; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_says_not_started_only_until_the_margin_before_the_opening() {
        let round = couponrush_core::event::EventId::new("shop", "sale").expect("valid").round(1);
        let opening = 1_800_000_000_000;
        let live = LiveRound::new(round, Strategy::KafkaAsync, 10, 0, opening);
        let margin = i64::try_from(OPENING_MARGIN.as_millis()).expect("small");
        assert_eq!(live.opens_after(opening - 60_000), Some(opening));
        assert_eq!(live.opens_after(opening - margin - 1), Some(opening));
        // From the margin on, Redis' clock decides.
        assert_eq!(live.opens_after(opening - margin), None);
        assert_eq!(live.opens_after(opening + 5), None);
    }

    #[test]
    fn a_bucketed_round_is_sold_out_only_once_every_bucket_is() {
        let round = couponrush_core::event::EventId::new("shop", "sale").expect("valid").round(1);
        let live = LiveRound::with_buckets(round, Strategy::KafkaAsync, 1_000, &[0, 0, 0], 0);
        live.mark_bucket_sold_out(2);
        live.mark_bucket_sold_out(0);
        assert!(!live.is_sold_out(), "bucket 1 still has stock");
        assert!(live.is_bucket_sold_out(2) && !live.is_bucket_sold_out(1));
        live.mark_bucket_sold_out(1);
        assert!(live.is_sold_out());
        live.reopen_bucket(1);
        assert!(!live.is_sold_out() && live.is_bucket_sold_out(0));
    }

    #[test]
    fn seqs_raise_the_floor_of_their_own_bucket() {
        let round = couponrush_core::event::EventId::new("shop", "sale").expect("valid").round(1);
        let live = LiveRound::with_buckets(round.clone(), Strategy::KafkaAsync, 1_000, &[0, 0, 0], 0);
        // Seq 8 is bucket 1's third (2, 5, 8).
        live.saw_seq(8);
        assert_eq!((live.seq_floor(0), live.seq_floor(1), live.seq_floor(2)), (0, 3, 0));
        let single = LiveRound::new(round, Strategy::KafkaAsync, 10, 0, 0);
        single.saw_seq(8);
        assert_eq!(single.seq_floor(0), 8, "one bucket: the floor is the seq, as always");
    }
}
