//! The TAP's direct egress (`bpf/egress.c`, built by `build.rs` with
//! clang): on a port whose NIC the kernel keeps (`af_xdp`; `af_packet`,
//! where the egress balance decides which flows), every frame the node's
//! kernel sends on the TAP is redirected
//! in the kernel to the NIC's own interface and leaves with its offloads
//! (TSO, checksum), as a kernel farm node's replies do: no TAP queue, no
//! lcore, no copy. The TAP has the NIC's MAC, so the frame is the one the
//! fastpath would have sent (it only forwarded what the kernel sent).

use crate::balance::Balance;
use crate::dpdk::bpf::{Map, Object, TcAttachment};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

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

    /// Keeps the frames of `slots` flow slots (of
    /// [`packet::balance::SLOTS`]) on the TAP for the lcores; the rest
    /// leave directly.
    pub fn keep(&self, slots: u32) -> io::Result<()> {
        self.kept.update(&0u32.to_ne_bytes(), &slots.to_ne_bytes())
    }

    /// Frames redirected so far (a large segment counts once).
    pub fn frames(&self) -> io::Result<u64> {
        self.count.percpu_u64_sum(0)
    }
}

/// The egress balance of a running node (`af_packet` with the direct
/// egress unset; see [`crate::balance`]): the lcores publish their load,
/// the first lcore decides and sets the program's kept slots.
pub struct EgressBalance {
    egress: Arc<DirectEgress>,
    /// Each lcore's load in its last window, in thousandths.
    busy: Box<[AtomicU32]>,
    /// The kept slots now (what the program has).
    kept: AtomicU32,
}

impl EgressBalance {
    /// Starts with every flow kept for the lcores.
    pub fn new(egress: Arc<DirectEgress>, lcores: usize) -> io::Result<EgressBalance> {
        let kept = Balance::new().kept();
        egress.keep(kept)?;
        Ok(EgressBalance {
            egress,
            busy: (0..lcores).map(|_| AtomicU32::new(0)).collect(),
            kept: AtomicU32::new(kept),
        })
    }

    /// Flow slots (of [`crate::balance::SLOTS`]) whose frames go through
    /// the lcores now.
    pub fn kept(&self) -> u32 {
        self.kept.load(Ordering::Relaxed)
    }

    /// Lcore `queue`'s load in its last window. The first lcore's call
    /// (`decides`) also decides, on the busiest lcore's load.
    pub fn after_window(&self, queue: usize, busy: u32, decides: bool) {
        if let Some(b) = self.busy.get(queue) {
            b.store(busy, Ordering::Relaxed);
        }
        if !decides {
            return;
        }
        let busiest = self
            .busy
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .max()
            .unwrap_or(busy);
        if let Some(kept) = Balance::with_kept(self.kept()).after_window(busiest) {
            match self.egress.keep(kept) {
                Ok(()) => self.kept.store(kept, Ordering::Relaxed),
                // The program keeps its old slots; so does the balance.
                Err(e) => tracing::warn!("the egress balance's map: {e}"),
            }
        }
    }
}
