//! `/dev/pcmsig`: open, register, configure, trigger, inject, statistics and `read()`.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use pcmsig_uapi as uapi;
pub use pcmsig_uapi::{Config, EventKind, EventRecord, ListenerStats, State, Stats, Trigger};

use crate::{Error, Result, Signal};

/// The raw ioctls, with the numbers from the shared UAPI (nix's `*_bad!` macros take a number
/// instead of recomputing it).
mod raw {
    use pcmsig_uapi as uapi;
    nix::ioctl_write_ptr_bad!(ioc_register, uapi::IOC_REGISTER, uapi::Register);
    nix::ioctl_none_bad!(ioc_unregister, uapi::IOC_UNREGISTER);
    nix::ioctl_write_ptr_bad!(ioc_configure, uapi::IOC_CONFIGURE, uapi::Config);
    nix::ioctl_write_ptr_bad!(ioc_trigger, uapi::IOC_TRIGGER, u32);
    nix::ioctl_write_ptr_bad!(ioc_inject, uapi::IOC_INJECT, u32);
    nix::ioctl_write_ptr_bad!(ioc_inject_burst, uapi::IOC_INJECT_BURST, uapi::Burst);
    nix::ioctl_read_bad!(ioc_get_stats, uapi::IOC_GET_STATS, uapi::Stats);
}
use raw::*;

/// An open file of the pcmsig device. Each open file may register one listener thread.
///
/// ```no_run
/// use pcmsig::{Device, Signal, Trigger};
/// let dev = Device::open()?;
/// let sig = Signal::rtmin(0);
/// sig.block()?;            // before registering: the default action would kill us
/// dev.register(sig)?;      // this thread now receives every stream event
/// dev.configure(1000, 10)?; // 1 ms periods, stop after 10
/// dev.trigger(Trigger::Start)?;
/// # Ok::<(), pcmsig::Error>(())
/// ```
#[derive(Debug)]
pub struct Device {
    file: File,
}

/// The open file's descriptor: to poll it for records, or to close a forked child's copy.
impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Device {
    /// Opens [`uapi::DEVICE_PATH`].
    pub fn open() -> Result<Self> {
        Self::open_path(Path::new(uapi::DEVICE_PATH), false)
    }

    /// Opens the device with `O_NONBLOCK`, so that `read()` fails with `EAGAIN` when empty.
    pub fn open_nonblocking() -> Result<Self> {
        Self::open_path(Path::new(uapi::DEVICE_PATH), true)
    }

    /// Opens the device read-only: enough to register a listener and `read()` records; the
    /// ioctls that drive the stream (configure, trigger, inject) need write access (`EBADF`).
    pub fn open_read_only() -> Result<Self> {
        let path = Path::new(uapi::DEVICE_PATH);
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| Error::Open {
                path: path.display().to_string(),
                source: e,
            })?;
        Ok(Device { file })
    }

    /// Opens a device node at `path`.
    pub fn open_path(path: &Path, nonblock: bool) -> Result<Self> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        if nonblock {
            o.custom_flags(libc::O_NONBLOCK);
        }
        let file = o.open(path).map_err(|e| Error::Open {
            path: path.display().to_string(),
            source: e,
        })?;
        Ok(Device { file })
    }

    fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Registers the calling thread to receive every event as `signal`.
    pub fn register(&self, signal: Signal) -> Result<()> {
        self.register_raw(signal.number() as u32, 0)
    }

    /// Registers with raw values (for tests of the kernel's argument checks).
    pub fn register_raw(&self, signo: u32, flags: u32) -> Result<()> {
        let reg = uapi::Register { signo, flags };
        // SAFETY: `reg` is a valid `Register` for the duration of the call.
        unsafe { ioc_register(self.fd(), &reg) }.map_err(|e| Error::ioctl("register", e))?;
        Ok(())
    }

    /// Unregisters this file's listener.
    pub fn unregister(&self) -> Result<()> {
        // SAFETY: the ioctl takes no argument.
        unsafe { ioc_unregister(self.fd()) }.map_err(|e| Error::ioctl("unregister", e))?;
        Ok(())
    }

    /// Configures (prepares) the stream: `period_us` per period, stopping after `periods`
    /// (0: never).
    pub fn configure(&self, period_us: u32, periods: u32) -> Result<()> {
        let c = uapi::Config { period_us, periods };
        // SAFETY: `c` is a valid `Config` for the duration of the call.
        unsafe { ioc_configure(self.fd(), &c) }.map_err(|e| Error::ioctl("configure", e))?;
        Ok(())
    }

    /// Triggers the stream.
    pub fn trigger(&self, t: Trigger) -> Result<()> {
        self.trigger_raw(t as u32)
    }

    /// Triggers with a raw command number.
    pub fn trigger_raw(&self, cmd: u32) -> Result<()> {
        // SAFETY: `cmd` is a valid u32 for the duration of the call.
        unsafe { ioc_trigger(self.fd(), &cmd) }.map_err(|e| Error::ioctl("trigger", e))?;
        Ok(())
    }

    /// Emits one event of `kind`; returns once it has been offered to every listener.
    pub fn inject(&self, kind: EventKind) -> Result<()> {
        self.inject_raw(kind as u32)
    }

    /// Injects a raw event kind number.
    pub fn inject_raw(&self, kind: u32) -> Result<()> {
        // SAFETY: `kind` is a valid u32 for the duration of the call.
        unsafe { ioc_inject(self.fd(), &kind) }.map_err(|e| Error::ioctl("inject", e))?;
        Ok(())
    }

    /// Emits `count` (1..=[`uapi::BURST_MAX`]) events of `kind` back to back, with consecutive
    /// sequence numbers; returns once all have been offered to every listener. `EAGAIN` (and no
    /// event) when the stream's queue has no room for all of them.
    pub fn inject_burst(&self, kind: EventKind, count: u32) -> Result<()> {
        self.inject_burst_raw(kind as u32, count)
    }

    /// [`Device::inject_burst`] with a raw event kind number.
    pub fn inject_burst_raw(&self, kind: u32, count: u32) -> Result<()> {
        let burst = uapi::Burst { kind, count };
        // SAFETY: `burst` is a valid `Burst` for the duration of the call.
        unsafe { ioc_inject_burst(self.fd(), &burst) }
            .map_err(|e| Error::ioctl("inject burst", e))?;
        Ok(())
    }

    /// Reads the statistics (stream-wide, this file's listener, and totals).
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        // SAFETY: `s` is a valid, writable `Stats`.
        unsafe { ioc_get_stats(self.fd(), &mut s) }.map_err(|e| Error::ioctl("stats", e))?;
        Ok(s)
    }

    /// Issues a raw ioctl with a pointer argument (for tests of the kernel's checks).
    ///
    /// # Safety
    ///
    /// `arg` is passed to the kernel as is; the kernel validates user pointers, but a valid
    /// pointer to writable memory may be written by an ioctl that reads results.
    pub unsafe fn raw_ioctl(&self, request: u32, arg: usize) -> std::io::Result<i32> {
        // SAFETY: the caller upholds the contract above.
        let r = unsafe { libc::ioctl(self.fd(), request as libc::Ioctl, arg) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(r)
    }

    /// Reads event records; blocks unless the file was opened non-blocking. Not retried on
    /// `EINTR`: the caller sees it (or the kernel restarts the call under `SA_RESTART`).
    pub fn read_records(&self, max: usize) -> std::io::Result<Vec<EventRecord>> {
        let mut buf = vec![0u8; max * std::mem::size_of::<EventRecord>()];
        let n = (&self.file).read(&mut buf)?;
        Ok(buf[..n]
            .chunks_exact(std::mem::size_of::<EventRecord>())
            .map(|c| {
                let u16_at = |i: usize| u16::from_ne_bytes([c[i], c[i + 1]]);
                EventRecord {
                    kind: u16_at(0),
                    source: u16_at(2),
                    seq: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
                    timestamp_ns: u64::from_ne_bytes([
                        c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15],
                    ]),
                }
            })
            .collect())
    }

    /// Reads every record available now (the file must be non-blocking) and remembers each
    /// one's kernel timestamp by sequence number: how a signal's receiver learns when its
    /// event happened. Stops at the first error (`EAGAIN`: nothing more).
    pub fn take_stamps(&self, stamps: &mut std::collections::HashMap<u32, u64>) {
        while let Ok(recs) = self.read_records(64) {
            if recs.is_empty() {
                break;
            }
            stamps.extend(
                recs.iter()
                    .map(|r| (r.seq & crate::uapi::SEQ_MASK, r.timestamp_ns)),
            );
        }
    }

    /// The raw file (e.g. to poll it).
    pub fn file(&self) -> &File {
        &self.file
    }
}
