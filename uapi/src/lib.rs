//! The pcmsig user-space ABI: ioctl numbers, structs, the `si_int` event encoding.
//!
//! The definitions live in `uapi.rs`, which the kernel module compiles too, so the module,
//! this crate and the generated C header (`uapi/pcmsig.h`) cannot drift apart.
//!
//! ```
//! use pcmsig_uapi::{decode, encode, EventKind};
//! let v = encode(EventKind::PeriodElapsed, 17);
//! assert_eq!(decode(v), Some((EventKind::PeriodElapsed, 17)));
//! ```
#![no_std]

#[allow(clippy::module_inception)]
mod uapi;
pub use uapi::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_the_words_the_cli_and_docs_print() {
        let states: [&str; 5] = core::array::from_fn(|i| State::ALL[i].name());
        assert_eq!(
            states,
            ["setup", "prepared", "running", "paused", "draining"]
        );
        let kinds: [&str; 8] = core::array::from_fn(|i| EventKind::ALL[i].name());
        assert_eq!(
            kinds,
            ["prepared", "started", "stopped", "paused", "resumed", "period", "xrun", "draining"]
        );
        let points: [&str; 9] = core::array::from_fn(|i| DelayPoint::ALL[i].name());
        assert_eq!(
            points,
            [
                "delivery_holds_listener",
                "delivery_after_xrun",
                "detach_device_before_timer_stop",
                "last_close_before_reset",
                "timer_stall",
                "read_before_put_back",
                "delivery_before_send",
                "device_interrupt_late",
                "open_allocating"
            ]
        );
    }

    #[test]
    fn each_delay_point_has_its_own_bit_its_number() {
        for (i, p) in DelayPoint::ALL.iter().enumerate() {
            assert_eq!(*p as usize, i);
            assert_eq!(p.bit(), 1u32 << i, "{}", p.name());
        }
    }

    #[test]
    fn the_ioctls_leave_one_pending_slot_for_the_timers_xrun() {
        assert_eq!(PENDING_LEN - PENDING_IOCTL_MAX, 1);
    }

    #[test]
    fn dropped_sums_every_kind_of_drop() {
        let s = ListenerStats {
            dropped_queue_full: 1,
            dropped_exited: 20,
            dropped_execd: 300,
            dropped_perm: 4000,
            ..ListenerStats::default()
        };
        assert_eq!(s.dropped(), 4321);
    }

    #[test]
    fn signals_carry_si_queue() {
        // SI_QUEUE in include/uapi/asm-generic/siginfo.h: the only code whose si_int signalfd
        // passes on (SI_USER and SI_KERNEL hide it).
        assert_eq!(SI_CODE, -1);
    }

    #[test]
    fn ioctl_numbers_match_the_linux_macros() {
        // _IOW(0xBB, 1, 8 bytes) computed by hand: dir 1 << 30 | 8 << 16 | 0xBB << 8 | 1.
        assert_eq!(IOC_REGISTER, 0x4008_BB01);
        assert_eq!(IOC_UNREGISTER, 0x0000_BB02);
        assert_eq!(IOC_TRIGGER, 0x4004_BB04);
        assert_eq!(IOC_GET_STATS >> 30, 2, "GET_STATS reads");
    }

    #[test]
    fn encoding_round_trips_every_kind_and_wraps_the_sequence() {
        for kind in EventKind::ALL {
            for seq in [0, 1, 17, SEQ_MASK] {
                let v = encode(kind, seq);
                assert!(v > 0);
                assert_eq!(decode(v), Some((kind, seq)));
            }
            assert_eq!(decode(encode(kind, SEQ_MASK + 5)), Some((kind, 4)));
        }
        assert_eq!(decode(0), None);
        assert_eq!(
            decode(1234),
            None,
            "the blog's payload is not a pcmsig value"
        );
        assert_eq!(decode(-1), None);
    }

    #[test]
    fn allowed_signals_are_usr1_usr2_and_the_rt_range_without_glibcs_two() {
        // 10, 12, then 34..=64: never 32 (SIGCANCEL) or 33 (SIGSETXID), glibc's own.
        let allowed: [u32; 33] = core::array::from_fn(|i| match i {
            0 => 10,
            1 => 12,
            n => 32 + n as u32,
        });
        assert!(!signal_allowed(32) && !signal_allowed(33) && signal_allowed(34));
        for s in 0..100 {
            assert_eq!(signal_allowed(s), allowed.contains(&s), "signal {s}");
        }
    }

    #[test]
    fn from_u32_rejects_out_of_range() {
        assert_eq!(Trigger::from_u32(0), None);
        assert_eq!(Trigger::from_u32(7), None);
        assert_eq!(Trigger::from_u32(1), Some(Trigger::Start));
        assert_eq!(EventKind::from_u32(9), None);
        assert_eq!(State::from_u32(6), Some(State::Stopped));
        assert_eq!(State::from_u32(7), None);
    }
}
