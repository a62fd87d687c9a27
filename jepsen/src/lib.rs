//! raftmq-jepsen: a black-box chaos harness for raftmq clusters.
//!
//! It starts real `raftmq serve` processes ([`control`]), puts a TCP proxy it owns in front
//! of every node so it can cut links between them ([`proxy`]), injects faults from outside
//! the processes ([`nemesis`]), drives concurrent clients through the HTTP API
//! ([`workload`]), records every operation ([`history`]), checks the history for lost,
//! duplicated and reordered messages ([`checker`], a pure function) and writes a report
//! ([`report`]).
//!
//! Must never: depend on a raftmq workspace crate (it declares its own DTOs, so an API
//! change breaks it loudly), send traffic to any address outside 127.0.0.0/8, or leave a
//! process it started running.

pub mod checker;
pub mod client;
pub mod control;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod runner;
pub mod txn_check;
pub mod workload;
