//! The membership protocol as a sans-IO state machine.
//!
//! Inputs: datagrams (with the heartbeat network they came from) and the
//! time; outputs: datagrams to send and events (view changed, owned buckets
//! changed). Time is a `Duration` since any fixed origin, given by the
//! caller, so a simulation drives it exactly as the tokio driver does.
//!
//! # Rules
//!
//! - A peer is alive while it was heard, on any network, within
//!   `dead_after`. The *view* is the set of alive and ready nodes (a bitmap
//!   by index in the sorted node list); heartbeats carry the sender's view.
//! - The target owner of each bucket is a deterministic function of the view
//!   ([`crate::assign`]).
//! - A node releases a bucket as soon as its own view gives it to another
//!   node, before any heartbeat carries that view.
//! - A node takes a bucket it does not hold only when every peer alive in
//!   its view reports the same view *and acknowledges the heartbeat in
//!   which this node first announced it* (each heartbeat is addressed to
//!   one peer and carries the last sequence heard from it), and every
//!   other live peer, not ready, agrees the same way: one last heard not
//!   ready may be coming up at the same moment, alone in its own view
//!   (both would take every bucket), or know a node this one has not
//!   heard again yet (its view, the ready nodes it hears, says so). One
//!   that is not ready and has not agreed within `dead_after` of this
//!   node's view or of its own coming back hears nothing (deaf, or
//!   withdrawn for not hearing) and is not waited for longer. Then that
//!   peer held the view after it knew this node's, so it has released
//!   whatever the view moves away from it and cannot have moved on
//!   without this node hearing it: a bucket comes from a live owner only
//!   after that owner released it, and from a dead owner as soon as the
//!   survivors agree that it is dead (about `dead_after` plus one or two
//!   network delays after the crash). Without the acknowledgement, two
//!   nodes whose views cross (one withdraws and comes back while the
//!   other takes over) could each agree with the other's stale report.
//! - A node heartbeats at once when its view changes, and when a peer's
//!   reported view changes (so the peer gets its acknowledgement within a
//!   network delay, not a heartbeat period).
//! - A starting node takes nothing during its first `dead_after` of
//!   listening (from [`Machine::new`], or from [`Machine::listen_from`]
//!   when its driver could hear peers only later): a peer it has not heard
//!   yet may be alive and serving. Once it has heard every peer, nothing
//!   is left to wait for and it stops listening: its peers let go of the
//!   buckets it is to take when they hear it, and those buckets' new
//!   flows go unanswered until it takes them.
//! - Split brain: by default each side serves all buckets (SafeKit); when
//!   the partition heals, a node releases what the full view gives to
//!   others as soon as it hears one of them (within `dead_after` even
//!   under loss).
//!   `Majority`: a side with at most half of the nodes withdraws. It
//!   counts its peers for that by heartbeats heard within `dead_after`
//!   less two periods: cut from the others, it withdraws before they
//!   count it dead and take its buckets (a side may have heard the other
//!   up to a period later than the other heard it).
//!   `Witness`: while some node is missing, a side that cannot reach the
//!   witness withdraws, and a side takes no bucket until a witness probe
//!   that started after the node went missing answered (an answer from
//!   before could come from a side that lost the witness since: it would
//!   take every bucket until its next probe failed). A node withdrawn by
//!   the policy says so: its heartbeats say not ready, so peers that
//!   still hear it (it is deaf, not cut off) take its share instead of
//!   leaving it unowned, and do not wait for its agreement.
//!   A side that withdraws drops its buckets whole,
//!   moving out included: the other side counts it dead and serves their
//!   old flows too, so it keeps no connection (its driver resets what its
//!   kernel still holds in them).
//!   One-way cut, whatever the policy: a node that every live, ready
//!   peer of its view reports out of that view (each announcing the view
//!   less this node, after acknowledging the heartbeat that announced
//!   this node's current view) is *disowned*: they stopped hearing it and
//!   take its buckets as a dead node's, while it still hears them. It
//!   withdraws as a split side does. A peer that has not heard its
//!   current view (a join, the end of a drain, a healed split) or that
//!   disagrees with another peer does not count; with `Majority`, only
//!   peers that are a majority without it.
//! - Deafness is not death: when the driver reports that this node's own
//!   input overflowed ([`Machine::note_input_overflow`]: a socket buffer,
//!   a ring, a NIC queue dropped frames, as under a flood), a peer last
//!   heard before that overflow stays alive, for the buckets, the view,
//!   the majority and the agreement alike, until `overflow_hold` after it
//!   was last heard, unless a peer this node still hears (ready, and
//!   heard after it) reports it out of its view: that peer heard it go,
//!   so it is dead, not merely unheard. A node that drowns so keeps its
//!   share and takes no one's; a real death under the same flood is
//!   taken over when a peer that hears corroborates it, or after
//!   `overflow_hold` at the latest. Heartbeats go out as always, so
//!   peers that hear a drowning node do not count it dead.
//! - Replay: a sender's (incarnation, sequence) must grow on each network; an incarnation
//!   is taken at start (the driver uses the wall clock in microseconds).
//! - Weights: a node's weight can change at run time; heartbeats carry it,
//!   and the assignment uses the announced weights of the view's members
//!   (the configured weight for the others). Two nodes agree only when
//!   their views *and* these weights match (the heartbeat's digest).
//! - Farm: heartbeats carry a digest of what every node must share (VIPs,
//!   rules, buckets, delivery, hash version: the caller computes it). A
//!   node takes no bucket while a live, ready peer announces another (two
//!   tables would disagree on who owns what); it keeps what it holds,
//!   releases by its view as always, and reports the peer.
//! - Keys: a node sends with the first key of its keyring and accepts any
//!   (a rotation adds the new key everywhere, then sends with it, then
//!   drops the old one: no heartbeat is refused on the way). A datagram
//!   that fails authentication, or speaks another protocol version, is
//!   never trusted: its sender stays dead as far as the buckets go, so
//!   the split-brain policy decides (by default both sides serve). It is
//!   never silent: the peer it claims to come from is reported as
//!   rejected, with why, for [`REJECTION_SHOWN`].
//!
//! # Moves (docs/design.md §5, with `continuity`)
//!
//! A bucket that leaves a node which stays alive is not released: it goes
//! `Out`, and the node keeps serving the connections it has in it; every
//! heartbeat lists the sender's `Out` buckets. A node taking a bucket from
//! the agreement above takes it `In` (new flows only) while some live peer
//! lists it as `Out`, and `Owned` otherwise (a dead owner's buckets are
//! taken whole at once). `In` becomes `Owned` as soon as no live peer lists
//! the bucket. A node releases an `Out` bucket when the driver reports that
//! it holds no connection in it ([`Machine::release_moves`]), or after
//! `drain_timeout`.
//!
//! A move can be overtaken: the assignment gives a bucket that is still
//! `In` here to a third node. Dropping it would break the connections
//! opened here since the move began, so (while this node is ready) it is
//! *kept in*: still `In`, listed in every heartbeat's kept-in set, and no
//! peer takes a bucket a live peer keeps in. When its first move ends it
//! goes `Out` like an owned bucket, and the third node takes it `In`.
//!
//! So at any time at most one live node takes a bucket's new flows
//! (`Owned` or `In`) and at most one serves its old ones (`Owned` or
//! `Out`), a ready node lets go of a bucket whose flows it serves only by
//! moving it out, and every move ends.

mod heartbeat;
mod liveness;
mod moves;
mod receive;
mod status;
mod view;

pub use config::SplitBrain;
pub use heartbeat::PROBE_EVERY;
pub use receive::{Rejection, REJECTION_SHOWN};
pub use status::{Counters, PeerStatus};

use crate::assign::{Member, Preferences};
use crate::wire::{BucketSet, Keyring, NodeState, Versions};
use liveness::Peer;
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Settings {
    pub nodes: Vec<Member>,
    pub me: u16,
    pub period: Duration,
    pub dead_after: Duration,
    pub networks: usize,
    pub n_buckets: u32,
    pub split_brain: SplitBrain,
    pub keys: Keyring,
    /// The protocol versions this node speaks ([`Versions::BUILD`], or
    /// held at the previous one during an upgrade).
    pub versions: Versions,
    /// The digest of what every node of the farm must share (its
    /// config's VIPs, rules, buckets, delivery, hash version).
    pub farm: u64,
    /// Keep connections when buckets move between live nodes.
    pub continuity: bool,
    /// The longest a bucket stays `Out`.
    pub drain_timeout: Duration,
    /// How long a peer unheard since this node's own input overflowed
    /// stays alive without a live peer corroborating its death.
    pub overflow_hold: Duration,
}

/// What a node does with a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    None,
    /// All of its traffic.
    Owned,
    /// Its new flows; a live peer still serves its old ones.
    In,
    /// Its old connections, until they end or the drain timeout.
    Out,
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub network: usize,
    pub to: u16,
    pub bytes: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The set of alive and ready nodes changed (bitmap by node index).
    ViewChanged { view: u64 },
    /// The buckets this node accepts changed.
    OwnedChanged,
    /// A peer announces a farm digest other than this node's (its config
    /// differs): no bucket is taken while it does.
    FarmDiffers { peer: u16, ours: u64, theirs: u64 },
    /// A peer whose farm differed announces this node's again.
    FarmAgrees { peer: u16 },
}

impl Event {
    /// What a peer announcing farm digest `theirs` means to a node whose
    /// digest is `ours`.
    fn farm(peer: u16, ours: u64, theirs: u64) -> Event {
        if theirs == ours {
            Event::FarmAgrees { peer }
        } else {
            Event::FarmDiffers { peer, ours, theirs }
        }
    }
}

/// One node's side of the membership protocol, without IO.
///
/// # Driving it
///
/// The caller owns the sockets and the clock; the machine owns the rules.
/// Create it with [`Machine::new`] (a fresh incarnation, greater than any
/// earlier one of this node, and the time now), then loop:
///
/// 1. Feed it what happened: each datagram received on heartbeat network
///    `n` with [`Machine::handle_datagram`], the time with
///    [`Machine::handle_timeout`] once [`Machine::next_timeout`] has
///    passed, and local facts as they change ([`Machine::set_state`],
///    [`Machine::set_weight`], [`Machine::set_draining`],
///    [`Machine::set_witness`], [`Machine::note_input_overflow`],
///    [`Machine::release_moves`], [`Machine::set_farm`], ...).
/// 2. Drain what it wants done: [`Machine::poll_transmit`] until `None`
///    (send each datagram to its peer on its network), then
///    [`Machine::poll_event`] until `None` (publish the buckets of
///    [`Machine::hold`] on [`Event::OwnedChanged`], log the rest).
/// 3. Sleep until [`Machine::next_timeout`] or the next datagram.
///
/// Every input is followed by the same update (`update`: liveness, the
/// side of a split, the view, the withdrawal, then the buckets: retarget,
/// take, end moves), and nothing but the inputs and their times goes in:
/// a simulation that feeds the same inputs at the same times gets the
/// same outputs (`tests/sim.rs`).
pub struct Machine {
    s: Settings,
    prefs: Preferences,
    /// Sorted node ids; a node's index is its bit in a view.
    ids: Vec<u16>,
    me_index: usize,
    peers: Vec<Peer>,
    incarnation: u64,
    sequence: u64,
    ready: bool,
    /// Withdrawn by the operator while UP (`herd drain`): its buckets move
    /// out, keeping their connections, before the node stops.
    draining: bool,
    state: NodeState,
    transient: bool,
    witness_reachable: bool,
    /// Counted out by its peers while hearing them (see `disowned`).
    disowned: bool,
    /// Withdrawn by the split-brain policy (`majority`, `witness`): its
    /// heartbeats say it is not ready.
    policy_withdrawn: bool,
    /// When the last witness probe that answered started.
    witness_ok_started: Option<Duration>,
    /// Since when some node has been missing (dead or not ready).
    missing_since: Option<Duration>,
    next_heartbeat: Duration,
    /// Until then the node only listens: a peer it has not heard yet may be
    /// alive and serving.
    listen_until: Duration,
    view: u64,
    /// The sequence of the first heartbeat that carries `view`: a peer
    /// agrees once it reports `view` and has heard that heartbeat.
    view_sequence: u64,
    /// When `view` was taken up: a live peer that is not ready and has not
    /// heard it within `dead_after` (it hears nothing) is not waited for.
    view_at: Duration,
    /// (view, withdrawn) the target was computed for, and whether the
    /// peers agreed at the last update: the bucket walks run only when one
    /// of them changes, not on every heartbeat.
    target_of: Option<(u64, bool)>,
    was_agreed: bool,
    /// Some bucket of the target waits for a peer that keeps it in.
    takes_pending: bool,
    target: Vec<bool>,
    held: Vec<Hold>,
    /// When each `Out` bucket is released at the latest.
    out_deadline: Vec<Duration>,
    /// The earliest of those, recomputed after the `Out` set changed
    /// (`out_changed`): the timeout and the expiry check read it instead of
    /// walking every bucket.
    first_out_deadline: Option<Duration>,
    out_changed: bool,
    n_in: usize,
    n_out: usize,
    /// This node's weight (set at run time) and every node's configured
    /// one, by index.
    my_weight: u32,
    configured: Vec<u32>,
    /// The weights the preference lists were built with, and the digest
    /// of (view, weights) heartbeats carry.
    prefs_weights: Vec<u32>,
    digest: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    counters: Counters,
    /// When the driver last reported this node's input overflowed.
    overflowed_at: Option<Duration>,
}

impl Machine {
    /// A node starting at `now` with a fresh `incarnation` (greater than
    /// any earlier one of this node).
    pub fn new(settings: Settings, incarnation: u64, now: Duration) -> Machine {
        let mut ids: Vec<u16> = settings.nodes.iter().map(|m| m.id).collect();
        ids.sort();
        ids.dedup();
        assert!(ids.len() <= 64, "at most 64 nodes");
        let me_index = ids
            .iter()
            .position(|i| *i == settings.me)
            .expect("me is a node of the farm");
        let configured: Vec<u32> = ids
            .iter()
            .map(|id| {
                settings
                    .nodes
                    .iter()
                    .find(|m| m.id == *id)
                    .map_or(0, |m| m.weight)
            })
            .collect();
        let my_weight = configured[me_index];
        let prefs = Preferences::new(&settings.nodes, settings.n_buckets);
        let peers = ids
            .iter()
            .filter(|id| **id != settings.me)
            .map(|&id| Peer {
                id,
                incarnation: 0,
                sequence: vec![0; settings.networks],
                heard: vec![None; settings.networks],
                view: 0,
                weight: 0,
                ready: false,
                state: NodeState::Stop,
                transient: false,
                was_alive: false,
                was_held: false,
                alive_since: Duration::ZERO,
                acked: 0,
                digest: 0,
                farm: settings.farm,
                moving_out: BucketSet::none(),
                kept_in: BucketSet::none(),
                rejected: None,
                speaks: None,
                announced: false,
                probe_at: Duration::ZERO,
            })
            .collect();
        let n = settings.n_buckets as usize;
        let mut m = Machine {
            prefs,
            ids,
            me_index,
            peers,
            incarnation,
            sequence: 0,
            ready: true,
            draining: false,
            state: NodeState::Up,
            transient: false,
            witness_reachable: true,
            disowned: false,
            policy_withdrawn: false,
            witness_ok_started: None,
            missing_since: None,
            next_heartbeat: now,
            listen_until: now + settings.dead_after,
            view: 0,
            view_sequence: 1,
            view_at: Duration::ZERO,
            target_of: None,
            was_agreed: false,
            takes_pending: false,
            target: vec![false; n],
            held: vec![Hold::None; n],
            out_deadline: vec![Duration::ZERO; n],
            first_out_deadline: None,
            out_changed: false,
            n_in: 0,
            n_out: 0,
            my_weight,
            prefs_weights: configured.clone(),
            configured,
            digest: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: Counters::default(),
            overflowed_at: None,
            s: settings,
        };
        m.update(now);
        m
    }

    /// The heartbeat period.
    pub fn period(&self) -> Duration {
        self.s.period
    }

    /// Whether this node's application is ready (only ready nodes own
    /// buckets).
    pub fn set_ready(&mut self, now: Duration, ready: bool) {
        self.ready = ready;
        self.update(now);
    }

    /// The node's state and whether scripts run: only
    /// UP and not transient owns buckets. Peers hear it at once.
    pub fn set_state(&mut self, now: Duration, state: NodeState, transient: bool) {
        let ready = state == NodeState::Up && !transient;
        if (state, transient) != (self.state, self.transient) {
            self.next_heartbeat = self.next_heartbeat.min(now);
        }
        self.state = state;
        self.transient = transient;
        self.set_ready(now, ready);
    }

    /// Withdraws this node (or brings it back) without a change of state:
    /// its buckets move out, its connections stay until they end.
    pub fn set_draining(&mut self, now: Duration, draining: bool) {
        if draining != self.draining {
            self.draining = draining;
            self.next_heartbeat = self.next_heartbeat.min(now);
            self.update(now);
        }
    }

    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Whether this node offers to own buckets (UP-ready, not draining).
    fn offers(&self) -> bool {
        self.ready && !self.draining
    }

    pub fn local_state(&self) -> (NodeState, bool) {
        (self.state, self.transient)
    }

    /// Changes this node's weight at run time (the farm rebalances, moving
    /// buckets the way a join or a departure does).
    pub fn set_weight(&mut self, now: Duration, weight: u32) {
        if weight != self.my_weight {
            self.my_weight = weight;
            self.update(now);
        }
    }

    pub fn weight(&self) -> u32 {
        self.my_weight
    }

    /// A witness probe that started at `started` ended: `reachable` or
    /// not. While some node is missing, a node takes no bucket until a
    /// probe that started after the loss answered: a stale answer from
    /// before it could come from a side that has lost the witness since.
    pub fn set_witness(&mut self, now: Duration, started: Duration, reachable: bool) {
        self.witness_reachable = reachable;
        if reachable {
            self.witness_ok_started = Some(started);
        }
        self.update(now);
    }

    /// A reload changed what the farm shares: announced at once; buckets
    /// are taken again only when every live peer announces the same.
    pub fn set_farm(&mut self, now: Duration, farm: u64) {
        if farm != self.s.farm {
            self.s.farm = farm;
            let heard: Vec<(u16, u64)> = self
                .peers
                .iter()
                .filter(|p| self.alive(p, now))
                .map(|p| (p.id, p.farm))
                .collect();
            for (peer, theirs) in heard {
                self.events.push_back(Event::farm(peer, farm, theirs));
            }
            self.next_heartbeat = self.next_heartbeat.min(now);
            self.update(now);
        }
    }

    /// The farm digest this node announces.
    pub fn farm(&self) -> u64 {
        self.s.farm
    }

    /// Replaces the keyring (a key rotation step).
    pub fn set_keys(&mut self, keys: Keyring) {
        self.s.keys = keys;
    }

    pub fn keys(&self) -> &Keyring {
        &self.s.keys
    }

    /// The node can hear its peers from `now` on (its driver's sockets are
    /// bound): it listens for `dead_after` from here before taking
    /// anything, however long its start took since [`Machine::new`].
    pub fn listen_from(&mut self, now: Duration) {
        self.listen_until = self.listen_until.max(now + self.s.dead_after);
    }

    /// When `handle_timeout` must be called next.
    pub fn next_timeout(&self) -> Duration {
        let mut t = self.next_heartbeat;
        if self.listen_until > self.next_heartbeat.saturating_sub(self.s.period) {
            t = t.min(self.listen_until);
        }
        if let Some(d) = self.first_out_deadline {
            t = t.min(d);
        }
        for p in &self.peers {
            if let Some(last) = p.heard.iter().flatten().max() {
                // The majority is counted at `quorum_after`, a death at
                // `dead_after`: wake for both.
                let quorum = *last + self.quorum_after();
                if quorum > self.next_heartbeat.saturating_sub(self.s.period) {
                    t = t.min(quorum);
                }
                let expiry = *last + self.s.dead_after;
                if expiry > self.next_heartbeat.saturating_sub(self.s.period) {
                    t = t.min(expiry);
                }
                if self.overflowed_at.is_some_and(|o| o > *last) {
                    let held_until = *last + self.s.overflow_hold;
                    if held_until > self.next_heartbeat.saturating_sub(self.s.period) {
                        t = t.min(held_until);
                    }
                }
            }
        }
        t
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn me(&self) -> u16 {
        self.s.me
    }

    pub fn networks(&self) -> usize {
        self.s.networks
    }

    pub fn n_buckets(&self) -> u32 {
        self.s.n_buckets
    }

    /// Brings everything derived from the inputs up to date at `now`, in
    /// phases: who is alive, the side of a split, the view, whether this
    /// node withdraws, then the buckets (retarget and let go, take, end
    /// moves in, expire moves out).
    fn update(&mut self, now: Duration) {
        self.note_liveness(now);
        let side = self.side(now);
        let digest = self.adopt_view(now);
        let withdrawal = self.withdrawal(now, &side);
        let (target_changed, let_go) = self.retarget(now, digest, withdrawal);
        let took = self.take(now, target_changed, side.witness_confirmed);
        let ended = self.end_moves_in(now);
        let expired = self.expire_moves_out(now);
        self.refresh_first_out_deadline();
        if let_go || took || ended || expired {
            self.events.push_back(Event::OwnedChanged);
        }
    }
}
