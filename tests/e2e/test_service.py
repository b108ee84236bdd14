"""Herd as a service: systemd's notify protocol and watchdog against a
NOTIFY_SOCKET the test opens (these machines do not run systemd as PID 1),
log priorities for journald, and the Debian package installed with
`dpkg -i`."""

import ctypes
import glob
import os
import socket
import subprocess
import time
from pathlib import Path

from lab import HERD, LAB, ROOT, down, lab, probe, run, up, wait_for

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def pid_of(node):
    return int(Path(f"/run/herd-lab/{node}.herd.pid").read_text())


def lcore_threads(pid):
    tids = []
    for task in glob.glob(f"/proc/{pid}/task/*"):
        comm = Path(task, "comm").read_text().strip()
        if comm.startswith(("lcore-worker", "rte-worker")):
            tids.append(int(os.path.basename(task)))
    return tids


class Freeze:
    """Stops one thread of another process (ptrace's interrupt stops that
    thread alone: the rest of the process runs on), as a stuck lcore."""

    def __init__(self, tid):
        self.tid = tid
        for request in (PTRACE_SEIZE, PTRACE_INTERRUPT):
            if libc.ptrace(request, tid, None, None) != 0:
                raise OSError(ctypes.get_errno(), f"ptrace {request:#x} of {tid}")
        _, status = os.waitpid(tid, WALL)
        assert os.WIFSTOPPED(status), status

    def thaw(self):
        if libc.ptrace(PTRACE_DETACH, self.tid, None, 0) != 0:
            raise OSError(ctypes.get_errno(), f"ptrace detach of {self.tid}")


class Notifications:
    """The socket systemd would listen on, and what arrived on it."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.path = str(path)
        self.seen = []  # (monotonic time, {key: value})
        self.read = 0  # how far `wait` has looked in `seen`

    def collect(self, seconds):
        """Everything that arrives within `seconds` (`wait` sees it too)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            got.append((time.monotonic(), fields))
        self.seen += got
        return got

    def wait(self, key, seconds, value="1"):
        """Waits for a message with `key=value` after the last one `wait`
        returned; returns it."""
        deadline = time.monotonic() + seconds
        while True:
            while self.read < len(self.seen):
                m = self.seen[self.read][1]
                self.read += 1
                if m.get(key) == value:
                    return m
            if time.monotonic() >= deadline:
                break
            self.collect(min(0.2, max(0.0, deadline - time.monotonic())))
        raise AssertionError(f"no {key}={value} within {seconds} s; saw {self.seen[-10:]}")

    def close(self):
        self.sock.close()
        os.unlink(self.path)


def feeds(messages):
    return [t for t, m in messages if m.get("WATCHDOG") == "1"]


def test_systemd_hears_ready_reload_stopping_and_a_watchdog_fed_only_while_lcores_poll(tmp_path):
    up(nodes=1, running=0)
    note = Notifications(tmp_path / "notify")
    log = Path("/run/herd-lab/s1.herd.log")
    log.touch()
    st = log.stat()
    env = dict(os.environ, NOTIFY_SOCKET=note.path, WATCHDOG_USEC="1000000",
               JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    starting = subprocess.Popen([LAB, "start", "s1"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        ready = note.wait("READY", 60)
        # READY comes once the node answers and serves.
        assert run(HERD, "status", "--socket", "/run/herd-lab/s1.sock").returncode == 0
        assert "buckets" in ready.get("STATUS", ""), ready
        assert starting.wait(timeout=60) == 0, starting.stdout.read()
        assert probe("udp", sources=10, conns=10)["ok"] == 10

        # Fed every half timeout (0.5 s) while the lcore polls, idle.
        assert len(feeds(note.collect(3))) >= 4, note.seen[-10:]

        # A stuck lcore: no feed (systemd would restart the node), and the
        # log says why; fed again once it runs.
        lcores = lcore_threads(pid_of("s1"))
        assert len(lcores) == 1, lcores
        frozen = Freeze(lcores[0])
        try:
            stalled = note.collect(3)
        finally:
            frozen.thaw()
        late = [t for t in feeds(stalled) if t > stalled[0][0] + 0.6] if stalled else []
        assert late == [], stalled
        assert any("stuck" in m.get("STATUS", "") for _, m in stalled), stalled
        assert "made no progress: the watchdog is not fed" in log.read_text()
        wait_for(lambda: feeds(note.collect(1)), 5, "the watchdog fed again")

        # A reload: RELOADING, then READY again.
        run(HERD, "reload", "--socket", "/run/herd-lab/s1.sock")
        note.wait("RELOADING", 5)
        note.wait("READY", 5)

        # journald's priorities: each line of the log starts with <N>.
        lines = [l for l in log.read_text().splitlines() if l.strip()]
        assert any(l.startswith("<6>") and "reload" in l for l in lines), lines[-5:]
        assert any(l.startswith("<3>") and "no progress" in l for l in lines), lines[-5:]

        lab("stop", "s1")
        note.wait("STOPPING", 10)
    finally:
        if starting.poll() is None:
            starting.kill()
        note.close()
        down()


def deb():
    """The package `ci/package.sh` built (CI builds it before the tests)."""
    found = sorted(glob.glob(str(ROOT / "target/debian/herd_*.deb")))
    if not found:
        run("bash", str(ROOT / "ci/package.sh"), timeout=1800)
        found = sorted(glob.glob(str(ROOT / "target/debian/herd_*.deb")))
    assert found, "ci/package.sh built no package"
    return found[-1]


def test_the_debian_package_installs_a_service_a_manual_and_completions(tmp_path):
    package = deb()
    run("dpkg", "--purge", "herd", check=False)
    key = Path("/etc/herd/farm.key")
    try:
        run("dpkg", "-i", package)
        assert "Status: install ok installed" in run("dpkg", "-s", "herd").stdout
        depends = run("dpkg-deb", "-f", package, "Depends").stdout
        assert "librte-ethdev" in depends and "libbpf" in depends, depends
        version = run("/usr/sbin/herd", "--version").stdout
        assert version.startswith("herd "), version

        unit = "/lib/systemd/system/herd.service"
        verify = run("systemd-analyze", "verify", unit, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        text = Path(unit).read_text()
        for line in ("Type=notify", "WatchdogSec=", "ExecReload=/usr/sbin/herd reload",
                     "Restart=on-failure", "ExecStart=/usr/sbin/herd run --config /etc/herd/herd.toml"):
            assert line in text, line

        page = subprocess.run(["man", "-l", "/usr/share/man/man8/herd.8.gz"],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, MANWIDTH="100"))
        assert page.returncode == 0, page.stderr
        for word in ("reload", "check-config", "SIGHUP", "/etc/herd/herd.toml", "EXIT STATUS"):
            assert word in page.stdout, word

        completion = run("bash", "-c",
                         "source /usr/share/bash-completion/completions/herd && complete -p herd")
        assert "herd" in completion.stdout
        assert Path("/usr/share/zsh/vendor-completions/_herd").exists()
        assert Path("/usr/share/fish/vendor_completions.d/herd.fish").exists()

        # The example config names what the operator must add: the key.
        missing = run("/usr/sbin/herd", "check-config", "/etc/herd/herd.toml", check=False)
        assert missing.returncode == 1 and "membership.key_file" in missing.stderr, missing.stderr
        key.write_bytes(os.urandom(32))
        run("/usr/sbin/herd", "check-config", "/etc/herd/herd.toml")
        # af_xdp with no hugepages: the host needs no set-up.
        assert "nothing to do" in run("/usr/sbin/herd", "setup", "--config",
                                      "/etc/herd/herd.toml").stdout
        assert Path("/etc/herd/herd.toml").read_text() == (ROOT / "dist/herd.toml").read_text()
    finally:
        key.unlink(missing_ok=True)
        run("dpkg", "--purge", "herd", check=False)
    assert not Path("/usr/sbin/herd").exists()
    assert not Path("/lib/systemd/system/herd.service").exists()
    assert not Path("/etc/herd").exists()


def test_herd_setup_reserves_and_mounts_hugepages_and_says_what_it_does(tmp_path):
    """`herd setup` on a config with hugepages: dry run first, then for
    real (the host's hugepages are put back after)."""
    meminfo = lambda: {l.split(":")[0]: l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines()}
    before = meminfo()
    mounted_before = "hugetlbfs" in Path("/proc/mounts").read_text()
    dir_before = Path("/dev/hugepages").exists()
    example = (ROOT / "examples/node.toml").read_text()
    config = tmp_path / "node.toml"
    config.write_text(example.replace("hugepages = false", "hugepages = true")
                      .replace("memory_mb = 256", "memory_mb = 64"))
    free_mb = int(before["HugePages_Free"]) * int(before["Hugepagesize"]) // 1024
    dry = run(HERD, "setup", "--dry-run", "--config", str(config)).stdout
    if free_mb < 64:
        assert "dpdk-hugepages.py --reserve" in dry and "64 needs" in dry, dry
    if not mounted_before:
        assert "dpdk-hugepages.py --mount" in dry, dry
    if free_mb >= 64 and mounted_before:
        assert "nothing to do" in dry, dry
    try:
        run(HERD, "setup", "--config", str(config))
        after = meminfo()
        assert int(after["HugePages_Free"]) * int(after["Hugepagesize"]) // 1024 >= 64, after
        assert "hugetlbfs" in Path("/proc/mounts").read_text()
        assert "nothing to do" in run(HERD, "setup", "--config", str(config)).stdout
    finally:
        if not mounted_before:
            run("umount", "/dev/hugepages", check=False)
        if not dir_before:
            run("rmdir", "/dev/hugepages", check=False)
        Path("/proc/sys/vm/nr_hugepages").write_text(before["HugePages_Total"])
