//! Application health (docs/design.md §4): checker policy and the node's life cycle
//! (STOP, WAIT, UP; actions; scripts) as sans-IO logic, and a tokio driver
//! that runs the probes and the scripts.
#![forbid(unsafe_code)]

pub mod checker;
pub mod driver;
pub mod machine;
pub mod probe;
pub mod script;
