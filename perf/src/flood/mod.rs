//! Parts of `herd-bench flood` (see [`crate::bench_flood`]): the packet
//! generator's configurations and its report, the client that measures
//! the VIP meanwhile, and the plot.

pub(crate) mod client;
pub(crate) mod plot;
pub(crate) mod trafgen;
