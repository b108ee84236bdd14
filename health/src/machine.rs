//! The node's life cycle as a sans-IO state machine: states STOP, WAIT,
//! UP (each transient while scripts run, or ready), checker verdicts,
//! recovery actions and the restart loop limit.
//!
//! Inputs: operator commands, checker results, script outcomes, the time.
//! Outputs: [`Event`]s (scripts to run, state changes with their reason,
//! checker transitions, actions taken). Only UP-ready owns buckets.
//!
//! # Procedures
//!
//! | trigger                    | scripts                              | ends in        |
//! |----------------------------|--------------------------------------|----------------|
//! | `start` (from STOP)        | prestart, start                      | WAIT or UP     |
//! | `stop`, `drain`            | stop, poststop                       | STOP           |
//! | `restart` (operator)       | stop, poststop, prestart, start      | WAIT or UP     |
//! | checker action `restart`  | stop, start                          | WAIT or UP     |
//! | checker action `stopstart`| stop, poststop, prestart, start      | WAIT or UP     |
//! | checker action `stop`     | stop, poststop                       | STOP           |
//! | checker action `wait`     | none                                 | WAIT until up  |
//!
//! While a procedure runs the node is transient (WAIT transient on its way
//! up, STOP transient on its way down) and owns nothing. A failed prestart
//! or start script turns the procedure into a stop. At the end of a
//! procedure towards UP every checker starts again from `Unknown`, and
//! the node is UP once all of them are up (at once if it has none).
//!
//! # Reconfiguration (`herd reload`)
//!
//! [`Machine::reconfigure`] takes new checkers, scripts and loop limit at
//! run time. A checker whose probe is unchanged keeps its verdict (its
//! action and thresholds may change); a new or changed one starts
//! `Unknown`, and while the node is settled it does not hold the node back
//! until it has a verdict (a healthy UP node is not withdrawn because a
//! checker was added: a `Down` verdict acts as always). A removed checker
//! stops counting at once. A procedure that runs goes on with the new
//! scripts for the steps it has not taken.

use crate::checker::{Policy, Track, Verdict};
use config::CheckerAction;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

pub use node_state::NodeState;

/// The state and whether scripts are running (transient) or not (ready).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    pub state: NodeState,
    pub transient: bool,
}

impl Status {
    /// Only an UP-ready node owns buckets.
    pub fn owns_buckets(self) -> bool {
        self.state == NodeState::Up && !self.transient
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.transient { "transient" } else { "ready" };
        write!(f, "{} ({how})", self.state.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Script {
    Prestart,
    Start,
    Stop,
    Poststop,
}

impl Script {
    pub const ALL: [Script; 4] = [
        Script::Prestart,
        Script::Start,
        Script::Stop,
        Script::Poststop,
    ];

    /// Its position in [`Script::ALL`] (and in `Settings::scripts`).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Script::Prestart => "prestart",
            Script::Start => "start",
            Script::Stop => "stop",
            Script::Poststop => "poststop",
        }
    }
}

/// An operator command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Start,
    Stop,
    Restart,
    Drain,
}

/// Why a command was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the node is already started ({0})")]
    AlreadyStarted(Status),
    #[error("the node is already stopped")]
    AlreadyStopped,
    #[error("busy: the {0} procedure is running, try again when it ends")]
    Busy(&'static str),
}

/// A script to run now; the driver answers with [`Machine::script_done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptRun {
    pub script: Script,
    /// The state the procedure started from.
    pub current: NodeState,
    /// The state the procedure leads to.
    pub next: NodeState,
    /// What started it: start, stop, drain, restart, stopstart, or the
    /// checker action.
    pub action: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    RunScript(ScriptRun),
    StateChanged {
        from: Status,
        to: Status,
        reason: String,
    },
    CheckerChanged {
        checker: String,
        from: Verdict,
        to: Verdict,
        detail: String,
    },
    ActionTaken {
        checker: String,
        action: CheckerAction,
    },
}

#[derive(Clone, Debug)]
pub struct CheckerSpec {
    pub name: String,
    pub action: CheckerAction,
    pub policy: Policy,
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub checkers: Vec<CheckerSpec>,
    /// Which of the four scripts are configured (indexed like
    /// [`Script::ALL`]); the others are skipped.
    pub scripts: [bool; 4],
    pub maxloop: u32,
    pub loop_window: Duration,
}

/// What `status` shows of a checker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckerStatus {
    pub name: String,
    pub verdict: Verdict,
    pub action: CheckerAction,
    pub detail: String,
}

struct Procedure {
    scripts: VecDeque<Script>,
    from: NodeState,
    to: NodeState,
    action: &'static str,
    /// The reason recorded when the procedure ends.
    reason: String,
}

struct Checker {
    spec: CheckerSpec,
    track: Track,
    detail: String,
    /// Added or changed by a reconfiguration and not tested since: an
    /// `Unknown` verdict does not hold a settled node back.
    untested_since_reload: bool,
}

pub struct Machine {
    s: Settings,
    status: Status,
    reason: String,
    checkers: Vec<Checker>,
    checkers_on: bool,
    procedure: Option<Procedure>,
    running: Option<Script>,
    /// Times of recent checker-triggered restarts, for the loop limit.
    restarts: VecDeque<Duration>,
    events: VecDeque<Event>,
}

/// The scripts that start the application, stop it, and do both.
const STARTING: [Script; 2] = [Script::Prestart, Script::Start];
const STOPPING: [Script; 2] = [Script::Stop, Script::Poststop];
const FULL_CYCLE: [Script; 4] = [
    Script::Stop,
    Script::Poststop,
    Script::Prestart,
    Script::Start,
];

fn severity(a: CheckerAction) -> u8 {
    match a {
        CheckerAction::Wait => 0,
        CheckerAction::Restart => 1,
        CheckerAction::Stopstart => 2,
        CheckerAction::Stop => 3,
    }
}

impl Machine {
    /// A node in STOP; `command(Start)` starts it.
    pub fn new(settings: Settings) -> Machine {
        Machine {
            checkers: settings
                .checkers
                .iter()
                .map(|spec| Checker {
                    track: Track::new(spec.policy),
                    spec: spec.clone(),
                    detail: String::new(),
                    untested_since_reload: false,
                })
                .collect(),
            s: settings,
            status: Status {
                state: NodeState::Stop,
                transient: false,
            },
            reason: "not started".into(),
            checkers_on: true,
            procedure: None,
            running: None,
            restarts: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// Why the node is in its state.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn checkers_on(&self) -> bool {
        self.checkers_on
    }

    pub fn checkers(&self) -> Vec<CheckerStatus> {
        self.checkers
            .iter()
            .map(|c| CheckerStatus {
                name: c.spec.name.clone(),
                verdict: c.track.verdict(),
                action: c.spec.action,
                detail: c.detail.clone(),
            })
            .collect()
    }

    /// The script running now, if any.
    pub fn running_script(&self) -> Option<Script> {
        self.running
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn command(&mut self, now: Duration, cmd: Command) -> Result<(), Refused> {
        if let Some(p) = &self.procedure {
            return Err(Refused::Busy(p.action));
        }
        let state = self.status.state;
        match (cmd, state) {
            (Command::Start, NodeState::Stop) | (Command::Restart, NodeState::Stop) => {
                self.restarts.clear();
                self.begin(
                    now,
                    STARTING,
                    NodeState::Up,
                    "start",
                    "started by the operator".into(),
                );
            }
            (Command::Start, _) => return Err(Refused::AlreadyStarted(self.status)),
            (Command::Stop | Command::Drain, NodeState::Stop) => {
                return Err(Refused::AlreadyStopped)
            }
            (Command::Stop, _) => self.begin(
                now,
                STOPPING,
                NodeState::Stop,
                "stop",
                "stopped by the operator".into(),
            ),
            (Command::Drain, _) => self.begin(
                now,
                STOPPING,
                NodeState::Stop,
                "drain",
                "drained by the operator".into(),
            ),
            (Command::Restart, _) => {
                self.restarts.clear();
                self.begin(
                    now,
                    FULL_CYCLE,
                    NodeState::Up,
                    "restart",
                    "restarted by the operator".into(),
                );
            }
        }
        Ok(())
    }

    /// Turns the checkers' effect on or off (`herd checker on|off`): off,
    /// the node ignores their verdicts and takes no action.
    pub fn set_checkers(&mut self, now: Duration, on: bool) {
        if self.checkers_on == on {
            return;
        }
        self.checkers_on = on;
        if self.settled() {
            let reason = if on {
                "checkers turned on".to_string()
            } else {
                "checkers turned off".to_string()
            };
            self.evaluate(now, reason);
        }
    }

    /// New settings at run time (see the module doc). `keep[i]`: the
    /// new checker `i` probes what the running checker of the same name
    /// probes, so its verdict stands.
    pub fn reconfigure(&mut self, now: Duration, settings: Settings, keep: &[bool]) {
        let mut old: Vec<Checker> = std::mem::take(&mut self.checkers);
        self.checkers = settings
            .checkers
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let kept = keep.get(i).copied().unwrap_or(false);
                match old.iter().position(|c| c.spec.name == spec.name) {
                    Some(at) if kept => {
                        let mut c = old.swap_remove(at);
                        c.track.set_policy(spec.policy);
                        c.spec = spec.clone();
                        c
                    }
                    _ => Checker {
                        track: Track::new(spec.policy),
                        spec: spec.clone(),
                        detail: String::new(),
                        untested_since_reload: true,
                    },
                }
            })
            .collect();
        self.s = settings;
        if self.settled() {
            self.evaluate(now, "checkers reconfigured".into());
        }
    }

    /// One probe result of checker `index` (in the order of the settings).
    pub fn checker_result(&mut self, now: Duration, index: usize, ok: bool, detail: String) {
        if self.status.state == NodeState::Stop && self.procedure.is_none() {
            return; // Checkers do not run in STOP.
        }
        let Some(c) = self.checkers.get_mut(index) else {
            return;
        };
        c.detail = detail;
        let changed = c.track.record(ok);
        if c.track.verdict() != Verdict::Unknown {
            c.untested_since_reload = false;
        }
        if let Some((from, to)) = changed {
            let name = c.spec.name.clone();
            self.events.push_back(Event::CheckerChanged {
                checker: name.clone(),
                from,
                to,
                detail: c.detail.clone(),
            });
            if self.settled() {
                let reason = format!("checker {name} {}", verdict_word(to));
                self.evaluate(now, reason);
            }
        }
    }

    /// The script the last [`Event::RunScript`] asked for has ended.
    pub fn script_done(&mut self, now: Duration, ok: bool, detail: &str) {
        let Some(script) = self.running.take() else {
            return;
        };
        let Some(p) = self.procedure.as_mut() else {
            return;
        };
        if !ok && matches!(script, Script::Prestart | Script::Start) && p.to == NodeState::Up {
            // The application did not start: stop it cleanly instead.
            p.scripts = STOPPING.into();
            p.to = NodeState::Stop;
            p.reason = format!("{} script failed: {detail}", script.name());
            let reason = p.reason.clone();
            let to = Status {
                state: NodeState::Stop,
                transient: true,
            };
            self.set_status(to, reason);
        }
        self.advance(now);
    }

    fn settled(&self) -> bool {
        self.procedure.is_none() && self.status.state != NodeState::Stop
    }

    fn set_status(&mut self, to: Status, reason: String) {
        if to != self.status || reason != self.reason {
            if to != self.status {
                self.events.push_back(Event::StateChanged {
                    from: self.status,
                    to,
                    reason: reason.clone(),
                });
            }
            self.status = to;
            self.reason = reason;
        }
    }

    fn begin<const N: usize>(
        &mut self,
        now: Duration,
        scripts: [Script; N],
        to: NodeState,
        action: &'static str,
        reason: String,
    ) {
        let transient = Status {
            state: if to == NodeState::Stop {
                NodeState::Stop
            } else {
                NodeState::Wait
            },
            transient: true,
        };
        let from = self.status.state;
        self.set_status(transient, format!("{action}: {reason}"));
        self.procedure = Some(Procedure {
            scripts: scripts.into(),
            from,
            to,
            action,
            reason,
        });
        self.advance(now);
    }

    /// Runs the next configured script of the procedure, or ends it.
    fn advance(&mut self, now: Duration) {
        let Some(p) = self.procedure.as_mut() else {
            return;
        };
        while let Some(script) = p.scripts.pop_front() {
            if !self.s.scripts[script.index()] {
                continue;
            }
            self.running = Some(script);
            self.events.push_back(Event::RunScript(ScriptRun {
                script,
                current: p.from,
                next: p.to,
                action: p.action,
            }));
            return;
        }
        let p = self.procedure.take().expect("checked above");
        if p.to == NodeState::Stop {
            self.set_status(
                Status {
                    state: NodeState::Stop,
                    transient: false,
                },
                p.reason,
            );
        } else {
            // A (re)started application is tested from scratch: WAIT until
            // every checker is up.
            self.checkers.iter_mut().for_each(|c| {
                c.track.reset();
                c.untested_since_reload = false;
            });
            self.evaluate(now, p.reason);
        }
    }

    /// Settled (not STOP, no procedure): WAIT or UP from the checkers, or
    /// the action of a checker that is down.
    fn evaluate(&mut self, now: Duration, reason: String) {
        let active = |c: &&Checker| {
            self.checkers_on
                && match c.track.verdict() {
                    Verdict::Up => false,
                    Verdict::Unknown => !c.untested_since_reload,
                    Verdict::Down => true,
                }
        };
        let pending: Vec<&Checker> = self.checkers.iter().filter(active).collect();
        let worst = pending
            .iter()
            .filter(|c| c.track.verdict() == Verdict::Down)
            .max_by_key(|c| severity(c.spec.action))
            .map(|c| (c.spec.name.clone(), c.spec.action, c.detail.clone()));
        if let Some((name, action, detail)) = &worst {
            if *action != CheckerAction::Wait {
                self.events.push_back(Event::ActionTaken {
                    checker: name.clone(),
                    action: *action,
                });
                self.act(now, name, *action, detail);
                return;
            }
        }
        if pending.is_empty() {
            self.set_status(
                Status {
                    state: NodeState::Up,
                    transient: false,
                },
                reason,
            );
        } else {
            let names: Vec<String> = pending
                .iter()
                .map(|c| format!("{} {}", c.spec.name, verdict_word(c.track.verdict())))
                .collect();
            self.set_status(
                Status {
                    state: NodeState::Wait,
                    transient: false,
                },
                format!("waiting for checkers: {}", names.join(", ")),
            );
        }
    }

    fn act(&mut self, now: Duration, checker: &str, action: CheckerAction, detail: &str) {
        let why = if detail.is_empty() {
            format!("checker {checker} down")
        } else {
            format!("checker {checker} down ({detail})")
        };
        if matches!(action, CheckerAction::Restart | CheckerAction::Stopstart) {
            while self
                .restarts
                .front()
                .is_some_and(|t| now.saturating_sub(*t) >= self.s.loop_window)
            {
                self.restarts.pop_front();
            }
            if self.restarts.len() >= self.s.maxloop as usize {
                let reason = format!(
                    "restart loop limit: {} restarts within {} s, and {why}",
                    self.restarts.len(),
                    self.s.loop_window.as_secs()
                );
                self.begin(now, STOPPING, NodeState::Stop, "stop", reason);
                return;
            }
            self.restarts.push_back(now);
        }
        match action {
            CheckerAction::Wait => {}
            CheckerAction::Restart => self.begin(
                now,
                [Script::Stop, Script::Start],
                NodeState::Up,
                "restart",
                format!("restarted: {why}"),
            ),
            CheckerAction::Stopstart => self.begin(
                now,
                FULL_CYCLE,
                NodeState::Up,
                "stopstart",
                format!("restarted: {why}"),
            ),
            CheckerAction::Stop => self.begin(
                now,
                STOPPING,
                NodeState::Stop,
                "stop",
                format!("stopped: {why}"),
            ),
        }
    }
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Unknown => "not yet tested",
        Verdict::Up => "up",
        Verdict::Down => "down",
    }
}

#[cfg(test)]
mod tests;
