//! Integration tests of the `raftmq` binary: real processes on 127.0.0.1.

mod cluster;
mod t10_group;
mod t20_failover;
mod t30_catch_up;
mod t35_retention;
mod t40_membership;
mod t45_nameserver;
mod t46_spread;
mod t50_transfer;
mod t60_unavailable;
mod t70_clock_skew;
mod t80_disk_full;
mod t90_peer_security;
mod t95_client_auth;
mod t97_tls;
mod t98_cli;
