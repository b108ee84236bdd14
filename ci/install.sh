#!/usr/bin/env bash
# Installs what Herd needs on a fresh Debian 12 machine (run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
    libdpdk-dev dpdk dpdk-dev libclang-dev clang libbpf-dev pkg-config \
    iproute2 nftables ethtool iputils-ping procps coreutils \
    python3 python3-pytest python3-scapy python3-xxhash \
    nginx-light wrk apache2-utils curl \
    dpkg-dev binutils xz-utils systemd man-db prometheus chromium \
    netsniff-ng

# The Rust toolchain is not a Debian package here (bookworm's rustc is
# older than the workspace's rust-version, 1.87): it comes from rustup.
# Without one nothing can be built: say so rather than fail later.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        rustup toolchain install stable --profile minimal --component rustfmt,clippy
    else
        echo "ci/install.sh: no Rust toolchain: install rustup (https://rustup.rs) and a stable toolchain >= 1.87, then run this again" >&2
        exit 1
    fi
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "ci/install.sh: no nightly toolchain: ci/fuzz.sh will only replay the corpora (rustup toolchain install nightly to fuzz)"
fi
