//! Compiles the XDP pre-filter (`bpf/prefilter.c`) with Debian's clang for
//! the BPF target; the object is embedded in the binary
//! (`fastpath::prefilter::OBJECT`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=bpf/prefilter.c");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the
    // host's multiarch directory.
    let multiarch = Command::new("cc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    let status = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/prefilter.c", "-o"])
        .arg(out.join("prefilter.o"))
        .status()
        .expect("clang runs (Debian's clang and libbpf-dev build the XDP pre-filter)");
    assert!(status.success(), "clang could not compile bpf/prefilter.c");
}
