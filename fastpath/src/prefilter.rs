//! The XDP pre-filter (`bpf/prefilter.c`, built by `build.rs` with clang):
//! what its maps hold, made from the decision's own configuration and
//! bucket table (pure), and their publication through the DPDK layer's
//! BPF maps.
//!
//! The program decides, in the driver, only what the fastpath's IPv4 fast
//! path decides without tracking flows: an owned, not moving bucket →
//! `XDP_PASS`; another node's, not moving → `XDP_DROP`; everything else
//! goes to the AF_XDP socket and the fastpath. A test runs the program on
//! random frames (`BPF_PROG_TEST_RUN`) and holds its verdicts to
//! [`Classifier::classify`](crate::decision::Classifier::classify).

use crate::decision::{Affinity, Classifier, RuleTable};
use crate::dpdk::bpf::{Map, Object};
use crate::table::BucketTable;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};
use std::io;
use std::sync::Mutex;

/// The compiled program (an ELF object for the BPF target).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/prefilter.o"));
/// Its XDP program's name.
pub const PROGRAM: &str = "herd_prefilter";

/// A bucket's entry in the program's table.
pub const STATE_ELSEWHERE: u32 = 0;
pub const STATE_OWNED: u32 = 1;
pub const STATE_DPDK: u32 = 2;

/// What the program did with a frame (its `XDP_*` return code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpVerdict {
    /// To the kernel's stack (an owned bucket).
    Pass,
    /// Another node's bucket.
    Drop,
    /// To the AF_XDP socket: the fastpath decides (a redirect, or, with no
    /// socket on the queue, as in a test run, `XDP_ABORTED`).
    ToDpdk,
    Other(u32),
}

impl XdpVerdict {
    pub fn from_code(code: u32) -> XdpVerdict {
        match code {
            0 | 4 => XdpVerdict::ToDpdk,
            1 => XdpVerdict::Drop,
            2 => XdpVerdict::Pass,
            c => XdpVerdict::Other(c),
        }
    }
}

/// The table as the program reads it: entry 0 the bucket count, entry
/// `1 + b` bucket `b`'s state. A moving bucket is the fastpath's to decide
/// (it tracks the bucket's flows).
pub fn table_entries(table: &BucketTable) -> Vec<u32> {
    let n = table.n_buckets();
    std::iter::once(n)
        .chain((0..n).map(|b| {
            if table.moving(b).is_some() {
                STATE_DPDK
            } else if table.owns(b) {
                STATE_OWNED
            } else {
                STATE_ELSEWHERE
            }
        }))
        .collect()
}

/// The rules as the program's keys: `protocol << 16 | port` → affinity
/// (0 `client-ip`, 1 `client-ip-port`).
pub fn rule_entries(rules: &RuleTable) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    for protocol in [IPPROTO_TCP, IPPROTO_UDP] {
        for port in 0..=u16::MAX {
            if let Some(a) = rules.lookup(protocol, port) {
                let affinity = match a {
                    Affinity::ClientIp => 0,
                    Affinity::ClientIpPort => 1,
                };
                out.push((u32::from(protocol) << 16 | u32::from(port), affinity));
            }
        }
    }
    out
}

/// An IPv4 VIP as the program's key: its address as in the header.
fn vip4_key(a: std::net::Ipv4Addr) -> [u8; 4] {
    a.octets()
}

/// A MAC as the program's u64 key (its bytes, little-endian, 2 zero bytes).
pub fn mac_key(mac: [u8; 6]) -> u64 {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&mac);
    u64::from_le_bytes(b)
}

/// The program's maps, by name (at most 15 characters: the kernel's limit).
pub struct Maps {
    vips4: Map,
    vip_macs: Map,
    rules: Map,
    own_mac: Map,
    table: Map,
    counts: Map,
    /// Held while a table is written or the VIPs and rules change, so that
    /// a publication never lands in the middle of a reconfiguration.
    writing: Mutex<()>,
}

const NAMES: [&str; 6] = [
    "herd_vips4",
    "herd_vip_macs",
    "herd_rules",
    "herd_own_mac",
    "herd_table",
    "herd_counts",
];

impl Maps {
    fn from(mut find: impl FnMut(&str) -> io::Result<Map>) -> io::Result<Maps> {
        Ok(Maps {
            vips4: find(NAMES[0])?,
            vip_macs: find(NAMES[1])?,
            rules: find(NAMES[2])?,
            own_mac: find(NAMES[3])?,
            table: find(NAMES[4])?,
            counts: find(NAMES[5])?,
            writing: Mutex::new(()),
        })
    }

    /// The maps of a loaded object (tests).
    pub fn of(object: &Object) -> io::Result<Maps> {
        Maps::from(|name| object.map(name))
    }

    /// The maps of the program DPDK's af_xdp PMD loaded in this process.
    pub fn in_process() -> io::Result<Maps> {
        Maps::from(|name| {
            Map::find_in_process(name)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the XDP pre-filter's map {name} is not loaded"),
                )
            })
        })
    }

    /// Writes the VIPs, their MACs, the rules and the NIC's MAC.
    pub fn configure(&self, classifier: &Classifier) -> io::Result<()> {
        for vip in &classifier.vips4 {
            self.vips4.update(&vip4_key(vip.address), &[1])?;
        }
        for mac in classifier.vip_macs() {
            self.vip_macs.update(&mac_key(mac).to_ne_bytes(), &[1])?;
        }
        for (key, affinity) in rule_entries(&classifier.rules) {
            self.rules.update(&key.to_ne_bytes(), &[affinity])?;
        }
        self.own_mac.update(
            &0u32.to_ne_bytes(),
            &mac_key(classifier.own_mac).to_ne_bytes(),
        )
    }

    /// Replaces the VIPs and rules of `old` by those of `new` (a reload).
    /// Meanwhile the program leaves every frame to the fastpath, and
    /// `during` runs (the lcores take the new classifier); then the table
    /// `current` returns is published again.
    pub fn reconfigure(
        &self,
        old: &Classifier,
        new: &Classifier,
        during: impl FnOnce(),
        current: impl FnOnce() -> std::sync::Arc<BucketTable>,
    ) -> io::Result<()> {
        let _writing = self.lock();
        self.write_table(None)?;
        during();
        for vip in &old.vips4 {
            if !new.vips4.iter().any(|v| v.address == vip.address) {
                self.vips4.delete(&vip4_key(vip.address))?;
            }
        }
        for mac in old.vip_macs() {
            if !new.vip_macs().any(|m| m == mac) {
                self.vip_macs.delete(&mac_key(mac).to_ne_bytes())?;
            }
        }
        let new_rules = rule_entries(&new.rules);
        for (key, _) in rule_entries(&old.rules) {
            if !new_rules.iter().any(|(k, _)| *k == key) {
                self.rules.delete(&key.to_ne_bytes())?;
            }
        }
        self.configure(new)?;
        self.write_table(Some(&current()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `table`: a new inner map, filled, then swapped in whole
    /// (a packet reads either the old table or the new one, never a mix;
    /// the kernel frees the old one when no program uses it).
    pub fn publish(&self, table: &BucketTable) -> io::Result<()> {
        let _writing = self.lock();
        self.write_table(Some(table))
    }

    /// Makes the program leave every frame to the fastpath (a table of
    /// no buckets).
    pub fn defer_all(&self) -> io::Result<()> {
        let _writing = self.lock();
        self.write_table(None)
    }

    /// `table`, or none: every frame to the fastpath.
    fn write_table(&self, table: Option<&BucketTable>) -> io::Result<()> {
        let Some(table) = table else {
            let inner = Map::new_inner_u32_array("herd_buckets", 1)?;
            return self.table.set_inner(0, &inner);
        };
        let entries = table_entries(table);
        let inner = Map::new_inner_u32_array("herd_buckets", entries.len() as u32)?;
        for (i, v) in entries.iter().enumerate() {
            if *v != 0 {
                inner.update(&(i as u32).to_ne_bytes(), &v.to_ne_bytes())?;
            }
        }
        self.table.set_inner(0, &inner)
    }

    /// Frames passed, dropped and sent to the fastpath, over all CPUs.
    pub fn counts(&self) -> io::Result<[u64; 3]> {
        Ok([
            self.counts.percpu_u64_sum(0)?,
            self.counts.percpu_u64_sum(1)?,
            self.counts.percpu_u64_sum(2)?,
        ])
    }
}
