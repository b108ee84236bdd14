//! What the bench measures: a client run's figure ([`Run`]), a setup's
//! runs in one round ([`Figures`]), and a layout and farm size's rounds
//! ([`Cell`]) with their herd/nftables comparison ([`Summary`]).

use super::cpu::Cpu;
use super::options::Layout;
use super::setups::Setup;
use crate::median;

/// One client run: its figure, the work done (requests, or MB for bulk)
/// and the CPU it cost.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Run {
    pub(super) value: f64,
    pub(super) units: f64,
    pub(super) cpu: Cpu,
}

/// One setup in one round.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Figures {
    pub(super) keepalive: Run,
    pub(super) newconn: Run,
    pub(super) c1: Run,
    pub(super) c1_p50_us: f64,
    pub(super) bulk: Run,
    pub(super) upload: Run,
}

impl Figures {
    /// The runs of the CPU table, with their column titles.
    pub(super) fn runs(&self) -> [(&'static str, &Run); 5] {
        [
            ("keepalive", &self.keepalive),
            ("newconn", &self.newconn),
            ("1 conn", &self.c1),
            ("bulk /MB", &self.bulk),
            ("upload /MB", &self.upload),
        ]
    }
}

/// The herd/nftables comparison of one layout and farm size (medians of
/// the rounds' ratios).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Summary {
    pub(super) keepalive_ratio: f64,
    pub(super) newconn_ratio: f64,
    pub(super) bulk_ratio: f64,
    pub(super) upload_ratio: f64,
    pub(super) c1_p50_extra_us: f64,
    pub(super) c1_ratio: f64,
}

/// Results of one layout and farm size: per round, per setup.
pub(super) struct Cell {
    pub(super) layout: Layout,
    pub(super) nodes: u32,
    pub(super) rounds: Vec<Vec<(Setup, Figures)>>,
}

impl Cell {
    /// The figures of `setup`, one per round it ran in.
    pub(super) fn of(&self, setup: Setup) -> Vec<Figures> {
        self.rounds
            .iter()
            .filter_map(|r| r.iter().find(|(s, _)| *s == setup).map(|(_, f)| *f))
            .collect()
    }

    /// Per round, herd's figure over nftables' (for the p50, the difference).
    pub(super) fn per_round(&self, f: impl Fn(&Figures, &Figures) -> f64) -> Vec<f64> {
        self.of(Setup::Herd)
            .iter()
            .zip(self.of(Setup::Nft).iter())
            .map(|(h, n)| f(h, n))
            .collect()
    }

    /// The medians over the rounds of herd/nftables within each round.
    pub(super) fn summary(&self) -> Summary {
        let m = |f: &dyn Fn(&Figures, &Figures) -> f64| median(&mut self.per_round(f));
        Summary {
            keepalive_ratio: m(&|h, n| h.keepalive.value / n.keepalive.value),
            newconn_ratio: m(&|h, n| h.newconn.value / n.newconn.value),
            bulk_ratio: m(&|h, n| h.bulk.value / n.bulk.value),
            upload_ratio: m(&|h, n| h.upload.value / n.upload.value),
            c1_p50_extra_us: m(&|h, n| h.c1_p50_us - n.c1_p50_us),
            c1_ratio: m(&|h, n| h.c1.value / n.c1.value),
        }
    }
}
