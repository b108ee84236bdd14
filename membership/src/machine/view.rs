//! The view (the alive and ready nodes), its assignment, and the
//! split-brain policy: the update phases before the buckets.

use super::liveness::Peer;
use super::{Event, Machine, SplitBrain};
use crate::assign::{Member, Preferences};
use std::time::Duration;

/// Where this node stands in a possible split, at one update.
pub(super) struct Side {
    /// Every node of the farm is alive.
    everyone: bool,
    /// This node and the peers that count toward its majority.
    quorum: usize,
    /// With a witness: reached since a node went missing (always true
    /// without one).
    pub(super) witness_confirmed: bool,
}

/// Whether this node withdraws from the buckets, at one update.
#[derive(Clone, Copy)]
pub(super) struct Withdrawal {
    /// By the split-brain policy, or disowned by its peers: it keeps no
    /// connection.
    pub(super) split: bool,
    /// For any reason (also: not ready, draining): its target is empty.
    pub(super) all: bool,
}

impl Machine {
    /// Update phase: who is alive. Counts deaths, and peers kept alive
    /// only because this node's input overflowed.
    pub(super) fn note_liveness(&mut self, now: Duration) {
        for i in 0..self.peers.len() {
            let alive = self.alive(&self.peers[i], now);
            let heard = self.heard_within(&self.peers[i], now, self.s.dead_after);
            let p = &mut self.peers[i];
            if alive && p.was_alive && !heard && !p.was_held {
                self.counters.deaths_held += 1;
            }
            p.was_held = alive && !heard;
            if p.was_alive && !alive {
                self.counters.peer_deaths += 1;
            }
            if alive && !p.was_alive {
                p.alive_since = now;
            }
            p.was_alive = alive;
        }
    }

    /// Update phase: which side of a split this node is on (who is
    /// missing, the majority count, the witness).
    pub(super) fn side(&mut self, now: Duration) -> Side {
        let alive_count = 1 + self.peers.iter().filter(|p| self.alive(p, now)).count();
        let everyone = alive_count == self.ids.len();
        // A side counts itself for the majority by peers heard within
        // `quorum_after`, shorter than `dead_after`: cut from the others,
        // it withdraws before they count it dead and take its buckets,
        // even when it heard them up to a period later than they heard it.
        let quorum = 1 + self
            .peers
            .iter()
            .filter(|p| self.heard_within(p, now, self.quorum_after()) || self.held(p, now))
            .count();
        if everyone {
            self.missing_since = None;
        } else if self.missing_since.is_none() {
            self.missing_since = Some(now);
        }
        // With a witness, the side that takes a missing node's buckets
        // must have reached the witness since the node went missing.
        let witness_confirmed = self.s.split_brain != SplitBrain::Witness
            || everyone
            || matches!((self.witness_ok_started, self.missing_since),
                        (Some(ok), Some(missing)) if ok >= missing);
        Side {
            everyone,
            quorum,
            witness_confirmed,
        }
    }

    /// Update phase: the view (alive and ready nodes) and the digest of
    /// its assignment, taken up and announced at once when either changed.
    /// Returns the digest.
    pub(super) fn adopt_view(&mut self, now: Duration) -> u64 {
        let mut view = 0u64;
        if self.offers() {
            view |= 1 << self.me_index;
        }
        for p in &self.peers {
            if p.ready && self.alive(p, now) {
                if let Some(i) = self.index(p.id) {
                    view |= 1 << i;
                }
            }
        }
        let digest = self.assignment_for(view);
        if (view, digest) != (self.view, self.digest) {
            self.view = view;
            self.digest = digest;
            self.view_sequence = self.sequence + 1;
            self.view_at = now;
            self.counters.views += 1;
            self.events.push_back(Event::ViewChanged { view });
            // Tell the peers at once: taking buckets waits for their
            // agreement, so a view announced a period late is a failover
            // a period longer.
            self.next_heartbeat = self.next_heartbeat.min(now);
        }
        digest
    }

    /// The assignment of `view`: its members' announced weights (the
    /// configured ones for the others) rebuild the preference lists when
    /// they changed. Returns the digest heartbeats compare.
    pub(super) fn assignment_for(&mut self, view: u64) -> u64 {
        let weights: Vec<u32> = (0..self.ids.len())
            .map(|i| {
                if view & (1 << i) == 0 {
                    self.configured[i]
                } else if i == self.me_index {
                    self.my_weight
                } else {
                    let id = self.ids[i];
                    self.peers
                        .iter()
                        .find(|p| p.id == id)
                        .map_or(self.configured[i], |p| p.weight)
                }
            })
            .collect();
        if weights != self.prefs_weights {
            let members: Vec<Member> = self
                .ids
                .iter()
                .zip(&weights)
                .map(|(&id, &weight)| Member { id, weight })
                .collect();
            self.prefs = Preferences::new(&members, self.s.n_buckets);
            self.prefs_weights = weights;
        }
        assignment_digest(view, &self.prefs_weights)
    }

    /// Update phase: whether this node withdraws, and why (disowned by
    /// its peers, the split-brain policy, or not offering).
    pub(super) fn withdrawal(&mut self, now: Duration, side: &Side) -> Withdrawal {
        let disowned = self.disowned(now);
        if disowned && !self.disowned {
            self.counters.disowned += 1;
        }
        self.disowned = disowned;
        let policy_withdrawn = match self.s.split_brain {
            SplitBrain::ServeAll => false,
            SplitBrain::Majority => side.quorum * 2 <= self.ids.len(),
            SplitBrain::Witness => !side.everyone && !self.witness_reachable,
        };
        if policy_withdrawn != self.policy_withdrawn {
            // The peers that still hear it (it is deaf, not cut off) learn
            // at once that it serves nothing: its heartbeats say not
            // ready, so they take the buckets it dropped, and do not wait
            // for it to agree with a view it cannot hear.
            self.policy_withdrawn = policy_withdrawn;
            self.next_heartbeat = self.next_heartbeat.min(now);
        }
        let split = disowned || policy_withdrawn;
        Withdrawal {
            split,
            all: !self.offers() || split,
        }
    }

    /// Whether every live peer agrees with this node's view, ready or
    /// not: one last heard not ready may be coming up at this very
    /// moment, alone in its own view (each would take every bucket the
    /// other's absence gives it), or know a node this one has not heard
    /// again yet. One that is not ready and has not agreed within
    /// `dead_after` of this view, or of its coming back, hears nothing (it
    /// is deaf, or withdrawn for not hearing): it is not waited for
    /// longer.
    pub(super) fn agreed(&self, now: Duration) -> bool {
        self.done_listening(now)
            && self.peers.iter().filter(|p| self.alive(p, now)).all(|p| {
                self.agrees(p)
                    || (!p.ready && now >= self.view_at.max(p.alive_since) + self.s.dead_after)
            })
    }

    /// Whether `p` reports this node's view, assignment and farm, having
    /// heard the heartbeat that announced the view.
    pub(super) fn agrees(&self, p: &Peer) -> bool {
        p.view == self.view
            && p.digest == self.digest
            && p.farm == self.s.farm
            && p.acked >= self.view_sequence
    }

    /// Whether the others count this node out while it hears them: every
    /// live, ready peer of its view announces that view without this node,
    /// after it acknowledged the heartbeat in which this node announced it
    /// (so it heard this node in it, and dropped it since). They stopped
    /// hearing it (its heartbeats are lost one way) and take, or have
    /// taken, its buckets as a dead node's: it withdraws like a side of a
    /// split, whatever the policy. Not a peer that has not heard this
    /// node's view yet (a join, the end of a drain, a healed split), nor
    /// one that disagrees with another peer (it takes nothing alone).
    /// With `majority`, only peers that are a majority without this node
    /// take its buckets (fewer withdraw themselves); with a witness, the
    /// peers take them when they reach it, and a node they count out
    /// defers to them.
    pub(super) fn disowned(&self, now: Duration) -> bool {
        let others = self.view & !(1u64 << self.me_index);
        if !self.offers() || self.view & (1u64 << self.me_index) == 0 || others == 0 {
            return false;
        }
        if self.s.split_brain == SplitBrain::Majority
            && others.count_ones() as usize * 2 <= self.ids.len()
        {
            return false;
        }
        self.peers
            .iter()
            .filter(|p| self.index(p.id).is_some_and(|i| others & (1u64 << i) != 0))
            .all(|p| self.alive(p, now) && p.view == others && p.acked >= self.view_sequence)
    }

    pub fn view(&self) -> u64 {
        self.view
    }

    /// The ids of the nodes of a view bitmap.
    pub fn view_members(&self, view: u64) -> Vec<u16> {
        self.ids
            .iter()
            .enumerate()
            .filter(|(i, _)| view & (1 << i) != 0)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Buckets per node as the current view assigns them (what the farm
    /// converges to), by node id.
    pub fn shares(&self) -> std::collections::BTreeMap<u16, u32> {
        crate::assign::shares(&self.owners())
    }

    /// Each bucket's owner as the current view assigns it (`None`: no
    /// member is left).
    pub fn owners(&self) -> Vec<Option<u16>> {
        // `prefs` is built for the current view's weights.
        let ids = &self.ids;
        let view = self.view;
        self.prefs
            .owners(|id| ids.binary_search(&id).is_ok_and(|i| view & (1 << i) != 0))
    }
}

/// XXH3 of a view and the weights of its members: what heartbeats compare
/// to agree on one assignment.
fn assignment_digest(view: u64, weights: &[u32]) -> u64 {
    let mut bytes = Vec::with_capacity(8 + 4 * weights.len());
    bytes.extend_from_slice(&view.to_be_bytes());
    for (i, w) in weights.iter().enumerate() {
        if view & (1 << i) != 0 {
            bytes.extend_from_slice(&w.to_be_bytes());
        }
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}
