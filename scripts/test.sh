#!/usr/bin/env bash
# The whole test suite, from a fresh machine: makes sure PostgreSQL and Redis are up (the tests use
# the real servers on 127.0.0.1:5432 and 127.0.0.1:6379 and fail loudly without them), then runs
# every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_url="${SCRM_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if ! command -v pg_isready >/dev/null 2>&1 || ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  if ! command -v pg_ctlcluster >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing PostgreSQL" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "test.sh: starting PostgreSQL" >&2
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 50); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.2; done
  fi
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "test.sh: PostgreSQL is not reachable at 127.0.0.1:5432; the PostgreSQL tests will fail." >&2
else
  # Databases left behind by tests that panicked in an earlier run.
  psql "$pg_url" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'scrm_test_%' OR datname LIKE 'scrm_bench_%'" 2>/dev/null |
    while read -r name; do psql "$pg_url" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null 2>&1 || true; done
fi

# Redis on 127.0.0.1:6379: the coordination tests (token cache, locks, rate-limit buckets, two
# instances) use the real server and fail loudly without it.
if ! (command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing Redis" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  if command -v redis-server >/dev/null 2>&1; then
    echo "test.sh: starting Redis" >&2
    mkdir -p /var/lib/redis /var/log/redis 2>/dev/null || true
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/scrm-test-redis.log" || true
    for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
  fi
fi
if ! (command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  echo "test.sh: Redis is not reachable at 127.0.0.1:6379; the Redis tests will fail." >&2
fi

# The sidebar's browser tests drive Debian's Chromium through chromedriver (WebDriver); the CJK
# fonts make the screenshots readable. Installed when missing; without them those tests fail loudly.
if ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && fc-list 2>/dev/null | grep -qi "noto.*cjk"; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing chromium, chromium-driver and CJK fonts" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk >/dev/null
  else
    echo "test.sh: /usr/bin/chromium or /usr/bin/chromedriver missing; the browser tests will fail." >&2
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "test.sh: installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# The chat-archive tests load the stand-in library from the target folder.
cargo build -p wework-finance-standin
cargo nextest run --workspace --no-fail-fast "$@"
