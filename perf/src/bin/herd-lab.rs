//! `herd-lab`: the Herd lab on one machine (docs/design.md §7). See `perf::lab`.
#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use perf::{app, lab, probe};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "herd-lab",
    about = "Herd's lab: a farm in network namespaces on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the lab and start its nodes (cleans up a crashed lab first).
    Up {
        #[arg(long, default_value_t = 2)]
        nodes: u32,
        /// How many of the nodes to start (default: all).
        #[arg(long)]
        running: Option<u32>,
        /// Rx queues (and lcores) per node.
        #[arg(long, default_value_t = 1)]
        queues: u16,
        #[arg(long, default_value = "vmac")]
        delivery: String,
        /// The nodes' port driver: af_packet or af_xdp.
        #[arg(long, default_value = "af_packet")]
        driver: String,
        /// Bucket ownership: static (fixed ranges) or membership (the protocol).
        #[arg(long, default_value = "static")]
        ownership: String,
        /// With membership: serve-all, majority or witness (the client).
        #[arg(long, default_value = "serve-all")]
        split_brain: String,
        /// With membership: 1 heartbeat network (through the fastpath) or 2
        /// (plus a kernel-only one).
        #[arg(long, default_value_t = 1)]
        heartbeat_networks: u32,
        /// A TOML file appended to every node's config.
        #[arg(long)]
        extra_config: Option<std::path::PathBuf>,
    },
    /// Remove everything the lab created.
    Down,
    /// SIGKILL a node's herd (a crash).
    Kill { node: String },
    /// SIGTERM a node's herd (a clean stop).
    Stop { node: String },
    /// Start a node's herd again.
    Start { node: String },
    /// SIGKILL a node's application.
    KillApp { node: String },
    /// Start a node's application again (stopping a running one first).
    StartApp { node: String },
    /// Stop a node's application (SIGTERM); fine if it is not running.
    StopApp { node: String },
    /// Run a command in a node's namespace.
    Exec {
        node: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Run a command in the client namespace.
    Client {
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Each node's state and counters.
    Status,
    /// The lab application (run inside a node namespace by `up`).
    App {
        #[arg(long)]
        name: String,
    },
    /// Connections from many client addresses; prints a JSON report
    /// (run inside the client namespace).
    Probe {
        #[arg(value_enum)]
        kind: ProbeKind,
        #[arg(long, default_value = lab::VIP4)]
        vip: IpAddr,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long, default_value_t = 100)]
        sources: u32,
        #[arg(long, default_value_t = 400)]
        conns: u32,
        #[arg(long, default_value_t = 16)]
        parallel: usize,
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
        /// Print only the summary, not every connection.
        #[arg(long)]
        summary: bool,
    },
    /// UDP probes on many flows every few milliseconds; prints, per flow,
    /// the longest time without an answer (run inside the client namespace).
    /// Long-lived connections on the line echo (one line per connection
    /// every interval) until the stop file appears; prints a JSON report
    /// of which broke.
    Hold {
        #[arg(long, default_value = lab::VIP4)]
        vip: IpAddr,
        #[arg(long, default_value_t = 7000)]
        port: u16,
        #[arg(long, default_value_t = 300)]
        conns: u32,
        #[arg(long, default_value_t = 300)]
        sources: u32,
        /// The index of the first client address (198.19.0.1 + index).
        #[arg(long, default_value_t = 2000)]
        first_source: u32,
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        #[arg(long)]
        stop_file: std::path::PathBuf,
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// Random faults (crash, application kill, stop/start, drain, weight,
    /// link down, heartbeat loss, partition, one-way heartbeat loss, busy
    /// CPUs) on a fresh
    /// membership farm while clients hold connections and open new ones;
    /// checks what the farm promises and exits 1 on any violation.
    Chaos(perf::chaos::Options),
    Outage {
        #[arg(long, default_value = lab::VIP4)]
        vip: IpAddr,
        #[arg(long, default_value_t = 9000)]
        port: u16,
        #[arg(long, default_value_t = 64)]
        flows: u32,
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        #[arg(long, default_value_t = 3000)]
        duration_ms: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ProbeKind {
    Http,
    Echo,
    Udp,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("herd-lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Cmd::Up {
            nodes,
            running,
            queues,
            delivery,
            driver,
            ownership,
            split_brain,
            heartbeat_networks,
            extra_config,
        } => {
            let extra = match extra_config {
                Some(p) => std::fs::read_to_string(&p)?,
                None => String::new(),
            };
            let spec = lab::LabSpec {
                nodes,
                running: running.unwrap_or(nodes),
                queues,
                delivery,
                driver,
                ownership,
                split_brain,
                heartbeat_networks,
                extra,
                xdp_mode: None,
                cpus: None,
            };
            lab::up(&spec)?;
            print!("{}", lab::status()?);
        }
        Cmd::Down => lab::down()?,
        Cmd::Chaos(o) => return Ok(if perf::chaos::run(&o)? { 0 } else { 1 }),
        Cmd::Kill { node } => lab::kill(lab::parse_node(&node)?)?,
        Cmd::Stop { node } => lab::stop(lab::parse_node(&node)?)?,
        Cmd::Start { node } => {
            let n = lab::parse_node(&node)?;
            lab::start(n)?;
            lab::wait_ready(n, Duration::from_secs(30))?;
        }
        Cmd::KillApp { node } => lab::kill_app(lab::parse_node(&node)?)?,
        Cmd::StartApp { node } => lab::start_app(lab::parse_node(&node)?)?,
        Cmd::StopApp { node } => lab::stop_app(lab::parse_node(&node)?)?,
        Cmd::Exec { node, cmd } => {
            return lab::exec_in(&lab::node_ns(lab::parse_node(&node)?), &cmd)
        }
        Cmd::Client { cmd } => return lab::exec_in(lab::CLIENT_NS, &cmd),
        Cmd::Status => print!("{}", lab::status()?),
        Cmd::App { name } => app::serve(&name, app::Ports::default())?,
        Cmd::Hold {
            vip,
            port,
            conns,
            sources,
            first_source,
            interval_ms,
            timeout_ms,
            stop_file,
            max_seconds,
        } => {
            let r = probe::hold(&probe::HoldPlan {
                target: SocketAddr::new(vip, port),
                conns,
                first_source,
                sources,
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(timeout_ms),
                stop_file,
                max_duration: Duration::from_secs(max_seconds),
            })?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Cmd::Outage {
            vip,
            port,
            flows,
            interval_ms,
            duration_ms,
        } => {
            let r = probe::outage(
                SocketAddr::new(vip, port),
                flows,
                Duration::from_millis(interval_ms),
                Duration::from_millis(duration_ms),
            )?;
            println!("{}", serde_json::to_string(&r)?);
        }
        Cmd::Probe {
            kind,
            vip,
            port,
            sources,
            conns,
            parallel,
            timeout_ms,
            summary,
        } => {
            let (kind, default_port) = match kind {
                ProbeKind::Http => (probe::Kind::Http, 80),
                ProbeKind::Echo => (probe::Kind::Echo, 7000),
                ProbeKind::Udp => (probe::Kind::Udp, 9000),
            };
            let plan = probe::Plan {
                kind,
                target: SocketAddr::new(vip, port.unwrap_or(default_port)),
                sources,
                conns,
                parallel,
                timeout: Duration::from_millis(timeout_ms),
            };
            let mut report = probe::run(&plan)?;
            if summary {
                report.results.clear();
            }
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(0)
}
