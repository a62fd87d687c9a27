//! Checker tests on hand-written histories: one module per anomaly, and a clean history.

mod builder;
mod clean;
mod cli;
mod commit_regression;
mod duplicate;
mod early;
mod inconsistent_offset;
mod lost;
mod misplaced;
mod nonmonotonic_send;
mod phantom;
mod poll_order;
mod queue;
mod short_run;
mod txn;
