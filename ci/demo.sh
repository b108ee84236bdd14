#!/usr/bin/env bash
# The lab demo: a two-node Herd farm in network namespaces on this machine.
# Installs what it needs, builds, brings the farm up, shows the VIP shared
# between the nodes, then takes the lab down. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "ci/demo.sh: run as root" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "installing packages and building (release)"
bash ci/install.sh >/dev/null
cargo build --release --workspace --bins
LAB=target/release/herd-lab
trap '"$LAB" down >/dev/null 2>&1 || true' EXIT

step "bringing up the lab: namespaces herd-client, herd-s1, herd-s2 on one bridge"
"$LAB" up --nodes 2

step "ARP for the VIP 198.18.0.100: one answer, the virtual MAC"
"$LAB" client -- ip neigh flush dev br0 >/dev/null 2>&1 || true
"$LAB" client -- ping -c 1 -W 2 198.18.0.100 | sed -n 2p
"$LAB" client -- ip neigh show 198.18.0.100

step "400 HTTP connections from 100 client addresses (client-ip-port on TCP 80)"
"$LAB" client -- "$LAB" probe http --sources 100 --conns 400 --summary

step "the line echo on TCP 7000 (client-ip: one client, one node)"
"$LAB" client -- "$LAB" probe echo --sources 50 --conns 100 --summary

step "the same over IPv6, VIP 2001:2::100"
"$LAB" client -- "$LAB" probe http --vip 2001:2::100 --sources 50 --conns 200 --timeout-ms 5000 --summary

step "a port without a rule (TCP 81) gets no answer"
"$LAB" client -- "$LAB" probe http --port 81 --sources 3 --conns 3 --timeout-ms 500 --summary

step "each node's counters"
"$LAB" status
target/release/herd status --socket /run/herd-lab/s1.sock

step "taking the lab down"
"$LAB" down
trap - EXIT
echo "done: the lab left nothing behind"
