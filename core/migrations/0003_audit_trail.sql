-- The audit trail: which request a coupon was admitted for. `request_id` is the client's
-- `requestId` or one the issuer made for the request; `jti` is the token's, when it had
-- one. Both NULL where nothing is known: a coupon re-published by reconciliation or by
-- the settling of a lost reply, one admitted by the queue strategy's scheduler, one
-- carried by a version-1 message. Bytes, as user ids are (no collation; 64 bytes is
-- the bound the issuer enforces, core/src/message.rs MAX_AUDIT_ID_BYTES).
ALTER TABLE coupons
    ADD COLUMN request_id VARBINARY(64) NULL,
    ADD COLUMN jti VARBINARY(64) NULL;
