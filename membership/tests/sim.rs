//! Deterministic simulation of the membership state machine: a simulated
//! clock and network (delay, loss, reordering, duplication, partitions),
//! crashes and restarts, over many seeded runs.

use membership::assign::{Member, Preferences};
use membership::machine::{Hold, Machine, Rejection, Settings, SplitBrain, PROBE_EVERY};
use membership::wire::{
    BucketSet, Heartbeat, Key, Keyring, NodeState, Versions, OLDEST_VERSION, VERSION,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
const PERIOD: Duration = Duration::from_millis(25);
const DEAD_AFTER: Duration = Duration::from_millis(200);
const MAX_DELAY_US: u64 = 3_000;
const BUCKETS: u32 = 128;
const DRAIN_TIMEOUT: Duration = Duration::from_millis(300);
const OVERFLOW_HOLD: Duration = Duration::from_millis(1000);

/// xorshift64*: the simulation's only source of chance.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A datagram in flight: (delivery time, tie-breaker, to, network, bytes).
type InFlight = (Duration, u64, usize, usize, Vec<u8>);

struct Net {
    loss: u64,
    dup: u64,
    /// Partition: the side of each node; messages cross only within a side.
    side: Vec<u8>,
    /// Nodes whose heartbeats are lost on the way out (they still hear).
    mute: Vec<bool>,
    /// Nodes that hear nothing (their own heartbeats get through).
    deaf: Vec<bool>,
    /// Nodes whose driver reports, every period, that their own input
    /// overflowed (a flood).
    overflowing: Vec<bool>,
}

struct Sim {
    rng: Rng,
    now: Duration,
    nodes: Vec<Option<Machine>>,
    /// The farm definition (weights as configured)…
    configured: Vec<Member>,
    /// …and the weights the nodes run with (changed at run time).
    members: Vec<Member>,
    incarnations: Vec<u64>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    net: Net,
    split_brain: SplitBrain,
    /// Where the scenario is, for failure messages.
    phase: String,
    /// After a partition heals, both sides still hold what they served
    /// until they hear each other: a period and the network's delay, or a
    /// few periods when the first heartbeats across are lost. `dead_after`
    /// bounds it.
    safe_from: Duration,
    /// Also check that at most one live node serves a bucket's old flows
    /// (`Owned` or `Out`): true in scenarios without partitions.
    check_old_flows: bool,
    /// Simulates the driver's census: a node releases an `Out` bucket this
    /// long after it went out (None: only the drain timeout ends moves).
    release_after: Option<Duration>,
    out_since: Vec<Vec<Option<Duration>>>,
    /// Each node's hold of each bucket at the previous step: with
    /// `check_old_flows`, a ready node never lets go of a bucket whose
    /// flows it serves (`Owned` or `In`) but by moving it out.
    prev_hold: Vec<Vec<Hold>>,
    /// Each node's keyring (kept across its restarts).
    keys: Vec<Keyring>,
    /// The protocol versions each node speaks (kept across its restarts:
    /// an upgraded build).
    versions: Vec<Versions>,
}

/// The simulated farm's key.
fn farm_key() -> Keyring {
    Keyring::from(Key::new(b"simulation farm key 0123").unwrap())
}

impl Sim {
    fn new(seed: u64, n: usize, split_brain: SplitBrain) -> Sim {
        Sim::with_running(seed, n, n, split_brain)
    }

    /// The live nodes that take bucket `b`'s new flows.
    fn new_flow_holders(&self, b: u32) -> Vec<usize> {
        self.live()
            .into_iter()
            .filter(|i| self.nodes[*i].as_ref().unwrap().holds(b))
            .collect()
    }

    /// Every bucket is taken by one of `nodes` (new flows).
    fn held_by(&self, nodes: &[usize]) -> bool {
        (0..BUCKETS).all(|b| {
            nodes
                .iter()
                .any(|i| self.nodes[*i].as_ref().is_some_and(|m| m.holds(b)))
        })
    }

    /// A farm of `n` nodes, started and converged.
    fn converged_farm(seed: u64, n: usize, split_brain: SplitBrain) -> Sim {
        let mut sim = Sim::new(seed, n, split_brain);
        assert!(
            sim.run_until(Duration::from_secs(2), Sim::converged)
                .is_some(),
            "seed {seed}: {n} nodes do not converge"
        );
        sim
    }

    /// A farm of `n` nodes of which the first `running` start.
    fn with_running(seed: u64, n: usize, running: usize, split_brain: SplitBrain) -> Sim {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let members: Vec<Member> = (1..=n as u16)
            .map(|id| Member {
                id,
                weight: 1 + (rng.below(3) as u32),
            })
            .collect();
        let mut sim = Sim {
            rng,
            now: Duration::ZERO,
            nodes: (0..n).map(|_| None).collect(),
            configured: members.clone(),
            members,
            incarnations: vec![0; n],
            queue: BinaryHeap::new(),
            seq: 0,
            net: Net {
                loss: 0,
                dup: 0,
                side: vec![0; n],
                mute: vec![false; n],
                deaf: vec![false; n],
                overflowing: vec![false; n],
            },
            split_brain,
            phase: format!("seed {seed}, {n} nodes, cold start"),
            safe_from: Duration::ZERO,
            check_old_flows: false,
            release_after: None,
            out_since: vec![vec![None; BUCKETS as usize]; n],
            prev_hold: vec![vec![Hold::None; BUCKETS as usize]; n],
            keys: vec![farm_key(); n],
            versions: vec![Versions::BUILD; n],
        };
        for i in 0..running {
            sim.start(i);
        }
        sim
    }

    fn start(&mut self, i: usize) {
        self.incarnations[i] += 1;
        let settings = Settings {
            nodes: self.configured.clone(),
            me: i as u16 + 1,
            period: PERIOD,
            dead_after: DEAD_AFTER,
            networks: 2,
            n_buckets: BUCKETS,
            split_brain: self.split_brain,
            keys: self.keys[i].clone(),
            versions: self.versions[i],
            farm: 0,
            continuity: true,
            drain_timeout: DRAIN_TIMEOUT,
            overflow_hold: OVERFLOW_HOLD,
        };
        self.nodes[i] = Some(Machine::new(settings, self.incarnations[i], self.now));
        self.prev_hold[i] = vec![Hold::None; BUCKETS as usize];
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
    }

    fn step(&mut self) {
        self.now += MS;
        while let Some(Reverse((t, _, _, _, _))) = self.queue.peek() {
            if *t > self.now {
                break;
            }
            let Reverse((_, _, to, network, bytes)) = self.queue.pop().unwrap();
            if let Some(m) = self.nodes[to].as_mut() {
                m.handle_datagram(self.now, network, &bytes);
            }
        }
        for i in 0..self.nodes.len() {
            let Some(m) = self.nodes[i].as_mut() else {
                continue;
            };
            if self.net.overflowing[i] && self.now.as_millis().is_multiple_of(PERIOD.as_millis()) {
                m.note_input_overflow(self.now);
            }
            if m.next_timeout() <= self.now {
                m.handle_timeout(self.now);
            }
            let mut out = Vec::new();
            while let Some(t) = m.poll_transmit() {
                out.push(t);
            }
            while m.poll_event().is_some() {}
            if let Some(after) = self.release_after {
                let mut done = Vec::new();
                for b in 0..BUCKETS {
                    let since = &mut self.out_since[i][b as usize];
                    match (m.hold(b), *since) {
                        (Hold::Out, None) => *since = Some(self.now),
                        (Hold::Out, Some(t)) if self.now >= t + after => done.push(b),
                        (Hold::Out, _) => {}
                        _ => *since = None,
                    }
                }
                if !done.is_empty() {
                    m.release_moves(self.now, done);
                }
            }
            if self.check_old_flows {
                let (state, transient) = m.local_state();
                let ready = state == NodeState::Up && !transient;
                for b in 0..BUCKETS {
                    let (before, now) = (self.prev_hold[i][b as usize], m.hold(b));
                    assert!(
                        !ready || now != Hold::None || !matches!(before, Hold::Owned | Hold::In),
                        "{}: t={:?}: node {} dropped bucket {b} ({before:?}) and its flows",
                        self.phase,
                        self.now,
                        i + 1
                    );
                    self.prev_hold[i][b as usize] = now;
                }
            }
            for t in out {
                let to = usize::from(t.to) - 1;
                if self.net.side[i] != self.net.side[to]
                    || self.net.mute[i]
                    || self.net.deaf[to]
                    || self.rng.chance(self.net.loss)
                {
                    continue;
                }
                let copies = if self.rng.chance(self.net.dup) { 2 } else { 1 };
                for _ in 0..copies {
                    let delay = Duration::from_micros(100 + self.rng.below(MAX_DELAY_US));
                    self.seq += 1;
                    self.queue.push(Reverse((
                        self.now + delay,
                        self.seq,
                        to,
                        t.network,
                        t.bytes.clone(),
                    )));
                }
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
            self.check_safety();
        }
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// No two live nodes take one bucket's new flows (checked only while
    /// the network is not partitioned, as the spec says), and, where asked,
    /// no two serve its old flows.
    fn check_safety(&self) {
        if self.net.side.iter().any(|s| *s != self.net.side[0]) || self.now < self.safe_from {
            return;
        }
        for b in 0..BUCKETS {
            let with = |f: fn(Hold) -> bool| -> Vec<usize> {
                self.live()
                    .into_iter()
                    .filter(|i| f(self.nodes[*i].as_ref().unwrap().hold(b)))
                    .collect()
            };
            let new_flows = with(|h| matches!(h, Hold::Owned | Hold::In));
            assert!(
                new_flows.len() <= 1,
                "{}: t={:?}: bucket {b} takes new flows on {new_flows:?}",
                self.phase,
                self.now
            );
            if self.check_old_flows {
                let old_flows = with(|h| matches!(h, Hold::Owned | Hold::Out));
                assert!(
                    old_flows.len() <= 1,
                    "{}: t={:?}: bucket {b} serves old flows on {old_flows:?}: {:?}",
                    self.phase,
                    self.now,
                    old_flows
                        .iter()
                        .map(|i| self.nodes[*i].as_ref().unwrap().hold(b))
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    fn unowned(&self) -> u32 {
        (0..BUCKETS)
            .filter(|b| {
                !self
                    .live()
                    .iter()
                    .any(|i| self.nodes[*i].as_ref().unwrap().holds(*b))
            })
            .count() as u32
    }

    /// Each live node's holds, for failure messages.
    fn describe(&self) -> String {
        let mut out = String::new();
        for i in self.live() {
            let m = self.nodes[i].as_ref().unwrap();
            let list = |h: Hold| {
                m.with_hold(h)
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out += &format!(
                "\n node {}: state {:?} weight {} owned {} in [{}] out [{}] kept in {:?}",
                i + 1,
                m.local_state(),
                self.members[i].weight,
                m.with_hold(Hold::Owned).count(),
                list(Hold::In),
                list(Hold::Out),
                m.kept_in().collect::<Vec<_>>()
            );
        }
        out
    }

    /// The table every live node should converge to, with every move
    /// ended.
    fn converged(&self) -> bool {
        let live = self.live();
        if live
            .iter()
            .any(|i| self.nodes[*i].as_ref().unwrap().moving())
        {
            return false;
        }
        // Only UP-ready nodes own buckets.
        let ready = (NodeState::Up, false);
        let live: Vec<usize> = live
            .into_iter()
            .filter(|i| self.nodes[*i].as_ref().unwrap().local_state() == ready)
            .collect();
        // The assignment's weights: the running ones of the members, the
        // configured ones of the others (as every node computes them).
        let weights: Vec<Member> = self
            .members
            .iter()
            .zip(&self.configured)
            .enumerate()
            .map(|(i, (run, conf))| if live.contains(&i) { *run } else { *conf })
            .collect();
        let expected =
            Preferences::new(&weights, BUCKETS).owners(|id| live.contains(&(usize::from(id) - 1)));
        (0..BUCKETS).all(|b| {
            let holders = self.new_flow_holders(b);
            holders.len() == 1 && expected[b as usize] == Some(holders[0] as u16 + 1)
        })
    }

    fn run_until(&mut self, limit: Duration, cond: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let start = self.now;
        while self.now - start <= limit {
            if cond(self) {
                return Some(self.now - start);
            }
            self.step();
            self.check_safety();
        }
        None
    }
}

#[test]
fn seeded_runs_converge_fail_over_and_rejoin() {
    let runs: u64 = std::env::var("HERD_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut worst_failover = Duration::ZERO;
    for seed in 0..runs {
        let n = 2 + (seed % 5) as usize;
        let mut sim = Sim::new(seed, n, SplitBrain::ServeAll);
        sim.net.loss = sim.rng.below(10);
        sim.net.dup = sim.rng.below(10);
        // Cold start converges.
        let t = sim.run_until(Duration::from_secs(2), Sim::converged);
        assert!(t.is_some(), "seed {seed}: no convergence from cold start");
        let pause = Duration::from_millis(sim.rng.below(300));
        sim.run(pause);
        // A crash: every bucket owned again within dead-after + 2 periods
        // (+ the simulated network's delay).
        let victim = sim.rng.below(n as u64) as usize;
        sim.crash(victim);
        sim.phase = format!("seed {seed}, {n} nodes, after crash of node {}", victim + 1);
        let bound = DEAD_AFTER + 2 * PERIOD + Duration::from_micros(2 * MAX_DELAY_US) + 2 * MS;
        let t = sim.run_until(bound, |s| s.unowned() == 0);
        let Some(t) = t else {
            panic!(
                "seed {seed}: {} buckets unowned {bound:?} after a crash of {}",
                sim.unowned(),
                victim + 1
            )
        };
        worst_failover = worst_failover.max(t);
        assert!(
            sim.run_until(Duration::from_secs(1), Sim::converged)
                .is_some(),
            "seed {seed}: no convergence after crash"
        );
        // A partition, then healing: views converge again.
        if n >= 3 && sim.rng.chance(50) {
            for (i, s) in sim.net.side.iter_mut().enumerate() {
                *s = (i % 2) as u8;
            }
            let split = Duration::from_millis(300 + sim.rng.below(300));
            sim.run(split);
            sim.net.side.iter_mut().for_each(|s| *s = 0);
            sim.safe_from = sim.now + DEAD_AFTER;
            sim.phase = format!("seed {seed}, {n} nodes, partition healed");
            assert!(
                sim.run_until(Duration::from_secs(2), Sim::converged)
                    .is_some(),
                "seed {seed}: no convergence after a partition"
            );
        }
        // The node restarts: balance is restored.
        sim.start(victim);
        sim.phase = format!("seed {seed}, {n} nodes, node {} restarted", victim + 1);
        assert!(
            sim.run_until(Duration::from_secs(2), Sim::converged)
                .is_some(),
            "seed {seed}: no convergence after rejoin"
        );
    }
    println!("{runs} runs, worst time to re-own a crashed node's buckets: {worst_failover:?}");
}

#[test]
fn majority_side_serves_and_minority_withdraws() {
    let mut sim = Sim::converged_farm(7, 5, SplitBrain::Majority);
    // {1,2} | {3,4,5}
    sim.net.side = vec![0, 0, 1, 1, 1];
    // Withdrawn whole, within dead_after and a few periods (well before
    // the drain timeout): nothing kept moving out either (the majority
    // takes its buckets as a dead node's, old flows included).
    sim.run(DEAD_AFTER + 3 * PERIOD);
    for i in 0..2 {
        let m = sim.nodes[i].as_ref().unwrap();
        assert_eq!(
            m.owned().count() + m.with_hold(Hold::Out).count() + m.with_hold(Hold::In).count(),
            0,
            "node {} still holds buckets",
            i + 1
        );
    }
    sim.run(Duration::from_millis(600));
    let held = |s: &Sim, i: usize| s.nodes[i].as_ref().unwrap().owned().count();
    assert_eq!(held(&sim, 0) + held(&sim, 1), 0, "the minority withdrew");
    assert_eq!(
        (2..5).map(|i| held(&sim, i)).sum::<usize>(),
        BUCKETS as usize,
        "the majority serves all"
    );
}

#[test]
fn witness_decides_which_side_serves() {
    let mut sim = Sim::converged_farm(11, 4, SplitBrain::Witness);
    sim.run(Duration::from_millis(500));
    let before: Vec<Vec<u32>> = (0..4)
        .map(|i| sim.nodes[i].as_ref().unwrap().owned().collect())
        .collect();
    sim.net.side = vec![0, 0, 1, 1];
    let cut = sim.now;
    // Each side's last witness probe answered before the cut; the next
    // ones, started 300 ms later, answer side 0 and not side 1. Until
    // then no side takes the other's buckets: either could be the one
    // that lost the witness.
    let held_only_own = |s: &Sim| {
        (0..4).all(|i| {
            let m = s.nodes[i].as_ref().unwrap();
            m.owned().all(|b| before[i].contains(&b)) && m.with_hold(Hold::In).count() == 0
        })
    };
    for i in 0..4 {
        sim.nodes[i]
            .as_mut()
            .unwrap()
            .set_witness(cut, cut - 50 * MS, true);
    }
    let probe = cut + Duration::from_millis(300);
    while sim.now < probe {
        sim.step();
        assert!(
            held_only_own(&sim),
            "t={:?}: a side took the other's buckets before its witness answered",
            sim.now
        );
    }
    for i in 0..4 {
        let now = sim.now;
        sim.nodes[i]
            .as_mut()
            .unwrap()
            .set_witness(now, probe - 10 * MS, i < 2);
    }
    sim.run(Duration::from_millis(300));
    let held = |s: &Sim, i: usize| s.nodes[i].as_ref().unwrap().owned().count();
    assert_eq!(
        held(&sim, 0) + held(&sim, 1),
        BUCKETS as usize,
        "the side that reaches the witness serves all"
    );
    assert_eq!(held(&sim, 2) + held(&sim, 3), 0, "the other side withdraws");
}

#[test]
fn default_split_brain_serves_all_on_both_sides() {
    let mut sim = Sim::converged_farm(3, 4, SplitBrain::ServeAll);
    sim.net.side = vec![0, 0, 1, 1];
    sim.run(Duration::from_millis(600));
    let held = |s: &Sim, i: usize| s.nodes[i].as_ref().unwrap().owned().count();
    assert_eq!(held(&sim, 0) + held(&sim, 1), BUCKETS as usize);
    assert_eq!(held(&sim, 2) + held(&sim, 3), BUCKETS as usize);
}

#[test]
fn ten_percent_loss_on_both_networks_causes_no_failover() {
    let mut sim = Sim::converged_farm(5, 3, SplitBrain::ServeAll);
    sim.net.loss = 10;
    let views_before: Vec<u64> = (0..3)
        .map(|i| sim.nodes[i].as_ref().unwrap().counters().views)
        .collect();
    sim.run(Duration::from_secs(60));
    let views_after: Vec<u64> = (0..3)
        .map(|i| sim.nodes[i].as_ref().unwrap().counters().views)
        .collect();
    assert_eq!(views_before, views_after, "a view changed under 10 % loss");
}

/// A heartbeat of `sender` with the given counters and view.
fn heartbeat(sender: u16, incarnation: u64, sequence: u64, view: u64) -> Heartbeat {
    Heartbeat {
        version: membership::wire::VERSION,
        speaks: Versions::BUILD,
        sender,
        incarnation,
        sequence,
        view,
        weight: 1,
        ready: true,
        state: NodeState::Up,
        transient: false,
        ack: (0, 0),
        digest: 0,
        farm: 0,
        moving_out: BucketSet::none(),
        kept_in: BucketSet::none(),
    }
}

impl Sim {
    /// Gives node `i` keyring `keys` (now, and at its restarts).
    fn set_keys(&mut self, i: usize, keys: Keyring) {
        self.keys[i] = keys.clone();
        if let Some(m) = self.nodes[i].as_mut() {
            m.set_keys(keys);
        }
    }

    /// Node `i` speaks `versions` from now on: at once with `restart`
    /// false (a switch), at its restart with `restart` true (a new build).
    fn set_versions(&mut self, i: usize, versions: Versions, restart: bool) {
        self.versions[i] = versions;
        if restart {
            self.crash(i);
            self.start(i);
        } else if let Some(m) = self.nodes[i].as_mut() {
            assert!(m.set_versions(self.now, versions), "lowered at run time");
        }
    }

    /// The version each live node writes to each of its peers.
    fn talks(&self) -> Vec<u8> {
        self.nodes
            .iter()
            .flatten()
            .flat_map(|m| m.peers(self.now).into_iter().map(|p| p.talks))
            .collect()
    }

    /// Runs half a second more; then no peer died and no view changed
    /// since `before` (from [`Sim::deaths_and_views`]), and the farm agrees.
    fn settles_with_no_death_or_view_since(&mut self, before: &[(u64, u64)]) {
        self.run(Duration::from_millis(500));
        assert_eq!(
            self.deaths_and_views(),
            before,
            "a peer died or a view changed"
        );
        assert!(self.converged());
    }

    fn deaths_and_views(&self) -> Vec<(u64, u64)> {
        self.nodes
            .iter()
            .flatten()
            .map(|m| (m.counters().peer_deaths, m.counters().views))
            .collect()
    }
}

#[test]
fn a_key_rotated_node_by_node_causes_no_failover() {
    let mut sim = Sim::converged_farm(21, 3, SplitBrain::ServeAll);
    sim.net.loss = 10;
    let before = sim.deaths_and_views();
    let old = Key::new(b"simulation farm key 0123").unwrap();
    let new = Key::new(b"the farm's next key, rotated in").unwrap();
    // Accept the new key everywhere, then send with it, then drop the old
    // one: node by node, a few heartbeat periods apart.
    for ring in [
        vec![old.clone(), new.clone()],
        vec![new.clone(), old],
        vec![new],
    ] {
        for i in 0..3 {
            sim.set_keys(i, Keyring::new(ring.clone()).unwrap());
            sim.run(Duration::from_millis(150));
        }
    }
    sim.settles_with_no_death_or_view_since(&before);
    for m in sim.nodes.iter().flatten() {
        assert_eq!(m.counters().dropped_unauthenticated, 0);
    }
}

#[test]
fn a_farm_upgraded_node_by_node_under_loss_changes_no_view_and_ends_on_the_new_version() {
    let previous = Versions::up_to(OLDEST_VERSION).unwrap();
    let mut sim = Sim::new(31, 3, SplitBrain::ServeAll);
    for i in 0..3 {
        sim.set_versions(i, previous, true);
    }
    assert!(sim
        .run_until(Duration::from_secs(2), Sim::converged)
        .is_some());
    assert!(sim.talks().iter().all(|v| *v == OLDEST_VERSION));
    sim.net.loss = 10;
    let before = sim.deaths_and_views();
    // Node by node: while some node is of the previous release, everyone
    // talks to it in its version and the new ones talk the new version
    // among themselves.
    for i in 0..3 {
        sim.set_versions(i, Versions::BUILD, false);
        // Within a probe (a version-5 heartbeat cannot say more).
        sim.run(PROBE_EVERY + Duration::from_millis(300));
        let m = sim.nodes[i].as_ref().unwrap();
        for p in m.peers(sim.now) {
            let theirs = sim.versions[usize::from(p.id) - 1];
            assert_eq!(
                p.talks,
                theirs.newest,
                "node {} to node {}: {p:?}",
                i + 1,
                p.id
            );
        }
    }
    sim.settles_with_no_death_or_view_since(&before);
    assert!(
        sim.talks().iter().all(|v| *v == VERSION),
        "{:?}",
        sim.talks()
    );
}

#[test]
fn old_and_new_builds_restarting_in_turn_keep_one_owner_per_bucket() {
    // A real upgrade restarts each node with the new build (a view change
    // each time); the simulation checks one owner per bucket throughout,
    // and a restarted new node is heard by the old ones within a period.
    let previous = Versions::up_to(OLDEST_VERSION).unwrap();
    let mut sim = Sim::new(37, 3, SplitBrain::ServeAll);
    sim.check_old_flows = true;
    for i in 0..3 {
        sim.set_versions(i, previous, true);
    }
    assert!(sim
        .run_until(Duration::from_secs(2), Sim::converged)
        .is_some());
    for i in 0..3 {
        sim.set_versions(i, Versions::BUILD, true);
        assert!(
            sim.run_until(Duration::from_secs(3), Sim::converged)
                .is_some(),
            "node {} did not rejoin",
            i + 1
        );
    }
    assert!(sim.talks().iter().all(|v| *v == VERSION));
    // A rollback of one node to the previous build: the others talk its
    // version again.
    sim.set_versions(1, previous, true);
    assert!(sim
        .run_until(Duration::from_secs(3), Sim::converged)
        .is_some());
    let m = sim.nodes[0].as_ref().unwrap();
    let to_2 = m.peers(sim.now).into_iter().find(|p| p.id == 2).unwrap();
    assert_eq!(to_2.talks, OLDEST_VERSION);
    assert_eq!(to_2.speaks, Some(previous));
}

#[test]
fn a_peer_with_another_key_is_reported_and_the_policy_decides() {
    let stranger = || Keyring::from(Key::new(b"a key the others do not hold").unwrap());
    for policy in [SplitBrain::ServeAll, SplitBrain::Majority] {
        let mut sim = Sim::converged_farm(23, 3, policy);
        // Node 3 restarts with another key (a bad rotation): a split brain
        // the network does not show, so the one-owner check is off.
        sim.safe_from = Duration::from_secs(3600);
        sim.crash(2);
        sim.set_keys(2, stranger());
        sim.start(2);
        sim.run(Duration::from_millis(800));
        let now = sim.now;
        for (i, other) in [(0, 3u16), (2, 1)] {
            let m = sim.nodes[i].as_ref().unwrap();
            let p = m.peers(now).into_iter().find(|p| p.id == other).unwrap();
            assert!(!p.alive, "{policy:?}: node {} trusts node {other}", i + 1);
            assert_eq!(
                p.rejected.map(|(_, why)| why),
                Some(Rejection::Authentication),
                "{policy:?}: node {} does not say why node {other} is dead",
                i + 1
            );
            assert!(m.counters().dropped_unauthenticated > 0);
        }
        let held = |s: &Sim, i: usize| s.nodes[i].as_ref().unwrap().owned().count();
        assert_eq!(held(&sim, 0) + held(&sim, 1), BUCKETS as usize);
        match policy {
            // Both sides serve every bucket, as in any split brain, and
            // each reports the other as rejected (above).
            SplitBrain::ServeAll => assert_eq!(held(&sim, 2), BUCKETS as usize),
            // The node alone is a minority: it serves nothing.
            _ => assert_eq!(held(&sim, 2), 0),
        }
    }
}

#[test]
fn a_node_whose_farm_differs_is_reported_and_no_bucket_is_taken_meanwhile() {
    let mut sim = Sim::converged_farm(25, 3, SplitBrain::ServeAll);
    // Node 3 reloads a config the others do not have yet.
    let now = sim.now;
    sim.nodes[2].as_mut().unwrap().set_farm(now, 7);
    sim.run(Duration::from_millis(200));
    let now = sim.now;
    for (i, other, theirs) in [(0, 3u16, 7), (2, 1, 0)] {
        let m = sim.nodes[i].as_ref().unwrap();
        let p = m.peers(now).into_iter().find(|p| p.id == other).unwrap();
        assert!(
            p.alive && !p.agrees,
            "node {} agrees with node {other}",
            i + 1
        );
        assert_eq!(p.farm, theirs);
        assert_ne!(p.farm, m.farm());
    }
    // Node 2 dies: its buckets wait for the two others to agree again.
    let orphans: Vec<u32> = sim.nodes[1].as_ref().unwrap().owned().collect();
    assert!(!orphans.is_empty());
    sim.crash(1);
    sim.run(Duration::from_secs(1));
    for i in [0, 2] {
        let m = sim.nodes[i].as_ref().unwrap();
        assert!(
            orphans.iter().all(|b| m.hold(*b) == Hold::None),
            "node {} took a bucket while the farms differed",
            i + 1
        );
    }
    // Node 1 reloads the same config: they agree and take them.
    let now = sim.now;
    sim.nodes[0].as_mut().unwrap().set_farm(now, 7);
    assert!(sim
        .run_until(Duration::from_secs(1), Sim::converged)
        .is_some());
}

#[test]
fn forged_and_replayed_heartbeats_are_counted_not_trusted() {
    let mut sim = Sim::new(9, 2, SplitBrain::ServeAll);
    assert!(sim
        .run_until(Duration::from_secs(1), Sim::converged)
        .is_some());
    let now = sim.now;
    let m = sim.nodes[0].as_mut().unwrap();
    let forged = heartbeat(2, 99, 1, 0).encode(&Keyring::from(
        Key::new(b"not the farm's key at all").unwrap(),
    ));
    m.handle_datagram(now, 0, &forged);
    m.handle_datagram(now, 0, b"garbage");
    m.handle_datagram(now, 5, &forged);
    let c = m.counters();
    assert_eq!(c.dropped_unauthenticated, 2);
    assert_eq!(c.dropped_malformed, 1);
    // A replay of a genuine old heartbeat.
    let old = heartbeat(2, 1, 1, 0b11).encode(&farm_key());
    m.handle_datagram(now, 0, &old);
    assert_eq!(m.counters().dropped_replayed, 1);
    let unknown = heartbeat(9, 1, 1, 0).encode(&farm_key());
    m.handle_datagram(now, 0, &unknown);
    assert_eq!(m.counters().dropped_unknown_sender, 1);
    sim.run(Duration::from_millis(100));
    assert!(sim.converged());
}

#[test]
fn a_node_that_withdraws_by_state_hands_over_safely_and_rejoins() {
    for seed in 0..200u64 {
        let n = 2 + (seed % 4) as usize;
        let mut sim = Sim::new(seed, n, SplitBrain::ServeAll);
        sim.net.loss = sim.rng.below(5);
        assert!(sim
            .run_until(Duration::from_secs(2), Sim::converged)
            .is_some());
        let who = sim.rng.below(n as u64) as usize;
        sim.phase = format!("seed {seed}: node {} goes to WAIT", who + 1);
        let now = sim.now;
        sim.nodes[who]
            .as_mut()
            .unwrap()
            .set_state(now, NodeState::Wait, false);
        assert_eq!(
            sim.nodes[who].as_ref().unwrap().owned().count(),
            0,
            "a node that is not UP releases at once"
        );
        // The others take its share (handoff by agreement, safety checked
        // at every step).
        let others: Vec<usize> = (0..n).filter(|i| *i != who).collect();
        assert!(
            sim.run_until(Duration::from_secs(1), |s| s.held_by(&others))
                .is_some(),
            "{}: the share of a withdrawn node is not taken",
            sim.phase
        );
        sim.phase = format!("seed {seed}: node {} back UP", who + 1);
        let now = sim.now;
        sim.nodes[who]
            .as_mut()
            .unwrap()
            .set_state(now, NodeState::Up, false);
        assert!(
            sim.run_until(Duration::from_secs(2), Sim::converged)
                .is_some(),
            "{}: no convergence",
            sim.phase
        );
    }
}

#[test]
fn buckets_moving_between_live_nodes_keep_one_server_per_flow_and_every_move_ends() {
    let mut moves_seen = 0;
    let (mut overtaken, mut kept_seen) = (0, 0);
    for seed in 0..150u64 {
        let n = 3 + (seed % 3) as usize;
        let mut sim = Sim::with_running(seed, n, n - 1, SplitBrain::ServeAll);
        sim.net.loss = sim.rng.below(5);
        sim.net.dup = sim.rng.below(5);
        sim.check_old_flows = true;
        // Half the runs end moves when the "census" finds no connection
        // left, half only by the drain timeout.
        sim.release_after = (seed % 2 == 0).then(|| Duration::from_millis(20 + sim.rng.below(200)));
        sim.phase = format!("seed {seed}: {} of {n} nodes start", n - 1);
        assert!(
            sim.run_until(Duration::from_secs(2), Sim::converged)
                .is_some(),
            "{}",
            sim.phase
        );
        let moving = |s: &Sim| {
            s.live()
                .iter()
                .any(|i| s.nodes[*i].as_ref().unwrap().moving())
        };

        // A join moves buckets from live nodes: Out on their side, In on
        // the new node's, until the moves end.
        sim.start(n - 1);
        sim.phase = format!("seed {seed}: node {n} joins");
        assert!(
            sim.run_until(Duration::from_secs(1), moving).is_some(),
            "{}: no move",
            sim.phase
        );
        moves_seen += 1;
        // Two runs in three, once the new node has buckets moving in (the
        // old owners still serving connections), a weight change overtakes
        // the join: buckets
        // still moving in to the new node go on to another one. The new
        // node keeps them until their first move ends, then hands them on
        // with their connections.
        let joiner_moves_in = |s: &Sim| {
            s.nodes[n - 1]
                .as_ref()
                .is_some_and(|m| m.with_hold(Hold::In).next().is_some())
        };
        if seed % 3 != 0
            && sim
                .run_until(Duration::from_secs(1), joiner_moves_in)
                .is_some()
        {
            overtaken += 1;
            let k = sim.rng.below(n as u64 - 1) as usize;
            let w = sim.members[k].weight + 3;
            sim.members[k].weight = w;
            sim.phase = format!(
                "seed {seed}: node {n} joins, node {} to weight {w} meanwhile",
                k + 1
            );
            let now = sim.now;
            sim.nodes[k].as_mut().unwrap().set_weight(now, w);
            if sim
                .run_until(Duration::from_millis(200), |s| {
                    s.live()
                        .iter()
                        .any(|i| s.nodes[*i].as_ref().unwrap().kept_in().next().is_some())
                })
                .is_some()
            {
                kept_seen += 1;
            }
        }
        assert!(
            sim.run_until(2 * DRAIN_TIMEOUT + Duration::from_secs(1), Sim::converged)
                .is_some(),
            "{}: the moves did not end{}",
            sim.phase,
            sim.describe()
        );

        // A drain: the node leaves the view but stays alive, serving its
        // connections until its moves end.
        let drained = sim.rng.below(n as u64) as usize;
        sim.phase = format!("seed {seed}: node {} drains", drained + 1);
        let now = sim.now;
        sim.nodes[drained]
            .as_mut()
            .unwrap()
            .set_state(now, NodeState::Wait, false);
        assert!(
            sim.nodes[drained].as_ref().unwrap().moving(),
            "{}",
            sim.phase
        );
        assert!(
            sim.run_until(DRAIN_TIMEOUT + Duration::from_secs(1), Sim::converged)
                .is_some(),
            "{}: the moves did not end{}",
            sim.phase,
            sim.describe()
        );

        // A weight change at run time rebalances the same way.
        let k = (drained + 1) % n;
        let w = sim.members[k].weight + 2;
        sim.members[k].weight = w;
        sim.phase = format!("seed {seed}: node {} to weight {w}", k + 1);
        let now = sim.now;
        sim.nodes[k].as_mut().unwrap().set_weight(now, w);
        assert!(
            sim.run_until(DRAIN_TIMEOUT + Duration::from_secs(1), Sim::converged)
                .is_some(),
            "{}: no convergence to the new weights",
            sim.phase
        );
    }
    assert_eq!(moves_seen, 150);
    // Most overtaking weight changes moved on a bucket still moving in.
    println!("{kept_seen} of {overtaken} overtaken joins kept a bucket in");
    assert!(
        overtaken >= 30 && kept_seen * 2 >= overtaken,
        "{kept_seen} of {overtaken} overtaken joins kept a bucket in"
    );
}

#[test]
fn a_node_listens_dead_after_from_when_its_sockets_are_bound_however_late() {
    // A lone node of a two-node farm whose start took 1 s between the
    // machine and its sockets (locking memory on a busy host): it takes
    // nothing until dead_after past the binding, then the dead peer's
    // buckets too.
    let settings = Settings {
        nodes: vec![Member { id: 1, weight: 1 }, Member { id: 2, weight: 1 }],
        me: 1,
        period: PERIOD,
        dead_after: DEAD_AFTER,
        networks: 1,
        n_buckets: BUCKETS,
        split_brain: SplitBrain::ServeAll,
        keys: farm_key(),
        versions: Versions::BUILD,
        farm: 0,
        continuity: true,
        drain_timeout: DRAIN_TIMEOUT,
        overflow_hold: OVERFLOW_HOLD,
    };
    let mut m = Machine::new(settings, 1, Duration::ZERO);
    m.set_state(Duration::ZERO, NodeState::Up, false);
    let bound = Duration::from_secs(1);
    m.listen_from(bound);
    let mut t = Duration::ZERO;
    while t < bound + DEAD_AFTER {
        m.handle_timeout(t);
        assert_eq!(
            m.owned().count(),
            0,
            "took buckets at {t:?}, before listening long enough"
        );
        t += MS;
    }
    while t < bound + DEAD_AFTER + Duration::from_millis(100) {
        m.handle_timeout(t);
        t += MS;
    }
    assert_eq!(m.owned().count(), BUCKETS as usize);
}

#[test]
fn a_node_joining_a_farm_it_hears_whole_leaves_new_flows_unowned_only_briefly() {
    // Its peers let go of the buckets it is to take as soon as they hear
    // it; it takes them once it has heard every peer and they agree (not
    // after the whole listening period): a period and a few network
    // delays, against dead_after before.
    let bound = PERIOD + Duration::from_micros(4 * MAX_DELAY_US) + 5 * MS;
    let mut worst = Duration::ZERO;
    for seed in 0..200 {
        let n = 2 + (seed % 5) as usize;
        let mut sim = Sim::converged_farm(seed, n, SplitBrain::ServeAll);
        let joiner = sim.rng.below(n as u64) as usize;
        sim.crash(joiner);
        assert!(sim
            .run_until(Duration::from_secs(2), Sim::converged)
            .is_some());
        sim.start(joiner);
        sim.phase = format!("seed {seed}, {n} nodes, node {} joins", joiner + 1);
        let (mut gap, mut longest) = (Duration::ZERO, Duration::ZERO);
        let start = sim.now;
        while !sim.converged() {
            assert!(
                sim.now - start < Duration::from_secs(2),
                "{}: no convergence",
                sim.phase
            );
            sim.step();
            sim.check_safety();
            gap = if sim.unowned() > 0 {
                gap + MS
            } else {
                Duration::ZERO
            };
            longest = longest.max(gap);
        }
        assert!(
            longest <= bound,
            "{}: new flows of some bucket had no owner for {longest:?} (bound {bound:?})",
            sim.phase
        );
        worst = worst.max(longest);
    }
    println!("longest time a joining node left a bucket without an owner: {worst:?}");
}

#[test]
fn a_majority_takes_a_cut_off_nodes_buckets_only_after_it_withdrew() {
    // The cut node withdraws when it has not heard a majority for
    // `dead_after` less two periods; the others take its buckets at
    // `dead_after` and an agreement: never both at once, whatever the
    // phase of the heartbeats when the cut falls.
    for seed in 0..200 {
        let mut sim = Sim::converged_farm(seed, 3, SplitBrain::Majority);
        let phase = Duration::from_millis(sim.rng.below(40));
        sim.run(phase);
        let cut = sim.rng.below(3) as usize;
        sim.net.side = (0..3).map(|i| u8::from(i == cut)).collect();
        for _ in 0..500 {
            sim.step();
            for b in 0..BUCKETS {
                let holders = sim.new_flow_holders(b);
                assert!(
                    holders.len() <= 1,
                    "seed {seed}: t={:?} ({phase:?} into the period when node {} was cut): bucket {b} takes new flows on {holders:?}",
                    sim.now,
                    cut + 1
                );
            }
        }
    }
}

#[test]
fn a_node_no_one_hears_withdraws_as_the_others_take_its_buckets() {
    // Its heartbeats are lost on the way out: the others count it dead and
    // take its buckets; it hears their new view, without it, and
    // withdraws. Whatever the policy, a bucket takes new flows on two
    // nodes at most for the few milliseconds a heartbeat is on its way
    // (without the rule, for as long as the cut lasts); when its
    // heartbeats get through again it rejoins.
    let window = Duration::from_micros(MAX_DELAY_US + 1_000);
    for policy in [SplitBrain::ServeAll, SplitBrain::Majority] {
        for seed in 0..40 {
            let n = 2 + (seed as usize % 3);
            let mut sim = Sim::converged_farm(seed, n, policy);
            let phase = Duration::from_millis(sim.rng.below(40));
            sim.run(phase);
            let mute = sim.rng.below(n as u64) as usize;
            sim.net.mute[mute] = true;
            let mut double_since: Option<Duration> = None;
            for _ in 0..800 {
                sim.step();
                let double = (0..BUCKETS).any(|b| sim.new_flow_holders(b).len() > 1);
                match (double, double_since) {
                    (true, None) => double_since = Some(sim.now),
                    (true, Some(t)) => assert!(
                        sim.now - t <= window,
                        "{policy:?} seed {seed}: {n} nodes, node {} mute: a bucket on two nodes since {t:?} (now {:?})",
                        mute + 1,
                        sim.now
                    ),
                    (false, _) => double_since = None,
                }
            }
            // With `majority`, the others take its buckets only if they
            // are a majority without it (alone of two, the other withdraws
            // and it keeps serving its own).
            let taken = policy != SplitBrain::Majority || (n - 1) * 2 > n;
            let me = sim.nodes[mute].as_ref().unwrap();
            assert_eq!(me.counters().disowned, u64::from(taken));
            if taken {
                assert_eq!(
                    me.owned().count(),
                    0,
                    "{policy:?} seed {seed}: the mute node still owns buckets"
                );
                assert_eq!(
                    sim.unowned(),
                    0,
                    "{policy:?} seed {seed}: {}",
                    sim.describe()
                );
            } else {
                assert!(
                    me.owned().count() > 0,
                    "{policy:?} seed {seed}: {}",
                    sim.describe()
                );
            }
            sim.net.mute[mute] = false;
            assert!(
                sim.run_until(Duration::from_secs(3), Sim::converged)
                    .is_some(),
                "{policy:?} seed {seed}: no rejoin: {}",
                sim.describe()
            );
        }
    }
}

#[test]
fn nodes_coming_up_at_once_never_take_a_bucket_twice() {
    // Each last heard the others not ready: each alone in its view, each
    // would take every bucket until it heard them (found by this test: a
    // farm whose applications all recover at the same moment). A node
    // takes only once every live peer, ready or not, acknowledged its view.
    for seed in 0..100 {
        let n = 2 + (seed as usize % 3);
        let mut sim = Sim::converged_farm(seed, n, SplitBrain::ServeAll);
        for i in 0..n {
            let now = sim.now;
            sim.nodes[i]
                .as_mut()
                .unwrap()
                .set_state(now, NodeState::Wait, false);
        }
        sim.run(Duration::from_millis(300));
        sim.phase = format!("seed {seed}: {n} nodes come back UP at once");
        let now = sim.now;
        for i in 0..n {
            sim.nodes[i]
                .as_mut()
                .unwrap()
                .set_state(now, NodeState::Up, false);
        }
        // `run` checks at every step that no bucket takes new flows on
        // two nodes.
        sim.run(Duration::from_millis(300));
    }
}

#[test]
fn a_deaf_node_that_is_not_ready_delays_a_failover_by_dead_after_at_most() {
    // The survivors wait for every live peer to hear their view, ready or
    // not; one that hears nothing is not waited for past `dead_after`.
    for seed in 0..20 {
        let mut sim = Sim::converged_farm(seed, 3, SplitBrain::ServeAll);
        let now = sim.now;
        sim.nodes[2]
            .as_mut()
            .unwrap()
            .set_state(now, NodeState::Wait, false);
        assert!(sim
            .run_until(Duration::from_secs(1), |s| s.held_by(&[0, 1]))
            .is_some());
        sim.net.deaf[2] = true;
        sim.crash(0);
        let took = sim.run_until(Duration::from_secs(2), |s| {
            s.nodes[1].as_ref().unwrap().owned().count() == BUCKETS as usize
        });
        let took =
            took.unwrap_or_else(|| panic!("seed {seed}: node 2 never took node 1's buckets"));
        assert!(
            took <= DEAD_AFTER * 2 + 100 * MS,
            "seed {seed}: took {took:?}"
        );
    }
}

#[test]
fn a_deaf_node_withdraws_and_the_majority_takes_its_share_and_fails_over() {
    // `majority`: a node that hears no heartbeat (while it is heard) is a
    // minority of one and withdraws; its heartbeats say so (not ready),
    // so the others take its share instead of leaving it unowned, and it
    // does not hold up their failovers with a view it cannot share. Safety
    // is checked at every step.
    for seed in 0..30 {
        let n = 3 + (seed as usize % 2);
        let mut sim = Sim::converged_farm(seed, n, SplitBrain::Majority);
        let deaf = sim.rng.below(n as u64) as usize;
        sim.phase = format!("seed {seed}: {n} nodes, node {} deaf", deaf + 1);
        sim.net.deaf[deaf] = true;
        let others: Vec<usize> = (0..n).filter(|i| *i != deaf).collect();
        let took = sim.run_until(Duration::from_secs(2), |s| {
            s.nodes[deaf].as_ref().unwrap().owned().count() == 0 && s.held_by(&others)
        });
        assert!(
            took.is_some(),
            "{}: its share is not taken: {}",
            sim.phase,
            sim.describe()
        );
        // A failover beside it.
        let crashed = others[0];
        sim.crash(crashed);
        sim.phase = format!("{} and node {} crashed", sim.phase, crashed + 1);
        let rest: Vec<usize> = others[1..].to_vec();
        let took = sim.run_until(Duration::from_secs(2), |s| s.held_by(&rest));
        assert!(
            took.is_some_and(|t| t <= DEAD_AFTER * 2 + 100 * MS),
            "{}: failover took {took:?}: {}",
            sim.phase,
            sim.describe()
        );
        sim.phase = format!("{}, then healed", sim.phase);
        sim.net.deaf[deaf] = false;
        sim.start(crashed);
        assert!(
            sim.run_until(Duration::from_secs(3), Sim::converged)
                .is_some(),
            "{}: no convergence after the heal: {}",
            sim.phase,
            sim.describe()
        );
    }
}

/// Each live node's (view changes, peer deaths).
fn churn(sim: &Sim) -> Vec<(u64, u64)> {
    sim.live()
        .iter()
        .map(|i| {
            let c = sim.nodes[*i].as_ref().unwrap().counters();
            (c.views, c.peer_deaths)
        })
        .collect()
}

fn owned_sets(sim: &Sim) -> Vec<Vec<u32>> {
    sim.live()
        .iter()
        .map(|i| sim.nodes[*i].as_ref().unwrap().owned().collect())
        .collect()
}

#[test]
fn a_flood_that_deafens_every_node_moves_no_bucket_when_each_reports_its_overflow() {
    // Every node of the farm receives the flood: for 800 ms (less than
    // overflow_hold) none hears a heartbeat, and each driver reports its
    // input overflowing. No view change, no peer death, the same owners
    // before and after; safety is checked at every step. Without the
    // reports the same silence kills every peer.
    for seed in 0..20 {
        for reports in [true, false] {
            let n = 2 + (seed as usize % 3);
            let mut sim = Sim::converged_farm(seed, n, SplitBrain::ServeAll);
            sim.phase = format!("seed {seed}: {n} nodes deaf for 800 ms, reports {reports}");
            let (churn_before, owned_before) = (churn(&sim), owned_sets(&sim));
            if !reports {
                // Deaf and unheld, each node serves alone: a split brain,
                // as the spec allows; safety is not what this arm shows.
                sim.safe_from = sim.now + Duration::from_secs(10);
            }
            for i in 0..n {
                sim.net.deaf[i] = true;
                sim.net.overflowing[i] = reports;
            }
            sim.run(800 * MS);
            for i in 0..n {
                sim.net.deaf[i] = false;
            }
            sim.run(300 * MS);
            for i in 0..n {
                sim.net.overflowing[i] = false;
            }
            sim.run(DEAD_AFTER);
            if reports {
                assert_eq!(churn(&sim), churn_before, "{}", sim.phase);
                assert_eq!(owned_sets(&sim), owned_before, "{}", sim.phase);
                assert!(sim.live().iter().all(|i| {
                    let c = sim.nodes[*i].as_ref().unwrap().counters();
                    c.deaths_held >= (n as u64 - 1) && c.input_overflows > 0
                }));
            } else {
                assert!(
                    churn(&sim)
                        .iter()
                        .zip(&churn_before)
                        .all(|(after, before)| after.1 >= before.1 + n as u64 - 1),
                    "{}: the silence alone must kill every peer (else this test shows nothing)",
                    sim.phase
                );
            }
        }
    }
}

#[test]
fn a_drowning_node_keeps_its_share_and_its_peers_keep_counting_it() {
    // One node's input overflows (it hears nothing, its heartbeats go
    // out) for 800 ms: it takes no one's buckets and its peers do not
    // count it dead.
    for seed in 0..20 {
        let n = 2 + (seed as usize % 3);
        let mut sim = Sim::converged_farm(seed, n, SplitBrain::ServeAll);
        let drowning = sim.rng.below(n as u64) as usize;
        sim.phase = format!("seed {seed}: {n} nodes, node {} drowning", drowning + 1);
        let (churn_before, owned_before) = (churn(&sim), owned_sets(&sim));
        sim.net.deaf[drowning] = true;
        sim.net.overflowing[drowning] = true;
        sim.run(800 * MS);
        sim.net.deaf[drowning] = false;
        sim.run(200 * MS);
        sim.net.overflowing[drowning] = false;
        sim.run(DEAD_AFTER);
        assert_eq!(churn(&sim), churn_before, "{}", sim.phase);
        assert_eq!(owned_sets(&sim), owned_before, "{}", sim.phase);
    }
}

#[test]
fn a_real_death_under_a_flood_is_taken_over_corroborated_at_once_or_after_the_hold() {
    // Every node loses 30 % of its heartbeats to a flood and reports its
    // input overflowing; then a node crashes. When a survivor is not
    // flooded, it counts the crash at dead_after and its view tells the
    // others, who take over at once; when every survivor is flooded, the
    // crash is taken over after overflow_hold. Safety at every step.
    for seed in 0..20 {
        for one_hears in [true, false] {
            let n = 3 + (seed as usize % 2);
            let mut sim = Sim::converged_farm(seed, n, SplitBrain::ServeAll);
            sim.net.loss = 30;
            for i in 0..n {
                sim.net.overflowing[i] = true;
            }
            if one_hears {
                sim.net.overflowing[n - 1] = false;
            }
            sim.run(300 * MS);
            let crashed = sim.rng.below(n as u64 - 1) as usize;
            sim.phase = format!(
                "seed {seed}: {n} nodes flooded (one hears: {one_hears}), node {} crashed",
                crashed + 1
            );
            sim.crash(crashed);
            let rest: Vec<usize> = (0..n).filter(|i| *i != crashed).collect();
            let took = sim.run_until(Duration::from_secs(3), |s| s.held_by(&rest));
            let limit = if one_hears {
                DEAD_AFTER * 2 + 150 * MS
            } else {
                OVERFLOW_HOLD + 200 * MS
            };
            assert!(
                took.is_some_and(|t| t <= limit),
                "{}: took over in {took:?} (limit {limit:?}): {}",
                sim.phase,
                sim.describe()
            );
        }
    }
}
