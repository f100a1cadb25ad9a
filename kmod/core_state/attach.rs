// SPDX-License-Identifier: GPL-2.0-only

//! Attach and detach: a helper's pinned region or a shared one.

use super::stats::{svc, ATTACHES, ATTACH_REFUSED, DETACHES};
use super::{
    errno, now_ns, Attached, SlotCtx, SlotState, Source, Transport, CHUNK_SHIFT, EBADMSG,
    EOPNOTSUPP, EPROTO, STATE,
};
use crate::api_types::{OutView, Outcome};
use crate::kcommon::abi::{
    cq_flag, helper_state, Cqe, RegionHeader, RingIndices, Sqe, Status, HEADER_SIZE, PAGE_SIZE,
};
use crate::kcommon::alloc::{bitmap_words, ExtentAllocator};
use crate::kcommon::ioctl::AttachArgs;
use crate::kcommon::region::{reset_rings, HeaderSnapshot, RegionError};
use crate::kcommon::ring::{Consumer, Producer};
use crate::kcommon::slots::{Inflight, SlotEntry};
use crate::shim;
use core::ffi::{c_ulong, c_void};
use core::ptr::addr_of;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::alloc::{flags::GFP_KERNEL, KBox, KVVec};
use kernel::prelude::*;

fn refuse(why: &str, e: Error) -> Result {
    ATTACH_REFUSED.add(1);
    pr_warn!("attach refused: {}\n", why);
    Err(e)
}

pub(super) fn attach(arg: c_ulong) -> Result {
    let mut raw = [0u8; core::mem::size_of::<AttachArgs>()];
    // SAFETY: `raw` is a local buffer of exactly the copied length.
    if unsafe { shim::kgpu_shim_copy_from_user(raw.as_mut_ptr().cast(), arg, raw.len() as c_ulong) }
        != 0
    {
        return refuse("argument not readable", EFAULT);
    }
    let u32_at = |o: usize| u32::from_ne_bytes([raw[o], raw[o + 1], raw[o + 2], raw[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
    let args = AttachArgs {
        version: u32_at(0),
        flags: u32_at(4),
        addr: u64_at(8),
        len: u64_at(16),
    };
    if args.version != crate::kcommon::abi::ABI_VERSION {
        pr_warn!(
            "helper speaks ABI {}, this module ABI {}\n",
            args.version,
            crate::kcommon::abi::ABI_VERSION
        );
        return refuse("ABI version mismatch", errno(EPROTO));
    }
    if args.flags != 0 {
        return refuse("reserved flags set", EINVAL);
    }
    if shim::transport_mode() == shim::TransportMode::Ivshmem {
        return refuse(
            "transport=ivshmem: regions come from the ivshmem device only",
            errno(EOPNOTSUPP),
        );
    }
    if args.addr % PAGE_SIZE != 0 || args.len % PAGE_SIZE != 0 {
        return refuse("address or length not page aligned", EINVAL);
    }
    if args.len < 4 * u64::from(HEADER_SIZE) {
        return refuse("region too small", EINVAL);
    }
    if args.len > shim::max_region_bytes() {
        return refuse("region larger than max_region_mb", EFBIG);
    }
    if args.addr.checked_add(args.len).is_none() {
        return refuse("region wraps the address space", EFAULT);
    }

    if !begin_attach() {
        return refuse("a region is already attached", EBUSY);
    }
    install(build(&args))
}

/// Pins and checks the region, and builds the kernel's view of it.
fn build(args: &AttachArgs) -> Result<KBox<Attached>> {
    let npages = (args.len / PAGE_SIZE) as usize;
    let mut pages: *mut c_void = core::ptr::null_mut();
    let mut vaddr: *mut c_void = core::ptr::null_mut();
    // SAFETY: the out-pointers are locals; the shim pins the calling process's
    // pages (this is the helper's ioctl) and maps them.
    let ret = unsafe {
        shim::kgpu_shim_pin_map(
            args.addr as c_ulong,
            npages as c_ulong,
            &mut pages,
            &mut vaddr,
        )
    };
    if ret != 0 {
        pr_warn!(
            "attach refused: pinning {} pages failed ({})\n",
            npages,
            ret
        );
        return Err(Error::from_errno(ret));
    }
    let pid = kernel::current!().group_leader().pid();
    // SAFETY: `vaddr` maps `args.len` bytes of pinned pages that nothing
    // else in the kernel uses; the helper does not touch the rings before
    // the ioctl returns.
    let r = unsafe {
        view(
            vaddr.cast::<u8>(),
            args.len,
            Source::Pinned { pages, npages },
            pid,
        )
    };
    if r.is_err() {
        // SAFETY: undoes the successful pin_map above; the view was not built.
        unsafe { shim::kgpu_shim_unpin_unmap(pages, npages as c_ulong, vaddr) };
    }
    r
}

fn header_error(e: RegionError) -> Error {
    match e {
        RegionError::BadVersion { .. } => errno(EPROTO),
        _ => errno(EBADMSG),
    }
}

/// Checks the header of the `len` bytes at `base` and builds the kernel's
/// view of the region: its own copy of the geometry, the ring ends, the
/// in-flight table and the allocator. Resets both rings.
///
/// # Safety
/// `base` must map `len` bytes (at least four pages) that stay mapped until
/// `source` is let go of at detach, and the helper must not touch the rings
/// until it is told the region is attached.
unsafe fn view(base: *mut u8, len: u64, source: Source, pid: i32) -> Result<KBox<Attached>> {
    // SAFETY: the mapping is at least 4 pages, more than one header.
    let snap = unsafe { HeaderSnapshot::read(base.cast::<RegionHeader>()) };
    let geom = match snap.validate(len) {
        Ok(g) => g,
        Err(e) => {
            pr_warn!("attach refused: bad region header: {}\n", e.as_str());
            return Err(header_error(e));
        }
    };

    let slots = KVVec::from_elem(SlotEntry::default(), geom.cq_entries as usize, GFP_KERNEL)?;
    let ctx = KVVec::from_elem(SlotCtx::FREE, geom.cq_entries as usize, GFP_KERNEL)?;
    let bits = KVVec::from_elem(0u64, bitmap_words(geom.data_size, CHUNK_SHIFT), GFP_KERNEL)?;

    // SAFETY: `base` maps `geom.region_size` bytes (validated equal to
    // `len`); the caller keeps the helper off the rings for now.
    unsafe { reset_rings(base, &geom) };
    // SAFETY: offsets come from the validated geometry, inside the mapping,
    // which lives as long as the `Attached` that owns the ends; the kernel is
    // the only producer of the SQ and the only consumer of the CQ.
    let (sq, cq) = unsafe {
        (
            Producer::new(
                base.add(geom.sq_off as usize).cast::<RingIndices>(),
                base.add(geom.sq_records() as usize).cast::<Sqe>(),
                geom.sq_entries,
            ),
            Consumer::new(
                base.add(geom.cq_off as usize).cast::<RingIndices>(),
                base.add(geom.cq_records() as usize).cast::<Cqe>(),
                geom.cq_entries,
            ),
        )
    };
    let a = Attached {
        epoch: 0,
        source,
        base,
        geom,
        sq,
        cq,
        slots: Inflight::new(slots),
        ctx,
        alloc: ExtentAllocator::new(bits, geom.data_size, CHUNK_SHIFT),
        sq_reserved: 0,
        draining: false,
        detaching: false,
        broken: false,
        users: AtomicU32::new(0),
        pid,
        last_scan_ns: now_ns(),
        hb_last: 0,
        hb_changed_ns: now_ns(),
        stalled: false,
    };
    // `helper_state` and `helper_pid` belong to the helper (it claims the
    // region after this ioctl); the kernel asks for a doorbell after every
    // batch of completions.
    // SAFETY: atomic field of the mapped header.
    unsafe { (*addr_of!((*a.header()).cq_flags)).store(cq_flag::NEED_WAKEUP, Ordering::Release) };
    Ok(KBox::new(a, GFP_KERNEL)?)
}

/// Installs a built view as the attached region (the caller set
/// `attaching`).
fn install(r: Result<KBox<Attached>>) -> Result {
    let installed = STATE.with(|s| {
        s.attaching = false;
        match r {
            Ok(mut a) => {
                s.epoch += 1;
                a.epoch = s.epoch;
                pr_info!(
                    "helper {} attached ({}): region {} KiB, sq {}, cq {}, data {} KiB\n",
                    a.pid,
                    a.transport().name(),
                    a.geom.region_size >> 10,
                    a.geom.sq_entries,
                    a.geom.cq_entries,
                    a.geom.data_size >> 10
                );
                // SAFETY: the header was validated for this attach and stays
                // mapped with `a`; its figures are plain numbers.
                unsafe { crate::policy::take_figures(a.header()) };
                s.att = Some(a);
                Ok(())
            }
            Err(e) => Err(e),
        }
    });
    if installed.is_ok() {
        ATTACHES.add(1);
        crate::service::helper_attached();
    } else {
        ATTACH_REFUSED.add(1);
    }
    installed
}

/// Claims the right to attach: false when a region is attached or being
/// attached.
fn begin_attach() -> bool {
    STATE.with(|s| {
        if s.att.is_some() || s.attaching {
            false
        } else {
            s.attaching = true;
            true
        }
    })
}

/// What became of an offered shared region.
pub(crate) enum Offer {
    /// Attached: the helper was told so.
    Attached,
    /// Another region is attached or being attached: try again later.
    Busy,
    /// The header was refused (logged, counted); the helper was told so.
    Refused,
    /// The helper withdrew its offer while it was being checked.
    Withdrawn,
}

/// Attaches the region a helper outside this machine offered in the `len`
/// bytes at `base` (header state `OFFERED`): the same header checks as for
/// a pinned region, then `OFFERED -> ATTACHED` in the header.
///
/// # Safety
/// `base` must map `len` bytes that stay mapped until this region is
/// detached ([`detach_shared`]) and no other region uses that memory.
pub(crate) unsafe fn attach_shared(base: *mut u8, len: u64) -> Offer {
    if !begin_attach() {
        return Offer::Busy;
    }
    let hdr = base.cast::<RegionHeader>();
    // SAFETY: atomic fields of the mapped header (the caller's contract).
    let (state, pid) = unsafe {
        (
            &*addr_of!((*hdr).helper_state),
            (*addr_of!((*hdr).helper_pid)).load(Ordering::Relaxed),
        )
    };
    // SAFETY: the caller's contract; the helper waits for ATTACHED before
    // it touches the rings.
    let r = unsafe { view(base, len, Source::Shared, pid as i32) };
    let r = match r {
        Ok(a) => {
            // Told only now, with the rings reset: from here on the helper
            // serves them.
            match state.compare_exchange(
                helper_state::OFFERED,
                helper_state::ATTACHED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => Ok(a),
                Err(_) => {
                    STATE.with(|s| s.attaching = false);
                    return Offer::Withdrawn;
                }
            }
        }
        Err(e) => {
            let _ = state.compare_exchange(
                helper_state::OFFERED,
                helper_state::REFUSED,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            Err(e)
        }
    };
    match install(r) {
        Ok(()) => Offer::Attached,
        Err(_) => Offer::Refused,
    }
}

/// The attached region's transport, if any.
pub(crate) fn attached_transport() -> Option<Transport> {
    STATE.with(|s| s.att.as_ref().map(|a| a.transport()))
}

/// Whether an attached shared region has lost its helper, and why: the
/// helper left or a new one rewrote the header (its state), its heartbeat
/// stopped, or it broke the ring protocol. Also reports requests in flight.
pub(crate) fn shared_health() -> (Option<&'static str>, u32) {
    STATE.with(|s| {
        let Some(a) = s.att.as_mut().filter(|a| a.transport() == Transport::Ivshmem) else {
            return (None, 0);
        };
        let why = match a.helper_state() {
            _ if a.broken => Some("it broke the ring protocol"),
            _ if a.stalled => Some("its heartbeat stopped"),
            helper_state::ATTACHED => None,
            helper_state::DRAINING if a.slots.in_flight() > 0 => None,
            helper_state::DRAINING => Some("it finished draining"),
            helper_state::OFFERED => Some("a new helper offers a region"),
            helper_state::DETACHED => Some("it left"),
            _ => Some("its header state is not one of a serving helper"),
        };
        (why, a.slots.in_flight())
    })
}

/// Detaches a shared region (ivshmem); `why` goes to the log.
pub(crate) fn detach_shared(why: &str) {
    detach(Transport::Ivshmem, why);
}

/// Tears the attached region down if it came through `transport`: no new
/// users, wait for the current ones, fail everything still in flight (the
/// callers redo it on the CPU), let go of the memory. For a pinned region
/// this runs when `/dev/kgpu` is closed; for a shared one when its helper
/// is gone or the device goes away.
pub(super) fn detach(transport: Transport, why: &str) {
    let users = STATE.with(|s| {
        let a = s.att.as_mut().filter(|a| a.transport() == transport)?;
        a.detaching = true;
        a.draining = true;
        Some(&a.users as *const AtomicU32)
    });
    let Some(users) = users else { return };
    // SAFETY: the `Attached` stays in `STATE` (boxed, so at a fixed address)
    // until this function takes it out below; only detach removes it, and
    // each transport detaches from one context at a time (file release;
    // the ivshmem thread, stopped before the device is unbound).
    shim::wait_zero(unsafe { &*users }, 0);
    // SAFETY: process context (file release or the ivshmem thread); the
    // poll work may run reap(), which takes users only while `detaching` is
    // false.
    unsafe { shim::kgpu_shim_cancel_poll() };
    let np = shim::NoPreempt::new();
    let Some(mut a) = STATE.with(|s| s.att.take()) else {
        return;
    };

    let mut failed = 0u64;
    for i in 0..a.ctx.len() {
        let c = a.ctx[i];
        if c.state == SlotState::Pending {
            if let Some(done) = c.done {
                let o = Outcome {
                    status: Status::NoHelper,
                    backend: 0,
                    out: OutView::empty(),
                };
                done(c.ctx, &o);
            }
            svc(c.service).detach_failed.add(1);
            failed += 1;
        }
        a.ctx[i] = SlotCtx::FREE;
    }
    drop(np);
    let hdr = a.header();
    // SAFETY: atomic fields of the still-mapped header.
    let (state, pid) = unsafe { (&*addr_of!((*hdr).helper_state), &*addr_of!((*hdr).helper_pid)) };
    match a.source {
        Source::Pinned { pages, npages } => {
            state.store(helper_state::DETACHED, Ordering::Release);
            pid.store(0, Ordering::Relaxed);
            // SAFETY: no user remains (waited above) and `a` is out of the
            // shared state, so nothing references the mapping any more.
            unsafe { shim::kgpu_shim_unpin_unmap(pages, npages as c_ulong, a.base.cast()) };
        }
        Source::Shared => {
            // The helper's session ends; a new helper's offer (or its
            // header being rewritten) is left as it is.
            for from in [helper_state::ATTACHED, helper_state::DRAINING] {
                if state
                    .compare_exchange(from, helper_state::DETACHED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    pid.store(0, Ordering::Relaxed);
                }
            }
        }
    }
    DETACHES.add(1);
    pr_info!(
        "helper {} detached ({}: {}), {} requests failed\n",
        a.pid,
        a.transport().name(),
        why,
        failed
    );
    shim::wake_waiters();
}
