//! Herd's fastpath: the DPDK poll-mode driver of the pure packet code.
//!
//! The pure part lives in the `packet` crate (no DPDK types; re-exported
//! here under its module names). [`dpdk`] is the one thin safe layer over
//! `dpdk-sys`, the TAP and libbpf, with every `unsafe` of the project
//! outside `dpdk-sys`; [`node`] runs a node's lcores with it, [`setup`]
//! prepares the kernel side, [`prefilter`] and [`egress`] hold the XDP
//! and tc programs' maps.
#![deny(unsafe_code)]

pub use packet::{balance, counters, decision, flows, hash, offload, poll, reply, table, wire};

#[allow(unsafe_code)]
pub mod dpdk;
pub mod egress;

pub mod prefilter;

pub mod node;
pub mod setup;
