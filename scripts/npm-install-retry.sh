#!/usr/bin/env bash
# The README's `npm install`, tried up to three times. A registry that serves a
# stale package document or drops a connection fails an install that works a
# minute later (seen on this project's machines: ETARGET for a version that
# exists). Retries revalidate cached package documents (--prefer-online).
# NPM_INSTALL_RETRY_DELAY: seconds between attempts (default 20).
set -uo pipefail
delay="${NPM_INSTALL_RETRY_DELAY:-20}"
for attempt in 1 2 3; do
  if [ "$attempt" = 1 ]; then
    npm install --no-audit --no-fund && exit 0
  else
    npm install --no-audit --no-fund --prefer-online && exit 0
  fi
  if [ "$attempt" = 3 ]; then
    echo "npm-install-retry: npm install failed 3 times; the last attempt's output is above" >&2
    exit 1
  fi
  echo "npm-install-retry: npm install failed (attempt $attempt of 3); trying again in ${delay} s with --prefer-online" >&2
  sleep "$delay"
done
