//! A seed's schedule: the fault steps a run plays (drawn from the seed, weighted towards
//! the faults that found bugs), the timer steps drawn apart from them, the seed's Raft
//! timing and how its power losses damage unsynced bytes. Pure draws: the same seed and
//! options give the same steps, whatever else the run does.
//!
//! Must never: draw from another stream than the seed's (a seed's schedule is what
//! `replay` plays again), or let a new kind of draw shift the draws of older ones.

use raftmq_raft::{InstallStep, NodeId, RaftTiming};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::lossy::Damage;
use crate::net::Faults;
use crate::run::Options;

/// One fault step.
#[derive(Clone, Debug)]
pub enum Step {
    /// Cut these nodes off from the rest, both ways.
    Partition(Vec<NodeId>),
    /// Cut one direction of one link.
    CutOneWay(NodeId, NodeId),
    /// Restore every link.
    Heal,
    /// Kill a node.
    Crash(NodeId),
    /// Cut a node's power: killed, and its CommitLog loses what was not synced.
    PowerLoss(NodeId),
    /// Cut every node's power at once.
    Outage,
    /// Kill a node and delete its data directory; a restart rebuilds it from its peers.
    Wipe(NodeId),
    /// Start a killed node again.
    Restart(NodeId),
    /// Change how unreliable the links are.
    Faults(Faults),
    /// Ask the leader to hand over to this node.
    TransferLeader(NodeId),
    /// This node snapshots and lets Raft forget its log up to it: a follower behind it
    /// then catches up by a snapshot sent over the simulated network.
    Compact(NodeId),
    /// Set a node's wall clock this many ms off (0: right again).
    Skew(NodeId, i64),
    /// Move every node's wall clock this many ms forward.
    Warp(u64),
    /// Remove a node from the group, delete its data, and add it back as a new member.
    Rejoin(NodeId),
    /// This node goes down while the others forget their logs, comes back, and crashes
    /// after this step of the snapshot install that catches it up (it restarts at once,
    /// and must finish or discard the install).
    CrashInInstall(NodeId, InstallStep),
    /// This node's Raft clock jumps this many ms forward, as after a pause of the process
    /// (a stop-the-world, a VM migration): every timer due by then fires at once, so a
    /// follower's election timeout runs out with its leader alive.
    Stall(NodeId, u64),
    /// This node's Raft clock runs at this many percent of real time from now on (100:
    /// right again): its heartbeats and election timeouts come faster or slower than its
    /// peers expect.
    Drift(NodeId, u32),
}

/// The fault steps of a seed: every 80-400 ms one step, weighted towards the faults that
/// found bugs in chaos runs; at most a minority of nodes down at once unless the draw says
/// to take a majority (about one step in ten).
pub fn schedule(
    rng: &mut StdRng,
    ids: &[NodeId],
    duration_ms: u64,
    faults: Options,
) -> Vec<(u64, Step)> {
    let mut steps = Vec::new();
    let mut down: Vec<NodeId> = Vec::new();
    // One node's disk at most: losing a majority's data is disaster recovery (a backup),
    // not a fault a group survives.
    let mut wiped: Option<NodeId> = None;
    let mut t = rng.random_range(50..200);
    while t < duration_ms {
        let up: Vec<NodeId> = ids.iter().copied().filter(|i| !down.contains(i)).collect();
        let minority = (ids.len() - 1) / 2;
        let roll = match (faults.classic, faults.membership) {
            (_, true) => rng.random_range(0..120),
            (false, false) => rng.random_range(0..115),
            (true, false) => rng.random_range(0..100),
        };
        let step = match roll {
            0..18 => {
                let mut side = ids.to_vec();
                side.shuffle(rng);
                side.truncate(rng.random_range(1..=minority.max(1)));
                Step::Partition(side)
            }
            18..25 => {
                let a = ids[rng.random_range(0..ids.len())];
                let b = *ids
                    .iter()
                    .filter(|&&b| b != a)
                    .nth(rng.random_range(0..ids.len() - 1))
                    .unwrap_or(&a);
                Step::CutOneWay(a, b)
            }
            25..40 => Step::Heal,
            40..57 if !up.is_empty() && (down.len() < minority || roll < 43) => {
                let id = up[rng.random_range(0..up.len())];
                down.push(id);
                match roll {
                    ..50 => Step::Crash(id),
                    50..54 if faults.wipes && wiped.is_none_or(|w| w == id) => {
                        wiped = Some(id);
                        Step::Wipe(id)
                    }
                    _ if faults.power_loss => Step::PowerLoss(id),
                    _ => Step::Crash(id),
                }
            }
            57..60 if down.is_empty() && faults.power_loss => {
                down = ids.to_vec();
                Step::Outage
            }
            60..74 if !down.is_empty() => {
                let id = down.remove(rng.random_range(0..down.len()));
                Step::Restart(id)
            }
            74..85 => Step::Faults(Faults {
                drop_per_mille: [0, 0, 20, 100, 300][rng.random_range(0..5)],
                duplicate_per_mille: [0, 0, 50][rng.random_range(0..3)],
                max_delay_ms: [0, 2, 10, 40][rng.random_range(0..4)],
            }),
            85..90 => Step::TransferLeader(ids[rng.random_range(0..ids.len())]),
            90..100 => Step::Compact(ids[rng.random_range(0..ids.len())]),
            100..105 if !faults.classic => {
                let minute = 60_000;
                let skew = [-10 * minute, -minute, 0, minute, 10 * minute, 60 * minute];
                Step::Skew(
                    ids[rng.random_range(0..ids.len())],
                    skew[rng.random_range(0..skew.len())],
                )
            }
            105..110 if !faults.classic => Step::Warp([2, 6, 12][rng.random_range(0..3)] * 60_000),
            110..115 if !faults.classic && down.is_empty() => Step::CrashInInstall(
                ids[rng.random_range(0..ids.len())],
                [
                    InstallStep::Staged,
                    InstallStep::Decided,
                    InstallStep::LogSwapped,
                ][rng.random_range(0..3)],
            ),
            115.. if !up.is_empty() => Step::Rejoin(up[rng.random_range(0..up.len())]),
            // A crash or restart that the state of the nodes does not allow.
            _ => Step::Heal,
        };
        steps.push((t, step));
        t += rng.random_range(80..400);
    }
    steps
}

/// The timer steps of a seed, from a stream of draws of their own (so the seed's other
/// steps stay as they were): every 100-500 ms one node's Raft clock stalls (half an
/// election timeout, two, or ten: only the first may leave the timer running) or drifts (a
/// quarter, half, twice or four times real time, or right again).
pub fn timer_steps(
    seed: u64,
    ids: &[NodeId],
    duration_ms: u64,
    timing: RaftTiming,
) -> Vec<(u64, Step)> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x71e3_71e3_71e3_71e3);
    let election = timing.election_timeout_ms;
    let mut steps = Vec::new();
    let mut t = rng.random_range(50..300);
    while t < duration_ms {
        let id = ids[rng.random_range(0..ids.len())];
        let step = if rng.random_range(0..5) < 3 {
            Step::Stall(
                id,
                [election / 2, election * 2, election * 10][rng.random_range(0..3)],
            )
        } else {
            Step::Drift(id, [25, 50, 200, 400, 100][rng.random_range(0..5)])
        };
        steps.push((t, step));
        t += rng.random_range(100..500);
    }
    steps
}

/// The Raft timing of a seed: with `--timing`, drawn from the seed (apart from the
/// schedule's draws, so a seed plays the same steps either way): a heartbeat of 20 to 60 ms
/// and an election timeout of 3 to 10 heartbeats; otherwise [`crate::cluster::TIMING`].
pub fn timing_of(seed: u64, draw: bool) -> RaftTiming {
    if !draw {
        return crate::cluster::TIMING;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7141_7141_7141_7141);
    let heartbeat_ms = [20, 30, 40, 60][rng.random_range(0..4)];
    RaftTiming {
        heartbeat_ms,
        election_timeout_ms: heartbeat_ms * [3, 5, 10][rng.random_range(0..3)],
    }
}

/// How power losses of this seed damage unsynced bytes: with `--power-loss`, one seed in
/// eight tears them by sector and one in eight flips a byte; the rest zero them.
pub(crate) fn damage_of(seed: u64, power_loss: bool) -> Option<Damage> {
    match seed % 8 {
        0 if power_loss => Some(Damage::Torn(seed)),
        4 if power_loss => Some(Damage::Flipped(seed)),
        _ => None,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn every_fault() -> Options {
        Options {
            wipes: true,
            power_loss: true,
            membership: true,
            ..Options::default()
        }
    }

    #[test]
    fn drawn_raft_timings_vary_by_seed_and_keep_elections_above_heartbeats() {
        assert_eq!(timing_of(5, false), crate::cluster::TIMING);
        let drawn: std::collections::BTreeSet<_> = (0..100)
            .map(|seed| {
                let t = timing_of(seed, true);
                assert_eq!(t, timing_of(seed, true));
                assert!(t.election_timeout_ms >= 3 * t.heartbeat_ms, "{t:?}");
                (t.heartbeat_ms, t.election_timeout_ms)
            })
            .collect();
        assert!(drawn.len() >= 8, "{drawn:?}");
    }

    #[test]
    fn a_seed_always_draws_the_same_schedule() {
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            format!("{:?}", schedule(&mut rng, &[1, 2, 3], 1500, every_fault()))
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn schedules_keep_a_majority_up_unless_drawn_otherwise_and_use_every_kind_of_step() {
        let mut kinds = std::collections::BTreeSet::new();
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut down = 0usize;
            for (_, step) in schedule(&mut rng, &[1, 2, 3, 4, 5], 3000, every_fault()) {
                let name = format!("{step:?}");
                kinds.insert(name[..name.find('(').unwrap_or(name.len())].to_owned());
                match step {
                    Step::Crash(_) | Step::PowerLoss(_) | Step::Wipe(_) => down += 1,
                    Step::Outage => down = 5,
                    Step::Restart(_) => down -= 1,
                    _ => {}
                }
                assert!(down <= 5);
            }
        }
        assert_eq!(kinds.len(), 15, "{kinds:?}");
    }

    #[test]
    fn timer_steps_stall_past_an_election_timeout_or_drift_and_leave_the_other_draws_alone() {
        let timing = crate::cluster::TIMING;
        let (mut stalls, mut drifts, mut past) = (0, 0, 0);
        for seed in 0..100 {
            let steps = timer_steps(seed, &[1, 2, 3], 1500, timing);
            assert_eq!(
                format!("{steps:?}"),
                format!("{:?}", timer_steps(seed, &[1, 2, 3], 1500, timing))
            );
            for (at, step) in steps {
                assert!(at < 1500);
                match step {
                    Step::Stall(_, ms) => {
                        stalls += 1;
                        // Past the longest election timeout (twice the shortest).
                        past += usize::from(ms >= 2 * timing.election_timeout_ms);
                    }
                    Step::Drift(_, percent) => {
                        drifts += 1;
                        assert!((25..=400).contains(&percent));
                    }
                    other => panic!("not a timer step: {other:?}"),
                }
            }
        }
        assert!(
            stalls > 100 && drifts > 100 && past > stalls / 2,
            "{stalls} {drifts} {past}"
        );
        // The fault steps of a seed do not depend on whether timer steps join them.
        let mut rng = StdRng::seed_from_u64(7);
        let before = format!("{:?}", schedule(&mut rng, &[1, 2, 3], 1500, every_fault()));
        let _ = timer_steps(7, &[1, 2, 3], 1500, timing);
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(
            before,
            format!("{:?}", schedule(&mut rng, &[1, 2, 3], 1500, every_fault()))
        );
    }
}
