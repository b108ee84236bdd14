"""Application health in the lab (issue 4): checkers, recovery actions,
scripts, node states, the operator's commands, /health and /metrics, and a
control socket that is root's only. A three-node membership farm whose
application is started and stopped by herd's scripts."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from lab import HERD, LAB, PY, client, down, http_get, lab, probe, run, status, up, wait_for

NODES = ("s1", "s2", "s3")
STATE_DIR = Path("/run/herd-lab")


def sock(node):
    return str(STATE_DIR / f"{node}.sock")


def herd(node, *args, check=True):
    return run(HERD, *args, "--socket", sock(node), check=check)


def state_code(node):
    return herd(node, "state", check=False).returncode


def owned(node):
    try:
        return status(node)["owned_buckets"]
    except AssertionError:
        return None


def converged():
    try:
        sts = [status(n) for n in NODES]
    except AssertionError:
        return False
    return (all(s["health"]["state"] == "UP" and s["owned_buckets"] > 0 for s in sts)
            and sum(s["owned_buckets"] for s in sts) == 4096
            and all(sorted(s["membership"]["view"]) == [1, 2, 3] for s in sts))


def others_hold_all(gone):
    try:
        return sum(owned(n) or 0 for n in NODES if n != gone) == 4096 and owned(gone) == 0
    except AssertionError:
        return False


def log(node):
    return (STATE_DIR / f"{node}.herd.log").read_text(errors="replace")


@pytest.fixture(scope="module", autouse=True)
def farm():
    scripts = Path(tempfile.mkdtemp(prefix="herd-e2e-scripts-"))
    os.chmod(scripts, 0o755)
    (scripts / "start.sh").write_text(
        "#!/bin/sh\n"
        'echo "start script: $1 $2 $3 on $HERD_NODE"\n'
        # A test can hold the start (bounded: 20 s) with a gate file.
        'i=0; while [ -e "/run/herd-lab/gate-$HERD_NODE" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n'
        f'exec {LAB} start-app "$HERD_NODE"\n')
    (scripts / "stop.sh").write_text(
        "#!/bin/sh\n"
        'echo "stop script: $1 $2 $3 on $HERD_NODE"\n'
        f'exec {LAB} stop-app "$HERD_NODE"\n')
    for f in ("start.sh", "stop.sh"):
        os.chmod(scripts / f, 0o755)
    extra = scripts / "extra.toml"
    extra.write_text(f"""
[health]
maxloop = 10
loop_window_s = 600

[scripts]
start = "{scripts}/start.sh"
stop = "{scripts}/stop.sh"
graceful_timeout_ms = 5000
forced_timeout_ms = 2000

[[checkers]]
name = "app"
kind = "tcp"
address = "127.0.0.1:80"
interval_ms = 100
timeout_ms = 300
failures_before_down = 2
action = "restart"

[[checkers]]
name = "gateway"
kind = "ping"
host = "198.18.0.2"
interval_ms = 500

[[checkers]]
name = "link"
kind = "interface"
interface = "nic"
interval_ms = 500

[[checkers]]
name = "hold"
kind = "custom"
command = "test ! -e /run/herd-lab/hold-$HERD_NODE"
interval_ms = 100
failures_before_down = 1
action = "wait"
""")
    up(nodes=3, ownership="membership", extra_config=extra)
    yield
    down()
    shutil.rmtree(scripts, ignore_errors=True)


def test_the_farm_starts_through_its_scripts_and_checkers():
    wait_for(converged, 15, "three nodes UP sharing the buckets")
    for n in NODES:
        h = status(n)["health"]
        assert {c["name"]: c["verdict"] for c in h["checkers"]} == {
            "app": "up", "gateway": "up", "link": "up", "hold": "up"}
        text = log(n)
        # The script ran with (current, next, action) and its output is logged.
        assert f"start script: STOP UP start on {n}" in text
        assert "state change" in text
    assert state_code("s1") == 2
    report = probe("http", sources=300, conns=300, timeout_ms=5000)
    assert report["ok"] == 300
    assert all(report["by_node"].get(n, 0) > 0 for n in NODES), report["by_node"]


def test_killing_the_application_withdraws_the_node_and_restart_brings_it_back():
    wait_for(converged, 15, "the farm to converge")
    gate = Path("/run/herd-lab/gate-s2")
    gate.write_text("hold the start script\n")
    try:
        lab("kill-app", "s2")
        # The checker fails twice (0.2 s), the node withdraws and the others
        # take its share while the restart runs (held by the gate).
        wait_for(lambda: others_hold_all("s2"), 5, "s1 and s3 to hold s2's share")
        st = status("s2")["health"]
        assert st["state"] == "WAIT" and st["transient"], st
        assert st["running_script"] == "start", st
        for rnd in range(3):
            report = probe("http", sources=200, conns=200, timeout_ms=5000)
            failed = [r for r in report["results"] if r["error"]]
            assert not failed, f"round {rnd}: {failed[:3]}"
            assert report["by_node"].get("s2", 0) == 0
    finally:
        gate.unlink(missing_ok=True)
    wait_for(converged, 15, "s2 to rejoin")
    text = log("s2")
    assert "checker down: recovery action" in text and 'checker="app"' in text
    assert "stop script: UP UP restart on s2" in text
    assert "start script: UP UP restart on s2" in text
    report = probe("http", sources=300, conns=300, timeout_ms=5000)
    assert report["ok"] == 300
    assert report["by_node"].get("s2", 0) > 0, "the restarted application serves again"


def test_a_failing_wait_checker_holds_the_node_in_wait_until_it_passes():
    wait_for(converged, 15, "the farm to converge")
    hold = Path("/run/herd-lab/hold-s3")
    hold.write_text("maintenance\n")
    try:
        wait_for(lambda: state_code("s3") == 1, 5, "s3 in WAIT")
        wait_for(lambda: others_hold_all("s3"), 5, "s1 and s2 to hold s3's share")
        report = probe("http", sources=200, conns=200, timeout_ms=5000)
        assert report["ok"] == 200
        assert report["by_node"].get("s3", 0) == 0
        # It stays there while the checker fails (observed for a second).
        deadline = time.time() + 1.0
        while time.time() < deadline:
            assert state_code("s3") == 1
            time.sleep(0.1)
        out = herd("s3", "state", check=False).stdout
        assert out.startswith("WAIT (ready)") and "hold down" in out, out
    finally:
        hold.unlink(missing_ok=True)
    wait_for(lambda: state_code("s3") == 2, 5, "s3 back UP")
    wait_for(converged, 10, "s3 to take its share back")


def test_herd_stop_moves_the_share_away_and_herd_start_brings_it_back():
    wait_for(converged, 15, "the farm to converge")
    out = herd("s1", "stop").stdout
    assert "stop" in out
    wait_for(lambda: state_code("s1") == 0, 10, "s1 in STOP")
    wait_for(lambda: others_hold_all("s1"), 5, "s2 and s3 to hold s1's share")
    assert "stop script: UP STOP stop on s1" in log("s1")
    report = probe("http", sources=200, conns=200, timeout_ms=5000)
    assert report["ok"] == 200 and report["by_node"].get("s1", 0) == 0
    again = herd("s1", "stop", check=False)
    assert again.returncode == 1 and "already stopped" in again.stderr
    # The others see it as a live node in STOP.
    peers = {n["name"]: n for n in status("s2")["membership"]["nodes"]}
    assert peers["s1"]["alive"] and peers["s1"]["state"] == "STOP"
    herd("s1", "start")
    wait_for(converged, 15, "s1 back UP with its share")
    report = probe("http", sources=300, conns=300, timeout_ms=5000)
    assert report["ok"] == 300 and report["by_node"].get("s1", 0) > 0


def test_health_and_metrics_over_http():
    wait_for(converged, 15, "the farm to converge")
    code, body = http_get("s1", "/health")
    assert (code, body.strip()) == (200, "UP (ready)")
    hold = Path("/run/herd-lab/hold-s1")
    hold.write_text("x\n")
    try:
        wait_for(lambda: http_get("s1", "/health")[0] == 503, 5, "/health to say 503")
        assert http_get("s1", "/health")[1].startswith("WAIT")
    finally:
        hold.unlink(missing_ok=True)
    wait_for(converged, 10, "s1 back")
    code, text = http_get("s2", "/metrics")
    assert code == 200
    metrics = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            metrics[name] = float(value)
    assert metrics['herd_node_state{node="s2"}'] == 2
    assert metrics['herd_node_state{node="s1"}'] == 2
    assert metrics["herd_ready"] == 1
    assert metrics['herd_checker_up{checker="app"}'] == 1
    assert metrics['herd_packets_total{counter="rx_packets"}'] > 0
    assert 0.2 < metrics['herd_bucket_share{node="s2"}'] < 0.45
    age = metrics['herd_heartbeat_age_seconds{peer="s1",network="0"}']
    assert 0 <= age < 0.2
    assert "herd_failovers_total" in metrics
    assert code == 200 and http_get("s2", "/nope")[0] == 404


def test_the_control_socket_refuses_a_non_root_user():
    tmp = Path(tempfile.mkdtemp(prefix="herd-e2e-nobody-"))
    try:
        os.chmod(tmp, 0o755)
        shutil.copy(HERD, tmp / "herd")
        os.chmod(tmp / "herd", 0o755)
        as_nobody = ["runuser", "-u", "nobody", "--", str(tmp / "herd"), "status",
                     "--socket", sock("s1")]
        p = subprocess.run(as_nobody, capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "root only" in p.stderr, p.stderr
        # Even with the file opened up, the node checks the peer's uid.
        os.chmod(sock("s1"), 0o666)
        try:
            p = subprocess.run(as_nobody, capture_output=True, text=True, timeout=30)
            assert p.returncode == 1, p.stdout
            assert "node refused: permission denied" in p.stderr, p.stderr
        finally:
            os.chmod(sock("s1"), 0o600)
        assert herd("s1", "status").returncode == 0, "root still gets in"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_crashed_node_restarts_while_the_application_its_script_started_lives():
    """The application was started by herd's script: it must not inherit
    DPDK's runtime files, or the node could not start again after a crash."""
    wait_for(converged, 15, "the farm to converge")
    lab("kill", "s3")
    wait_for(lambda: sum(owned(n) or 0 for n in ("s1", "s2")) == 4096, 5,
             "s1 and s2 to take s3's share")
    lab("start", "s3")
    wait_for(converged, 20, "s3 to rejoin")


def test_checkers_scripts_and_the_log_level_change_by_reload():
    """`herd reload` takes new checkers, scripts and a log level at run
    time: a checker added to a healthy UP node does not withdraw it while
    untested (its buckets never move), a failing one does (its action), a
    removed one stops counting; the next procedure runs the new stop
    script; the log level changes at once."""
    wait_for(converged, 15, "the farm to converge")
    config = STATE_DIR / "s2.toml"
    original = config.read_text()
    stop = next(l.split('"')[1] for l in original.splitlines() if l.startswith("stop = "))
    stop2 = Path(stop).with_name("stop2.sh")
    marker = STATE_DIR / "stop2-ran-s2"
    stop2.write_text("#!/bin/sh\n"
                     f'echo "$1 $2 $3" > {marker}\n'
                     f'exec {Path(stop).with_name("stop.sh")} "$@"\n')
    os.chmod(stop2, 0o755)
    added = ('\n[[checkers]]\nname = "app2"\nkind = "tcp"\naddress = "{addr}"\n'
             'interval_ms = 100\nfailures_before_down = 2\naction = "wait"\n')
    failovers = lambda: status("s1")["membership"]["counters"]["failovers"]

    def reload(text):
        config.write_text(text)
        return herd("s2", "reload").stdout

    try:
        before = (failovers(), owned("s2"))
        out = reload(original.replace(stop, str(stop2)) + added.format(addr="127.0.0.1:80")
                     + '\n[log]\nlevel = "debug"\n')
        assert "checkers and scripts" in out and "log level debug" in out, out
        # Added to an UP node: it stays UP with its buckets while the new
        # checker is tested, then the checker is up.
        deadline = time.time() + 1.0
        while time.time() < deadline:
            assert state_code("s2") == 2 and owned("s2") == before[1]
            time.sleep(0.05)
        wait_for(lambda: {c["name"]: c["verdict"] for c in status("s2")["health"]["checkers"]}.get("app2") == "up",
                 5, "the new checker up")
        assert (failovers(), owned("s2")) == before
        # The log level is debug now: monitoring's status requests show.
        herd("s2", "status")
        assert 'DEBUG' in log("s2") and 'request="status"' in log("s2")

        # A failing checker acts (wait: the node withdraws); removed, the
        # node is UP again.
        reload(original.replace(stop, str(stop2)) + added.format(addr="127.0.0.1:1"))
        wait_for(lambda: state_code("s2") == 1, 5, "s2 in WAIT for app2")
        wait_for(lambda: others_hold_all("s2"), 5, "s1 and s3 to hold s2's share")
        reload(original.replace(stop, str(stop2)))
        wait_for(converged, 10, "s2 UP again without app2")
        # Back at info: no new debug line.
        lines = len(log("s2").splitlines())
        herd("s2", "status")
        assert not any("DEBUG" in l for l in log("s2").splitlines()[lines:])

        # The next procedure runs the new stop script.
        herd("s2", "restart")
        wait_for(marker.exists, 10, "the new stop script to run")
        assert marker.read_text().split() == ["UP", "UP", "restart"]
        wait_for(converged, 15, "s2 back after its restart")
    finally:
        config.write_text(original)
        herd("s2", "reload", check=False)
        stop2.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
    wait_for(converged, 15, "the farm as it was")
