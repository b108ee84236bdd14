//! `herd-bench`: Herd's benchmarks. Each prints its figures and ends with
//! one line `RESULT name key=value ...`. See perf/RESULTS.md.
#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "herd-bench", about = "Herd's benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Classify-and-forward rate on one lcore against dpdk-testpmd
    /// 5tswap on the same core and traffic; idle CPU per lcore; first
    /// packet latency after idle.
    Fastpath(perf::bench_fastpath::Options),
    /// Outage per client flow when a node of a three-node membership farm
    /// is SIGKILLed, over ten crashes.
    Failover(perf::bench_failover::Options),
    /// Per-packet cost and memory of flow tracking (buckets in move) at
    /// 1M tracked flows, against the same packets with nothing moving.
    Flows(perf::bench_flows::Options),
    /// CPU cost of a packet of another node's bucket: Herd's fastpath
    /// against an nftables jhash farm node.
    Drops(perf::bench_drops::Options),
    /// The served path: nginx behind Herd against an nftables jhash kernel
    /// farm node and a plain kernel node, loaded by wrk, ab and curl.
    Serve(perf::bench_serve::Options),
    /// A packet generator (trafgen) floods the farm at rising rates while
    /// a client makes requests to the VIP: Herd (af_packet, af_xdp)
    /// against an nftables jhash kernel farm.
    Flood(perf::bench_flood::Options),
}

fn main() -> ExitCode {
    let result: Result<()> = match Cli::parse().command {
        Cmd::Fastpath(o) => perf::bench_fastpath::run(&o),
        Cmd::Failover(o) => perf::bench_failover::run(&o),
        Cmd::Flows(o) => perf::bench_flows::run(&o),
        Cmd::Drops(o) => perf::bench_drops::run(&o),
        Cmd::Serve(o) => perf::bench_serve::run(&o),
        Cmd::Flood(o) => perf::bench_flood::run(&o),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
