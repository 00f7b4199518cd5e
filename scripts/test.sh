#!/usr/bin/env bash
# Everything `make test` needs: PostgreSQL up with the test role and database,
# then the whole suite. The broker is started by the tests on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
EHR_TEST_DATABASE_URL="$(bash scripts/postgres-setup.sh | tail -n 1)"
export EHR_TEST_DATABASE_URL
exec python3 -m uv run --frozen pytest "$@"
