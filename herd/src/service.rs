//! Running under a service manager: systemd's notify protocol (READY,
//! RELOADING, STOPPING, STATUS and the watchdog, through `sd-notify`) and
//! log lines that journald files under their priority.
//!
//! The watchdog is fed only while every lcore makes progress: an lcore
//! counts its polls, and each look rings every lcore's doorbell (an idle
//! one polls once when it hears it), so a count that stands still between
//! two looks means a stuck lcore, whose buckets' traffic nobody else takes
//! while the node's heartbeats go on. systemd then restarts the node
//! (`Restart=on-failure`) and its peers take the buckets meanwhile.

use sd_notify::NotifyState;
use std::time::Duration;

/// Where systemd listens, if it started this process with `Type=notify`.
pub struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`,
    /// which must name this process) from the environment.
    pub fn from_env() -> Notifier {
        // As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must name
        // this process; unset, the watchdog is ours. (`sd_notify`'s own
        // check requires it set.)
        let for_us = match std::env::var("WATCHDOG_PID") {
            Ok(pid) => pid.parse() == Ok(std::process::id()),
            Err(_) => true,
        };
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog,
        }
    }

    /// How often to feed the watchdog: half its timeout, as systemd
    /// advises; `None` when no watchdog is asked for.
    pub fn watchdog_period(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(false, states) {
            tracing::warn!("service manager notification failed: {e}");
        }
    }

    /// The node runs: fastpath, membership and control socket.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn reloading(&self) {
        self.send(&[NotifyState::Reloading]);
    }

    /// A reload ended (applied or refused: the node runs either way).
    pub fn reloaded(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn watchdog(&self, status: &str) {
        self.send(&[NotifyState::Watchdog, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }
}

/// Decides, at each watchdog period, whether every lcore has polled since
/// the last decision.
#[derive(Debug, Default)]
pub struct LcoreProgress {
    last: Vec<u64>,
}

/// Whether the lcores moved since the last look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every lcore polled: feed the watchdog.
    All,
    /// These lcores (by queue) have not polled since the last look.
    Stuck(Vec<usize>),
}

impl LcoreProgress {
    /// `polls`: each lcore's poll count now, by queue. The first look
    /// (and a look after the lcores changed in number) counts as progress:
    /// there is nothing to compare with yet.
    pub fn look(&mut self, polls: &[u64]) -> Progress {
        let stuck: Vec<usize> = if self.last.len() == polls.len() {
            (0..polls.len())
                .filter(|&q| polls[q] == self.last[q])
                .collect()
        } else {
            Vec::new()
        };
        self.last = polls.to_vec();
        if stuck.is_empty() {
            Progress::All
        } else {
            Progress::Stuck(stuck)
        }
    }
}

/// The log filter, changed by a reload (`log.level`).
pub static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// Logs by `directives` (`log.level`) from now on, unless `HERD_LOG` was
/// set when the process started (it wins: say so). Returns what is in
/// force.
pub fn set_log_level(directives: &str) -> String {
    if let Ok(env) = std::env::var("HERD_LOG") {
        if env != directives {
            tracing::info!(
                "log level: HERD_LOG={env} is set and wins over log.level = {directives:?}"
            );
        }
        return env;
    }
    let Some(handle) = LOG_FILTER.get() else {
        return directives.to_string();
    };
    match tracing_subscriber::EnvFilter::try_new(directives) {
        Ok(filter) => {
            if let Err(e) = handle.reload(filter) {
                tracing::warn!("log level {directives:?} not applied: {e}");
            }
        }
        // The config checked the directives; this is not expected.
        Err(e) => tracing::warn!("log level {directives:?} not applied: {e}"),
    }
    directives.to_string()
}

/// A log line's syslog priority, as journald reads it from a `<N>` prefix
/// (sd-daemon(3)).
pub fn syslog_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        tracing::Level::DEBUG | tracing::Level::TRACE => 7,
    }
}

/// Whether stderr is a journald stream (systemd sets `JOURNAL_STREAM` to
/// its device and inode).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    // The metadata of fd 2 through /proc: no unsafe needed.
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
        Err(_) => false,
    }
}

/// Formats each event with its `<N>` priority prefix before the wrapped
/// format.
pub struct JournalPriority<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_watchdog_is_fed_only_while_every_lcore_polls() {
        let mut p = LcoreProgress::default();
        assert_eq!(p.look(&[10, 20]), Progress::All, "nothing to compare yet");
        assert_eq!(p.look(&[11, 25]), Progress::All);
        assert_eq!(p.look(&[11, 30]), Progress::Stuck(vec![0]));
        assert_eq!(p.look(&[11, 30]), Progress::Stuck(vec![0, 1]));
        assert_eq!(p.look(&[12, 31]), Progress::All, "both moved again");
        assert_eq!(p.look(&[12, 31, 0]), Progress::All, "lcores changed");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journald_reads_each_lines_priority_from_its_prefix() {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let format = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        let subscriber = tracing_subscriber::fmt()
            .event_format(JournalPriority(format))
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("a");
            tracing::warn!("b");
            tracing::info!("c");
            tracing::debug!("d");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let prefixes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
    }
}
