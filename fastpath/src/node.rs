//! A running node: the EAL, the NIC and TAP ports, one lcore per rx queue
//! running the packet decision, and the status the control socket reports.

use crate::balance;
use crate::counters::{BurstCounts, FlowGauges, FlowStats, LcoreCounters, TableSwitch};
use crate::decision::{Classifier, DropReason, RuleTable, Verdict, Vip};
use crate::dpdk::tap::{self, PacketTx, Tap, TapQueue};
use crate::dpdk::wake::{self, Doorbells, Waker};
use crate::dpdk::{self, Eal, Mbuf, Mempool, Port, PortStats, BURST};
use crate::egress::{DirectEgress, EgressBalance};
use crate::flows::FlowTracker;
use crate::offload::gro::{self, Merger};
use crate::offload::{self, Segmenter, VnetHdr, F_NEEDS_CSUM, GSO_NONE, VNET_HDR_LEN};
use crate::poll::{Backoff, Idle, IdlePolicy, Wakeup};
use crate::prefilter;
use crate::reply;
use crate::setup::KernelSetup;
use crate::table::{BucketTable, Mirror, Move, TablePublisher, TableReader};
use config::{Config, Driver, TapBackend, XdpMode};
/// The status model lives in `node-status`, which readers link without DPDK.
pub use node_status::{
    ranges_string, GuardStatus, LcoreStatus, NodeStatus, PollingStatus, PrefilterCounts,
};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why a node did not start or a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Dpdk(#[from] dpdk::DpdkError),
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    /// A system resource the node needs could not be had: `what` names it.
    #[error("{what}: {source}")]
    System {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The config requires a kernel feature (`key = value`) that this
    /// kernel or interface refuses. Unset, the node would run without it.
    #[error("{key} = {value}, but {refusal}")]
    Refused {
        key: &'static str,
        value: String,
        refusal: String,
    },
    /// `tap.backend = "virtio-user"` on a kernel without vhost-net.
    #[error(
        "tap.backend = \"virtio-user\" needs {VHOST_NET} (the kernel's vhost_net module), \
         and this kernel has none: use tap.backend = \"tap\""
    )]
    NoVhostNet,
    /// Fewer DPDK worker lcores than the port's queues.
    #[error("{workers} worker lcores for {queues} queues")]
    TooFewLcores { workers: usize, queues: u16 },
    /// The test hook [`FAIL_AFTER_KERNEL_SETUP`] is set.
    #[error("{FAIL_AFTER_KERNEL_SETUP} is set: the start fails here")]
    FailedOnPurpose,
}

impl NodeError {
    fn system(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
        let what = what.into();
        move |source| NodeError::System { what, source }
    }
}

/// The bucket table static ownership gives this node. The ARP/NDP
/// responder is the owner of bucket 0: every node computes the same.
pub fn static_table(config: &Config, generation: u64) -> Result<BucketTable, config::ConfigError> {
    let own = config.static_ownership()?;
    let me = config.node.id;
    let owned = own
        .owners
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == me)
        .map(|(b, _)| b as u32);
    Ok(BucketTable::new(
        generation,
        config.farm.buckets,
        owned,
        own.owners.first() == Some(&me),
    ))
}

/// The classifier of a config, for a NIC with MAC `own_mac`.
pub fn classifier(config: &Config, own_mac: [u8; 6]) -> Classifier {
    let rules = RuleTable::from_config(&config.rules);
    let d = config.farm.delivery;
    Classifier {
        own_mac,
        vips4: config
            .vips4()
            .map(|a| Vip {
                address: a,
                mac: config::vip_mac(IpAddr::V4(a), d),
            })
            .collect(),
        vips6: config
            .vips6()
            .map(|a| Vip {
                address: a,
                mac: config::vip_mac(IpAddr::V6(a), d),
            })
            .collect(),
        rules,
    }
}

/// Frames in each af_packet queue's receive ring (the PMD's default is
/// 512). On a host where the lcore shares its CPU (a lab, a VM), it can be
/// off the CPU for tens of milliseconds; 512 frames of a 10 kpps SYN
/// flood's share are 50 ms, and what overflows is lost with the clients'
/// SYNs among it. 4096 frames (8 MiB of kernel memory per queue) hold
/// 0.4 s of it.
const AF_PACKET_RING_FRAMES: u32 = 4096;

/// The EAL arguments a config asks for.
/// `xdp_prog`: the XDP pre-filter's object file for an `af_xdp` port.
pub fn eal_args(config: &Config, xdp_prog: Option<&std::path::Path>) -> Vec<String> {
    let d = &config.dpdk;
    let mut args: Vec<String> = Vec::new();
    // The main lcore runs the control plane; lcores 1..=queues poll. All
    // float over the configured CPUs: with adaptive polling several lcores
    // (and several nodes) can share a core.
    let cpus = d.cpus.clone().unwrap_or_else(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!("0-{}", n - 1)
    });
    let cpu_set = cpus.replace(' ', "");
    let lcores: Vec<String> = (0..=config.port.queues)
        .map(|l| format!("{l}@({cpu_set})"))
        .collect();
    args.push(format!("--lcores={}", lcores.join(",")));
    if d.hugepages {
        args.push(format!("--socket-mem={}", d.memory_mb));
    } else {
        args.push("--no-huge".into());
        args.push(format!("-m{}", d.memory_mb));
    }
    if let Some(p) = &d.file_prefix {
        args.push(format!("--file-prefix={p}"));
    }
    args.push("--no-telemetry".into());
    args.push("--log-level=*:warning".into());
    let q = config.port.queues;
    match config.port.driver {
        Driver::AfPacket => {
            let iface = config.port.interface.as_deref().unwrap_or_default();
            args.push("--no-pci".into());
            args.push(format!(
                "--vdev=net_af_packet0,iface={iface},qpairs={q},framecnt={AF_PACKET_RING_FRAMES}"
            ));
        }
        Driver::AfXdp => {
            let iface = config.port.interface.as_deref().unwrap_or_default();
            args.push("--no-pci".into());
            let mut vdev = format!(
                "--vdev=net_af_xdp0,iface={iface},start_queue=0,queue_count={q},busy_budget=0"
            );
            if let Some(p) = xdp_prog {
                vdev += &format!(",xdp_prog={}", p.display());
            }
            args.push(vdev);
        }
        Driver::Pci => {
            args.push(format!(
                "--allow={}",
                config.port.pci.as_deref().unwrap_or_default()
            ));
        }
        Driver::Vdev => {
            args.push("--no-pci".into());
            args.push(format!(
                "--vdev={}",
                config.port.vdev.as_deref().unwrap_or_default()
            ));
        }
    }
    if let Some(v) = &config.tap.vdev {
        args.push(format!("--vdev={v}"));
    }
    args.extend(d.extra_args.iter().cloned());
    args
}

fn nic_port_name(config: &Config) -> String {
    match config.port.driver {
        Driver::AfPacket => "net_af_packet0".into(),
        Driver::AfXdp => "net_af_xdp0".into(),
        Driver::Pci => config.port.pci.clone().unwrap_or_default(),
        Driver::Vdev => vdev_name(config.port.vdev.as_deref().unwrap_or_default()),
    }
}

fn vdev_name(devargs: &str) -> String {
    devargs.split(',').next().unwrap_or_default().to_string()
}

fn mac_string(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The kernel's vhost-net, which virtio-user needs.
const VHOST_NET: &str = "/dev/vhost-net";

/// The exception path as DPDK's virtio-user over the kernel's vhost-net
/// (`tap.backend = "virtio-user"`): a kernel TAP interface named
/// `tap.name`, fed by vhost-net's kernel thread rather than by the lcore.
fn virtio_user(
    eal: &Eal,
    config: &Config,
    pool: &Mempool,
    mac: [u8; 6],
) -> Result<Port, NodeError> {
    if !std::path::Path::new(VHOST_NET).exists() {
        return Err(NodeError::NoVhostNet);
    }
    let queues = config.port.queues;
    eal.create_vdev("virtio_user0", &virtio_user_args(config, mac))?;
    let port = eal.port_by_name("virtio_user0")?;
    port.configure_and_start(
        pool,
        queues,
        config.port.rx_descriptors,
        config.port.tx_descriptors,
    )?;
    Ok(port)
}

/// virtio-user's devargs for a config: vhost-net, one queue per lcore,
/// the TAP's name and the NIC's MAC.
pub fn virtio_user_args(config: &Config, mac: [u8; 6]) -> String {
    format!(
        "path={VHOST_NET},queues={},queue_size=1024,iface={},mac={}",
        config.port.queues,
        config.tap.name,
        mac_string(&mac)
    )
}

/// The packet socket that sends large segments whole on an `af_packet` or
/// `af_xdp` port (the kernel keeps the interface, and its TSO, in both)
/// whose TAP has offloads; other ports cut them in the fastpath.
fn packet_tx(config: &Config) -> Result<Option<PacketTx>, NodeError> {
    match (config.port.driver, &config.port.interface, &config.tap.vdev) {
        (Driver::AfPacket | Driver::AfXdp, Some(i), None) if config.tap.offloads => {
            PacketTx::open(tap::interface_index(i))
                .map(Some)
                .map_err(NodeError::system(format!("a packet socket on {i}")))
        }
        _ => Ok(None),
    }
}

/// The XDP pre-filter's object written where the af_xdp PMD loads it
/// from (`xdp_prog=`), when the config wants the pre-filter and the kernel
/// accepts the program (checked by loading it here first: the EAL cannot
/// be started twice). Unset `port.xdp_prefilter`: off, with a log line,
/// where the kernel refuses it; `true`: the kernel's refusal fails the
/// start.
fn prefilter_object(config: &Config) -> Result<Option<std::path::PathBuf>, NodeError> {
    if config.port.driver != Driver::AfXdp || config.port.xdp_prefilter == Some(false) {
        return Ok(None);
    }
    let required = config.port.xdp_prefilter == Some(true);
    if let Some(nic) = &config.port.interface {
        match crate::setup::detach_stale_xdp(nic, prefilter::PROGRAM) {
            Ok(true) => tracing::warn!("detached the XDP pre-filter a crashed run left on {nic}"),
            Ok(false) => {}
            Err(e) => tracing::warn!("could not check {nic} for a stale XDP program: {e}"),
        }
    }
    let checked = dpdk::bpf::Object::load(prefilter::OBJECT).and_then(|probe| {
        drop(probe);
        let name = format!(
            "herd-xdp-prefilter-{}.o",
            config
                .dpdk
                .file_prefix
                .clone()
                .unwrap_or_else(|| std::process::id().to_string())
        );
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, prefilter::OBJECT)?;
        Ok(path)
    });
    match checked {
        Ok(path) => Ok(Some(path)),
        Err(e) if required => Err(NodeError::Refused {
            key: "port.xdp_prefilter",
            value: "true".into(),
            refusal: format!("the kernel does not accept the XDP program: {e}"),
        }),
        Err(e) => {
            tracing::warn!("no XDP pre-filter (the kernel does not accept the program: {e}); the fastpath decides every frame");
            Ok(None)
        }
    }
}

/// Puts the pre-filter the PMD attached (in native mode) where
/// `port.xdp_mode` wants it, unset: generic on a veth, native elsewhere
/// (see [`XdpMode`]). A mode the config names is required; the default
/// falls back to native, with a log line.
fn place_prefilter(config: &Config, nic: &str, t: &mut Teardown) -> Result<XdpMode, NodeError> {
    let mode = match config.port.xdp_mode {
        Some(m) => m,
        None => match crate::setup::interface_kind(nic) {
            Ok(kind) => XdpMode::for_interface_kind(kind.as_deref()),
            Err(e) => {
                tracing::warn!("{e}: the XDP pre-filter stays in native mode");
                XdpMode::Native
            }
        },
    };
    let ifindex = tap::interface_index(nic);
    if mode == XdpMode::Native {
        // A driver without native XDP got the program in generic mode.
        return match dpdk::bpf::xdp_native_attached(ifindex) {
            Ok(true) => Ok(XdpMode::Native),
            Ok(false) if config.port.xdp_mode.is_some() => Err(NodeError::Refused {
                key: "port.xdp_mode",
                value: "\"native\"".into(),
                refusal: format!(
                    "{nic}'s driver has no native XDP (unset, the pre-filter runs in generic mode)"
                ),
            }),
            Ok(false) => Ok(XdpMode::Generic),
            Err(e) => {
                tracing::warn!(
                    "could not ask the kernel where the XDP pre-filter runs on {nic}: {e}"
                );
                Ok(mode)
            }
        };
    }
    match dpdk::bpf::move_xdp_to_generic(ifindex) {
        Ok(a) => {
            t.xdp_generic = Some(a);
            tracing::info!("the XDP pre-filter runs in generic mode on {nic}");
            Ok(XdpMode::Generic)
        }
        Err(e) if config.port.xdp_mode.is_some() => Err(NodeError::Refused {
            key: "port.xdp_mode",
            value: "\"generic\"".into(),
            refusal: format!(
                "the kernel does not take the XDP pre-filter in generic mode on {nic}: {e}"
            ),
        }),
        Err(e) => {
            tracing::warn!("the XDP pre-filter stays in native mode on {nic} (generic mode: {e})");
            Ok(XdpMode::Native)
        }
    }
}

/// The TAP's direct egress (`tap.direct_egress`, see [`crate::egress`])
/// when the config wants it and the port has a kernel interface to send
/// through. Unset: on (`af_xdp`, `af_packet`), with a log line where the kernel
/// refuses it; `true`: the kernel's refusal fails the start.
fn direct_egress(config: &Config) -> Result<Option<DirectEgress>, NodeError> {
    let nic = match (config.port.driver, &config.port.interface) {
        (Driver::AfXdp | Driver::AfPacket, Some(nic))
            if config.tap.vdev.is_none() && config.tap.backend == TapBackend::Tap =>
        {
            nic
        }
        _ => return Ok(None),
    };
    let wanted = config.tap.direct_egress.unwrap_or(true);
    if !wanted {
        return Ok(None);
    }
    match DirectEgress::attach(
        tap::interface_index(&config.tap.name),
        tap::interface_index(nic),
    ) {
        Ok(d) => Ok(Some(d)),
        Err(e) if config.tap.direct_egress == Some(true) => Err(NodeError::Refused {
            key: "tap.direct_egress",
            value: "true".into(),
            refusal: format!(
                "the kernel does not take the tc program on {}: {e}",
                config.tap.name
            ),
        }),
        Err(e) => {
            tracing::warn!(
                "no direct egress (the kernel does not take the tc program on {}: {e}); what the kernel sends goes through the fastpath",
                config.tap.name
            );
            Ok(None)
        }
    }
}

/// What a reload may change in the lcores: the classifier they decide
/// with and their idle policy, each replaced whole. An lcore compares the
/// generation once per poll (one atomic load) and takes both when it
/// changed; a change rings the lcores' doorbells, so an idle one takes it
/// at once.
pub struct LcoreSettings {
    classifier: arc_swap::ArcSwap<Classifier>,
    policy: arc_swap::ArcSwap<IdlePolicy>,
    generation: AtomicU64,
    doorbells: Arc<Doorbells>,
}

impl LcoreSettings {
    fn new(c: Arc<Classifier>, policy: IdlePolicy, doorbells: Arc<Doorbells>) -> LcoreSettings {
        LcoreSettings {
            classifier: arc_swap::ArcSwap::new(c),
            policy: arc_swap::ArcSwap::new(Arc::new(policy)),
            generation: AtomicU64::new(0),
            doorbells,
        }
    }

    pub fn classifier(&self) -> Arc<Classifier> {
        self.classifier.load_full()
    }

    pub fn policy(&self) -> IdlePolicy {
        **self.policy.load()
    }

    fn replace_classifier(&self, c: Arc<Classifier>) {
        self.classifier.store(c);
        self.generation.fetch_add(1, Ordering::Release);
        self.doorbells.ring_all();
    }

    fn replace_policy(&self, p: IdlePolicy) {
        self.policy.store(Arc::new(p));
        self.generation.fetch_add(1, Ordering::Release);
        self.doorbells.ring_all();
    }
}

/// A file removed when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The maps of the pre-filter the PMD loaded, configured for `classifier`.
fn prefilter_maps(classifier: &Classifier) -> std::io::Result<prefilter::Maps> {
    let maps = prefilter::Maps::in_process()?;
    maps.configure(classifier)?;
    Ok(maps)
}

/// The drops of an `af_packet` port's full rings: each read of a
/// socket's count resets it, so every reader adds to one sum.
struct RingDrops {
    sockets: Vec<Waker>,
    sum: AtomicU64,
}

impl RingDrops {
    /// The drops so far (`None`: no such sockets).
    fn read(&self) -> Option<u64> {
        if self.sockets.is_empty() {
            return None;
        }
        for s in &self.sockets {
            match tap::packet_socket_drops(*s) {
                Ok(n) => {
                    self.sum.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => tracing::debug!("the port's ring drops: {e}"),
            }
        }
        Some(self.sum.load(Ordering::Relaxed))
    }
}

/// Loads the ingress guard (`bpf/guard.c`) for an `af_packet` or `af_xdp`
/// port: on af_packet its socket filter goes on `sockets` (other nodes'
/// buckets never reach the rings); with membership and Herd's own TAP its
/// tc program takes peers' heartbeats from the NIC's interface into the
/// TAP, apart from the data (`xdp`: the pre-filter's maps, which then
/// pass heartbeats instead of sending them to the lcore). Whatever fails
/// is logged and left to the fastpath, as without the guard.
fn ingress_guard(
    config: &Config,
    classifier: &Classifier,
    sockets: &[Waker],
    own_tap: bool,
    xdp: Option<&prefilter::Maps>,
) -> Option<prefilter::Guard> {
    let nic = config.port.interface.as_deref()?;
    if !matches!(config.port.driver, Driver::AfPacket | Driver::AfXdp) {
        return None;
    }
    let mut guard = match prefilter::LoadedGuard::load().and_then(|g| {
        g.maps().configure(classifier)?;
        Ok(g)
    }) {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!("the ingress guard did not load ({e}): the fastpath sees every frame and every heartbeat");
            return None;
        }
    };
    // The tc program only sorts heartbeats: with static ownership there
    // are none, and it would cost every arriving frame for nothing.
    let sorts_heartbeats = config.farm.ownership == config::Ownership::Membership && own_tap;
    if sorts_heartbeats {
        if let Err(e) = guard.attach_ingress(
            tap::interface_index(nic),
            tap::interface_index(&config.tap.name),
        ) {
            tracing::warn!(
                "no tc program on {nic}'s ingress: heartbeats take the fastpath's way ({e})"
            );
        }
        let local = config.this_node().heartbeat.clone();
        let peers: Vec<IpAddr> = config
            .peers()
            .flat_map(|n| n.heartbeat.iter().map(|a| a.ip()))
            .collect();
        match guard.take_heartbeats(&local, &peers, xdp) {
            Ok(()) => tracing::info!(
                "peers' heartbeats go from {nic} to the TAP in the kernel, apart from the data"
            ),
            Err(e) => tracing::warn!("peers' heartbeats take the fastpath's way ({e})"),
        }
    }
    if config.port.driver == Driver::AfPacket {
        if let Err(e) = guard.filter(sockets) {
            tracing::warn!("the port's sockets copy every frame: no socket filter ({e})");
        }
    }
    Some(guard.running())
}

/// What follows each published table: the pre-filter takes it, then the
/// lcores are woken to switch (an idle one would switch at its next
/// packet: the same decisions, but its switch time would read late). If
/// the pre-filter's maps cannot take a table, the pre-filter leaves every
/// frame to the fastpath rather than decide by an old table.
fn on_publish(prefilter: Option<Arc<prefilter::Maps>>, doorbells: Arc<Doorbells>) -> Mirror {
    Arc::new(move |table: &BucketTable| {
        if let Some(maps) = &prefilter {
            if let Err(e) = maps.publish(table) {
                tracing::error!("the XDP pre-filter could not take table {}: {e}; it now leaves every frame to the fastpath", table.generation());
                if let Err(e) = maps.defer_all() {
                    tracing::error!("the XDP pre-filter could not be set aside either: {e}");
                }
            }
        }
        doorbells.ring_all();
    })
}

/// The exception path to the kernel: Herd's own TAP (the default), or a
/// DPDK port named by `tap.vdev` (benchmarks: `net_null`, or `net_tap`).
#[derive(Clone)]
enum KernelPort {
    Tap(Arc<Tap>),
    Port(Arc<Port>),
}

impl KernelPort {
    fn describe(&self) -> String {
        match self {
            KernelPort::Tap(t) if t.offloads() => format!("{} (TSO, checksum offload)", t.name()),
            KernelPort::Tap(t) => format!("{} (no offloads)", t.name()),
            KernelPort::Port(p) => p.name().to_string(),
        }
    }

    /// The exception path's counters; Herd's TAP counts in the lcores'.
    fn stats(&self, totals: &BurstCounts) -> PortStats {
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
    config: Arc<Config>,
    nic: Arc<Port>,
    kernel: KernelPort,
    nic_mac: [u8; 6],
    lcores: Vec<u32>,
    counters: Arc<[LcoreCounters]>,
    switches: Arc<[TableSwitch]>,
    flow_gauges: Arc<[FlowGauges]>,
    publisher: TablePublisher,
    /// The maps each published table goes to: the XDP pre-filter's
    /// (af_xdp) or the ingress guard's socket filter's (af_packet).
    prefilter: Option<Arc<prefilter::Maps>>,
    guard: Option<Arc<prefilter::Guard>>,
    ring_drops: Arc<RingDrops>,
    xdp_mode: Option<XdpMode>,
    direct_egress: Option<Arc<DirectEgress>>,
    egress_balance: Option<Arc<EgressBalance>>,
    settings: Arc<LcoreSettings>,
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

/// Set in the environment, a start fails right after the kernel set-up
/// (tests: every error path releases what the start set up).
pub const FAIL_AFTER_KERNEL_SETUP: &str = "HERD_TEST_FAIL_AFTER_KERNEL_SETUP";

/// A started node. Dropping it (or [`RunningNode::shutdown`]) stops it
/// cleanly: lcores, kernel set-up, ports, then DPDK.
pub struct RunningNode {
    /// The ports, counters and table, as the status reads them. Dropped
    /// before `teardown`, so that the ports are no longer shared.
    parts: StatusReader,
    teardown: Teardown,
}

/// What a start has set up, undone in reverse order when it drops: on a
/// start that fails half-way as on a node that stops. The lcores are told
/// to stop and waited for, the kernel set-up is undone (VIPs off `lo`,
/// nftables tables, the NIC's addresses), the ports are closed, the mbuf
/// pool freed, and the EAL cleaned up last.
struct Teardown {
    stop: Arc<AtomicBool>,
    /// Rung after `stop` is set, so that idle lcores see it at once.
    doorbells: Arc<Doorbells>,
    kernel: Mutex<KernelSetup>,
    /// The pre-filter moved to generic mode (the PMD's close knows only
    /// the native one).
    xdp_generic: Option<dpdk::bpf::XdpAttachment>,
    nic: Option<Arc<Port>>,
    /// Whether the NIC was put in promiscuous mode (left when it closes).
    promiscuous: bool,
    /// A DPDK port on the kernel side (virtio-user, a vdev); Herd's own
    /// TAP closes with its last descriptor.
    kernel_port: Option<Arc<Port>>,
    pool: Option<Arc<Mempool>>,
    eal: Option<Eal>,
}

impl Teardown {
    fn eal(&self) -> &Eal {
        self.eal.as_ref().expect("the EAL lives until the teardown")
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.doorbells.ring_all();
        if let Some(eal) = &self.eal {
            eal.wait_workers();
        }
        self.kernel
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .undo();
        drop(self.xdp_generic.take());
        if let (true, Some(nic)) = (self.promiscuous, &self.nic) {
            if let Err(e) = nic.disable_promiscuous() {
                tracing::warn!("{e}");
            }
        }
        for port in [self.kernel_port.take(), self.nic.take()]
            .into_iter()
            .flatten()
        {
            match Arc::try_unwrap(port) {
                Ok(p) => p.close(),
                Err(_) => tracing::warn!("a port is still shared at shutdown: left open"),
            }
        }
        drop(self.pool.take());
        drop(self.eal.take());
    }
}

impl RunningNode {
    /// Starts the node with bucket table `table`: EAL, ports, kernel
    /// side, lcores.
    pub fn start(config: Config, table: BucketTable) -> Result<RunningNode, NodeError> {
        let xdp_prog = prefilter_object(&config)?;
        // The PMD loads the program from the file when its queues are set
        // up; the file goes when this start ends, however it ends.
        let _xdp_file = xdp_prog.clone().map(RemoveOnDrop);
        let doorbells = Doorbells::new(usize::from(config.port.queues))
            .map_err(NodeError::system("the lcores' doorbells (eventfd)"))?;
        let mut t = Teardown {
            stop: Arc::new(AtomicBool::new(false)),
            doorbells: Arc::new(doorbells),
            kernel: Mutex::new(KernelSetup::default()),
            xdp_generic: None,
            nic: None,
            promiscuous: false,
            kernel_port: None,
            pool: None,
            eal: Some(Eal::init(&eal_args(&config, xdp_prog.as_deref()))?),
        };
        let workers = t.eal().worker_lcores();
        let queues = config.port.queues;
        if workers.len() < usize::from(queues) {
            return Err(NodeError::TooFewLcores {
                workers: workers.len(),
                queues,
            });
        }
        let pool = Arc::new(Mempool::new(t.eal(), "herd_mbufs", config.dpdk.mbufs)?);
        t.pool = Some(Arc::clone(&pool));
        let nic = Arc::new(t.eal().port_by_name(&nic_port_name(&config))?);
        t.nic = Some(Arc::clone(&nic));
        nic.configure_and_start(
            &pool,
            queues,
            config.port.rx_descriptors,
            config.port.tx_descriptors,
        )?;
        nic.enable_promiscuous()?;
        t.promiscuous = true;
        let xdp_mode = match (&xdp_prog, &config.port.interface) {
            (Some(_), Some(nic_if)) => Some(place_prefilter(&config, nic_if, &mut t)?),
            _ => None,
        };
        let nic_mac = nic.mac()?;

        // The TAP (or virtio-user's interface) has the NIC's MAC, so what
        // the kernel sends leaves with the NIC's own MAC and peers see one
        // MAC per node.
        let kernel_port = match (&config.tap.vdev, config.tap.backend) {
            (Some(v), _) => {
                let port = Arc::new(t.eal().port_by_name(&vdev_name(v))?);
                t.kernel_port = Some(Arc::clone(&port));
                port.configure_and_start(
                    &pool,
                    queues,
                    config.port.rx_descriptors,
                    config.port.tx_descriptors,
                )?;
                KernelPort::Port(port)
            }
            (None, TapBackend::VirtioUser) => {
                let port = Arc::new(virtio_user(t.eal(), &config, &pool, nic_mac)?);
                t.kernel_port = Some(Arc::clone(&port));
                KernelPort::Port(port)
            }
            (None, TapBackend::Tap) => KernelPort::Tap(Arc::new(
                Tap::open(&config.tap.name, queues, nic_mac, config.tap.offloads)
                    .map_err(NodeError::system(format!("the TAP {}", config.tap.name)))?,
            )),
        };

        // Before the TAP comes up: from its first frame, what the kernel
        // sends leaves through the NIC's interface.
        let direct_egress = match &kernel_port {
            KernelPort::Tap(_) => direct_egress(&config)?.map(Arc::new),
            KernelPort::Port(_) => None,
        };
        // On af_packet the lcores read every frame anyway: unless the
        // config says otherwise, they also send the kernel's while they
        // have room (the egress balance).
        let egress_balance = match &direct_egress {
            Some(d)
                if config.port.driver == Driver::AfPacket && config.tap.direct_egress.is_none() =>
            {
                Some(Arc::new(
                    EgressBalance::new(d.clone(), usize::from(queues))
                        .map_err(NodeError::system("the egress balance's map"))?,
                ))
            }
            _ => None,
        };
        let lcores_send = direct_egress.is_none() || egress_balance.is_some();
        let mut packet_txs: Vec<Option<PacketTx>> = (0..queues)
            .map(|_| {
                if lcores_send {
                    packet_tx(&config)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<_, _>>()?;
        if config.tap.configure_kernel && config.tap.vdev.is_none() {
            let kernel = t.kernel.get_mut().unwrap_or_else(|e| e.into_inner());
            if let (Driver::AfPacket | Driver::AfXdp, Some(nic_if)) =
                (config.port.driver, &config.port.interface)
            {
                kernel.silence_nic(nic_if, config.port.driver == Driver::AfPacket)?;
                if xdp_prog.is_some() {
                    kernel.host_passed_frames(nic_if, &mac_string(&nic_mac))?;
                }
            }
            kernel.configure_tap(&config.tap, &config.farm.vips)?;
        }
        if std::env::var_os(FAIL_AFTER_KERNEL_SETUP).is_some() {
            return Err(NodeError::FailedOnPurpose);
        }

        let counters: Arc<[LcoreCounters]> =
            (0..queues).map(|_| LcoreCounters::default()).collect();
        let switches: Arc<[TableSwitch]> = (0..queues).map(|_| TableSwitch::default()).collect();
        let flow_gauges: Arc<[FlowGauges]> = (0..queues).map(|_| FlowGauges::default()).collect();
        let classifier = Arc::new(classifier(&config, nic_mac));
        let policy = IdlePolicy::from_config(&config.polling);
        let settings = Arc::new(LcoreSettings::new(
            Arc::clone(&classifier),
            policy,
            Arc::clone(&t.doorbells),
        ));
        let xdp_maps = match &xdp_prog {
            Some(_) => Some(Arc::new(
                prefilter_maps(&classifier).map_err(NodeError::system("the XDP pre-filter"))?,
            )),
            None => None,
        };
        let nic_sockets = match (config.port.driver, &config.port.interface) {
            (Driver::AfPacket | Driver::AfXdp, Some(i)) => {
                let found =
                    tap::port_sockets(tap::interface_index(i), config.port.driver == Driver::AfXdp);
                if found.len() == usize::from(queues) {
                    found
                } else {
                    tracing::warn!(
                        found = found.len(),
                        queues,
                        "the NIC's queue sockets were not found: idle lcores wake on the TAP and on time only"
                    );
                    Vec::new()
                }
            }
            _ => Vec::new(),
        };
        let guard = ingress_guard(
            &config,
            &classifier,
            &nic_sockets,
            matches!(kernel_port, KernelPort::Tap(_)),
            xdp_maps.as_deref(),
        )
        .map(Arc::new);
        // An af_packet socket also sees what the node sends through the
        // packet socket or the direct egress; an XDP socket sees only what
        // arrives. The guard's socket filter drops those frames too.
        if config.port.driver == Driver::AfPacket
            && !guard.as_ref().is_some_and(|g| g.filters_sockets())
            && (packet_txs.iter().any(Option::is_some) || direct_egress.is_some())
        {
            for s in &nic_sockets {
                if let Err(e) = tap::ignore_outgoing(*s) {
                    tracing::warn!("the NIC's socket sees what Herd sends: {e}");
                }
            }
        }
        let prefilter = match (&xdp_maps, &guard) {
            (Some(m), _) => Some(Arc::clone(m)),
            (None, Some(g)) if g.filters_sockets() => Some(Arc::clone(g.maps())),
            _ => None,
        };
        let publisher = TablePublisher::with_mirror(
            table,
            on_publish(prefilter.clone(), Arc::clone(&t.doorbells)),
        );
        let stop = Arc::clone(&t.stop);
        let lcores: Vec<u32> = workers.into_iter().take(usize::from(queues)).collect();
        for (q, &lcore) in lcores.iter().enumerate() {
            let mut wakers: Vec<Waker> = nic_sockets.get(q).copied().into_iter().collect();
            // With the direct egress alone, nothing waits in the TAP's
            // queues.
            let kernel_reads = lcores_send;
            let kernel_wakes = match (&kernel_port, kernel_reads) {
                (_, false) => true,
                (KernelPort::Tap(t), true) => {
                    wakers.push(t.queue(q as u16).waker());
                    true
                }
                // A DPDK port on the kernel side has nothing to wait on.
                (KernelPort::Port(_), true) => false,
            };
            let nic_wakes = nic_sockets.get(q).is_some();
            wakers.push(t.doorbells.get(q).waker());
            let worker = Worker {
                queue: q as u16,
                nic: Arc::clone(&nic),
                kernel: kernel_port.clone(),
                pool: Arc::clone(&pool),
                classifier: Arc::clone(&classifier),
                settings: Arc::clone(&settings),
                settings_generation: 0,
                table: publisher.reader(),
                counters: Arc::clone(&counters),
                switches: Arc::clone(&switches),
                flow_gauges: Arc::clone(&flow_gauges),
                flows: FlowTracker::new(
                    config.continuity.max_flows as usize,
                    config.continuity.flow_idle_timeout_ms,
                ),
                stop: Arc::clone(&stop),
                policy,
                wakeup: if nic_wakes && kernel_wakes {
                    Wakeup::Everything
                } else {
                    Wakeup::Timer
                },
                nic_wakes,
                doorbells: Arc::clone(&t.doorbells),
                wakers,
                packet_tx: packet_txs[q].take(),
                kernel_reads,
                egress_balance: egress_balance.clone(),
                gro: config.tap.offloads && config.tap.gro,
            };
            t.eal().launch(lcore, move || worker.run())?;
        }
        tracing::info!(
            node = config.node.id,
            nic = %nic.name(),
            mac = %mac_string(&nic_mac),
            queues,
            "fastpath started"
        );
        let marked = dpdk::close_on_exec_all();
        tracing::debug!(marked, "descriptors marked close-on-exec");
        let ring_drops = Arc::new(RingDrops {
            sockets: if config.port.driver == Driver::AfPacket {
                nic_sockets.clone()
            } else {
                Vec::new()
            },
            sum: AtomicU64::new(0),
        });
        Ok(RunningNode {
            teardown: t,
            parts: StatusReader {
                config: Arc::new(config),
                nic,
                kernel: kernel_port,
                nic_mac,
                lcores,
                counters,
                switches,
                flow_gauges,
                publisher,
                prefilter,
                guard,
                ring_drops,
                xdp_mode,
                direct_egress,
                egress_balance,
                settings: Arc::clone(&settings),
            },
        })
    }

    pub fn config(&self) -> &Config {
        &self.parts.config
    }

    /// Applies the idle policy, VIPs and rules of `config` to the running
    /// node (a reload; the caller checked that nothing else changed), without
    /// breaking a connection: new VIPs reach the kernel first; the XDP
    /// pre-filter leaves every frame to the fastpath while the lcores take
    /// the new classifier and its maps change; removed VIPs leave the
    /// kernel last.
    pub fn reconfigure(&self, config: &Config) -> Result<(), NodeError> {
        let policy = IdlePolicy::from_config(&config.polling);
        if policy != self.parts.settings.policy() {
            self.parts.settings.replace_policy(policy);
        }
        let old = self.parts.settings.classifier();
        let same_farm =
            |c: &Classifier| c.vips4 == old.vips4 && c.vips6 == old.vips6 && c.rules == old.rules;
        let new = Arc::new(classifier(config, self.parts.nic_mac));
        if same_farm(&new) {
            return Ok(());
        }
        let mut kernel = self
            .teardown
            .kernel
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let sets_kernel = config.tap.configure_kernel && config.tap.vdev.is_none();
        let has = |c: &Classifier, a: IpAddr| c.vips().any(|v| v == a);
        if sets_kernel {
            for vip in new.vips().filter(|a| !has(&old, *a)) {
                kernel.add_vip(vip)?;
            }
        }
        let swap = || self.parts.settings.replace_classifier(Arc::clone(&new));
        match &self.parts.prefilter {
            Some(maps) => maps
                .reconfigure(&old, &new, swap, || self.parts.publisher.load())
                .map_err(NodeError::system("the XDP pre-filter's maps"))?,
            None => swap(),
        }
        if sets_kernel {
            for vip in old.vips().filter(|a| !has(&new, *a)) {
                kernel.remove_vip(vip)?;
            }
        }
        Ok(())
    }

    /// A function that reads the frames the NIC's queues dropped so far
    /// (full rings: `imissed`, `af_packet`'s ring drops; no buffer:
    /// `rx_nombuf`): the membership driver reads it every period, and
    /// growth says this node may have missed heartbeats.
    ///
    /// When the ingress guard takes peers' heartbeats apart from the data,
    /// a full ring or queue loses none of them: nothing to report then.
    pub fn input_drops(&self) -> Box<dyn FnMut() -> u64 + Send> {
        if self
            .parts
            .guard
            .as_ref()
            .is_some_and(|g| g.takes_heartbeats())
        {
            return Box::new(|| 0);
        }
        let nic = Arc::clone(&self.parts.nic);
        let rings = Arc::clone(&self.parts.ring_drops);
        Box::new(move || {
            let s = nic.stats();
            s.imissed + s.rx_nombuf + rings.read().unwrap_or(0)
        })
    }

    /// A function that reads the NIC's link through DPDK (for the
    /// `interface = "nic"` checker).
    pub fn nic_link(&self) -> Arc<dyn Fn() -> Option<bool> + Send + Sync> {
        let nic = Arc::clone(&self.parts.nic);
        Arc::new(move || nic.link_up())
    }

    /// Publishes new bucket tables to the lcores.
    pub fn publisher(&self) -> TablePublisher {
        self.parts.publisher.clone()
    }

    pub fn status(&self) -> NodeStatus {
        self.parts.status()
    }

    /// A handle that reads the node's status from any thread.
    pub fn status_reader(&self) -> StatusReader {
        self.parts.clone()
    }

    /// Stops the lcores, undoes the kernel setup, closes the ports (the
    /// TAP interface goes with its port) and cleans the EAL up.
    /// Stops the node (what dropping it does), and says so.
    pub fn shutdown(self) {
        drop(self);
        tracing::info!("stopped");
    }
}

/// One lcore's share of the work: one rx queue of the NIC and of the TAP.
struct Worker {
    queue: u16,
    nic: Arc<Port>,
    kernel: KernelPort,
    pool: Arc<Mempool>,
    classifier: Arc<Classifier>,
    /// Where a reload puts a new classifier and idle policy, and the
    /// generation of ours.
    settings: Arc<LcoreSettings>,
    settings_generation: u64,
    table: TableReader,
    counters: Arc<[LcoreCounters]>,
    switches: Arc<[TableSwitch]>,
    flow_gauges: Arc<[FlowGauges]>,
    /// Flows of the buckets moving in or out, this lcore's only.
    flows: FlowTracker,
    stop: Arc<AtomicBool>,
    policy: IdlePolicy,
    /// What ends an idle wait: this lcore's NIC queue socket and TAP
    /// queue where it has them, and its doorbell, always last.
    wakers: Vec<Waker>,
    /// Whether those are all its sources of work.
    wakeup: Wakeup,
    /// A packet on the NIC ends a wait (its queue's socket is a waker).
    nic_wakes: bool,
    /// The lcores' doorbells (this one's is `self.queue`'s).
    doorbells: Arc<Doorbells>,
    /// An `af_packet` port's way out for large segments, whole.
    packet_tx: Option<PacketTx>,
    /// Whether the kernel's frames come through this lcore (not when the
    /// TAP's direct egress sends them).
    kernel_reads: bool,
    /// The egress balance, where it runs: this lcore measures its load.
    egress_balance: Option<Arc<EgressBalance>>,
    /// Merge the NIC's TCP segments before the TAP (`tap.gro`).
    gro: bool,
}

impl Worker {
    /// Takes the newest classifier and idle policy (a reload changed the
    /// VIPs, the rules or the polling).
    fn take_settings(&mut self) {
        self.settings_generation = self.settings.generation.load(Ordering::Acquire);
        self.classifier = self.settings.classifier();
        self.policy = self.settings.policy();
    }

    fn run(mut self) {
        dpdk::set_timer_slack_ns(1_000);
        let q = self.queue;
        let own_mac = self.classifier.own_mac;
        let mut rx: Vec<Mbuf> = Vec::with_capacity(BURST);
        let mut to_tap: Vec<Mbuf> = Vec::with_capacity(BURST);
        // Room for the frames of a large segment from the kernel.
        let mut to_nic: Vec<Mbuf> = Vec::with_capacity(4 * BURST);
        let mut dropped: Vec<Mbuf> = Vec::with_capacity(BURST);
        self.take_settings();
        let mut backoff = Backoff::new(self.policy, self.wakeup);
        let mut generation = 0;
        let mut upkeep = FlowUpkeep::new();
        let mut from_tap = FromTap::new();
        let mut merger = Merger::<Mbuf>::default();
        let mut tap_found = false;
        let mut polls_since_read = 0u32;
        let mut load = balance::Load::new();
        while !self.stop.load(Ordering::Relaxed) {
            let poll_start = self.egress_balance.is_some().then(std::time::Instant::now);
            if self.settings.generation.load(Ordering::Acquire) != self.settings_generation {
                self.take_settings();
                backoff = Backoff::new(self.policy, self.wakeup);
            }
            let mut c = BurstCounts {
                polls: 1,
                ..Default::default()
            };
            let n = self.nic.rx_burst(q, &mut rx);
            if n > 0 {
                let table = self.table.current();
                note_switch(&self.switches[usize::from(q)], table, &mut generation);
                // Classify the whole burst first: the packets' hash chains
                // then overlap, and the verdict's unpredictable branch is
                // taken after the work instead of in the middle of it.
                let mut verdicts = [Verdict::ToKernel; BURST];
                if let Some(now_ms) =
                    upkeep.tick(&mut self.flows, table, &self.flow_gauges[usize::from(q)])
                {
                    // Buckets move: their packets are decided flow by flow.
                    for (v, m) in verdicts.iter_mut().zip(rx.iter()) {
                        *v = self.classifier.classify_tracked(
                            m.data(),
                            table,
                            Some((&mut self.flows, now_ms)),
                        );
                    }
                } else {
                    for (v, m) in verdicts.iter_mut().zip(rx.iter()) {
                        *v = self.classifier.classify(m.data(), table);
                    }
                }
                c.rx_packets += n as u64;
                for (mut m, verdict) in rx.drain(..).zip(verdicts) {
                    // VIP traffic of an owned bucket or of another node's
                    // (nearly all of it): sorted without a branch on which
                    // (see push_either; `|`, not `||`, for the same reason).
                    // The own MAC is written into both: a dropped frame's
                    // bytes no longer matter.
                    let accept = verdict == Verdict::Accept;
                    if accept | (verdict == Verdict::Drop(DropReason::NotOwned)) {
                        if let Some(dst) = m.data_mut().get_mut(..6) {
                            dst.copy_from_slice(&own_mac);
                        }
                        c.accepted += u64::from(accept);
                        c.dropped_not_owned += u64::from(!accept);
                        dpdk::push_either(m, &mut to_tap, &mut dropped, accept);
                        continue;
                    }
                    match verdict {
                        Verdict::ToKernel => {
                            c.to_kernel += 1;
                            to_tap.push(m);
                        }
                        // Sorted above; the arm keeps this match whole.
                        Verdict::Accept => {
                            c.accepted += 1;
                            m.data_mut()[..6].copy_from_slice(&own_mac);
                            to_tap.push(m);
                        }
                        Verdict::ArpReply { arp_offset, vip } => {
                            let v = self.classifier.vips4[usize::from(vip)];
                            if reply::arp_reply_in_place(
                                m.data_mut(),
                                usize::from(arp_offset),
                                own_mac,
                                v.address,
                                v.mac,
                            ) {
                                c.arp_replies += 1;
                                to_nic.push(m);
                            } else {
                                c.dropped_malformed += 1;
                            }
                        }
                        Verdict::NdpAdvert { ipv6_offset, vip } => {
                            let v = self.classifier.vips6[usize::from(vip)];
                            match reply::ndp_advert_in_place(
                                m.room_mut(),
                                usize::from(ipv6_offset),
                                own_mac,
                                v.address,
                                v.mac,
                            ) {
                                Some(len) if m.set_len(len) => {
                                    c.ndp_replies += 1;
                                    to_nic.push(m);
                                }
                                _ => {
                                    c.dropped_malformed += 1;
                                    dropped.push(m);
                                }
                            }
                        }
                        Verdict::Drop(reason) => {
                            match reason {
                                DropReason::NotOwned => c.dropped_not_owned += 1,
                                DropReason::NoRule => c.dropped_no_rule += 1,
                                DropReason::Malformed(_) => c.dropped_malformed += 1,
                                DropReason::NotForUs => c.dropped_not_for_us += 1,
                                DropReason::NotResponder => c.dropped_not_responder += 1,
                            }
                            dropped.push(m);
                        }
                    }
                }
                dpdk::free_bulk(&mut dropped);
                match &self.kernel {
                    KernelPort::Tap(tap) => {
                        let queue = tap.queue(q);
                        let mut write = |hdr: &VnetHdr, parts: &[&[u8]]| {
                            let written = match parts {
                                [frame] => queue.write(&hdr.to_bytes(), frame),
                                _ => {
                                    c.kernel_merged += parts.len() as u64;
                                    queue.write_gathered(&hdr.to_bytes(), parts)
                                }
                            };
                            if written.is_err() {
                                c.kernel_frames_lost += parts.len() as u64;
                            }
                        };
                        if self.gro && tap.offloads() {
                            // Segments of a flow merged (GRO), verified
                            // first; the rest unflagged: the kernel
                            // verifies every checksum it was not told of.
                            for m in to_tap.drain(..) {
                                merger.push(m, &mut write);
                            }
                            merger.flush(&mut write);
                        } else {
                            for m in to_tap.drain(..) {
                                write(&VnetHdr::default(), &[m.data()]);
                            }
                        }
                    }
                    KernelPort::Port(p) => c.tx_failed += p.tx_burst(q, &mut to_tap) as u64,
                }
            }
            // An empty read of the kernel's queue is a system call (on
            // Herd's TAP): read it when this poll gave the kernel frames
            // (its answers are often queued at once), when the last read
            // found some, and otherwise every fourth poll (under a full NIC
            // burst, only then).
            let gave = c.accepted + c.to_kernel > 0 && n < BURST;
            let due = self.kernel_reads && (gave || tap_found || polls_since_read >= 3);
            let k = match &self.kernel {
                _ if !due => 0,
                KernelPort::Tap(tap) => from_tap.receive(
                    tap.queue(q),
                    &self.pool,
                    &NicOut {
                        nic: &self.nic,
                        queue: q,
                        own_mac: &own_mac,
                        packet_tx: self.packet_tx.as_ref(),
                    },
                    &mut to_nic,
                    &mut c,
                ),
                KernelPort::Port(p) => {
                    let k = p.rx_burst(q, &mut to_nic);
                    // Whatever the kernel sent, it leaves with the NIC's
                    // own MAC: never a VIP's MAC, which must stay
                    // unlearnable by switches.
                    let from = to_nic.len() - k;
                    for m in &mut to_nic[from..] {
                        if let Some(src) = m.data_mut().get_mut(6..12) {
                            src.copy_from_slice(&own_mac);
                        }
                    }
                    k
                }
            };
            if due {
                tap_found = k > 0;
                polls_since_read = 0;
            } else {
                polls_since_read += 1;
            }
            c.from_kernel += k as u64;
            c.tx_failed += self.nic.tx_burst(q, &mut to_nic) as u64;
            // The poll's end, when the balance measures it: the spin
            // needs no second reading of the clock.
            let mut poll_end = None;
            if let (Some(from), Some(eb)) = (poll_start, &self.egress_balance) {
                let to = std::time::Instant::now();
                poll_end = Some(to);
                if let Some(busy) = load.after_poll(from, to, n + k > 0) {
                    eb.after_window(usize::from(q), busy, to);
                }
            }
            // With a NIC that wakes a waiting lcore, only a VIP's traffic
            // this node serves and the kernel's frames keep it polling (a
            // request in flight: its reply, or the client's next packet,
            // is near). A burst this node only dropped sends it back to
            // waiting, so the nodes that are not the flow's owner leave
            // the CPU to the one that serves it; so does one it only
            // answered (ARP, NDP) or handed to the kernel for the node
            // itself (heartbeats, every peer's every 25 ms: a spin for
            // each would cost a 64-node farm's lcore a quarter of a CPU),
            // whose answer, if any, wakes it from the TAP.
            let served = k + c.accepted as usize;
            let idle = if self.nic_wakes && served == 0 && n > 0 && n < BURST {
                backoff.after_drops_only()
            } else {
                backoff.after_poll(n + k, || poll_end.unwrap_or_else(std::time::Instant::now))
            };
            match idle {
                Idle::Sleep(d) => {
                    // An idle lcore still switches tables before it sleeps.
                    let table = self.table.current();
                    note_switch(&self.switches[usize::from(q)], table, &mut generation);
                    upkeep.tick(&mut self.flows, table, &self.flow_gauges[usize::from(q)]);
                    c.idle_sleeps += 1;
                    // What this poll did is shown before the wait, which
                    // may be long.
                    self.counters[usize::from(q)].add(&c);
                    // A packet from the wire or the kernel, or the doorbell,
                    // ends it.
                    let ready = wake::wait_readable(&self.wakers, d);
                    let doorbell = 1 << (self.wakers.len() - 1);
                    if ready & doorbell != 0 {
                        self.doorbells.get(usize::from(q)).clear();
                    }
                }
                Idle::Poll => self.counters[usize::from(q)].add(&c),
            }
        }
    }
}

// A run of the merger is one gathered TAP write.
const _: () = assert!(gro::MAX_SEGMENTS <= tap::MAX_PARTS);

/// The merger holds the NIC's frames for the kernel as mbufs.
impl gro::Frame for Mbuf {
    fn bytes(&self) -> &[u8] {
        self.data()
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        self.data_mut()
    }
}

/// What an lcore needs to take frames from Herd's TAP: a spare mbuf to
/// read into and room for the rest of a large segment.
struct FromTap {
    spare: Option<Mbuf>,
    /// A large segment, contiguous: its first bytes are copied here from
    /// the mbuf, the rest is read here directly.
    segment: Vec<u8>,
}

impl FromTap {
    /// Room for the largest TSO segment (64 KiB of IP) and its headers.
    const SEGMENT_ROOM: usize = 68 * 1024;

    fn new() -> Self {
        FromTap {
            spare: None,
            segment: vec![0; Self::SEGMENT_ROOM],
        }
    }

    /// Reads up to a burst of frames from the kernel into `to_nic`,
    /// cutting large segments (or handing them whole to `packet_tx`),
    /// completing checksums and giving each the NIC's own MAC as source;
    /// sends to the NIC whenever `to_nic` is full. Returns the frames
    /// taken from the kernel.
    fn receive(
        &mut self,
        tap: &TapQueue,
        pool: &Mempool,
        out: &NicOut<'_>,
        to_nic: &mut Vec<Mbuf>,
        c: &mut BurstCounts,
    ) -> usize {
        let mut taken = 0;
        for _ in 0..BURST {
            let Some(mut m) = self.spare.take().or_else(|| pool.alloc()) else {
                c.kernel_frames_lost += 1;
                break;
            };
            let mut raw_hdr = [0u8; VNET_HDR_LEN];
            let head_len = m.room_mut().len();
            let len = match tap.read(&mut raw_hdr, m.room_mut(), &mut self.segment[head_len..]) {
                Ok(Some(len)) => len,
                Ok(None) => {
                    self.spare = Some(m);
                    break;
                }
                Err(_) => {
                    c.kernel_frames_lost += 1;
                    self.spare = Some(m);
                    break;
                }
            };
            let hdr = VnetHdr::parse(&raw_hdr);
            if len >= self.segment.len() {
                // Filled every byte offered: possibly cut short.
                c.kernel_frames_lost += 1;
                self.spare = Some(m);
                continue;
            }
            if hdr.gso_type == GSO_NONE {
                let ok = len <= head_len
                    && m.set_len(len)
                    && (hdr.flags & F_NEEDS_CSUM == 0
                        || offload::complete_checksum(m.data_mut(), &hdr).is_ok());
                if ok {
                    out.push(m, to_nic, c);
                    taken += 1;
                } else {
                    c.kernel_frames_lost += 1;
                    self.spare = Some(m);
                }
                continue;
            }
            c.kernel_segments += 1;
            let head = len.min(head_len);
            if let Some(packet_tx) = out.packet_tx {
                // What waits for the NIC goes first: a flow's frames
                // leave in order.
                c.tx_failed += out.nic.tx_burst(out.queue, to_nic) as u64;
                let room = m.room_mut();
                room[6..12].copy_from_slice(out.own_mac);
                match packet_tx.send(
                    &raw_hdr,
                    &room[..head],
                    &self.segment[head_len..len.max(head_len)],
                ) {
                    Ok(()) => taken += 1,
                    Err(_) => c.kernel_frames_lost += 1,
                }
                self.spare = Some(m);
                continue;
            }
            self.segment[..head].copy_from_slice(&m.room_mut()[..head]);
            let Ok(seg) = Segmenter::new(&self.segment[..len], &hdr) else {
                c.kernel_frames_lost += 1;
                self.spare = Some(m);
                continue;
            };
            let count = seg.count();
            let mut next = Some(m);
            for i in 0..count {
                let Some(mut frame) = next.take().or_else(|| pool.alloc()) else {
                    c.kernel_frames_lost += (count - i) as u64;
                    break;
                };
                match seg.write(i, frame.room_mut()) {
                    Some(n) if frame.set_len(n) => {
                        out.push(frame, to_nic, c);
                        taken += 1;
                    }
                    _ => c.kernel_frames_lost += 1,
                }
            }
        }
        taken
    }
}

/// Where an lcore's frames from the kernel leave.
struct NicOut<'a> {
    nic: &'a Port,
    queue: u16,
    own_mac: &'a [u8; 6],
    /// Large segments leave whole here (an `af_packet` port's TSO).
    packet_tx: Option<&'a PacketTx>,
}

impl NicOut<'_> {
    /// Queues `m` for the NIC with the NIC's own MAC as source (never a
    /// VIP's MAC, which must stay unlearnable by switches), sending the
    /// queue first if it is full.
    #[inline]
    fn push(&self, mut m: Mbuf, to_nic: &mut Vec<Mbuf>, c: &mut BurstCounts) {
        if to_nic.len() == to_nic.capacity() {
            c.tx_failed += self.nic.tx_burst(self.queue, to_nic) as u64;
        }
        if let Some(src) = m.data_mut().get_mut(6..12) {
            src.copy_from_slice(self.own_mac);
        }
        to_nic.push(m);
    }
}

/// Sweeps an lcore's flow tracker about once a second while buckets move,
/// and empties it when they stop moving.
struct FlowUpkeep {
    /// The origin of the tracker's millisecond clock.
    clock: std::time::Instant,
    tracking: bool,
    last_sweep_ms: u32,
}

impl FlowUpkeep {
    const EVERY_MS: u32 = 1000;

    fn new() -> Self {
        FlowUpkeep {
            clock: std::time::Instant::now(),
            tracking: false,
            last_sweep_ms: 0,
        }
    }

    /// Keeps the tracker in step with `table`; the time in milliseconds
    /// when the table's moving buckets need the tracker. Nothing moving
    /// and nothing tracked: one flag test, no clock read.
    #[inline]
    fn tick(
        &mut self,
        flows: &mut FlowTracker,
        table: &BucketTable,
        gauges: &FlowGauges,
    ) -> Option<u32> {
        let moving = table.has_moves();
        if !moving && !self.tracking {
            return None;
        }
        let now_ms = self.clock.elapsed().as_millis() as u32;
        if moving != self.tracking || now_ms.wrapping_sub(self.last_sweep_ms) >= Self::EVERY_MS {
            flows.sweep(now_ms, table);
            gauges.record(flows.counts());
            self.last_sweep_ms = now_ms;
            self.tracking = moving;
        }
        moving.then_some(now_ms)
    }
}

/// Records when an lcore first uses a newly published table.
#[inline]
fn note_switch(switch: &TableSwitch, table: &BucketTable, seen: &mut u64) {
    if table.generation() != *seen {
        *seen = table.generation();
        let ns = table
            .published_at()
            .map_or(0, |p| p.elapsed().as_nanos() as u64);
        switch.record(*seen, ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        Config::from_toml(include_str!("../../examples/node.toml")).expect("the example is valid")
    }

    #[test]
    fn an_af_packet_port_has_deep_rings_and_a_queue_pair_per_lcore() {
        let c = example();
        assert_eq!(c.port.driver, Driver::AfPacket);
        let args = eal_args(&c, None);
        let vdev = args
            .iter()
            .find(|a| a.starts_with("--vdev=net_af_packet0,"))
            .expect("an af_packet vdev");
        let iface = c.port.interface.as_deref().unwrap();
        assert!(vdev.contains(&format!("iface={iface},")), "{vdev}");
        assert!(
            vdev.contains(&format!("qpairs={},", c.port.queues)),
            "{vdev}"
        );
        assert!(
            vdev.ends_with(&format!("framecnt={AF_PACKET_RING_FRAMES}")),
            "{vdev}"
        );
        assert!(args.iter().any(|a| a == "--no-pci"));
    }

    #[test]
    fn errors_name_the_key_and_what_refused_it() {
        let e = NodeError::Refused {
            key: "tap.direct_egress",
            value: "true".into(),
            refusal: "the kernel does not take the tc program on herd0: EPERM".into(),
        };
        assert_eq!(
            e.to_string(),
            "tap.direct_egress = true, but the kernel does not take the tc program on herd0: EPERM"
        );
        let e = NodeError::system("the TAP herd0")(std::io::Error::other("no such device"));
        assert_eq!(e.to_string(), "the TAP herd0: no such device");
        assert_eq!(
            NodeError::TooFewLcores {
                workers: 1,
                queues: 2
            }
            .to_string(),
            "1 worker lcores for 2 queues"
        );
        assert!(NodeError::NoVhostNet.to_string().contains(VHOST_NET));
    }
}
