//! Integration tests of raftmq-http-api: the router driven with `oneshot`, no sockets,
//! over a real single-node broker in a temp dir.

mod support;
mod t10_produce_read;
mod t15_scheduled;
mod t16_transactions;
mod t20_errors;
mod t30_topics_cluster;
mod t35_metrics;
mod t40_groups;
