//! The buckets: what this node holds (`Owned`, `In`, `Out`), the update
//! phases that move them, and the sets heartbeats carry (see "Moves" in
//! the module doc of [`super`]).

use super::view::Withdrawal;
use super::{Event, Hold, Machine};
use crate::wire::BucketSet;
use std::time::Duration;

impl Machine {
    /// Update phase: the target (the buckets this node's view gives it),
    /// recomputed only when the assignment or the withdrawal changed, and
    /// letting go of what it no longer gives. Returns whether the target
    /// was recomputed, and whether a bucket was let go.
    pub(super) fn retarget(&mut self, now: Duration, digest: u64, w: Withdrawal) -> (bool, bool) {
        if self.target_of == Some((digest, w.all)) {
            return (false, false);
        }
        self.target_of = Some((digest, w.all));
        let ids = &self.ids;
        let view = self.view;
        let owners = self
            .prefs
            .owners(|id| ids.binary_search(&id).is_ok_and(|i| view & (1 << i) != 0));
        for (b, o) in owners.iter().enumerate() {
            self.target[b] = !w.all && *o == Some(self.s.me);
        }
        // A bucket still moving in when the assignment gives it to another
        // node is kept (its new flows still come here) until its move ends,
        // then handed on like an owned one: its connections stay. Not when
        // the application is down or the farm is split.
        let keep_in = self.s.continuity && self.ready && !w.split;
        // Let go first: a heartbeat never carries a view whose new flows
        // this node still takes for someone else, except buckets it keeps
        // in (announced as such: the new owner waits for them). What it
        // owned goes `Out` (its connections stay) with continuity.
        let mut changed = false;
        for b in 0..self.held.len() {
            if self.target[b] {
                continue;
            }
            match self.held[b] {
                Hold::Owned if self.s.continuity && !w.split => {
                    self.set_hold(b, Hold::Out);
                    self.out_deadline[b] = now + self.s.drain_timeout;
                    changed = true;
                }
                Hold::In if keep_in => {}
                Hold::Owned | Hold::In => {
                    self.set_hold(b, Hold::None);
                    changed = true;
                }
                // A side that withdraws from a split keeps no connection:
                // the other side counts it dead and takes its buckets
                // whole, old flows included.
                Hold::Out if w.split => {
                    self.set_hold(b, Hold::None);
                    changed = true;
                }
                _ => {}
            }
        }
        (true, changed)
    }

    /// Update phase: take the target's buckets once the peers agree (and
    /// the witness confirmed, with one). A bucket a live peer keeps in is
    /// taken once that peer hands it on. Returns whether one was taken.
    pub(super) fn take(
        &mut self,
        now: Duration,
        target_changed: bool,
        witness_confirmed: bool,
    ) -> bool {
        let agreed = self.agreed(now);
        let was_agreed = std::mem::replace(&mut self.was_agreed, agreed);
        if agreed && !witness_confirmed {
            self.takes_pending = true;
            return false;
        }
        if !(agreed && (target_changed || !was_agreed || self.takes_pending)) {
            return false;
        }
        self.takes_pending = false;
        let mut changed = false;
        for b in 0..self.held.len() {
            if self.target[b] && matches!(self.held[b], Hold::None | Hold::Out) {
                if self.peer_kept_in(b as u32, now) {
                    self.takes_pending = true;
                    continue;
                }
                let h = if self.s.continuity && self.peer_moving_out(b as u32, now) {
                    Hold::In
                } else {
                    Hold::Owned
                };
                self.set_hold(b, h);
                changed = true;
            }
        }
        changed
    }

    /// Update phase: a move in ends when no live peer serves the bucket's
    /// old flows: the bucket is owned, or, kept in for a newer owner,
    /// handed on (its connections stay, as an owned bucket's do).
    pub(super) fn end_moves_in(&mut self, now: Duration) -> bool {
        if self.n_in == 0 {
            return false;
        }
        let mut changed = false;
        for b in 0..self.held.len() {
            if self.held[b] == Hold::In && !self.peer_moving_out(b as u32, now) {
                if self.target[b] {
                    self.set_hold(b, Hold::Owned);
                } else {
                    self.set_hold(b, Hold::Out);
                    self.out_deadline[b] = now + self.s.drain_timeout;
                    self.next_heartbeat = self.next_heartbeat.min(now);
                }
                changed = true;
            }
        }
        changed
    }

    /// Update phase: a move out ends at the drain timeout at the latest.
    pub(super) fn expire_moves_out(&mut self, now: Duration) -> bool {
        if self.first_out_deadline.is_none_or(|d| now < d) {
            return false;
        }
        let mut changed = false;
        for b in 0..self.held.len() {
            if self.held[b] == Hold::Out && now >= self.out_deadline[b] {
                self.set_hold(b, Hold::None);
                self.next_heartbeat = self.next_heartbeat.min(now);
                changed = true;
            }
        }
        changed
    }

    /// The earliest `Out` deadline, recomputed after the `Out` set changed.
    pub(super) fn refresh_first_out_deadline(&mut self) {
        if self.out_changed {
            self.out_changed = false;
            self.first_out_deadline = self
                .held
                .iter()
                .zip(&self.out_deadline)
                .filter(|(h, _)| **h == Hold::Out)
                .map(|(_, d)| *d)
                .min();
        }
    }

    /// Releases the `Out` buckets among `buckets` (the driver found no
    /// connection left in them); peers hear it at once.
    pub fn release_moves(&mut self, now: Duration, buckets: impl IntoIterator<Item = u32>) {
        let mut changed = false;
        for b in buckets {
            if self.held.get(b as usize) == Some(&Hold::Out) {
                self.set_hold(b as usize, Hold::None);
                changed = true;
            }
        }
        if changed {
            self.next_heartbeat = self.next_heartbeat.min(now);
            self.events.push_back(Event::OwnedChanged);
            self.update(now);
        }
    }

    pub(super) fn set_hold(&mut self, b: usize, h: Hold) {
        let old = std::mem::replace(&mut self.held[b], h);
        self.out_changed |= old == Hold::Out || h == Hold::Out;
        match old {
            Hold::In => self.n_in -= 1,
            Hold::Out => self.n_out -= 1,
            _ => {}
        }
        match h {
            Hold::In => self.n_in += 1,
            Hold::Out => self.n_out += 1,
            _ => {}
        }
    }

    /// The buckets kept in (moving in, but given to another node since),
    /// as heartbeats carry them.
    pub(super) fn kept_in_set(&self) -> BucketSet {
        self.bucket_set(self.n_in > 0, |b| {
            self.held[b] == Hold::In && !self.target[b]
        })
    }

    /// The `Out` buckets, as heartbeats carry them.
    pub(super) fn moving_out_set(&self) -> BucketSet {
        self.bucket_set(self.n_out > 0, |b| self.held[b] == Hold::Out)
    }

    /// The buckets `pick` selects; none without a walk when `any` is false.
    pub(super) fn bucket_set(&self, any: bool, pick: impl Fn(usize) -> bool) -> BucketSet {
        if !any {
            return BucketSet::none();
        }
        let mut words = vec![0u64; self.held.len().div_ceil(64)];
        for b in (0..self.held.len()).filter(|b| pick(*b)) {
            words[b / 64] |= 1 << (b % 64);
        }
        BucketSet::Buckets(words)
    }

    /// Whether some live peer still serves the old connections of `b`.
    pub(super) fn peer_moving_out(&self, b: u32, now: Duration) -> bool {
        self.peers
            .iter()
            .any(|p| p.moving_out.contains(b) && self.alive(p, now))
    }

    /// Whether some live peer still takes the new flows of `b` although
    /// the assignment moved it on (its move in has not ended).
    pub(super) fn peer_kept_in(&self, b: u32, now: Duration) -> bool {
        self.peers
            .iter()
            .any(|p| p.kept_in.contains(b) && self.alive(p, now))
    }

    /// Whether this node takes the new flows of bucket `b` now (`Owned`
    /// or `In`).
    pub fn holds(&self, b: u32) -> bool {
        matches!(self.hold(b), Hold::Owned | Hold::In)
    }

    pub fn hold(&self, b: u32) -> Hold {
        self.held.get(b as usize).copied().unwrap_or(Hold::None)
    }

    /// The buckets this node owns whole.
    pub fn owned(&self) -> impl Iterator<Item = u32> + '_ {
        self.with_hold(Hold::Owned)
    }

    /// The buckets in state `h`.
    pub fn with_hold(&self, h: Hold) -> impl Iterator<Item = u32> + '_ {
        self.held
            .iter()
            .enumerate()
            .filter(move |(_, x)| **x == h)
            .map(|(b, _)| b as u32)
    }

    /// The buckets kept in: still moving in, but the assignment has given
    /// them to another node since; handed on when their move in ends.
    pub fn kept_in(&self) -> impl Iterator<Item = u32> + '_ {
        self.held
            .iter()
            .zip(&self.target)
            .enumerate()
            .filter(|(_, (h, t))| **h == Hold::In && !**t)
            .map(|(b, _)| b as u32)
    }

    /// Whether a move is in progress on this node's side.
    pub fn moving(&self) -> bool {
        self.n_in + self.n_out > 0
    }
}
