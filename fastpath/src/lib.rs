//! Herd's fastpath.
//!
//! The pure part — [`wire`] (header views), [`hash`] (herd-hash v1),
//! [`decision`] (SPEC §2), [`reply`] (ARP/NDP answers), [`table`] (the
//! RCU bucket table), [`flows`] (flow tracking while buckets move), [`counters`] and [`poll`] (adaptive idle policy) —
//! works on byte slices and has no DPDK types. [`dpdk`] is the one thin
//! safe layer over `dpdk-sys`, and [`node`] runs a node's lcores with it.

pub mod counters;
pub mod decision;
pub mod dpdk;
pub mod egress;
pub mod flows;
pub mod hash;

pub mod poll;
pub mod prefilter;
pub mod reply;

pub mod node;
pub mod offload;
pub mod setup;
pub mod table;
pub mod wire;
