//! The Redis contract of a round, in one place: the key layout ([`keys`]), the round's
//! settings and counters and the event's pointer to its current round ([`meta`]), the
//! arithmetic of stock buckets ([`buckets`]), the
//! admission scripts shared by issuer and consumer ([`admission`]), the `queue`
//! strategy's scripts and result codec ([`queue`]), and the gates of the strategies that
//! decide in MySQL ([`gates`]).
//!
//! Every script is built once (`LazyLock`), so `EVALSHA` reuses the server's cached copy;
//! every reply is parsed strictly: a reply this version does not understand is an error
//! ([`admission::ScriptError::UnexpectedReply`]), never a guess.

pub mod admission;
pub mod buckets;
pub mod gates;
pub mod keys;
pub mod meta;
pub mod queue;

/// Tells every issuer that the round labelled `round_label` is sold out (payload of
/// [`keys::SOLD_OUT_CHANNEL`]). The admission scripts publish it themselves (per bucket)
/// when they admit a bucket's last coupon; the strategies that decide in MySQL call this.
pub async fn announce_sold_out(conn: &mut crate::redis_conn::RedisConn, round_label: &str) -> redis::RedisResult<()> {
    let _receivers: i64 = redis::AsyncCommands::publish(conn, keys::SOLD_OUT_CHANNEL, round_label).await?;
    Ok(())
}
