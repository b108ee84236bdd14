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
