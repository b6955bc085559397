#!/usr/bin/env bash
# The rolling-upgrade check with real binaries (docs/operations.md, Upgrades): builds the previous
# release of scrm (default: the commit in scripts/PREVIOUS_RELEASE, or the revision given) from
# git, then runs it and this checkout's scrm as processes on one PostgreSQL database —
# tests/it/upgrade.rs, rolling_upgrade_with_the_previous_release. Needs PostgreSQL on
# 127.0.0.1:5432 (scripts/test.sh starts it). The previous release builds into its own target
# folder (a full build the first time, a few minutes), so this stays out of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-$(cat scripts/PREVIOUS_RELEASE)}"
commit="$(git rev-parse --verify "$rev^{commit}")"
work="$PWD/target/previous-release"
src="$work/src-$commit"
if [ ! -d "$src" ]; then
  echo "rolling-upgrade.sh: exporting $commit"
  mkdir -p "$src.tmp"
  git archive "$commit" | tar -x -C "$src.tmp"
  mv "$src.tmp" "$src"
fi
echo "rolling-upgrade.sh: building the previous release ($commit)"
CARGO_TARGET_DIR="$work/target" cargo build --locked --bin scrm --manifest-path "$src/Cargo.toml"
SCRM_PREVIOUS_BINARY="$work/target/debug/scrm" \
  cargo nextest run --test it --run-ignored ignored-only -E 'test(rolling_upgrade_with_the_previous_release)'
