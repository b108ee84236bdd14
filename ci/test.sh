#!/usr/bin/env bash
# Herd's test command: installs what a fresh Debian 12 machine lacks, builds,
# and runs every test (format, lints, unit and property tests, the lab's
# end-to-end tests). Run as root: the lab creates network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "ci/test.sh: run as root (the lab uses network namespaces)" >&2
    exit 1
fi

echo "== installing packages"
bash ci/install.sh

export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never

echo "== format and lints"
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== a status reader and the control protocol link no DPDK"
for crate in node-status herd-control; do
    if cargo tree -p "$crate" -e normal --prefix none | grep -E '^(dpdk-sys|fastpath) '; then
        echo "ci/test.sh: $crate (status model, control protocol) depends on DPDK" >&2
        exit 1
    fi
done

echo "== unit and property tests"
cargo test --workspace

echo "== fuzzing smoke: every fuzz target on its corpus, then 10 s of fuzzing"
bash ci/fuzz.sh --seconds 10

echo "== the Debian package (installed and removed by the end-to-end tests)"
bash ci/package.sh

echo "== end-to-end tests in the lab"
cargo build --workspace --bins
export HERD_BIN_DIR="$PWD/target/debug"
trap '"$HERD_BIN_DIR/herd-lab" down >/dev/null 2>&1 || true' EXIT
/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e
