//! Compiles Herd's BPF programs with Debian's clang for the BPF target:
//! the XDP pre-filter (`bpf/prefilter.c`), the ingress guard
//! (`bpf/guard.c`: af_packet's socket filter, the heartbeats' tc path;
//! both share `bpf/decide.h`) and the TAP's direct egress
//! (`bpf/egress.c`); the objects are embedded in the binary
//! (`fastpath::prefilter::OBJECT`, `fastpath::prefilter::GUARD`,
//! `fastpath::egress::OBJECT`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    for program in ["prefilter", "guard", "egress"] {
        println!("cargo:rerun-if-changed=bpf/{program}.c");
    }
    println!("cargo:rerun-if-changed=bpf/decide.h");
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
    for program in ["prefilter", "guard", "egress"] {
        let status = Command::new("clang")
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(["-c", &format!("bpf/{program}.c"), "-o"])
            .arg(out.join(format!("{program}.o")))
            .status()
            .expect("clang runs (Debian's clang and libbpf-dev build Herd's BPF programs)");
        assert!(status.success(), "clang could not compile bpf/{program}.c");
    }
}
