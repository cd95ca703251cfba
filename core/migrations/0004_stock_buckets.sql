-- The round's stock buckets (core/src/round_store/buckets.rs), kept with its stock so that
-- a recovery after Redis lost every key still knows the round had buckets (and refuses:
-- rebuilding a bucketed round is not built). 1 for every round before buckets existed.
ALTER TABLE coupon_rounds
    ADD COLUMN stock_buckets INT UNSIGNED NOT NULL DEFAULT 1;
