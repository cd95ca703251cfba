-- One row per round: the stock row that db-lock locks and that every synchronous
-- strategy decrements, and the round's gate (start/end, epoch milliseconds).
CREATE TABLE IF NOT EXISTS coupon_rounds (
    event      VARCHAR(320) CHARACTER SET ascii NOT NULL COMMENT 'namespace/name',
    round_no   INT UNSIGNED NOT NULL,
    stock      INT UNSIGNED NOT NULL,
    per_user   INT UNSIGNED NOT NULL,
    issued     INT UNSIGNED NOT NULL DEFAULT 0,
    start_ms   BIGINT NOT NULL,
    end_ms     BIGINT NOT NULL DEFAULT 0 COMMENT '0 = open until sold out',
    PRIMARY KEY (event, round_no)
) ENGINE = InnoDB;

-- One row per admitted coupon. The unique keys make every write idempotent:
-- a redelivered or re-published message inserts nothing.
CREATE TABLE IF NOT EXISTS coupons (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    event        VARCHAR(320) CHARACTER SET ascii NOT NULL,
    round_no     INT UNSIGNED NOT NULL,
    user_id      VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    slot         SMALLINT UNSIGNED NOT NULL,
    seq          INT UNSIGNED NOT NULL,
    issued_at    DATETIME(3) NOT NULL,
    persisted_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    UNIQUE KEY coupons_user_slot (event, round_no, user_id, slot),
    UNIQUE KEY coupons_seq (event, round_no, seq)
) ENGINE = InnoDB;
