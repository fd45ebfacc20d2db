#!/usr/bin/env bash
# Start the example app (a small ledger) on SQLite at http://127.0.0.1:5000.
# Set DATABASE_URL to use PostgreSQL or MariaDB instead, REDIS_URL for a real job worker.
# With REDIS_URL set, receipts go to a Celery (or JOBS=rq: RQ) worker: install them.
source "$(dirname "$0")/_venv.sh" "${REDIS_URL:+celery,rq}"
exec flask --app example_app run --host 127.0.0.1 --port "${PORT:-5000}" "$@"
