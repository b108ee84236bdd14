//! The bench's state dir, `/run/herd-bench-serve`, on a tmpfs of its own:
//! the bulk file, the `--kernel-xdp-pass` program, each node's nginx files
//! and uploads; made at the start (a crashed run's removed first) and
//! removed, with the lab, by [`Cleanup`] at the end, also on error.

use super::kernel_node::build_xdp_pass;
use super::options::Options;
use crate::lab;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub(super) const STATE_DIR: &str = "/run/herd-bench-serve";
/// The bulk file's size (100 MiB).
pub(super) const BULK_BYTES: u64 = 100 << 20;

/// The state dir, fresh: on a tmpfs, with the bulk file and (with
/// `--kernel-xdp-pass`) the kernel nodes' XDP program in it.
pub(super) fn prepare(o: &Options) -> Result<PathBuf> {
    let dir = PathBuf::from(STATE_DIR);
    // A crashed run's mount and files.
    unmount_state();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    mount_tmpfs(&dir)?;
    write_bulk(&dir.join("bulk"))?;
    if o.kernel_xdp_pass {
        build_xdp_pass(&dir)?;
    }
    Ok(dir)
}

/// Tears the lab down and removes the state dir, also on error.
pub(super) struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = lab::down();
        unmount_state();
        let _ = std::fs::remove_dir_all(STATE_DIR);
    }
}

/// The state dir on a tmpfs of its own: the bulk file, nginx's request
/// bodies and the uploaded files live in memory, so the upload measures
/// the served path, not the disk. `/run` is not a tmpfs on every host (on
/// some it is the root file system): there every upload wrote 100 MiB
/// through ext4 and its writeback, in nginx's time and at random moments.
fn mount_tmpfs(dir: &Path) -> Result<()> {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2g,mode=0755", "herd-bench-serve"])
        .arg(dir)
        .status()
        .context("running mount")?;
    if !status.success() {
        bail!("could not mount a tmpfs on {} ({status})", dir.display());
    }
    Ok(())
}

/// Unmounts the state dir's tmpfs, if it is mounted (as often as it is
/// listed: a shared mount can be listed twice, bounded all the same).
fn unmount_state() {
    let mounted = || {
        std::fs::read_to_string("/proc/self/mounts")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(STATE_DIR)))
    };
    for _ in 0..4 {
        if !mounted() {
            break;
        }
        let _ = Command::new("umount").arg(STATE_DIR).status();
    }
}

/// The bulk file: real zero bytes (not sparse), so every read is of
/// page-cache pages like a real file's.
fn write_bulk(path: &Path) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..BULK_BYTES >> 20 {
        f.write_all(&chunk)?;
    }
    Ok(())
}
