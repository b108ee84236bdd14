#!/usr/bin/env bash
# The lab demo: a three-node Herd farm in network namespaces on this machine.
# Installs what it needs, builds, brings the farm up, shows the VIP shared
# between the nodes, crashes a node while a client probes, shows the farm
# heal and take the node back, then takes the lab down. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "ci/demo.sh: run as root" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
LAB=target/release/herd-lab
HERD=target/release/herd
PY=/usr/bin/python3

step "installing packages and building (release)"
bash ci/install.sh >/dev/null
cargo build --release --workspace --bins
trap '"$LAB" down >/dev/null 2>&1 || true' EXIT

step "bringing up the lab: herd-client, herd-s1..s3 on one bridge; buckets shared by the membership protocol"
"$LAB" up --nodes 3 --ownership membership
for i in $(seq 1 100); do
    total=0
    for n in 1 2 3; do
        b=$("$HERD" status --json --socket /run/herd-lab/s$n.sock | $PY -c 'import json,sys; print(json.load(sys.stdin)["owned_buckets"])')
        total=$((total + b))
    done
    [ "$total" -eq 4096 ] && break
    sleep 0.1
done
"$LAB" status
"$HERD" status --socket /run/herd-lab/s1.sock | sed -n '/membership view/,/^lcore/p' | head -4

step "ARP for the VIP 198.18.0.100: one answer, the virtual MAC"
"$LAB" client -- ping -c 1 -W 2 198.18.0.100 | sed -n 2p
"$LAB" client -- ip neigh show 198.18.0.100

step "3000 HTTP connections from 3000 client addresses (client-ip-port on TCP 80)"
"$LAB" client -- "$LAB" probe http --sources 3000 --conns 3000 --timeout-ms 5000 --summary

step "the same over IPv6, VIP 2001:2::100"
"$LAB" client -- "$LAB" probe http --vip 2001:2::100 --sources 50 --conns 200 --timeout-ms 5000 --summary

step "a port without a rule (TCP 81) gets no answer"
"$LAB" client -- "$LAB" probe http --port 81 --sources 3 --conns 3 --timeout-ms 500 --summary

step "SIGKILL of s2 while 64 client flows are probed every 5 ms"
"$LAB" client -- "$LAB" outage --flows 64 --interval-ms 5 --duration-ms 2000 > /tmp/herd-demo-outage.json &
prober=$!
sleep 0.7
"$LAB" kill s2
wait "$prober"
$PY - <<'PY'
import json
flows = json.load(open("/tmp/herd-demo-outage.json"))
hit = sorted(f["max_gap_ms"] for f in flows if f["max_gap_ms"] > 50)
print(f"{len(hit)} of {len(flows)} flows were on s2; each was answered again after "
      f"{hit[0]:.0f} to {hit[-1]:.0f} ms (goal: 250 ms); every flow answered at the end:",
      all(f["replies"] > 0 for f in flows))
PY
"$LAB" status

step "s2 comes back: the split is restored"
"$LAB" start s2
sleep 1
"$LAB" client -- "$LAB" probe udp --sources 300 --conns 300 --summary
"$LAB" status

step "taking the lab down"
"$LAB" down
trap - EXIT
rm -f /tmp/herd-demo-outage.json
echo "done: the lab left nothing behind"
