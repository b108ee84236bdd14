//! What `herd status` shows of a running node's fastpath: the node
//! writes it (`fastpath::node::StatusReader`), and the CLI, `/metrics`,
//! the status page and the benches read it (as JSON over the control
//! socket). One model for both sides, in a crate of its own so that a
//! reader links no DPDK and no BPF build.
#![forbid(unsafe_code)]

use config::XdpMode;
/// The counters the status carries, as the lcores keep them.
pub use packet::counters::{BurstCounts, FlowStats, TableSwitchStats};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What `herd status` shows of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub farm: String,
    pub node_id: u16,
    pub node_name: String,
    pub dpdk_version: String,
    pub nic: String,
    pub nic_mac: String,
    pub table_generation: u64,
    pub buckets: u32,
    pub owned_buckets: u32,
    pub owned_ranges: String,
    /// Buckets this node takes new flows of while their old owner keeps
    /// its connections.
    pub moving_in: u32,
    pub moving_in_ranges: String,
    /// Buckets whose connections this node keeps while their new owner
    /// takes the new flows.
    pub moving_out: u32,
    pub moving_out_ranges: String,
    /// Flows of moving buckets, summed over the lcores.
    pub flows: FlowStats,
    pub arp_responder: bool,
    pub totals: BurstCounts,
    pub lcores: Vec<LcoreStatus>,
    pub nic_stats: PortStats,
    /// The exception path: Herd's own TAP (with or without offloads) or a
    /// DPDK port.
    pub tap: String,
    pub tap_stats: PortStats,
    /// What the XDP pre-filter decided in the driver (af_xdp), if it runs.
    pub xdp_prefilter: Option<PrefilterCounts>,
    /// What the ingress guard decided before the fastpath, if it runs.
    #[serde(default)]
    pub ingress_guard: Option<GuardStatus>,
    /// Frames the kernel dropped because the port's rings were full
    /// (`af_packet`: its sockets' `PACKET_STATISTICS`), if it has any.
    #[serde(default)]
    pub ring_drops: Option<u64>,
    /// Where the pre-filter runs (native: in the driver; generic: in the
    /// kernel's receive path), if it runs.
    pub xdp_mode: Option<XdpMode>,
    /// Frames the kernel sent straight out of the NIC's interface (the
    /// TAP's direct egress; a large segment counts once), if it runs.
    pub direct_egress: Option<u64>,
    /// Flow slots (of 256) whose frames the lcores send, the rest leaving
    /// by the direct egress: the egress balance (`af_packet`, unless
    /// `tap.direct_egress` is set), if it runs.
    pub egress_kept_slots: Option<u32>,
    /// The VIPs the fastpath serves now (a reload may change them).
    pub vips: Vec<IpAddr>,
    /// The lcores' idle policy now (a reload may change it).
    pub polling: PollingStatus,
}

/// The lcores' idle policy (`polling`), as `herd status` shows it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PollingStatus {
    pub spin_us: u64,
    pub min_sleep_us: u64,
    pub max_sleep_us: u64,
}

/// Frames the XDP pre-filter passed to the kernel (owned buckets),
/// dropped (other nodes' buckets) and left to the fastpath; peers'
/// heartbeats passed and junk to the heartbeat port dropped.
pub type PrefilterCounts = KernelCounts;

/// What the ingress guard did: on af_packet, what its socket filter kept
/// out of the port's rings (other nodes' buckets: `dropped`) and let in
/// (`to_fastpath`); on both drivers, the peers' heartbeats its tc program
/// took straight to the membership socket and the junk it dropped.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuardStatus {
    /// The socket filter is on the port's queue sockets (af_packet).
    pub socket_filter: bool,
    /// Peers' heartbeats take the kernel's path, apart from the data.
    pub heartbeats_apart: bool,
    pub counts: KernelCounts,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LcoreStatus {
    pub lcore: u32,
    pub queue: u16,
    pub counters: BurstCounts,
    /// The newest table this lcore uses, and how long after publication
    /// it started using tables (last, worst).
    pub table: TableSwitchStats,
    pub flows: FlowStats,
}

/// Renders owned buckets as ranges ("0-2047,4000").
pub fn ranges_string(buckets: impl Iterator<Item = u32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u32, u32)> = None;
    let flush = |r: (u32, u32), out: &mut Vec<String>| {
        out.push(if r.0 == r.1 {
            r.0.to_string()
        } else {
            format!("{}-{}", r.0, r.1)
        })
    };
    for b in buckets {
        run = match run {
            Some((lo, hi)) if hi + 1 == b => Some((lo, b)),
            Some(r) => {
                flush(r, &mut out);
                Some((b, b))
            }
            None => Some((b, b)),
        };
    }
    if let Some(r) = run {
        flush(r, &mut out);
    }
    out.join(",")
}

/// Port counters kept by the driver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
}

/// What a kernel-side program did with frames, over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCounts {
    /// To the kernel's stack (an owned bucket; af_xdp).
    pub passed: u64,
    /// Other nodes' buckets, dropped before any copy.
    pub dropped: u64,
    /// Left to the fastpath (the lcore).
    pub to_fastpath: u64,
    /// Peers' heartbeats, on the kernel's path to the membership socket.
    #[serde(default)]
    pub heartbeats: u64,
    /// Datagrams to this node's heartbeat port from an address that is no
    /// peer's: dropped.
    #[serde(default)]
    pub heartbeat_junk: u64,
}

impl KernelCounts {
    /// Each count with its name (as `herd status` and `/metrics` show
    /// them).
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("passed", self.passed),
            ("dropped", self.dropped),
            ("to_fastpath", self.to_fastpath),
            ("heartbeats", self.heartbeats),
            ("heartbeat_junk", self.heartbeat_junk),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_runs_of_consecutive_buckets() {
        assert_eq!(ranges_string([0, 1, 2, 5, 7, 8].into_iter()), "0-2,5,7-8");
        assert_eq!(ranges_string(std::iter::empty()), "");
        assert_eq!(ranges_string([4095].into_iter()), "4095");
    }

    #[test]
    fn a_status_without_the_newer_fields_still_reads() {
        // A node of the version before the guard sends no `ingress_guard`
        // and no `heartbeats`: a reader of this version takes it.
        let counts: KernelCounts =
            serde_json::from_str(r#"{"passed":1,"dropped":2,"to_fastpath":3}"#).unwrap();
        assert_eq!(
            counts.named()[..3],
            [("passed", 1), ("dropped", 2), ("to_fastpath", 3)]
        );
        assert_eq!((counts.heartbeats, counts.heartbeat_junk), (0, 0));
    }
}
