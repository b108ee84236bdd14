//! Per-lcore packet counters.
//!
//! Each lcore owns one [`LcoreCounters`] (its own cache line, one writer) and
//! adds a burst's worth of [`BurstCounts`] at the end of each burst; the
//! control thread reads them at any time.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Counts gathered over one burst, in plain integers.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct BurstCounts { $(pub $name: u64,)* }

        /// One lcore's running totals.
        #[derive(Debug, Default)]
        #[repr(align(64))]
        pub struct LcoreCounters { $($name: AtomicU64,)* }

        impl LcoreCounters {
            /// Adds a burst's counts. Only the owning lcore writes, so a
            /// load and a store suffice (no locked read-modify-write).
            #[inline]
            pub fn add(&self, c: &BurstCounts) {
                $(if c.$name != 0 {
                    let v = self.$name.load(Ordering::Relaxed);
                    self.$name.store(v.wrapping_add(c.$name), Ordering::Relaxed);
                })*
            }

            pub fn snapshot(&self) -> BurstCounts {
                BurstCounts { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl BurstCounts {
            pub fn sum<'a>(all: impl IntoIterator<Item = &'a BurstCounts>) -> BurstCounts {
                let mut t = BurstCounts::default();
                for c in all { $(t.$name += c.$name;)* }
                t
            }

            /// Every counter with its name (as `herd status` and
            /// `/metrics` label it), in declaration order.
            pub fn named(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name),)*]
            }
        }
    };
}

counters!(
    rx_packets,
    accepted,
    dropped_not_owned,
    dropped_no_rule,
    dropped_malformed,
    dropped_not_for_us,
    dropped_not_responder,
    to_kernel,
    from_kernel,
    arp_replies,
    ndp_replies,
    tx_failed,
    // The kernel's TAP (Herd's own): large TCP segments the kernel handed
    // over and the fastpath cut into frames; frames lost between the
    // kernel and the fastpath (a failed read or write, a frame whose
    // offload could not be done, no mbuf); frames from the NIC merged
    // into large segments for the kernel (GRO).
    kernel_segments,
    kernel_merged,
    kernel_frames_lost,
    polls,
    idle_sleeps,
);

/// How quickly an lcore picked up the newest bucket table.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct TableSwitch {
    generation: AtomicU64,
    last_ns: AtomicU64,
    max_ns: AtomicU64,
}

/// A snapshot of [`TableSwitch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSwitchStats {
    pub generation: u64,
    pub last_us: u64,
    pub max_us: u64,
}

impl TableSwitch {
    /// The lcore switched to table `generation`, `ns` after it was published.
    pub fn record(&self, generation: u64, ns: u64) {
        self.generation.store(generation, Ordering::Relaxed);
        self.last_ns.store(ns, Ordering::Relaxed);
        if ns > self.max_ns.load(Ordering::Relaxed) {
            self.max_ns.store(ns, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> TableSwitchStats {
        TableSwitchStats {
            generation: self.generation.load(Ordering::Relaxed),
            last_us: self.last_ns.load(Ordering::Relaxed) / 1000,
            max_us: self.max_ns.load(Ordering::Relaxed) / 1000,
        }
    }
}

/// One lcore's flow tracker, as last swept (about once a second while
/// buckets move).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct FlowGauges {
    tracked: AtomicU64,
    held: AtomicU64,
    table_full: AtomicU64,
}

/// A snapshot of [`FlowGauges`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    /// Flows of moving buckets this lcore follows (its own and the other
    /// owner's).
    pub tracked: u64,
    /// Of those, the ones this node serves: the flows it holds.
    pub held: u64,
    /// Flows not tracked because the tracker was full (cumulative).
    pub table_full: u64,
}

impl FlowStats {
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a FlowStats>) -> FlowStats {
        all.into_iter()
            .fold(FlowStats::default(), |a, l| FlowStats {
                tracked: a.tracked + l.tracked,
                held: a.held + l.held,
                table_full: a.table_full + l.table_full,
            })
    }
}

impl FlowGauges {
    pub fn record(&self, c: FlowStats) {
        self.tracked.store(c.tracked, Ordering::Relaxed);
        self.held.store(c.held, Ordering::Relaxed);
        self.table_full.store(c.table_full, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> FlowStats {
        FlowStats {
            tracked: self.tracked.load(Ordering::Relaxed),
            held: self.held.load(Ordering::Relaxed),
            table_full: self.table_full.load(Ordering::Relaxed),
        }
    }
}
