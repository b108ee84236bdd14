//! `herd-bench flows`: what flow tracking costs while buckets move.
//!
//! The packet decision of one lcore (no DPDK: classification is pure) over
//! TCP segments of `--flows` distinct connections, in a shuffled order so
//! that tracker lookups miss the caches as real traffic does. Packets are
//! written into a burst of 32 frame buffers before each burst is
//! classified, as a NIC writes them into mbufs (the frames themselves stay
//! in cache, like DDIO delivers them):
//!
//! - **baseline**: every bucket owned, nothing moves (the normal path);
//! - **tracked**: every bucket moving out, the tracker holding all the
//!   flows (each packet is a tracker lookup; the seed is consulted only
//!   at a flow's first packet, in the warm-up).
//!
//! Rounds alternate baseline and tracked; the ratio is taken per round and
//! the median reported. Memory: the tracker's reserved bytes, and the
//! process's resident memory before and after filling it.

use crate::median;
use anyhow::{bail, Result};
use fastpath::decision::{Affinity, Classifier, RuleTable, Transport, Verdict, Vip};
use fastpath::flows::{FlowId, FlowSet, FlowTracker};
use fastpath::table::BucketTable;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Options {
    /// Flows tracked.
    #[arg(long, default_value_t = 1_000_000)]
    pub flows: u32,
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Passes over all flows per round and variant.
    #[arg(long, default_value_t = 3)]
    pub passes: u32,
}

const BUCKETS: u32 = 4096;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const VMAC: [u8; 6] = [0x02, 0x48, 198, 18, 0, 100];

fn classifier() -> Classifier {
    let mut rules = RuleTable::new();
    rules.insert(Transport::Tcp, 80, Affinity::ClientIpPort);
    Classifier {
        own_mac: [0x02, 0, 0, 0, 0, 1],
        vips4: vec![Vip {
            address: VIP,
            mac: VMAC,
        }],
        vips6: Vec::new(),
        rules,
    }
}

/// Client `i`: 198.19.0.0/16 addresses, 16 ports each.
fn client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i / 16),
        10_000 + (i % 16) as u16,
    )
}

/// Writes client `i`'s address and port into a frame made by [`frame`].
#[inline]
fn set_client(i: u32, out: &mut [u8]) {
    let (src, sport) = client(i);
    out[26..30].copy_from_slice(&src.octets());
    out[34..36].copy_from_slice(&sport.to_be_bytes());
}

const BURST: usize = 32;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A fixed pseudo-random permutation (xorshift, Fisher-Yates).
fn shuffled(n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

pub fn run(o: &Options) -> Result<()> {
    if o.flows == 0 || o.rounds == 0 || o.passes == 0 {
        bail!("--flows, --rounds and --passes must be > 0");
    }
    let n = o.flows;
    let c = classifier();
    // TCP ACKs to the VIP's port 80; each packet's client is written in.
    let (src, sport) = client(0);
    let ack = crate::pcap::tcp_frame(src, sport, VIP, 80, VMAC, crate::pcap::TCP_ACK);
    let mut burst = vec![ack; BURST];
    let order = shuffled(n);
    let seed: FlowSet = (0..n)
        .map(|i| {
            let (src, sport) = client(i);
            FlowId::new(IpAddr::V4(src), sport, 80, 6)
        })
        .collect();
    let owned = BucketTable::new(1, BUCKETS, 0..BUCKETS, true);
    let moving =
        BucketTable::new(2, BUCKETS, [], true).with_moves([], 0..BUCKETS, Some(Arc::new(seed)));

    let rss_before = rss_bytes();
    let mut tracker = FlowTracker::new(n as usize, 60_000);
    // Warm-up: every flow's first packet enters the tracker.
    for &i in &order {
        set_client(i, &mut burst[0]);
        let v = c.classify_tracked(&burst[0], &moving, Some((&mut tracker, 0)));
        assert_eq!(v, Verdict::Accept, "a seeded flow is the old owner's");
    }
    let rss_after = rss_bytes();
    let counts = tracker.counts();
    if counts.tracked != u64::from(n) {
        bail!("the tracker holds {} flows, not {n}", counts.tracked);
    }

    let mut pass = |tracked: bool, tracker: &mut FlowTracker| -> f64 {
        let start = Instant::now();
        let mut accepted = 0u64;
        for _ in 0..o.passes {
            for chunk in order.chunks(BURST) {
                for (f, &i) in burst.iter_mut().zip(chunk) {
                    set_client(i, f);
                }
                for f in &burst[..chunk.len()] {
                    let v = if tracked {
                        c.classify_tracked(f, &moving, Some((&mut *tracker, 1)))
                    } else {
                        c.classify(f, &owned)
                    };
                    accepted += u64::from(v == Verdict::Accept);
                }
            }
        }
        let packets = u64::from(o.passes) * u64::from(n);
        assert_eq!(
            accepted, packets,
            "every packet is accepted in both variants"
        );
        start.elapsed().as_nanos() as f64 / packets as f64
    };
    let (mut base, mut tracked, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let b = pass(false, &mut tracker);
        let t = pass(true, &mut tracker);
        println!(
            "round {round}: baseline {b:.1} ns/packet, tracked {t:.1} ns/packet, ratio {:.2}",
            t / b
        );
        base.push(b);
        tracked.push(t);
        ratios.push(t / b);
    }
    let (b, t, r) = (median(&mut base), median(&mut tracked), median(&mut ratios));
    let reserved = tracker.reserved_bytes() as f64;
    let rss = rss_after.saturating_sub(rss_before) as f64;
    println!(
        "{n} tracked flows: reserved {:.1} MiB ({:.0} bytes/flow), resident +{:.1} MiB",
        reserved / 1048576.0,
        reserved / f64::from(n),
        rss / 1048576.0
    );
    println!(
        "median: baseline {b:.1} ns/packet, tracked {t:.1} ns/packet (+{:.1} ns), ratio {r:.2}",
        t - b
    );
    println!(
        "RESULT flows tracked={n} base_ns={b:.1} tracked_ns={t:.1} extra_ns={:.1} ratio={r:.2} reserved_mib={:.1} bytes_per_flow={:.0} rss_mib={:.1}",
        t - b,
        reserved / 1048576.0,
        reserved / f64::from(n),
        rss / 1048576.0
    );
    Ok(())
}
