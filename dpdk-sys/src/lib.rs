//! Raw FFI bindings to the system DPDK (Debian's 22.11), generated at build
//! time by bindgen, plus `herd_*` wrappers for DPDK's static inline
//! functions (see `shim.c`). Everything here is `unsafe` to call; the safe
//! layer lives in `fastpath::dpdk`.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all)]
// Generated code: bindgen's layout tests read fields through raw pointers
// in `unsafe` blocks it writes without comments.
#![allow(clippy::undocumented_unsafe_blocks, unsafe_op_in_unsafe_fn)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
