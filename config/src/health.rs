//! Application health (docs/design.md §4): `[health]`, `[scripts]` and
//! `[[checkers]]`.

use crate::{invalid, ConfigError, KeyedError};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// The node's life cycle.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Start the node (prestart and start scripts, then WAIT or UP) when
    /// `herd run` starts; `false`: stay in STOP until `herd start`.
    #[serde(default = "crate::default_true")]
    pub autostart: bool,
    /// Restart loop limit: more than `maxloop` restarts within
    /// `loop_window_s` seconds stop the node.
    #[serde(default = "default_maxloop")]
    pub maxloop: u32,
    #[serde(default = "default_loop_window_s")]
    pub loop_window_s: u32,
}

fn default_maxloop() -> u32 {
    3
}
fn default_loop_window_s() -> u32 {
    86_400
}

impl Default for Health {
    fn default() -> Self {
        Health {
            autostart: true,
            maxloop: default_maxloop(),
            loop_window_s: default_loop_window_s(),
        }
    }
}

/// Executables run on state changes, each called as
/// `SCRIPT CURRENT_STATE NEXT_STATE ACTION` (also in the environment as
/// `HERD_STATE`, `HERD_NEXT_STATE`, `HERD_ACTION`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Scripts {
    #[serde(default)]
    pub prestart: Option<PathBuf>,
    #[serde(default)]
    pub start: Option<PathBuf>,
    #[serde(default)]
    pub stop: Option<PathBuf>,
    #[serde(default)]
    pub poststop: Option<PathBuf>,
    /// After this a script gets SIGTERM…
    #[serde(default = "default_graceful_timeout_ms")]
    pub graceful_timeout_ms: u32,
    /// …and this much later SIGKILL.
    #[serde(default = "default_forced_timeout_ms")]
    pub forced_timeout_ms: u32,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            prestart: None,
            start: None,
            stop: None,
            poststop: None,
            graceful_timeout_ms: default_graceful_timeout_ms(),
            forced_timeout_ms: default_forced_timeout_ms(),
        }
    }
}

fn default_graceful_timeout_ms() -> u32 {
    30_000
}
fn default_forced_timeout_ms() -> u32 {
    5_000
}

/// What a checker tests.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckerKind {
    /// A TCP connect to `address`.
    Tcp,
    /// An HTTP GET of `url`: `status` (default 200), optionally a `body`
    /// substring.
    Http,
    /// An ICMP echo to `host`.
    Ping,
    /// The link of `interface`: `"nic"` is the fastpath's port (through
    /// DPDK), anything else a kernel interface.
    Interface,
    /// Processes whose name is `process` or whose command line matches
    /// `pattern`: at least `min` (default 1), at most `max`.
    Process,
    /// `command` (run with `sh -c`) exits 0.
    Custom,
}

/// What the node does when a checker goes down.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum CheckerAction {
    /// Withdraw until the checker is up again.
    #[default]
    Wait,
    /// Withdraw, stop script, start script, rejoin when healthy.
    Restart,
    /// Withdraw, stop and poststop, prestart and start, rejoin when healthy.
    Stopstart,
    /// Withdraw, stop and poststop, stay in STOP.
    Stop,
}

/// One `[[checkers]]` entry: what every checker has, and its probe.
/// Read from the file's form ([`CheckerFile`]), whose checks name the key
/// that is wrong.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(try_from = "CheckerFile", into = "CheckerFile")]
pub struct Checker {
    pub name: String,
    pub action: CheckerAction,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub failures_before_down: u32,
    pub successes_before_up: u32,
    pub probe: Probe,
}

/// What a checker tests, with what its kind needs (see [`CheckerKind`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    Tcp {
        address: SocketAddr,
    },
    Http {
        url: HttpUrl,
        /// The status wanted (200 unless set).
        status: u16,
        /// A substring the body must hold.
        body: Option<String>,
    },
    Ping {
        host: IpAddr,
    },
    Interface(Link),
    Process {
        matching: ProcessMatch,
        min: u32,
        max: Option<u32>,
    },
    Custom {
        command: String,
    },
}

/// Whose link an interface checker watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// The fastpath's port (read through DPDK).
    Nic,
    /// A kernel interface.
    Kernel(String),
}

/// Which processes a process checker counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessMatch {
    /// By name (`/proc/PID/comm`).
    Name(String),
    /// By a regex on the command line (checked when the config is read).
    Pattern(String),
}

impl Probe {
    pub fn kind(&self) -> CheckerKind {
        match self {
            Probe::Tcp { .. } => CheckerKind::Tcp,
            Probe::Http { .. } => CheckerKind::Http,
            Probe::Ping { .. } => CheckerKind::Ping,
            Probe::Interface(_) => CheckerKind::Interface,
            Probe::Process { .. } => CheckerKind::Process,
            Probe::Custom { .. } => CheckerKind::Custom,
        }
    }
}

/// A `[[checkers]]` entry as the file has it: the keys of every kind
/// optional, so that a key of another kind is an error that names it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CheckerFile {
    pub name: String,
    pub kind: CheckerKind,
    #[serde(default)]
    pub action: CheckerAction,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    #[serde(default = "default_failures_before_down")]
    pub failures_before_down: u32,
    #[serde(default = "default_successes_before_up")]
    pub successes_before_up: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

fn default_interval_ms() -> u32 {
    1000
}
fn default_timeout_ms() -> u32 {
    1000
}
fn default_failures_before_down() -> u32 {
    3
}
fn default_successes_before_up() -> u32 {
    1
}

/// A parsed `http://host[:port][/path]` URL (plain HTTP: a health
/// endpoint on the node itself or its backend).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    /// The URL as written.
    pub text: String,
    /// `host:port` to connect to.
    pub authority: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl HttpUrl {
    pub fn parse(url: &str) -> Result<HttpUrl, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            // [v6]:port
            let (h, tail) = h
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed ["))?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                None if tail.is_empty() => 80,
                None => return Err(format!("{url:?}: bad authority")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                ),
                None => (authority.to_string(), 80),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(format!("{url:?}: bad host or port"));
        }
        Ok(HttpUrl {
            text: url.to_string(),
            authority: authority.to_string(),
            host,
            port,
            path: path.to_string(),
        })
    }
}

impl TryFrom<CheckerFile> for Checker {
    type Error = KeyedError;

    /// Checks the entry's keys against its kind (the error names the key
    /// within the entry, such as `url`).
    fn try_from(f: CheckerFile) -> Result<Checker, KeyedError> {
        f.check_common()?;
        f.check_keys_of_kind()?;
        let probe = f.probe()?;
        Ok(Checker {
            name: f.name,
            action: f.action,
            interval_ms: f.interval_ms,
            timeout_ms: f.timeout_ms,
            failures_before_down: f.failures_before_down,
            successes_before_up: f.successes_before_up,
            probe,
        })
    }
}

impl From<Checker> for CheckerFile {
    fn from(c: Checker) -> CheckerFile {
        let mut f = CheckerFile {
            name: c.name,
            kind: c.probe.kind(),
            action: c.action,
            interval_ms: c.interval_ms,
            timeout_ms: c.timeout_ms,
            failures_before_down: c.failures_before_down,
            successes_before_up: c.successes_before_up,
            address: None,
            url: None,
            status: None,
            body: None,
            host: None,
            interface: None,
            process: None,
            pattern: None,
            min: None,
            max: None,
            command: None,
        };
        match c.probe {
            Probe::Tcp { address } => f.address = Some(address),
            Probe::Http { url, status, body } => {
                f.url = Some(url.text);
                f.status = Some(status);
                f.body = body;
            }
            Probe::Ping { host } => f.host = Some(host),
            Probe::Interface(Link::Nic) => f.interface = Some("nic".into()),
            Probe::Interface(Link::Kernel(name)) => f.interface = Some(name),
            Probe::Process { matching, min, max } => {
                match matching {
                    ProcessMatch::Name(n) => f.process = Some(n),
                    ProcessMatch::Pattern(p) => f.pattern = Some(p),
                }
                f.min = Some(min);
                f.max = max;
            }
            Probe::Custom { command } => f.command = Some(command),
        }
        f
    }
}

impl CheckerFile {
    fn check_common(&self) -> Result<(), KeyedError> {
        if self.name.trim().is_empty() {
            return Err(KeyedError::new("name", "must not be empty"));
        }
        let ms = |k: &'static str, v: u32, lo: u32, hi: u32| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(KeyedError::new(
                    k,
                    format!("{v} is out of range {lo}..={hi}"),
                ))
            }
        };
        ms("interval_ms", self.interval_ms, 10, 3_600_000)?;
        ms("timeout_ms", self.timeout_ms, 1, 600_000)?;
        ms("failures_before_down", self.failures_before_down, 1, 1000)?;
        ms("successes_before_up", self.successes_before_up, 1, 1000)
    }

    /// Every kind-specific key present is one of this kind's, and every
    /// key the kind needs is present.
    fn check_keys_of_kind(&self) -> Result<(), KeyedError> {
        use CheckerKind::*;
        // Which kind-specific keys each kind needs (n) or allows (a).
        let fields: [(&str, bool, &[CheckerKind], &[CheckerKind]); 11] = [
            ("address", self.address.is_some(), &[Tcp], &[Tcp]),
            ("url", self.url.is_some(), &[Http], &[Http]),
            ("status", self.status.is_some(), &[], &[Http]),
            ("body", self.body.is_some(), &[], &[Http]),
            ("host", self.host.is_some(), &[Ping], &[Ping]),
            (
                "interface",
                self.interface.is_some(),
                &[Interface],
                &[Interface],
            ),
            ("process", self.process.is_some(), &[], &[Process]),
            ("pattern", self.pattern.is_some(), &[], &[Process]),
            ("min", self.min.is_some(), &[], &[Process]),
            ("max", self.max.is_some(), &[], &[Process]),
            ("command", self.command.is_some(), &[Custom], &[Custom]),
        ];
        let kind_name = self.kind.name();
        for (field, present, needed, allowed) in fields {
            if present && !allowed.contains(&self.kind) {
                return Err(KeyedError::new(
                    field,
                    format!("not a key of a {kind_name} checker"),
                ));
            }
            if !present && needed.contains(&self.kind) {
                return Err(KeyedError::new(
                    field,
                    format!("missing: a {kind_name} checker needs it"),
                ));
            }
        }
        Ok(())
    }

    /// The probe, once the keys are those of the kind.
    fn probe(&self) -> Result<Probe, KeyedError> {
        let missing = |k: &'static str| KeyedError::new(k, "missing");
        Ok(match self.kind {
            CheckerKind::Tcp => Probe::Tcp {
                address: self.address.ok_or_else(|| missing("address"))?,
            },
            CheckerKind::Http => {
                let url = HttpUrl::parse(self.url.as_deref().unwrap_or(""))
                    .map_err(|e| KeyedError::new("url", e))?;
                let status = self.status.unwrap_or(200);
                if !(100..=599).contains(&status) {
                    return Err(KeyedError::new(
                        "status",
                        format!("{status} is not an HTTP status"),
                    ));
                }
                Probe::Http {
                    url,
                    status,
                    body: self.body.clone(),
                }
            }
            CheckerKind::Ping => Probe::Ping {
                host: self.host.ok_or_else(|| missing("host"))?,
            },
            CheckerKind::Interface => {
                let name = self.interface.as_deref().unwrap_or("");
                if name == "nic" {
                    Probe::Interface(Link::Nic)
                } else if crate::valid_ifname(name) {
                    Probe::Interface(Link::Kernel(name.to_string()))
                } else {
                    return Err(KeyedError::new(
                        "interface",
                        format!("{name:?} is neither \"nic\" nor a Linux interface name"),
                    ));
                }
            }
            CheckerKind::Process => self.process_probe()?,
            CheckerKind::Custom => {
                let command = self.command.clone().ok_or_else(|| missing("command"))?;
                if command.trim().is_empty() {
                    return Err(KeyedError::new("command", "must not be empty"));
                }
                Probe::Custom { command }
            }
        })
    }

    fn process_probe(&self) -> Result<Probe, KeyedError> {
        let matching = match (&self.process, &self.pattern) {
            (None, None) | (Some(_), Some(_)) => {
                return Err(KeyedError::new(
                    "process",
                    "a process checker needs exactly one of `process` (a name) or `pattern` (a regex on the command line)",
                ))
            }
            (Some(p), None) if p.is_empty() || p.len() > 15 => {
                return Err(KeyedError::new(
                    "process",
                    format!("{p:?}: a process name has 1 to 15 characters (see /proc/PID/comm)"),
                ))
            }
            (Some(p), None) => ProcessMatch::Name(p.clone()),
            (None, Some(p)) => {
                regex::Regex::new(p)
                    .map_err(|e| KeyedError::new("pattern", format!("bad regex: {e}")))?;
                ProcessMatch::Pattern(p.clone())
            }
        };
        let min = self.min.unwrap_or(1);
        if let Some(max) = self.max {
            if max < min {
                return Err(KeyedError::new("max", format!("{max} is below min {min}")));
            }
        }
        Ok(Probe::Process {
            matching,
            min,
            max: self.max,
        })
    }
}

impl CheckerKind {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            CheckerKind::Tcp => "tcp",
            CheckerKind::Http => "http",
            CheckerKind::Ping => "ping",
            CheckerKind::Interface => "interface",
            CheckerKind::Process => "process",
            CheckerKind::Custom => "custom",
        }
    }
}

impl CheckerAction {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            CheckerAction::Wait => "wait",
            CheckerAction::Restart => "restart",
            CheckerAction::Stopstart => "stopstart",
            CheckerAction::Stop => "stop",
        }
    }
}

/// Validates `[health]`, `[scripts]` and `[[checkers]]`.
pub(crate) fn validate(
    health: &Health,
    scripts: &Scripts,
    checkers: &[Checker],
) -> Result<(), ConfigError> {
    if health.maxloop == 0 || health.maxloop > 1000 {
        return Err(invalid(
            "health.maxloop",
            format!("{} is out of range 1..=1000", health.maxloop),
        ));
    }
    if health.loop_window_s == 0 || health.loop_window_s > 30 * 86_400 {
        return Err(invalid(
            "health.loop_window_s",
            format!("{} is out of range 1..=2592000", health.loop_window_s),
        ));
    }
    for (name, path) in [
        ("prestart", &scripts.prestart),
        ("start", &scripts.start),
        ("stop", &scripts.stop),
        ("poststop", &scripts.poststop),
    ] {
        if let Some(p) = path {
            if !p.is_absolute() {
                return Err(invalid(
                    format!("scripts.{name}"),
                    format!("{} must be an absolute path", p.display()),
                ));
            }
        }
    }
    if scripts.graceful_timeout_ms == 0 {
        return Err(invalid("scripts.graceful_timeout_ms", "must be above 0"));
    }
    if scripts.forced_timeout_ms == 0 {
        return Err(invalid("scripts.forced_timeout_ms", "must be above 0"));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, c) in checkers.iter().enumerate() {
        let key = format!("checkers[{i}]");
        if !names.insert(c.name.as_str()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("duplicate checker name {:?}", c.name),
            ));
        }
    }
    Ok(())
}
