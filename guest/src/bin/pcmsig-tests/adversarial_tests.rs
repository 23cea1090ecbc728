//! Adversarial guest tests: wrong sizes, passed file descriptors, and a seeded random storm of
//! ioctls from several threads while the stream runs.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};
use pcmsig::sys::{self, SignalSet};
use pcmsig::{uapi, Device, EventKind as K, Signal};

use crate::common::*;
use crate::runner::{diag, Context, Test, TestResult};
use crate::{ensure, ensure_eq};

pub fn tests() -> Vec<Test> {
    crate::tests![
        ioctls_with_wrong_sizes_are_unknown,
        fd_passed_with_scm_rights_registers_the_receiver,
        unprivileged_opener_cannot_reach_root_through_a_passed_fd,
        user_namespace_root_opener_cannot_reach_other_users,
        random_ioctl_storm_keeps_the_books,
    ]
}

fn ioctls_with_wrong_sizes_are_unknown() -> TestResult {
    let dev = Device::open().ctx("open")?;
    let mut buf = [0u8; 4096];
    let arg = buf.as_mut_ptr() as usize;
    for (name, req) in POINTER_IOCTLS {
        let size = (req >> 16) & 0x3fff;
        for wrong in [0, 1, size - 1, size + 1, size * 2, 0x3fff] {
            let bad = (req & !(0x3fff << 16)) | ((wrong & 0x3fff) << 16);
            if bad == req {
                continue;
            }
            // SAFETY: `buf` is valid and large enough for any size the kernel could use.
            let r = unsafe { dev.raw_ioctl(bad, arg) };
            expect_errno(r, libc::ENOTTY, &format!("{name} with size {wrong}"))?;
        }
        // Direction bits wrong: a read ioctl declared as write and the reverse.
        let flipped = req ^ (3 << 30);
        // SAFETY: as above.
        let r = unsafe { dev.raw_ioctl(flipped, arg) };
        expect_errno(r, libc::ENOTTY, &format!("{name} with flipped direction"))?;
    }
    Ok(())
}

fn send_fd(sock: RawFd, fd: RawFd) -> TestResult {
    let fds = [fd];
    let iov = [IoSlice::new(b"f")];
    socket::sendmsg::<UnixAddr>(
        sock,
        &iov,
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .ctx("sendmsg SCM_RIGHTS")?;
    Ok(())
}

fn recv_fd(sock: RawFd) -> Result<OwnedFd, String> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = socket::recvmsg::<UnixAddr>(sock, &mut iov, Some(&mut space), MsgFlags::empty())
        .ctx("recvmsg")?;
    for c in msg.cmsgs().ctx("cmsgs")? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err("no descriptor received".into())
}

fn socketpair() -> Result<(OwnedFd, OwnedFd), String> {
    socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::Stream,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .ctx("socketpair")
}

fn fd_passed_with_scm_rights_registers_the_receiver() -> TestResult {
    let (a, b) = socketpair()?;
    let dev = Device::open().ctx("open")?;
    let pid = spawn_child(|| {
        drop(a.try_clone());
        let fd = recv_fd(b.as_raw_fd())?;
        let sig = rt(0);
        sig.block().ctx("block")?;
        // The received descriptor is the same open file; register this process's thread.
        let file = std::fs::File::from(fd);
        let reg = uapi::Register {
            signo: sig.number() as u32,
            flags: 0,
        };
        // SAFETY: valid fd and argument.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), uapi::IOC_REGISTER as libc::Ioctl, &reg) };
        ensure!(
            r == 0,
            "register through the passed fd: {}",
            std::io::Error::last_os_error()
        );
        nix::unistd::write(&b, b"r").ctx("ready")?;
        expect_kinds(sig, &[K::Started])?;
        Ok(())
    })?;
    send_fd(a.as_raw_fd(), dev.file().as_raw_fd())?;
    let mut buf = [0u8; 1];
    nix::unistd::read(&a, &mut buf).ctx("waiting for the receiver")?;
    dev.inject(K::Started).ctx("inject")?;
    ensure_eq!(wait_child(pid)?, 0, "the receiving process got the event");
    let s = dev.stats().ctx("stats")?;
    ensure_eq!((s.file.fired, s.file.delivered), (1, 1));
    Ok(())
}

fn unprivileged_opener_cannot_reach_root_through_a_passed_fd() -> TestResult {
    chmod_device_666()?;
    let (a, b) = socketpair()?;
    let code = in_child(|| {
        setresuid(1000, 1000, 1000)?; // for good: no way back to root
        let dev = Device::open().ctx("open as uid 1000")?;
        send_fd(b.as_raw_fd(), dev.file().as_raw_fd())
    })?;
    ensure_eq!(code, 0, "child");
    let fd = recv_fd(a.as_raw_fd())?;
    let file = std::fs::File::from(fd);
    rt(0).block().ctx("block")?;
    let reg = uapi::Register {
        signo: rt(0).number() as u32,
        flags: 0,
    };
    // SAFETY: valid fd and argument.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), uapi::IOC_REGISTER as libc::Ioctl, &reg) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    ensure_eq!(
        (r, errno),
        (-1, Some(libc::EPERM)),
        "root registering on a uid-1000 file"
    );
    Ok(())
}

/// Registers the calling thread, as `uid`, on `file`; returns the ioctl's errno (0: success).
fn register_as(uid: u32, file: &std::fs::File) -> Result<i32, String> {
    let code = in_child(|| {
        setresuid(uid, uid, uid)?;
        rt(0).block().ctx("block")?;
        let reg = uapi::Register {
            signo: rt(0).number() as u32,
            flags: 0,
        };
        // SAFETY: valid fd and argument.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), uapi::IOC_REGISTER as libc::Ioctl, &reg) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        // The errno travels as the exit code.
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(if r == 0 { 0 } else { errno }) };
    })?;
    Ok(code)
}

fn user_namespace_root_opener_cannot_reach_other_users() -> TestResult {
    // Root of its own user namespace holds every capability there, CAP_KILL included, but none
    // over uid 2000 outside it: a file it opened must not let it signal uid 2000's threads.
    chmod_device_666()?;
    let (a, b) = socketpair()?;
    let code = in_child(|| {
        enter_user_namespace_as(1000)?;
        ensure!(
            nix::unistd::geteuid().is_root(),
            "root in the new user namespace"
        );
        let dev = Device::open().ctx("open as user-namespace root")?;
        send_fd(b.as_raw_fd(), dev.file().as_raw_fd())
    })?;
    ensure_eq!(code, 0, "user-namespace child");
    let file = std::fs::File::from(recv_fd(a.as_raw_fd())?);
    ensure_eq!(
        register_as(2000, &file)?,
        libc::EPERM,
        "uid 2000 on the user-namespace root's file"
    );
    ensure_eq!(
        register_as(1000, &file)?,
        0,
        "uid 1000 (the opener's own uid) on that file"
    );
    Ok(())
}

const THREADS: u64 = 4;
const ITERATIONS: u64 = 1500;

/// Signal numbers the storm registers: invalid, glibc's, standard and real-time.
const STORM_SIGNALS: [u32; 11] = [0, 9, 10, 12, 31, 34, 35, 40, 64, 65, 1000];
/// Period lengths the storm configures: both sides of each limit.
const STORM_PERIODS: [u32; 10] = [
    0,
    1,
    99,
    100,
    500,
    1000,
    10_000,
    10_000_000,
    10_000_001,
    u32::MAX,
];

/// One storm thread's state: its random source, its open files, the signals it blocks.
struct Storm {
    rng: Rng,
    files: Vec<std::sync::Arc<Device>>,
    all: Vec<i32>,
}

impl Storm {
    /// One of the open files, at random.
    fn pick(&mut self) -> Option<std::sync::Arc<Device>> {
        (!self.files.is_empty())
            .then(|| self.files[self.rng.below(self.files.len() as u64) as usize].clone())
    }

    /// Operation `op` (0 to 10) with random arguments on a random file.
    fn step(&mut self, op: u64) -> pcmsig::Result<()> {
        match op {
            0 if self.files.len() < 3 => {
                Device::open().map(|d| self.files.push(std::sync::Arc::new(d)))
            }
            1 => {
                if !self.files.is_empty() {
                    let k = self.rng.below(self.files.len() as u64) as usize;
                    self.files.swap_remove(k);
                }
                Ok(())
            }
            2 => self.pick().map_or(Ok(()), |f| {
                let sig = STORM_SIGNALS[self.rng.below(STORM_SIGNALS.len() as u64) as usize];
                let flags = u32::from(self.rng.below(8) == 0);
                let valid = flags == 0 && matches!(sig, 10 | 12 | 34..=64);
                einval_unless(valid, f.register_raw(sig, flags), "register")
            }),
            3 => self.pick().map_or(Ok(()), |f| f.unregister()),
            4 => self.pick().map_or(Ok(()), |f| {
                let period = STORM_PERIODS[self.rng.below(STORM_PERIODS.len() as u64) as usize];
                let valid = (uapi::PERIOD_US_MIN..=uapi::PERIOD_US_MAX).contains(&period);
                einval_unless(
                    valid,
                    f.configure(period, self.rng.below(5) as u32),
                    "configure",
                )
            }),
            5 => self.pick().map_or(Ok(()), |f| {
                let cmd = self.rng.below(8) as u32;
                einval_unless((1..=6).contains(&cmd), f.trigger_raw(cmd), "trigger")
            }),
            6 => self.pick().map_or(Ok(()), |f| {
                let kind = self.rng.below(10) as u32;
                einval_unless((1..=8).contains(&kind), f.inject_raw(kind), "inject")
            }),
            7 => self.pick().map_or(Ok(()), |f| {
                let s = f.stats()?;
                if s.file.fired != s.file.delivered + s.file.dropped() {
                    return Err(pcmsig::Error::Io(std::io::Error::other(format!(
                        "books broken: {:?}",
                        s.file
                    ))));
                }
                Ok(())
            }),
            8 => {
                // A listener that registers and exits at once.
                if let Some(d) = self.pick() {
                    let _ = std::thread::spawn(move || {
                        let _ = SignalSet::of(&[34]).block();
                        d.register(Signal::from_number(34))
                    })
                    .join();
                }
                Ok(())
            }
            9 => {
                let set = SignalSet::of(&self.all);
                while let Ok(Some(_)) = sys::sigtimedwait(&set, Duration::ZERO) {}
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A call with an invalid argument must fail with `EINVAL` (whatever the stream's state); a
/// success or another errno becomes an error the storm reports. Valid calls pass through.
fn einval_unless(valid: bool, r: pcmsig::Result<()>, what: &str) -> pcmsig::Result<()> {
    if valid {
        return r;
    }
    match r {
        Err(e) if e.errno() == Some(libc::EINVAL) => Err(e),
        other => Err(pcmsig::Error::Io(std::io::Error::other(format!(
            "{what} with an invalid argument: {other:?}, expected EINVAL"
        )))),
    }
}

/// One storm thread; returns how many operations succeeded and failed as expected.
fn storm(seed: u64, t: u64) -> Result<(u64, u64), String> {
    let all: Vec<i32> = [libc::SIGUSR1, libc::SIGUSR2]
        .into_iter()
        .chain(32..=64)
        .collect();
    SignalSet::of(&all).block().ctx("block")?;
    let mut st = Storm {
        rng: Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
        files: Vec::new(),
        all,
    };
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut progress = crate::runner::Progress::new("storm iterations of thread 0");
    for i in 0..ITERATIONS {
        if t == 0 {
            progress.step(i as usize, ITERATIONS as usize);
        }
        let op = st.rng.below(11);
        match st.step(op) {
            Ok(()) => ok += 1,
            Err(e) => match e.errno() {
                Some(libc::EINVAL | libc::EBADFD | libc::EBUSY | libc::ENOENT | libc::EAGAIN) => {
                    refused += 1
                }
                _ => {
                    return Err(format!(
                        "thread {t}, iteration {i}, op {op}: unexpected error {e}"
                    ))
                }
            },
        }
    }
    Ok((ok, refused))
}

fn random_ioctl_storm_keeps_the_books() -> TestResult {
    let seed = seed();
    diag(&format!(
        "seed {seed} (rerun with cargo xtask test --seed {seed}), {THREADS} threads x {ITERATIONS} operations"
    ));
    // A running stream underneath, kept open by this file.
    let base = Device::open().ctx("open")?;
    base.configure(500, 0).ctx("configure")?;
    base.trigger(pcmsig::Trigger::Start).ctx("start")?;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| std::thread::spawn(move || storm(seed, t)))
        .collect();
    let (mut ok, mut refused) = (0, 0);
    for h in handles {
        let (o, r) = h
            .join()
            .map_err(|_| "storm thread panicked".to_string())??;
        ok += o;
        refused += r;
    }
    let s = base.stats().ctx("stats")?;
    ensure!(
        s.total.fired == s.total.delivered + s.total.dropped(),
        "fired {} != delivered {} + dropped {}",
        s.total.fired,
        s.total.delivered,
        s.total.dropped()
    );
    diag(&format!(
        "{ok} calls succeeded, {refused} refused with the expected errno; {} events, totals {:?}",
        s.events, s.total
    ));
    Ok(())
}
