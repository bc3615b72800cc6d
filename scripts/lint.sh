#!/usr/bin/env bash
# Static checks that CI runs before the tests: formatting, clippy with warnings denied (every
# target: libraries, binaries, tests, benches) and rustdoc with warnings denied.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
echo "== cargo fmt --check =="
cargo fmt --all --check
echo "== cargo clippy (warnings denied) =="
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (warnings denied) =="
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
