//! The spike driver: many distinct users, each sending several requests, interleaved
//! at random and sent concurrently, as at 10:00 on the day. Tallies every answer and
//! checks the guarantees against the answers and against MySQL.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use couponrush_core::event::RoundId;
use futures::StreamExt;
use rand::Rng;
use rand::seq::SliceRandom;
use serde::Deserialize;
use sqlx::MySqlPool;

#[derive(Clone, Debug)]
pub struct Spike {
    pub users: usize,
    pub requests_per_user: usize,
    pub concurrency: usize,
}

/// Clients that give up: each request is, with `probability`, abandoned (its
/// connection dropped, as a closed browser tab or a short client timeout does) after a
/// random wait of up to `within`.
#[derive(Clone, Copy, Debug)]
pub struct HangUps {
    pub probability: f64,
    pub within: Duration,
}

#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    seq: Option<u32>,
}

/// An HTTP status code and the body that came with it.
type Reply = (u16, Answer);
/// When an answer arrived, and the answer.
type Received = (Instant, Reply);
/// Who asked, when, and what came back (`None`: the client hung up on purpose).
type Sent = (usize, Instant, Option<Result<Received, reqwest::Error>>);

/// Every answer of a spike.
#[derive(Debug, Default)]
pub struct Tally {
    /// Count per `status` word.
    pub by_status: BTreeMap<String, u64>,
    /// Count per HTTP status code.
    pub by_code: BTreeMap<u16, u64>,
    /// (user, seq) of every 201.
    pub issued: Vec<(String, u32)>,
    /// (user, seq) of every ALREADY_ISSUED.
    pub already: Vec<(String, u32)>,
    /// Users told QUEUED at least once.
    pub queued: HashSet<String>,
    pub transport_errors: u64,
    /// The first request that failed without an answer, for the report.
    pub first_transport_error: Option<String>,
    /// Requests the client abandoned on purpose ([`HangUps`]).
    pub hung_up: u64,
    pub elapsed: Duration,
    /// Latency of every answered request, sorted.
    pub latencies: Vec<Duration>,
    /// When the first SOLD_OUT answer arrived.
    pub first_sold_out: Option<Instant>,
    /// When each answer arrived and its `status` word (for the round's timeline).
    pub answered: Vec<(Instant, String)>,
}

impl Tally {
    pub fn count(&self, status: &str) -> u64 {
        self.by_status.get(status).copied().unwrap_or(0)
    }

    /// The `q` quantile (0..=1) of the answered requests' latency.
    pub fn latency(&self, q: f64) -> Duration {
        crate::load::quantile(&self.latencies, q).unwrap_or_default()
    }

    pub fn server_errors(&self) -> u64 {
        self.by_code.iter().filter(|(code, _)| **code >= 500).map(|(_, n)| n).sum()
    }
}

pub fn user_name(i: usize) -> String {
    format!("user-{i:06}")
}

impl Spike {
    /// Sends `users × requests_per_user` POSTs, spread over `issue_urls` in turn.
    pub async fn run(&self, issue_urls: &[String]) -> anyhow::Result<Tally> {
        self.run_as(issue_urls, 0, None).await
    }

    /// [`Spike::run`] with users numbered from `first_user` (so that a second spike can
    /// bring fresh users), some of whom hang up if `hang_ups` says so.
    pub async fn run_as(
        &self,
        issue_urls: &[String],
        first_user: usize,
        hang_ups: Option<HangUps>,
    ) -> anyhow::Result<Tally> {
        let names: Vec<String> = (0..self.users).map(|i| user_name(first_user + i)).collect();
        self.run_named(issue_urls, &names, hang_ups).await
    }

    /// [`Spike::run`] with the users `names` (`users` is their number), e.g. users
    /// chosen for the stock bucket they belong to.
    pub async fn run_named(
        &self,
        issue_urls: &[String],
        names: &[String],
        hang_ups: Option<HangUps>,
    ) -> anyhow::Result<Tally> {
        ensure!(names.len() == self.users, "{} names for {} users", names.len(), self.users);
        let tokens: Vec<String> = names.iter().map(|name| crate::token(name)).collect();
        let mut order: Vec<usize> =
            (0..self.users).flat_map(|u| std::iter::repeat_n(u, self.requests_per_user)).collect();
        order.shuffle(&mut rand::rng());
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(self.concurrency)
            .timeout(Duration::from_secs(30))
            .build()?;
        let started = Instant::now();
        let answers: Vec<Sent> = futures::stream::iter(order.into_iter().enumerate())
            .map(|(n, user)| {
                let client = &client;
                let url = &issue_urls[n % issue_urls.len()];
                let token = &tokens[user];
                let patience = hang_ups.and_then(|hang| {
                    let mut rng = rand::rng();
                    rng.random_bool(hang.probability.clamp(0.0, 1.0)).then(|| hang.within.mul_f64(rng.random()))
                });
                async move {
                    let sent = Instant::now();
                    let answer = async {
                        let response = client.post(url).bearer_auth(token).send().await?;
                        let code = response.status().as_u16();
                        let answer = response.json::<Answer>().await?;
                        Ok((Instant::now(), (code, answer)))
                    };
                    let answer = match patience {
                        // Dropping the request future closes its connection mid-request.
                        Some(patience) => tokio::time::timeout(patience, answer).await.ok(),
                        None => Some(answer.await),
                    };
                    (user, sent, answer)
                }
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut tally = Tally { elapsed: started.elapsed(), ..Tally::default() };
        for (user, sent, answer) in answers {
            match answer {
                None => tally.hung_up += 1,
                Some(Ok((received, (code, answer)))) => {
                    tally.latencies.push(received - sent);
                    if answer.status == "SOLD_OUT" && tally.first_sold_out.is_none_or(|first| received < first) {
                        tally.first_sold_out = Some(received);
                    }
                    *tally.by_code.entry(code).or_default() += 1;
                    tally.answered.push((received, answer.status.clone()));
                    match (answer.status.as_str(), answer.seq) {
                        ("ISSUED", Some(seq)) => tally.issued.push((names[user].clone(), seq)),
                        ("ALREADY_ISSUED", Some(seq)) => tally.already.push((names[user].clone(), seq)),
                        ("QUEUED", _) => {
                            tally.queued.insert(names[user].clone());
                        }
                        _ => {}
                    }
                    *tally.by_status.entry(answer.status).or_default() += 1;
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "request failed");
                    tally.transport_errors += 1;
                    if tally.first_transport_error.is_none() {
                        tally.first_transport_error = Some(format!("{error:?}"));
                    }
                }
            }
        }
        tally.latencies.sort_unstable();
        Ok(tally)
    }
}

/// Polls `GET …/issue` for every queued user until none is still queued; returns the
/// (user, seq) of those whose result is ISSUED. A transient 503 (`Retry-After: 1`: a
/// backend call that failed on a loaded machine, nothing changed) is polled again, as a
/// client would; a paused round (`Retry-After: 5`) or any other answer fails.
pub async fn poll_queue(
    issue_url: &str,
    users: &HashSet<String>,
    within: Duration,
) -> anyhow::Result<Vec<(String, u32)>> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut waiting: Vec<String> = users.iter().cloned().collect();
    let mut issued = Vec::new();
    let mut retries = 0_usize;
    while !waiting.is_empty() {
        ensure!(Instant::now() < deadline, "{} users still queued after {within:?}", waiting.len());
        ensure!(retries <= users.len() / 10, "{retries} polls answered 503: more than a loaded machine explains");
        let answers: Vec<(String, anyhow::Result<Answer>)> = futures::stream::iter(waiting.drain(..))
            .map(|user| {
                let client = &client;
                async move {
                    let answer = async {
                        let response = client.get(issue_url).bearer_auth(crate::token(&user)).send().await?;
                        let retry_after = response.headers().get("retry-after").cloned();
                        let mut answer = response.json::<Answer>().await?;
                        if answer.status == "UNAVAILABLE" && retry_after.is_some_and(|v| v == "1") {
                            answer.status = "RETRY".to_owned();
                        }
                        Ok(answer)
                    }
                    .await;
                    (user, answer)
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        for (user, answer) in answers {
            let answer = answer.with_context(|| format!("polling {user}"))?;
            match (answer.status.as_str(), answer.seq) {
                ("QUEUED", _) => waiting.push(user),
                ("RETRY", _) => {
                    retries += 1;
                    waiting.push(user);
                }
                ("ISSUED", Some(seq)) => issued.push((user, seq)),
                ("SOLD_OUT", _) => {}
                (other, _) => anyhow::bail!("{user} was queued, then answered {other}"),
            }
        }
        if !waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if retries > 0 {
        println!("queue polls answered 503 and polled again: {retries}");
    }
    Ok(issued)
}

/// What MySQL holds for a round: (user, seq) of every row.
pub async fn rows(pool: &MySqlPool, round: &RoundId) -> anyhow::Result<Vec<(String, u32)>> {
    Ok(sqlx::query_as(
        "SELECT CAST(user_id AS CHAR CHARACTER SET utf8mb4), seq FROM coupons WHERE event = ? AND round_no = ?",
    )
    .bind(round.event.to_string())
    .bind(round.round)
    .fetch_all(pool)
    .await?)
}

/// The guarantees after a round sold out: exactly `stock` winners, each a distinct
/// user, seqs 1..=stock each once, the rows are exactly the winners, every repeat
/// answer carries its user's seq, and nothing failed.
pub fn check_sold_out(
    stock: u32,
    winners: &[(String, u32)],
    already: &[(String, u32)],
    rows: &[(String, u32)],
) -> anyhow::Result<()> {
    check_winners(stock, stock, winners, already, rows)
}

/// [`check_sold_out`] for a round where `max_seq - stock` admissions were rolled back:
/// a rolled-back seq is never handed out again, so seqs are distinct and at most
/// `max_seq` rather than exactly 1..=stock.
pub fn check_winners(
    stock: u32,
    max_seq: u32,
    winners: &[(String, u32)],
    already: &[(String, u32)],
    rows: &[(String, u32)],
) -> anyhow::Result<()> {
    ensure!(winners.len() == stock as usize, "{} ISSUED answers for stock {stock}", winners.len());
    let users: HashSet<&str> = winners.iter().map(|(u, _)| u.as_str()).collect();
    ensure!(users.len() == winners.len(), "a user was issued twice");
    let mut seqs: Vec<u32> = winners.iter().map(|(_, s)| *s).collect();
    seqs.sort_unstable();
    seqs.dedup();
    ensure!(seqs.len() == winners.len(), "a seq was handed out twice");
    ensure!(seqs.first() >= Some(&1) && seqs.last() <= Some(&max_seq), "seqs outside 1..={max_seq}");
    let by_user: HashMap<&str, u32> = winners.iter().map(|(u, s)| (u.as_str(), *s)).collect();
    for (user, seq) in already {
        ensure!(by_user.get(user.as_str()) == Some(seq), "ALREADY_ISSUED for {user} with seq {seq} that is not theirs");
    }
    let mut expected = winners.to_vec();
    expected.sort();
    let mut actual = rows.to_vec();
    actual.sort();
    ensure!(actual.len() == expected.len(), "{} rows in MySQL for {} winners", actual.len(), expected.len());
    ensure!(actual == expected, "MySQL rows differ from the ISSUED answers");
    Ok(())
}
