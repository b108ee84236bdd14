//! The CPU time a client run costs, from `/proc` (through
//! [`crate::procstat`]): nginx (master and workers), the client (this
//! process's reaped children), herd (whole processes and their DPDK lcore
//! threads), softirq and the ksoftirqd threads, the whole machine's busy
//! time and what the host stole; and the RPS interrupts CPU 1 received.

use crate::procstat::{
    children_of, clock_ticks_per_second, process_ticks, reaped_children_ticks, received_rps,
    worker_ticks, MachineTicks,
};
use anyhow::Result;
use std::time::Instant;

/// CPU seconds spent during one client run, by whom.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cpu {
    pub(super) nginx: f64,
    pub(super) client: f64,
    pub(super) herd: f64,
    pub(super) lcores: f64,
    pub(super) softirq: f64,
    pub(super) ksoftirqd: f64,
    pub(super) machine: f64,
    pub(super) steal: f64,
    /// The run's wall-clock seconds (not a row: the share stolen is
    /// `steal / (wall * CPUs)`).
    pub(super) wall: f64,
}

/// The CPU table's rows, in [`Cpu::rows`]'s order (an indented row is a
/// part of the one above it).
pub(super) const CPU_ROWS: [&str; 8] = [
    "nginx",
    "client",
    "herd",
    "  lcores",
    "softirq",
    "  ksoftirqd",
    "total (machine)",
    "stolen by host",
];

impl Cpu {
    /// The CPU table's figures, in [`CPU_ROWS`]'s order.
    pub(super) fn rows(&self) -> [f64; 8] {
        [
            self.nginx,
            self.client,
            self.herd,
            self.lcores,
            self.softirq,
            self.ksoftirqd,
            self.machine,
            self.steal,
        ]
    }
}

/// The processes whose CPU time is measured.
pub(super) struct Procs {
    pub(super) nginx: Vec<u32>,
    pub(super) herd: Vec<u32>,
    pub(super) ksoftirqd: Vec<u32>,
}

/// CPU times in clock ticks at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Sample {
    nginx: u64,
    children: u64,
    herd: u64,
    lcores: u64,
    softirq: u64,
    ksoftirqd: u64,
    machine: u64,
    steal: u64,
    pub(super) rps_cpu1: u64,
    at: Option<Instant>,
}

impl Procs {
    /// Their CPU times (and the machine's) now.
    pub(super) fn sample(&self) -> Result<Sample> {
        let mut s = Sample::default();
        // nginx: each master and its workers (children of the master).
        let children = children_of(&self.nginx);
        for pid in self.nginx.iter().chain(&children) {
            s.nginx += process_ticks(*pid).unwrap_or(0);
        }
        for &pid in &self.herd {
            s.herd += process_ticks(pid)?;
            s.lcores += worker_ticks(pid)?;
        }
        for &pid in &self.ksoftirqd {
            s.ksoftirqd += process_ticks(pid).unwrap_or(0);
        }
        // Our reaped children: the client runs, once each has exited.
        s.children = reaped_children_ticks()?;
        let m = MachineTicks::now()?;
        (s.softirq, s.machine, s.steal) = (m.softirq, m.busy, m.steal);
        s.rps_cpu1 = received_rps(&std::fs::read_to_string("/proc/net/softnet_stat")?, 1);
        s.at = Some(Instant::now());
        Ok(s)
    }
}

impl Sample {
    /// The CPU seconds spent from `before` to this sample.
    pub(super) fn since(&self, before: &Sample) -> Result<Cpu> {
        let hz = clock_ticks_per_second()?;
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / hz;
        Ok(Cpu {
            nginx: d(self.nginx, before.nginx),
            client: d(self.children, before.children),
            herd: d(self.herd, before.herd),
            lcores: d(self.lcores, before.lcores),
            softirq: d(self.softirq, before.softirq),
            ksoftirqd: d(self.ksoftirqd, before.ksoftirqd),
            machine: d(self.machine, before.machine),
            steal: d(self.steal, before.steal),
            wall: match (self.at, before.at) {
                (Some(a), Some(b)) => a.saturating_duration_since(b).as_secs_f64(),
                _ => 0.0,
            },
        })
    }
}
