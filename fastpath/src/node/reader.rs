//! The status a running node reports: `StatusReader` reads counters,
//! table and ports from any thread into `node_status::NodeStatus`.

use super::*;

/// The exception path to the kernel: Herd's own TAP (the default), or a
/// DPDK port named by `tap.vdev` (benchmarks: `net_null`, or `net_tap`).
#[derive(Clone)]
pub(super) enum KernelPort {
    Tap(Arc<Tap>),
    Port(Arc<Port>),
}

impl KernelPort {
    pub(super) fn describe(&self) -> String {
        match self {
            KernelPort::Tap(t) if t.offloads() => format!("{} (TSO, checksum offload)", t.name()),
            KernelPort::Tap(t) => format!("{} (no offloads)", t.name()),
            KernelPort::Port(p) => p.name().to_string(),
        }
    }

    /// The exception path's counters; Herd's TAP counts in the lcores'.
    pub(super) fn stats(&self, totals: &BurstCounts) -> PortStats {
        match self {
            KernelPort::Port(p) => p.stats(),
            KernelPort::Tap(_) => PortStats {
                ipackets: totals.from_kernel,
                opackets: totals.accepted + totals.to_kernel,
                ierrors: totals.kernel_frames_lost,
                ..Default::default()
            },
        }
    }
}

/// Reads a running node's status (counters, table, ports) from any
/// thread, for the control socket and the HTTP listener.
#[derive(Clone)]
pub struct StatusReader {
    pub(super) config: Arc<Config>,
    pub(super) nic: Arc<Port>,
    pub(super) kernel: KernelPort,
    pub(super) nic_mac: [u8; 6],
    pub(super) lcores: Vec<u32>,
    pub(super) counters: Arc<[LcoreCounters]>,
    pub(super) switches: Arc<[TableSwitch]>,
    pub(super) flow_gauges: Arc<[FlowGauges]>,
    pub(super) publisher: TablePublisher,
    /// The maps each published table goes to: the XDP pre-filter's
    /// (af_xdp) or the ingress guard's socket filter's (af_packet).
    pub(super) prefilter: Option<Arc<prefilter::Maps>>,
    pub(super) guard: Option<Arc<prefilter::Guard>>,
    pub(super) ring_drops: Arc<RingDrops>,
    pub(super) xdp_mode: Option<XdpMode>,
    pub(super) direct_egress: Option<Arc<DirectEgress>>,
    pub(super) egress_balance: Option<Arc<EgressBalance>>,
    pub(super) settings: Arc<LcoreSettings>,
}

impl StatusReader {
    /// Each lcore's poll count, by queue: it grows while the lcore runs,
    /// and an idle lcore polls once when [`Self::wake_lcores`] wakes it.
    pub fn lcore_polls(&self) -> Vec<u64> {
        self.counters.iter().map(|c| c.snapshot().polls).collect()
    }

    /// Makes every lcore poll once, idle or not (a liveness probe: one
    /// that does not is stuck).
    pub fn wake_lcores(&self) {
        self.settings.doorbells.ring_all();
    }

    /// The buckets this node owns now, and of how many.
    pub fn owned_buckets(&self) -> (u32, u32) {
        let table = self.publisher.load();
        (table.owned_count(), table.n_buckets())
    }

    pub fn status(&self) -> NodeStatus {
        let table = self.publisher.load();
        let lcores: Vec<LcoreStatus> = self
            .lcores
            .iter()
            .enumerate()
            .map(|(q, &lcore)| LcoreStatus {
                lcore,
                queue: q as u16,
                counters: self.counters[q].snapshot(),
                table: self.switches[q].snapshot(),
                flows: self.flow_gauges[q].snapshot(),
            })
            .collect();
        let totals = BurstCounts::sum(lcores.iter().map(|l| &l.counters));
        NodeStatus {
            farm: self.config.farm.name.clone(),
            node_id: self.config.node.id,
            node_name: self.config.this_node().name.clone(),
            dpdk_version: dpdk::version(),
            nic: self.nic.name().to_string(),
            nic_mac: mac_string(&self.nic_mac),
            table_generation: table.generation(),
            buckets: table.n_buckets(),
            owned_buckets: table.owned_count(),
            owned_ranges: ranges_string(table.owned_buckets()),
            moving_in: table.moving_buckets(Move::In).count() as u32,
            moving_in_ranges: ranges_string(table.moving_buckets(Move::In)),
            moving_out: table.moving_buckets(Move::Out).count() as u32,
            moving_out_ranges: ranges_string(table.moving_buckets(Move::Out)),
            flows: FlowStats::sum(lcores.iter().map(|l| &l.flows)),
            arp_responder: table.is_arp_responder(),
            tap: self.kernel.describe(),
            tap_stats: self.kernel.stats(&totals),
            xdp_mode: self.xdp_mode,
            xdp_prefilter: match (&self.prefilter, self.xdp_mode) {
                (Some(m), Some(_)) => Some(m.counts().unwrap_or_else(|e| {
                    tracing::warn!("the XDP pre-filter's counters: {e}");
                    PrefilterCounts::default()
                })),
                _ => None,
            },
            ingress_guard: self.guard.as_ref().map(|g| GuardStatus {
                socket_filter: g.filters_sockets(),
                heartbeats_apart: g.takes_heartbeats(),
                counts: g.maps().counts().unwrap_or_else(|e| {
                    tracing::warn!("the ingress guard's counters: {e}");
                    prefilter::KernelCounts::default()
                }),
            }),
            ring_drops: self.ring_drops.read(),
            polling: {
                let p = self.settings.policy();
                PollingStatus {
                    spin_us: p.spin.as_micros() as u64,
                    min_sleep_us: p.min_sleep.as_micros() as u64,
                    max_sleep_us: p.max_sleep.as_micros() as u64,
                }
            },
            vips: self.settings.classifier().vips().collect(),
            egress_kept_slots: self.egress_balance.as_ref().map(|b| b.kept()),
            direct_egress: self.direct_egress.as_ref().map(|d| {
                d.frames().unwrap_or_else(|e| {
                    tracing::warn!("the direct egress's counter: {e}");
                    0
                })
            }),
            totals,
            lcores,
            nic_stats: self.nic.stats(),
        }
    }
}
