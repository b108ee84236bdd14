//! Herd's pure packet code, on byte slices, with no DPDK type: it builds
//! and its tests run on any machine.
//!
//! [`wire`] (header views), [`hash`] (herd-hash v1), [`decision`]
//! (docs/design.md §2), [`reply`] (ARP/NDP answers), [`table`] (the RCU
//! bucket table), [`flows`] (flow tracking while buckets move),
//! [`counters`], [`poll`]
//! (adaptive idle policy), [`balance`] (the kernel's flows between the
//! lcores and the direct egress) and [`offload`] (virtio-net header, checksums,
//! segmentation, GRO). The `fastpath` crate drives them with DPDK.
#![forbid(unsafe_code)]

pub mod balance;
pub mod counters;
pub mod decision;
pub mod flows;
pub mod hash;
pub mod offload;
pub mod poll;
pub mod reply;
pub mod table;
pub mod wire;
