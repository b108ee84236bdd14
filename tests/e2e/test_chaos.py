"""The chaos soak (issue 14.2): `herd-lab chaos` injects random faults on
a three-node membership farm while clients hold connections and open new
ones, and checks the farm's promises. CI runs two minutes with a fixed
seed; a farm that answers twice (SafeKit's split-brain default, both
sides serving) must be caught."""

import re
import subprocess

from lab import LAB, down

FAULTS = ("crash", "app-kill", "stop-start", "drain", "weight", "link-down",
          "heartbeat-loss", "partition", "mute", "cpu-hog")


def chaos(*args, timeout):
    try:
        return subprocess.run([LAB, "chaos", *args], capture_output=True, text=True, timeout=timeout)
    finally:
        down()


def test_two_minutes_of_random_faults_break_none_of_the_farms_promises():
    r = chaos("--minutes", "2", "--seed", "1", timeout=900)
    out = r.stdout
    assert r.returncode == 0, out[-4000:] + r.stderr[-4000:]
    assert re.search(r"^RESULT chaos seed=1 minutes=2 faults=\d+ violations=0$", out, re.M), out[-2000:]
    # Every kind of fault was injected, and healed.
    injected = set(re.findall(r"fault: ([a-z-]+)", out))
    assert injected == set(FAULTS), injected
    assert "NOT settled" not in out and "FAILED" not in out, out[-2000:]
    # The clients worked throughout, and the faults that may break
    # connections did.
    m = re.search(r"new connections (\d+) answered, (\d+) failed", out)
    assert m and int(m.group(1)) > 2000, out[-2000:]
    assert "broke" in r.stderr
    # Failovers were seen and measured.
    assert re.search(r"1\d{3} buckets were unserved for \d+ ms", out), out[-2000:]


def test_a_farm_whose_partitioned_sides_both_answer_is_caught():
    r = chaos("--minutes", "0.3", "--seed", "2", "--split-brain", "serve-all",
              "--faults", "partition", timeout=300)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert re.search(r"VIOLATION at .*answered by 2 nodes", r.stdout), r.stdout[-2000:]
    assert re.search(r"^RESULT chaos seed=2 .* violations=[1-9]", r.stdout, re.M)
