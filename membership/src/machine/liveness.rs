//! Who is alive: peers heard within `dead_after` on any network, or held
//! alive while this node's own input overflowed (see the module doc of
//! [`super`]).

use super::Machine;
use crate::wire::{BucketSet, NodeState, Versions};
use std::time::Duration;

use super::Rejection;

#[derive(Clone, Debug)]
pub(super) struct Peer {
    pub(super) id: u16,
    pub(super) incarnation: u64,
    /// The last sequence per network: each network carries every heartbeat.
    pub(super) sequence: Vec<u64>,
    pub(super) heard: Vec<Option<Duration>>,
    pub(super) view: u64,
    pub(super) weight: u32,
    pub(super) ready: bool,
    pub(super) state: NodeState,
    pub(super) transient: bool,
    /// Alive at the last update, to count deaths.
    pub(super) was_alive: bool,
    /// Alive at the last update only because it was held (this node's
    /// input overflowed), to count holds.
    pub(super) was_held: bool,
    /// Since when it has been alive (heard within `dead_after`).
    pub(super) alive_since: Duration,
    /// The highest of our sequences (current incarnation) it reported
    /// hearing.
    pub(super) acked: u64,
    pub(super) digest: u64,
    pub(super) farm: u64,
    pub(super) moving_out: BucketSet,
    pub(super) kept_in: BucketSet,
    /// The last datagram claiming to come from this peer that was refused.
    pub(super) rejected: Option<(Duration, Rejection)>,
    /// The versions it speaks (`None`: not heard since this node's
    /// versions last changed).
    pub(super) speaks: Option<Versions>,
    /// Whether `speaks` is what this incarnation of the peer announced
    /// (a heartbeat of version 6 or later): its version-5 heartbeats then
    /// only answer this node's own (see [`Machine::set_versions`]).
    pub(super) announced: bool,
    /// When to write to it in this node's newest version again although
    /// it was last heard in an older one ([`super::PROBE_EVERY`]).
    pub(super) probe_at: Duration,
}

impl Machine {
    pub(super) fn index(&self, id: u16) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    pub(super) fn alive(&self, p: &Peer, now: Duration) -> bool {
        self.heard_within(p, now, self.s.dead_after) || self.held(p, now)
    }

    /// When `p` was last heard, on any network.
    pub(super) fn last_heard(p: &Peer) -> Option<Duration> {
        p.heard.iter().flatten().max().copied()
    }

    /// Whether `p`, unheard, is kept alive because this node's own input
    /// overflowed since it was last heard (see the module doc).
    pub(super) fn held(&self, p: &Peer, now: Duration) -> bool {
        let (Some(last), Some(overflow)) = (Self::last_heard(p), self.overflowed_at) else {
            return false;
        };
        overflow > last
            && now.saturating_sub(last) < self.s.overflow_hold
            && !self.death_corroborated(p, last, now)
    }

    /// Whether a ready peer this node hears, heard after `p` was last
    /// heard (at `last`), reports `p` out of its view while `p` was last
    /// heard ready: it heard `p` go.
    pub(super) fn death_corroborated(&self, p: &Peer, last: Duration, now: Duration) -> bool {
        let Some(i) = self.index(p.id) else {
            return false;
        };
        p.ready
            && self.peers.iter().any(|q| {
                q.id != p.id
                    && q.ready
                    && self.heard_within(q, now, self.s.dead_after)
                    && Self::last_heard(q).is_some_and(|t| t > last)
                    && q.view & (1u64 << i) == 0
            })
    }

    pub(super) fn heard_within(&self, p: &Peer, now: Duration, within: Duration) -> bool {
        p.heard
            .iter()
            .flatten()
            .any(|t| now.saturating_sub(*t) < within)
    }

    /// How long a peer counts toward this side's majority without being
    /// heard: two periods less than `dead_after` (at least half of it).
    pub(super) fn quorum_after(&self) -> Duration {
        self.s
            .dead_after
            .saturating_sub(2 * self.s.period)
            .max(self.s.dead_after / 2)
    }

    /// Reports that this node's own input overflowed at `now` (frames
    /// dropped before the machine could read them): peers unheard since
    /// are held alive (see the module doc).
    pub fn note_input_overflow(&mut self, now: Duration) {
        self.overflowed_at = Some(now);
        self.counters.input_overflows += 1;
        self.update(now);
    }

    /// Whether this node's input overflowed within `dead_after`: it may
    /// not hear its peers (status).
    pub fn deaf(&self, now: Duration) -> bool {
        self.overflowed_at
            .is_some_and(|t| now.saturating_sub(t) < self.s.dead_after)
    }

    /// Listening ends after `dead_after`, or as soon as every peer has
    /// been heard: then no peer is left that could be alive and unheard,
    /// and a joining node need not keep the buckets it is to take without
    /// an owner for new flows (its peers let go of them as soon as they
    /// hear it) for the whole period.
    pub(super) fn done_listening(&self, now: Duration) -> bool {
        now >= self.listen_until || self.peers.iter().all(|p| self.alive(p, now))
    }
}
