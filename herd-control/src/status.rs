//! The node's status as one typed model: made by the running node, sent
//! on the control socket as JSON, read back by `herd status` (text and
//! `--json`), turned into `/metrics`, served to the status page at `/`.
//! Every reader uses these structs; none reads the JSON by key, so a field
//! renamed here is renamed for all of them, and [`tests`] hold the JSON
//! names the page and the scripts around Herd read.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use config::state::WeightSource;
pub use node_state::{NodeState, Readiness};

/// `herd status --json`, the control socket's `status` and the page's
/// `/status.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The fastpath: table, counters, lcores, ports.
    #[serde(flatten)]
    pub node: node_status::NodeStatus,
    pub ownership: Ownership,
    /// How the node stands for new flows (`herd state`, `/health`).
    pub readiness: Readiness,
    pub health: health::driver::Snapshot,
    /// With `farm.ownership = "membership"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub membership: Option<Membership>,
    /// The node's last log lines at INFO and above, oldest first.
    pub recent_events: Vec<RecentEvent>,
}

/// One line of the node's log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// When, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// "ERROR", "WARN" or "INFO".
    pub level: String,
    pub message: String,
}

/// The symbols of [`BucketMap::owners`]: a node's index in
/// [`BucketMap::nodes`] (64 nodes at most).
pub const MAP_SYMBOLS: &[u8; 64] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/";

/// Which node the view gives each bucket, compactly (one character per
/// bucket: 4096 buckets are 4 KiB of JSON, not an array of 4096 numbers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMap {
    /// The nodes that own buckets, by id.
    pub nodes: Vec<u16>,
    /// Bucket `b`'s owner is `nodes[i]` where the `b`-th character is
    /// `MAP_SYMBOLS[i]`; `.`: no owner.
    pub owners: String,
}

impl BucketMap {
    pub fn new(owners: &[Option<u16>]) -> BucketMap {
        let mut nodes: Vec<u16> = owners.iter().flatten().copied().collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.truncate(MAP_SYMBOLS.len());
        let owners = owners
            .iter()
            .map(|o| match o.and_then(|id| nodes.binary_search(&id).ok()) {
                Some(i) => char::from(MAP_SYMBOLS[i]),
                None => '.',
            })
            .collect();
        BucketMap { nodes, owners }
    }

    /// Bucket `b`'s owner, if any.
    pub fn owner(&self, b: usize) -> Option<u16> {
        let c = *self.owners.as_bytes().get(b)?;
        let i = MAP_SYMBOLS.iter().position(|s| *s == c)?;
        self.nodes.get(i).copied()
    }
}

/// `farm.ownership`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ownership {
    Static,
    Membership,
}

/// The membership part of the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The ids of the view's members.
    pub view: Vec<u16>,
    /// This node's farm digest, hex.
    pub farm_digest: String,
    /// The heartbeat protocol versions this node speaks ("5-6").
    pub protocol_versions: String,
    pub weight: u32,
    pub weight_source: WeightSource,
    pub weight_file: PathBuf,
    pub draining: bool,
    /// This node's own input overflowed within `dead_after` (a flood): it
    /// may not hear its peers, and holds those it does not hear alive.
    #[serde(default)]
    pub deaf: bool,
    /// This node first, then its peers in id order.
    pub nodes: Vec<FarmNode>,
    /// The view's assignment.
    pub bucket_map: BucketMap,
    pub counters: HeartbeatCounters,
    pub moves: Moves,
}

/// One node of the farm as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmNode {
    pub id: u16,
    /// Its name in the config.
    pub name: Option<String>,
    #[serde(rename = "self")]
    pub is_self: bool,
    pub alive: bool,
    /// It offers to own buckets (UP-ready, not draining).
    pub ready: bool,
    /// Its state as it last said (a dead peer: STOP).
    pub state: NodeState,
    pub transient: bool,
    pub weight: u32,
    pub in_view: bool,
    /// Buckets the view assigns it.
    pub buckets: u32,
    /// The versions it speaks ("5-6"), if heard.
    pub speaks: Option<String>,
    /// This node only: what its machine holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<Holds>,
    /// Peers only: what this node heard of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heard: Option<Heard>,
}

/// What a node holds: buckets owned whole, moving in (new flows), moving
/// out (old connections), kept in for a newer owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    pub owned: u32,
    pub moving_in: u32,
    pub moving_out: u32,
    pub kept_in: u32,
    /// The buckets kept in, as ranges ("0-99,200").
    pub kept_in_ranges: String,
}

/// What this node heard of a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    /// It reports the same view and assignment.
    pub agrees: bool,
    /// Age of its last heartbeat per heartbeat network, ms (`None`:
    /// never heard).
    pub heartbeat_age_ms: Vec<Option<u64>>,
    /// The farm digest it announces, hex.
    pub farm_digest: String,
    /// It is alive and announces another farm config.
    pub farm_differs: bool,
    /// The protocol version this node writes to it.
    pub protocol: u8,
    /// A heartbeat claiming to come from it was refused lately.
    pub rejected: Option<Refused>,
    /// Unheard since this node's input overflowed: alive by the hold.
    #[serde(default)]
    pub held: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    /// "authentication" or "protocol version N".
    pub why: String,
    pub age_ms: u64,
}

/// Heartbeats received and dropped, view changes, failovers.
pub use membership::machine::Counters as HeartbeatCounters;

/// Moves out: the kernel's connections this node keeps serving.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moves {
    /// Connections the kernel holds in buckets moving out (census).
    pub connections_held: u64,
    /// The lcores have the census's connections.
    pub seeded: bool,
    /// Moves out ended because no connection was left.
    pub moves_ended_empty: u64,
    /// Kernel connections reset because their bucket was dropped outright
    /// (a withdrawal from a split, the drain timeout): another node
    /// serves their packets now.
    pub connections_reset: u64,
}

/// The control socket's answer to `state` (`herd state`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateReply {
    pub state: NodeState,
    pub readiness: Readiness,
    pub reason: String,
}

impl StateReply {
    /// `herd state`'s exit code: the state's.
    pub fn exit_code(&self) -> u8 {
        self.state.exit_code()
    }
}

/// The control socket's answer to `weight N` and `weight config`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightReply {
    pub weight: u32,
    pub was: u32,
    pub source: WeightSource,
}

/// The control socket's answer to `checker on` and `checker off`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerReply {
    pub checkers_on: bool,
}

/// The control socket's answer to a `reload` it applied (one it refused
/// answers an error).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReply {
    /// What changed, in words.
    pub applied: String,
}

/// The control socket's answer to `start`, `stop`, `restart`, `drain`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReply {
    pub state: NodeState,
    pub readiness: Readiness,
    pub reason: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use node_status::{
        BurstCounts, FlowStats, LcoreStatus, NodeStatus, PollingStatus, PortStats, PrefilterCounts,
        TableSwitchStats,
    };

    /// A report with every optional part present.
    pub(crate) fn sample() -> Report {
        Report {
            node: NodeStatus {
                farm: "lab".into(),
                node_id: 2,
                node_name: "s2".into(),
                dpdk_version: "DPDK 22.11".into(),
                nic: "net_af_packet0".into(),
                nic_mac: "02:00:00:00:00:02".into(),
                table_generation: 7,
                buckets: 4096,
                owned_buckets: 1365,
                owned_ranges: "0-1364".into(),
                moving_in: 1,
                moving_in_ranges: "2000".into(),
                moving_out: 2,
                moving_out_ranges: "3000-3001".into(),
                flows: FlowStats {
                    tracked: 3,
                    held: 2,
                    table_full: 0,
                },
                arp_responder: true,
                totals: BurstCounts::default(),
                lcores: vec![LcoreStatus {
                    lcore: 1,
                    queue: 0,
                    counters: BurstCounts::default(),
                    table: TableSwitchStats::default(),
                    flows: FlowStats::default(),
                }],
                nic_stats: PortStats::default(),
                tap: "herd0 (own TAP)".into(),
                tap_stats: PortStats::default(),
                xdp_prefilter: Some(PrefilterCounts::default()),
                ingress_guard: Some(node_status::GuardStatus::default()),
                ring_drops: Some(0),
                xdp_mode: Some(config::XdpMode::Generic),
                direct_egress: Some(5),
                egress_kept_slots: Some(192),
                vips: vec!["198.18.0.100".parse().unwrap()],
                polling: PollingStatus {
                    spin_us: 100,
                    min_sleep_us: 10,
                    max_sleep_us: 1500,
                },
            },
            ownership: Ownership::Membership,
            readiness: Readiness::Ready,
            health: health::driver::Snapshot {
                state: NodeState::Up,
                transient: false,
                owns_buckets: true,
                reason: "checkers up".into(),
                checkers_on: true,
                checkers: vec![],
                running_script: None,
            },
            membership: Some(Membership {
                view: vec![1, 2, 3],
                farm_digest: "00000000000000aa".into(),
                protocol_versions: "5-6".into(),
                weight: 1,
                weight_source: WeightSource::Config,
                weight_file: "/var/lib/herd/lab-node2.toml".into(),
                draining: false,
                deaf: false,
                nodes: vec![
                    FarmNode {
                        id: 2,
                        name: Some("s2".into()),
                        is_self: true,
                        alive: true,
                        ready: true,
                        state: NodeState::Up,
                        transient: false,
                        weight: 1,
                        in_view: true,
                        buckets: 1365,
                        speaks: Some("5-6".into()),
                        holds: Some(Holds {
                            owned: 1365,
                            moving_in: 1,
                            moving_out: 2,
                            kept_in: 1,
                            kept_in_ranges: "2000".into(),
                        }),
                        heard: None,
                    },
                    FarmNode {
                        id: 1,
                        name: Some("s1".into()),
                        is_self: false,
                        alive: true,
                        ready: true,
                        state: NodeState::Up,
                        transient: false,
                        weight: 1,
                        in_view: true,
                        buckets: 1366,
                        speaks: Some("5-6".into()),
                        holds: None,
                        heard: Some(Heard {
                            agrees: true,
                            heartbeat_age_ms: vec![Some(12), None],
                            farm_digest: "00000000000000aa".into(),
                            farm_differs: false,
                            protocol: 6,
                            rejected: Some(Refused {
                                why: "authentication".into(),
                                age_ms: 300,
                            }),
                            held: false,
                        }),
                    },
                ],
                bucket_map: BucketMap::new(&[Some(1), Some(2), None, Some(3)]),
                counters: HeartbeatCounters::default(),
                moves: Moves::default(),
            }),
            recent_events: vec![RecentEvent {
                unix_ms: 1_764_000_000_000,
                level: "INFO".into(),
                message: "view changed".into(),
            }],
        }
    }

    #[test]
    fn the_bucket_map_names_each_buckets_owner() {
        let owners = [Some(7), Some(2), None, Some(7), Some(64)];
        let map = BucketMap::new(&owners);
        assert_eq!(map.nodes, vec![2, 7, 64]);
        assert_eq!(map.owners, "10.12");
        for (b, o) in owners.iter().enumerate() {
            assert_eq!(map.owner(b), *o);
        }
        assert_eq!(map.owner(5), None);
        // 64 nodes have a symbol each.
        let all: Vec<Option<u16>> = (1..=64).map(Some).collect();
        let map = BucketMap::new(&all);
        assert_eq!(map.owners.len(), 64);
        assert!((0..64).all(|b| map.owner(b) == Some(b as u16 + 1)));
    }

    #[test]
    fn a_report_reads_back_as_it_was_sent() {
        let r = sample();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), r);
    }

    /// The names outside Rust depends on: the status page's script, the
    /// end-to-end tests, the lab's tools and operators' scripts read these
    /// JSON paths. Renaming a field on the Rust side only fails here.
    #[test]
    fn the_json_paths_readers_outside_rust_use_are_there() {
        let v = serde_json::to_value(sample()).unwrap();
        for path in crate::page::FIELDS.iter().chain(OTHER_READERS) {
            let mut at = &v;
            for key in path.split('.') {
                at = match key.parse::<usize>() {
                    Ok(i) => &at[i],
                    Err(_) => &at[key],
                };
            }
            assert!(!at.is_null(), "{path} is not in the status JSON");
        }
        assert_eq!(v["health"]["state"], "UP");
        assert_eq!(v["readiness"], "ready");
        assert_eq!(v["membership"]["nodes"][0]["self"], true);
    }

    /// Read by `tests/e2e` and `perf/` (chaos, the failover bench).
    const OTHER_READERS: &[&str] = &[
        "owned_buckets",
        "owned_ranges",
        "moving_in",
        "moving_in_ranges",
        "moving_out",
        "flows.held",
        "totals",
        "lcores.0.table.last_us",
        "membership.view",
        "membership.weight",
        "membership.weight_source",
        "membership.weight_file",
        "membership.draining",
        "membership.moves.connections_held",
        "membership.nodes.0.holds.kept_in",
        "membership.nodes.1.heard.protocol",
        "membership.counters.failovers",
        "membership.counters.disowned",
        "health.checkers",
        "polling.max_sleep_us",
        "vips",
    ];
}
