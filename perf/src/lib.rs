//! Herd's lab and benchmarks: shared helpers for `herd-lab` and `herd-bench`.

pub mod app;
pub mod lab;
pub mod probe;
