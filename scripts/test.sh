#!/usr/bin/env bash
# Runs the whole test suite: formatting, the purity rule for the decision crates, every
# unit, golden and end-to-end test. Needs Rust (no protoc: protox compiles the protos); as
# root on Debian it installs crun and busybox-static for the container tests (deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== system packages for the container tests"
./scripts/deps.sh

echo "== rustfmt"
cargo fmt --all -- --check

echo "== chorus-core and chorus-plugins do no I/O (DESIGN.md)"
for crate in chorus-core chorus-plugins; do
  bad=$(cargo tree -q -p "$crate" -e normal --prefix none | awk '{print $1}' | sort -u |
        grep -xE 'tokio|tonic|sled|redb|nix|raft|cgroups-rs|nvml-wrapper|rustls|hyper|mio|libc' || true)
  if [ -n "$bad" ]; then
    echo "$crate depends on I/O crates: $bad" >&2
    exit 1
  fi
done

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== build (binaries are needed by the end-to-end tests)"
cargo build --workspace --bins

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace -- --test-threads="${CHORUS_TEST_THREADS:-2}" 2>&1 | tee "$log"

# A test that cannot run here says SKIP and why (never a silent pass); list them together.
echo "== skipped here"
grep -o 'SKIP .*' "$log" || echo "none: every test ran"
