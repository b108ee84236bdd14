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

use crate::assign::{Member, Preferences};
use crate::wire::{BucketSet, DecodeError, Heartbeat, Keyring, NodeState, Versions, MAGIC};
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitBrain {
    /// Each side of a partition serves all buckets (SafeKit's default).
    ServeAll,
    /// A side with at most half of the farm's nodes withdraws.
    Majority,
    /// While a node is missing, a side that cannot reach the witness
    /// withdraws (the driver reports reachability).
    Witness,
}

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

#[derive(Clone, Debug)]
struct Peer {
    id: u16,
    incarnation: u64,
    /// The last sequence per network: each network carries every heartbeat.
    sequence: Vec<u64>,
    heard: Vec<Option<Duration>>,
    view: u64,
    weight: u32,
    ready: bool,
    state: NodeState,
    transient: bool,
    /// Alive at the last update, to count deaths.
    was_alive: bool,
    /// Alive at the last update only because it was held (this node's
    /// input overflowed), to count holds.
    was_held: bool,
    /// Since when it has been alive (heard within `dead_after`).
    alive_since: Duration,
    /// The highest of our sequences (current incarnation) it reported
    /// hearing.
    acked: u64,
    digest: u64,
    farm: u64,
    moving_out: BucketSet,
    kept_in: BucketSet,
    /// The last datagram claiming to come from this peer that was refused.
    rejected: Option<(Duration, Rejection)>,
    /// The versions it speaks (`None`: not heard since this node's
    /// versions last changed).
    speaks: Option<Versions>,
    /// Whether `speaks` is what this incarnation of the peer announced
    /// (a heartbeat of version 6 or later): its version-5 heartbeats then
    /// only answer this node's own (see [`Machine::set_versions`]).
    announced: bool,
    /// When to write to it in this node's newest version again although
    /// it was last heard in an older one ([`PROBE_EVERY`]).
    probe_at: Duration,
}

/// How often a node writes its newest version to a peer heard only in an
/// older one. A version-5 heartbeat cannot say that its sender speaks
/// more, so two upgraded nodes that heard each other in version 5 would
/// stay there; a peer of the previous release drops the probe (as one lost
/// heartbeat, and reports a newer version refused).
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why a datagram claiming to come from a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Its HMAC matches no key of the keyring (another key).
    Authentication,
    /// Another protocol version (the byte it carries).
    Version(u8),
}

/// How long a refused datagram keeps its claimed sender reported as
/// rejected.
pub const REJECTION_SHOWN: Duration = Duration::from_secs(2);

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

    fn index(&self, id: u16) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    fn alive(&self, p: &Peer, now: Duration) -> bool {
        self.heard_within(p, now, self.s.dead_after) || self.held(p, now)
    }

    /// When `p` was last heard, on any network.
    fn last_heard(p: &Peer) -> Option<Duration> {
        p.heard.iter().flatten().max().copied()
    }

    /// Whether `p`, unheard, is kept alive because this node's own input
    /// overflowed since it was last heard (see the module doc).
    fn held(&self, p: &Peer, now: Duration) -> bool {
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
    fn death_corroborated(&self, p: &Peer, last: Duration, now: Duration) -> bool {
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

    /// A datagram from an address that is no peer's, dropped by the
    /// driver.
    pub fn note_not_from_peer(&mut self) {
        self.counters.dropped_not_peer += 1;
    }

    /// The heartbeat period.
    pub fn period(&self) -> Duration {
        self.s.period
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

    fn heard_within(&self, p: &Peer, now: Duration, within: Duration) -> bool {
        p.heard
            .iter()
            .flatten()
            .any(|t| now.saturating_sub(*t) < within)
    }

    /// How long a peer counts toward this side's majority without being
    /// heard: two periods less than `dead_after` (at least half of it).
    fn quorum_after(&self) -> Duration {
        self.s
            .dead_after
            .saturating_sub(2 * self.s.period)
            .max(self.s.dead_after / 2)
    }

    /// A datagram received on heartbeat network `network`.
    pub fn handle_datagram(&mut self, now: Duration, network: usize, bytes: &[u8]) {
        let hb = match Heartbeat::decode_within(bytes, &self.s.keys, self.s.versions) {
            Ok(hb) => hb,
            Err(DecodeError::Auth) => {
                self.counters.dropped_unauthenticated += 1;
                self.note_rejected(now, bytes, Rejection::Authentication);
                return;
            }
            Err(DecodeError::Version) if bytes.len() > 5 && &bytes[..4] == MAGIC => {
                self.counters.dropped_version += 1;
                self.note_rejected(now, bytes, Rejection::Version(bytes[4]));
                return;
            }
            Err(_) => {
                self.counters.dropped_malformed += 1;
                return;
            }
        };
        let Some(peer) = self.peers.iter_mut().find(|p| p.id == hb.sender) else {
            self.counters.dropped_unknown_sender += 1;
            return;
        };
        if network >= peer.heard.len() {
            self.counters.dropped_malformed += 1;
            return;
        }
        if (hb.incarnation, hb.sequence) <= (peer.incarnation, peer.sequence[network]) {
            self.counters.dropped_replayed += 1;
            return;
        }
        if hb.incarnation != peer.incarnation {
            // A restarted peer: what we heard of its earlier life is void.
            peer.heard.iter_mut().for_each(|h| *h = None);
            peer.sequence.iter_mut().for_each(|q| *q = 0);
            peer.acked = 0;
            peer.announced = false;
        }
        // The newest heartbeat over all networks says what the peer is: an
        // older one, late on another network, only proves it alive (its
        // state, and above all its moving-out set, would go back in time).
        let newest = hb.sequence > peer.sequence.iter().copied().max().unwrap_or(0);
        peer.incarnation = hb.incarnation;
        peer.sequence[network] = hb.sequence;
        peer.heard[network] = Some(now);
        // A version-5 heartbeat carries no versions: it says "5 alone"
        // unless this incarnation announced more (then it was written
        // down to a heartbeat of ours in version 5; taking it at its word
        // would bounce version 5 between two nodes that both speak 6).
        if hb.version > crate::wire::OLDEST_VERSION || !peer.announced {
            peer.speaks = Some(hb.speaks);
            peer.announced = hb.version > crate::wire::OLDEST_VERSION;
        }
        if newest {
            if (hb.view, hb.digest) != (peer.view, peer.digest) {
                // Acknowledge its new view at once (see the rules above).
                self.next_heartbeat = self.next_heartbeat.min(now);
            }
            if hb.farm != peer.farm {
                self.events
                    .push_back(Event::farm(peer.id, self.s.farm, hb.farm));
            }
            peer.farm = hb.farm;
            if hb.ack.0 == self.incarnation {
                peer.acked = peer.acked.max(hb.ack.1);
            }
            peer.view = hb.view;
            peer.digest = hb.digest;
            peer.moving_out = hb.moving_out;
            peer.kept_in = hb.kept_in;
            peer.weight = hb.weight;
            peer.ready = hb.ready;
            peer.state = hb.state;
            peer.transient = hb.transient;
        }
        self.counters.received += 1;
        self.update(now);
    }

    /// Time passed: expire peers, send heartbeats when due.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.update(now);
        if now >= self.next_heartbeat {
            self.sequence += 1;
            let weight = self.my_weight;
            let moving_out = self.moving_out_set();
            let kept_in = self.kept_in_set();
            let mine = self.s.versions;
            let versions: Vec<u8> = self
                .peers
                .iter_mut()
                .map(|p| {
                    let version = talks(mine, p.speaks);
                    if version < mine.newest && !p.announced && now >= p.probe_at {
                        p.probe_at = now + PROBE_EVERY;
                        mine.newest
                    } else {
                        version
                    }
                })
                .collect();
            for (p, version) in self.peers.iter().zip(versions) {
                let hb = Heartbeat {
                    version,
                    speaks: self.s.versions,
                    sender: self.s.me,
                    incarnation: self.incarnation,
                    sequence: self.sequence,
                    view: self.view,
                    weight,
                    ready: self.offers() && !self.policy_withdrawn,
                    state: self.state,
                    transient: self.transient,
                    ack: (p.incarnation, p.sequence.iter().copied().max().unwrap_or(0)),
                    digest: self.digest,
                    farm: self.s.farm,
                    moving_out: moving_out.clone(),
                    kept_in: kept_in.clone(),
                };
                let bytes = hb.encode(&self.s.keys);
                for network in 0..self.s.networks {
                    self.transmits.push_back(Transmit {
                        network,
                        to: p.id,
                        bytes: bytes.clone(),
                    });
                }
            }
            // Catch up without a burst if the caller was late.
            self.next_heartbeat =
                (self.next_heartbeat + self.s.period).max(now + self.s.period / 2);
        }
    }

    /// The buckets kept in (moving in, but given to another node since),
    /// as heartbeats carry them.
    fn kept_in_set(&self) -> BucketSet {
        self.bucket_set(self.n_in > 0, |b| {
            self.held[b] == Hold::In && !self.target[b]
        })
    }

    /// The `Out` buckets, as heartbeats carry them.
    fn moving_out_set(&self) -> BucketSet {
        self.bucket_set(self.n_out > 0, |b| self.held[b] == Hold::Out)
    }

    /// The buckets `pick` selects; none without a walk when `any` is false.
    fn bucket_set(&self, any: bool, pick: impl Fn(usize) -> bool) -> BucketSet {
        if !any {
            return BucketSet::none();
        }
        let mut words = vec![0u64; self.held.len().div_ceil(64)];
        for b in (0..self.held.len()).filter(|b| pick(*b)) {
            words[b / 64] |= 1 << (b % 64);
        }
        BucketSet::Buckets(words)
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

    fn set_hold(&mut self, b: usize, h: Hold) {
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

    /// Whether some live peer still serves the old connections of `b`.
    fn peer_moving_out(&self, b: u32, now: Duration) -> bool {
        self.peers
            .iter()
            .any(|p| p.moving_out.contains(b) && self.alive(p, now))
    }

    /// Whether some live peer still takes the new flows of `b` although
    /// the assignment moved it on (its move in has not ended).
    fn peer_kept_in(&self, b: u32, now: Duration) -> bool {
        self.peers
            .iter()
            .any(|p| p.kept_in.contains(b) && self.alive(p, now))
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

    /// Listening ends after `dead_after`, or as soon as every peer has
    /// been heard: then no peer is left that could be alive and unheard,
    /// and a joining node need not keep the buckets it is to take without
    /// an owner for new flows (its peers let go of them as soon as they
    /// hear it) for the whole period.
    fn done_listening(&self, now: Duration) -> bool {
        now >= self.listen_until || self.peers.iter().all(|p| self.alive(p, now))
    }

    /// Whether this node offers to own buckets (UP-ready, not draining).
    fn offers(&self) -> bool {
        self.ready && !self.draining
    }

    pub fn local_state(&self) -> (NodeState, bool) {
        (self.state, self.transient)
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
    fn disowned(&self, now: Duration) -> bool {
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

    fn update(&mut self, now: Duration) {
        for i in 0..self.peers.len() {
            let alive = self.alive(&self.peers[i], now);
            if alive
                && self.peers[i].was_alive
                && !self.heard_within(&self.peers[i], now, self.s.dead_after)
                && !self.peers[i].was_held
            {
                self.counters.deaths_held += 1;
            }
            let held = alive && !self.heard_within(&self.peers[i], now, self.s.dead_after);
            let p = &mut self.peers[i];
            p.was_held = held;
            if p.was_alive && !alive {
                self.counters.peer_deaths += 1;
            }
            if alive && !p.was_alive {
                p.alive_since = now;
            }
            p.was_alive = alive;
        }
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
        // The assignment's weights: the view members' announced ones, the
        // configured ones for the others.
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
        let digest = assignment_digest(view, &self.prefs_weights);
        let alive_count = 1 + self.peers.iter().filter(|p| self.alive(p, now)).count();
        let everyone = alive_count == self.ids.len();
        // A side counts itself for the majority by peers heard within
        // `quorum_after`, shorter than `dead_after`: cut from the others,
        // it withdraws before they count it dead and take its buckets,
        // even when it heard them up to a period later than they heard it.
        let quorum_count = 1 + self
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
        let disowned = self.disowned(now);
        if disowned && !self.disowned {
            self.counters.disowned += 1;
        }
        self.disowned = disowned;
        let policy_withdrawn = match self.s.split_brain {
            SplitBrain::ServeAll => false,
            SplitBrain::Majority => quorum_count * 2 <= self.ids.len(),
            SplitBrain::Witness => !everyone && !self.witness_reachable,
        };
        if policy_withdrawn != self.policy_withdrawn {
            // The peers that still hear it (it is deaf, not cut off) learn
            // at once that it serves nothing: its heartbeats say not
            // ready, so they take the buckets it dropped, and do not wait
            // for it to agree with a view it cannot hear.
            self.policy_withdrawn = policy_withdrawn;
            self.next_heartbeat = self.next_heartbeat.min(now);
        }
        let split_withdraw = disowned || policy_withdrawn;
        let withdraw = !self.offers() || split_withdraw;
        // A bucket still moving in when the assignment gives it to another
        // node is kept (its new flows still come here) until its move ends,
        // then handed on like an owned one: its connections stay. Not when
        // the application is down or the farm is split.
        let keep_in = self.s.continuity && self.ready && !split_withdraw;
        let mut changed = false;
        // Target: recomputed only when the assignment or the withdrawal
        // changed.
        let target_changed = self.target_of != Some((digest, withdraw));
        if target_changed {
            self.target_of = Some((digest, withdraw));
            let ids = &self.ids;
            let owners = self
                .prefs
                .owners(|id| ids.binary_search(&id).is_ok_and(|i| view & (1 << i) != 0));
            for (b, o) in owners.iter().enumerate() {
                self.target[b] = !withdraw && *o == Some(self.s.me);
            }
            // Let go first: a heartbeat never carries a view whose new
            // flows this node still takes for someone else, except buckets
            // it keeps in (announced as such: the new owner waits for
            // them). What it owned goes `Out` (its connections stay) with
            // continuity.
            for b in 0..self.held.len() {
                if self.target[b] {
                    continue;
                }
                match self.held[b] {
                    Hold::Owned if self.s.continuity && !split_withdraw => {
                        self.set_hold(b, Hold::Out);
                        self.out_deadline[b] = now + self.s.drain_timeout;
                        changed = true;
                    }
                    Hold::In if keep_in => {}
                    Hold::Owned | Hold::In => {
                        self.set_hold(b, Hold::None);
                        changed = true;
                    }
                    // A side that withdraws from a split keeps no
                    // connection: the other side counts it dead and takes
                    // its buckets whole, old flows included.
                    Hold::Out if split_withdraw => {
                        self.set_hold(b, Hold::None);
                        changed = true;
                    }
                    _ => {}
                }
            }
        }
        // Every live peer agrees, ready or not: one last heard not ready
        // may be coming up at this very moment, alone in its own view
        // (each would take every bucket the other's absence gives it),
        // or know a node this one has not heard again yet. One that is
        // not ready and has not agreed within `dead_after` of this view,
        // or of its coming back, hears nothing (it is deaf, or withdrawn
        // for not hearing): it is not waited for longer.
        let agreed = self.done_listening(now)
            && self.peers.iter().filter(|p| self.alive(p, now)).all(|p| {
                let agrees = p.view == self.view
                    && p.digest == self.digest
                    && p.farm == self.s.farm
                    && p.acked >= self.view_sequence;
                agrees || (!p.ready && now >= self.view_at.max(p.alive_since) + self.s.dead_after)
            });
        if agreed && !witness_confirmed {
            self.takes_pending = true;
        } else if agreed && (target_changed || !self.was_agreed || self.takes_pending) {
            // A bucket a live peer keeps in is taken once that peer hands
            // it on.
            self.takes_pending = false;
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
        }
        self.was_agreed = agreed;
        // A move in ends when no live peer serves the bucket's old flows:
        // the bucket is owned, or, kept in for a newer owner, handed on
        // (its connections stay, as an owned bucket's do).
        if self.n_in > 0 {
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
        }
        // A move out ends at the drain timeout at the latest.
        if self.first_out_deadline.is_some_and(|d| now >= d) {
            for b in 0..self.held.len() {
                if self.held[b] == Hold::Out && now >= self.out_deadline[b] {
                    self.set_hold(b, Hold::None);
                    self.next_heartbeat = self.next_heartbeat.min(now);
                    changed = true;
                }
            }
        }
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
        if changed {
            self.events.push_back(Event::OwnedChanged);
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Reports the peer a refused datagram claims to come from (the claim
    /// is not trusted: it only says where to look).
    fn note_rejected(&mut self, now: Duration, bytes: &[u8], why: Rejection) {
        let Some(id) = bytes.get(6..8).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            return;
        };
        if let Some(p) = self.peers.iter_mut().find(|p| p.id == id) {
            p.rejected = Some((now, why));
        }
    }

    /// The farm digest this node announces.
    pub fn farm(&self) -> u64 {
        self.s.farm
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

    /// Releases a node held at an older version: it speaks `versions`
    /// from now on. What each peer speaks is learnt again from its next
    /// heartbeat, the first heartbeats going out in this node's newest (a
    /// peer that cannot read them answers in its own, and hears this node
    /// in it from then on). A lower newest version is refused (false):
    /// peers that heard this incarnation announce a newer one would keep
    /// writing it; holding a node back takes a restart.
    pub fn set_versions(&mut self, now: Duration, versions: Versions) -> bool {
        if versions.newest < self.s.versions.newest {
            return false;
        }
        if versions != self.s.versions {
            self.s.versions = versions;
            self.peers.iter_mut().for_each(|p| {
                p.speaks = None;
                p.announced = false;
            });
            self.next_heartbeat = self.next_heartbeat.min(now);
        }
        true
    }

    pub fn versions(&self) -> Versions {
        self.s.versions
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
                agrees: p.view == self.view
                    && p.digest == self.digest
                    && p.farm == self.s.farm
                    && p.acked >= self.view_sequence,
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

    pub fn n_buckets(&self) -> u32 {
        self.s.n_buckets
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

    pub fn me(&self) -> u16 {
        self.s.me
    }

    pub fn networks(&self) -> usize {
        self.s.networks
    }
}

/// The version to write a peer's heartbeats in: the newest both speak;
/// this node's newest while the peer is unheard (or shares none: it then
/// reports this node as speaking another version).
fn talks(mine: Versions, peer: Option<Versions>) -> u8 {
    peer.and_then(|p| mine.common(p)).unwrap_or(mine.newest)
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
