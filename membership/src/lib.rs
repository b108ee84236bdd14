//! Herd's membership.
//!
//! - [`assign`]: which node owns which bucket, a deterministic function of
//!   the farm's nodes, their weights and which of them are alive.
//! - [`wire`]: the authenticated heartbeat message.
//! - [`machine`]: the protocol as a sans-IO state machine (datagrams and
//!   time in; datagrams, view and ownership changes out).
//! - [`driver`]: the tokio driver, one UDP socket per heartbeat network.
#![forbid(unsafe_code)]

pub mod assign;
pub mod driver;
pub mod machine;
pub mod wire;
