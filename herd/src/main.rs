//! `herd`: run a farm node, ask it for its status, check a config.

mod control;
mod farm;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "herd", version, about = "Herd farm cluster node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run this node until SIGTERM or SIGINT.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show a running node's status (counters, owned buckets).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The node's control socket.
        #[arg(long, conflicts_with = "config")]
        socket: Option<PathBuf>,
        /// Read the control socket's path from this config.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit (0 valid, 1 invalid).
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Status {
            json,
            socket,
            config,
        } => status(json, socket, config),
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &std::path::Path) -> Result<()> {
    let c = config::Config::from_file(file)?;
    println!(
        "{}: valid (farm {:?}, node {} {:?}, {} VIPs, {} rules)",
        file.display(),
        c.farm.name,
        c.node.id,
        c.this_node().name,
        c.farm.vips.len(),
        c.rules.len()
    );
    Ok(())
}

fn run(path: &std::path::Path) -> Result<()> {
    let config = config::Config::from_file(path)?;
    let socket = config.control.socket.clone();
    let farm = farm::Farm::new(&config)?;
    let node = fastpath::node::RunningNode::start(config, farm.initial_table())
        .context("starting the node")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let served = rt.block_on(async {
        let membership = farm.start(node.publisher())?;
        control::serve(&socket, &node, membership.as_deref()).await
    });
    node.shutdown();
    let _ = std::fs::remove_file(&socket);
    served
}

fn status(json: bool, socket: Option<PathBuf>, config: Option<PathBuf>) -> Result<()> {
    let socket = match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => config::Config::from_file(&c)?.control.socket,
        (None, None) => config::Control::default().socket,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let reply = rt.block_on(control::request(&socket, "status"))?;
    if json {
        println!("{reply}");
    } else {
        let v: serde_json::Value =
            serde_json::from_str(&reply).context("status reply is not JSON")?;
        print!("{}", control::render_status(&v));
    }
    Ok(())
}
