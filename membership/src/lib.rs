//! Herd's membership.
//!
//! [`assign`]: which node owns which bucket, as a deterministic function of
//! the farm's nodes, their weights and which of them are alive. The
//! heartbeat protocol that decides who is alive (a sans-IO state machine
//! with a tokio driver) builds on it.

pub mod assign;
pub mod machine;
pub mod wire;
