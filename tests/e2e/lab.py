"""Helpers for the end-to-end tests: drive `herd-lab`, read node status,
and compute where herd-hash v1 (see fastpath/src/hash.rs) sends a client."""

import ipaddress
import json
import os
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import xxhash

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("HERD_BIN_DIR", ROOT / "target" / "debug"))
LAB = str(BIN / "herd-lab")
HERD = str(BIN / "herd")
PY = "/usr/bin/python3"
L2PROBE = str(Path(__file__).with_name("l2probe.py"))

VIP4 = "198.18.0.100"
VIP6 = "2001:2::100"
VMAC4 = "02:48:c6:12:00:64"
VMAC6 = "02:86:00:00:01:00"
HASH_SEED = 0x48657264
BUCKETS = 4096


def run(*args, timeout=120, check=True):
    p = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def lab(*args, timeout=180, check=True):
    return run(LAB, *args, timeout=timeout, check=check)


def up(nodes=2, queues=1, delivery="vmac", running=None, driver="af_packet",
       ownership="static", split_brain="serve-all", heartbeat_networks=1, extra_config=None):
    args = ["up", "--nodes", str(nodes), "--queues", str(queues), "--delivery", delivery,
            "--driver", driver, "--ownership", ownership, "--split-brain", split_brain,
            "--heartbeat-networks", str(heartbeat_networks)]
    if running is not None:
        args += ["--running", str(running)]
    if extra_config is not None:
        args += ["--extra-config", str(extra_config)]
    lab(*args)


def down():
    lab("down")


def client(*cmd, timeout=120, check=True):
    return lab("client", "--", *cmd, timeout=timeout, check=check)


def probe(kind, vip=VIP4, port=None, sources=100, conns=400, timeout_ms=2000):
    args = ["probe", kind, "--vip", vip, "--sources", str(sources), "--conns", str(conns),
            "--timeout-ms", str(timeout_ms)]
    if port is not None:
        args += ["--port", str(port)]
    return json.loads(client(LAB, *args).stdout)


def l2probe(*args):
    return json.loads(client(PY, L2PROBE, *args, timeout=60).stdout)


def status(node):
    return json.loads(run(HERD, "status", "--json", "--socket", f"/run/herd-lab/{node}.sock").stdout)


def bucket(client_ip, port=None):
    """herd-hash v1, written independently of the Rust code."""
    a = ipaddress.ip_address(client_ip)
    key = bytes([4 if a.version == 4 else 6]) + a.packed
    if port is not None:
        key += struct.pack(">H", port)
    h = xxhash.xxh3_64_intdigest(key, seed=HASH_SEED)
    return (h * BUCKETS) >> 64


def owner(b, nodes):
    """The lab's static ownership: contiguous, nearly equal ranges."""
    for n in range(1, nodes + 1):
        lo = BUCKETS * (n - 1) // nodes
        hi = BUCKETS * n // nodes - 1
        if lo <= b <= hi:
            return f"s{n}"
    raise AssertionError(f"bucket {b} has no owner")


def wait_for(cond, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def outage(flows=64, interval_ms=5, duration_ms=3000):
    """Starts the outage prober in the client namespace; returns the
    process (its stdout is the JSON report)."""
    return subprocess.Popen([LAB, "client", "--", LAB, "outage", "--flows", str(flows),
                             "--interval-ms", str(interval_ms), "--duration-ms", str(duration_ms)],
                            stdout=subprocess.PIPE, text=True)


def ns(node, *cmd, check=True):
    return run("ip", "netns", "exec", f"herd-{node}", *cmd, check=check)


def nft_drop(node, table, rule, hook="input"):
    """Adds a dropping `rule` in an nftables `table` of the node's namespace
    (the table is created on first use)."""
    chain = "in" if hook == "input" else "out"
    ns(node, "nft", f"add table inet {table}")
    ns(node, "nft", f"add chain inet {table} {chain} {{ type filter hook {hook} priority 0; }}")
    ns(node, "nft", f"add rule inet {table} {chain} {rule} counter drop")


def nft_remove(node, table):
    ns(node, "nft", f"delete table inet {table}", check=False)


def http_get(node, path):
    """GET from the client namespace; returns (status, body)."""
    ip = f"198.18.0.{10 + int(node[1:])}"
    code = (
        "import urllib.request, urllib.error, sys\n"
        f"try:\n r = urllib.request.urlopen('http://{ip}:9100{path}', timeout=3)\n"
        " print(r.status); sys.stdout.write(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        " print(e.code); sys.stdout.write(e.read().decode())\n"
    )
    out = client(PY, "-c", code).stdout
    first, _, rest = out.partition("\n")
    return int(first), rest


# Long-lived connections held by `Hold` by default.
CONNS = 300


class Hold:
    """`herd-lab hold` in the client namespace, until `stop()`."""

    def __init__(self, first_source, conns=None, interval_ms=100):
        conns = conns or CONNS
        fd, path = tempfile.mkstemp(prefix="herd-hold-")
        os.close(fd)
        os.unlink(path)
        self.stop_file = Path(path)
        self.proc = subprocess.Popen(
            [LAB, "client", "--", LAB, "hold", "--conns", str(conns), "--sources", str(conns),
             "--first-source", str(first_source), "--interval-ms", str(interval_ms),
             "--stop-file", str(self.stop_file),
             "--max-seconds", "300"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The connections are open once it says so.
        line = self.proc.stderr.readline()
        assert "connections open" in line, line
        time.sleep(0.5)

    def stop(self):
        self.stop_file.touch()
        try:
            out, err = self.proc.communicate(timeout=60)
        finally:
            self.stop_file.unlink(missing_ok=True)
        assert self.proc.returncode == 0, err
        return json.loads(out)
