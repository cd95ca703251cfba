//! What one request ends as, before it becomes an HTTP answer.

use couponrush_core::round_store::admission::Admission;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Admission(Admission),
    Queued { position: u64 },
}
