#!/usr/bin/env bash
# The lab demo: a three-node Herd farm in network namespaces on this machine.
# Installs what it needs, builds, brings the farm up (each node's
# application started by herd's start script and watched by a checker),
# shows the VIP shared between the nodes, crashes a node while a client
# probes, shows the farm heal, kills an application and watches herd
# restart it, stops and starts a node by command, takes the lab down and
# prints a summary. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "ci/demo.sh: run as root" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
LAB="$PWD/target/release/herd-lab"
HERD="$PWD/target/release/herd"
PY=/usr/bin/python3
DEMO=/tmp/herd-demo

step "installing packages and building (release)"
bash ci/install.sh >/dev/null
cargo build --release --workspace --bins
trap '"$LAB" down >/dev/null 2>&1 || true; rm -rf "$DEMO"' EXIT

# Each node's application is started and stopped by herd's scripts and
# watched by a tcp checker whose action is `restart`.
rm -rf "$DEMO" && mkdir -p "$DEMO"
printf '#!/bin/sh\necho "start script: $1 -> $2 ($3) on $HERD_NODE"\nexec %s start-app "$HERD_NODE"\n' "$LAB" > "$DEMO/start.sh"
printf '#!/bin/sh\necho "stop script: $1 -> $2 ($3) on $HERD_NODE"\nexec %s stop-app "$HERD_NODE"\n' "$LAB" > "$DEMO/stop.sh"
chmod 755 "$DEMO"/*.sh
printf '[scripts]\nstart = "%s"\nstop = "%s"\n\n[[checkers]]\nname = "app"\nkind = "tcp"\naddress = "127.0.0.1:80"\ninterval_ms = 100\ntimeout_ms = 300\nfailures_before_down = 2\naction = "restart"\n' \
    "$DEMO/start.sh" "$DEMO/stop.sh" > "$DEMO/extra.toml"

owned() {
    "$HERD" status --json --socket "/run/herd-lab/$1.sock" 2>/dev/null |
        $PY -c 'import json,sys; print(json.load(sys.stdin)["owned_buckets"])' 2>/dev/null || echo 0
}
total() { echo $(( $(owned s1) + $(owned s2) + $(owned s3) + $(owned s4) )); }
now_ms() { date +%s%3N; }
# wait_until WHAT SECONDS COMMAND...: polls, prints a dot per half second.
wait_until() {
    local what=$1 limit=$2 start dots=0; shift 2
    start=$(now_ms)
    printf '   waiting for %s ' "$what"
    while ! "$@"; do
        local waited=$(( $(now_ms) - start ))
        if [ "$waited" -gt $((limit * 1000)) ]; then echo " timed out"; return 1; fi
        if [ $((waited / 500)) -gt "$dots" ]; then printf '.'; dots=$((dots + 1)); fi
        sleep 0.05
    done
    WAITED=$(( $(now_ms) - start ))
    echo " done in ${WAITED} ms"
}
all_share() { [ "$(total)" -eq 4096 ] && [ "$(owned s1)" -gt 0 ] && [ "$(owned s2)" -gt 0 ] && [ "$(owned s3)" -gt 0 ]; }
# While connections are held, moving buckets are not counted as owned.
s4_serves() { [ "$(owned s4)" -gt 0 ]; }
moving() {
    "$HERD" status --json --socket "/run/herd-lab/$1.sock" 2>/dev/null |
        $PY -c 'import json,sys; v=json.load(sys.stdin); print(v["moving_in"] + v["moving_out"])' 2>/dev/null || echo 0
}
no_moves() { [ $(( $(moving s1) + $(moving s2) + $(moving s3) + $(moving s4) )) -eq 0 ]; }
# Buckets whose new flows a node takes: owned, or moving in (its old
# owner still serving connections).
takes() {
    "$HERD" status --json --socket "/run/herd-lab/$1.sock" 2>/dev/null |
        $PY -c 'import json,sys; v=json.load(sys.stdin); print(v["owned_buckets"] + v["moving_in"])' 2>/dev/null || echo 0
}
# The node takes no new flow and the others take them all.
withdrawn() {
    local sum=0 n
    for n in s1 s2 s3 s4; do sum=$(( sum + $(takes $n) )); done
    [ "$(takes "$1")" -eq 0 ] && [ "$sum" -eq 4096 ]
}
health_of() {
    "$LAB" client -- $PY -c "
import urllib.request, urllib.error
try: print(urllib.request.urlopen('http://$1:9100/health', timeout=3).status)
except urllib.error.HTTPError as e: print(e.code)"
}

step "bringing up the lab: herd-client, herd-s1..s3 on one bridge (s4 defined, not started); buckets shared by the membership protocol"
echo "   on each node herd runs start.sh (the application) and a tcp checker watches it (action: restart)"
"$LAB" up --nodes 4 --running 3 --ownership membership --extra-config "$DEMO/extra.toml"
wait_until "the three nodes to share the 4096 buckets" 30 all_share
"$LAB" status
"$HERD" status --socket /run/herd-lab/s1.sock | sed -n '/^state/,/^  checker/p;/membership view/,/^lcore/p' | grep -v '^lcore' | head -7

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
"$LAB" client -- "$LAB" outage --flows 64 --interval-ms 5 --duration-ms 2000 > "$DEMO/outage.json" &
prober=$!
sleep 0.7
"$LAB" kill s2
wait "$prober"
FAILOVER=$($PY - "$DEMO/outage.json" <<'PY'
import json, sys
flows = json.load(open(sys.argv[1]))
hit = sorted(f["max_gap_ms"] for f in flows if f["max_gap_ms"] > 50)
ok = all(f["replies"] > 0 for f in flows)
print(f"{len(hit)} of {len(flows)} flows on s2, answered again after "
      f"{hit[0]:.0f} to {hit[-1]:.0f} ms; every flow answered at the end: {ok}" if hit else
      f"no flow was interrupted; every flow answered at the end: {ok}")
PY
)
echo "   $FAILOVER (goal: 250 ms)"
"$LAB" status

step "s2 comes back: the split is restored"
"$LAB" start s2
wait_until "s2 to rejoin" 30 all_share
"$LAB" client -- "$LAB" probe udp --sources 300 --conns 300 --summary

step "the application on s3 is killed: its checker fails, s3 withdraws, herd restarts it"
# The application restarts within a few hundred ms, so the withdrawal is
# read from s1's log (the view without s3) rather than sampled.
views_without_s3() { grep -c 'view changed members=\[1, 2\]$' /run/herd-lab/s1.herd.log || true; }
left_view() { [ "$(views_without_s3)" -gt "$1" ]; }
before=$(views_without_s3)
t0=$(now_ms)
"$LAB" kill-app s3
wait_until "s3 to withdraw (s1 and s2 see it leave the view)" 10 left_view "$before"
T_WITHDRAW=$(( $(now_ms) - t0 ))
wait_until "s3 to restart its application and rejoin" 30 all_share
T_REJOIN=$(( $(now_ms) - t0 ))
grep -E "recovery action|start script:|stop script:" /run/herd-lab/s3.herd.log | tail -4 | cut -c 1-160 | sed 's/^/   log: /'
"$LAB" client -- "$LAB" probe http --sources 300 --conns 300 --timeout-ms 5000 --summary

step "the operator stops s1 (herd stop), then starts it (herd start)"
"$HERD" stop --socket /run/herd-lab/s1.sock
wait_until "s1's share to move to s2 and s3" 10 withdrawn s1
"$HERD" state --socket /run/herd-lab/s1.sock || echo "   (herd state exit code $?: 0 is STOP)"
echo "   /health of s1, as a cloud load balancer sees it: $(health_of 198.18.0.11)"
"$LAB" client -- "$LAB" probe http --sources 300 --conns 300 --timeout-ms 5000 --summary
"$HERD" start --socket /run/herd-lab/s1.sock
wait_until "s1 to be UP with its share" 30 all_share
echo "   /health of s1: $(health_of 198.18.0.11)"

step "300 long-lived connections (a line each every 100 ms) while s4 joins and s3 takes weight 2"
rm -f "$DEMO/hold.stop"
"$LAB" client -- "$LAB" hold --conns 300 --stop-file "$DEMO/hold.stop" --max-seconds 120 > "$DEMO/hold.json" &
holder=$!
sleep 2
"$LAB" start s4
wait_until "s4 to take its share (new flows; old ones stay)" 30 s4_serves
"$HERD" status --socket /run/herd-lab/s1.sock | grep '^moving' | sed 's/^/   s1 /' || true
"$LAB" client -- "$LAB" probe echo --sources 200 --conns 200 --summary
"$HERD" weight 2 --socket /run/herd-lab/s3.sock
sleep 2
touch "$DEMO/hold.stop"
wait "$holder"
CONTINUITY=$($PY - "$DEMO/hold.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['broken']} of {r['conns']} long-lived connections broken across the join and the weight change")
PY
)
echo "   $CONTINUITY"
wait_until "every move to end once the connections closed" 30 no_moves

step "taking the lab down"
"$LAB" down
trap - EXIT
rm -rf "$DEMO"

step "summary"
echo "   3 nodes (then 4) shared the VIPs 198.18.0.100 and 2001:2::100 by the membership protocol"
echo "   crash of s2: $FAILOVER"
echo "   application killed on s3: withdrawn after ${T_WITHDRAW} ms, restarted and serving again after ${T_REJOIN} ms"
echo "   herd stop / herd start on s1: its share moved to the others and came back"
echo "   continuity: $CONTINUITY (goal: 0)"
echo "   the lab left nothing behind"
