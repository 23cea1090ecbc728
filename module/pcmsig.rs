// SPDX-License-Identifier: GPL-2.0
//! pcmsig: a fake PCM-like stream whose events reach registered threads as queued signals.
//!
//! `/dev/pcmsig` is one stream per user (states, triggers and a period timer, modelled on an ALSA
//! PCM substream): an open file drives the stream of its opener's effective uid, shared by that
//! user's files and out of every other user's reach (`users.rs`). Each open file may register
//! its *calling thread* with a signal number; every stream event then reaches that thread as a
//! signal with `si_code = SI_QUEUE` and an `si_int` that encodes the event kind and a sequence
//! number. Every open file can also `read()` fixed-size event records.
//!
//! The user-space contract (ioctl numbers, structs, encoding) is `uapi/src/uapi.rs`, shared with
//! user space; C programs include the generated `uapi/pcmsig.h`:
//!
//! ```c
//! #include "pcmsig.h"
//! int fd = open("/dev/pcmsig", O_RDWR);
//! sigset_t set; sigemptyset(&set); sigaddset(&set, SIGRTMIN);
//! pthread_sigmask(SIG_BLOCK, &set, NULL);          /* before registering */
//! struct pcmsig_register reg = { .signo = SIGRTMIN };  /* absolute number */
//! ioctl(fd, PCMSIG_IOC_REGISTER, &reg);
//! siginfo_t si; sigwaitinfo(&set, &si);            /* si.si_int = kind << 24 | seq */
//! ```
//!
//! Delivery is thread-directed (`send_sig_info`, `PIDTYPE_PID`) to the thread that registered.
//! Once `PCMSIG_IOC_REGISTER` (replacing a listener), `PCMSIG_IOC_UNREGISTER` or the last
//! `close()` of a file has returned, no signal to its earlier listener is in flight or will be
//! sent.
//!
//! Permissions: configure, trigger and the inject hooks need a file opened for writing; the
//! inject hooks exist only when the module is loaded with `test_hooks=1`; a caller of those
//! ioctls must be allowed to signal every registered listener (the send rule below).
//!
//! Errors: `EINVAL` bad argument, `EFAULT` bad pointer, `ENOTTY` unknown ioctl, `EBADFD` trigger
//! in the wrong state, `EBUSY` configure while running, `ENOENT` unregister without a listener,
//! `EPERM` the opener may not signal the registering thread, or the caller may not signal a
//! registered listener, `EBADF` a driving ioctl on a read-only file, `EOPNOTSUPP` an inject hook
//! without `test_hooks=1`, `EAGAIN` the stream's event queue has no room for an ioctl's events
//! (nothing is emitted), `ENOMEM` out of memory in `open` or REGISTER (nothing changed: the
//! guest suite's fault sweep checks every call this way). An emitting ioctl returns 0 once its
//! signals are queued; its wait for delivery is killable: only a fatal signal ends it early.

use core::fmt;
use kernel::{
    bindings, debugfs,
    fs::{File, Kiocb},
    iov::IovIterDest,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    sync::{Arc, ArcBorrow},
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

mod bh;
mod compat;
mod coverage;
mod delay;
mod edu;
mod event;
mod inbox;
mod live;
mod ring;
mod signal;
mod stream;
#[path = "../uapi/src/uapi.rs"]
#[allow(dead_code, unreachable_pub)]
mod uapi;
mod users;
mod wait;

use inbox::Listener;
use signal::SenderCred;
use stream::{OpenFile, Stream};
use uapi::{EventKind, EventRecord, Stats, Trigger};
use users::Streams;

// The UAPI's signal numbers are written out for user space (which has no kernel bindings); they
// must be the kernel's own, on every architecture this is built for.
const _: () = assert!(uapi::SIGUSR1 == bindings::SIGUSR1);
const _: () = assert!(uapi::SIGUSR2 == bindings::SIGUSR2);
const _: () = assert!(uapi::SIGRT_MIN == bindings::SIGRTMIN);
const _: () = assert!(uapi::SIGRT_MAX == bindings::SIGRTMAX);

// SAFETY: `Register` is `repr(C)` with two `u32`s: no padding, every bit pattern valid.
unsafe impl FromBytes for uapi::Register {}
// SAFETY: `Config` is `repr(C)` with two `u32`s: no padding, every bit pattern valid.
unsafe impl FromBytes for uapi::Config {}
// SAFETY: `Burst` is `repr(C)` with two `u32`s: no padding, every bit pattern valid.
unsafe impl FromBytes for uapi::Burst {}
// SAFETY: `ListenerStats` is `repr(C)` with only `u64`s: no padding.
unsafe impl AsBytes for uapi::ListenerStats {}
// SAFETY: `Stats` is `repr(C)`: two `u32`s then `u64`s and `ListenerStats`: no padding.
unsafe impl AsBytes for Stats {}
// SAFETY: `EventRecord` is `repr(C)`: u16, u16, u32, u64: 16 bytes, no padding.
unsafe impl AsBytes for EventRecord {}

module! {
    type: PcmsigModule,
    name: "pcmsig",
    authors: ["pcmsig developers"],
    description: "Fake PCM stream delivering events as queued real-time signals",
    license: "GPL",
    params: {
        test_hooks: u32 {
            default: 0,
            description: "1 enables the test hooks PCMSIG_IOC_INJECT(_BURST) (0: EOPNOTSUPP)",
        },
        test_first_seq: u32 {
            default: 1,
            description: "Test hook: the sequence number of a new stream's first event",
        },
        test_delivery_delay_ms: u32 {
            default: 0,
            description: "Test hook: delivery waits this long (debugfs release_delivery ends it)",
        },
        test_delay_points: u32 {
            default: 0,
            description: "Test hook: the delay points to enable, a mask of uapi::DelayPoint bits",
        },
        test_delay_ms: u32 {
            default: 5000,
            description: "Test hook: the longest an enabled delay point waits (ms) unless released",
        },
        test_files_per_user_max: u32 {
            default: 0,
            description: "Test hook: a lower cap on one user's open files (0: FILES_PER_USER_MAX)",
        },
    },
}

/// Fields drop in declaration order, and the order is the unload sequence: no new opener (the
/// misc device), then no interrupt source (the edu driver frees its IRQ on unbind), and only then
/// the flush of the delivery work item, which nothing can queue any more.
#[pin_data]
struct PcmsigModule {
    // Declared first so that it is dropped (deregistered) first.
    #[pin]
    miscdev: MiscDeviceRegistration<PcmsigFile>,
    /// The driver for QEMU's `edu` device, the optional hardware period source.
    #[pin]
    edu_driver: kernel::driver::Registration<kernel::pci::Adapter<edu::EduDriver>>,
    /// Flushes the work items once the IRQ source above is gone.
    _flush: FlushOnDrop,
    /// `/sys/kernel/debug/pcmsig/stats`.
    #[pin]
    _stats: debugfs::File<Arc<Streams>>,
    /// `/sys/kernel/debug/pcmsig/release_delivery`: a write ends the test hook's delivery delay
    /// (for good) and the wait of every delay point waiting now.
    #[pin]
    _release: debugfs::File<Arc<Streams>>,
    _debugfs: debugfs::Dir,
    /// The coverage build's counters (nothing in the real module); dropped last.
    _coverage: coverage::Coverage,
}

/// The text of `/sys/kernel/debug/pcmsig/stats`: `name value` lines, first the module's
/// (`streams`, `delay_point_hits`, the `live_*` counts), then a block per stream opened by
/// `stream UID`.
fn stats_file(streams: &Arc<Streams>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let blocks = streams.snapshot().map_err(|_| fmt::Error)?;
    writeln!(f, "streams {}", blocks.len())?;
    writeln!(f, "delay_point_hits {}", delay::hits())?;
    writeln!(f, "files_per_user_max {}", crate::stream::files_max())?;
    writeln!(f, "live_streams {}", live::now(&live::STREAMS))?;
    writeln!(f, "live_files {}", live::now(&live::FILES))?;
    writeln!(f, "live_listeners {}", live::now(&live::LISTENERS))?;
    for s in &blocks {
        stream_stats(s, f)?;
    }
    Ok(())
}

/// One stream's block of the debugfs `stats` file.
fn stream_stats(stream: &Arc<Stream>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let listeners = stream.listeners();
    let inner = stream.inner.lock();
    let t = &inner.totals;
    writeln!(f, "stream {}", stream.owner)?;
    writeln!(f, "state {}", inner.state.name())?;
    writeln!(f, "listeners {listeners}")?;
    writeln!(f, "events {}", inner.events)?;
    writeln!(f, "periods {}", inner.periods)?;
    writeln!(f, "fired {}", t.fired)?;
    writeln!(f, "delivered {}", t.delivered)?;
    writeln!(f, "dropped_queue_full {}", t.dropped_queue_full)?;
    writeln!(f, "dropped_exited {}", t.dropped_exited)?;
    writeln!(f, "dropped_execd {}", t.dropped_execd)?;
    writeln!(f, "dropped_perm {}", t.dropped_perm)?;
    writeln!(f, "delivery_handoffs {}", inner.delivery_handoffs)?;
    writeln!(
        f,
        "delivery_softirq_yields {}",
        inner.delivery_softirq_yields
    )?;
    writeln!(f, "delivery_run_max {}", inner.delivery_run_max)
}

impl kernel::InPlaceModule for PcmsigModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        ::pin_init::pin_init_scope(move || {
            let streams = Streams::new()?;
            // For the edu driver's probe, which may run as soon as the driver registers, and
            // the file operations.
            Streams::publish(Some(&streams));
            let dir = debugfs::Dir::new(c"pcmsig");
            let options = MiscDeviceOptions { name: c"pcmsig" };
            // 7.2: the file operations the device will use, naming this module (compat.rs).
            compat::prepare_fops::<PcmsigFile>(module);
            Ok(try_pin_init!(&this in Self {
                _stats <- dir.read_callback_file(c"stats", streams.clone(), &stats_file),
                _release <- dir.write_callback_file(
                    c"release_delivery",
                    streams.clone(),
                    &|s: &Arc<Streams>, r: &mut kernel::uaccess::UserSliceReader| {
                        // A delay point's name (at most 64 bytes read) releases that point.
                        let mut name = [0u8; 64];
                        let n = r.len().min(name.len());
                        let name = name.get_mut(..n).ok_or(EINVAL)?;
                        r.read_slice(name)?;
                        for s in s.snapshot()? {
                            s.release_delivery();
                        }
                        let released = delay::release(name);
                        // The late interrupt that `device_interrupt_late` held back comes now.
                        let late = uapi::DelayPoint::DeviceInterruptLate;
                        if released & late.bit() != 0 && delay::take_deferred(late) {
                            s.device_interrupt();
                        }
                        Ok(())
                    }
                ),
                _debugfs: dir,
                edu_driver <- kernel::driver::Registration::new(c"pcmsig-edu", module),
                _flush: FlushOnDrop(streams),
                miscdev <- MiscDeviceRegistration::register(options),
                _: {
                    // SAFETY: `this` points to the module being initialised, whose `miscdev`
                    // was initialised just above.
                    compat::own_fops(unsafe { &(*this.as_ptr()).miscdev });
                },
                _coverage: coverage::Coverage::register(),
            }))
        })
    }
}

/// Waits, when dropped, until every stream's delivery work item is idle.
struct FlushOnDrop(Arc<Streams>);

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        // No file is open (the module refcount guarantees it; each stream was forgotten at its
        // last close, after its flush) and no interrupt can queue work (the edu driver, dropped
        // before this field, has freed its IRQ): make sure no work item of ours is still queued
        // when the module text goes away.
        // Each stream's last close flushed its work; this flush is for a stream that never had
        // a file (none can exist: a stream is listed with its first file). The list is empty
        // unless memory ran out for the snapshot, which then flushes nothing more.
        for s in self.0.snapshot().unwrap_or_default() {
            s.flush_work();
        }
        // No probe and no file operation can run any more: nothing may find the streams
        // through the static pointer.
        Streams::publish(None);
    }
}

/// The file operations of `/dev/pcmsig`.
struct PcmsigFile;

fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>())
        .reader()
        .read::<T>()
}

#[vtable]
impl MiscDevice for PcmsigFile {
    type Ptr = Arc<OpenFile>;

    fn open(file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Arc<OpenFile>> {
        compat::check_owned(file)?;
        Streams::get()
            .ok_or(ENODEV)?
            .open(SenderCred::of_file(file))
    }

    fn release(open: Arc<OpenFile>, _file: &File) {
        match Streams::get() {
            Some(streams) => streams.close(&open),
            // Unreachable (an open file pins the module, whose streams are published), but
            // never leave a file attached.
            None => open.stream.clone().detach(&open),
        }
    }

    fn read_iter(kiocb: Kiocb<'_, Self::Ptr>, iov: &mut IovIterDest<'_>) -> Result<usize> {
        const REC: usize = core::mem::size_of::<EventRecord>();
        let want = iov.len() / REC;
        if want == 0 {
            return Err(EINVAL);
        }
        // SAFETY: A kiocb passed to `read_iter` has a valid `ki_filp` for the whole call, and
        // `f_flags` is read once (it may change under `fcntl(F_SETFL)`, as for every driver).
        let flags =
            unsafe { core::ptr::addr_of!((*(*kiocb.as_raw()).ki_filp).f_flags).read_volatile() };
        let nonblock = flags & bindings::O_NONBLOCK != 0;
        let me = kiocb.file();
        // Fill the buffer with what is buffered, 16 records at a time (a small stack array);
        // only the first batch may wait.
        let mut copied = 0;
        let mut first = true;
        while copied / REC < want {
            let mut records = [EventRecord::default(); 16];
            let n = (want - copied / REC).min(records.len());
            let got = match me.take_records(&mut records[..n], nonblock || !first) {
                Ok(got) => got,
                Err(e) if first => return Err(e),
                Err(_) => break,
            };
            first = false;
            let taken = records.get(..got).unwrap_or(&[]);
            for (i, r) in taken.iter().enumerate() {
                if iov.copy_to_iter(r.as_bytes()) != REC {
                    // A fault: the records not wholly copied go back, and the count is of whole
                    // records.
                    delay::sleep_at(uapi::DelayPoint::ReadBeforePutBack);
                    me.put_back(taken.get(i..).unwrap_or(&[]));
                    return if copied == 0 { Err(EFAULT) } else { Ok(copied) };
                }
                copied += REC;
            }
            if got < n {
                break;
            }
        }
        Ok(copied)
    }

    fn ioctl(me: ArcBorrow<'_, OpenFile>, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let me: &OpenFile = &me;
        match cmd {
            uapi::IOC_REGISTER => Self::register(me, read_arg(arg)?),
            uapi::IOC_UNREGISTER => Self::unregister(me),
            uapi::IOC_CONFIGURE => {
                Self::writable(file)?;
                me.stream.configure(read_arg(arg)?)
            }
            uapi::IOC_TRIGGER => {
                Self::writable(file)?;
                let cmd: u32 = read_arg(arg)?;
                me.stream.trigger(Trigger::from_u32(cmd).ok_or(EINVAL)?)
            }
            uapi::IOC_INJECT => {
                Self::may_inject(file)?;
                let kind: u32 = read_arg(arg)?;
                me.stream
                    .inject(EventKind::from_u32(kind).ok_or(EINVAL)?, 1)
            }
            uapi::IOC_INJECT_BURST => {
                Self::may_inject(file)?;
                let burst: uapi::Burst = read_arg(arg)?;
                let kind = EventKind::from_u32(burst.kind).ok_or(EINVAL)?;
                me.stream.inject(kind, burst.count)
            }
            uapi::IOC_GET_STATS => Self::get_stats(me, arg),
            _ => Err(ENOTTY),
        }
        .map(|()| 0)
    }
}

impl PcmsigFile {
    /// The ioctls that emit events change what every listener receives: they need a file opened
    /// for writing (EBADF, as write(2) on a read-only descriptor).
    fn writable(file: &File) -> Result {
        if file.flags() & kernel::fs::file::flags::O_ACCMODE == kernel::fs::file::flags::O_RDONLY {
            return Err(EBADF);
        }
        Ok(())
    }

    /// The injection ioctls also need the test hooks, off unless the module was loaded with
    /// `test_hooks=1` (EOPNOTSUPP).
    fn may_inject(file: &File) -> Result {
        Self::writable(file)?;
        if compat::param(&module_parameters::test_hooks) == 0 {
            return Err(compat::eopnotsupp());
        }
        Ok(())
    }

    /// REGISTER: the calling thread becomes the file's listener for signal `reg.signo`.
    fn register(me: &OpenFile, reg: uapi::Register) -> Result {
        if reg.flags != 0 || !uapi::signal_allowed(reg.signo) {
            return Err(EINVAL);
        }
        if !me.opener.may_signal_current() {
            return Err(EPERM);
        }
        let listener = Listener::new_current(reg.signo)?;
        let old = {
            let mut inner = me.inner.lock();
            let old = inner.listener.replace(listener);
            if old.is_none() {
                me.stream.count_listener(true);
            }
            old
        };
        if old.is_some() {
            // A delivery that picked the old listener may still be sending: when REGISTER
            // returns, no signal to it is in flight, and its last reference is dropped here,
            // never by the delivery work item (see `Listener`).
            me.stream.flush_work();
        }
        drop(old);
        Ok(())
    }

    /// UNREGISTER: the file has no listener any more (ENOENT if it had none); its statistics
    /// stay readable.
    fn unregister(me: &OpenFile) -> Result {
        let old = {
            let mut inner = me.inner.lock();
            let old = inner.listener.take().ok_or(ENOENT)?;
            me.stream.count_listener(false);
            inner.last.replace(old.clone())
        };
        // A delivery that picked the listener before it was taken may still be sending: when
        // UNREGISTER returns, no signal to it is in flight.
        me.stream.flush_work();
        drop(old);
        Ok(())
    }

    /// GET_STATS: the stream's state and counters and this file's, copied to `arg`.
    fn get_stats(me: &OpenFile, arg: usize) -> Result {
        let stream = &me.stream;
        let (file, read_overruns) = {
            let inner = me.inner.lock();
            let l = inner.listener.clone().or_else(|| inner.last.clone());
            (l, inner.read_overruns)
        };
        let mut stats = Stats {
            listeners: stream.listeners(),
            read_overruns,
            file: file.map(|l| l.stats()).unwrap_or_default(),
            ..Stats::default()
        };
        {
            let inner = stream.inner.lock();
            stats.state = inner.state as u32;
            stats.events = inner.events;
            stats.periods = inner.periods;
            stats.total = inner.totals;
        }
        UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<Stats>())
            .writer()
            .write(&stats)
    }
}
