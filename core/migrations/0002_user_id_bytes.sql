-- User ids are compared byte for byte, as Redis and Kafka compare them. utf8mb4_bin is a
-- PAD SPACE collation on MariaDB and MySQL 8 alike ('alice' = 'alice ' in a unique key),
-- and the NO PAD binary collations differ between the two (utf8mb4_0900_bin on MySQL 8,
-- utf8mb4_nopad_bin on MariaDB); a binary string column has no collation at all, so
-- comparison is by bytes on both. 512 bytes hold the 128 characters of the longest id.
ALTER TABLE coupons MODIFY user_id VARBINARY(512) NOT NULL;
