#!/usr/bin/env bash
# Herd's fuzz targets under libFuzzer (cargo-fuzz, nightly toolchain):
# decision, heartbeat, config, census (fuzz/src/lib.rs says what each
# asserts). Each runs for a bounded time (or count) on its committed corpus
# (fuzz/corpus/<target>), which it grows.
#
#   bash ci/fuzz.sh                     # every target, 60 s each
#   bash ci/fuzz.sh --seconds 10        # CI's smoke
#   bash ci/fuzz.sh --runs 100000000 decision
#
# Any failure fails the run: a target that does not build, cargo-fuzz
# failing, a crash, a leak or a timeout. Without a nightly toolchain
# (cargo-fuzz needs one) nothing is fuzzed: it says so and fails, unless
# --allow-replay asks it to replay the committed corpora through the same
# targets on stable instead (and it still says it did not fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

limit=(-max_total_time=60)
allow_replay=0
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) limit=(-max_total_time="$2"); shift 2 ;;
        --runs) limit=(-runs="$2"); shift 2 ;;
        --allow-replay) allow_replay=1; shift ;;
        -*) echo "ci/fuzz.sh: unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=(decision heartbeat config census)

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "ci/fuzz.sh: NOT FUZZING: no nightly toolchain here (cargo-fuzz needs one)"
    if [ "$allow_replay" = 1 ]; then
        echo "ci/fuzz.sh: replaying the committed corpora on stable instead (--allow-replay)"
        cargo test --manifest-path fuzz/Cargo.toml --release
        exit 0
    fi
    echo "ci/fuzz.sh: install one (rustup toolchain install nightly) or pass --allow-replay" >&2
    exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi
for t in "${targets[@]}"; do
    echo "== fuzz $t ${limit[*]}"
    # No sanitizer: the targets are safe Rust (the assertions are the
    # checks); -s address finds the same at a third of the speed.
    log=$(mktemp)
    status=0
    cargo +nightly fuzz run --release -s none "$t" -- "${limit[@]}" -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|==[0-9]+==|thread .* panicked|SUMMARY|ERROR|error)' "$log" || true
    if [ "$status" != 0 ]; then
        echo "ci/fuzz.sh: cargo fuzz run $t failed (exit $status); its last lines:" >&2
        tail -n 30 "$log" >&2
        rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    # A crash leaves its input in fuzz/artifacts/<target>/ and fails the run.
    if compgen -G "fuzz/artifacts/$t/crash-*" >/dev/null || compgen -G "fuzz/artifacts/$t/oom-*" >/dev/null \
        || compgen -G "fuzz/artifacts/$t/timeout-*" >/dev/null; then
        echo "ci/fuzz.sh: $t found a failing input:" fuzz/artifacts/"$t"/* >&2
        exit 1
    fi
done
