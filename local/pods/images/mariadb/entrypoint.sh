#!/bin/sh
# Initialises /var/lib/mysql on first start (database, user and password from
# MARIADB_DATABASE, MARIADB_USER, MARIADB_PASSWORD), then runs mariadbd in the foreground.
set -eu
data=/var/lib/mysql
conf="--datadir=$data --socket=/run/mysqld/mysqld.sock --bind-address=0.0.0.0 --port=3306 \
  --skip-name-resolve --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
  --max-connections=500 --innodb-buffer-pool-size=128M --performance-schema=OFF \
  --sql-mode=ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
if [ ! -f "$data/.couponrush-initialised" ]; then
  # A datadir without the marker is from an interrupted first start (the pod's volume
  # outlives a restarted container): start it over. root@localhost gets no password: it is
  # reachable only through the socket inside this container, while networking is off.
  find "$data" -mindepth 1 -delete
  mariadb-install-db --datadir="$data" --skip-test-db --auth-root-authentication-method=normal >/dev/null
  # shellcheck disable=SC2086
  mariadbd $conf --skip-networking &
  pid=$!
  i=0; until mariadb -uroot --socket=/run/mysqld/mysqld.sock -e 'SELECT 1' >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 120 ] || { echo "mariadbd did not start" >&2; exit 1; }; sleep 0.5; done
  mariadb -uroot --socket=/run/mysqld/mysqld.sock <<SQL
CREATE DATABASE IF NOT EXISTS \`${MARIADB_DATABASE}\`;
CREATE USER IF NOT EXISTS '${MARIADB_USER}'@'%' IDENTIFIED BY '${MARIADB_PASSWORD}';
GRANT ALL PRIVILEGES ON *.* TO '${MARIADB_USER}'@'%';
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
SQL
  kill "$pid"; wait "$pid" || true
  touch "$data/.couponrush-initialised"
fi
# shellcheck disable=SC2086
exec mariadbd $conf
