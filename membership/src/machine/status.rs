//! What `herd status` shows of the protocol: counters and peers.

use super::heartbeat::talks;
use super::{Machine, Rejection, REJECTION_SHOWN};
use crate::wire::{NodeState, Versions};
use std::time::Duration;

/// Drops and receptions, counted (`herd status` shows them under these
/// names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    pub received: u64,
    pub dropped_malformed: u64,
    pub dropped_unauthenticated: u64,
    /// Heartbeats of another protocol version.
    pub dropped_version: u64,
    pub dropped_replayed: u64,
    pub dropped_unknown_sender: u64,
    /// Datagrams to the heartbeat port from an address that is no peer's
    /// (the driver drops them before decoding).
    #[serde(default)]
    pub dropped_not_peer: u64,
    #[serde(rename = "view_changes")]
    pub views: u64,
    /// Peers that went from alive to dead (failovers of their buckets).
    #[serde(rename = "failovers")]
    pub peer_deaths: u64,
    /// Times every peer counted this node out while it heard them (its
    /// heartbeats lost one way): it withdrew (see the module doc).
    #[serde(default)]
    pub disowned: u64,
    /// Times the driver reported this node's own input overflowed
    /// (dropped frames: a socket buffer, a ring, a NIC queue).
    #[serde(default)]
    pub input_overflows: u64,
    /// Peers that went unheard past `dead_after` while this node's input
    /// overflowed, and were kept alive (see the module doc).
    #[serde(default)]
    pub deaths_held: u64,
}

/// What `status` shows of a peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub id: u16,
    pub alive: bool,
    pub ready: bool,
    /// Node state as the peer last said.
    pub state: NodeState,
    pub transient: bool,
    pub weight: u32,
    /// Age of the last heartbeat per network (`None`: never heard).
    pub ages: Vec<Option<Duration>>,
    pub agrees: bool,
    /// The farm digest it announces (this node's:
    /// [`Machine::farm`]).
    pub farm: u64,
    /// A datagram claiming to come from it was refused within
    /// [`REJECTION_SHOWN`]: how long ago, and why.
    pub rejected: Option<(Duration, Rejection)>,
    /// The versions it speaks, if heard.
    pub speaks: Option<Versions>,
    /// The version this node writes its heartbeats to it in.
    pub talks: u8,
    /// Alive only because this node's own input overflowed since it was
    /// last heard (see the module doc).
    pub held: bool,
}

impl Machine {
    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn peers(&self, now: Duration) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|p| PeerStatus {
                id: p.id,
                alive: self.alive(p, now),
                ready: p.ready,
                state: p.state,
                transient: p.transient,
                weight: p.weight,
                ages: p
                    .heard
                    .iter()
                    .map(|h| h.map(|t| now.saturating_sub(t)))
                    .collect(),
                agrees: self.agrees(p),
                farm: p.farm,
                rejected: p
                    .rejected
                    .map(|(t, why)| (now.saturating_sub(t), why))
                    .filter(|(age, _)| *age < REJECTION_SHOWN),
                speaks: p.speaks,
                talks: talks(self.s.versions, p.speaks),
                held: !self.heard_within(p, now, self.s.dead_after) && self.held(p, now),
            })
            .collect()
    }
}
