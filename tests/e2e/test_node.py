"""A node's life and options: two lcores, multicast delivery, a clean
SIGTERM stop, and `herd check-config`."""

import hashlib
import json
import os
import signal
import subprocess
import tempfile
import time

import pytest

from lab import (HERD, LAB, VIP4, VIP6, bucket, client, down, l2probe, lab, ns, owner, probe, run, status, up,
                 wait_for)


def test_two_queues_two_lcores_both_carry_traffic():
    up(nodes=2, queues=2)
    try:
        report = probe("http", sources=100, conns=400)
        assert report["ok"] == 400
        for n in ("s1", "s2"):
            lcores = status(n)["lcores"]
            assert len(lcores) == 2, lcores
            assert len({l["lcore"] for l in lcores}) == 2
            for l in lcores:
                c = l["counters"]
                assert c["rx_packets"] > 50 and c["accepted"] > 20, (n, lcores)
    finally:
        down()


def test_multicast_delivery():
    up(nodes=2, delivery="multicast")
    try:
        replies = l2probe("arp", VIP4)["replies"]
        assert len(replies) == 1 and replies[0]["hwsrc"] == "01:00:5e:12:00:64", replies
        report = probe("http", sources=50, conns=100)
        assert report["ok"] == 100, [r for r in report["results"] if r["error"]][:3]
        for r in report["results"]:
            assert r["node"] == owner(bucket(r["source"], r["sport"]), 2)
    finally:
        down()


def both_prefilters_decide(what, during=lambda: None, vip=VIP4):
    """Once the 2-node af_xdp farm serves every flow (with a deadline: its
    first heartbeats), 200 connections to `vip` each answered by its
    bucket's owner, and each VIP frame one node's pre-filter passed to its
    kernel and the other's dropped. Returns the counters' increase by
    node."""
    wait_for(lambda: probe("udp", vip=vip, sources=50, conns=50, timeout_ms=500)["ok"] == 50,
             20, what)
    before = {n: status(n)["xdp_prefilter"] for n in ("s1", "s2")}
    report = probe("http", vip=vip, sources=50, conns=200)
    assert report["ok"] == 200 and set(report["by_node"]) == {"s1", "s2"}
    for r in report["results"]:
        assert r["node"] == owner(bucket(r["source"], r["sport"]), 2)
    during()
    after = {n: status(n)["xdp_prefilter"] for n in ("s1", "s2")}
    d = {n: {k: after[n][k] - before[n][k] for k in after[n]} for n in after}
    if vip == VIP4:
        assert d["s1"]["passed"] == d["s2"]["dropped"] > 0, d
        assert d["s2"]["passed"] == d["s1"]["dropped"] > 0, d
    else:
        # IPv6 the kernel takes from the TAP only: an owned frame goes to
        # the fastpath (as do NDP and the node's own traffic).
        assert d["s1"]["passed"] == d["s2"]["passed"] == 0, d
        assert d["s1"]["to_fastpath"] >= d["s2"]["dropped"] > 0, d
        assert d["s2"]["to_fastpath"] >= d["s1"]["dropped"] > 0, d
    return d


def test_af_xdp_driver():
    up(nodes=2, driver="af_xdp")
    try:
        assert status("s1")["nic"] == "net_af_xdp0"

        def arp():
            assert l2probe("arp", VIP4)["replies"][0]["hwsrc"] == "02:48:c6:12:00:64"
        d = both_prefilters_decide("the af_xdp farm to serve every flow", during=arp)
        # ARP went to the fastpath (which answered it).
        assert d["s1"]["to_fastpath"] > 0 or d["s2"]["to_fastpath"] > 0, d
        # IPv6 too: another node's frames are dropped in the driver.
        both_prefilters_decide("the af_xdp farm to serve every IPv6 flow", vip=VIP6)
    finally:
        down()


def xdp_on_eth0(node):
    """(mode, program name) of the XDP program on `node`'s eth0 as
    `ip link` shows it, or None."""
    text = ns(node, "ip", "-d", "link", "show", "dev", "eth0").stdout
    if "prog/xdp" not in text:
        return None
    mode = "generic" if " xdpgeneric " in text else "native"
    words = text.split("prog/xdp", 1)[1].split()
    return mode, words[words.index("name") + 1]


def assert_no_xdp(node):
    assert xdp_on_eth0(node) is None


def idle_waits(node):
    return sum(l["counters"]["idle_sleeps"] for l in status(node)["lcores"])


@pytest.mark.parametrize("driver", ["af_packet", "af_xdp"])
def test_an_idle_lcore_waits_for_work_and_its_doorbell_brings_a_new_table_at_once(driver):
    """An lcore that its NIC, its TAP and its doorbell all wake waits for
    work, not for a timer (it used to wake every max_sleep_us, 1.5 ms:
    about 670 times a second); a packet still gets an answer, and a new
    table reaches the idle lcore at once (its switch time is measured from
    the publish)."""
    up(nodes=2, driver=driver)
    try:
        wait_for(lambda: probe("udp", sources=20, conns=20, timeout_ms=500)["ok"] == 20, 20,
                 "the farm serving")
        # A measurement window, not a wait: the lab sends nothing now.
        before, t0 = idle_waits("s1"), time.monotonic()
        time.sleep(3)
        rate = (idle_waits("s1") - before) / (time.monotonic() - t0)
        assert rate < 30, f"{rate:.0f} idle waits a second"
        assert probe("udp", sources=20, conns=20)["ok"] == 20

        # Stopping s1 publishes its empty share while it idles.
        run(HERD, "stop", "--socket", "/run/herd-lab/s1.sock")

        def switched():
            st = status("s1")
            return st["owned_buckets"] == 0 and all(
                l["table"]["generation"] == st["table_generation"] for l in st["lcores"]) and st
        st = wait_for(switched, 10, "s1's lcore on its empty table")
        late = [l["table"]["last_us"] for l in st["lcores"]]
        assert max(late) < 100_000, f"switched {late} us after the publish"
    finally:
        down()


def test_the_xdp_prefilter_runs_generic_on_a_veth_and_native_when_asked():
    """Unset `port.xdp_mode`: on the lab's veth the pre-filter runs in
    generic mode; `native` puts it in the veth's own XDP. Either way it
    decides the VIP's frames, a clean stop takes it off, and a crash's
    leftover is taken off at the next start."""
    up(nodes=2, driver="af_xdp")
    try:
        for n in ("s1", "s2"):
            assert status(n)["xdp_mode"] == "generic"
            assert xdp_on_eth0(n) == ("generic", "herd_prefilter")
        # A clean stop takes the program off.
        restart_with("s1", 'driver = "af_xdp"\n', 'xdp_mode = "native"\n',
                     while_stopped=lambda: assert_no_xdp("s1"))
        assert status("s1")["xdp_mode"] == "native"
        assert xdp_on_eth0("s1") == ("native", "herd_prefilter")
        both_prefilters_decide("the farm to serve every flow again")
        # A crash leaves the program on the interface; the next start
        # takes it off before the PMD attaches its own.
        lab("kill", "s2")
        assert xdp_on_eth0("s2") == ("generic", "herd_prefilter")
        lab("start", "s2")
        assert status("s2")["xdp_mode"] == "generic"
        assert xdp_on_eth0("s2") == ("generic", "herd_prefilter")
        with open("/run/herd-lab/s2.herd.log") as f:
            assert "a crashed run left on eth0" in f.read()
        wait_for(lambda: probe("udp", sources=50, conns=50, timeout_ms=500)["ok"] == 50, 20,
                 "the farm to serve every flow after s2's restart")
    finally:
        down()


def wrk(seconds=4, conns=50):
    """`wrk --latency` from the client on the VIP's HTTP: (requests, req/s,
    max latency in seconds, socket errors line or None)."""
    out = client("wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "3s",
                 f"http://{VIP4}/", timeout=seconds + 60).stdout
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}

    def seconds_of(text):
        num = text.rstrip("usm")
        return float(num) * unit[text[len(num):]]
    requests = rps = max_latency = None
    errors = None
    for line in out.splitlines():
        f = line.split()
        if f[:1] == ["Latency"] and len(f) >= 4:  # not "Latency Distribution"
            max_latency = seconds_of(f[3])
        elif len(f) > 1 and f[1] == "requests":
            requests = int(f[0])
        elif f[:1] == ["Requests/sec:"]:
            rps = float(f[1])
        elif "Socket errors" in line or "Non-2xx" in line:
            errors = line.strip()
    assert None not in (requests, rps, max_latency), out
    return requests, rps, max_latency, errors


def test_an_af_xdp_node_serves_under_load_from_its_start():
    """Right after it starts, an af_xdp node carries thousands of requests
    from 50 connections at the rate an af_packet node does, and no request
    waits. (With DPDK's net_tap as the exception path it served 9 a second
    at 50 connections, each waiting up to 0.42 s for a retransmission.)"""
    rates = {}
    for driver in ("af_packet", "af_xdp"):
        up(nodes=1, driver=driver)
        try:
            requests, rps, max_latency, errors = wrk()
            rates[driver] = rps
            assert errors is None, (driver, errors)
            assert requests >= 2000, (driver, requests)
            assert max_latency < 1.0, f"{driver}: a request waited {max_latency:.3f} s"
            # A download: every byte arrives (the kernel's large segments
            # leave whole through the fastpath on af_packet, straight out
            # of eth0 on af_xdp: see the direct egress test).
            assert download(20_000_000) == 20_000_000, driver
        finally:
            down()
    assert rates["af_xdp"] >= 0.5 * rates["af_packet"], rates


def download(size):
    """Downloads `size` bytes from the VIP; returns the bytes received."""
    got = client("curl", "-s", "-S", "-m", "30", "-o", "/dev/null", "-w", "%{size_download}",
                 f"http://{VIP4}/download/{size}/0", timeout=60).stdout
    return int(got)


def restart_with(node, after, line, while_stopped=lambda: None):
    """Restarts `node` with `line` added to its config after `after`."""
    lab("stop", node)
    while_stopped()
    path = f"/run/herd-lab/{node}.toml"
    with open(path) as f:
        text = f.read()
    assert after in text, text
    with open(path, "w") as f:
        f.write(text.replace(after, after + line))
    lab("start", node)


def set_tap_option(node, key, value):
    """Restarts `node` with `tap.<key> = <value>` in its config."""
    restart_with(node, '[tap]\nname = "herd0"\n', f"{key} = {value}\n")


def eth0_tx_bytes(node):
    link = json.loads(ns_run(f"herd-{node}", "ip", "-s", "-j", "link", "show", "eth0").stdout)
    return link[0]["stats64"]["tx"]["bytes"]


def test_the_kernels_replies_leave_through_the_nic_interface_where_the_kernel_keeps_it():
    """On af_xdp (by default) and on af_packet (`tap.direct_egress =
    true`), what the node's kernel sends leaves through eth0 straight from
    the TAP's egress, large segments whole: no lcore reads it
    (`from_kernel` stays), the direct egress counts it, eth0 sends it. With
    `tap.direct_egress = false` it goes through the fastpath again. Either
    way every byte arrives and every connection is answered."""
    cases = (("af_xdp", None, True), ("af_xdp", "false", False), ("af_packet", "true", True),
             ("af_packet", "false", False))
    for driver, setting, direct in cases:
        up(nodes=1, driver=driver)
        try:
            if setting is not None:
                set_tap_option("s1", "direct_egress", setting)
            before = status("s1")
            assert (before["direct_egress"] is not None) == direct, (driver, setting, before["direct_egress"])
            assert before["egress_kept_slots"] is None, (driver, setting, "no balance when set")
            sent = eth0_tx_bytes("s1")
            assert download(20_000_000) == 20_000_000, (driver, setting)
            report = probe("http", sources=20, conns=50)
            assert report["ok"] == 50, (driver, setting, report["results"][:3])
            after = status("s1")
            t0, t1 = before["totals"], after["totals"]
            assert eth0_tx_bytes("s1") - sent >= 20_000_000, (driver, setting)
            if direct:
                # 20 MB in segments of at most 64 KiB, and the answers.
                assert after["direct_egress"] - before["direct_egress"] >= 300, (driver, setting, after["direct_egress"])
                assert t1["from_kernel"] == t0["from_kernel"], (driver, setting, t0["from_kernel"], t1["from_kernel"])
                assert t1["kernel_segments"] == t0["kernel_segments"], (driver, setting)
            else:
                assert t1["from_kernel"] - t0["from_kernel"] >= 50, (driver, setting)
                assert t1["kernel_segments"] > t0["kernel_segments"], (driver, setting)
        finally:
            down()


def test_an_af_packet_lcore_sends_the_kernels_replies_while_it_has_room_and_gives_them_to_eth0_when_busy():
    """The egress balance (af_packet, `tap.direct_egress` unset): an lcore
    with room sends every reply of the node's kernel itself; under a load
    that keeps it busy it lets flows leave straight out of eth0, and it
    takes them back once the load ends. No request fails either way."""
    up(nodes=1, driver="af_packet")
    try:
        st = status("s1")
        assert st["egress_kept_slots"] == 256 and st["direct_egress"] is not None, st
        t0 = st["totals"]
        assert download(5_000_000) == 5_000_000
        t1 = status("s1")["totals"]
        assert t1["from_kernel"] - t0["from_kernel"] >= 50, "an idle lcore sends the replies"
        assert t1["kernel_segments"] > t0["kernel_segments"]

        # New connections, the lcore's heaviest load per request.
        load = subprocess.Popen(["ip", "netns", "exec", "herd-client", "ab", "-q", "-c", "50", "-t", "25",
                                 "-n", "10000000", "-s", "5", f"http://{VIP4}/"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: status("s1")["egress_kept_slots"] < 256, 20,
                     "the busy lcore to give flows to the direct egress")
            given = status("s1")["direct_egress"]
            wait_for(lambda: status("s1")["direct_egress"] > given + 1000, 15,
                     "replies to leave by the direct egress")
        finally:
            # ab reports what it did so far on SIGINT.
            load.send_signal(signal.SIGINT)
            out, err = load.communicate(timeout=30)
        report = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        assert int(report.get("Complete requests", "0")) >= 500, (out[-800:], err[-500:])
        assert report.get("Failed requests", "").strip() == "0", (out[-800:], err[-500:])
        # Idle: the windows end once a second at most; every slot is back
        # within 8 of them.
        wait_for(lambda: status("s1")["egress_kept_slots"] == 256, 30, "the lcore to take every flow back")
        report = probe("http", sources=20, conns=50)
        assert report["ok"] == 50, report["results"][:3]
    finally:
        down()


def ns_run(ns, *cmd):
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=30)


def test_sigterm_stops_cleanly_and_start_restores_service():
    up(nodes=2)
    try:
        assert ns_run("herd-s1", "ip", "link", "show", "herd0").returncode == 0
        assert "198.18.0.100" in ns_run("herd-s1", "ip", "addr", "show", "dev", "lo").stdout
        # The client resolves the VIP while s1 (bucket 0's owner, the ARP
        # responder under static ownership) is there.
        assert probe("udp", sources=10, conns=10)["ok"] == 10
        lab("stop", "s1")
        log = open("/run/herd-lab/s1.herd.log").read()
        assert "stopped" in log, log[-2000:]
        # The TAP went with its port, the kernel side was undone.
        assert ns_run("herd-s1", "ip", "link", "show", "herd0").returncode != 0
        assert "198.18.0.100" not in ns_run("herd-s1", "ip", "addr", "show", "dev", "lo").stdout
        assert "herd_eth0" not in ns_run("herd-s1", "nft", "list", "tables").stdout
        assert not os.path.exists("/run/herd-lab/s1.sock")
        # With static ownership s1's buckets are now unserved: s2 keeps its own.
        report = probe("udp", sources=40, conns=40, timeout_ms=500)
        served = {r["node"] for r in report["results"] if r["node"]}
        assert served == {"s2"}, report["by_node"]
        lab("start", "s1")
        report = probe("http", sources=50, conns=100)
        assert report["ok"] == 100 and set(report["by_node"]) == {"s1", "s2"}
    finally:
        down()
    # `down` leaves nothing behind.
    assert "herd-" not in run("ip", "netns", "list").stdout
    assert not os.path.exists("/run/herd-lab")


def test_the_tap_offers_offloads_and_the_virtio_user_backend_needs_vhost_net():
    """Herd's own TAP announces TSO and checksum offload to the kernel and
    has no queueing discipline; the virtio-user backend runs where the
    kernel has vhost-net and is refused with a clear error where it has
    none."""
    up(nodes=1)
    try:
        features = ns_run("herd-s1", "ethtool", "-k", "herd0").stdout
        assert "tcp-segmentation-offload: on" in features, features
        assert status("s1")["tap"] == "herd0 (TSO, checksum offload)"
        # No queueing discipline in the way of what the kernel sends.
        qdisc = ns_run("herd-s1", "tc", "qdisc", "show", "dev", "herd0").stdout
        assert qdisc.startswith("qdisc noqueue"), qdisc
        lab("stop", "s1")
        cfg = "/run/herd-lab/s1.toml"
        text = open(cfg).read()
        open(cfg, "w").write(text.replace("[tap]\n", '[tap]\nbackend = "virtio-user"\n', 1))
        started = lab("start", "s1", check=False)
        if os.path.exists("/dev/vhost-net"):
            assert started.returncode == 0, started.stderr
            wait_for(lambda: probe("http", sources=20, conns=20)["ok"] == 20, 20,
                     "the virtio-user node to serve")
            assert status("s1")["tap"] == "virtio_user0"
        else:
            # `herd-lab start` waits for the node and shows its log's end.
            assert started.returncode != 0
            assert 'tap.backend = "virtio-user" needs /dev/vhost-net' in started.stderr, \
                started.stderr
    finally:
        down()


def test_an_upload_reaches_the_application_whole_in_merged_segments():
    """A client's upload arrives intact (the application's SHA-256 of it is
    the client's), and the node handed most of its frames to the kernel
    merged into large segments (GRO before the TAP)."""
    data = os.urandom(24 << 20)
    with tempfile.NamedTemporaryFile(suffix=".bin", delete=False) as f:
        f.write(data)
    up(nodes=1)
    try:
        before = status("s1")["totals"]
        out = client("curl", "-s", "-S", "-m", "60", "-H", "Expect:", "-T", f.name,
                     f"http://{VIP4}/upload", timeout=90).stdout.split()
        assert out == ["s1", str(len(data)), hashlib.sha256(data).hexdigest()], out
        after = status("s1")["totals"]
        frames = after["accepted"] - before["accepted"]
        merged = after["kernel_merged"] - before["kernel_merged"]
        assert frames >= len(data) // 1500, (frames, merged)
        assert merged > frames // 2, f"only {merged} of {frames} frames merged"
        assert after["kernel_frames_lost"] == before["kernel_frames_lost"]
    finally:
        down()
        os.unlink(f.name)


def test_up_after_a_crashed_run_cleans_up_first():
    up(nodes=2)
    lab("kill", "s2")  # leaves a stale lab behind
    up(nodes=3)
    try:
        report = probe("http", sources=60, conns=150)
        assert report["ok"] == 150 and set(report["by_node"]) == {"s1", "s2", "s3"}
    finally:
        down()


def node_kernel_state(node):
    """What a node's start changes in its namespace: links (the TAP, eth0's
    flags), addresses (eth0's, lo's VIPs), routes, nftables tables, DPDK's
    runtime files."""
    ns = lambda *cmd: run("ip", "netns", "exec", f"herd-{node}", *cmd).stdout
    return {
        "links": ns("ip", "-o", "link", "show"),
        # An IPv6 address just restored is tentative until its DAD ends.
        "addresses": ns("ip", "-o", "addr", "show").replace(" tentative", ""),
        "routes": ns("ip", "route", "show"),
        "nft": ns("nft", "list", "tables"),
        "dpdk": sorted(os.listdir(f"/var/run/dpdk/herd-{node}")) if os.path.isdir(f"/var/run/dpdk/herd-{node}") else [],
    }


@pytest.mark.parametrize("driver", ["af_packet", "af_xdp"])
def test_a_start_that_fails_after_the_kernel_set_up_leaves_nothing_behind(driver):
    """A start that fails after EAL init, ports, TAP, pre-filter and the
    kernel set-up (VIPs on lo, nftables, addresses) releases all of it in
    order: the namespace is as before, and the next start serves; its
    clean stop leaves the namespace as before too."""
    up(nodes=2, running=1, driver=driver)
    try:
        before = node_kernel_state("s2")
        env = dict(os.environ, HERD_TEST_FAIL_AFTER_KERNEL_SETUP="1")
        p = subprocess.run([LAB, "start", "s2"], env=env, capture_output=True, text=True, timeout=120)
        assert p.returncode != 0, p.stdout
        log = open("/run/herd-lab/s2.herd.log").read()
        assert "HERD_TEST_FAIL_AFTER_KERNEL_SETUP is set: the start fails here" in log, log[-2000:]
        assert "panicked" not in log and "still shared" not in log, log[-2000:]
        after = node_kernel_state("s2")
        for k in before:
            assert after[k] == before[k], (k, before[k], after[k])
        lab("start", "s2")
        wait_for(lambda: probe("udp", sources=40, conns=40, timeout_ms=500)["ok"] == 40, 20,
                 "both nodes serving after the failed start")
        # A clean stop leaves the namespace as it was found too.
        lab("stop", "s2")
        stopped = node_kernel_state("s2")
        for k in before:
            assert stopped[k] == before[k], (k, before[k], stopped[k])
    finally:
        down()


def test_check_config_names_the_bad_key():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    good = open(os.path.join(root, "examples", "node.toml")).read()
    p = run(HERD, "check-config", os.path.join(root, "examples", "node.toml"))
    assert "valid" in p.stdout
    cases = {
        "farm.nodes[1].id": good.replace("id = 2", "id = 1"),
        "rules[0].port": good.replace("port = 80\n", ""),
        "bukets": good.replace("buckets = 4096", "bukets = 4096"),
        "tap.addresses[0]": good.replace('"198.18.0.11/24"', '"198.18.0.11"'),
    }
    for key, text in cases.items():
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(text)
        p = run(HERD, "check-config", f.name, check=False)
        os.unlink(f.name)
        assert p.returncode == 1 and key in p.stderr, (key, p.stderr)
    p = run(HERD, "check-config", "/nonexistent.toml", check=False)
    assert p.returncode == 1 and "/nonexistent.toml" in p.stderr
    p = run(HERD, "run", "--bogus", check=False)
    assert p.returncode != 0 and "--bogus" in p.stderr
