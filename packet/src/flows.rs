//! Flow tracking for buckets that move between live nodes (docs/design.md §5).
//!
//! Every node receives every packet of the VIP, so the old owner and the new
//! owner of a moving bucket see the same packets and can each decide, alone
//! and alike, whose a packet is:
//!
//! | packet of a moving bucket            | old owner (`Out`)            | new owner (`In`)          |
//! |--------------------------------------|------------------------------|---------------------------|
//! | a flow it tracks                     | its tracked owner            | its tracked owner         |
//! | TCP SYN of an untracked flow         | takes it only for affinity   | takes it unless affinity  |
//! | other TCP of an untracked flow       | takes it if the kernel had it when the move began (the *seed*); while no seed is published yet, takes it | leaves it |
//! | UDP, ICMP, fragments                 | takes it                     | leaves it                 |
//!
//! *Affinity* (rules keyed by client IP): a client that sent, within the
//! idle timeout, a non-SYN packet that was not a flow of the new owner's
//! still has live connections on the old owner, so its new connections go
//! there too. Both owners observe exactly that from the same packets.
//!
//! Each lcore has its own tracker (no sharing, no lock). Memory is bounded:
//! the tables are allocated once at their capacity, and a flow that does not
//! fit is counted and decided as if untracked. Entries idle longer than the
//! idle timeout, or whose bucket no longer moves, are swept.

use crate::counters::FlowStats;
use hashbrown::HashMap;
use std::collections::HashSet;

/// Which way a bucket moves, from this node's side (docs/design.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    /// This node is the new owner: it takes new flows, not the old ones.
    In,
    /// This node is the old owner: it keeps its flows until the move ends.
    Out,
}

/// Which buckets move: what a sweep needs of the bucket table (the table
/// holds the seed, a [`FlowSet`]; this keeps the two modules from
/// depending on each other).
pub trait Moving {
    fn has_moves(&self) -> bool;
    fn moving(&self, b: u32) -> Option<Move>;
}

/// A connection to a VIP as the fastpath sees it (the VIP address is left
/// out: one client port talks to one VIP port at a time in practice, and a
/// collision only merges two flows' ownership, which is still correct for
/// one of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId {
    /// The client's address, IPv4 mapped into IPv6.
    pub client: [u8; 16],
    pub client_port: u16,
    pub vip_port: u16,
    pub protocol: u8,
}

impl FlowId {
    pub fn new(client: std::net::IpAddr, client_port: u16, vip_port: u16, protocol: u8) -> Self {
        FlowId {
            client: mapped(client),
            client_port,
            vip_port,
            protocol,
        }
    }
}

/// An address as IPv6 (IPv4 mapped): one key type for both versions.
pub fn mapped(a: std::net::IpAddr) -> [u8; 16] {
    match a {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// The connections the kernel held when a move began: the old owner's
/// flows. Built by the control plane, read by every lcore.
pub type FlowSet = HashSet<FlowId>;

/// What the tracker needs of one packet of a moving bucket.
#[derive(Clone, Copy, Debug)]
pub struct FlowPacket {
    pub id: FlowId,
    pub bucket: u32,
    pub kind: PacketKind,
    /// The rule keys by client IP (affinity applies).
    pub client_affinity: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind {
    /// A TCP SYN without ACK: a new connection.
    Syn,
    /// Any other TCP segment.
    Tcp,
    /// UDP, ICMP, fragments: no connection to follow.
    Connectionless,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    mine: bool,
    bucket: u32,
    last_ms: u32,
}

/// When a client last sent a packet that was not a flow of the new owner.
#[derive(Clone, Copy, Debug)]
struct Client {
    last_old_ms: u32,
}

/// One lcore's flows of the moving buckets.
pub struct FlowTracker {
    flows: HashMap<FlowId, Entry>,
    clients: HashMap<[u8; 16], Client>,
    capacity: usize,
    idle_ms: u32,
    mine: usize,
    /// Flows (or clients) not tracked because the table was full.
    full: u64,
}

impl FlowTracker {
    /// A tracker of at most `capacity` flows (and as many clients), whose
    /// entries expire after `idle_ms` without a packet.
    pub fn new(capacity: usize, idle_ms: u32) -> Self {
        FlowTracker {
            flows: HashMap::with_capacity(capacity),
            clients: HashMap::with_capacity(capacity),
            capacity,
            idle_ms,
            mine: 0,
            full: 0,
        }
    }

    /// Whether this node accepts `p`, a packet of a bucket moving in
    /// direction `direction`, at `now_ms` (a clock in milliseconds that
    /// may wrap). `seed` is the old owner's flows when the move began.
    #[inline]
    pub fn decide(
        &mut self,
        now_ms: u32,
        direction: Move,
        seed: Option<&FlowSet>,
        p: &FlowPacket,
    ) -> bool {
        let out = direction == Move::Out;
        let mine = match p.kind {
            PacketKind::Connectionless => return out,
            _ => {
                if let Some(e) = self.flows.get_mut(&p.id) {
                    e.last_ms = now_ms;
                    let mine = e.mine;
                    // A packet of the old owner's flow keeps its client's
                    // affinity alive.
                    if p.kind == PacketKind::Tcp && p.client_affinity && mine == out {
                        self.touch_client(p, now_ms);
                    }
                    return mine;
                }
                match p.kind {
                    PacketKind::Syn => {
                        let old_owner_keeps = p.client_affinity
                            && self
                                .clients
                                .get(&p.id.client)
                                .is_some_and(|c| now_ms.wrapping_sub(c.last_old_ms) < self.idle_ms);
                        old_owner_keeps == out
                    }
                    _ => {
                        // Not a flow this node saw start in the move: its
                        // client has a connection that is not the new
                        // owner's. It is the old owner's if the kernel had
                        // it when the move began (before the seed is
                        // published: anything not known to be the new
                        // owner's).
                        if p.client_affinity {
                            self.touch_client(p, now_ms);
                        }
                        if !out || !seed.is_none_or(|s| s.contains(&p.id)) {
                            return false;
                        }
                        true
                    }
                }
            }
        };
        self.insert(p, mine, now_ms);
        mine
    }

    #[inline]
    fn touch_client(&mut self, p: &FlowPacket, now_ms: u32) {
        if let Some(c) = self.clients.get_mut(&p.id.client) {
            c.last_old_ms = now_ms;
        } else if self.clients.len() < self.capacity {
            self.clients.insert(
                p.id.client,
                Client {
                    last_old_ms: now_ms,
                },
            );
        } else {
            self.full += 1;
        }
    }

    #[inline]
    fn insert(&mut self, p: &FlowPacket, mine: bool, now_ms: u32) {
        if self.flows.len() >= self.capacity {
            self.full += 1;
            return;
        }
        self.flows.insert(
            p.id,
            Entry {
                mine,
                bucket: p.bucket,
                last_ms: now_ms,
            },
        );
        if mine {
            self.mine += 1;
        }
    }

    /// Forgets idle entries and those of buckets that no longer move; all
    /// of them at once when `table` has no move. Called about once a
    /// second while moves last, and once when they end.
    pub fn sweep(&mut self, now_ms: u32, table: &impl Moving) {
        if !table.has_moves() {
            if !self.flows.is_empty() || !self.clients.is_empty() {
                // `clear` keeps the allocation: no allocation at the next move.
                self.flows.clear();
                self.clients.clear();
                self.mine = 0;
            }
            return;
        }
        let idle = self.idle_ms;
        let mut mine = 0;
        self.flows.retain(|_, e| {
            let keep = now_ms.wrapping_sub(e.last_ms) < idle && table.moving(e.bucket).is_some();
            mine += usize::from(keep && e.mine);
            keep
        });
        self.mine = mine;
        self.clients
            .retain(|_, c| now_ms.wrapping_sub(c.last_old_ms) < idle);
    }

    /// What it tracks now, under the names `herd status` shows.
    pub fn counts(&self) -> FlowStats {
        FlowStats {
            tracked: self.flows.len() as u64,
            held: self.mine as u64,
            table_full: self.full,
        }
    }

    /// Bytes reserved by the tables (what a full tracker uses).
    pub fn reserved_bytes(&self) -> usize {
        // hashbrown: one control byte plus one slot per bucket.
        self.flows.capacity() * (std::mem::size_of::<(FlowId, Entry)>() + 1)
            + self.clients.capacity() * (std::mem::size_of::<([u8; 16], Client)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    const IDLE: u32 = 10_000;

    /// Buckets moving in (the bucket table's part a sweep reads).
    struct MovingIn(Vec<u32>);

    impl Moving for MovingIn {
        fn has_moves(&self) -> bool {
            !self.0.is_empty()
        }
        fn moving(&self, b: u32) -> Option<Move> {
            self.0.contains(&b).then_some(Move::In)
        }
    }

    fn pkt(client: u8, port: u16, kind: PacketKind, affinity: bool) -> FlowPacket {
        FlowPacket {
            id: FlowId::new(IpAddr::V4(Ipv4Addr::new(198, 19, 0, client)), port, 7000, 6),
            bucket: 1,
            kind,
            client_affinity: affinity,
        }
    }

    /// An old and a new owner fed the same packets.
    struct Pair {
        old: FlowTracker,
        new: FlowTracker,
        seed: Option<FlowSet>,
    }

    impl Pair {
        fn new(seed: Option<FlowSet>) -> Pair {
            Pair {
                old: FlowTracker::new(1000, IDLE),
                new: FlowTracker::new(1000, IDLE),
                seed,
            }
        }
        /// (old accepts, new accepts)
        fn send(&mut self, now: u32, p: FlowPacket) -> (bool, bool) {
            (
                self.old.decide(now, Move::Out, self.seed.as_ref(), &p),
                self.new.decide(now, Move::In, self.seed.as_ref(), &p),
            )
        }
    }

    use PacketKind::*;

    #[test]
    fn existing_flows_stay_and_new_flows_move() {
        let seeded = pkt(1, 1000, Tcp, false);
        let mut pair = Pair::new(Some(FlowSet::from([seeded.id])));
        assert_eq!(pair.send(0, seeded), (true, false));
        assert_eq!(pair.send(1, pkt(2, 2000, Syn, false)), (false, true));
        assert_eq!(pair.send(2, pkt(2, 2000, Tcp, false)), (false, true));
        assert_eq!(pair.send(3, seeded), (true, false));
        // A segment of a flow nobody had: nobody takes it (the kernel that
        // answered would reset it).
        assert_eq!(pair.send(4, pkt(3, 3000, Tcp, false)), (false, false));
        assert_eq!(pair.old.counts().held, 1);
        assert_eq!(pair.new.counts().held, 1);
    }

    #[test]
    fn without_a_seed_the_old_owner_keeps_every_unknown_segment() {
        let mut pair = Pair::new(None);
        assert_eq!(pair.send(0, pkt(1, 1000, Tcp, false)), (true, false));
        assert_eq!(pair.send(1, pkt(2, 2000, Syn, false)), (false, true));
        // The new owner's flow stays the new owner's even without a seed.
        assert_eq!(pair.send(2, pkt(2, 2000, Tcp, false)), (false, true));
    }

    #[test]
    fn connectionless_traffic_stays_with_the_old_owner() {
        let mut pair = Pair::new(Some(FlowSet::new()));
        assert_eq!(
            pair.send(0, pkt(1, 9000, Connectionless, true)),
            (true, false)
        );
        // Even from a client the new owner serves.
        assert_eq!(pair.send(1, pkt(2, 2000, Syn, true)), (false, true));
        assert_eq!(
            pair.send(2, pkt(2, 9000, Connectionless, true)),
            (true, false)
        );
    }

    #[test]
    fn a_client_with_live_connections_keeps_its_server() {
        let old_flow = pkt(1, 1000, Tcp, true);
        let mut pair = Pair::new(Some(FlowSet::from([old_flow.id])));
        assert_eq!(pair.send(0, old_flow), (true, false));
        // Its new connection goes where its live one is…
        assert_eq!(pair.send(10, pkt(1, 1001, Syn, true)), (true, false));
        assert_eq!(pair.send(11, pkt(1, 1001, Tcp, true)), (true, false));
        // …a client-ip-port rule does not hold it…
        assert_eq!(pair.send(12, pkt(1, 1002, Syn, false)), (false, true));
        // …and once its old traffic has been idle for the timeout, its
        // next connection moves.
        assert_eq!(pair.send(12 + IDLE, pkt(1, 1003, Syn, true)), (false, true));
        // Another client goes to the new owner.
        assert_eq!(pair.send(20, pkt(2, 2000, Syn, true)), (false, true));
    }

    #[test]
    fn the_new_owners_own_flows_do_not_hold_a_client_on_the_old_one() {
        let mut pair = Pair::new(Some(FlowSet::new()));
        assert_eq!(pair.send(0, pkt(1, 1000, Syn, true)), (false, true));
        assert_eq!(pair.send(1, pkt(1, 1000, Tcp, true)), (false, true));
        assert_eq!(pair.send(2, pkt(1, 1001, Syn, true)), (false, true));
    }

    #[test]
    fn a_full_tracker_counts_and_still_decides() {
        let mut t = FlowTracker::new(1, IDLE);
        let seed = FlowSet::new();
        assert!(t.decide(0, Move::In, Some(&seed), &pkt(1, 1, Syn, false)));
        assert!(t.decide(0, Move::In, Some(&seed), &pkt(2, 2, Syn, false)));
        assert_eq!(t.counts().tracked, 1);
        assert_eq!(t.counts().table_full, 1);
    }

    #[test]
    fn sweep_forgets_idle_flows_and_everything_when_moves_end() {
        let mut t = FlowTracker::new(100, IDLE);
        let seed = FlowSet::new();
        t.decide(0, Move::In, Some(&seed), &pkt(1, 1, Syn, false));
        t.decide(IDLE - 1, Move::In, Some(&seed), &pkt(2, 2, Syn, false));
        t.sweep(IDLE + 1, &MovingIn(vec![1]));
        assert_eq!(t.counts().tracked, 1);
        assert_eq!(t.counts().held, 1);
        t.sweep(IDLE + 1, &MovingIn(vec![]));
        assert_eq!(t.counts().tracked, 0);
    }
}
