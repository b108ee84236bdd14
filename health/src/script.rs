//! Running one script: arguments and environment, output into the log,
//! SIGTERM after the graceful timeout and SIGKILL after the forced one.

use crate::machine::ScriptRun;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

pub struct Timeouts {
    pub graceful: Duration,
    pub forced: Duration,
}

/// Runs `path` as `path CURRENT NEXT ACTION`; returns whether it exited 0
/// and how it ended.
pub async fn run(
    path: &Path,
    run: &ScriptRun,
    env: &[(&str, String)],
    timeouts: &Timeouts,
) -> (bool, String) {
    let (current, next) = (run.current.name(), run.next.name());
    let mut cmd = Command::new(path);
    cmd.args([current, next, run.action])
        .env("HERD_STATE", current)
        .env("HERD_NEXT_STATE", next)
        .env("HERD_ACTION", run.action)
        .env("HERD_SCRIPT", run.script.name())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout signals whatever it started.
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (false, format!("cannot run {}: {e}", path.display())),
    };
    let script = run.script.name();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(out, script, "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(err, script, "stderr"));
    }
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let status = match tokio::time::timeout(timeouts.graceful, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            tracing::warn!(
                script,
                "still running after {} ms: SIGTERM",
                timeouts.graceful.as_millis()
            );
            if let Some(g) = pgid {
                let _ = killpg(g, Signal::SIGTERM);
            }
            match tokio::time::timeout(timeouts.forced, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    tracing::warn!(
                        script,
                        "still running {} ms after SIGTERM: SIGKILL",
                        timeouts.forced.as_millis()
                    );
                    if let Some(g) = pgid {
                        let _ = killpg(g, Signal::SIGKILL);
                    }
                    let _ = child.wait().await;
                    return (false, "killed after its timeouts".into());
                }
            }
        }
    };
    match status {
        Ok(s) if s.success() => (true, "exit 0".into()),
        Ok(s) => (false, s.to_string()),
        Err(e) => (false, format!("wait: {e}")),
    }
}

/// Each line of a script's output becomes a log line. Ends when the pipe
/// closes (a daemon the script started may keep it open; its lines are
/// logged too).
async fn log_lines(pipe: impl AsyncRead + Unpin, script: &'static str, stream: &'static str) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(script, stream, "{line}");
    }
}
