//! CPU accounting from `/proc`, for every benchmark: a process's time, its
//! DPDK lcore threads', the machine's busy, softirq and steal time, the
//! time of the bench's own reaped children (the client runs, the packet
//! generator). Everything is in clock ticks; [`clock_ticks_per_second`]
//! turns ticks into seconds.

use anyhow::{bail, Context, Result};
use std::process::Command;

/// Clock ticks per second of /proc's CPU times, from getconf (keeps libc
/// calls, which are unsafe, out of perf/).
pub fn clock_ticks_per_second() -> Result<f64> {
    let out = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0))
}

/// The fields of a `/proc/PID/stat` line after the command name (which
/// may hold spaces): index 0 is the state, 1 the parent, 11/12
/// utime/stime, 13/14 cutime/cstime.
pub fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or("", |x| x.1)
        .split_whitespace()
        .collect()
}

/// The sum of fields `a` and `b` of a `/proc/PID/stat` line.
fn two_fields(stat: &str, a: usize, b: usize) -> Result<u64> {
    let f = stat_fields(stat);
    let field = |i: usize| -> Result<u64> {
        f.get(i)
            .with_context(|| format!("short stat line: {stat}"))?
            .parse::<u64>()
            .with_context(|| format!("field {i} of {stat}"))
    };
    Ok(field(a)? + field(b)?)
}

/// utime + stime of a whole process. /proc/PID/stat already sums its
/// threads, including those that have exited (a sum over
/// /proc/PID/task/* would miss them).
pub fn process_ticks(pid: u32) -> Result<u64> {
    two_fields(
        &std::fs::read_to_string(format!("/proc/{pid}/stat"))?,
        11,
        12,
    )
}

/// cutime + cstime of this process: its children that have exited and
/// been waited for.
pub fn reaped_children_ticks() -> Result<u64> {
    two_fields(&std::fs::read_to_string("/proc/self/stat")?, 13, 14)
}

/// CPU ticks of a process's DPDK lcore (worker) threads.
pub fn worker_ticks(pid: u32) -> Result<u64> {
    let mut total = 0;
    let mut found = false;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let t = t?.path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if is_lcore_worker(&comm) {
            total += two_fields(&std::fs::read_to_string(t.join("stat"))?, 11, 12)?;
            found = true;
        }
    }
    if !found {
        bail!("no DPDK worker thread found in process {pid}");
    }
    Ok(total)
}

/// Whether a thread's name (`comm`) is a DPDK worker lcore's: DPDK names
/// its worker threads after their lcore (`lcore-worker…` or
/// `rte-worker…`).
pub fn is_lcore_worker(comm: &str) -> bool {
    comm.starts_with("lcore-worker") || comm.starts_with("rte-worker")
}

/// The processes whose parent is one of `parents`.
pub fn children_of(parents: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat_fields(&stat)
            .get(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid.is_some_and(|p| parents.contains(&p)) {
            out.push(pid);
        }
    }
    out
}

/// The kernel's softirq threads.
pub fn ksoftirqd_pids() -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(entry.path().join("comm"))
            .is_ok_and(|c| c.starts_with("ksoftirqd/"))
        {
            out.push(pid);
        }
    }
    out
}

/// The machine's CPU time, summed over its CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTicks {
    pub softirq: u64,
    /// Everything but idle, iowait and steal.
    pub busy: u64,
    /// The time the hypervisor ran something else while a CPU had work:
    /// a run with much of it is noise.
    pub steal: u64,
}

impl MachineTicks {
    /// Now, from /proc/stat.
    pub fn now() -> Result<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat")?)
    }

    /// Sums the per-CPU lines of /proc/stat (`cpuN user nice system idle
    /// iowait irq softirq steal ...`).
    pub fn parse(stat: &str) -> Result<Self> {
        let mut t = MachineTicks::default();
        let mut cpus = 0;
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            let Some(name) = f.next() else { continue };
            if !name.starts_with("cpu") || name == "cpu" {
                continue;
            }
            let v: Vec<u64> = f.map(|x| x.parse().unwrap_or(0)).collect();
            if v.len() < 8 {
                bail!("short line in /proc/stat: {line}");
            }
            t.softirq += v[6];
            t.busy += v[0] + v[1] + v[2] + v[5] + v[6];
            t.steal += v[7];
            cpus += 1;
        }
        if cpus == 0 {
            bail!("no per-CPU lines in /proc/stat");
        }
        Ok(t)
    }
}

/// `received_rps` (the 10th column, hex) of CPU `cpu` in
/// /proc/net/softnet_stat: RPS interrupts it took.
pub fn received_rps(softnet: &str, cpu: usize) -> u64 {
    softnet
        .lines()
        .nth(cpu)
        .and_then(|l| l.split_whitespace().nth(9))
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  10 0 20 1000 0 0 30 0 0 0\ncpu0 4 0 10 500 1 2 10 5 0 0\ncpu1 6 0 10 500 0 0 20 0 0 0\nintr 1\n";
        assert_eq!(
            MachineTicks::parse(stat).unwrap(),
            MachineTicks {
                softirq: 30,
                busy: 4 + 10 + 2 + 10 + 6 + 10 + 20,
                steal: 5
            }
        );
        assert!(MachineTicks::parse("cpu 1 2 3\nintr 1\n").is_err());
        assert!(MachineTicks::parse("cpu0 1 2 3\n").is_err());
        let softnet = "0007e27a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n000f7e6e 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000001a 00000000 00000000 00000001 00000001 00000000\n";
        assert_eq!(received_rps(softnet, 1), 26);
        assert_eq!(received_rps(softnet, 0), 0);
        let line = "20188 (rte worker) R 20186 20186 7717 0 -1 4194304 99 0 0 0 70 30 5 6 20 0 1 0";
        let f = stat_fields(line);
        assert_eq!(
            (f[0], f[1], f[11], f[12], f[13], f[14]),
            ("R", "20186", "70", "30", "5", "6")
        );
        assert_eq!(two_fields(line, 11, 12).unwrap(), 100);
        assert_eq!(two_fields(line, 13, 14).unwrap(), 11);
        assert!(two_fields("1 (x) R 2", 11, 12).is_err());
    }

    #[test]
    fn this_process_is_read() {
        let me = std::process::id();
        assert!(process_ticks(me).is_ok());
        assert!(reaped_children_ticks().is_ok());
        assert!(MachineTicks::now().unwrap().busy > 0);
        assert!(clock_ticks_per_second().unwrap() > 0.0);
        assert!(worker_ticks(me).is_err(), "no DPDK worker in a test");
    }
}
