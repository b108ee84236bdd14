//! Herd's lab and benchmarks: shared helpers for `herd-lab` and `herd-bench`.

pub mod app;
pub mod bench_drops;
pub mod bench_failover;
pub mod bench_fastpath;
pub mod bench_flows;
pub mod bench_serve;
pub mod lab;
pub mod pcap;
pub mod probe;

/// The median of a non-empty set of figures (sorts them).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
