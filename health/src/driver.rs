//! The tokio driver of the node's life cycle: one task per checker, the
//! scripts, the operator's commands. Every decision is the machine's.

use crate::checker::Policy;
use crate::machine::{
    CheckerSpec, CheckerStatus, Command, Event, Machine, Refused, Script, Settings, Status,
};
use crate::probe::{probe, NicLink};
use crate::script::{self, Timeouts};
use config::Config;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

enum Input {
    Checker {
        /// The checkers' generation (a reload starts another).
        generation: u64,
        index: usize,
        ok: bool,
        detail: String,
    },
    Command(Command, oneshot::Sender<Result<(), Refused>>),
    Checkers(bool, oneshot::Sender<()>),
    ScriptDone {
        ok: bool,
        detail: String,
    },
    Reconfigure(Box<Config>, oneshot::Sender<()>),
}

/// What `herd status` shows of the node's health.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub state: crate::machine::NodeState,
    pub transient: bool,
    pub owns_buckets: bool,
    pub reason: String,
    pub checkers_on: bool,
    pub checkers: Vec<CheckerStatus>,
    pub running_script: Option<Script>,
}

/// The running life cycle: commands in, status out.
#[derive(Clone)]
pub struct Health {
    tx: mpsc::Sender<Input>,
    machine: Arc<Mutex<Machine>>,
}

impl Health {
    pub async fn command(&self, cmd: Command) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Command(cmd, tx))
            .await
            .map_err(|_| "health driver stopped".to_string())?;
        rx.await
            .map_err(|_| "health driver stopped".to_string())?
            .map_err(|e| e.to_string())
    }

    pub async fn set_checkers(&self, on: bool) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Checkers(on, tx))
            .await
            .map_err(|_| "health driver stopped".to_string())?;
        rx.await.map_err(|_| "health driver stopped".to_string())
    }

    /// Takes the checkers, scripts and restart loop limit of `config` at
    /// run time (`herd reload`; see `machine`'s "Reconfiguration").
    pub async fn reconfigure(&self, config: &Config) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Input::Reconfigure(Box::new(config.clone()), tx))
            .await
            .map_err(|_| "health driver stopped".to_string())?;
        rx.await.map_err(|_| "health driver stopped".to_string())
    }

    pub fn snapshot(&self) -> Snapshot {
        let m = self.machine.lock().unwrap_or_else(|e| e.into_inner());
        let st = m.status();
        Snapshot {
            state: st.state,
            transient: st.transient,
            owns_buckets: st.owns_buckets(),
            reason: m.reason().to_string(),
            checkers_on: m.checkers_on(),
            checkers: m.checkers(),
            running_script: m.running_script(),
        }
    }

    pub fn status(&self) -> Status {
        self.machine
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .status()
    }
}

/// Starts the life cycle on the current tokio runtime. `on_status` is
/// called with every new status (first with STOP); the node owns buckets
/// only while it says UP-ready.
pub fn spawn(
    config: &Config,
    nic: NicLink,
    mut on_status: impl FnMut(Status) + Send + 'static,
) -> Health {
    let machine = Arc::new(Mutex::new(Machine::new(settings_of(config))));
    let (tx, mut rx) = mpsc::channel::<Input>(256);
    // Checkers probe only while the node is not in STOP.
    let (active_tx, active_rx) = watch::channel(false);
    let env: Arc<Vec<(&'static str, String)>> = Arc::new(vec![
        ("HERD_NODE", config.this_node().name.clone()),
        ("HERD_NODE_ID", config.node.id.to_string()),
        ("HERD_FARM", config.farm.name.clone()),
    ]);
    let mut driver = Driver {
        checker_tasks: spawn_checkers(config, 0, &tx, &nic, &active_rx, &env),
        generation: 0,
        checkers: config.checkers.clone(),
        paths: script_paths(config),
        timeouts: Arc::new(timeouts_of(config)),
        tx: tx.clone(),
        nic,
        active: active_rx,
        env,
    };
    let autostart = config.health.autostart;
    let handle = Health {
        tx: tx.clone(),
        machine: Arc::clone(&machine),
    };
    let start = Instant::now();
    tokio::spawn(async move {
        let mut last = machine.lock().unwrap_or_else(|e| e.into_inner()).status();
        on_status(last);
        if autostart {
            let (reply, _) = oneshot::channel();
            let _ = tx.send(Input::Command(Command::Start, reply)).await;
        } else {
            tracing::info!("health: autostart off, the node stays in STOP until `herd start`");
        }
        while let Some(input) = rx.recv().await {
            let mut m = machine.lock().unwrap_or_else(|e| e.into_inner());
            driver.handle(&mut m, start.elapsed(), input);
            while let Some(e) = m.poll_event() {
                driver.carry_out(e);
            }
            let st = m.status();
            let active = st.state != crate::machine::NodeState::Stop;
            drop(m);
            active_tx.send_if_modified(|a| std::mem::replace(a, active) != active);
            if st != last {
                last = st;
                on_status(st);
            }
        }
    });
    handle
}

/// The IO around the machine: the checkers' tasks, the scripts.
struct Driver {
    tx: mpsc::Sender<Input>,
    nic: NicLink,
    active: watch::Receiver<bool>,
    env: Arc<Vec<(&'static str, String)>>,
    /// The checkers' generation: a reload starts another, and results of
    /// the one before are void.
    generation: u64,
    checker_tasks: Vec<tokio::task::JoinHandle<()>>,
    checkers: Vec<config::Checker>,
    paths: [Option<PathBuf>; 4],
    timeouts: Arc<Timeouts>,
}

impl Driver {
    /// Feeds one input to the machine.
    fn handle(&mut self, m: &mut Machine, now: Duration, input: Input) {
        match input {
            Input::Checker {
                generation,
                index,
                ok,
                detail,
            } => {
                if generation == self.generation {
                    m.checker_result(now, index, ok, detail)
                }
            }
            Input::Reconfigure(config, reply) => {
                self.reconfigure(m, now, &config);
                let _ = reply.send(());
            }
            Input::Command(cmd, reply) => {
                let r = m.command(now, cmd);
                if let Err(e) = &r {
                    tracing::info!("command {cmd:?} refused: {e}");
                }
                let _ = reply.send(r);
            }
            Input::Checkers(on, reply) => {
                tracing::info!(on, "checkers turned {}", if on { "on" } else { "off" });
                m.set_checkers(now, on);
                let _ = reply.send(());
            }
            Input::ScriptDone { ok, detail } => m.script_done(now, ok, &detail),
        }
    }

    /// Takes a reloaded config's checkers and scripts: a checker that
    /// probes as before keeps its verdict.
    fn reconfigure(&mut self, m: &mut Machine, now: Duration, config: &Config) {
        let keep: Vec<bool> = config
            .checkers
            .iter()
            .map(|c| {
                self.checkers
                    .iter()
                    .any(|old| old.name == c.name && same_probe(old, c))
            })
            .collect();
        m.reconfigure(now, settings_of(config), &keep);
        self.checker_tasks.iter().for_each(|t| t.abort());
        self.generation += 1;
        self.checker_tasks = spawn_checkers(
            config,
            self.generation,
            &self.tx,
            &self.nic,
            &self.active,
            &self.env,
        );
        self.checkers = config.checkers.clone();
        self.paths = script_paths(config);
        self.timeouts = Arc::new(timeouts_of(config));
        tracing::info!(
            checkers = self.checkers.len(),
            kept = keep.iter().filter(|k| **k).count(),
            "health: checkers and scripts reconfigured"
        );
    }

    /// Does what the machine asks (a script), and logs the rest.
    fn carry_out(&self, e: Event) {
        match e {
            Event::RunScript(run) => self.run_script(run),
            Event::StateChanged { from, to, reason } => {
                tracing::info!(%from, %to, "state change: {reason}");
            }
            Event::CheckerChanged {
                checker,
                from,
                to,
                detail,
            } => {
                tracing::info!(checker, ?from, ?to, "checker transition: {detail}");
            }
            Event::ActionTaken { checker, action } => {
                tracing::warn!(
                    checker,
                    action = action.name(),
                    "checker down: recovery action"
                );
            }
        }
    }

    /// Runs a script in its own task; its end is an input.
    fn run_script(&self, run: crate::machine::ScriptRun) {
        let Some(path) = self.paths[run.script.index()].clone() else {
            return;
        };
        tracing::info!(
            script = run.script.name(),
            action = run.action,
            "running {} {} {} {}",
            path.display(),
            run.current.name(),
            run.next.name(),
            run.action
        );
        let (tx, env, timeouts) = (
            self.tx.clone(),
            Arc::clone(&self.env),
            Arc::clone(&self.timeouts),
        );
        tokio::spawn(async move {
            let began = Instant::now();
            let (ok, detail) = script::run(&path, &run, &env, &timeouts).await;
            tracing::info!(
                script = run.script.name(),
                ok,
                ms = began.elapsed().as_millis() as u64,
                "script ended: {detail}"
            );
            let _ = tx.send(Input::ScriptDone { ok, detail }).await;
        });
    }
}

fn settings_of(config: &Config) -> Settings {
    Settings {
        checkers: config
            .checkers
            .iter()
            .map(|c| CheckerSpec {
                name: c.name.clone(),
                action: c.action,
                policy: Policy {
                    failures_before_down: c.failures_before_down,
                    successes_before_up: c.successes_before_up,
                },
            })
            .collect(),
        scripts: script_paths(config).map(|p| p.is_some()),
        maxloop: config.health.maxloop,
        loop_window: Duration::from_secs(u64::from(config.health.loop_window_s)),
    }
}

fn timeouts_of(config: &Config) -> Timeouts {
    Timeouts {
        graceful: Duration::from_millis(u64::from(config.scripts.graceful_timeout_ms)),
        forced: Duration::from_millis(u64::from(config.scripts.forced_timeout_ms)),
    }
}

/// Whether two checkers probe the same thing the same way (their action
/// and thresholds aside): a reload then keeps the verdict.
fn same_probe(a: &config::Checker, b: &config::Checker) -> bool {
    let probe_of = |c: &config::Checker| config::Checker {
        action: Default::default(),
        failures_before_down: 0,
        successes_before_up: 0,
        ..c.clone()
    };
    probe_of(a) == probe_of(b)
}

/// One task per checker: probes while the node is not in STOP, each result
/// tagged with `generation`.
fn spawn_checkers(
    config: &Config,
    generation: u64,
    tx: &mpsc::Sender<Input>,
    nic: &NicLink,
    active: &watch::Receiver<bool>,
    env: &Arc<Vec<(&'static str, String)>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    config
        .checkers
        .iter()
        .enumerate()
        .map(|(index, c)| {
            let (c, tx, nic, mut active) = (c.clone(), tx.clone(), nic.clone(), active.clone());
            let env = Arc::clone(env);
            tokio::spawn(async move {
                let interval = Duration::from_millis(u64::from(c.interval_ms));
                loop {
                    if active.wait_for(|a| *a).await.is_err() {
                        return;
                    }
                    let (ok, detail) = probe(&c, &nic, &env).await;
                    let result = Input::Checker {
                        generation,
                        index,
                        ok,
                        detail,
                    };
                    if tx.send(result).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(interval).await;
                }
            })
        })
        .collect()
}

fn script_paths(config: &Config) -> [Option<PathBuf>; 4] {
    let s = &config.scripts;
    [
        s.prestart.clone(),
        s.start.clone(),
        s.stop.clone(),
        s.poststop.clone(),
    ]
}
