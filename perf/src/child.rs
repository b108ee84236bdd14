//! A child process's output read while it runs, so that it never blocks
//! on a full pipe, whatever the bench does meanwhile.

use anyhow::{Context, Result};
use std::io::Read;
use std::process::Child;
use std::thread::JoinHandle;

/// The threads reading a child's stdout and stderr (both piped).
pub struct Output {
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
}

impl Output {
    /// Starts reading `child`'s piped stdout and stderr.
    pub fn read(child: &mut Child) -> Result<Self> {
        let stdout = child
            .stdout
            .take()
            .context("the child's stdout is not piped")?;
        let stderr = child
            .stderr
            .take()
            .context("the child's stderr is not piped")?;
        Ok(Output {
            stdout: read_all(stdout),
            stderr: read_all(stderr),
        })
    }

    /// What the child wrote to stdout and to stderr (once both closed:
    /// call it after the child ended).
    pub fn join(self) -> (String, String) {
        (
            self.stdout.join().unwrap_or_default(),
            self.stderr.join().unwrap_or_default(),
        )
    }
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn both_pipes_are_read_past_a_pipe_buffer() {
        // 200 KiB on each: more than a pipe holds, so a child whose pipes
        // were not read while it ran would never end.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "head -c 204800 /dev/zero | tr '\\0' a; head -c 204800 /dev/zero | tr '\\0' b >&2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Output::read(&mut child).unwrap();
        assert!(child.wait().unwrap().success());
        let (out, err) = output.join();
        assert_eq!((out.len(), err.len()), (204_800, 204_800));
        assert!(out.bytes().all(|b| b == b'a') && err.bytes().all(|b| b == b'b'));
    }
}
