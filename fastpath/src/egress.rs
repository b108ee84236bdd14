//! The TAP's direct egress (`bpf/egress.c`, built by `build.rs` with
//! clang): on a port whose NIC the kernel keeps (`af_xdp`; `af_packet` on
//! request), every frame the node's kernel sends on the TAP is redirected
//! in the kernel to the NIC's own interface and leaves with its offloads
//! (TSO, checksum), as a kernel farm node's replies do: no TAP queue, no
//! lcore, no copy. The TAP has the NIC's MAC, so the frame is the one the
//! fastpath would have sent (it only forwarded what the kernel sent).

use crate::dpdk::bpf::{Map, Object, TcAttachment};
use std::io;

/// The compiled program (an ELF object for the BPF target).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/egress.o"));
/// Its tc program's name.
pub const PROGRAM: &str = "herd_egress";
/// The map holding the NIC's interface index (entry 0; 0: redirect
/// nothing).
pub const NIC_MAP: &str = "herd_egress_nic";
/// The per-CPU count of frames redirected (entry 0).
pub const COUNT_MAP: &str = "herd_egress_count";

/// The program attached to the TAP's egress; detached when dropped. The
/// loaded object is closed once attached: the tc filter holds the program
/// and the program its maps.
pub struct DirectEgress {
    _attachment: TcAttachment,
    count: Map,
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
        let attachment = object.attach_tc_egress(PROGRAM, tap_ifindex)?;
        Ok(DirectEgress {
            _attachment: attachment,
            count,
        })
    }

    /// Frames redirected so far (a large segment counts once).
    pub fn frames(&self) -> io::Result<u64> {
        self.count.percpu_u64_sum(0)
    }
}
