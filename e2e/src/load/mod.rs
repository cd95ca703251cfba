//! The load generator: the two shapes of load this project puts on an issuer, behind
//! one binary (`couponrush-load`) and one module for the tests.
//!
//! - The **open model** ([`Plan`]): requests due on a fixed schedule whatever the server
//!   does, latency measured from the due time. What the benchmark measures with.
//! - The **spike** ([`Spike`]): the seed round as users make it, a fixed number of
//!   requests in flight, every answer tallied, then the guarantees checked against the
//!   answers and against MySQL ([`rows`], [`check_sold_out`], [`check_winners`]). What
//!   the tests, the demo and the end-to-end scenarios drive a round with.

mod open_model;
mod spike;

pub use open_model::{Plan, Quantiles, Report, quantile};
pub use spike::{HangUps, Spike, Tally, check_sold_out, check_winners, poll_queue, rows, user_name};
