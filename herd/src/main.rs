//! `herd`: run a farm node, operate it, ask it for its status, check a
//! config.
#![forbid(unsafe_code)]

mod control;
mod farm;
mod http;
mod metrics;
mod realtime;
mod reload;
mod service;
mod setup;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use herd_control::request::{Request, WeightRequest};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(name = "herd", version, about = "Herd farm cluster node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Which running node to talk to.
#[derive(Args)]
struct Target {
    /// The node's control socket.
    #[arg(long, conflicts_with = "config")]
    socket: Option<PathBuf>,
    /// Read the control socket's path from this config.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum Command {
    /// Run this node until SIGTERM or SIGINT (which stop it cleanly: the
    /// node withdraws, then its stop scripts run).
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show a running node's status: state, checkers, buckets, counters,
    /// the farm's nodes.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Start a stopped node: prestart and start scripts, then WAIT until
    /// its checkers pass, then UP.
    Start {
        #[command(flatten)]
        target: Target,
    },
    /// Stop the node: it withdraws (its share moves to the others), then
    /// the stop and poststop scripts run.
    Stop {
        #[command(flatten)]
        target: Target,
    },
    /// Stop then start the node (all four scripts).
    Restart {
        #[command(flatten)]
        target: Target,
    },
    /// Take the node out gracefully: new flows go elsewhere at once, and
    /// the node stops when its last connection closes (or at
    /// `continuity.drain_timeout_ms`).
    Drain {
        #[command(flatten)]
        target: Target,
    },
    /// Read the config file again and apply what can change at run time
    /// (VIPs, rules, this node's weight) without breaking a connection;
    /// anything else is refused by key and nothing changes (SIGHUP does
    /// the same).
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Print the node's state (ready, transient or draining); the exit
    /// code says it: 0 STOP, 1 WAIT, 2 UP (3: the node cannot be asked).
    State {
        #[command(flatten)]
        target: Target,
    },
    /// Change this node's weight at run time (membership farms): buckets
    /// move the way they do on a join, keeping connections. Kept under
    /// `node.state_dir`: a restarted node keeps it. `config`: back to the
    /// config file's weight.
    Weight {
        #[arg(value_parser = parse_weight)]
        weight: WeightRequest,
        #[command(flatten)]
        target: Target,
    },
    /// Turn the effect of the checkers on or off (off: verdicts are
    /// ignored and no action runs, for maintenance).
    Checker {
        what: OnOff,
        #[command(flatten)]
        target: Target,
    },
    /// Validate a config file and exit (0 valid, 1 invalid).
    CheckConfig { file: PathBuf },
    /// Prepare the host for a config: hugepages (`dpdk.hugepages`) and
    /// a NIC bound to vfio-pci (`port.driver = "pci"`), with the tools of
    /// Debian's `dpdk` package. Does nothing where nothing is missing.
    Setup {
        #[arg(long, short)]
        config: PathBuf,
        /// Print the commands without running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff).
    #[command(hide = true)]
    Manpage,
}

/// The node's recent log lines, for `herd status` and the status page.
static EVENTS: std::sync::LazyLock<herd_control::events::EventLog> =
    std::sync::LazyLock::new(herd_control::events::EventLog::default);

fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("HERD_LOG").unwrap_or_else(|_| "info".into());
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(EVENTS.layer());
    if service::stderr_is_journal() {
        // journald stamps each line itself and reads its priority from a
        // `<N>` prefix.
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(service::JournalPriority(format))
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colours only on a terminal: logs in files stay greppable.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }
    let _ = service::LOG_FILTER.set(handle);
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if let Command::State { target } = &cli.command {
        return match ask::<herd_control::status::StateReply>(target, Request::State) {
            Ok(r) => {
                println!("{} ({})  {}", r.state, r.readiness, r.reason);
                ExitCode::from(r.exit_code())
            }
            Err(e) => {
                eprintln!("herd: {e:#}");
                ExitCode::from(3)
            }
        };
    }
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Status { json, target } => status(json, &target),
        Command::Start { target } => operate(&target, Request::Start),
        Command::Stop { target } => operate(&target, Request::Stop),
        Command::Restart { target } => operate(&target, Request::Restart),
        Command::Drain { target } => operate(&target, Request::Drain),
        Command::Reload { target } => reload(&target),
        Command::Weight { weight, target } => {
            ask(&target, Request::Weight(weight)).map(|r: herd_control::status::WeightReply| {
                let from = match r.source {
                    herd_control::status::WeightSource::Config => "the config's",
                    herd_control::status::WeightSource::Runtime => {
                        "set at run time, kept across restarts"
                    }
                };
                println!("weight: now {} (was {}; {from})", r.weight, r.was);
            })
        }
        Command::Checker { what, target } => {
            let on = matches!(what, OnOff::On);
            ask(&target, Request::Checkers(on)).map(|r: herd_control::status::CheckerReply| {
                println!(
                    "checkers {}",
                    if r.checkers_on {
                        "on: their verdicts count"
                    } else {
                        "off: verdicts are ignored and no action runs"
                    }
                );
            })
        }
        Command::State { .. } => unreachable!("handled above"),
        Command::CheckConfig { file } => check_config(&file),
        Command::Setup { config, dry_run } => config::Config::from_file(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| setup::set_up(&c, dry_run)),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "herd", &mut std::io::stdout());
            Ok(())
        }
        Command::Manpage => manpage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The manual page: clap's sections from the CLI, then what an operator
/// looks up beside the commands.
fn manpage() -> Result<()> {
    use clap::CommandFactory;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(Cli::command())
        .section("8")
        .render(&mut out)
        .context("writing the manual page")?;
    out.write_all(MANPAGE_EXTRA.as_bytes())?;
    Ok(())
}

const MANPAGE_EXTRA: &str = r#".SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop cleanly: the node withdraws (its buckets move to the other nodes), its
stop scripts run, then the fastpath stops and the kernel set-up (VIPs on
lo, nftables tables) is undone.
.TP
\fBSIGHUP\fR
Reload the config file, as \fBherd reload\fR does.
.SH ENVIRONMENT
.TP
\fBHERD_LOG\fR
The log filter (tracing's EnvFilter syntax), \fBinfo\fR by default.
.TP
\fBNOTIFY_SOCKET\fR, \fBWATCHDOG_USEC\fR
Set by systemd for a Type=notify unit: the node reports READY once it
runs, RELOADING and STOPPING, and feeds the watchdog only while every
lcore makes progress.
.SH FILES
.TP
\fI/etc/herd/herd.toml\fR
The node's config (see \fBherd check-config\fR).
.TP
\fI/run/herd/herd.sock\fR
The control socket (\fBcontrol.socket\fR), root only.
.TP
\fI/var/lib/herd\fR
\fBnode.state_dir\fR: a weight set with \fBherd weight\fR, kept across
restarts.
.SH EXIT STATUS
\fBherd state\fR exits 0 for STOP, 1 for WAIT, 2 for UP and 3 when the node
cannot be asked; every other command exits 0 on success and 1 on error.
.SH SEE ALSO
\fBsystemctl\fR(1), \fBdpdk-hugepages.py\fR, \fBdpdk-devbind.py\fR
"#;

/// A weight (0..=4294967295) or `config`.
fn parse_weight(arg: &str) -> Result<WeightRequest, String> {
    match arg {
        "config" => Ok(WeightRequest::Config),
        n => n.parse().map(WeightRequest::Set).map_err(|_| {
            format!("{arg:?} is not a weight: an integer 0..=4294967295, or \"config\"")
        }),
    }
}

fn check_config(file: &std::path::Path) -> Result<()> {
    let c = config::Config::from_file(file)?;
    farm::protocol_versions(&c)?;
    println!(
        "{}: valid (farm {:?}, node {} {:?}, {} VIPs, {} rules, {} checkers)",
        file.display(),
        c.farm.name,
        c.node.id,
        c.this_node().name,
        c.farm.vips.len(),
        c.rules.len(),
        c.checkers.len()
    );
    Ok(())
}

fn run(path: &std::path::Path) -> Result<()> {
    let config = config::Config::from_file(path)?;
    let socket = config.control.socket.clone();
    let farm = farm::Farm::new(&config)?;
    // Built before the node starts: nothing after the start may return
    // without stopping it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let notifier = service::Notifier::from_env();
    service::set_log_level(config.log.directives());
    let node = fastpath::node::RunningNode::start(config.clone(), farm.initial_table())
        .context("starting the node")?;
    // `serve` tells systemd STOPPING as it starts to stop.
    let served = rt.block_on(serve(path, &config, &farm, &node, &notifier));
    // The control plane's tasks hold the node's ports through its status:
    // they go first, so the ports close.
    drop(rt);
    node.shutdown();
    let _ = std::fs::remove_file(&socket);
    served
}

/// The running node's control plane, until SIGTERM or SIGINT.
async fn serve(
    path: &std::path::Path,
    config: &config::Config,
    farm: &farm::Farm,
    node: &fastpath::node::RunningNode,
    notifier: &service::Notifier,
) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // SIGHUP reloads the config (as service managers send it).
    let mut hup = signal(SignalKind::hangup())?;
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<reload::Request>(4);
    let membership = farm.start(node.publisher(), node.input_drops())?;
    let health = health::driver::spawn(
        config,
        node.nic_link(),
        farm.on_status(
            node.publisher(),
            membership.as_ref().map(|m| Arc::clone(&m.shared)),
        ),
    );
    let names: BTreeMap<u16, String> = config
        .farm
        .nodes
        .iter()
        .map(|n| (n.id, n.name.clone()))
        .collect();
    let ctl = control::Node {
        status: node.status_reader(),
        membership,
        health: health.clone(),
        names: Arc::new(names),
        reload: reload_tx,
        events: EVENTS.clone(),
    };
    let listener = control::bind(&config.control.socket)?;
    tokio::spawn(control::serve(listener, ctl.clone()));
    if let Some(addr) = config.control.http {
        let l = http::bind(addr).await?;
        tokio::spawn(http::serve(l, ctl.clone()));
    }
    notifier.ready(&service_status(&ctl));
    // Without a watchdog the tick only refreshes systemd's status line.
    let mut tick =
        tokio::time::interval(notifier.watchdog_period().unwrap_or(Duration::from_secs(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = service::LcoreProgress::default();
    let mut running = config.clone();
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: stopping");
                break;
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading {}", path.display());
                reload_notified(path, &mut running, node, &ctl, notifier).await;
            }
            Some(reply) = reload_rx.recv() => {
                let _ = reply.send(reload_notified(path, &mut running, node, &ctl, notifier).await);
            }
            _ = tick.tick() => {
                let status = service_status(&ctl);
                let looked = progress.look(&ctl.status.lcore_polls());
                // Every live lcore polls once before the next look, idle
                // or not.
                ctl.status.wake_lcores();
                match looked {
                    _ if notifier.watchdog_period().is_none() => notifier.status(&status),
                    service::Progress::All => notifier.watchdog(&status),
                    service::Progress::Stuck(queues) => {
                        tracing::error!(
                            "lcores of queues {queues:?} made no progress: the watchdog is not fed"
                        );
                        notifier.status(&format!("lcores of queues {queues:?} stuck"));
                    }
                }
            }
        }
    }
    notifier.stopping();
    stop_cleanly(&health, config).await;
    Ok(())
}

/// A reload, with systemd told before and after.
async fn reload_notified(
    path: &std::path::Path,
    running: &mut config::Config,
    node: &fastpath::node::RunningNode,
    ctl: &control::Node,
    notifier: &service::Notifier,
) -> reload::Outcome {
    notifier.reloading();
    let outcome = reload::reload(path, running, node, ctl.membership.as_ref(), &ctl.health).await;
    notifier.reloaded(&service_status(ctl));
    outcome
}

/// systemd's one-line status of the node (`systemctl status`).
fn service_status(ctl: &control::Node) -> String {
    let h = ctl.health.status();
    let (owned, buckets) = ctl.status.owned_buckets();
    format!(
        "{}{}, {owned} of {buckets} buckets",
        h.state.name(),
        if h.transient { " (transient)" } else { "" },
    )
}

/// Withdraws and runs the stop scripts before the process ends, within
/// the scripts' timeouts (a second signal is not waited for).
async fn stop_cleanly(health: &health::driver::Health, config: &config::Config) {
    let budget = Duration::from_millis(
        2 * u64::from(config.scripts.graceful_timeout_ms + config.scripts.forced_timeout_ms) + 1000,
    );
    let deadline = tokio::time::Instant::now() + budget;
    loop {
        let st = health.status();
        if st.state == health::machine::NodeState::Stop && !st.transient {
            return;
        }
        if !st.transient {
            let _ = health.command(health::machine::Command::Stop).await;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("stop scripts still running at exit");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn socket_of(target: &Target) -> Result<PathBuf> {
    Ok(match (&target.socket, &target.config) {
        (Some(s), _) => s.clone(),
        (None, Some(c)) => config::Config::from_file(c)?.control.socket,
        (None, None) => config::Control::default().socket,
    })
}

fn ask<T: serde::de::DeserializeOwned>(target: &Target, what: Request) -> Result<T> {
    let socket = socket_of(target)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(control::request(&socket, what))
}

fn operate(target: &Target, what: Request) -> Result<()> {
    let r: herd_control::status::CommandReply = ask(target, what)?;
    println!("{what}: now {} ({}) {}", r.state, r.readiness, r.reason);
    Ok(())
}

fn reload(target: &Target) -> Result<()> {
    let r: herd_control::status::ReloadReply = ask(target, Request::Reload).context("reload")?;
    println!("reload: {}", r.applied);
    Ok(())
}

fn status(json: bool, target: &Target) -> Result<()> {
    let report: herd_control::status::Report = ask(target, Request::Status)?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", herd_control::status_text::render(&report));
    }
    Ok(())
}
