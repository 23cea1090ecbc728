//! A reference model of what the module promises one user (README, "Semantics" and "Who may do
//! what"), and random operation sequences run against the real module with the model predicting
//! every result.
//!
//! The model is written from the contract, not from the driver: it shares the ABI's numbers
//! (ioctl arguments, event kinds, limits) and no logic (its own state table, sequence numbering,
//! `si_int` encoding, read queue and counters), so that a bug in the driver cannot cancel out.
//! Scope: one user and one receiving thread; up to [`SLOTS`] open files (read-write or
//! read-only) on that user's stream, each registering its own real-time signal; register,
//! unregister (with invalid signals), a listener that registers from another thread or a forked
//! child and exits, configure (with invalid periods), every trigger, inject and burst (with
//! invalid kinds and counts), non-blocking `read()`, GET_STATS, and closing (the last close
//! forgets the stream: the next open starts a fresh one). After every step the run checks the
//! ioctl's result or errno, every signal received (number, `si_code`, `si_int`), every `read()`
//! record (kind, sequence, source, timestamp within the step), every field of GET_STATS and
//! every line of the stream's debugfs block. A stream that runs until stopped has a 10 s
//! period, so none fires during a sequence; a finite one (1 or 2 periods of 10 ms) runs its
//! periods and stops by itself within its START step, which waits for that (the periods and the
//! stop come from the period source, the timer or the edu device), and may then be started
//! again without CONFIGURE. The xrun rule, the other drops (exec, credentials, full queues),
//! other users and the 2^24 sequence wrap are outside this model (other tests cover them).
//!
//! A failing sequence is shrunk (chunks of steps removed while it still fails) and printed as a
//! replayable list; the seed (`--seed`) reproduces the whole run.

use std::collections::VecDeque;
use std::os::fd::AsRawFd;

use pcmsig::sys::{self, SignalSet};
use pcmsig::{uapi, Device, Stats};

use crate::ensure_eq;
use crate::runner::{diag, Context, Test, TestResult};

pub fn tests() -> Vec<Test> {
    crate::tests![the_module_behaves_as_its_reference_model]
}

/// Tests that reload the module (with the `test_first_seq` hook): with the races, after the
/// lifecycle tests.
pub fn reload_tests() -> Vec<Test> {
    crate::tests![sequence_numbers_pass_2_16_and_wrap_2_24]
}

/// Open files at most at once.
pub const SLOTS: usize = 4;
/// The signal of slot `i`'s listener: one each, so that every signal's order is FIFO.
fn slot_signal(i: usize) -> u32 {
    uapi::SIGRT_FIRST_ALLOWED + i as u32
}
/// A period no sequence outlasts.
const LONG_PERIOD_US: u32 = 10_000_000;
/// The period of a finite stream: its periods elapse within its START step (far from the 64
/// periods of a stall that make an xrun: 640 ms).
const FINITE_PERIOD_US: u32 = 10_000;
/// The only `si_code` the module sends.
const SI_QUEUE: i32 = -1;

/// Event kinds, states and triggers by their ABI numbers.
const PREPARED: u16 = uapi::EventKind::Prepared as u16;
const STARTED: u16 = uapi::EventKind::Started as u16;
const PAUSED: u16 = uapi::EventKind::Paused as u16;
const RESUMED: u16 = uapi::EventKind::Resumed as u16;
const STOPPED: u16 = uapi::EventKind::Stopped as u16;
const PERIOD: u16 = uapi::EventKind::PeriodElapsed as u16;
const XRUN: u16 = uapi::EventKind::Xrun as u16;
const DRAINING: u16 = uapi::EventKind::Draining as u16;
const START: u32 = uapi::Trigger::Start as u32;
const STOP: u32 = uapi::Trigger::Stop as u32;
const PAUSE_PUSH: u32 = uapi::Trigger::PausePush as u32;
const PAUSE_RELEASE: u32 = uapi::Trigger::PauseRelease as u32;
const DRAIN: u32 = uapi::Trigger::Drain as u32;
const TRIGGER_XRUN: u32 = uapi::Trigger::Xrun as u32;
use uapi::State as St;

/// Whether `kind` is an event kind's number.
fn is_kind(kind: u32) -> bool {
    uapi::EventKind::ALL.iter().any(|&k| k as u32 == kind)
}

/// Whether `cmd` is a trigger's number.
fn is_trigger(cmd: u32) -> bool {
    uapi::Trigger::ALL.iter().any(|&t| t as u32 == cmd)
}

/// ALSA's PCM state machine, as the README describes the stream: the next state and the event.
fn next_state(cmd: u32, s: St) -> Option<(St, u16)> {
    use St::*;
    match (cmd, s) {
        (START, Prepared | Stopped) => Some((Running, STARTED)),
        (STOP, Running | Paused | Draining | Xrun) => Some((Stopped, STOPPED)),
        (PAUSE_PUSH, Running) => Some((Paused, PAUSED)),
        (PAUSE_RELEASE, Paused) => Some((Running, RESUMED)),
        (DRAIN, Running) => Some((Draining, DRAINING)),
        (TRIGGER_XRUN, Running | Paused | Draining) => Some((Xrun, XRUN)),
        _ => None,
    }
}

/// `si_int`: the kind in the top byte, the sequence number's low 24 bits below.
fn si_int(kind: u16, seq: u64) -> i32 {
    ((u32::from(kind) << 24) | (seq as u32 & 0x00ff_ffff)) as i32
}

/// One operation of a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Open {
        slot: usize,
        writable: bool,
    },
    Close {
        slot: usize,
    },
    Register {
        slot: usize,
        signo: u32,
    },
    /// Another thread (or, with `process`, a forked child) registers on the file and exits.
    RegisterAndExit {
        slot: usize,
        process: bool,
    },
    Unregister {
        slot: usize,
    },
    /// `periods` 0 runs until stopped; more, that many periods of [`FINITE_PERIOD_US`].
    Configure {
        slot: usize,
        period_us: u32,
        periods: u32,
    },
    Trigger {
        slot: usize,
        cmd: u32,
    },
    Inject {
        slot: usize,
        kind: u32,
    },
    Burst {
        slot: usize,
        kind: u32,
        count: u32,
    },
    Read {
        slot: usize,
        max: usize,
    },
    Stats {
        slot: usize,
    },
}

impl Op {
    fn slot(&self) -> usize {
        match *self {
            Op::Open { slot, .. }
            | Op::Close { slot }
            | Op::Register { slot, .. }
            | Op::RegisterAndExit { slot, .. }
            | Op::Unregister { slot }
            | Op::Configure { slot, .. }
            | Op::Trigger { slot, .. }
            | Op::Inject { slot, .. }
            | Op::Burst { slot, .. }
            | Op::Read { slot, .. }
            | Op::Stats { slot } => slot,
        }
    }

    /// A random operation (`r` yields random numbers); slots may be closed (the step is then
    /// skipped), values are mostly valid with the invalid edges mixed in.
    fn random(r: &mut impl FnMut(u64) -> u64) -> Op {
        let slot = r(SLOTS as u64) as usize;
        let pick = |r: &mut dyn FnMut(u64) -> u64, v: &[u32]| v[r(v.len() as u64) as usize];
        match r(100) {
            0..=7 => Op::Open {
                slot,
                writable: r(4) != 0,
            },
            8..=11 => Op::Close { slot },
            12..=21 => Op::Register {
                slot,
                signo: if r(5) == 0 {
                    pick(r, &[0, 9, 32, 33, 65, 1000])
                } else {
                    slot_signal(slot)
                },
            },
            22..=23 => Op::Unregister { slot },
            24..=25 => Op::RegisterAndExit {
                slot,
                process: r(2) == 0,
            },
            // A third finite: START then runs it to its stop, and a later START (no CONFIGURE
            // between) runs it again.
            26..=35 => {
                let periods = if r(3) == 0 { 1 + r(2) as u32 } else { 0 };
                Op::Configure {
                    slot,
                    period_us: if r(6) == 0 {
                        pick(r, &[0, uapi::PERIOD_US_MIN - 1, uapi::PERIOD_US_MAX + 1])
                    } else if periods > 0 {
                        FINITE_PERIOD_US
                    } else {
                        LONG_PERIOD_US
                    },
                    periods,
                }
            }
            // Numbers one past each end of the ABI's ranges included.
            36..=59 => Op::Trigger {
                slot,
                cmd: r(uapi::Trigger::ALL.len() as u64 + 2) as u32,
            },
            60..=71 => Op::Inject {
                slot,
                kind: r(uapi::EventKind::ALL.len() as u64 + 2) as u32,
            },
            72..=77 => Op::Burst {
                slot,
                kind: 1 + r(uapi::EventKind::ALL.len() as u64) as u32,
                count: pick(r, &[0, 1, 2, 7, uapi::BURST_MAX, uapi::BURST_MAX + 1]),
            },
            78..=91 => Op::Read {
                slot,
                max: 1 + r(40) as usize,
            },
            _ => Op::Stats { slot },
        }
    }
}

/// A listener's counters (`struct pcmsig_listener_stats`); the only drops in this model are
/// for listeners that exited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    fired: u64,
    delivered: u64,
    dropped_exited: u64,
}

/// A file's listener: this test's thread with its signal, or a thread that has exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    Here(u32),
    Gone,
}

/// One open file.
#[derive(Clone, Debug)]
struct MFile {
    writable: bool,
    listener: Option<Listener>,
    /// The current listener's counters, or the last one's after UNREGISTER.
    counts: Counts,
    /// Kind and sequence number of each record waiting for `read()`.
    records: VecDeque<(u16, u64)>,
    overruns: u64,
}

/// The whole observable state of one user's stream.
#[derive(Clone, Debug)]
pub struct Model {
    state: St,
    /// The configured number of periods (0: until stopped), and the periods since START.
    config_periods: u32,
    periods: u64,
    events: u64,
    next_seq: u64,
    total: Counts,
    files: [Option<MFile>; SLOTS],
    /// The order files were opened in (delivery order).
    order: Vec<usize>,
}

/// What one operation must produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// `Err(errno)` for a refused call.
    result: Result<(), i32>,
    /// Signals, in emission order: (signal, `si_int`).
    signals: Vec<(u32, i32)>,
    /// Records a `read()` returns: (kind, sequence number), with the events of this step.
    records: Vec<(u16, u64)>,
    /// The emitted events' (kind, sequence), for the records' timestamps and sources.
    emitted: Vec<(u16, u64)>,
    /// The sequence numbers of those the period source emitted (not the ioctl).
    periodic: Vec<u64>,
    /// For a START that runs a finite stream to its stop: the stream's `total.fired` once the
    /// stop has been delivered (the step waits for it).
    settles: Option<u64>,
    stats: Option<ExpectStats>,
}

/// GET_STATS as the model predicts it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ExpectStats {
    state: u32,
    listeners: u32,
    events: u64,
    periods: u64,
    read_overruns: u64,
    file: Counts,
    total: Counts,
}

impl Default for Model {
    fn default() -> Self {
        Model {
            state: St::Setup,
            config_periods: 0,
            periods: 0,
            events: 0,
            next_seq: 1,
            total: Counts::default(),
            files: Default::default(),
            order: Vec::new(),
        }
    }
}

impl Model {
    /// Whether the operation applies (its slot is open, or free for an open).
    pub fn applies(&self, op: &Op) -> bool {
        let open = self.files[op.slot()].is_some();
        matches!(op, Op::Open { .. }) != open
    }

    /// An event emitted by an ioctl: numbered, queued for every file's `read()`, signalled to
    /// every listener.
    fn emit(&mut self, kind: u16, e: &mut Expect) {
        self.emit_from(kind, false, e);
    }

    /// An event emitted by the ioctl or (`periodic`) by the period source.
    fn emit_from(&mut self, kind: u16, periodic: bool, e: &mut Expect) {
        let seq = self.next_seq;
        if periodic {
            e.periodic.push(seq);
        }
        self.next_seq += 1;
        self.events += 1;
        e.emitted.push((kind, seq));
        for &i in &self.order {
            let Some(f) = self.files[i].as_mut() else {
                continue;
            };
            if f.records.len() < uapi::READ_QUEUE_LEN as usize {
                f.records.push_back((kind, seq));
            } else {
                f.overruns += 1;
            }
            match f.listener {
                Some(Listener::Here(signo)) => {
                    f.counts.fired += 1;
                    f.counts.delivered += 1;
                    self.total.fired += 1;
                    self.total.delivered += 1;
                    e.signals.push((signo, si_int(kind, seq)));
                }
                Some(Listener::Gone) => {
                    f.counts.fired += 1;
                    f.counts.dropped_exited += 1;
                    self.total.fired += 1;
                    self.total.dropped_exited += 1;
                }
                None => {}
            }
        }
    }

    /// Applies `op` (which must apply) and says what the module must do.
    pub fn apply(&mut self, op: &Op) -> Expect {
        let mut e = Expect {
            result: Ok(()),
            signals: Vec::new(),
            records: Vec::new(),
            emitted: Vec::new(),
            periodic: Vec::new(),
            settles: None,
            stats: None,
        };
        let slot = op.slot();
        let writable = self.files[slot].as_ref().is_some_and(|f| f.writable);
        let drives = matches!(
            op,
            Op::Configure { .. } | Op::Trigger { .. } | Op::Inject { .. } | Op::Burst { .. }
        );
        if drives && !writable {
            e.result = Err(libc::EBADF);
            return e;
        }
        match *op {
            Op::Open { writable, .. } => {
                if self.order.is_empty() {
                    // A user with no file open gets a fresh stream.
                    *self = Model::default();
                }
                self.files[slot] = Some(MFile {
                    writable,
                    listener: None,
                    counts: Counts::default(),
                    records: VecDeque::new(),
                    overruns: 0,
                });
                self.order.push(slot);
            }
            Op::Close { .. } => {
                self.files[slot] = None;
                self.order.retain(|&i| i != slot);
            }
            Op::Register { signo, .. } => {
                let allowed = signo == uapi::SIGUSR1
                    || signo == uapi::SIGUSR2
                    || (uapi::SIGRT_FIRST_ALLOWED..=uapi::SIGRT_MAX).contains(&signo);
                if !allowed {
                    e.result = Err(libc::EINVAL);
                } else if let Some(f) = self.files[slot].as_mut() {
                    f.listener = Some(Listener::Here(signo));
                    f.counts = Counts::default();
                }
            }
            Op::RegisterAndExit { .. } => {
                if let Some(f) = self.files[slot].as_mut() {
                    f.listener = Some(Listener::Gone);
                    f.counts = Counts::default();
                }
            }
            Op::Unregister { .. } => {
                if let Some(f) = self.files[slot].as_mut() {
                    if f.listener.take().is_none() {
                        e.result = Err(libc::ENOENT);
                    }
                }
            }
            Op::Configure {
                period_us, periods, ..
            } => {
                if !(uapi::PERIOD_US_MIN..=uapi::PERIOD_US_MAX).contains(&period_us) {
                    e.result = Err(libc::EINVAL);
                } else if matches!(self.state, St::Running | St::Paused | St::Draining) {
                    e.result = Err(libc::EBUSY);
                } else {
                    self.state = St::Prepared;
                    self.config_periods = periods;
                    self.periods = 0;
                    self.emit(PREPARED, &mut e);
                }
            }
            Op::Trigger { cmd, .. } => {
                if !is_trigger(cmd) {
                    e.result = Err(libc::EINVAL);
                } else if let Some((next, kind)) = next_state(cmd, self.state) {
                    self.state = next;
                    self.emit(kind, &mut e);
                    if cmd == START {
                        // Every START counts its periods afresh; a finite stream runs them and
                        // stops by itself, the stop emitted by the period source.
                        self.periods = 0;
                        if self.config_periods > 0 {
                            for _ in 0..self.config_periods {
                                self.emit_from(PERIOD, true, &mut e);
                                self.periods += 1;
                            }
                            self.emit_from(STOPPED, true, &mut e);
                            self.state = St::Stopped;
                            e.settles = Some(self.total.fired);
                        }
                    }
                } else {
                    e.result = Err(libc::EBADFD);
                }
            }
            Op::Inject { kind, .. } => {
                if !is_kind(kind) {
                    e.result = Err(libc::EINVAL);
                } else {
                    self.emit(kind as u16, &mut e);
                }
            }
            Op::Burst { kind, count, .. } => {
                if !is_kind(kind) || count == 0 || count > uapi::BURST_MAX {
                    e.result = Err(libc::EINVAL);
                } else {
                    for _ in 0..count {
                        self.emit(kind as u16, &mut e);
                    }
                }
            }
            Op::Read { max, .. } => {
                if let Some(f) = self.files[slot].as_mut() {
                    if f.records.is_empty() {
                        e.result = Err(libc::EAGAIN);
                    } else {
                        let n = max.min(f.records.len());
                        e.records = f.records.drain(..n).collect();
                    }
                }
            }
            Op::Stats { .. } => {
                let listeners = self
                    .files
                    .iter()
                    .flatten()
                    .filter(|f| f.listener.is_some())
                    .count() as u32;
                if let Some(f) = self.files[slot].as_ref() {
                    e.stats = Some(ExpectStats {
                        state: self.state as u32,
                        listeners,
                        events: self.events,
                        periods: self.periods,
                        read_overruns: f.overruns,
                        file: f.counts,
                        total: self.total,
                    });
                }
            }
        }
        e
    }
}

/// The real side: the open files, by slot.
struct Real {
    files: [Option<Device>; SLOTS],
    set: SignalSet,
    /// Each emitted event's step: the monotonic times before and after its call.
    windows: std::collections::HashMap<u64, (u64, u64)>,
    /// The events the period source emitted.
    periodic: std::collections::HashSet<u64>,
}

impl Real {
    fn new() -> Result<Real, String> {
        let signals: Vec<i32> = (0..SLOTS).map(|i| slot_signal(i) as i32).collect();
        let set = SignalSet::of(&signals);
        set.block().ctx("blocking the slots' signals")?;
        Ok(Real {
            files: Default::default(),
            set,
            windows: Default::default(),
            periodic: Default::default(),
        })
    }

    /// Runs `op` and checks it against `want`.
    fn step(&mut self, op: &Op, want: &Expect) -> Result<(), String> {
        let t0 = sys::now_ns();
        let slot = op.slot();
        let mut got_records = Vec::new();
        let mut got_stats: Option<Stats> = None;
        // A finite run's START: a file of our own, not in the model, sees when the stop was
        // delivered (it is last in delivery order, so every file of the model has it then).
        let watcher = match want.settles {
            Some(_) => Some(Device::open_nonblocking().ctx("opening the watcher")?),
            None => None,
        };
        let result: Result<(), i32> = match *op {
            Op::Open { writable, .. } => {
                let dev = if writable {
                    Device::open()
                } else {
                    Device::open_read_only()
                }
                .ctx("open")?;
                // SAFETY: fcntl on a descriptor we own.
                let r =
                    unsafe { libc::fcntl(dev.file().as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
                if r < 0 {
                    return Err(format!("fcntl: {}", std::io::Error::last_os_error()));
                }
                self.files[slot] = Some(dev);
                Ok(())
            }
            Op::Close { .. } => {
                self.files[slot] = None;
                Ok(())
            }
            _ => {
                let dev = self.files[slot].as_ref().ok_or("no file in the slot")?;
                let errno = |r: pcmsig::Result<()>| r.map_err(|e| e.errno().unwrap_or(0));
                match *op {
                    Op::Register { signo, .. } => errno(dev.register_raw(signo, 0)),
                    Op::RegisterAndExit { process, .. } => {
                        register_and_exit(dev, slot_signal(slot), process)?
                    }
                    Op::Unregister { .. } => errno(dev.unregister()),
                    Op::Configure {
                        period_us, periods, ..
                    } => errno(dev.configure(period_us, periods)),
                    Op::Trigger { cmd, .. } => errno(dev.trigger_raw(cmd)),
                    Op::Inject { kind, .. } => errno(dev.inject_raw(kind)),
                    Op::Burst { kind, count, .. } => errno(dev.inject_burst_raw(kind, count)),
                    Op::Read { max, .. } => match dev.read_records(max) {
                        Ok(r) => {
                            got_records = r;
                            Ok(())
                        }
                        Err(e) => Err(e.raw_os_error().unwrap_or(0)),
                    },
                    Op::Stats { .. } => match dev.stats() {
                        Ok(s) => {
                            got_stats = Some(s);
                            Ok(())
                        }
                        Err(e) => Err(e.errno().unwrap_or(0)),
                    },
                    Op::Open { .. } | Op::Close { .. } => Ok(()),
                }
            }
        };
        if result != want.result {
            return Err(format!(
                "result {result:?}, the model says {:?}",
                want.result
            ));
        }
        if let (Some(watcher), Some(fired)) = (&watcher, want.settles) {
            let last = want.emitted.last().map_or(0, |&(_, seq)| seq);
            settle(watcher, last, fired)?;
        }
        drop(watcher);
        let t1 = sys::now_ns();
        // Every signal this step's events sent: each signal's queue is FIFO, and the kernel
        // hands out the lower-numbered real-time signal first.
        let mut want_signals = want.signals.clone();
        want_signals.sort_by_key(|&(signo, _)| signo);
        let mut got_signals = Vec::new();
        while let Some(info) =
            sys::sigtimedwait(&self.set, std::time::Duration::ZERO).ctx("sigtimedwait")?
        {
            if info.code != SI_QUEUE {
                return Err(format!("si_code {} on signal {}", info.code, info.signo));
            }
            got_signals.push((info.signo as u32, info.value));
        }
        if got_signals != want_signals {
            return Err(format!(
                "signals {got_signals:?}, the model says {want_signals:?}"
            ));
        }
        if let Op::Read { .. } = op {
            let got: Vec<(u16, u64)> = got_records
                .iter()
                .map(|r| (r.kind, u64::from(r.seq)))
                .collect();
            if got != want.records {
                return Err(format!("read {got:?}, the model says {:?}", want.records));
            }
            for r in &got_records {
                let source = if self.periodic.contains(&u64::from(r.seq)) {
                    crate::common::period_source()
                } else {
                    uapi::EventSource::Ioctl as u16
                };
                if r.source != source {
                    return Err(format!("record {r:?}: not from source {source}"));
                }
                // Stamped while its step ran (the records' clock is CLOCK_MONOTONIC).
                let (from, to) = self
                    .windows
                    .get(&u64::from(r.seq))
                    .copied()
                    .unwrap_or((0, 0));
                if !(from..=to).contains(&r.timestamp_ns) {
                    return Err(format!(
                        "record {r:?}: stamped outside its step ({from}..={to} ns)"
                    ));
                }
            }
        }
        // A user's fresh stream numbers its events from 1 again: each emitted number's window
        // and source replace those of an earlier stream's event with the same number.
        for &(_, seq) in &want.emitted {
            self.windows.insert(seq, (t0, t1));
            if want.periodic.contains(&seq) {
                self.periodic.insert(seq);
            } else {
                self.periodic.remove(&seq);
            }
        }
        if let Some(w) = &want.stats {
            let s = got_stats.ok_or("no stats")?;
            let got = ExpectStats {
                state: s.state,
                listeners: s.listeners,
                events: s.events,
                periods: s.periods,
                read_overruns: s.read_overruns,
                file: Counts {
                    fired: s.file.fired,
                    delivered: s.file.delivered,
                    dropped_exited: s.file.dropped_exited,
                },
                total: Counts {
                    fired: s.total.fired,
                    delivered: s.total.delivered,
                    dropped_exited: s.total.dropped_exited,
                },
            };
            let other_drops = [&s.file, &s.total]
                .iter()
                .map(|l| l.dropped_queue_full + l.dropped_execd + l.dropped_perm)
                .sum::<u64>();
            if other_drops != 0 {
                return Err(format!("drops in {s:?}: the model has none but exits"));
            }
            if &got != w {
                return Err(format!("stats {got:?}, the model says {w:?}"));
            }
            // And debugfs says the same, line by line (this user, root, is uid 0).
            crate::common::check_debugfs(0, &s)?;
        }
        Ok(())
    }
}

/// Waits until the event `last` (a finite run's stop) has been delivered: `watcher`, opened
/// before the run and so last in delivery order, has its record, and the stream's `total.fired`
/// has reached `fired` (the totals are added after every file had the batch). A hang guard only.
fn settle(watcher: &Device, last: u64, fired: u64) -> Result<(), String> {
    let deadline = std::time::Instant::now() + crate::runner::hang_guard();
    let mut seen = false;
    loop {
        if !seen {
            if let Ok(recs) = watcher.read_records(64) {
                seen = recs.iter().any(|r| u64::from(r.seq) == last);
            }
        }
        if seen && watcher.stats().ctx("stats")?.total.fired == fired {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let s = watcher.stats().ctx("stats")?;
            return Err(format!(
                "the finite run never stopped: event {last} delivered {seen}, state {:?}, \
                 {} periods, total fired {} (want {fired})",
                St::from_u32(s.state),
                s.periods,
                s.total.fired
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Registers another thread (or a forked child) of this test on `dev` with `signo`, and returns
/// once that thread has exited and been released (a signal to it can only be dropped).
fn register_and_exit(dev: &Device, signo: u32, process: bool) -> Result<Result<(), i32>, String> {
    let register = |dev: &Device| {
        dev.register_raw(signo, 0)
            .map_err(|e| e.errno().unwrap_or(0))
    };
    if process {
        let code = crate::common::in_child(|| match register(dev) {
            Ok(()) => Ok(()),
            Err(errno) => {
                // The errno travels as the exit code.
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(errno) }
            }
        })?;
        // Reaped: the child is gone.
        return Ok(if code == 0 { Ok(()) } else { Err(code) });
    }
    let (tid, result) = std::thread::scope(|s| {
        s.spawn(|| (sys::gettid(), register(dev)))
            .join()
            .map_err(|_| "the registering thread panicked".to_string())
    })?;
    // join() returns when the thread clears its tid, a moment before the kernel releases it.
    crate::modload::wait_gone(&format!("/proc/self/task/{tid}"))?;
    Ok(result)
}

/// Runs `ops` from no open file (a fresh stream) against the module; `Err((step, why))` at the
/// first disagreement. Every file is closed at the end, whatever happened.
pub fn run(ops: &[Op]) -> Result<(), (usize, String)> {
    let mut model = Model::default();
    let mut real = Real::new().map_err(|e| (0, e))?;
    for (i, op) in ops.iter().enumerate() {
        if !model.applies(op) {
            continue;
        }
        let want = model.apply(op);
        real.step(op, &want)
            .map_err(|e| (i, format!("{op:?}: {e}")))?;
    }
    Ok(())
}

/// A shorter sequence that still fails: chunks of steps removed, largest first, while the run
/// still fails; returns it with its failure.
pub fn shrink(mut ops: Vec<Op>, mut why: (usize, String)) -> (Vec<Op>, (usize, String)) {
    ops.truncate(why.0 + 1);
    let mut chunk = ops.len() / 2;
    while chunk >= 1 {
        let mut at = 0;
        while at < ops.len() {
            let mut shorter = ops.clone();
            shorter.drain(at..(at + chunk).min(ops.len()));
            match run(&shorter) {
                Err(w) => {
                    shorter.truncate(w.0 + 1);
                    ops = shorter;
                    why = w;
                }
                Ok(()) => at += chunk,
            }
        }
        chunk /= 2;
    }
    (ops, why)
}

/// Steps per sequence, and the steps of a run unless `PCMSIG_MODEL_STEPS` (`cargo xtask test
/// --model-steps N`) says otherwise: the warm test's budget.
const STEPS: usize = 120;
const RUN_STEPS: u64 = 12_000;

fn the_module_behaves_as_its_reference_model() -> TestResult {
    let seed = crate::common::seed();
    let mut rng = crate::common::Rng(seed | 1);
    let mut r = move |n: u64| rng.below(n);
    let sequences = std::env::var(pcmsig_contract::env::MODEL_STEPS)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(RUN_STEPS)
        .div_ceil(STEPS as u64);
    let mut steps = 0;
    let mut progress = crate::runner::Progress::new("model sequences");
    for k in 0..sequences {
        progress.step(k as usize, sequences as usize);
        let ops: Vec<Op> = (0..STEPS).map(|_| Op::random(&mut r)).collect();
        if let Err(why) = run(&ops) {
            let (min, (at, reason)) = shrink(ops, why);
            let mut text = format!(
                "sequence {k} of seed {seed} (rerun with cargo xtask test --seed {seed} \
                 --filter 'the_module_behaves*') failed; shrunk to {} steps, step {at}: {reason}",
                min.len()
            );
            for (i, op) in min.iter().enumerate() {
                text.push_str(&format!("\n  {i}: {op:?}"));
            }
            return Err(text);
        }
        steps += ops.len();
    }
    diag(&format!(
        "seed {seed}: {sequences} sequences, {steps} steps, every result, signal, record and \
         statistic as the model said"
    ));
    Ok(())
}

/// Emits `n` events in bursts on `dev` (its read queue overflows, counted).
fn emit_bursts(dev: &Device, n: u64) -> TestResult {
    let mut done = 0u64;
    let mut progress = crate::runner::Progress::new("events emitted");
    while done < n {
        let k = (n - done).min(u64::from(uapi::BURST_MAX)) as u32;
        dev.inject_burst_raw(STARTED.into(), k).ctx("burst")?;
        done += u64::from(k);
        progress.step(done as usize, n as usize);
    }
    Ok(())
}

/// Registers on `dev` (its read queue empty), emits 4 events and checks that they carry
/// sequence numbers `first..first + 4`: in `si_int` the low 24 bits, in the records the low 32.
fn four_events_numbered_from(dev: &Device, first: u64) -> TestResult {
    while dev.read_records(256).map_or(0, |r| r.len()) > 0 {}
    let sig = crate::common::rt(0);
    sig.block().ctx("block")?;
    dev.register(sig).ctx("register")?;
    dev.inject_burst_raw(STARTED.into(), 4).ctx("burst of 4")?;
    let set = SignalSet::of(&[sig.number()]);
    let want: Vec<u64> = (first..first + 4).collect();
    let mut got = Vec::new();
    for _ in 0..4 {
        let info = sys::sigtimedwait(&set, crate::runner::wait())
            .ctx("sigtimedwait")?
            .ok_or("a signal never came")?;
        ensure_eq!(info.value >> 24, i32::from(STARTED));
        got.push(u64::from(info.value as u32 & 0x00ff_ffff));
    }
    let low24: Vec<u64> = want.iter().map(|s| s & 0x00ff_ffff).collect();
    ensure_eq!(got, low24, "si_int's 24 sequence bits");
    let seqs: Vec<u64> = dev
        .read_records(8)
        .ctx("read")?
        .iter()
        .map(|r| u64::from(r.seq))
        .collect();
    ensure_eq!(seqs, want, "the records' 32 bits");
    let s = dev.stats().ctx("stats")?;
    ensure_eq!((s.file.fired, s.file.delivered), (4, 4));
    Ok(())
}

/// The long run the random sequences do not reach: 2^16 + 2 real events (bursts on a file with
/// no listener), then 4 with a listener across 2^16; and the 24-bit wrap of `si_int`'s sequence
/// (0xfffffe, 0xffffff, 0, 1) on a stream whose numbering starts at 2^24 - 2 (the module's
/// `test_first_seq` hook: 2^24 real events take about 3 minutes under TCG).
fn sequence_numbers_pass_2_16_and_wrap_2_24() -> TestResult {
    {
        let dev = Device::open_nonblocking().ctx("open")?;
        let before = (1u64 << 16) - 2;
        emit_bursts(&dev, before - 1)?;
        let s = dev.stats().ctx("stats")?;
        ensure_eq!(s.events, before - 1);
        ensure_eq!(
            s.read_overruns,
            before - 1 - u64::from(uapi::READ_QUEUE_LEN)
        );
        four_events_numbered_from(&dev, before)?;
    }
    let first = (1u64 << 24) - 2;
    crate::modload::with_module_params(&format!("test_first_seq={first}"), || {
        let dev = Device::open_nonblocking().ctx("open")?;
        four_events_numbered_from(&dev, first)?;
        ensure_eq!(dev.stats().ctx("stats")?.events, 4);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_all(m: &mut Model, ops: &[Op]) -> Vec<Expect> {
        ops.iter()
            .map(|op| {
                assert!(m.applies(op), "{op:?} does not apply");
                m.apply(op)
            })
            .collect()
    }

    /// The README's lifecycle: configure, start, pause, resume, drain, stop, each an event
    /// numbered from 1, with `si_int = kind << 24 | seq` to the listener.
    #[test]
    fn the_readme_lifecycle() {
        let mut m = Model::default();
        let sig = slot_signal(0);
        let e = apply_all(
            &mut m,
            &[
                Op::Open {
                    slot: 0,
                    writable: true,
                },
                Op::Register {
                    slot: 0,
                    signo: sig,
                },
                Op::Configure {
                    slot: 0,
                    period_us: LONG_PERIOD_US,
                    periods: 0,
                },
                Op::Trigger {
                    slot: 0,
                    cmd: START,
                },
                Op::Trigger {
                    slot: 0,
                    cmd: PAUSE_PUSH,
                },
                Op::Trigger {
                    slot: 0,
                    cmd: PAUSE_RELEASE,
                },
                Op::Trigger {
                    slot: 0,
                    cmd: DRAIN,
                },
                Op::Trigger { slot: 0, cmd: STOP },
                Op::Stats { slot: 0 },
            ],
        );
        let signals: Vec<(u32, i32)> = e.iter().flat_map(|e| e.signals.clone()).collect();
        assert_eq!(
            signals,
            vec![
                (sig, 0x0100_0001),
                (sig, 0x0200_0002),
                (sig, 0x0400_0003),
                (sig, 0x0500_0004),
                (sig, 0x0800_0005),
                (sig, 0x0300_0006),
            ]
        );
        let s = e[8].stats.clone().unwrap();
        assert_eq!((s.state, s.listeners, s.events), (St::Stopped as u32, 1, 6));
        assert_eq!(
            s.file,
            Counts {
                fired: 6,
                delivered: 6,
                dropped_exited: 0
            }
        );
    }

    /// Events for a listener that exited are fired and dropped, counted, and send nothing.
    #[test]
    fn an_exited_listener_drops_are_counted() {
        let mut m = Model::default();
        let e = apply_all(
            &mut m,
            &[
                Op::Open {
                    slot: 1,
                    writable: true,
                },
                Op::RegisterAndExit {
                    slot: 1,
                    process: true,
                },
                Op::Inject { slot: 1, kind: 2 },
                Op::Inject { slot: 1, kind: 3 },
                Op::Stats { slot: 1 },
            ],
        );
        assert!(e.iter().all(|e| e.signals.is_empty()));
        let s = e[4].stats.clone().unwrap();
        let want = Counts {
            fired: 2,
            delivered: 0,
            dropped_exited: 2,
        };
        assert_eq!((s.listeners, s.file, s.total), (1, want, want));
    }

    /// The README's errors: EBADFD, EBUSY, EBADF, ENOENT, EINVAL.
    #[test]
    fn the_readme_errors() {
        let mut m = Model::default();
        let e = apply_all(
            &mut m,
            &[
                Op::Open {
                    slot: 0,
                    writable: true,
                },
                Op::Open {
                    slot: 1,
                    writable: false,
                },
                Op::Trigger {
                    slot: 0,
                    cmd: START,
                },
                Op::Configure {
                    slot: 1,
                    period_us: LONG_PERIOD_US,
                    periods: 0,
                },
                Op::Unregister { slot: 0 },
                Op::Register { slot: 0, signo: 32 },
                Op::Burst {
                    slot: 0,
                    kind: 1,
                    count: uapi::BURST_MAX + 1,
                },
                Op::Configure {
                    slot: 0,
                    period_us: uapi::PERIOD_US_MIN - 1,
                    periods: 0,
                },
                Op::Configure {
                    slot: 0,
                    period_us: LONG_PERIOD_US,
                    periods: 0,
                },
                Op::Trigger {
                    slot: 0,
                    cmd: START,
                },
                Op::Configure {
                    slot: 0,
                    period_us: LONG_PERIOD_US,
                    periods: 0,
                },
                Op::Trigger { slot: 0, cmd: 0 },
                Op::Read { slot: 1, max: 8 },
                Op::Read { slot: 1, max: 8 },
            ],
        );
        let results: Vec<Result<(), i32>> = e.iter().map(|e| e.result).collect();
        assert_eq!(
            results,
            vec![
                Ok(()),
                Ok(()),
                Err(libc::EBADFD),
                Err(libc::EBADF),
                Err(libc::ENOENT),
                Err(libc::EINVAL),
                Err(libc::EINVAL),
                Err(libc::EINVAL),
                Ok(()),
                Ok(()),
                Err(libc::EBUSY),
                Err(libc::EINVAL),
                Ok(()),
                Err(libc::EAGAIN),
            ]
        );
        // The read-only file reads what the stream emitted since it opened.
        assert_eq!(e[12].records, vec![(PREPARED, 1), (STARTED, 2)]);
    }

    /// A file's read queue keeps the oldest 256 records and counts the rest.
    #[test]
    fn the_read_queue_keeps_the_oldest_and_counts_the_rest() {
        let mut m = Model::default();
        apply_all(
            &mut m,
            &[Op::Open {
                slot: 0,
                writable: true,
            }],
        );
        for _ in 0..5 {
            m.apply(&Op::Burst {
                slot: 0,
                kind: 2,
                count: 60,
            });
        }
        let s = m.apply(&Op::Stats { slot: 0 }).stats.unwrap();
        assert_eq!((s.events, s.read_overruns), (300, 44));
        let r = m.apply(&Op::Read { slot: 0, max: 1000 }).records;
        assert_eq!(r.len(), 256);
        assert_eq!((r[0], r[255]), ((2, 1), (2, 256)));
    }

    /// A finite stream runs its periods within START and stops by itself (the periods and the
    /// stop from the period source); START again, with no CONFIGURE, runs them all again.
    #[test]
    fn a_finite_stream_started_again_runs_its_periods_again() {
        let mut m = Model::default();
        let sig = slot_signal(0);
        let start = Op::Trigger {
            slot: 0,
            cmd: START,
        };
        let e = apply_all(
            &mut m,
            &[
                Op::Open {
                    slot: 0,
                    writable: true,
                },
                Op::Register {
                    slot: 0,
                    signo: sig,
                },
                Op::Configure {
                    slot: 0,
                    period_us: FINITE_PERIOD_US,
                    periods: 2,
                },
                start.clone(),
                Op::Trigger { slot: 0, cmd: STOP },
                start,
                Op::Stats { slot: 0 },
            ],
        );
        let run = |first: i32| {
            vec![
                (sig, 0x0200_0000 | first),
                (sig, 0x0600_0001 + first),
                (sig, 0x0600_0002 + first),
                (sig, 0x0300_0003 + first),
            ]
        };
        assert_eq!(e[3].signals, run(2));
        assert_eq!(
            (e[3].periodic.clone(), e[3].settles),
            (vec![3, 4, 5], Some(5))
        );
        assert_eq!(e[4].result, Err(libc::EBADFD));
        assert_eq!(e[5].signals, run(6));
        assert_eq!(
            (e[5].periodic.clone(), e[5].settles),
            (vec![7, 8, 9], Some(9))
        );
        let s = e[6].stats.clone().unwrap();
        assert_eq!((s.state, s.periods, s.events), (St::Stopped as u32, 2, 9));
    }

    /// The last close forgets the stream: the next open starts from Setup, numbering from 1.
    #[test]
    fn the_last_close_starts_a_fresh_stream() {
        let mut m = Model::default();
        let e = apply_all(
            &mut m,
            &[
                Op::Open {
                    slot: 0,
                    writable: true,
                },
                Op::Configure {
                    slot: 0,
                    period_us: LONG_PERIOD_US,
                    periods: 0,
                },
                Op::Close { slot: 0 },
                Op::Open {
                    slot: 2,
                    writable: true,
                },
                Op::Register {
                    slot: 2,
                    signo: slot_signal(2),
                },
                Op::Inject {
                    slot: 2,
                    kind: u32::from(XRUN),
                },
                Op::Stats { slot: 2 },
            ],
        );
        assert_eq!(e[5].signals, vec![(slot_signal(2), 0x0700_0001)]);
        let s = e[6].stats.clone().unwrap();
        assert_eq!((s.state, s.events), (St::Setup as u32, 1));
    }
}
