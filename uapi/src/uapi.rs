// SPDX-License-Identifier: GPL-2.0
//! The pcmsig user-space ABI, defined once.
//!
//! This file is compiled twice: into the kernel module (`module/pcmsig.rs` includes it with
//! `#[path]`) and into the `pcmsig-uapi` crate that user space and xtask depend on. The C header
//! `uapi/pcmsig.h` is generated from it by `cargo xtask header`, and a host test compiles that
//! header and checks every number, size and offset against these definitions.
//!
//! It therefore uses `core` only, and nothing here may panic.

/// Path of the device node.
pub const DEVICE_PATH: &str = "/dev/pcmsig";

/// The ioctl "type" byte. 0xBB is unclaimed in `Documentation/userspace-api/ioctl/ioctl-number.rst`.
pub const IOC_MAGIC: u8 = 0xBB;

const IOC_NONE: u32 = 0;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// `_IOC(dir, IOC_MAGIC, nr, size)` as the generic (x86, arm, riscv) Linux layout defines it.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    // The size field is 14 bits wide; every struct below is far smaller (checked at compile time).
    (dir << 30) | ((size as u32) << 16) | ((IOC_MAGIC as u32) << 8) | nr
}

/// One field of a UAPI struct, as the C header generator and its layout test see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: &'static str,
    /// Its C type (`__u32`, `struct pcmsig_listener_stats`, ...).
    pub c_type: &'static str,
    pub offset: usize,
    pub size: usize,
}

/// The C name, size and fields (in declaration order) of a UAPI struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub c_name: &'static str,
    pub size: usize,
    pub fields: &'static [Field],
}

/// The C type a Rust UAPI type is written as in the header.
pub trait CType {
    const C_TYPE: &'static str;
}

impl CType for u16 {
    const C_TYPE: &'static str = "__u16";
}

impl CType for u32 {
    const C_TYPE: &'static str = "__u32";
}

impl CType for u64 {
    const C_TYPE: &'static str = "__u64";
}

/// Declares a `repr(C)` UAPI struct and its [`Layout`] (`Self::LAYOUT`), taken from the
/// declaration itself: the header and its test cannot list a field the struct does not have.
macro_rules! uapi_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident as $c_name:literal {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl CType for $name {
            const C_TYPE: &'static str = concat!("struct ", $c_name);
        }

        impl $name {
            /// The C name, size and fields of this struct, for `uapi/pcmsig.h`.
            pub const LAYOUT: Layout = Layout {
                c_name: $c_name,
                size: core::mem::size_of::<$name>(),
                fields: &[$(Field {
                    name: stringify!($field),
                    c_type: <$ty as CType>::C_TYPE,
                    offset: core::mem::offset_of!($name, $field),
                    size: core::mem::size_of::<$ty>(),
                }),*],
            };
        }
    };
}

/// Every UAPI struct, in the order the header declares them (a struct before its users).
pub const STRUCTS: [Layout; 6] = [
    Register::LAYOUT,
    Config::LAYOUT,
    Burst::LAYOUT,
    ListenerStats::LAYOUT,
    Stats::LAYOUT,
    EventRecord::LAYOUT,
];

uapi_struct! {
    /// Argument of [`IOC_REGISTER`].
    pub struct Register as "pcmsig_register" {
        /// Absolute signal number: `SIGUSR1`, `SIGUSR2` or a real-time signal in
        /// [`SIGRT_FIRST_ALLOWED`]..=[`SIGRT_MAX`] (34..=64: glibc's `SIGRTMIN()` is 34).
        /// Never an offset from glibc's `SIGRTMIN()`.
        pub signo: u32,
        /// Must be 0.
        pub flags: u32,
    }
}

uapi_struct! {
    /// Argument of [`IOC_CONFIGURE`].
    pub struct Config as "pcmsig_config" {
        /// Period length in microseconds, [`PERIOD_US_MIN`]..=[`PERIOD_US_MAX`].
        pub period_us: u32,
        /// Periods after which the stream stops by itself; 0 runs until stopped.
        pub periods: u32,
    }
}

uapi_struct! {
    /// Argument of [`IOC_INJECT_BURST`].
    pub struct Burst as "pcmsig_burst" {
        /// [`EventKind`] as its number.
        pub kind: u32,
        /// How many events, 1..=[`BURST_MAX`].
        pub count: u32,
    }
}

uapi_struct! {
    /// Delivery counters of one listener (or summed over listeners).
    ///
    /// Invariant: `fired == delivered + dropped_queue_full + dropped_exited + dropped_execd + dropped_perm`.
    pub struct ListenerStats as "pcmsig_listener_stats" {
        /// Events offered to the listener.
        pub fired: u64,
        /// Events the kernel accepted for delivery (queued, or merged into a pending standard signal).
        pub delivered: u64,
        /// Dropped because the signal queue was full (`-EAGAIN` at `RLIMIT_SIGPENDING`).
        pub dropped_queue_full: u64,
        /// Dropped because the registered thread had exited.
        pub dropped_exited: u64,
        /// Dropped because the registered thread had called `execve` since registering.
        pub dropped_execd: u64,
        /// Dropped because the opener's credentials no longer allow signalling the thread.
        pub dropped_perm: u64,
    }
}

impl ListenerStats {
    /// Sum of every kind of drop.
    pub const fn dropped(&self) -> u64 {
        self.dropped_queue_full
            .wrapping_add(self.dropped_exited)
            .wrapping_add(self.dropped_execd)
            .wrapping_add(self.dropped_perm)
    }
}

uapi_struct! {
    /// Result of [`IOC_GET_STATS`].
    pub struct Stats as "pcmsig_stats" {
        /// Current [`State`] as its number.
        pub state: u32,
        /// Listeners registered now on this file's stream (its opener's user's), over all its
        /// open files.
        pub listeners: u32,
        /// Events the stream has emitted since it was created (by its user's first open while
        /// none of that user's files was open).
        pub events: u64,
        /// Period ticks since the stream was last started.
        pub periods: u64,
        /// Records this open file lost because its `read()` queue ([`READ_QUEUE_LEN`]) was full.
        pub read_overruns: u64,
        /// The listener of this open file, since it last registered.
        pub file: ListenerStats,
        /// Every listener of the stream since it was created.
        pub total: ListenerStats,
    }
}

uapi_struct! {
    /// One record returned by `read()` on the device.
    pub struct EventRecord as "pcmsig_event_record" {
        /// [`EventKind`] as its number.
        pub kind: u16,
        /// [`EventSource`] as its number.
        pub source: u16,
        /// The event's sequence number (the low 32 bits; signals carry the low [`SEQ_BITS`]).
        pub seq: u32,
        /// `CLOCK_MONOTONIC` time the event happened, in nanoseconds.
        pub timestamp_ns: u64,
    }
}

/// Register the calling thread as this open file's listener (replaces an earlier one).
pub const IOC_REGISTER: u32 = ioc(IOC_WRITE, 0x01, core::mem::size_of::<Register>());
/// Unregister this open file's listener; `-ENOENT` when none is registered.
pub const IOC_UNREGISTER: u32 = ioc(IOC_NONE, 0x02, 0);
/// Configure (prepare) the stream; `-EBUSY` while it runs.
pub const IOC_CONFIGURE: u32 = ioc(IOC_WRITE, 0x03, core::mem::size_of::<Config>());
/// Trigger the stream with a [`Trigger`] command (a `u32`); `-EBADFD` in the wrong state.
pub const IOC_TRIGGER: u32 = ioc(IOC_WRITE, 0x04, core::mem::size_of::<u32>());
/// Emit one event of the given [`EventKind`] (a `u32`) without changing the stream state.
/// Returns once the event has been offered to every listener (so do [`IOC_CONFIGURE`],
/// [`IOC_TRIGGER`] and [`IOC_INJECT_BURST`]); the wait is killable: only a fatal signal ends it
/// early, and a handled signal runs its handler after the ioctl returns.
pub const IOC_INJECT: u32 = ioc(IOC_WRITE, 0x05, core::mem::size_of::<u32>());
/// Read the [`Stats`].
pub const IOC_GET_STATS: u32 = ioc(IOC_READ, 0x06, core::mem::size_of::<Stats>());
/// Emit a [`Burst`]: `count` events of one kind back to back, with consecutive sequence numbers,
/// without changing the stream state. All or nothing: `-EAGAIN` and no event when the stream's
/// queue has no room for all of them. Returns once every one has been offered to every listener.
pub const IOC_INJECT_BURST: u32 = ioc(IOC_WRITE, 0x07, core::mem::size_of::<Burst>());

/// Most events one [`IOC_INJECT_BURST`] emits.
pub const BURST_MAX: u32 = 64;

/// Most events one run of a stream's delivery work item offers (to every open file) before it
/// queues itself again, behind whatever else waits on its CPU: the bound on how long one
/// delivery runs, whatever the rate of events. Not part of the C header: the driver's
/// internals, shared with its tests.
pub const DELIVERY_RUN_MAX: u32 = 128;

/// Most offers (events times open files: a `read()` record each, and a signal for each
/// listener) one delivery run in softirq makes. A stream whose delivery needs more hands it to
/// a kernel thread (debugfs `delivery_handoffs`), which the scheduler shares fairly, so that
/// one user's many files never hold up another user's delivery, which softirq runs one after
/// another on a CPU (review finding 2). Not part of the C header.
pub const SOFTIRQ_OFFERS_MAX: u32 = 256;

/// Events a stream holds between their emission and their delivery to every open file.
pub const PENDING_LEN: u32 = 256;

/// Of those, how many the emitting ioctls (configure, trigger, inject) may hold: an ioctl that
/// would pass it fails with `EAGAIN` and emits nothing. The rest is the timer's, so that a stream
/// never enters Xrun without its Xrun event.
pub const PENDING_IOCTL_MAX: u32 = PENDING_LEN - 1;
// A whole burst fits in what the ioctls may hold, many times over.
const _: () = assert!(PENDING_IOCTL_MAX >= 2 * BURST_MAX);

const _: () = assert!(core::mem::size_of::<Stats>() < (1 << 14));
const _: () = assert!(core::mem::size_of::<EventRecord>() == 16);

/// Most files one user (effective uid) may have open on the device at once: an `open` beyond it
/// fails with `EMFILE`, and the user's other files and every other user's are unaffected. Far
/// above what a program needs (the bench opens 10,000), and well below the count at which the
/// stream's file list would ask the page allocator for more than it may give.
pub const FILES_PER_USER_MAX: u32 = 16_384;

/// Shortest period the stream accepts, in microseconds.
pub const PERIOD_US_MIN: u32 = 100;
/// Longest period the stream accepts, in microseconds.
pub const PERIOD_US_MAX: u32 = 10_000_000;
/// Records each open file keeps for `read()`; when it is full, newer records are dropped and
/// counted in [`Stats::read_overruns`] (the oldest are kept, in order).
pub const READ_QUEUE_LEN: u32 = 256;
/// Most periods one expiry of the stream's timer accounts for after a stall (the timer's
/// interrupt came late, e.g. its CPU was busy); if more have passed, they are lost, and the
/// stream goes to Xrun (as when a ring buffer's hardware pointer laps the application's).
pub const STALL_PERIODS_MAX: u32 = 64;

/// `SIGUSR1` on Linux.
pub const SIGUSR1: u32 = 10;
/// `SIGUSR2` on Linux.
pub const SIGUSR2: u32 = 12;
/// The kernel's first real-time signal. glibc reserves a few and its `SIGRTMIN()` is higher (34).
pub const SIGRT_MIN: u32 = 32;
/// The kernel's last real-time signal on x86.
pub const SIGRT_MAX: u32 = 64;
/// The first real-time signal a listener may register. 32 and 33 are glibc's internal
/// `SIGCANCEL` and `SIGSETXID`: glibc's `sigwaitinfo`, `signalfd` masks and `sigaction` never let
/// a program take them, so a listener registered for them could never receive an event.
pub const SIGRT_FIRST_ALLOWED: u32 = 34;

/// Whether `signo` may be registered: `SIGUSR1`, `SIGUSR2` or a real-time signal from
/// [`SIGRT_FIRST_ALLOWED`] to [`SIGRT_MAX`].
pub const fn signal_allowed(signo: u32) -> bool {
    signo == SIGUSR1 || signo == SIGUSR2 || (signo >= SIGRT_FIRST_ALLOWED && signo <= SIGRT_MAX)
}

/// `si_code` of every signal pcmsig sends: `SI_QUEUE`, so that `si_int` is visible to SA_SIGINFO
/// handlers, `sigwaitinfo` and signalfd alike (`SI_USER`/`SI_KERNEL` hide it from signalfd).
pub const SI_CODE: i32 = -1;

/// Bits of the sequence number carried in `si_int`.
pub const SEQ_BITS: u32 = 24;
/// Mask of the sequence number in `si_int`.
pub const SEQ_MASK: u32 = (1 << SEQ_BITS) - 1;

/// Stream states, modelled on ALSA's PCM states.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Opened, never configured.
    Setup = 0,
    /// Configured, ready to start.
    Prepared = 1,
    /// The period timer runs.
    Running = 2,
    /// Paused; the timer is stopped.
    Paused = 3,
    /// Running its last period, then stops.
    Draining = 4,
    /// A listener fell behind (or the stream was told so); configure again to recover.
    Xrun = 5,
    /// Stopped; may be started again.
    Stopped = 6,
}

impl State {
    /// Every state, in numeric order.
    pub const ALL: [State; 7] = [
        State::Setup,
        State::Prepared,
        State::Running,
        State::Paused,
        State::Draining,
        State::Xrun,
        State::Stopped,
    ];

    /// The state with this number.
    pub const fn from_u32(v: u32) -> Option<State> {
        if (v as usize) < Self::ALL.len() {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            State::Setup => "setup",
            State::Prepared => "prepared",
            State::Running => "running",
            State::Paused => "paused",
            State::Draining => "draining",
            State::Xrun => "xrun",
            State::Stopped => "stopped",
        }
    }
}

/// Commands of [`IOC_TRIGGER`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Prepared or Stopped -> Running.
    Start = 1,
    /// Running, Paused, Draining or Xrun -> Stopped.
    Stop = 2,
    /// Running -> Paused.
    PausePush = 3,
    /// Paused -> Running.
    PauseRelease = 4,
    /// Running -> Draining: one more period, then Stopped.
    Drain = 5,
    /// Running, Paused or Draining -> Xrun (as ALSA's `snd_pcm_stop_xrun`).
    Xrun = 6,
}

impl Trigger {
    /// Every command, in numeric order.
    pub const ALL: [Trigger; 6] = [
        Trigger::Start,
        Trigger::Stop,
        Trigger::PausePush,
        Trigger::PauseRelease,
        Trigger::Drain,
        Trigger::Xrun,
    ];

    /// The command with this number.
    pub const fn from_u32(v: u32) -> Option<Trigger> {
        if v >= 1 && (v as usize) <= Self::ALL.len() {
            Some(Self::ALL[v as usize - 1])
        } else {
            None
        }
    }
}

/// Kinds of stream event. Every trigger and state change is an event.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The stream was configured (prepared).
    Prepared = 1,
    /// The stream started.
    Started = 2,
    /// The stream stopped (told to, drained, or after its configured periods).
    Stopped = 3,
    /// The stream paused.
    Paused = 4,
    /// The stream resumed from pause.
    Resumed = 5,
    /// A period elapsed.
    PeriodElapsed = 6,
    /// A listener fell behind; the stream stopped in the Xrun state.
    Xrun = 7,
    /// The stream began draining its last period.
    Draining = 8,
}

impl EventKind {
    /// Every kind, in numeric order.
    pub const ALL: [EventKind; 8] = [
        EventKind::Prepared,
        EventKind::Started,
        EventKind::Stopped,
        EventKind::Paused,
        EventKind::Resumed,
        EventKind::PeriodElapsed,
        EventKind::Xrun,
        EventKind::Draining,
    ];

    /// The kind with this number.
    pub const fn from_u32(v: u32) -> Option<EventKind> {
        if v >= 1 && (v as usize) <= Self::ALL.len() {
            Some(Self::ALL[v as usize - 1])
        } else {
            None
        }
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            EventKind::Prepared => "prepared",
            EventKind::Started => "started",
            EventKind::Stopped => "stopped",
            EventKind::Paused => "paused",
            EventKind::Resumed => "resumed",
            EventKind::PeriodElapsed => "period",
            EventKind::Xrun => "xrun",
            EventKind::Draining => "draining",
        }
    }
}

/// What produced an event (the `source` of an [`EventRecord`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventSource {
    /// An ioctl (trigger, configure or inject).
    Ioctl = 0,
    /// The stream's period timer.
    Timer = 1,
    /// A device interrupt.
    Device = 2,
}

/// The `si_int` of an event: kind in bits 24..31, sequence number in bits 0..23.
///
/// The value is always positive (kinds are below 128).
pub const fn encode(kind: EventKind, seq: u32) -> i32 {
    (((kind as u32) << SEQ_BITS) | (seq & SEQ_MASK)) as i32
}

/// The kind and sequence number an `si_int` carries, or `None` if it is no pcmsig value.
pub const fn decode(value: i32) -> Option<(EventKind, u32)> {
    let v = value as u32;
    match EventKind::from_u32(v >> SEQ_BITS) {
        Some(kind) => Some((kind, v & SEQ_MASK)),
        None => None,
    }
}

/// Test hook: the module's named delay points, each a window in which a race of the driver's
/// history could strike. Off unless the module is loaded with `test_delay_points=MASK` (the OR of
/// [`DelayPoint::bit`]s). Each time an enabled point is reached it counts the visit in the
/// `delay_point_hits` line of `/sys/kernel/debug/pcmsig/stats`, then waits (busy-waiting where the
/// code may not sleep) until a write to `/sys/kernel/debug/pcmsig/release_delivery` (its name
/// releases that point, anything else every point, and `off` also turns them all off for good) or
/// `test_delay_ms` milliseconds (see `modinfo pcmsig`), so that a test can act inside the window
/// and then end it (see `ARCHITECTURE.md`, "Races on demand").
///
/// A test ABI, not a user one (not in the C header): the numbers are the bits of the load
/// parameter and the names the words of the release file, shared by the module and its tests.
/// A point may be added; one is renumbered or renamed only with both sides, in one change.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayPoint {
    /// The delivery work item (softirq) holds a file's listener, before signalling it.
    DeliveryHoldsListener = 0,
    /// The delivery work item has turned the stream to `Xrun`, before it is done with the batch.
    DeliveryAfterXrun = 1,
    /// The edu device's removal has stopped the stream, before the period timer is cancelled.
    DetachDeviceBeforeTimerStop = 2,
    /// A last close has taken the file out of the stream, before it resets the stream.
    LastCloseBeforeReset = 3,
    /// The period timer's callback (hard IRQ), before it accounts for the periods elapsed: a
    /// stall of the timer's CPU. It busy-waits and cannot be released (only `test_delay_ms`
    /// ends it), so load the module with a short `test_delay_ms` for it.
    TimerStall = 4,
    /// `read()` met a fault copying records out, before it puts the uncopied ones back.
    ReadBeforePutBack = 5,
    /// Delivery resolved a listener's thread for a batch and is about to send it the batch's
    /// signals: a thread that exits here must be counted as exited.
    DeliveryBeforeSend = 6,
    /// The edu device's interrupt handler (hard IRQ) has acknowledged a period interrupt: with
    /// the point enabled it leaves the periods owed, and the point's release takes them (from
    /// the writer's process context), as a late interrupt would. It defers rather than waits:
    /// a hard-IRQ handler busy-waiting on the only vCPU would keep the test from acting.
    DeviceInterruptLate = 7,
    /// An open is making the new file's allocations (charged to the opener's memory cgroup; a
    /// stream's file list may grow by a large one), as one under memory pressure would be,
    /// reclaiming: another user's open or close must not wait for it.
    OpenAllocating = 8,
    /// An emitting ioctl's check of the listeners walks the stream's file list, as a walk over
    /// many files and listeners would take long: another user's interrupts (its period timer)
    /// must still come on that CPU, so no lock of the list may be held across the walk. It
    /// busy-waits, as a walk does, and cannot be released from the CPU it holds: load the module
    /// with a short `test_delay_ms` for it.
    FilesLocked = 9,
    /// The delivery work item's thread run (a delivery too big for softirq) has taken a batch
    /// of events, before it offers them: a softirq run queued meanwhile (by a new event) must
    /// leave the stream to it, or the new run's events would overtake the batch.
    ThreadRunBatch = 10,
}

impl DelayPoint {
    /// Every point, in numeric order.
    pub const ALL: [DelayPoint; 11] = [
        DelayPoint::DeliveryHoldsListener,
        DelayPoint::DeliveryAfterXrun,
        DelayPoint::DetachDeviceBeforeTimerStop,
        DelayPoint::LastCloseBeforeReset,
        DelayPoint::TimerStall,
        DelayPoint::ReadBeforePutBack,
        DelayPoint::DeliveryBeforeSend,
        DelayPoint::DeviceInterruptLate,
        DelayPoint::OpenAllocating,
        DelayPoint::FilesLocked,
        DelayPoint::ThreadRunBatch,
    ];

    /// This point's bit in `test_delay_points`.
    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }

    /// Its name, as ARCHITECTURE.md and the tests spell it.
    pub const fn name(self) -> &'static str {
        match self {
            DelayPoint::DeliveryHoldsListener => "delivery_holds_listener",
            DelayPoint::DeliveryAfterXrun => "delivery_after_xrun",
            DelayPoint::DetachDeviceBeforeTimerStop => "detach_device_before_timer_stop",
            DelayPoint::LastCloseBeforeReset => "last_close_before_reset",
            DelayPoint::TimerStall => "timer_stall",
            DelayPoint::ReadBeforePutBack => "read_before_put_back",
            DelayPoint::DeliveryBeforeSend => "delivery_before_send",
            DelayPoint::DeviceInterruptLate => "device_interrupt_late",
            DelayPoint::OpenAllocating => "open_allocating",
            DelayPoint::FilesLocked => "files_locked",
            DelayPoint::ThreadRunBatch => "thread_run_batch",
        }
    }
}
