//! The bucket table and its read-copy-update publication to the lcores.
//!
//! A writer (static config today, the membership thread later) builds a new
//! immutable [`BucketTable`] and publishes it; each lcore holds a
//! [`TableReader`] whose `current()` is one pointer comparison when nothing
//! changed (arc-swap's `Cache`), so the packet path takes no lock and
//! allocates nothing. The old table is freed when the last lcore has moved
//! past it (reference counting stands in for a grace period).

use crate::flows::{FlowSet, Moving};
use arc_swap::{ArcSwap, Cache};
use std::sync::Arc;
use std::time::Instant;

pub use crate::flows::Move;

/// Which buckets this node accepts, as a bitset, which of the others are
/// moving in or out (flows decided one by one), and whether it answers ARP
/// and neighbor discovery for the VIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTable {
    generation: u64,
    n_buckets: u32,
    owned: Box<[u64]>,
    /// Empty when nothing moves: the packet path then checks one flag.
    moving_in: Box<[u64]>,
    moving_out: Box<[u64]>,
    /// The kernel's connections when the moves out began (`None` until the
    /// control plane has read them).
    seed: Option<Arc<FlowSet>>,
    arp_responder: bool,
    /// When it was published: lcores measure how long they took to see it.
    published_at: Option<Instant>,
}

impl BucketTable {
    /// A table of `n_buckets` (> 0) owning those in `owned`.
    pub fn new(
        generation: u64,
        n_buckets: u32,
        owned: impl IntoIterator<Item = u32>,
        arp_responder: bool,
    ) -> Self {
        assert!(n_buckets > 0, "a bucket table has at least one bucket");
        BucketTable {
            generation,
            n_buckets,
            owned: bitset(n_buckets, owned),
            moving_in: Box::new([]),
            moving_out: Box::new([]),
            seed: None,
            arp_responder,
            published_at: None,
        }
    }

    /// This table with buckets moving in and out (none of them owned);
    /// `seed` holds the old owner's connections once known.
    pub fn with_moves(
        mut self,
        moving_in: impl IntoIterator<Item = u32>,
        moving_out: impl IntoIterator<Item = u32>,
        seed: Option<Arc<FlowSet>>,
    ) -> Self {
        let n = self.n_buckets;
        let (i, o) = (bitset(n, moving_in), bitset(n, moving_out));
        let any = |b: &[u64]| b.iter().any(|w| *w != 0);
        self.moving_in = if any(&i) { i } else { Box::new([]) };
        self.moving_out = if any(&o) { o } else { Box::new([]) };
        for (w, (i, o)) in self.owned.iter_mut().zip(
            self.moving_in
                .iter()
                .chain(std::iter::repeat(&0))
                .zip(self.moving_out.iter().chain(std::iter::repeat(&0))),
        ) {
            *w &= !(i | o);
        }
        self.seed = seed;
        self
    }

    /// Whether some bucket moves (one load, on every packet of a bucket
    /// not owned).
    #[inline]
    pub fn has_moves(&self) -> bool {
        !self.moving_in.is_empty() || !self.moving_out.is_empty()
    }

    /// How bucket `b` moves, if it does.
    #[inline]
    pub fn moving(&self, b: u32) -> Option<Move> {
        let bit = |bits: &[u64]| {
            bits.get((b / 64) as usize)
                .is_some_and(|w| w & (1 << (b % 64)) != 0)
        };
        if bit(&self.moving_in) {
            Some(Move::In)
        } else if bit(&self.moving_out) {
            Some(Move::Out)
        } else {
            None
        }
    }

    #[inline]
    pub fn seed(&self) -> Option<&FlowSet> {
        self.seed.as_deref()
    }

    /// The buckets moving in direction `m`, ascending.
    pub fn moving_buckets(&self, m: Move) -> impl Iterator<Item = u32> + '_ {
        (0..self.n_buckets).filter(move |b| self.moving(*b) == Some(m))
    }

    pub fn published_at(&self) -> Option<Instant> {
        self.published_at
    }

    #[inline]
    pub fn n_buckets(&self) -> u32 {
        self.n_buckets
    }

    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    #[inline]
    pub fn owns(&self, bucket: u32) -> bool {
        self.owned
            .get((bucket / 64) as usize)
            .is_some_and(|w| w & (1 << (bucket % 64)) != 0)
    }

    #[inline]
    pub fn is_arp_responder(&self) -> bool {
        self.arp_responder
    }

    /// The owned buckets, ascending.
    pub fn owned_buckets(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.n_buckets).filter(|b| self.owns(*b))
    }

    pub fn owned_count(&self) -> u32 {
        self.owned.iter().map(|w| w.count_ones()).sum()
    }
}

fn bitset(n_buckets: u32, buckets: impl IntoIterator<Item = u32>) -> Box<[u64]> {
    let mut bits = vec![0u64; n_buckets.div_ceil(64) as usize].into_boxed_slice();
    for b in buckets {
        if b < n_buckets {
            bits[(b / 64) as usize] |= 1 << (b % 64);
        }
    }
    bits
}

/// A second reader of every published table that is not an lcore: the
/// XDP pre-filter's maps, given each table right after the lcores.
pub type Mirror = Arc<dyn Fn(&BucketTable) + Send + Sync>;

/// The writer's side: publishes new tables.
#[derive(Clone)]
pub struct TablePublisher {
    slot: Arc<ArcSwap<BucketTable>>,
    mirror: Option<Mirror>,
}

impl TablePublisher {
    pub fn new(initial: BucketTable) -> Self {
        TablePublisher {
            slot: Arc::new(ArcSwap::from_pointee(initial)),
            mirror: None,
        }
    }

    /// A publisher that also gives every table, the initial one first,
    /// to `mirror`.
    pub fn with_mirror(initial: BucketTable, mirror: Mirror) -> Self {
        mirror(&initial);
        TablePublisher {
            mirror: Some(mirror),
            ..TablePublisher::new(initial)
        }
    }

    /// Makes `table` the one every reader sees from its next `current()`.
    pub fn publish(&self, mut table: BucketTable) {
        table.published_at = Some(Instant::now());
        let table = Arc::new(table);
        self.slot.store(Arc::clone(&table));
        if let Some(m) = &self.mirror {
            m(&table);
        }
    }

    pub fn load(&self) -> Arc<BucketTable> {
        self.slot.load_full()
    }

    /// A reader for one lcore.
    pub fn reader(&self) -> TableReader {
        TableReader {
            cache: Cache::new(Arc::clone(&self.slot)),
        }
    }
}

/// One lcore's view of the published table.
pub struct TableReader {
    cache: Cache<Arc<ArcSwap<BucketTable>>, Arc<BucketTable>>,
}

impl TableReader {
    /// The newest published table; cheap when it has not changed.
    #[inline]
    pub fn current(&mut self) -> &BucketTable {
        self.cache.load()
    }
}

impl Moving for BucketTable {
    fn has_moves(&self) -> bool {
        BucketTable::has_moves(self)
    }

    fn moving(&self, b: u32) -> Option<Move> {
        BucketTable::moving(self, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owns_exactly_the_given_buckets() {
        let t = BucketTable::new(1, 100, [0, 63, 64, 99, 100, 5000], true);
        let owned: Vec<u32> = t.owned_buckets().collect();
        assert_eq!(owned, vec![0, 63, 64, 99]);
        assert_eq!(t.owned_count(), 4);
        assert!(!t.owns(1) && !t.owns(100) && !t.owns(u32::MAX));
    }

    #[test]
    fn readers_see_a_published_table() {
        let publisher = TablePublisher::new(BucketTable::new(1, 8, [0], true));
        let mut reader = publisher.reader();
        assert_eq!(reader.current().generation(), 1);
        let t = std::thread::spawn({
            let p = publisher.clone();
            move || p.publish(BucketTable::new(2, 8, [1, 2], false))
        });
        t.join().unwrap();
        let now = reader.current();
        assert_eq!(now.generation(), 2);
        assert!(now.owns(1) && !now.owns(0) && !now.is_arp_responder());
    }

    #[test]
    fn a_mirror_is_given_every_table_after_the_readers() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let publisher = TablePublisher::with_mirror(
            BucketTable::new(1, 8, [0], true),
            Arc::new(move |t: &BucketTable| record.lock().unwrap().push(t.generation())),
        );
        let mut reader = publisher.reader();
        publisher.clone().publish(BucketTable::new(2, 8, [1], true));
        assert_eq!(reader.current().generation(), 2);
        assert_eq!(*seen.lock().unwrap(), vec![1, 2]);
    }

    #[test]
    fn moving_buckets_are_not_owned_and_say_their_direction() {
        let t = BucketTable::new(1, 130, [0, 1, 2, 129], true).with_moves([1, 70], [2], None);
        assert!(t.has_moves());
        assert!(t.owns(0) && !t.owns(1) && !t.owns(2) && t.owns(129));
        assert_eq!(t.moving(1), Some(Move::In));
        assert_eq!(t.moving(70), Some(Move::In));
        assert_eq!(t.moving(2), Some(Move::Out));
        assert_eq!(t.moving(0), None);
        assert_eq!(t.moving_buckets(Move::In).collect::<Vec<_>>(), vec![1, 70]);
        let still = BucketTable::new(1, 130, [0], true).with_moves([], [], None);
        assert!(!still.has_moves() && still.moving(0).is_none());
    }
}
