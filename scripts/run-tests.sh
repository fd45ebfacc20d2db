#!/usr/bin/env bash
# Run the whole test suite against SQLite, PostgreSQL and MariaDB.
# Extra arguments go to pytest. Under CI=true an unreachable server fails the run.
source "$(dirname "$0")/_venv.sh" "test"
bash "$ROOT/scripts/ensure-services.sh"
bash "$ROOT/scripts/ensure-password-roles.sh"
bash "$ROOT/scripts/ensure-statement-log-cluster.sh"  # PostgreSQL whose log the figures tests read
bash "$ROOT/scripts/ensure-pgbouncer.sh"  # PgBouncer in transaction mode, for tests/test_pooler.py
bash "$ROOT/scripts/ensure-replica.sh"  # a streaming replica of the primary, port 5434 (tests/test_replicas.py)
bash "$ROOT/scripts/ensure-chromium.sh" || echo "chromium could not be installed; the browser test will say so" >&2
exec python -m pytest "$@"
