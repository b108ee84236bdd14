//! The chaos run's faults: which, on which node, for how long, drawn from
//! a seed so that a run can be repeated.
//!
//! Sans-IO: this only decides; `chaos::run` injects and heals.

use std::fmt;
use std::time::Duration;

/// One kind of fault the chaos run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL of the node's `herd`; healed by starting it again (a join).
    Crash,
    /// SIGKILL of the node's application; its checker withdraws the node;
    /// healed by starting the application.
    AppKill,
    /// SIGTERM of the node's `herd` (a clean stop); healed by starting it
    /// again (a join).
    StopStart,
    /// `herd drain`; healed by `herd start` (the node comes back, or ends
    /// its drain).
    Drain,
    /// `herd weight W`; healed by `herd weight config`.
    Weight,
    /// The node's link to the bridge goes down; healed by bringing it up.
    LinkDown,
    /// Every node loses a share of the heartbeats it receives.
    HeartbeatLoss,
    /// The node hears no heartbeat and sends none (it is cut from the
    /// others, not from the clients).
    Partition,
    /// The node's heartbeats are lost on the way out: the others count it
    /// dead while it still hears them (a one-way cut).
    Mute,
    /// Busy processes on every CPU.
    CpuHog,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::Crash,
        FaultKind::AppKill,
        FaultKind::StopStart,
        FaultKind::Drain,
        FaultKind::Weight,
        FaultKind::LinkDown,
        FaultKind::HeartbeatLoss,
        FaultKind::Partition,
        FaultKind::Mute,
        FaultKind::CpuHog,
    ];

    /// Faults after which the node's own connections may break: its
    /// `herd` or its application is gone, or nobody can reach it.
    /// Every other fault must break no connection at all.
    pub fn may_break_its_node(self) -> bool {
        matches!(
            self,
            FaultKind::Crash
                | FaultKind::AppKill
                | FaultKind::StopStart
                | FaultKind::LinkDown
                | FaultKind::Partition
                | FaultKind::Mute
        )
    }

    /// Faults that take the node's buckets from it: the others must serve
    /// them again within the recovery bound.
    pub fn takes_its_buckets(self) -> bool {
        self.may_break_its_node() || self == FaultKind::Drain
    }

    /// Faults that leave the node unreachable to the clients, or unable
    /// to answer for its buckets, while they last.
    pub fn isolates_its_node(self) -> bool {
        matches!(self, FaultKind::LinkDown | FaultKind::Partition)
    }

    /// Faults that concern one node (the others concern the farm).
    pub fn has_node(self) -> bool {
        !matches!(self, FaultKind::HeartbeatLoss | FaultKind::CpuHog)
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::AppKill => "app-kill",
            FaultKind::StopStart => "stop-start",
            FaultKind::Drain => "drain",
            FaultKind::Weight => "weight",
            FaultKind::LinkDown => "link-down",
            FaultKind::HeartbeatLoss => "heartbeat-loss",
            FaultKind::Partition => "partition",
            FaultKind::Mute => "mute",
            FaultKind::CpuHog => "cpu-hog",
        }
    }
}

/// One fault of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// The node (1-based) it hits; 0 for faults of the whole farm.
    pub node: u32,
    /// How long it lasts before it is healed.
    pub hold: Duration,
    /// `HeartbeatLoss`: the percentage lost (10–30).
    pub loss_percent: u32,
    /// `Weight`: the new weight (0–3, never the configured 1).
    pub weight: u32,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind.name())?;
        if self.kind.has_node() {
            write!(f, " s{}", self.node)?;
        }
        match self.kind {
            FaultKind::HeartbeatLoss => write!(f, " {}%", self.loss_percent)?,
            FaultKind::Weight => write!(f, " to {}", self.weight)?,
            _ => {}
        }
        write!(f, " for {} ms", self.hold.as_millis())
    }
}

/// The faults of a run with `seed` on a farm of `nodes`, of `kinds`:
/// every kind once in a seeded order first (a short run sees each), then
/// kinds at random. Endless; the run takes what its time allows.
pub struct Schedule {
    rng: fastrand::Rng,
    nodes: u32,
    kinds: Vec<FaultKind>,
    first: Vec<FaultKind>,
}

impl Schedule {
    pub fn new(seed: u64, nodes: u32, kinds: &[FaultKind]) -> Schedule {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut kinds = kinds.to_vec();
        if kinds.is_empty() {
            kinds = FaultKind::ALL.to_vec();
        }
        let mut first = kinds.clone();
        rng.shuffle(&mut first);
        first.reverse(); // popped from the back
        Schedule {
            rng,
            nodes: nodes.max(1),
            kinds,
            first,
        }
    }
}

impl Iterator for Schedule {
    type Item = Fault;

    fn next(&mut self) -> Option<Fault> {
        let kind = match self.first.pop() {
            Some(k) => k,
            None => self.kinds[self.rng.usize(..self.kinds.len())],
        };
        let node = if kind.has_node() {
            self.rng.u32(1..=self.nodes)
        } else {
            0
        };
        let hold_ms = match kind {
            // Long enough for several heartbeat periods of loss, and for
            // the busy processes to matter.
            FaultKind::HeartbeatLoss | FaultKind::CpuHog => self.rng.u64(3000..=8000),
            _ => self.rng.u64(500..=3000),
        };
        let weight = draw_weight(&mut self.rng);
        Some(Fault {
            kind,
            node,
            hold: Duration::from_millis(hold_ms),
            loss_percent: self.rng.u32(10..=30),
            weight,
        })
    }
}

/// A `Weight` fault's new weight: 0 (standby), 2 or 3, never the
/// configured 1.
fn draw_weight(rng: &mut fastrand::Rng) -> u32 {
    [0, 2, 3][rng.usize(..3)]
}

/// A node fault injected while a farm-wide fault lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    /// How long after the farm-wide fault it is injected.
    pub after: Duration,
    pub fault: Fault,
}

/// One step of a run: a fault and, inside a farm-wide one (heartbeat loss,
/// busy CPUs), sometimes a node fault as well: a crash while heartbeats
/// are lost, a drain while every CPU is busy. The node fault is healed
/// before the farm-wide one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub inner: Option<Inner>,
}

/// The steps of a run: [`Schedule`]'s faults, and with `overlap` a node
/// fault inside every other farm-wide fault on average, drawn from a
/// second generator seeded from the same seed (the faults themselves are
/// [`Schedule`]'s whether or not they overlap).
pub struct Steps {
    faults: Schedule,
    rng: fastrand::Rng,
    nodes: u32,
    node_kinds: Vec<FaultKind>,
}

impl Steps {
    pub fn new(seed: u64, nodes: u32, kinds: &[FaultKind], overlap: bool) -> Steps {
        let faults = Schedule::new(seed, nodes, kinds);
        let node_kinds = if overlap {
            faults
                .kinds
                .iter()
                .copied()
                .filter(|k| k.has_node())
                .collect()
        } else {
            Vec::new()
        };
        Steps {
            faults,
            rng: fastrand::Rng::with_seed(seed ^ 0x6f76_6572_6c61_7021),
            nodes: nodes.max(1),
            node_kinds,
        }
    }
}

impl Iterator for Steps {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        let fault = self.faults.next()?;
        let mut inner = None;
        if !fault.kind.has_node() && !self.node_kinds.is_empty() && self.rng.bool() {
            let kind = self.node_kinds[self.rng.usize(..self.node_kinds.len())];
            // Farm-wide faults hold 3-8 s: the node fault fits inside
            // with at least 300 ms of the farm-wide fault on either side.
            let outer_ms = fault.hold.as_millis() as u64;
            let hold_ms = self
                .rng
                .u64(500..=outer_ms.saturating_sub(1000).clamp(500, 3000));
            let after_ms = self
                .rng
                .u64(300..=outer_ms.saturating_sub(hold_ms + 300).max(300));
            inner = Some(Inner {
                after: Duration::from_millis(after_ms),
                fault: Fault {
                    kind,
                    node: self.rng.u32(1..=self.nodes),
                    hold: Duration::from_millis(hold_ms),
                    loss_percent: fault.loss_percent,
                    weight: draw_weight(&mut self.rng),
                },
            });
        }
        Some(Step { fault, inner })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_faults_and_every_kind_comes_first() {
        let a: Vec<Fault> = Schedule::new(7, 3, &FaultKind::ALL).take(40).collect();
        let b: Vec<Fault> = Schedule::new(7, 3, &FaultKind::ALL).take(40).collect();
        assert_eq!(a, b);
        let c: Vec<Fault> = Schedule::new(8, 3, &FaultKind::ALL).take(40).collect();
        assert_ne!(a, c);
        let mut first: Vec<FaultKind> = a[..FaultKind::ALL.len()].iter().map(|f| f.kind).collect();
        first.sort();
        assert_eq!(first, FaultKind::ALL.to_vec());
        for f in &a {
            assert_eq!(f.kind.has_node(), (1..=3).contains(&f.node), "{f}");
            assert!((10..=30).contains(&f.loss_percent));
            assert!(f.weight != 1 && f.weight <= 3);
            assert!(f.hold >= Duration::from_millis(500) && f.hold <= Duration::from_secs(8));
        }
    }

    #[test]
    fn only_the_kinds_asked_for_are_drawn() {
        let kinds = [FaultKind::Partition, FaultKind::Crash];
        let faults: Vec<Fault> = Schedule::new(3, 5, &kinds).take(50).collect();
        assert!(faults.iter().all(|f| kinds.contains(&f.kind)));
        assert!(faults.iter().any(|f| f.kind == FaultKind::Crash));
        assert!(faults.iter().all(|f| (1..=5).contains(&f.node)));
    }

    #[test]
    fn node_faults_come_inside_farm_wide_ones_and_end_before_them() {
        let steps: Vec<Step> = Steps::new(5, 3, &FaultKind::ALL, true).take(200).collect();
        let alone: Vec<Fault> = Schedule::new(5, 3, &FaultKind::ALL).take(200).collect();
        assert_eq!(
            steps.iter().map(|s| s.fault).collect::<Vec<_>>(),
            alone,
            "the same faults, overlapping or not"
        );
        let mut inside = 0;
        for s in &steps {
            let Some(i) = s.inner else { continue };
            inside += 1;
            assert!(
                !s.fault.kind.has_node(),
                "only inside a farm-wide fault: {}",
                s.fault
            );
            assert!(
                i.fault.kind.has_node() && (1..=3).contains(&i.fault.node),
                "{}",
                i.fault
            );
            assert!(i.after >= Duration::from_millis(300));
            assert!(
                i.after + i.fault.hold + Duration::from_millis(300) <= s.fault.hold,
                "{} after {:?} inside {}",
                i.fault,
                i.after,
                s.fault
            );
            assert!(i.fault.hold >= Duration::from_millis(500));
        }
        let farm_wide = steps.iter().filter(|s| !s.fault.kind.has_node()).count();
        assert!(
            inside > farm_wide / 4 && inside < farm_wide,
            "{inside} of {farm_wide}"
        );
        let again: Vec<Step> = Steps::new(5, 3, &FaultKind::ALL, true).take(200).collect();
        assert_eq!(steps, again, "a seed gives the same steps");
    }

    #[test]
    fn without_overlap_or_without_node_faults_every_step_is_one_fault() {
        assert!(Steps::new(5, 3, &FaultKind::ALL, false)
            .take(100)
            .all(|s| s.inner.is_none()));
        let farm_only = [FaultKind::HeartbeatLoss, FaultKind::CpuHog];
        assert!(Steps::new(5, 3, &farm_only, true)
            .take(100)
            .all(|s| s.inner.is_none()));
    }
}
