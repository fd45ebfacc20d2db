#!/usr/bin/env bash
# A PostgreSQL cluster of the tests' own whose server log records the
# statements of the connections that ask for it (log_statement is set per
# connection by the tests), so that the tests can compare what a request ran
# with what the server saw. Port 5433 on 127.0.0.1, trust authentication,
# the log as CSV under the data directory, readable with pg_read_file().
# Never fails: the tests that need it skip (or fail under CI=true) when it
# cannot be reached.
port="${SESSIONSCOPE_LOG_CLUSTER_PORT:-5433}"
dir="${SESSIONSCOPE_LOG_CLUSTER_DIR:-/tmp/sessionscope-statement-log-cluster}"
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
listening "$port" && exit 0
bin="$(pg_config --bindir 2>/dev/null)"
[ -x "$bin/initdb" ] || bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -n 1)"
if [ ! -x "$bin/initdb" ]; then
  echo "no PostgreSQL binaries (initdb) found; the statement log cluster is not started" >&2
  exit 0
fi
as_owner=()
if [ "$(id -u)" = 0 ]; then  # initdb and postgres refuse to run as root
  as_owner=(runuser -u postgres --)
fi
if [ ! -f "$dir/PG_VERSION" ]; then
  mkdir -p "$dir" && chmod 700 "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  "${as_owner[@]}" "$bin/initdb" -D "$dir" -U postgres --auth=trust >/dev/null || exit 0
fi
"${as_owner[@]}" "$bin/pg_ctl" -D "$dir" -l "$dir/startup.log" -w -t 30 start -o \
  "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c logging_collector=on \
   -c log_destination=csvlog -c log_directory=log -c log_filename=statements -c log_rotation_size=0 \
   -c log_truncate_on_rotation=off -c max_connections=40 -c shared_buffers=16MB -c fsync=off" \
  >/dev/null || echo "the statement log cluster did not start; see $dir/startup.log" >&2
exit 0
