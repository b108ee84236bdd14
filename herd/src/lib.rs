//! What the `herd` binary's pure parts export for their fuzz targets: the
//! census parser of the kernel's connections.

pub mod census;
