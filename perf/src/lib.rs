//! Herd's lab and benchmarks: shared helpers for `herd-lab` and `herd-bench`.

pub mod app;
pub mod bench_failover;
pub mod bench_fastpath;
pub mod bench_flows;
pub mod lab;
pub mod pcap;
pub mod probe;
