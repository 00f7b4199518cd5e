#!/usr/bin/env bash
# Start the local PostgreSQL 15 cluster if it is down, then create (idempotently)
# the role and databases the tests use. Peer auth over the Unix socket as `postgres`.
set -euo pipefail
ROLE="${EHR_PG_ROLE:-ehr}"
PASSWORD="${EHR_PG_PASSWORD:-ehr-test-password}"
DATABASES="${EHR_PG_DATABASES:-ehr_test ehr_faults}"

if ! command -v pg_lsclusters >/dev/null; then
  echo "PostgreSQL is not installed (pg_lsclusters not found)" >&2
  exit 1
fi
if ! pg_lsclusters --no-header 2>/dev/null | awk '$1=="15" && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster --skip-systemctl-redirect 15 main start
fi
for _ in $(seq 1 50); do
  runuser -u postgres -- pg_isready -q && break
  sleep 0.2
done
psql_as_postgres() { runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_as_postgres -c "DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${ROLE}') THEN
    CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}';
  ELSE
    ALTER ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}';
  END IF;
END \$\$;"
for db in ${DATABASES}; do
  if [ "$(psql_as_postgres -c "SELECT 1 FROM pg_database WHERE datname = '${db}'")" != "1" ]; then
    psql_as_postgres -c "CREATE DATABASE ${db} OWNER ${ROLE}"
  fi
done
echo "postgresql://${ROLE}:${PASSWORD}@127.0.0.1:5432/$(echo ${DATABASES} | awk '{print $1}')"
