#!/usr/bin/env bash
# What the tests need besides Python, gcc and node, installed when missing: Debian's Chromium (the
# browser tests) and redis-server (the scale-out tests), the real npm clients (graphql-sse, run with
# node), and this package with its test extra. The README's test command and .ci/run both run it.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update && apt-get install -y "${missing[@]}"
fi
npm install --prefix tests/node --no-audit --no-fund --loglevel=error
python -m pip install --quiet --disable-pip-version-check -e '.[test]'
