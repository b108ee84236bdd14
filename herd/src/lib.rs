//! The `herd` binary's pure parts, a library so that the fuzz targets and
//! the lab's tools use them too: the census parser of the kernel's
//! connections, the continuity of moves, the typed status model, the recent events, the status page.
#![forbid(unsafe_code)]

pub mod census;
pub mod continuity;
pub mod events;
pub mod page;
pub mod request;
pub mod status;
pub mod status_text;
