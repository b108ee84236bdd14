//! Herd's node configuration: the TOML schema (serde) and its validation.
//!
//! [`Config::from_toml`] parses and validates in one step: a node never
//! starts half-configured, and every error names the key that is wrong.
//! A complete example is `examples/node.toml` at the repository root.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

mod health;
mod ranges;
pub mod reload;
pub mod state;
pub use health::{Checker, CheckerAction, CheckerKind, Health, HttpUrl, Scripts};
pub use ranges::BucketRanges;

/// A configuration error: the key (dotted path) and what is wrong with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Syntax(String),
    #[error("{key}: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.to_string(),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub node: NodeIdentity,
    pub farm: Farm,
    #[serde(default)]
    pub rules: Vec<Rule>,
    pub port: Port,
    #[serde(default)]
    pub tap: Tap,
    #[serde(default)]
    pub dpdk: Dpdk,
    #[serde(default)]
    pub polling: Polling,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub membership: Membership,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub scripts: Scripts,
    #[serde(default)]
    pub checkers: Vec<Checker>,
    #[serde(default)]
    pub continuity: Continuity,
    #[serde(default)]
    pub log: Log,
}

/// The node's log.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// What to log: a level (`info`), or comma-separated directives of
    /// `target=level` (`info,membership=debug`). Unset: `info`. The
    /// `HERD_LOG` environment variable, when set, wins.
    #[serde(default)]
    pub level: Option<String>,
}

impl Log {
    /// The level directives in force.
    pub fn directives(&self) -> &str {
        self.level.as_deref().unwrap_or("info")
    }
}

/// Checks `info,membership=debug`-style directives.
fn valid_log_directives(s: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for d in s.split(',') {
        let d = d.trim();
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, d),
        };
        if let Some(t) = target {
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                return Err(format!(
                    "{d:?}: a target is a module path (membership, fastpath::node)"
                ));
            }
        }
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("{d:?}: the level is one of {}", LEVELS.join(", ")));
        }
    }
    Ok(())
}

/// Connection continuity when buckets move between live nodes (docs/design.md §5).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Continuity {
    /// Off: a bucket moves at once and the old owner's connections in it
    /// break (what CLUSTERIP does).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A move ends when the old owner holds no connection of its buckets,
    /// or after this long (then the connections left break).
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// A tracked flow without a packet for this long is forgotten; a client
    /// idle for this long no longer holds its server during a move.
    #[serde(default = "default_flow_idle_timeout_ms")]
    pub flow_idle_timeout_ms: u32,
    /// Flows tracked per lcore (memory is reserved for them at start).
    #[serde(default = "default_max_flows")]
    pub max_flows: u32,
}

fn default_drain_timeout_ms() -> u64 {
    300_000
}
fn default_flow_idle_timeout_ms() -> u32 {
    30_000
}
fn default_max_flows() -> u32 {
    262_144
}

impl Default for Continuity {
    fn default() -> Self {
        Continuity {
            enabled: true,
            drain_timeout_ms: default_drain_timeout_ms(),
            flow_idle_timeout_ms: default_flow_idle_timeout_ms(),
            max_flows: default_max_flows(),
        }
    }
}

/// Which of the farm's nodes this one is, and where it keeps what must
/// survive a restart.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeIdentity {
    pub id: u16,
    /// Where the node keeps its state across restarts (the weight set with
    /// `herd weight`; see [`state::KeptState`]).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/herd")
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Farm {
    pub name: String,
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub ownership: Ownership,
    pub vips: Vec<IpAddr>,
    pub nodes: Vec<FarmNode>,
}

fn default_buckets() -> u32 {
    4096
}

/// How VIP traffic reaches every node (docs/design.md §2).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// The VIP resolves to a locally administered unicast MAC that is never
    /// a source address, so switches flood it (SafeKit vmac_invisible).
    #[default]
    Vmac,
    /// The VIP resolves to a multicast MAC (NLB multicast, CLUSTERIP).
    Multicast,
}

/// Who owns which bucket.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// Fixed by `farm.nodes[].buckets`.
    #[default]
    Static,
    /// Decided by the membership protocol from who is alive (`[membership]`).
    Membership,
}

/// What a side of a partition does (docs/design.md §3).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SplitBrain {
    /// Each side serves all buckets (SafeKit's default).
    #[default]
    ServeAll,
    /// A side with at most half of the nodes withdraws.
    Majority,
    /// While a node is missing, a side that cannot ping `witness` withdraws.
    Witness,
}

/// The membership protocol (used with `farm.ownership = "membership"`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    #[serde(default = "default_period_ms")]
    pub period_ms: u32,
    #[serde(default = "default_dead_after_ms")]
    pub dead_after_ms: u32,
    /// How long a peer unheard since this node's own input overflowed (a
    /// flood) stays alive when no live peer says it died.
    #[serde(default = "default_overflow_hold_ms")]
    pub overflow_hold_ms: u32,
    /// The farm's shared key (at least 16 bytes); every heartbeat is
    /// authenticated with it.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// A keyring instead of `key_file`, for a key rotation: heartbeats are
    /// sent with the first key and accepted with any (see docs/upgrades.md).
    #[serde(default)]
    pub key_files: Vec<PathBuf>,
    #[serde(default)]
    pub split_brain: SplitBrain,
    /// The address the `witness` policy pings.
    #[serde(default)]
    pub witness: Option<IpAddr>,
    /// The newest heartbeat protocol version this node speaks. Unset: the
    /// build's newest. The previous version holds an upgraded node at what
    /// the farm's older nodes speak (a reload releases it; see
    /// docs/upgrades.md).
    #[serde(default)]
    pub protocol_version: Option<u8>,
    /// The heartbeat thread's real-time priority (SCHED_FIFO, 1–99) with
    /// the process's memory locked, as Corosync runs: heartbeats go out
    /// and are read on time on a host whose CPUs are saturated. 0: normal
    /// scheduling, nothing locked.
    #[serde(default = "default_realtime_priority")]
    pub realtime_priority: u8,
}

fn default_realtime_priority() -> u8 {
    10
}

impl Membership {
    /// The key files, the sending key first (`key_file`, or `key_files`).
    pub fn key_paths(&self) -> Vec<&Path> {
        match &self.key_file {
            Some(k) => vec![k.as_path()],
            None => self.key_files.iter().map(PathBuf::as_path).collect(),
        }
    }
}

fn default_period_ms() -> u32 {
    25
}
fn default_dead_after_ms() -> u32 {
    200
}
fn default_overflow_hold_ms() -> u32 {
    1000
}

impl Default for Membership {
    fn default() -> Self {
        Membership {
            period_ms: default_period_ms(),
            dead_after_ms: default_dead_after_ms(),
            overflow_hold_ms: default_overflow_hold_ms(),
            key_file: None,
            key_files: Vec::new(),
            split_brain: SplitBrain::default(),
            witness: None,
            protocol_version: None,
            realtime_priority: default_realtime_priority(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FarmNode {
    pub id: u16,
    pub name: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Static ownership: bucket ranges such as "0-2047,4000".
    #[serde(default)]
    pub buckets: Option<String>,
    /// Membership: the node's heartbeat address (ip:port) on each
    /// heartbeat network, the same networks in the same order on every node.
    #[serde(default)]
    pub heartbeat: Vec<std::net::SocketAddr>,
}

fn default_weight() -> u32 {
    1
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// How a rule keys its traffic (SafeKit's `on_addr` / `on_port`): the
/// one type the config, the packet decision and the census share.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// One client always lands on one server (stateful applications).
    ClientIp,
    /// Spread per TCP/UDP session (stateless applications).
    ClientIpPort,
}

/// VIP traffic to (protocol, port) is shared by `affinity`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub protocol: Protocol,
    pub port: Option<u16>,
    pub affinity: Affinity,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    /// A Linux interface through an AF_PACKET socket (`net_af_packet`).
    AfPacket,
    /// A Linux interface through AF_XDP (`net_af_xdp`).
    AfXdp,
    /// A NIC bound to vfio-pci, by PCI address.
    Pci,
    /// Any DPDK virtual device, given as its full devargs (benchmarks).
    Vdev,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub driver: Driver,
    /// Linux interface, for `af_packet` and `af_xdp`.
    pub interface: Option<String>,
    /// PCI address, for `pci`.
    pub pci: Option<String>,
    /// Devargs, for `vdev`.
    pub vdev: Option<String>,
    /// Rx/tx queues; one lcore polls each.
    #[serde(default = "default_queues")]
    pub queues: u16,
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    /// With `af_xdp`: an XDP program on the port decides the common frame
    /// in the driver (owned bucket → the kernel's stack, another node's →
    /// drop, the rest → the fastpath). Unset: on where the kernel allows
    /// it (Herd says so in its log where it does not); `true`: required
    /// (a start fails with the kernel's reason); `false`: off.
    #[serde(default)]
    pub xdp_prefilter: Option<bool>,
    /// How the pre-filter attaches: `native` (in the driver's receive) or
    /// `generic` (in the kernel's receive path, after RPS). Unset: generic
    /// on a veth, native on any other interface (see [`XdpMode`]).
    #[serde(default)]
    pub xdp_mode: Option<XdpMode>,
}

/// Where an XDP program runs on an interface.
///
/// On a NIC, `Native` is the fast one: the driver runs the program on its
/// own buffers in the softirq of its interrupt. A veth has no interrupt and
/// no buffers of its own: its native XDP moves the peer's frames through a
/// ring into NAPI (a thread to wake, or the sender's CPU) and copies each
/// one into a page first, where `Generic` runs the program in the veth's
/// ordinary receive path, on the CPU that receive is steered to (RPS), as a
/// NIC's interrupt would be. Measured in `perf/RESULTS.md` (session 11).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum XdpMode {
    Native,
    Generic,
}

impl XdpMode {
    /// The mode for unset `port.xdp_mode` on an interface of kind `kind`
    /// (`ip -d link`'s `info_kind`, none for a physical NIC's driver).
    pub fn for_interface_kind(kind: Option<&str>) -> XdpMode {
        match kind {
            Some("veth") => XdpMode::Generic,
            _ => XdpMode::Native,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

fn default_queues() -> u16 {
    1
}
fn default_descriptors() -> u16 {
    1024
}

/// A route the kernel side of the node needs (e.g. back to the clients).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub to: String,
    pub via: IpAddr,
}

/// The exception path: the TAP interface through which the kernel receives
/// accepted VIP traffic and everything not for the fastpath.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tap {
    #[serde(default = "default_tap_name")]
    pub name: String,
    /// Addresses of the node itself ("198.18.0.11/24"), put on the TAP.
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Set up the kernel side (addresses, routes, the VIPs on loopback, ARP
    /// sysctls, and the NIC's kernel interface silenced). On by default.
    #[serde(default = "default_true")]
    pub configure_kernel: bool,
    /// Let the kernel hand over large TCP segments with checksums to fill
    /// in (TSO4/TSO6, checksum offload), cut and summed by the fastpath.
    /// On by default; off makes the kernel segment and sum itself.
    #[serde(default = "default_true")]
    pub offloads: bool,
    /// Merge consecutive TCP segments of a flow, taken from the NIC in one
    /// burst, into one large segment for the kernel (GRO), each verified
    /// first. On by default; needs `offloads`.
    #[serde(default = "default_true")]
    pub gro: bool,
    /// What carries the exception path: Herd's own TAP (`tap`, the
    /// default) or DPDK's virtio-user over the kernel's vhost-net
    /// (`virtio-user`), whose kernel thread then does the kernel's part
    /// of each packet instead of the lcore. Needs `/dev/vhost-net`.
    #[serde(default)]
    pub backend: TapBackend,
    /// Replace the TAP by another DPDK vdev (benchmarks only).
    #[serde(default)]
    pub vdev: Option<String>,
    /// What the kernel sends on the TAP leaves through the NIC's own
    /// kernel interface directly (a tc program on the TAP redirects it),
    /// with that interface's offloads, instead of through an lcore. Only
    /// where the kernel keeps the NIC (`af_xdp`, `af_packet`): unset, on
    /// where the kernel allows it (Herd says so in its log where it does
    /// not), for every frame with `af_xdp` and for the flows the lcores
    /// have no room to send with `af_packet` (the egress balance);
    /// `true`: every frame, required (a start fails with the kernel's
    /// reason); `false`: off.
    #[serde(default)]
    pub direct_egress: Option<bool>,
}

/// See [`Tap::backend`].
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum TapBackend {
    #[default]
    Tap,
    VirtioUser,
}

fn default_tap_name() -> String {
    "herd0".into()
}
pub(crate) fn default_true() -> bool {
    true
}

impl Default for Tap {
    fn default() -> Self {
        Tap {
            name: default_tap_name(),
            addresses: Vec::new(),
            routes: Vec::new(),
            configure_kernel: true,
            offloads: true,
            gro: true,
            backend: TapBackend::Tap,
            vdev: None,
            direct_egress: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dpdk {
    /// CPUs the lcores may run on, as a list ("0-1", "2,3"). Empty: all.
    #[serde(default)]
    pub cpus: Option<String>,
    /// Use hugepages (hugetlbfs must be mounted); otherwise `--no-huge`.
    #[serde(default)]
    pub hugepages: bool,
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Keeps several DPDK processes on one machine apart.
    #[serde(default)]
    pub file_prefix: Option<String>,
    #[serde(default = "default_mbufs")]
    pub mbufs: u32,
    /// Passed to the EAL as they are, after Herd's own arguments.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

fn default_memory_mb() -> u32 {
    256
}
fn default_mbufs() -> u32 {
    8191
}

impl Default for Dpdk {
    fn default() -> Self {
        Dpdk {
            cpus: None,
            hugepages: false,
            memory_mb: default_memory_mb(),
            file_prefix: None,
            mbufs: default_mbufs(),
            extra_args: Vec::new(),
        }
    }
}

/// Adaptive polling: after work an lcore keeps polling for `spin_us`,
/// then waits for work. Where a packet or the control plane wakes
/// it (`af_packet`, `af_xdp`), the wait has no timer to speak of; where
/// only time does (PCI, vdev), it sleeps `min_sleep_us`, doubling up to
/// `max_sleep_us`, which bounds the first packet's wait after idle.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Polling {
    #[serde(default = "default_spin_us")]
    pub spin_us: u32,
    #[serde(default = "default_min_sleep_us")]
    pub min_sleep_us: u32,
    #[serde(default = "default_max_sleep_us")]
    pub max_sleep_us: u32,
}

/// 100 µs: a one-connection round trip through the lab's veth, nginx and
/// the client is 30-60 µs; a spin that ends before the next request
/// makes the lcore's wake-up (tens of µs on a virtual CPU) part of every
/// request (perf/RESULTS.md, session 14).
fn default_spin_us() -> u32 {
    100
}
fn default_min_sleep_us() -> u32 {
    10
}
/// 1.5 ms: at 1 ms an idle lcore's ~1000 wake-ups a second cost 2–3.5 %
/// of a virtual CPU, at the edge of the 3 % goal (perf/RESULTS.md).
fn default_max_sleep_us() -> u32 {
    1500
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            spin_us: default_spin_us(),
            min_sleep_us: default_min_sleep_us(),
            max_sleep_us: default_max_sleep_us(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Control {
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Optional HTTP listener for `/health` and `/metrics`.
    #[serde(default)]
    pub http: Option<std::net::SocketAddr>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/herd/herd.sock")
}

impl Default for Control {
    fn default() -> Self {
        Control {
            socket: default_socket(),
            http: None,
        }
    }
}

/// Where VIP traffic of one bucket goes: the validated, static ownership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticOwnership {
    /// `owners[b]` is the id of the node owning bucket `b`.
    pub owners: Vec<u16>,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        // serde_path_to_error: a value of the wrong type or syntax is
        // reported with its dotted key (`checkers[0].address: …`).
        let de = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let msg = syntax_message(e.inner());
            if path.is_empty() || path == "." {
                ConfigError::Syntax(msg)
            } else {
                ConfigError::Invalid {
                    key: path,
                    reason: msg,
                }
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let farm = &self.farm;
        if farm.name.trim().is_empty() {
            return Err(invalid("farm.name", "must not be empty"));
        }
        if !self.node.state_dir.is_absolute() {
            return Err(invalid(
                "node.state_dir",
                format!("{:?} is not an absolute path", self.node.state_dir),
            ));
        }
        if !(1..=1 << 20).contains(&farm.buckets) {
            return Err(invalid(
                "farm.buckets",
                format!("{} is out of range 1..=1048576", farm.buckets),
            ));
        }
        if farm.vips.is_empty() || farm.vips.len() > 64 {
            return Err(invalid(
                "farm.vips",
                format!("a farm has 1 to 64 VIPs, not {}", farm.vips.len()),
            ));
        }
        let mut seen_vips = BTreeSet::new();
        for (i, vip) in farm.vips.iter().enumerate() {
            let key = format!("farm.vips[{i}]");
            if vip.is_unspecified() || vip.is_multicast() || vip.is_loopback() {
                return Err(invalid(key, format!("{vip} cannot be a VIP")));
            }
            if let IpAddr::V4(v4) = vip {
                if v4.is_broadcast() {
                    return Err(invalid(key, format!("{vip} cannot be a VIP")));
                }
            }
            if !seen_vips.insert(*vip) {
                return Err(invalid(key, format!("duplicate VIP {vip}")));
            }
        }
        // One node is allowed for benchmarks and trials; a farm has 2 to 64.
        if !(1..=64).contains(&farm.nodes.len()) {
            return Err(invalid(
                "farm.nodes",
                format!("a farm has 1 to 64 nodes, not {}", farm.nodes.len()),
            ));
        }
        let mut ids = BTreeSet::new();
        let mut names = BTreeSet::new();
        for (i, n) in farm.nodes.iter().enumerate() {
            if !ids.insert(n.id) {
                return Err(invalid(
                    format!("farm.nodes[{i}].id"),
                    format!("duplicate node id {}", n.id),
                ));
            }
            if n.name.trim().is_empty() {
                return Err(invalid(
                    format!("farm.nodes[{i}].name"),
                    "must not be empty",
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(invalid(
                    format!("farm.nodes[{i}].name"),
                    format!("duplicate node name {:?}", n.name),
                ));
            }
        }
        if !ids.contains(&self.node.id) {
            return Err(invalid(
                "node.id",
                format!("{} is not one of farm.nodes[].id", self.node.id),
            ));
        }
        health::validate(&self.health, &self.scripts, &self.checkers)?;
        if let Some(level) = &self.log.level {
            valid_log_directives(level).map_err(|e| invalid("log.level", e))?;
        }
        let c = &self.continuity;
        if c.flow_idle_timeout_ms < 100 || c.flow_idle_timeout_ms > 3_600_000 {
            return Err(invalid(
                "continuity.flow_idle_timeout_ms",
                format!("{} is out of range 100..=3600000", c.flow_idle_timeout_ms),
            ));
        }
        if c.drain_timeout_ms > 86_400_000 {
            return Err(invalid(
                "continuity.drain_timeout_ms",
                format!("{} is over a day (86400000)", c.drain_timeout_ms),
            ));
        }
        if !(1..=1 << 24).contains(&c.max_flows) {
            return Err(invalid(
                "continuity.max_flows",
                format!("{} is out of range 1..=16777216", c.max_flows),
            ));
        }
        match farm.ownership {
            Ownership::Static => {
                self.static_ownership()?;
            }
            Ownership::Membership => self.validate_membership()?,
        }

        let mut rule_keys = BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            let Some(port) = r.port else {
                return Err(invalid(
                    format!("rules[{i}].port"),
                    "missing: a rule needs a port",
                ));
            };
            if port == 0 {
                return Err(invalid(format!("rules[{i}].port"), "port 0 is not a port"));
            }
            if !rule_keys.insert((r.protocol as u8, port)) {
                return Err(invalid(
                    format!("rules[{i}]"),
                    format!("a rule for {:?} port {port} already exists", r.protocol),
                ));
            }
        }

        let port = &self.port;
        match port.driver {
            Driver::AfPacket | Driver::AfXdp => {
                let name = port.interface.as_deref().unwrap_or("");
                if !valid_ifname(name) {
                    return Err(invalid(
                        "port.interface",
                        format!("{name:?} is not a Linux interface name (needed by this driver)"),
                    ));
                }
            }
            Driver::Pci => {
                let pci = port.pci.as_deref().unwrap_or("");
                if !valid_pci(pci) {
                    return Err(invalid(
                        "port.pci",
                        format!("{pci:?} is not a PCI address like 0000:03:00.0"),
                    ));
                }
            }
            Driver::Vdev => {
                if port.vdev.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return Err(invalid(
                        "port.vdev",
                        "missing: driver \"vdev\" needs the device's devargs",
                    ));
                }
            }
        }
        if port.xdp_prefilter == Some(true) && port.driver != Driver::AfXdp {
            return Err(invalid(
                "port.xdp_prefilter",
                "needs driver \"af_xdp\" (the XDP program runs on a kernel-owned NIC)",
            ));
        }
        if port.xdp_mode.is_some()
            && (port.driver != Driver::AfXdp || port.xdp_prefilter == Some(false))
        {
            return Err(invalid(
                "port.xdp_mode",
                "says how the XDP pre-filter attaches: it needs driver \"af_xdp\" with the pre-filter on",
            ));
        }
        if !(1..=16).contains(&port.queues) {
            return Err(invalid(
                "port.queues",
                format!("{} is out of range 1..=16", port.queues),
            ));
        }
        for (key, n) in [
            ("port.rx_descriptors", port.rx_descriptors),
            ("port.tx_descriptors", port.tx_descriptors),
        ] {
            if !(64..=8192).contains(&n) || !n.is_power_of_two() {
                return Err(invalid(
                    key,
                    format!("{n} must be a power of two in 64..=8192"),
                ));
            }
        }

        if !valid_ifname(&self.tap.name) {
            return Err(invalid(
                "tap.name",
                format!("{:?} is not a Linux interface name", self.tap.name),
            ));
        }
        if self.tap.backend == TapBackend::VirtioUser && self.tap.vdev.is_some() {
            return Err(invalid(
                "tap.backend",
                "\"virtio-user\" and tap.vdev both name the exception path: set one",
            ));
        }
        if self.tap.direct_egress == Some(true) {
            let kernel_keeps_nic = matches!(self.port.driver, Driver::AfXdp | Driver::AfPacket);
            if !kernel_keeps_nic || self.tap.backend != TapBackend::Tap || self.tap.vdev.is_some() {
                return Err(invalid(
                    "tap.direct_egress",
                    "needs Herd's own TAP (no tap.vdev, backend \"tap\") and a NIC the kernel keeps (driver \"af_xdp\" or \"af_packet\")",
                ));
            }
        }
        for (i, a) in self.tap.addresses.iter().enumerate() {
            parse_prefix(a).map_err(|e| invalid(format!("tap.addresses[{i}]"), e))?;
        }
        for (i, r) in self.tap.routes.iter().enumerate() {
            parse_prefix(&r.to).map_err(|e| invalid(format!("tap.routes[{i}].to"), e))?;
        }

        if let Some(cpus) = &self.dpdk.cpus {
            parse_cpu_list(cpus).map_err(|e| invalid("dpdk.cpus", e))?;
        }
        if self.dpdk.memory_mb < 64 {
            return Err(invalid("dpdk.memory_mb", "at least 64 MB are needed"));
        }
        if self.dpdk.mbufs < 1024 {
            return Err(invalid("dpdk.mbufs", "at least 1024 mbufs are needed"));
        }
        if let Some(p) = &self.dpdk.file_prefix {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    "dpdk.file_prefix",
                    format!("{p:?}: use letters, digits, '-' and '_'"),
                ));
            }
        }

        let poll = &self.polling;
        if poll.min_sleep_us == 0 || poll.min_sleep_us > poll.max_sleep_us {
            return Err(invalid(
                "polling.min_sleep_us",
                "must be > 0 and <= polling.max_sleep_us",
            ));
        }
        if poll.max_sleep_us > 100_000 {
            return Err(invalid(
                "polling.max_sleep_us",
                "more than 100 ms would make the first packet after idle wait too long",
            ));
        }
        if self.control.socket.as_os_str().is_empty() {
            return Err(invalid("control.socket", "must not be empty"));
        }
        Ok(())
    }

    fn validate_membership(&self) -> Result<(), ConfigError> {
        let networks = self.farm.nodes.first().map_or(0, |n| n.heartbeat.len());
        for (i, n) in self.farm.nodes.iter().enumerate() {
            let key = format!("farm.nodes[{i}].heartbeat");
            if n.heartbeat.is_empty() {
                return Err(invalid(
                    key,
                    "missing: membership needs each node's heartbeat address on each network",
                ));
            }
            if n.heartbeat.len() != networks {
                return Err(invalid(key, format!("{} addresses, but farm.nodes[0] has {networks}: every node is on the same heartbeat networks", n.heartbeat.len())));
            }
        }
        if networks > 8 {
            return Err(invalid(
                "farm.nodes[0].heartbeat",
                "at most 8 heartbeat networks",
            ));
        }
        let m = &self.membership;
        if m.period_ms == 0 || m.period_ms > 10_000 {
            return Err(invalid(
                "membership.period_ms",
                format!("{} is out of range 1..=10000", m.period_ms),
            ));
        }
        if m.dead_after_ms < 2 * m.period_ms || m.dead_after_ms > 60_000 {
            return Err(invalid(
                "membership.dead_after_ms",
                format!(
                    "{} must be at least two periods ({}) and at most 60000",
                    m.dead_after_ms,
                    2 * m.period_ms
                ),
            ));
        }
        if m.overflow_hold_ms < m.dead_after_ms || m.overflow_hold_ms > 60_000 {
            return Err(invalid(
                "membership.overflow_hold_ms",
                format!(
                    "{} must be at least dead_after_ms ({}) and at most 60000",
                    m.overflow_hold_ms, m.dead_after_ms
                ),
            ));
        }
        match (&m.key_file, m.key_files.is_empty()) {
            (None, true) => {
                return Err(invalid(
                    "membership.key_file",
                    "missing: membership needs the farm's shared key file",
                ))
            }
            (Some(_), false) => {
                return Err(invalid(
                    "membership.key_files",
                    "set key_file or key_files, not both",
                ))
            }
            _ => {}
        }
        if m.key_files.len() > 8 {
            return Err(invalid("membership.key_files", "at most 8 keys"));
        }
        for (i, path) in m.key_paths().iter().enumerate() {
            let key = match m.key_file {
                Some(_) => "membership.key_file".to_string(),
                None => format!("membership.key_files[{i}]"),
            };
            let bytes = std::fs::read(path)
                .map_err(|e| invalid(&key, format!("cannot read {}: {e}", path.display())))?;
            if bytes.len() < 16 {
                return Err(invalid(
                    &key,
                    format!(
                        "{} holds {} bytes; a key has at least 16",
                        path.display(),
                        bytes.len()
                    ),
                ));
            }
        }
        if m.realtime_priority > 99 {
            return Err(invalid(
                "membership.realtime_priority",
                format!(
                    "{}: a SCHED_FIFO priority is 1..=99 (0: not real-time)",
                    m.realtime_priority
                ),
            ));
        }
        if m.split_brain == SplitBrain::Witness && m.witness.is_none() {
            return Err(invalid(
                "membership.witness",
                "missing: split_brain = \"witness\" needs the witness address",
            ));
        }
        Ok(())
    }

    /// The bucket owners of static ownership, checked: every bucket owned
    /// by exactly one node.
    pub fn static_ownership(&self) -> Result<StaticOwnership, ConfigError> {
        let n = self.farm.buckets as usize;
        let mut owners: Vec<Option<u16>> = vec![None; n];
        for (i, node) in self.farm.nodes.iter().enumerate() {
            let key = format!("farm.nodes[{i}].buckets");
            let Some(spec) = &node.buckets else {
                return Err(invalid(
                    key,
                    "missing: static ownership needs each node's bucket ranges",
                ));
            };
            let ranges = BucketRanges::parse(spec).map_err(|e| invalid(&key, e))?;
            for b in ranges.iter() {
                let Some(slot) = owners.get_mut(b as usize) else {
                    return Err(invalid(
                        &key,
                        format!("bucket {b} is beyond farm.buckets ({n})"),
                    ));
                };
                if let Some(other) = slot {
                    return Err(invalid(
                        &key,
                        format!("bucket {b} is also owned by node {other}"),
                    ));
                }
                *slot = Some(node.id);
            }
        }
        if let Some(b) = owners.iter().position(Option::is_none) {
            return Err(invalid(
                "farm.nodes",
                format!("bucket {b} has no owner: static ownership must cover 0..{n}"),
            ));
        }
        Ok(StaticOwnership {
            owners: owners.into_iter().map(|o| o.unwrap_or_default()).collect(),
        })
    }

    pub fn vips4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.farm.vips.iter().filter_map(|v| match v {
            IpAddr::V4(a) => Some(*a),
            IpAddr::V6(_) => None,
        })
    }

    pub fn vips6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.farm.vips.iter().filter_map(|v| match v {
            IpAddr::V6(a) => Some(*a),
            IpAddr::V4(_) => None,
        })
    }

    pub fn this_node(&self) -> &FarmNode {
        self.farm
            .nodes
            .iter()
            .find(|n| n.id == self.node.id)
            .expect("validated: node.id is one of farm.nodes")
    }

    /// The farm's other nodes: the ones this node heartbeats with.
    pub fn peers(&self) -> impl Iterator<Item = &FarmNode> {
        self.farm.nodes.iter().filter(|n| n.id != self.node.id)
    }
}

/// The MAC a VIP resolves to.
///
/// `vmac`: `02:48:` + the IPv4 address, or `02:86:` + the last four bytes of
/// an IPv6 address (locally administered, unicast). `multicast`: the IPv4
/// multicast MAC `01:00:5e:` + the low 23 bits of the VIP, or the IPv6 one
/// `33:33:` + its last four bytes (the prefix CLUSTERIP and NLB use).
pub fn vip_mac(vip: IpAddr, delivery: Delivery) -> [u8; 6] {
    match (vip, delivery) {
        (IpAddr::V4(a), Delivery::Vmac) => {
            let o = a.octets();
            [0x02, 0x48, o[0], o[1], o[2], o[3]]
        }
        (IpAddr::V6(a), Delivery::Vmac) => {
            let o = a.octets();
            [0x02, 0x86, o[12], o[13], o[14], o[15]]
        }
        (IpAddr::V4(a), Delivery::Multicast) => {
            let o = a.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        (IpAddr::V6(a), Delivery::Multicast) => {
            let o = a.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
    }
}

/// Renders a TOML error as one line with its position, naming the key
/// where the parser knows it (unknown field, wrong type).
fn syntax_message(e: &toml::de::Error) -> String {
    e.to_string()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

pub(crate) fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

fn valid_pci(s: &str) -> bool {
    // dddd:bb:dd.f
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// Parses "address/prefix-length".
pub fn parse_prefix(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not address/prefix-length"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("{len:?} is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} is over {max}"));
    }
    Ok((addr, len))
}

/// Parses a CPU list such as "0-3,6".
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let ranges = BucketRanges::parse(s)?;
    let cpus: Vec<u32> = ranges.iter().collect();
    if cpus.iter().any(|c| *c >= 1024) {
        return Err(format!("{s:?}: CPU numbers go up to 1023"));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests;
