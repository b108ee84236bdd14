//! Continuity of moves without IO (docs/design.md §5): which table the
//! fastpath gets while buckets move, which kernel connections are the old
//! flows of a bucket moving out (the seed), when a move out ends, and which
//! connections are reset because their bucket was dropped outright.
//!
//! Inputs: the membership machine's holds at each change
//! ([`Continuity::publication`]), each census of the kernel's connections
//! ([`Census::of`], then [`Continuity::seed_from`] and
//! [`Continuity::release_empty`]), and the resets done. Outputs: tables to
//! publish, buckets to release, buckets whose connections to reset. The
//! driver (`farm.rs`) reads the kernel, runs `ss -K` and talks to the
//! machine; this module decides.

use crate::status::Moves;
use membership::machine::Hold;
use packet::flows::{FlowId, FlowSet};
use packet::table::BucketTable;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The continuity state of one node.
pub struct Continuity {
    n_buckets: u32,
    generation: u64,
    seed: Option<Arc<FlowSet>>,
    /// The `Out` buckets the seed was read for.
    seeded: Vec<u32>,
    /// Connections the kernel holds in `Out` buckets (last census).
    held_connections: u64,
    /// `Out` buckets found empty at the last census: released if still
    /// empty at the next (a connection being set up may not be listed yet).
    empty_once: Vec<u32>,
    /// Moves out ended by an empty census.
    released_empty: u64,
    /// Which buckets the machine held (owned, in or out) at the last
    /// publication (empty before the first).
    held: Vec<bool>,
    /// Buckets dropped outright since (not moved out with their
    /// connections): the kernel's connections left in them are reset.
    dropped: Vec<u32>,
    /// Connections reset so.
    reset_connections: u64,
}

/// A table to publish to the fastpath.
pub struct Publication {
    pub table: BucketTable,
    /// A census is wanted now: a bucket went out without its seed, or a
    /// bucket was dropped outright.
    pub census_now: bool,
}

/// What a census of the kernel's connections found in the buckets moving
/// out.
pub struct Census {
    /// The `Out` buckets when it was read (sorted).
    out: Vec<u32>,
    per_bucket: BTreeMap<u32, u64>,
    flows: FlowSet,
}

impl Census {
    /// The connections (each with its bucket, `None` when no rule serves
    /// it) that fall in `out` (sorted).
    pub fn of(
        out: Vec<u32>,
        connections: impl IntoIterator<Item = (Option<u32>, FlowId)>,
    ) -> Census {
        let mut per_bucket: BTreeMap<u32, u64> = BTreeMap::new();
        let mut flows = FlowSet::new();
        for (bucket, flow) in connections {
            if let Some(b) = bucket.filter(|b| out.binary_search(b).is_ok()) {
                *per_bucket.entry(b).or_default() += 1;
                flows.insert(flow);
            }
        }
        Census {
            out,
            per_bucket,
            flows,
        }
    }

    /// The connections found in the buckets moving out.
    pub fn connections(&self) -> u64 {
        self.per_bucket.values().sum()
    }

    pub fn buckets_out(&self) -> usize {
        self.out.len()
    }
}

impl Continuity {
    pub fn new(n_buckets: u32) -> Continuity {
        Continuity {
            n_buckets,
            generation: 1,
            seed: None,
            seeded: Vec::new(),
            held_connections: 0,
            empty_once: Vec::new(),
            released_empty: 0,
            held: Vec::new(),
            dropped: Vec::new(),
            reset_connections: 0,
        }
    }

    /// The table for the machine's holds (`holds[b]` for every bucket).
    /// New buckets out keep every unknown segment until their seed is
    /// read; the holder of bucket 0 answers ARP/NDP.
    pub fn publication(&mut self, holds: &[Hold]) -> Publication {
        let with = |h: Hold| {
            holds
                .iter()
                .enumerate()
                .filter(move |(_, x)| **x == h)
                .map(|(b, _)| b as u32)
        };
        let out: Vec<u32> = with(Hold::Out).collect();
        let mut census_now = false;
        if out.iter().any(|b| self.seeded.binary_search(b).is_err()) {
            self.seed = None;
            census_now = true;
        }
        if out.is_empty() {
            self.seed = None;
            self.seeded.clear();
            self.held_connections = 0;
        }
        let held: Vec<bool> = holds.iter().map(|h| *h != Hold::None).collect();
        if self.held.len() == held.len() {
            let before = self.dropped.len();
            self.dropped.extend(
                (0..held.len())
                    .filter(|b| self.held[*b] && !held[*b])
                    .map(|b| b as u32),
            );
            census_now |= self.dropped.len() > before;
        }
        self.held = held;
        self.generation += 1;
        let responder = matches!(holds.first(), Some(Hold::Owned | Hold::In));
        let table = BucketTable::new(
            self.generation,
            self.n_buckets,
            with(Hold::Owned),
            responder,
        )
        .with_moves(with(Hold::In), out, self.seed.clone());
        Publication { table, census_now }
    }

    /// Whether the seed is to be read (a bucket is out without it).
    pub fn needs_seed(&self) -> bool {
        self.seed.is_none()
    }

    /// Takes the census's connections as the seed when none is published.
    /// True: publish the table again (with the machine's holds of now;
    /// buckets gone out since the census are not covered, and the
    /// publication asks for another).
    pub fn seed_from(&mut self, census: &mut Census) -> bool {
        if self.seed.is_some() {
            return false;
        }
        self.seed = Some(Arc::new(std::mem::take(&mut census.flows)));
        self.seeded = census.out.clone();
        true
    }

    /// The buckets whose move out ends: found empty at this census and at
    /// the one before.
    pub fn release_empty(&mut self, census: &Census) -> Vec<u32> {
        self.held_connections = census.connections();
        let empty: Vec<u32> = census
            .out
            .iter()
            .copied()
            .filter(|b| !census.per_bucket.contains_key(b))
            .collect();
        let release: Vec<u32> = empty
            .iter()
            .copied()
            .filter(|b| self.empty_once.binary_search(b).is_ok())
            .collect();
        self.empty_once = empty;
        self.released_empty += release.len() as u64;
        release
    }

    /// The buckets dropped outright since the last call (sorted, each
    /// once): the kernel's connections in those still dropped are to be
    /// reset.
    pub fn take_dropped(&mut self) -> Vec<u32> {
        let mut dropped = std::mem::take(&mut self.dropped);
        dropped.sort_unstable();
        dropped.dedup();
        dropped
    }

    /// `n` connections were reset.
    pub fn note_reset(&mut self, n: u64) {
        self.reset_connections += n;
    }

    /// What `herd status` shows of the moves.
    pub fn status(&self) -> Moves {
        Moves {
            connections_held: self.held_connections,
            seeded: self.seed.is_some(),
            moves_ended_empty: self.released_empty,
            connections_reset: self.reset_connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const N: u32 = 8;

    fn holds(pairs: &[(u32, Hold)]) -> Vec<Hold> {
        let mut h = vec![Hold::None; N as usize];
        for (b, x) in pairs {
            h[*b as usize] = *x;
        }
        h
    }

    fn flow(port: u16) -> FlowId {
        FlowId::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1)), port, 80, 6)
    }

    #[test]
    fn a_bucket_moving_out_is_published_without_a_seed_until_a_census_reads_it() {
        let mut c = Continuity::new(N);
        let first = c.publication(&holds(&[(0, Hold::Owned), (1, Hold::Owned)]));
        assert!(first.table.owns(0) && first.table.owns(1));
        assert!(first.table.is_arp_responder());
        assert!(!first.census_now);

        let moving = c.publication(&holds(&[(0, Hold::Owned), (1, Hold::Out)]));
        assert!(
            moving.census_now,
            "a bucket out without its seed asks for a census"
        );
        assert!(moving.table.seed().is_none());
        assert!(c.needs_seed());

        let mut census = Census::of(
            vec![1],
            [
                (Some(1), flow(1000)),
                (Some(0), flow(1001)),
                (None, flow(1002)),
            ],
        );
        assert_eq!(
            census.connections(),
            1,
            "only the connections of buckets out count"
        );
        assert!(c.seed_from(&mut census));
        let seeded = c.publication(&holds(&[(0, Hold::Owned), (1, Hold::Out)]));
        assert!(!seeded.census_now);
        let seed = seeded.table.seed().expect("the seed is published");
        assert!(seed.contains(&flow(1000)));
        assert!(!seed.contains(&flow(1001)));
        assert!(c.status().seeded);
        assert_eq!(c.status().connections_held, 0, "counted by release_empty");

        // A second census does not replace the published seed.
        let mut again = Census::of(vec![1], []);
        assert!(!c.seed_from(&mut again));
    }

    #[test]
    fn another_bucket_going_out_drops_the_seed_and_asks_for_a_new_census() {
        let mut c = Continuity::new(N);
        c.publication(&holds(&[(1, Hold::Owned), (2, Hold::Owned)]));
        c.publication(&holds(&[(1, Hold::Out), (2, Hold::Owned)]));
        let mut census = Census::of(vec![1], [(Some(1), flow(1))]);
        assert!(c.seed_from(&mut census));
        let p = c.publication(&holds(&[(1, Hold::Out), (2, Hold::Out)]));
        assert!(p.census_now);
        assert!(
            p.table.seed().is_none(),
            "bucket 2's connections are not in the seed"
        );
        assert!(c.needs_seed());
    }

    #[test]
    fn a_move_out_ends_when_two_censuses_in_a_row_find_it_empty() {
        let mut c = Continuity::new(N);
        c.publication(&holds(&[(3, Hold::Owned), (4, Hold::Owned)]));
        c.publication(&holds(&[(3, Hold::Out), (4, Hold::Out)]));
        let first = Census::of(vec![3, 4], [(Some(4), flow(7))]);
        assert_eq!(
            c.release_empty(&first),
            Vec::<u32>::new(),
            "one empty census is not enough"
        );
        assert_eq!(c.status().connections_held, 1);
        let second = Census::of(vec![3, 4], [(Some(4), flow(7))]);
        assert_eq!(c.release_empty(&second), vec![3]);
        let third = Census::of(vec![4], []);
        assert_eq!(
            c.release_empty(&third),
            Vec::<u32>::new(),
            "bucket 4 was not empty before"
        );
        let fourth = Census::of(vec![4], []);
        assert_eq!(c.release_empty(&fourth), vec![4]);
        assert_eq!(c.status().moves_ended_empty, 2);
        assert_eq!(c.status().connections_held, 0);
    }

    #[test]
    fn only_buckets_dropped_outright_have_their_connections_reset() {
        let mut c = Continuity::new(N);
        c.publication(&holds(&[(0, Hold::Owned), (5, Hold::Owned), (6, Hold::In)]));
        assert!(c.take_dropped().is_empty(), "nothing before a change");
        // 5 moves out (its connections stay), 6 is dropped outright.
        let p = c.publication(&holds(&[(0, Hold::Owned), (5, Hold::Out)]));
        assert!(p.census_now);
        // Then 5's move ends at the drain timeout: dropped outright too.
        c.publication(&holds(&[(0, Hold::Owned)]));
        c.publication(&holds(&[(6, Hold::Owned)]));
        assert_eq!(c.take_dropped(), vec![0, 5, 6]);
        assert!(c.take_dropped().is_empty(), "each drop is handed out once");
        c.note_reset(3);
        assert_eq!(c.status().connections_reset, 3);
    }

    #[test]
    fn no_bucket_out_clears_the_seed_and_the_count() {
        let mut c = Continuity::new(N);
        c.publication(&holds(&[(1, Hold::Owned)]));
        c.publication(&holds(&[(1, Hold::Out)]));
        let mut census = Census::of(vec![1], [(Some(1), flow(9))]);
        c.seed_from(&mut census);
        c.release_empty(&census);
        assert_eq!(c.status().connections_held, 1);
        let p = c.publication(&holds(&[]));
        assert!(p.table.seed().is_none());
        assert!(!p.table.has_moves());
        assert_eq!(c.status().connections_held, 0);
        assert!(!c.status().seeded);
    }

    #[test]
    fn each_publication_has_a_newer_generation_and_the_responder_holds_bucket_0() {
        let mut c = Continuity::new(N);
        let a = c.publication(&holds(&[(0, Hold::In)]));
        let b = c.publication(&holds(&[(1, Hold::Owned)]));
        assert!(b.table.generation() > a.table.generation());
        assert!(
            a.table.is_arp_responder(),
            "a bucket moving in takes its new flows"
        );
        assert!(!b.table.is_arp_responder());
    }
}
