#!/usr/bin/env bash
# Start the local PostgreSQL, MariaDB and Redis servers if they are installed but not
# listening. Never fails: the test suite reports an unreachable server itself.
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for() { for _ in $(seq 1 30); do listening "$1" && return 0; sleep 1; done; return 1; }
if ! listening 5432 && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  echo "starting PostgreSQL" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_for 5432 || echo "PostgreSQL did not start" >&2
fi
if ! listening 3306 && [ -x /usr/sbin/mariadbd ] && command -v start-stop-daemon >/dev/null; then
  echo "starting MariaDB" >&2
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
  wait_for 3306 || echo "MariaDB did not start" >&2
fi
if ! listening 6379 && command -v redis-server >/dev/null; then
  echo "starting Redis" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp >/dev/null || true
  wait_for 6379 || echo "Redis did not start" >&2
fi
exit 0
