//! The TAP's direct egress (`bpf/egress.c`, built by `build.rs` with
//! clang): on a port whose NIC the kernel keeps (`af_xdp`; `af_packet`,
//! where the egress balance decides which flows), every frame the node's
//! kernel sends on the TAP is redirected
//! in the kernel to the NIC's own interface and leaves with its offloads
//! (TSO, checksum), as a kernel farm node's replies do: no TAP queue, no
//! lcore, no copy. The TAP has the NIC's MAC, so the frame is the one the
//! fastpath would have sent (it only forwarded what the kernel sent).

use crate::balance::{self, Balance};
use crate::dpdk::bpf::{Map, Object, TcAttachment};
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The compiled program (an ELF object for the BPF target).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/egress.o"));
/// Its tc program's name.
pub const PROGRAM: &str = "herd_egress";
/// The map holding the NIC's interface index (entry 0; 0: redirect
/// nothing).
pub const NIC_MAP: &str = "herd_egress_nic";
/// The per-CPU count of frames redirected (entry 0).
pub const COUNT_MAP: &str = "herd_egress_count";
/// The egress balance (entry 0): flow slots, of
/// [`packet::balance::SLOTS`], whose frames stay on the TAP for an lcore.
pub const KEPT_MAP: &str = "herd_egress_kept";

/// The program attached to the TAP's egress; detached when dropped. The
/// loaded object is closed once attached: the tc filter holds the program
/// and the program its maps.
pub struct DirectEgress {
    _attachment: TcAttachment,
    count: Map,
    kept: Map,
}

impl DirectEgress {
    /// Loads the program, points it at interface `nic_ifindex` and
    /// attaches it to the egress of interface `tap_ifindex`.
    pub fn attach(tap_ifindex: u32, nic_ifindex: u32) -> io::Result<DirectEgress> {
        if tap_ifindex == 0 || nic_ifindex == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such interface"));
        }
        let object = Object::load(OBJECT)?;
        object
            .map(NIC_MAP)?
            .update(&0u32.to_ne_bytes(), &nic_ifindex.to_ne_bytes())?;
        let count = object.map(COUNT_MAP)?;
        let kept = object.map(KEPT_MAP)?;
        let attachment = object.attach_tc_egress(PROGRAM, tap_ifindex)?;
        Ok(DirectEgress {
            _attachment: attachment,
            count,
            kept,
        })
    }

    /// Frames redirected so far (a large segment counts once).
    pub fn frames(&self) -> io::Result<u64> {
        self.count.percpu_u64_sum(0)
    }
}

/// Where the balance's decision goes: how many flow slots (of
/// [`packet::balance::SLOTS`]) stay on the TAP for the lcores; the rest
/// leave directly.
pub trait KeptSlots: Send + Sync {
    fn keep(&self, slots: u32) -> io::Result<()>;
}

impl KeptSlots for DirectEgress {
    fn keep(&self, slots: u32) -> io::Result<()> {
        self.kept.update(&0u32.to_ne_bytes(), &slots.to_ne_bytes())
    }
}

/// The egress balance of a running node (`af_packet` with the direct
/// egress unset; see [`crate::balance`]): the lcores publish their
/// windows; whichever ends one first once a window has passed since the
/// last decision decides for all and sets the program's kept slots.
pub struct EgressBalance {
    egress: Arc<dyn KeptSlots>,
    /// The clock the windows' ends are read on (nanoseconds since).
    epoch: Instant,
    /// Each lcore's load in its last window, in thousandths.
    busy: Box<[AtomicU32]>,
    /// When that window ended.
    ended: Box<[AtomicU64]>,
    /// When the next decision is due. An lcore takes it with a
    /// compare-and-swap, so one decides per window however many end one.
    next_decision: AtomicU64,
    /// The kept slots now (what the program has).
    kept: AtomicU32,
}

impl EgressBalance {
    /// Starts with every flow kept for the lcores.
    pub fn new(egress: Arc<dyn KeptSlots>, lcores: usize) -> io::Result<EgressBalance> {
        let kept = Balance::new().kept();
        egress.keep(kept)?;
        Ok(EgressBalance {
            egress,
            epoch: Instant::now(),
            busy: (0..lcores).map(|_| AtomicU32::new(0)).collect(),
            ended: (0..lcores).map(|_| AtomicU64::new(0)).collect(),
            next_decision: AtomicU64::new(0),
            kept: AtomicU32::new(kept),
        })
    }

    /// Flow slots (of [`crate::balance::SLOTS`]) whose frames go through
    /// the lcores now.
    pub fn kept(&self) -> u32 {
        self.kept.load(Ordering::Relaxed)
    }

    /// Lcore `queue`'s load in the window that ended at `now`; decides if
    /// a decision is due and no other lcore took it.
    pub fn after_window(&self, queue: usize, busy: u32, now: Instant) {
        let now = now.saturating_duration_since(self.epoch);
        let now_ns = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        if let (Some(b), Some(e)) = (self.busy.get(queue), self.ended.get(queue)) {
            b.store(busy, Ordering::Relaxed);
            e.store(now_ns, Ordering::Relaxed);
        }
        let due = self.next_decision.load(Ordering::Relaxed);
        let window_ns = u64::try_from(balance::WINDOW.as_nanos()).unwrap_or(u64::MAX);
        if now_ns < due
            || self
                .next_decision
                .compare_exchange(
                    due,
                    now_ns.saturating_add(window_ns),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let windows = self.busy.iter().zip(self.ended.iter()).map(|(b, e)| {
            (
                b.load(Ordering::Relaxed),
                Duration::from_nanos(e.load(Ordering::Relaxed)),
            )
        });
        let busiest = balance::busiest(windows, now);
        if let Some(kept) = Balance::with_kept(self.kept()).after_window(busiest) {
            match self.egress.keep(kept) {
                Ok(()) => self.kept.store(kept, Ordering::Relaxed),
                // The program keeps its old slots; so does the balance.
                Err(e) => tracing::warn!("the egress balance's map: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// What the program's map would have been given.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<u32>>);

    impl KeptSlots for Recorded {
        fn keep(&self, slots: u32) -> io::Result<()> {
            self.0.lock().unwrap().push(slots);
            Ok(())
        }
    }

    fn balance(lcores: usize) -> (Arc<Recorded>, EgressBalance, Instant) {
        let recorded = Arc::new(Recorded::default());
        let b = EgressBalance::new(recorded.clone(), lcores).unwrap();
        let start = b.epoch;
        (recorded, b, start)
    }

    #[test]
    fn a_busy_second_lcore_decides_while_the_first_waits_for_work() {
        let (recorded, b, start) = balance(2);
        // Lcore 0 ended one light window and went to wait; lcore 1 is
        // saturated, window after window.
        b.after_window(0, 100, start + balance::WINDOW);
        for w in 2..=4 {
            b.after_window(1, 990, start + balance::WINDOW * w);
        }
        assert_eq!(*recorded.0.lock().unwrap(), vec![256, 224, 192, 160]);
        assert_eq!(b.kept(), 160);
    }

    #[test]
    fn one_decision_per_window_however_many_lcores_end_one() {
        let (recorded, b, start) = balance(2);
        let at = |ms| start + Duration::from_millis(ms);
        b.after_window(0, 990, at(20));
        b.after_window(1, 990, at(21));
        assert_eq!(
            b.kept(),
            224,
            "the second lcore's window came within the same 20 ms"
        );
        b.after_window(1, 990, at(41));
        assert_eq!(b.kept(), 192);
        b.after_window(0, 990, at(42));
        assert_eq!(*recorded.0.lock().unwrap(), vec![256, 224, 192]);
    }

    #[test]
    fn the_busy_window_of_an_lcore_that_went_to_wait_stops_counting() {
        let (_, b, start) = balance(2);
        let at = |ms| start + Duration::from_millis(ms);
        b.after_window(1, 990, at(20));
        assert_eq!(b.kept(), 224);
        // Lcore 1 waits from here on; lcore 0 is in the band (no change)
        // while lcore 1's last window is recent, then alone and light.
        b.after_window(0, 700, at(45));
        assert_eq!(b.kept(), 192, "lcore 1's 990 still counts 25 ms later");
        b.after_window(0, 100, at(80));
        assert_eq!(b.kept(), 224, "60 ms later it no longer does");
    }
}
