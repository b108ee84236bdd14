//! The bucket table and its read-copy-update publication to the lcores.
//!
//! A writer (static config today, the membership thread later) builds a new
//! immutable [`BucketTable`] and publishes it; each lcore holds a
//! [`TableReader`] whose `current()` is one pointer comparison when nothing
//! changed (arc-swap's `Cache`), so the packet path takes no lock and
//! allocates nothing. The old table is freed when the last lcore has moved
//! past it (reference counting stands in for a grace period).

use arc_swap::{ArcSwap, Cache};
use std::sync::Arc;
use std::time::Instant;

/// Which buckets this node accepts, as a bitset, and whether it answers ARP
/// and neighbor discovery for the VIPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTable {
    generation: u64,
    n_buckets: u32,
    owned: Box<[u64]>,
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
        let mut bits = vec![0u64; n_buckets.div_ceil(64) as usize].into_boxed_slice();
        for b in owned {
            if b < n_buckets {
                bits[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
        BucketTable {
            generation,
            n_buckets,
            owned: bits,
            arp_responder,
            published_at: None,
        }
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

/// The writer's side: publishes new tables.
#[derive(Clone)]
pub struct TablePublisher {
    slot: Arc<ArcSwap<BucketTable>>,
}

impl TablePublisher {
    pub fn new(initial: BucketTable) -> Self {
        TablePublisher {
            slot: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// Makes `table` the one every reader sees from its next `current()`.
    pub fn publish(&self, mut table: BucketTable) {
        table.published_at = Some(Instant::now());
        self.slot.store(Arc::new(table));
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
}
