// SPDX-License-Identifier: GPL-2.0
//! QEMU's `edu` PCI device (1234:11e8) as the period source of every stream.
//!
//! When the device is bound, a stream's period timer no longer emits period events itself: it
//! makes the device raise its interrupt (a write to register 0x60) and counts the periods it is
//! owed; the interrupt handler reads and acknowledges the status (0x24, then 0x64) and each
//! stream emits the periods it is owed, with source `Device`, into its own delivery path. One
//! interrupt may serve several streams (or several periods of one): no stream ever takes
//! another's periods. Unbinding the device stops every running stream. The driver drives one
//! device at a time (`OnlyDevice`): a second one's probe fails with `EBUSY`.
//!
//! The kernel crate's PCI and IRQ registrations differ between 7.2 and 7.3 (lifetimes, the
//! handler's arguments, who frees the vectors): `series::IrqParts` holds each series' form, the
//! rest is shared. One lifetime is extended by hand there and only there, on each series: on
//! 7.3 the IRQ registration's borrow of the vectors, which the driver data owns too (a
//! self-reference); on 7.2 the BAR's, since 7.2's handlers must be `'static`.

use core::sync::atomic::{AtomicBool, Ordering};

use kernel::{
    device::Core,
    io::Io,
    irq::{self, IrqReturn},
    pci,
    prelude::*,
    sync::Arc,
};

use crate::{stream::DeviceHook, users::Streams};

const EDU_VENDOR: u16 = 0x1234;
const EDU_DEVICE: u16 = 0x11e8;
/// PCI class of `edu` ("unclassified", subclass 0xff), the only such devices in our VMs.
const EDU_CLASS: u32 = 0x00ff00;
const BAR_SIZE: usize = 0x100;
const REG_IRQ_STATUS: usize = 0x24;
const REG_IRQ_RAISE: usize = 0x60;
const REG_IRQ_ACK: usize = 0x64;
/// The status bit a period raises.
const PERIOD_BIT: u32 = 1;

/// Whether an edu device is bound to this driver (see [`OnlyDevice`]).
static BOUND: AtomicBool = AtomicBool::new(false);

/// The one device the driver drives, claimed from the start of its probe until its data is
/// dropped: a second device's probe fails with `EBUSY`. Every stream has one period source, so
/// a second device would replace the first one's hook in every stream, and unbinding either
/// would detach both (review finding 7).
struct OnlyDevice;

impl OnlyDevice {
    fn claim() -> Result<Self> {
        BOUND
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| OnlyDevice)
            .map_err(|_| EBUSY)
    }
}

impl Drop for OnlyDevice {
    fn drop(&mut self) {
        BOUND.store(false, Ordering::Release);
    }
}

/// The interrupt handler, which owns the BAR mapping.
#[pin_data]
pub(crate) struct EduIrq<'bound> {
    bar: pci::Bar<'bound, BAR_SIZE>,
    streams: Arc<Streams>,
}

impl<'bound> EduIrq<'bound> {
    /// The BAR, as a reference: 7.3's `Io` methods take `&Bar` by value, 7.2's borrow the
    /// mapping the BAR derefs to; a reference serves both without a borrow written out.
    fn bar(&self) -> &pci::Bar<'bound, BAR_SIZE> {
        &self.bar
    }

    /// The interrupt handler's work, on every series.
    fn on_interrupt(&self) -> IrqReturn {
        let status = self.bar().read32(REG_IRQ_STATUS);
        if status == 0 {
            // Ours all the same: the vector is an MSI, which no other device shares. Two raises
            // before the handler ran send two messages, and the first run acknowledged both.
            // Answering "not handled" would make the IRQ core count it as spurious and, after
            // enough of them, disable the vector.
            return IrqReturn::Handled;
        }
        self.bar().write32(status, REG_IRQ_ACK);
        // The test hook `device_interrupt_late` leaves the periods owed: its release takes them.
        if status & PERIOD_BIT != 0
            && !crate::delay::defer_at(crate::uapi::DelayPoint::DeviceInterruptLate)
        {
            self.streams.device_interrupt();
        }
        IrqReturn::Handled
    }
}

#[cfg(not(pcmsig_kernel_7_2))]
impl irq::Handler for EduIrq<'_> {
    fn handle(&self) -> IrqReturn {
        self.on_interrupt()
    }
}

// 7.2's handlers are `'static` and get the device: see `series::IrqParts`.
#[cfg_attr(test, mutants::skip)] // 7.3 only mutates (compat.rs).
#[cfg(pcmsig_kernel_7_2)]
impl irq::Handler for EduIrq<'static> {
    fn handle(&self, _dev: &kernel::device::Device<kernel::device::Bound>) -> IrqReturn {
        self.on_interrupt()
    }
}

/// Raises the period interrupt; the stream's timer calls it through a [`DeviceHook`].
///
/// # Safety
///
/// `ctx` must point to the live `EduIrq` of a bound device (the hook is removed, under the
/// stream's lock, before the device data is dropped).
unsafe fn raise(ctx: *const ()) {
    // SAFETY: Guaranteed by the caller; the lifetime is not used beyond this call.
    let edu = unsafe { &*ctx.cast::<EduIrq<'static>>() };
    edu.bar().write32(PERIOD_BIT, REG_IRQ_RAISE);
}

/// Data of a bound `edu` device. Fields drop in order: the IRQ registration (free_irq waits for
/// a running handler, then the BAR is unmapped) and, on 7.3, its vectors; then the device is
/// disabled, and only then may another device bind. (On 7.2 devres frees the vectors after the
/// driver data, so after the disable, which only needs MSI to be enabled to turn it off.)
#[pin_data]
pub(crate) struct EduData<'bound> {
    #[pin]
    irq: series::IrqParts<'bound>,
    streams: Arc<Streams>,
    _enabled: Enabled,
    _only: OnlyDevice,
}

/// The device's enable (memory space) and bus mastering, undone on drop, after everything that
/// uses the device: the kernel crate enables a device but offers no way back.
struct Enabled(*mut kernel::bindings::pci_dev);

// SAFETY: The pointer is only passed to the PCI core's functions, which may run on any thread.
unsafe impl Send for Enabled {}
// SAFETY: `Enabled` has no `&self` methods.
unsafe impl Sync for Enabled {}

impl Enabled {
    /// Enables `pdev`'s memory space and bus mastering.
    fn new(pdev: &pci::Device<Core<'_>>) -> Result<Self> {
        pdev.enable_device_mem()?;
        pdev.set_master();
        // `pci::Device` is a transparent wrapper of `struct pci_dev` (the kernel crate says so
        // where it implements `AsBusDevice`), so the address is the C device's.
        Ok(Self(
            core::ptr::from_ref(pdev)
                .cast::<kernel::bindings::pci_dev>()
                .cast_mut(),
        ))
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        // SAFETY: The device was enabled in `new` and is still bound: the driver data holding
        // this is dropped when it unbinds, before the `pci_dev` can go. The IRQ registration
        // (and on 7.3 the vectors), dropped before this field, no longer use it; 7.2's
        // vectors, freed by devres after this, need only MSI enabled to turn it off.
        unsafe {
            kernel::bindings::pci_clear_master(self.0);
            kernel::bindings::pci_disable_device(self.0);
        }
    }
}

/// The `edu` PCI driver.
pub(crate) struct EduDriver;

#[cfg(not(pcmsig_kernel_7_2))]
kernel::pci_device_table!(
    EDU_TABLE,
    <EduDriver as pci::Driver>::IdInfo,
    [(pci::DeviceId::from_class(EDU_CLASS, 0xffffff), ())]
);
// 7.2's macro also names the table's alias for modpost.
#[cfg(pcmsig_kernel_7_2)]
kernel::pci_device_table!(
    EDU_TABLE,
    MODULE_EDU_TABLE,
    <EduDriver as pci::Driver>::IdInfo,
    [(pci::DeviceId::from_class(EDU_CLASS, 0xffffff), ())]
);

impl pci::Driver for EduDriver {
    type IdInfo = ();
    type Data<'bound> = EduData<'bound>;

    const ID_TABLE: pci::IdTable<Self::IdInfo> = &EDU_TABLE;

    fn probe<'bound>(
        pdev: &'bound pci::Device<Core<'_>>,
        _info: series::IdInfo<'bound, Self::IdInfo>,
    ) -> impl PinInit<Self::Data<'bound>, Error> + 'bound {
        ::pin_init::pin_init_scope(move || {
            let config = pdev.config_space();
            if config.read16(0) != EDU_VENDOR || config.read16(2) != EDU_DEVICE {
                return Err(ENODEV);
            }
            let streams = Streams::get().ok_or(ENODEV)?;
            let only = OnlyDevice::claim().inspect_err(|_| {
                dev_info!(
                    pdev,
                    "pcmsig drives one edu device, and one is bound: not this one\n"
                );
            })?;
            let enabled = Enabled::new(pdev)?;
            let bar = pdev.iomap_region_sized::<BAR_SIZE>(0, c"pcmsig-edu")?;
            let irq = series::IrqParts::new(pdev, bar, streams.clone())?;
            Ok(try_pin_init!(&this in EduData {
                irq <- irq,
                streams,
                _enabled: enabled,
                _only: only,
                _: {
                    // SAFETY: `this` points to the `EduData` being initialised; `irq` is
                    // initialised, pinned, and outlives the hook (removed in `unbind`).
                    let edu = unsafe { (*this.as_ptr()).irq.handler() };
                    let hook = DeviceHook::new(core::ptr::from_ref(edu).cast(), raise);
                    // SAFETY: `this` is valid as above; `edu` (the hook's context) stays valid
                    // and `raise` callable until `detach_device` in `unbind`, which runs before
                    // the IRQ registration holding `edu` is dropped: `attach_device`'s contract.
                    unsafe { (*this.as_ptr()).streams.attach_device(hook) };
                },
            }))
        })
    }

    fn unbind<'bound>(_pdev: &'bound pci::Device<Core<'_>>, this: Pin<&Self::Data<'bound>>) {
        this.streams.detach_device();
    }
}

/// What the two series' PCI and IRQ abstractions do differently.
#[cfg(not(pcmsig_kernel_7_2))]
mod series {
    use super::*;

    /// The ID-table entry `probe` gets: 7.3 passes none for a device bound by hand.
    pub(super) type IdInfo<'a, T> = Option<&'a T>;

    /// The device's MSI vector and the handler's registration on it. `irq::Registration`
    /// borrows the `IrqVectorRegistration` for `'bound`, and the driver data must own both,
    /// which safe Rust cannot express (a self-reference): the vector registration is boxed (its
    /// address never changes) and declared after the IRQ registration, so it is dropped after
    /// its borrower, and both go when the device unbinds, within `'bound`.
    #[pin_data]
    pub(super) struct IrqParts<'bound> {
        #[pin]
        irq: irq::Registration<'bound, EduIrq<'bound>>,
        vectors: KBox<pci::IrqVectorRegistration<'bound>>,
    }

    impl<'bound> IrqParts<'bound> {
        /// Allocates the vector and registers the handler, which owns `bar`.
        pub(super) fn new(
            pdev: &'bound pci::Device<Core<'_>>,
            bar: pci::Bar<'bound, BAR_SIZE>,
            streams: Arc<Streams>,
        ) -> Result<impl PinInit<Self, Error> + 'bound> {
            let vectors = KBox::new(
                // MSI only: the device's interrupt is never shared with another device's INTx.
                pdev.alloc_irq_vectors(1, 1, pci::IrqTypes::default().with(pci::IrqType::Msi))?,
                GFP_KERNEL,
            )?;
            // SAFETY: The registration lives in a box that never moves and is dropped after the
            // IRQ registration that borrows it (field order of `IrqParts`), which is dropped
            // when the device unbinds, i.e. within 'bound.
            let vref: &'bound pci::IrqVectorRegistration<'bound> =
                unsafe { &*core::ptr::from_ref::<pci::IrqVectorRegistration<'bound>>(&*vectors) };
            let request: irq::IrqRequest<'bound> = vref.index(0)?.into();
            let handler = try_pin_init!(EduIrq { bar, streams }? Error);
            Ok(try_pin_init!(IrqParts {
                // SAFETY: `IrqParts` is dropped (and with it the registration) before the
                // device goes away (it is part of the driver data); it is never leaked.
                irq <- unsafe {
                    irq::Registration::new(request, irq::Flags::SHARED, c"pcmsig-edu", handler)
                },
                vectors,
            }))
        }

        /// The registered handler.
        pub(super) fn handler(&self) -> &EduIrq<'bound> {
            self.irq.handler()
        }
    }
}

/// What the two series' PCI and IRQ abstractions do differently.
// Not mutated by `cargo xtask mutants` (7.3 only, where this is compiled out; see compat.rs).
#[cfg_attr(test, mutants::skip)]
#[cfg(pcmsig_kernel_7_2)]
mod series {
    use super::*;
    use core::marker::PhantomData;

    /// The ID-table entry `probe` gets: 7.2 always passes one.
    pub(super) type IdInfo<'a, T> = &'a T;

    /// The handler's registration on the device's MSI vector. 7.2 frees the vectors itself
    /// (devres) when the device unbinds, and its handlers are `'static`: the handler's BAR has
    /// its lifetime erased, see `new`.
    #[pin_data]
    pub(super) struct IrqParts<'bound> {
        #[pin]
        irq: irq::Registration<EduIrq<'static>>,
        _bound: PhantomData<&'bound ()>,
    }

    impl<'bound> IrqParts<'bound> {
        /// Allocates the vector and registers the handler, which owns `bar`.
        pub(super) fn new(
            pdev: &'bound pci::Device<kernel::device::Bound>,
            bar: pci::Bar<'bound, BAR_SIZE>,
            streams: Arc<Streams>,
        ) -> Result<impl PinInit<Self, Error> + 'bound> {
            // MSI only: the device's interrupt is never shared with another device's INTx.
            let vector = *pdev
                .alloc_irq_vectors(1, 1, pci::IrqTypes::default().with(pci::IrqType::Msi))?
                .start();
            // SAFETY: Only the lifetime changes (same type, same layout). The BAR is dropped
            // with the handler, inside the registration, which is part of the driver data and
            // so dropped when the device unbinds, within 'bound: it is never used after.
            let bar = unsafe {
                core::mem::transmute::<pci::Bar<'bound, BAR_SIZE>, pci::Bar<'static, BAR_SIZE>>(bar)
            };
            let handler = try_pin_init!(EduIrq { bar, streams }? Error);
            Ok(try_pin_init!(IrqParts {
                irq <- pdev.request_irq(vector, irq::Flags::SHARED, c"pcmsig-edu", handler),
                _bound: PhantomData,
            }))
        }

        /// The registered handler.
        pub(super) fn handler(&self) -> &EduIrq<'static> {
            self.irq.handler()
        }
    }
}
