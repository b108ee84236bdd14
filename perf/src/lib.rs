//! Herd's lab and benchmarks: shared helpers for `herd-lab` and `herd-bench`.
#![forbid(unsafe_code)]

pub mod app;
pub mod bench_drops;
pub mod bench_failover;
pub mod bench_fastpath;
pub mod bench_flood;
pub mod bench_flows;
pub mod bench_serve;
pub mod chaos;
pub mod child;
mod flood;
pub mod lab;
pub mod pcap;
pub mod probe;
pub mod procstat;

/// The median of a non-empty set of figures (sorts them); of an even
/// count, the mean of the two middle ones (not the upper one, which would
/// report the better of two rounds).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        return (v[mid - 1] + v[mid]) / 2.0;
    }
    v[mid]
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [2.0, 1.0]), 1.5);
        assert_eq!(median(&mut [5.0]), 5.0);
    }
}
