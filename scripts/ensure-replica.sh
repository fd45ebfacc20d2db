#!/usr/bin/env bash
# A real streaming replica of the PostgreSQL 15 primary on 127.0.0.1:5432,
# for the read-replica tests (tests/test_replicas.py): Debian cluster
# "15 replica" on port 5434 (5433 is the statement log cluster's), made with
# pg_basebackup, read-only, replaying the primary's WAL as it streams in.
# Idempotent: a replica that answers is left alone, a stopped one is
# started, a missing one is built. Needs root (it edits the primary's
# pg_hba.conf and creates a cluster). Never fails: the tests that need the
# replica skip with one line (or fail under CI=true) when it cannot be reached.
version="${SESSIONSCOPE_REPLICA_PG_VERSION:-15}"
port="${SESSIONSCOPE_REPLICA_PORT:-5434}"
primary_port="${SESSIONSCOPE_PRIMARY_PORT:-5432}"
name=replica
data="/var/lib/postgresql/$version/$name"
conf="/etc/postgresql/$version/$name"
primary_conf="/etc/postgresql/$version/main"
slot=sessionscope_replica
as_postgres() { runuser -u postgres -- "$@"; }
primary_sql() { as_postgres psql -h 127.0.0.1 -p "$primary_port" -U postgres -Atqc "$1"; }
# A replica, receiving the primary's WAL as it is written.
streaming() {
  [ "$(as_postgres psql -h 127.0.0.1 -p "$port" -U postgres -Atqc \
    "SELECT pg_is_in_recovery() AND EXISTS (SELECT FROM pg_stat_wal_receiver WHERE status = 'streaming')" \
    2>/dev/null)" = t ]
}
wait_streaming() { for _ in $(seq 30); do streaming && return 0; sleep 1; done; return 1; }
streaming && exit 0
if [ "$(id -u)" != 0 ] || ! command -v pg_createcluster >/dev/null; then
  echo "the replica on port $port is not running, and setting it up needs root and Debian's postgresql-common" >&2
  exit 0
fi
if [ ! -f "$primary_conf/pg_hba.conf" ]; then
  echo "no primary cluster $version/main; the replica is not set up" >&2
  exit 0
fi
rule="host replication all 127.0.0.1/32 trust"
if ! grep -qxF "$rule" "$primary_conf/pg_hba.conf"; then
  echo "$rule" >>"$primary_conf/pg_hba.conf"
  primary_sql 'SELECT pg_reload_conf()' >/dev/null
fi
# The replica's slot keeps the WAL it has not received while it is stopped
# (tests stop it); the bound keeps a replica that stays away from filling
# the primary's disk (it is then built again).
if [ "$(primary_sql 'SHOW max_slot_wal_keep_size')" = "-1" ]; then
  primary_sql "ALTER SYSTEM SET max_slot_wal_keep_size = '4GB'" >/dev/null
  primary_sql 'SELECT pg_reload_conf()' >/dev/null
fi
if pg_lsclusters -h "$version" "$name" >/dev/null 2>&1 && [ -f "$data/standby.signal" ]; then
  # Built before: it only needs starting (after a reboot, or a test that stopped it).
  setsid pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start 2>/dev/null
  wait_streaming && exit 0
  echo "the replica cluster $version/$name exists but does not stream from the primary; building it again" >&2
fi
pg_ctlcluster --skip-systemctl-redirect "$version" "$name" stop -m immediate 2>/dev/null
pg_dropcluster "$version" "$name" 2>/dev/null
rm -rf "$data"
primary_sql "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
pg_createcluster "$version" "$name" --port "$port" >/dev/null || { echo "pg_createcluster failed" >&2; exit 0; }
rm -rf "${data:?}"/*
if ! as_postgres pg_basebackup -h 127.0.0.1 -p "$primary_port" -U postgres -D "$data" -R -X stream -C -S "$slot" >/dev/null; then
  echo "pg_basebackup from the primary failed; the replica is not set up" >&2
  exit 0
fi
cp "$primary_conf/pg_hba.conf" "$conf/pg_hba.conf"
chown postgres:postgres "$conf/pg_hba.conf"
setsid pg_ctlcluster --skip-systemctl-redirect "$version" "$name" start || { echo "the replica did not start" >&2; exit 0; }
wait_streaming && exit 0
echo "the replica started but does not stream from the primary (port $port)" >&2
exit 0
