//! The control plane's pure parts, with no DPDK in them, shared by the
//! `herd` binary (the node and the CLI), the lab's tools and the fuzz
//! targets: the typed status model ([`status`]) with its text
//! ([`status_text`]) and page ([`page`]), the control socket's protocol
//! ([`request`]), the census of the kernel's connections ([`census`]) and
//! the continuity of moves ([`continuity`]), the recent events
//! ([`events`]).
#![forbid(unsafe_code)]

pub mod census;
pub mod continuity;
pub mod events;
pub mod page;
pub mod request;
pub mod status;
pub mod status_text;
