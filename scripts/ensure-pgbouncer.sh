#!/usr/bin/env bash
# PgBouncer in transaction mode on 127.0.0.1:6432 in front of the PostgreSQL
# primary on 127.0.0.1:5432, for the tests that run through a transaction
# pooler (tests/test_pooler.py, the suite's PostgreSQL part under
# SESSIONSCOPE_TEST_THROUGH_PGBOUNCER=1, stress.run --pgbouncer, bench/pooler.py).
# Debian's package (1.18), installed when missing; a configuration of our
# own: every database name passed through to the server, clients trusted
# (as the server trusts local connections) except the tests' password role,
# whose password PgBouncer checks. Run daemonized as the postgres user
# (PgBouncer refuses to run as root), not through systemd. Idempotent: an
# instance of ours already running is left alone, and reloaded if this
# script's configuration changed. Never fails: the tests that need it skip
# (or fail under CI=true) when it cannot be reached.
port="${SESSIONSCOPE_PGBOUNCER_PORT:-6432}"
server_port="${SESSIONSCOPE_PGBOUNCER_SERVER_PORT:-5432}"
dir="${SESSIONSCOPE_PGBOUNCER_DIR:-/tmp/sessionscope-pgbouncer}"
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
ours_running() { [ -f "$dir/pgbouncer.pid" ] && kill -0 "$(cat "$dir/pgbouncer.pid")" 2>/dev/null; }

if ! command -v pgbouncer >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "pgbouncer is not installed and this is not root; the PgBouncer tests will skip" >&2
    exit 0
  fi
  # The package's own service is not used: this script starts PgBouncer itself.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null; } \
    || { echo "could not install pgbouncer" >&2; exit 0; }
fi

mkdir -p "$dir"
changed=0
install_file() {  # install_file NAME < content: replace $dir/NAME if it differs
  cat > "$dir/$1.new"
  if cmp -s "$dir/$1.new" "$dir/$1"; then
    rm -f "$dir/$1.new"
  else
    mv "$dir/$1.new" "$dir/$1" && changed=1
  fi
}
# Trust still looks the user up in auth_file: a user missing from it is
# refused. The password role logs in to the server with this password.
install_file userlist.txt <<'USERS'
"postgres" ""
"sessionscope_scram" "sessionscope-test-pw"
USERS
install_file hba.conf <<'HBA'
host all sessionscope_scram 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
HBA
install_file pgbouncer.ini <<INI
; Written by scripts/ensure-pgbouncer.sh (flask-sessionscope tests).
[databases]
* = host=127.0.0.1 port=$server_port

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = hba
auth_hba_file = $dir/hba.conf
auth_file = $dir/userlist.txt
admin_users = postgres
stats_users = postgres
pool_mode = transaction
; Enough for two pytest-xdist workers and the stress run's gunicorn workers.
max_client_conn = 400
default_pool_size = 20
max_db_connections = 40
server_idle_timeout = 30
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI

as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown -R postgres "$dir"
  as_owner=(runuser -u postgres --)
fi
if ours_running; then
  if [ "$changed" = 1 ]; then
    kill -HUP "$(cat "$dir/pgbouncer.pid")"  # PgBouncer rereads its files on SIGHUP
  fi
  exit 0
fi
if listening "$port"; then
  echo "something other than our PgBouncer listens on 127.0.0.1:$port; leaving it alone" >&2
  exit 0
fi
# setsid: the daemon must not share the caller's session, whose end would stop it.
"${as_owner[@]}" setsid pgbouncer -d -q "$dir/pgbouncer.ini" \
  || { echo "PgBouncer did not start; see $dir/pgbouncer.log" >&2; exit 0; }
for _ in $(seq 1 50); do
  listening "$port" && exit 0
  sleep 0.1
done
echo "PgBouncer does not answer on 127.0.0.1:$port; see $dir/pgbouncer.log" >&2
exit 0
