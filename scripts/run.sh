#!/usr/bin/env bash
# Bring up the platform on the embedded default: SQLite files under var/, the
# memory-only development broker, every service as its own process (honcho).
# Ctrl-C stops them all; data under var/ is kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
export EHR_PROFILE="${EHR_PROFILE:-development}"
export EHR_VAR_DIR="${EHR_VAR_DIR:-var}"
export PYTHONUNBUFFERED=1
mkdir -p "${EHR_VAR_DIR}/log"
for port in 8000 8001 8002 8003 9092; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
    echo "port ${port} is already in use: is the platform already running?" >&2
    exit 1
  fi
done
echo "Starting the platform (profile ${EHR_PROFILE}); gateway on http://127.0.0.1:8000, logs in ${EHR_VAR_DIR}/log/"
exec python3 -m uv run --frozen honcho start -f Procfile
