//! The supervision of the child as a state machine: [`step`] takes the phase and one event and
//! returns the next phase and what to do. It is pure (no processes, no clock, no I/O), so every
//! transition is tested without a child; [`crate::run`] performs the actions and turns the
//! world's happenings into events.

use std::time::Duration;

use crate::cli::ChildKind;

/// A child that ran this long has its restart backoff reset.
pub const STABLE_RUN: Duration = Duration::from_secs(60);
/// After a restart the backoff is at least this, whatever `-restartBackoff` says: with `0` a
/// child that exits at once is restarted at once one time, then 100 ms, 200 ms, ... later,
/// never in a busy loop.
pub const BACKOFF_FLOOR: Duration = Duration::from_millis(100);

/// The rules the machine follows, fixed by the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub child_kind: ChildKind,
    /// `-restartDnsmasq`: a dnsmasq child is restarted for a new configuration.
    pub restart_dnsmasq: bool,
    /// `-exitWithChild`: the nanny exits with the child's code instead of restarting it.
    pub exit_with_child: bool,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long a stopping child has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The nanny is PID 1 of its container and reaps orphans.
    pub reap_orphans: bool,
}

/// Where the supervision is. `backoff` is the wait before the next unplanned restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A child is being started ([`Action::Spawn`] was issued).
    Starting { backoff: Duration },
    /// The child runs.
    Running { pid: u32, backoff: Duration },
    /// The child exited or could not start; the timer runs out after `backoff`.
    BackingOff { backoff: Duration },
    /// SIGTERM was sent; SIGKILL follows when the grace timer runs out.
    Stopping {
        pid: u32,
        backoff: Duration,
        then: AfterStop,
    },
    /// Supervision is over; the nanny exits with `code`.
    Done { code: i32 },
}

/// What follows a stopped child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// A new configuration: start it again at once.
    Restart,
    /// Shutdown: exit 0.
    Exit,
}

/// Something that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Spawned {
        pid: u32,
    },
    SpawnFailed,
    /// The child exited with `code` (None: killed by a signal) after running for `ran`.
    Exited {
        code: Option<i32>,
        ran: Duration,
    },
    /// A new, valid forwarding configuration differs from the one in use.
    ConfigChanged,
    /// The `-logInterval` ticker fired.
    LogTick,
    /// SIGCHLD arrived.
    ChildSignal,
    /// The timer set by the last [`Action::Wait`] ran out.
    TimerElapsed,
    /// SIGTERM or SIGINT to the nanny.
    Shutdown,
}

/// A signal the nanny sends to the child's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSignal {
    Hangup,
    User1,
    Terminate,
    Kill,
}

/// What the driver does, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the servers file (dns-cache children) and start the child with the current
    /// configuration; the outcome comes back as [`Event::Spawned`] or [`Event::SpawnFailed`].
    Spawn,
    /// Rewrite the servers file for the current configuration.
    WriteServersFile,
    Signal {
        pid: u32,
        signal: ChildSignal,
    },
    /// Arm the timer (replacing any); [`Event::TimerElapsed`] follows.
    Wait(Duration),
    /// An unplanned restart (counted in the metrics).
    CountRestart,
    /// Reap exited processes other than `keep`.
    ReapOrphans {
        keep: u32,
    },
    /// Stop supervising and exit with this code.
    Exit(i32),
}

impl Phase {
    /// The first phase and its actions.
    pub fn start(policy: &Policy) -> (Phase, Vec<Action>) {
        (
            Phase::Starting {
                backoff: policy.backoff_min,
            },
            vec![Action::Spawn],
        )
    }

    /// Whether the phase has a timer running; the driver drops its timer in the others.
    pub fn waits(&self) -> bool {
        matches!(self, Phase::BackingOff { .. } | Phase::Stopping { .. })
    }

    /// The running child's pid.
    pub fn pid(&self) -> Option<u32> {
        match self {
            Phase::Running { pid, .. } | Phase::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }
}

/// One transition. Events that mean nothing in a phase leave it unchanged with no actions.
pub fn step(policy: &Policy, phase: Phase, event: Event) -> (Phase, Vec<Action>) {
    use Action::{CountRestart, Exit, ReapOrphans, Signal, Spawn, Wait, WriteServersFile};
    let stop = |pid, backoff, then| {
        (
            Phase::Stopping { pid, backoff, then },
            vec![
                Signal {
                    pid,
                    signal: ChildSignal::Terminate,
                },
                Wait(policy.stop_grace),
            ],
        )
    };
    let done = |code| (Phase::Done { code }, vec![Exit(code)]);
    match (phase, event) {
        (Phase::Done { .. }, _) => (phase, Vec::new()),
        (_, Event::ChildSignal) if policy.reap_orphans => {
            let keep = phase.pid().unwrap_or(0);
            (phase, vec![ReapOrphans { keep }])
        }

        (Phase::Starting { backoff }, Event::Spawned { pid }) => {
            (Phase::Running { pid, backoff }, Vec::new())
        }
        (Phase::Starting { backoff }, Event::SpawnFailed) => (
            Phase::BackingOff { backoff },
            vec![CountRestart, Wait(backoff)],
        ),
        (Phase::Starting { .. } | Phase::BackingOff { .. }, Event::Shutdown) => done(0),
        (Phase::BackingOff { backoff }, Event::TimerElapsed) => (
            Phase::Starting {
                backoff: (backoff * 2).min(policy.backoff_max).max(BACKOFF_FLOOR),
            },
            vec![Spawn],
        ),

        (Phase::Running { .. }, Event::Exited { code, .. }) if policy.exit_with_child => {
            done(code.unwrap_or(-1))
        }
        (Phase::Running { backoff, .. }, Event::Exited { ran, .. }) => {
            let backoff = if ran >= STABLE_RUN {
                policy.backoff_min
            } else {
                backoff
            };
            (
                Phase::BackingOff { backoff },
                vec![CountRestart, Wait(backoff)],
            )
        }
        (Phase::Running { pid, .. }, Event::ConfigChanged) => match policy.child_kind {
            ChildKind::DnsCache => (
                phase,
                vec![
                    WriteServersFile,
                    Signal {
                        pid,
                        signal: ChildSignal::Hangup,
                    },
                ],
            ),
            ChildKind::Dnsmasq if policy.restart_dnsmasq => {
                stop(pid, policy.backoff_min, AfterStop::Restart)
            }
            ChildKind::Dnsmasq => (phase, Vec::new()),
        },
        (Phase::Running { pid, .. }, Event::LogTick) => (
            phase,
            vec![Signal {
                pid,
                signal: ChildSignal::User1,
            }],
        ),
        (Phase::Running { pid, backoff }, Event::Shutdown) => stop(pid, backoff, AfterStop::Exit),

        (Phase::Stopping { backoff, then, .. }, Event::Exited { .. }) => match then {
            AfterStop::Restart => (Phase::Starting { backoff }, vec![Spawn]),
            AfterStop::Exit => done(0),
        },
        (Phase::Stopping { pid, .. }, Event::TimerElapsed) => (
            phase,
            vec![Signal {
                pid,
                signal: ChildSignal::Kill,
            }],
        ),
        (Phase::Stopping { pid, backoff, .. }, Event::Shutdown) => (
            Phase::Stopping {
                pid,
                backoff,
                then: AfterStop::Exit,
            },
            Vec::new(),
        ),

        (phase, _) => (phase, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_millis(350);
    const GRACE: Duration = Duration::from_secs(5);

    fn policy(child_kind: ChildKind) -> Policy {
        Policy {
            child_kind,
            restart_dnsmasq: true,
            exit_with_child: false,
            backoff_min: MIN,
            backoff_max: MAX,
            stop_grace: GRACE,
            reap_orphans: false,
        }
    }

    /// Runs `events` from the start; returns the last phase and every action issued.
    fn run(policy: &Policy, events: &[Event]) -> (Phase, Vec<Action>) {
        let (mut phase, mut actions) = Phase::start(policy);
        for &event in events {
            let (next, more) = step(policy, phase, event);
            phase = next;
            actions.extend(more);
        }
        (phase, actions)
    }

    fn exited(ran_secs: u64) -> Event {
        Event::Exited {
            code: Some(1),
            ran: Duration::from_secs(ran_secs),
        }
    }

    #[test]
    fn a_crashing_child_is_restarted_with_doubling_capped_backoff() {
        let p = policy(ChildKind::Dnsmasq);
        let mut events = Vec::new();
        for pid in 1..=4 {
            events.extend([Event::Spawned { pid }, exited(1), Event::TimerElapsed]);
        }
        let (phase, actions) = run(&p, &events);
        let waits: Vec<Duration> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Wait(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(
            waits,
            [MIN, MIN * 2, Duration::from_millis(350), MAX],
            "100, 200, 400 capped at 350, 350"
        );
        assert_eq!(
            actions
                .iter()
                .filter(|a| **a == Action::CountRestart)
                .count(),
            4
        );
        assert_eq!(actions.iter().filter(|a| **a == Action::Spawn).count(), 5);
        assert_eq!(phase, Phase::Starting { backoff: MAX });
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let p = policy(ChildKind::Dnsmasq);
        let (phase, _) = run(
            &p,
            &[
                Event::Spawned { pid: 1 },
                exited(1),
                Event::TimerElapsed,
                Event::Spawned { pid: 2 },
                exited(1),
                Event::TimerElapsed,
                Event::Spawned { pid: 3 },
            ],
        );
        assert_eq!(
            phase,
            Phase::Running {
                pid: 3,
                backoff: MAX
            },
            "400 ms capped"
        );
        let (after, actions) = step(&p, phase, exited(STABLE_RUN.as_secs()));
        assert_eq!(after, Phase::BackingOff { backoff: MIN });
        assert_eq!(actions, [Action::CountRestart, Action::Wait(MIN)]);
    }

    #[test]
    fn a_failed_spawn_backs_off_like_a_crash() {
        let p = policy(ChildKind::DnsCache);
        let (phase, actions) = run(&p, &[Event::SpawnFailed, Event::TimerElapsed]);
        assert_eq!(phase, Phase::Starting { backoff: MIN * 2 });
        assert_eq!(
            actions,
            [
                Action::Spawn,
                Action::CountRestart,
                Action::Wait(MIN),
                Action::Spawn
            ]
        );
    }

    #[test]
    fn a_new_config_reloads_dns_cache_without_a_restart() {
        let p = policy(ChildKind::DnsCache);
        let (phase, actions) = run(&p, &[Event::Spawned { pid: 7 }, Event::ConfigChanged]);
        assert_eq!(
            phase,
            Phase::Running {
                pid: 7,
                backoff: MIN
            }
        );
        assert_eq!(
            actions[1..],
            [
                Action::WriteServersFile,
                Action::Signal {
                    pid: 7,
                    signal: ChildSignal::Hangup
                }
            ]
        );
    }

    #[test]
    fn a_new_config_restarts_dnsmasq_only_when_asked() {
        let mut p = policy(ChildKind::Dnsmasq);
        let (phase, actions) = run(
            &p,
            &[
                Event::Spawned { pid: 7 },
                Event::ConfigChanged,
                Event::Exited {
                    code: None,
                    ran: Duration::from_secs(1),
                },
            ],
        );
        assert_eq!(
            actions[1..],
            [
                Action::Signal {
                    pid: 7,
                    signal: ChildSignal::Terminate
                },
                Action::Wait(GRACE),
                Action::Spawn
            ],
            "stopped, waited for, started again at once, not counted as a restart"
        );
        assert_eq!(phase, Phase::Starting { backoff: MIN });

        p.restart_dnsmasq = false;
        let (phase, actions) = run(&p, &[Event::Spawned { pid: 7 }, Event::ConfigChanged]);
        assert_eq!(
            phase,
            Phase::Running {
                pid: 7,
                backoff: MIN
            }
        );
        assert_eq!(actions, [Action::Spawn]);
    }

    #[test]
    fn shutdown_terminates_then_kills_after_the_grace_then_exits_zero() {
        let p = policy(ChildKind::DnsCache);
        let (phase, actions) = run(
            &p,
            &[
                Event::Spawned { pid: 9 },
                Event::Shutdown,
                Event::TimerElapsed,
                Event::Exited {
                    code: None,
                    ran: Duration::from_secs(9),
                },
            ],
        );
        assert_eq!(phase, Phase::Done { code: 0 });
        assert_eq!(
            actions[1..],
            [
                Action::Signal {
                    pid: 9,
                    signal: ChildSignal::Terminate
                },
                Action::Wait(GRACE),
                Action::Signal {
                    pid: 9,
                    signal: ChildSignal::Kill
                },
                Action::Exit(0)
            ]
        );
    }

    #[test]
    fn shutdown_during_a_config_restart_or_a_backoff_exits() {
        let p = policy(ChildKind::Dnsmasq);
        let (phase, _) = run(
            &p,
            &[
                Event::Spawned { pid: 3 },
                Event::ConfigChanged,
                Event::Shutdown,
                exited(0),
            ],
        );
        assert_eq!(phase, Phase::Done { code: 0 });
        let (phase, actions) = run(&p, &[Event::Spawned { pid: 3 }, exited(0), Event::Shutdown]);
        assert_eq!(phase, Phase::Done { code: 0 });
        assert_eq!(actions.last(), Some(&Action::Exit(0)));
        assert_eq!(run(&p, &[Event::Shutdown]).0, Phase::Done { code: 0 });
    }

    #[test]
    fn exit_with_child_passes_the_code_on() {
        let mut p = policy(ChildKind::Dnsmasq);
        p.exit_with_child = true;
        let (phase, actions) = run(
            &p,
            &[
                Event::Spawned { pid: 3 },
                Event::Exited {
                    code: Some(3),
                    ran: Duration::ZERO,
                },
            ],
        );
        assert_eq!(phase, Phase::Done { code: 3 });
        assert_eq!(actions.last(), Some(&Action::Exit(3)));
        let killed = Event::Exited {
            code: None,
            ran: Duration::ZERO,
        };
        assert_eq!(
            run(&p, &[Event::Spawned { pid: 3 }, killed]).0,
            Phase::Done { code: -1 }
        );
    }

    #[test]
    fn log_ticks_and_orphans() {
        let mut p = policy(ChildKind::DnsCache);
        let (_, actions) = run(
            &p,
            &[
                Event::LogTick,
                Event::Spawned { pid: 4 },
                Event::LogTick,
                Event::ChildSignal,
            ],
        );
        assert_eq!(
            actions,
            [
                Action::Spawn,
                Action::Signal {
                    pid: 4,
                    signal: ChildSignal::User1
                }
            ],
            "no SIGUSR1 without a child; SIGCHLD ignored unless PID 1"
        );
        p.reap_orphans = true;
        let (_, actions) = run(&p, &[Event::Spawned { pid: 4 }, Event::ChildSignal]);
        assert_eq!(actions[1..], [Action::ReapOrphans { keep: 4 }]);
    }

    /// `-restartBackoff=0` (and a zero cap): the first restart is immediate, the next ones wait
    /// at least the floor, so a child that exits at once never makes a busy loop.
    #[test]
    fn a_zero_backoff_restarts_at_once_only_once() {
        let zero = Policy {
            backoff_min: Duration::ZERO,
            backoff_max: Duration::ZERO,
            ..policy(ChildKind::DnsCache)
        };
        let mut waits = Vec::new();
        let (mut phase, _) = Phase::start(&zero);
        for pid in 1..=4 {
            (phase, _) = step(&zero, phase, Event::Spawned { pid });
            let actions;
            (phase, actions) = step(&zero, phase, exited(0));
            waits.extend(actions.iter().filter_map(|action| match action {
                Action::Wait(wait) => Some(*wait),
                _ => None,
            }));
            (phase, _) = step(&zero, phase, Event::TimerElapsed);
        }
        assert_eq!(
            waits,
            vec![Duration::ZERO, BACKOFF_FLOOR, BACKOFF_FLOOR, BACKOFF_FLOOR]
        );
    }

    #[test]
    fn done_is_final() {
        let p = policy(ChildKind::DnsCache);
        let events = [
            Event::Spawned { pid: 1 },
            Event::SpawnFailed,
            Event::ConfigChanged,
            Event::TimerElapsed,
            Event::Shutdown,
            Event::LogTick,
        ];
        for event in events {
            assert_eq!(
                step(&p, Phase::Done { code: 2 }, event),
                (Phase::Done { code: 2 }, Vec::new())
            );
        }
    }
}
