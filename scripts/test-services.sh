#!/usr/bin/env bash
# Install what the team-storage tests need, if it is missing (Debian/Ubuntu; run as root in CI).
#
#   * PostgreSQL server binaries (initdb, postgres): the tests start their own throwaway
#     server on 127.0.0.1, as an unprivileged user when run as root (nobody by default,
#     or CELLPIPE_TEST_PG_USER). Nothing is installed when initdb is already on PATH or
#     under /usr/lib/postgresql/*/bin. The distribution's own cluster is not needed, and
#     is not started.
#   * Debian's chromium for the web UI tests (scripts/install-chromium.sh: apt-get as root).
#   * The Python side (psycopg, s3fs, boto3, moto[server]) comes from `pip install -e '.[dev]'`
#     (make does that); this script only checks it and says what to run.
#
# Usage: scripts/test-services.sh            (idempotent; safe to run on every CI job)
set -euo pipefail
cd "$(dirname "$0")/.."

have_initdb() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if have_initdb; then
    echo "postgresql: found $(command -v initdb || ls /usr/lib/postgresql/*/bin/initdb | tail -n 1)"
else
    if [ "$(id -u)" -ne 0 ]; then
        echo "postgresql: initdb not found; run this script as root (or: sudo apt-get install -y postgresql)" >&2
        exit 1
    fi
    echo "postgresql: installing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql
    have_initdb || { echo "postgresql: installed, but initdb still not found" >&2; exit 1; }
fi

# runuser/useradd are not needed: the tests switch user with subprocess(user=...).
if [ "$(id -u)" -eq 0 ]; then
    user="${CELLPIPE_TEST_PG_USER:-nobody}"
    id "$user" >/dev/null 2>&1 || { echo "user $user does not exist (set CELLPIPE_TEST_PG_USER)" >&2; exit 1; }
    echo "postgresql: tests will run the server as $user"
fi

PY="${PYTHON:-.venv/bin/python}"
if [ -x "$PY" ]; then
    if "$PY" -c "import psycopg, s3fs, boto3, moto.server" 2>/dev/null; then
        echo "python: psycopg, s3fs, boto3 and moto[server] are installed"
    else
        echo "python: missing test packages; run: $PY -m pip install -e '.[dev]'" >&2
        exit 1
    fi
else
    echo "python: no $PY yet; make creates it (make test)"
fi

# The web UI tests drive Debian's chromium through Playwright (never Playwright's download).
bash scripts/install-chromium.sh
