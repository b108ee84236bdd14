"""A flood in the lab (issue 28): every node of a farm receives every
packet, so a packet generator's flood hits all of them at once. A bounded
flood of TCP SYNs to the VIP from random spoofed clients, and of junk to
every node's heartbeat port (random sources, and spoofed with a peer's
address), on both drivers: no view change, no failover, every request of
a client probe answered meanwhile, the junk refused before the membership
socket and counted."""

import subprocess
import tempfile
import time

import pytest

from lab import LAB, down, ns, probe, status, up, wait_for
from test_membership import NODES, converged, membership

RATE_PPS = 150000  # as fast as one trafgen thread goes here (about 150 kpps)
SECONDS = 6


@pytest.fixture(scope="module", autouse=True, params=["af_packet", "af_xdp"])
def farm(request):
    up(nodes=3, ownership="membership", driver=request.param)
    yield request.param
    down()


def mac_bytes(node):
    mac = ns(node, "cat", "/sys/class/net/eth0/address").stdout.strip()
    return ", ".join(f"0x{b}" for b in mac.split(":"))


def syn_to_vip():
    """A TCP SYN to 198.18.0.100:80 (its vMAC) from a random client of
    198.19.0.0/16 and a random port."""
    return """{
  0x02, 0x48, 0xc6, 0x12, 0x00, 0x64, 0x02, 0x00, 0x00, 0x00, 0x00, 0xcc, c16(0x0800),
  0x45, 0x00, c16(40), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),
  198, 19, drnd(2), 198, 18, 0, 100,
  drnd(2), c16(80), drnd(4), c32(0), 0x50, 0x02, c16(65535), csumtcp(14, 34), c16(0)
}"""


def junk_to_heartbeat_port(node, source):
    """32 random bytes in UDP to `node`'s heartbeat port (7100), from
    `source` (a trafgen byte list: random, or a peer's address)."""
    n = int(node[1:])
    return f"""{{
  {mac_bytes(node)}, 0x02, 0x00, 0x00, 0x00, 0x00, 0xcd, c16(0x0800),
  0x45, 0x00, c16(60), drnd(2), c16(0), 64, 17, csumip(14, 33),
  {source}, 198, 18, 0, {10 + n},
  c16(7100), c16(7100), c16(40), c16(0), drnd(32)
}}"""


def flood_config():
    packets = [syn_to_vip()] * 3
    for i, node in enumerate(NODES):
        peer = NODES[(i + 1) % len(NODES)]
        packets.append(junk_to_heartbeat_port(node, "198, 19, drnd(2)"))
        packets.append(junk_to_heartbeat_port(node, f"198, 18, 0, {10 + int(peer[1:])}"))
    return "\n".join(packets)


def test_a_syn_flood_and_heartbeat_port_junk_move_no_bucket_and_fail_no_client(farm):
    wait_for(converged, 15, "the farm to converge")
    before = {n: membership(n)["counters"] for n in NODES}
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as cfg:
        cfg.write(flood_config())
        cfg.flush()
        gen = subprocess.Popen(
            ["ip", "netns", "exec", "herd-client", "trafgen", "-o", "br0", "-i", cfg.name,
             "-b", f"{RATE_PPS}pps", "-n", str(RATE_PPS * SECONDS), "-P", "1", "-q"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1)
            reports = []
            deadline = time.time() + SECONDS - 2
            while time.time() < deadline and len(reports) < 8:
                reports.append(probe("http", sources=100, conns=100, timeout_ms=3000))
            out, _ = gen.communicate(timeout=SECONDS + 30)
        finally:
            if gen.poll() is None:
                gen.kill()
                gen.wait(timeout=10)
    sent = [line for line in out.splitlines() if "packets outgoing" in line]
    # A slower host's generator may not reach RATE_PPS: at least 20 kpps.
    assert sent and int(sent[0].split()[0]) >= 20000 * SECONDS, out
    for r in reports:
        assert r["ok"] == 100, [x for x in r["results"] if x["error"]][:3]
    assert set().union(*(r["by_node"] for r in reports)) == set(NODES)
    for n in NODES:
        after = membership(n)["counters"]
        assert (after["view_changes"], after["failovers"]) == (
            before[n]["view_changes"], before[n]["failovers"]), (n, before[n], after)
        st = status(n)
        guard = st["ingress_guard"]
        assert guard["heartbeats_apart"], guard
        # Junk from strangers never reached the membership socket (the XDP
        # pre-filter drops it on af_xdp, the guard's tc program on
        # af_packet); junk spoofed from a peer did, and was refused by its
        # HMAC.
        kernel = st["xdp_prefilter"] if farm == "af_xdp" else guard["counts"]
        assert kernel["heartbeat_junk"] > 1000, st
        assert after["dropped_unauthenticated"] + after["dropped_malformed"] > 1000, after
        if farm == "af_packet":
            assert guard["socket_filter"] and guard["counts"]["dropped"] > 1000, guard
