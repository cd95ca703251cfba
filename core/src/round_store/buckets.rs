//! Stock buckets: a `kafka-async` round's stock split over N buckets, each under its own
//! Redis Cluster hash tag, so that N shards share a round's admissions (docs/scale.md).
//! The arithmetic every binary must agree on lives here: which seqs a bucket hands out,
//! which bucket a seq or a user belongs to, how the stock is split, and the order in
//! which a user whose home bucket is empty tries the others. N = 1 is a round as it
//! always was: bucket 0 with the round's own keys, seq = the k-th admission.

/// Most buckets a round's stock may be split into (the CRD's bound).
pub const MAX_STOCK_BUCKETS: u32 = 64;

/// The seq that bucket `bucket` of `buckets` hands out for its `count`-th admission
/// (1-based): buckets interleave, so seqs stay unique across the round without the
/// buckets ever talking to each other. With one bucket, seq = count.
pub fn seq_of(bucket: u32, buckets: u32, count: u32) -> u32 {
    count.saturating_sub(1).saturating_mul(buckets.max(1)).saturating_add(bucket).saturating_add(1)
}

/// The same rule for the Lua scripts that hand seqs out (they cannot call Rust); kept
/// beside [`seq_of`] so that the two never drift apart, and tested against it.
pub(crate) const SEQ_OF_LUA: &str =
    "local function seq_of(bucket, buckets, count) return (count - 1) * buckets + bucket + 1 end";

/// The bucket that handed out `seq`: the inverse of [`seq_of`].
pub fn bucket_of_seq(seq: u32, buckets: u32) -> u32 {
    seq.saturating_sub(1) % buckets.max(1)
}

/// How many seqs `seq`'s bucket had handed out when it handed out `seq` (its counter,
/// which never goes down: the issuers' per-bucket "Redis lost writes" floor).
pub fn count_of_seq(seq: u32, buckets: u32) -> u32 {
    seq.saturating_sub(1) / buckets.max(1) + 1
}

/// A user's home bucket: where the user's one-per-user record lives, so uniqueness is
/// decided on one shard. FNV-1a (64 bit) of the user id's bytes: written out here, not
/// taken from a library or `std`'s `Hasher` (whose output may change between versions),
/// because every issuer of every version must send a user to the same bucket.
pub fn home_bucket(user: &str, buckets: u32) -> u32 {
    let buckets = u64::from(buckets.max(1));
    u32::try_from(fnv1a_64(user.as_bytes()) % buckets).unwrap_or(0)
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(PRIME))
}

/// Each bucket's share of `stock`, as even as it gets: the first `stock mod buckets`
/// buckets hold one more.
pub fn split_stock(stock: u32, buckets: u32) -> Vec<u32> {
    let buckets = buckets.max(1);
    (0..buckets).map(|bucket| stock / buckets + u32::from(bucket < stock % buckets)).collect()
}

/// The buckets a user whose home bucket is empty tries, in order: home + 1, home + 2, …
/// (mod N). Deterministic, so that a retry after a lost reply tries the bucket that may
/// already hold the user's coupon first.
pub fn donor_order(home: u32, buckets: u32) -> impl Iterator<Item = u32> {
    let buckets = buckets.max(1);
    (1..buckets).map(move |step| (home + step) % buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_bucket_hands_out_seqs_as_a_round_always_did() {
        for count in 1..=1_000 {
            assert_eq!(seq_of(0, 1, count), count);
            assert_eq!((bucket_of_seq(count, 1), count_of_seq(count, 1)), (0, count));
        }
    }

    #[test]
    fn buckets_interleave_their_seqs_without_a_gap_or_a_repeat() {
        let buckets = 3;
        let mut seen = std::collections::BTreeSet::new();
        for bucket in 0..buckets {
            for count in 1..=100 {
                let seq = seq_of(bucket, buckets, count);
                assert!(seen.insert(seq), "seq {seq} twice");
                assert_eq!((bucket_of_seq(seq, buckets), count_of_seq(seq, buckets)), (bucket, count));
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), (1..=300).collect::<Vec<_>>());
        // The rule's figures: bucket 1 of 3 hands out 2, 5, 8, …
        assert_eq!([1, 2, 3].map(|count| seq_of(1, 3, count)), [2, 5, 8]);
    }

    /// The Lua copy must be the formula [`seq_of`] computes (the scripts running it on a
    /// real Redis are checked by the tier-2 bucket tests: every seq once, in its bucket).
    #[test]
    fn the_scripts_use_the_same_seq_rule() {
        assert!(SEQ_OF_LUA.contains("return (count - 1) * buckets + bucket + 1"), "{SEQ_OF_LUA}");
        let lua_rule = |bucket: u32, buckets: u32, count: u32| (count - 1) * buckets + bucket + 1;
        for (bucket, buckets, count) in [(0, 1, 1), (2, 3, 7), (63, 64, 1_000)] {
            assert_eq!(lua_rule(bucket, buckets, count), seq_of(bucket, buckets, count));
        }
    }

    /// Fixed vectors: a change here moves users between buckets of a live round (two
    /// issuer versions would then disagree on who decides a user). Never update them.
    #[test]
    fn the_home_hash_never_changes() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(home_bucket("foobar", 3), u32::try_from(0x8594_4171_f739_67e8_u64 % 3).expect("small"));
        let homes: Vec<u32> = ["user-1", "user-2", "user-3", "ann", "사용자"].map(|u| home_bucket(u, 3)).to_vec();
        assert_eq!(homes, HOMES_OF_3);
        for user in ["", "x", "user-42"] {
            assert_eq!(home_bucket(user, 1), 0);
        }
    }

    const HOMES_OF_3: [u32; 5] = [2, 2, 1, 0, 1];

    #[test]
    fn the_stock_is_split_as_evenly_as_it_gets() {
        assert_eq!(split_stock(1_000, 3), [334, 333, 333]);
        assert_eq!(split_stock(1_000, 1), [1_000]);
        assert_eq!(split_stock(5, 5), [1, 1, 1, 1, 1]);
        assert_eq!(split_stock(7, 4), [2, 2, 2, 1]);
        for (stock, buckets) in [(1, 1), (64, 64), (10_000_000, 64), (999, 7)] {
            let shares = split_stock(stock, buckets);
            assert_eq!(shares.iter().sum::<u32>(), stock);
            assert!(shares.iter().max().unwrap_or(&0) - shares.iter().min().unwrap_or(&0) <= 1);
        }
    }

    #[test]
    fn a_user_tries_the_other_buckets_in_turn_from_home() {
        assert_eq!(donor_order(1, 3).collect::<Vec<_>>(), [2, 0]);
        assert_eq!(donor_order(2, 4).collect::<Vec<_>>(), [3, 0, 1]);
        assert_eq!(donor_order(0, 1).count(), 0);
    }
}
