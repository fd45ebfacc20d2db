#!/usr/bin/env bash
# Give the local test servers an account that needs a password, so that the
# tests can provoke a real "wrong password" (the stock PostgreSQL set-up
# trusts every local connection, and MariaDB's root has no password).
#
# PostgreSQL: role sessionscope_scram (password sessionscope-test-pw) and a
# scram-sha-256 line of its own in pg_hba.conf, placed before the trust lines.
# MariaDB: user sessionscope_pw@'%' with the same password.
#
# Idempotent, and never fails: a test that needs these accounts and finds
# them unusable skips (fails under CI=true) and says why.
ROLE=sessionscope_scram
MARIADB_USER=sessionscope_pw
PASSWORD=sessionscope-test-pw
MARKER="# flask-sessionscope tests: $ROLE needs its password"

if command -v psql >/dev/null && [ -d /etc/postgresql ]; then
  version="$(ls /etc/postgresql | head -n1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if [ -w "$hba" ] && ! grep -qF "$MARKER" "$hba"; then
    # The first matching line wins: ours go before every other line.
    { echo "$MARKER"
      echo "host all $ROLE 127.0.0.1/32 scram-sha-256"
      echo "host all $ROLE ::1/128 scram-sha-256"
      cat "$hba"; } > "$hba.new" && cat "$hba.new" > "$hba" && rm -f "$hba.new"
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload || echo "PostgreSQL did not reload $hba" >&2
  fi
  psql -q -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<SQL || echo "could not create PostgreSQL role $ROLE" >&2
SET password_encryption = 'scram-sha-256';
SELECT 'CREATE ROLE $ROLE LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$ROLE') \gexec
ALTER ROLE $ROLE LOGIN PASSWORD '$PASSWORD';
SQL
fi

if command -v mariadb >/dev/null; then
  mariadb -h 127.0.0.1 -P 3306 -u root >/dev/null 2>&1 <<SQL || echo "could not create MariaDB user $MARIADB_USER" >&2
CREATE USER IF NOT EXISTS '$MARIADB_USER'@'%' IDENTIFIED BY '$PASSWORD';
ALTER USER '$MARIADB_USER'@'%' IDENTIFIED BY '$PASSWORD';
SQL
fi
exit 0
