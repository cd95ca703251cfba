//! The Redis gates in front of the strategies that decide in MySQL (`redis-lock`,
//! `redis-counter`, `redis-counter-set`). None of them decides a coupon: MySQL's
//! transaction does. A gate only keeps requests away from MySQL, so a gate that errs
//! costs a MySQL check or a wait, never a coupon.

use std::sync::LazyLock;

use redis::{AsyncCommands, Script};

use super::keys::RoundKeys;
use crate::redis_conn::RedisConn;

/// Takes the round's lock under `token` for at most `expiry_ms` (a crashed holder
/// frees it then); whether this caller holds it.
pub async fn try_lock(redis: &mut RedisConn, keys: &RoundKeys, token: u64, expiry_ms: u64) -> redis::RedisResult<bool> {
    let acquired: Option<String> =
        redis::cmd("SET").arg(&keys.lock).arg(token).arg("NX").arg("PX").arg(expiry_ms).query_async(redis).await?;
    Ok(acquired.is_some())
}

static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end")
});

/// Releases the lock if `token` still holds it (a holder that outlived the expiry must
/// not free the next holder's lock).
pub async fn unlock(redis: &mut RedisConn, keys: &RoundKeys, token: u64) -> redis::RedisResult<()> {
    let _released: i64 = UNLOCK.key(&keys.lock).arg(token).invoke_async(redis).await?;
    Ok(())
}

/// Counts one more admission granted or in flight; the caller's place (1-based).
pub async fn take_place(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<u32> {
    redis.incr(&keys.admitted, 1).await
}

/// Gives a place back: its request ended without a coupon.
pub async fn give_back_place(redis: &mut RedisConn, keys: &RoundKeys) -> redis::RedisResult<()> {
    let _left: i64 = redis.decr(&keys.admitted, 1).await?;
    Ok(())
}

/// Adds `user` to the round's set of users past the one-per-user gate; whether they
/// were not in it yet.
pub async fn join_users(redis: &mut RedisConn, keys: &RoundKeys, user: &str) -> redis::RedisResult<bool> {
    redis.sadd(&keys.users, user).await
}

/// Takes `user` out of that set again: their request ended without a coupon.
pub async fn leave_users(redis: &mut RedisConn, keys: &RoundKeys, user: &str) -> redis::RedisResult<()> {
    let _removed: i64 = redis.srem(&keys.users, user).await?;
    Ok(())
}
