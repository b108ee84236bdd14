//! The kernel-side decision: the XDP pre-filter (`bpf/prefilter.c`,
//! af_xdp) and the ingress guard (`bpf/guard.c`: af_packet's socket
//! filter and the heartbeats' tc path), built by `build.rs` with clang
//! over one shared decision (`bpf/decide.h`): what their maps hold, made
//! from the decision's own configuration and bucket table (pure), and
//! their publication through the DPDK layer's BPF maps.
//!
//! The programs decide only what the fastpath's fast paths (IPv4 and
//! IPv6) decide without tracking flows: an owned, not moving bucket → the kernel
//! (`XDP_PASS`; the lcore on af_packet); another node's, not moving →
//! dropped before any copy; a peer's heartbeat → the membership socket
//! through the TAP's receive path, apart from the data (a flood never
//! shares a ring, an lcore or a queue with it); junk to the heartbeat
//! port from any other address → dropped and counted; everything else
//! goes to the fastpath. Tests run the programs on random frames
//! (`BPF_PROG_TEST_RUN`) and hold their verdicts to
//! [`Classifier::classify`](crate::decision::Classifier::classify).

use crate::decision::{Affinity, Classifier, RuleTable};
use crate::dpdk::bpf::{Map, Object, TcAttachment};
use crate::dpdk::wake::Waker;
use crate::table::BucketTable;
use crate::wire::{IPPROTO_TCP, IPPROTO_UDP};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

pub use node_status::KernelCounts;

/// The compiled program (an ELF object for the BPF target).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/prefilter.o"));
/// Its XDP program's name.
pub const PROGRAM: &str = "herd_prefilter";
/// The ingress guard's object: the socket filter and the tc program.
pub const GUARD: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guard.o"));
/// Its socket filter (af_packet's queue sockets).
pub const SOCKET_FILTER: &str = "herd_sockfilter";
/// Its tc program (the NIC interface's ingress): peers' heartbeats into
/// the TAP.
pub const HEARTBEAT_IN: &str = "herd_heartbeat_in";
/// The tc filter slot (handle, priority) of the heartbeats' program on
/// the NIC interface's ingress: a node that restarts after a crash
/// replaces its predecessor's filter (which would redirect to a TAP that
/// is gone) instead of adding one after it.
pub const HEARTBEAT_IN_SLOT: (u32, u32) = (1, 0x4865);
/// The guard's map holding the TAP's interface index.
const TAP_MAP: &str = "herd_tap";

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

/// A heartbeat endpoint as the programs' key (`struct herd_endpoint`):
/// the address (IPv4 mapped into IPv6), then the port in network order
/// (0 for a peer's address), then two zero bytes.
pub fn endpoint_key(addr: IpAddr, port: u16) -> [u8; 20] {
    let v6 = match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&v6.octets());
    key[16..18].copy_from_slice(&port.to_be_bytes());
    key
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
    vips6: Map,
    vip_macs: Map,
    rules: Map,
    own_mac: Map,
    table: Map,
    counts: Map,
    hb_local: Map,
    hb_peers: Map,
    /// Held while a table is written or the VIPs and rules change, so that
    /// a publication never lands in the middle of a reconfiguration.
    writing: Mutex<()>,
}

const NAMES: [&str; 9] = [
    "herd_vips4",
    "herd_vip_macs",
    "herd_rules",
    "herd_own_mac",
    "herd_table",
    "herd_counts",
    "herd_hb_local",
    "herd_hb_peers",
    "herd_vips6",
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
            hb_local: find(NAMES[6])?,
            hb_peers: find(NAMES[7])?,
            vips6: find(NAMES[8])?,
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
        for vip in &classifier.vips6 {
            self.vips6.update(&vip.address.octets(), &[1])?;
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
        for vip in &old.vips6 {
            if !new.vips6.iter().any(|v| v.address == vip.address) {
                self.vips6.delete(&vip.address.octets())?;
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

    /// Makes the programs recognise heartbeats: datagrams to one of
    /// `local` (this node's heartbeat endpoints) from one of `peers` (the
    /// other nodes' heartbeat addresses) are peers' heartbeats, any other
    /// to `local` junk. Only once the heartbeats' tc path is in place: on
    /// af_packet the socket filter leaves both to it.
    pub fn recognise_heartbeats(&self, local: &[SocketAddr], peers: &[IpAddr]) -> io::Result<()> {
        for p in peers {
            self.hb_peers.update(&endpoint_key(*p, 0), &[1])?;
        }
        for l in local {
            self.hb_local
                .update(&endpoint_key(l.ip(), l.port()), &[1])?;
        }
        Ok(())
    }

    /// What the programs did, over all CPUs.
    pub fn counts(&self) -> io::Result<KernelCounts> {
        let c = |i| self.counts.percpu_u64_sum(i);
        Ok(KernelCounts {
            passed: c(0)?,
            dropped: c(1)?,
            to_fastpath: c(2)?,
            heartbeats: c(3)?,
            heartbeat_junk: c(4)?,
        })
    }
}

/// The ingress guard (`bpf/guard.c`), loaded: attach its programs, then
/// [`LoadedGuard::running`] keeps what a running node needs (the loaded
/// object stays on the thread that loaded it).
pub struct LoadedGuard {
    object: Object,
    guard: Guard,
}

/// The ingress guard of a running node: on af_packet its socket filter on
/// the port's queue sockets, and on both drivers its tc program taking
/// peers' heartbeats to the TAP. Its maps are written like the
/// pre-filter's (the same [`Maps`]); the tc program is detached when it
/// is dropped (the socket filter goes with the sockets).
pub struct Guard {
    maps: Arc<Maps>,
    ingress: Option<TcAttachment>,
    heartbeats: bool,
    socket_filter: bool,
}

impl LoadedGuard {
    /// Loads the guard's programs; nothing is attached yet.
    pub fn load() -> io::Result<LoadedGuard> {
        let object = Object::load(GUARD)?;
        let maps = Arc::new(Maps::of(&object)?);
        Ok(LoadedGuard {
            object,
            guard: Guard {
                maps,
                ingress: None,
                heartbeats: false,
                socket_filter: false,
            },
        })
    }

    /// The maps its programs decide by.
    pub fn maps(&self) -> &Arc<Maps> {
        &self.guard.maps
    }

    /// Makes the socket filter the filter of each of `sockets` (an
    /// af_packet port's queue sockets): other nodes' buckets, the frames
    /// this host sends and (once [`LoadedGuard::take_heartbeats`]
    /// succeeded) heartbeats are never copied into their rings.
    pub fn filter(&mut self, sockets: &[Waker]) -> io::Result<()> {
        for s in sockets {
            self.object.attach_socket_filter(SOCKET_FILTER, *s)?;
        }
        self.guard.socket_filter = !sockets.is_empty();
        Ok(())
    }

    /// Attaches the tc program to the ingress of interface `nic` (the
    /// port's kernel interface), redirecting what it takes into the
    /// receive path of interface `tap` (where the node's addresses live).
    /// It takes nothing until told what.
    pub fn attach_ingress(&mut self, nic: u32, tap: u32) -> io::Result<()> {
        if nic == 0 || tap == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such interface"));
        }
        self.object
            .map(TAP_MAP)?
            .update(&0u32.to_ne_bytes(), &tap.to_ne_bytes())?;
        self.guard.ingress = Some(self.object.attach_tc_ingress(
            HEARTBEAT_IN,
            nic,
            HEARTBEAT_IN_SLOT,
        )?);
        Ok(())
    }

    /// Once attached: peers' heartbeats to `local` go to the TAP, junk
    /// to `local` is dropped. Every program recognises heartbeats only
    /// from then on (`also`: the pre-filter's maps, on af_xdp).
    pub fn take_heartbeats(
        &mut self,
        local: &[SocketAddr],
        peers: &[IpAddr],
        also: Option<&Maps>,
    ) -> io::Result<()> {
        if self.guard.ingress.is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no tc program"));
        }
        self.guard.maps.recognise_heartbeats(local, peers)?;
        if let Some(m) = also {
            m.recognise_heartbeats(local, peers)?;
        }
        self.guard.heartbeats = true;
        Ok(())
    }

    /// What a running node keeps.
    pub fn running(self) -> Guard {
        self.guard
    }
}

impl Guard {
    /// The maps its programs decide by.
    pub fn maps(&self) -> &Arc<Maps> {
        &self.maps
    }

    /// Whether peers' heartbeats take the tc path.
    pub fn takes_heartbeats(&self) -> bool {
        self.heartbeats
    }

    /// Whether the socket filter is on the port's sockets (af_packet).
    pub fn filters_sockets(&self) -> bool {
        self.socket_filter
    }
}
