#!/usr/bin/env bash
# Make sure the web UI tests (tests/ui, marker `ui`) have a browser: Debian's `chromium`,
# driven by Playwright's Python API through `executable_path`. Playwright's own browser
# download (`playwright install`) is never used: it cannot work offline or on Debian's libraries.
#
#   * chromium on PATH or at /usr/bin/chromium: nothing to do.
#   * missing, running as root with apt-get: `apt-get install -y chromium`.
#   * missing otherwise: says what to run. Outside CI that is a warning (the UI tests skip with
#     "chromium is not installed"); under CI=true it is an error (they would fail anyway).
#
# Usage: scripts/install-chromium.sh        (idempotent; `make test` and .ci/run call it)
set -euo pipefail
cd "$(dirname "$0")/.."

have_chromium() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
        || [ -x /usr/bin/chromium ]
}

in_ci() { case "${CI:-}" in 1 | true | TRUE | True | yes) return 0 ;; *) return 1 ;; esac; }

if have_chromium; then
    echo "chromium: found $(command -v chromium || command -v chromium-browser || echo /usr/bin/chromium)"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chromium: installing Debian's package (apt-get install -y chromium)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium
    have_chromium || { echo "chromium: installed, but not found on PATH" >&2; exit 1; }
else
    message="chromium: not installed; the UI tests need Debian's chromium: run \`sudo apt-get install -y chromium\` (or this script as root). Playwright's own browser download is not used."
    if in_ci; then
        echo "$message" >&2
        exit 1
    fi
    echo "warning: $message The UI tests will skip (\`pytest -m 'not ui'\` leaves them out)." >&2
fi

PY="${PYTHON:-.venv/bin/python}"
if [ -x "$PY" ]; then
    if "$PY" -c "import playwright.sync_api" 2>/dev/null; then
        echo "python: playwright is installed (its browsers are not: the tests use chromium above)"
    else
        echo "python: playwright is missing; run: $PY -m pip install -e '.[dev]' -c constraints.txt" >&2
        in_ci && exit 1
    fi
fi
exit 0
