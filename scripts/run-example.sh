#!/usr/bin/env bash
# Start the example app (a small ledger) on SQLite at http://127.0.0.1:5000.
# Set DATABASE_URL to use PostgreSQL or MariaDB instead.
source "$(dirname "$0")/_venv.sh" ""
exec flask --app example_app run --host 127.0.0.1 --port "${PORT:-5000}" "$@"
