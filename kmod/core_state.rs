// SPDX-License-Identifier: GPL-2.0-only

//! The attach state: the region (a helper's pinned pages, or an ivshmem BAR
//! served from outside the VM), both rings, the in-flight table, the
//! data-area allocator; attach and detach; reaping completions; timeouts.
//!
//! Locking: one spinlock (interrupts off, [`Global`]) protects [`State`].
//! Data is copied into and out of the data area *outside* the lock; a
//! per-region user count keeps the mapping alive meanwhile, and detach waits
//! for it to drop to zero before it unmaps anything. Callbacks run outside the
//! lock.

use crate::api::{DoneFn, OutView, Outcome, SubmitError};
use crate::kcommon::abi::{
    cq_flag, helper_state, sq_flag, Cqe, Extent, RegionHeader, RingIndices, Sqe, Status,
    HEADER_SIZE, PAGE_SIZE,
};
use crate::kcommon::alloc::{bitmap_words, ExtentAllocator};
use crate::kcommon::ioctl::{AttachArgs, KGPU_IOC_ATTACH, KGPU_IOC_DOORBELL, KGPU_IOC_DRAIN};
use crate::kcommon::region::{reset_rings, Geometry, HeaderSnapshot, RegionError};
use crate::kcommon::ring::{must_wake, Consumer, Producer, RingError};
use crate::kcommon::slots::{Inflight, SlotEntry, Ticket};
use crate::{shim, BufWriter, Counter, Global};
use core::ffi::{c_uint, c_ulong, c_void};
use core::fmt::Write;
use core::ptr::addr_of;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::alloc::{flags::GFP_KERNEL, KBox, KVVec};
use kernel::prelude::*;
use kernel::time::Ktime;

/// `poll()` readiness reported to the shim (`KGPU_POLL_IN`, `KGPU_POLL_HUP` in
/// kgpu_shim.h).
pub(crate) const POLL_IN: u32 = 1;
/// The helper should close: draining finished, or the rings are unusable.
pub(crate) const POLL_HUP: u32 = 2;

/// Data-area allocation unit: 4 KiB.
const CHUNK_SHIFT: u32 = 12;
/// Completions handled per lock round trip.
const REAP_BATCH: usize = 32;
/// How often the completion poll looks for timed-out requests.
const TIMEOUT_SCAN_NS: i64 = 50_000_000;

fn errno(e: i32) -> Error {
    Error::from_errno(-e)
}
const EPROTO: i32 = 71;
const EBADMSG: i32 = 74;
const ENOTCONN: i32 = 107;
const EOPNOTSUPP: i32 = 95;

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// Not in use.
    Free,
    /// Extents allocated, data being copied in; not on the ring yet.
    Reserved,
    /// On the ring or with the helper; the callback has not run.
    Pending,
    /// A reaper owns it and is running the callback.
    Completing,
    /// Given up on (timeout, broken helper): its extents stay allocated until
    /// the helper completes it or detaches, but no callback will run.
    Zombie,
}

#[derive(Clone, Copy)]
struct SlotCtx {
    state: SlotState,
    done: Option<DoneFn>,
    ctx: usize,
    key: Extent,
    input: Extent,
    output: Extent,
    aux: Extent,
    in_place: bool,
    service: u16,
    bytes_in: u64,
    submitted_ns: i64,
}

impl SlotCtx {
    const FREE: SlotCtx = SlotCtx {
        state: SlotState::Free,
        done: None,
        ctx: 0,
        key: Extent::EMPTY,
        input: Extent::EMPTY,
        output: Extent::EMPTY,
        aux: Extent::EMPTY,
        in_place: false,
        service: 0,
        bytes_in: 0,
        submitted_ns: 0,
    };
}

/// Where a region's memory comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// A helper's pages, pinned through `/dev/kgpu` (`KGPU_IOC_ATTACH`).
    Device,
    /// An ivshmem PCI device's BAR2, mapped for as long as the device is
    /// bound; the helper runs outside this machine (see `ivshmem.rs`).
    Ivshmem,
}

impl Transport {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Transport::Device => "device",
            Transport::Ivshmem => "ivshmem",
        }
    }
}

/// The memory behind an attached region, and how to let go of it.
enum Source {
    /// Pinned user pages and their kernel mapping (undone at detach).
    Pinned { pages: *mut c_void, npages: usize },
    /// A mapping owned by the ivshmem driver (nothing to undo at detach).
    Shared,
}

struct Attached {
    epoch: u64,
    source: Source,
    base: *mut u8,
    geom: Geometry,
    sq: Producer<Sqe>,
    cq: Consumer<Cqe>,
    slots: Inflight<KVVec<SlotEntry>>,
    ctx: KVVec<SlotCtx>,
    alloc: ExtentAllocator<KVVec<u64>>,
    /// Submission entries promised to reservations not yet committed.
    sq_reserved: u32,
    /// No new submissions (drain ioctl, detach, broken rings).
    draining: bool,
    /// Detach in progress: no new users.
    detaching: bool,
    /// The helper broke the ring protocol: nothing more is read from it.
    broken: bool,
    /// Copies and callbacks in progress outside the lock.
    users: AtomicU32,
    pid: i32,
    last_scan_ns: i64,
    /// Last heartbeat value seen, and when it last changed.
    hb_last: u64,
    hb_changed_ns: i64,
    /// The heartbeat stopped for `heartbeat_timeout_ms`: requests go to the
    /// CPU until it moves again.
    stalled: bool,
}

impl Attached {
    fn header(&self) -> *const RegionHeader {
        self.base.cast::<RegionHeader>()
    }

    fn sq_flags(&self) -> &AtomicU32 {
        // SAFETY: the header lies in the first page of the pinned mapping,
        // which lives as long as `self`; only the atomic field is referenced.
        unsafe { &*addr_of!((*self.header()).sq_flags) }
    }

    fn sq_doorbell(&self) -> &AtomicU32 {
        // SAFETY: as in `sq_flags`.
        unsafe { &*addr_of!((*self.header()).sq_doorbell) }
    }

    fn heartbeat(&self) -> u64 {
        // SAFETY: as in `sq_flags`.
        unsafe { &*addr_of!((*self.header()).heartbeat) }.load(Ordering::Relaxed)
    }

    /// True while the helper's heartbeat has stopped; notices at once when
    /// it moves again.
    fn is_stalled(&mut self) -> bool {
        if self.stalled && self.heartbeat() != self.hb_last {
            self.stalled = false;
            self.hb_last = self.heartbeat();
            self.hb_changed_ns = now_ns();
            pr_info!("helper {}: heartbeat resumed\n", self.pid);
        }
        self.stalled
    }

    /// Whether requests may go to the helper now. Over ivshmem the helper's
    /// state must say it serves this session: a new helper rewriting the
    /// header (state detached, then offered) gets nothing until attached.
    fn takes_requests(&mut self) -> bool {
        let st = self.helper_state();
        let serving = match self.transport() {
            Transport::Device => st != helper_state::DRAINING,
            Transport::Ivshmem => st == helper_state::ATTACHED,
        };
        !self.draining && serving && !self.is_stalled()
    }

    fn transport(&self) -> Transport {
        match self.source {
            Source::Pinned { .. } => Transport::Device,
            Source::Shared => Transport::Ivshmem,
        }
    }

    /// What the helper says about itself (a hint: it only stops submissions).
    fn helper_state(&self) -> u32 {
        // SAFETY: as in `sq_flags`.
        unsafe { &*addr_of!((*self.header()).helper_state) }.load(Ordering::Acquire)
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: `data_off` comes from the validated geometry and lies inside
        // the mapping.
        unsafe { self.base.add(self.geom.data_off as usize) }
    }

    fn free_extents(&mut self, c: &SlotCtx) {
        let out = if c.in_place { Extent::EMPTY } else { c.output };
        for e in [c.key, c.input, out, c.aux] {
            // The extents are the kernel's own; a failure is a bug here.
            if self.alloc.free(e).is_err() {
                pr_err!(
                    "internal error: freeing extent {}+{} failed\n",
                    e.off,
                    e.len
                );
            }
        }
    }

    /// Frees a slot and its extents.
    fn retire(&mut self, t: Ticket) {
        let c = self.ctx[t.slot as usize];
        self.free_extents(&c);
        self.ctx[t.slot as usize] = SlotCtx::FREE;
        self.slots.release(t);
    }

    fn put_user(&self) {
        if self.users.fetch_sub(1, Ordering::AcqRel) == 1 && self.detaching {
            shim::wake_waiters();
        }
    }
}

struct State {
    open: bool,
    attaching: bool,
    epoch: u64,
    att: Option<KBox<Attached>>,
}

static STATE: Global<State> = Global::new(State {
    open: false,
    attaching: false,
    epoch: 0,
    att: None,
});

// ---- counters -------------------------------------------------------------

/// Per-service counters.
pub(crate) struct SvcStats {
    pub(crate) submitted: Counter,
    pub(crate) ok: Counter,
    pub(crate) errors: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) nohelper: Counter,
    pub(crate) busy: Counter,
    pub(crate) detach_failed: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) latency_ns: Counter,
    /// Completed `Ok` by a GPU backend (the `Cqe`'s backend field), and
    /// their input bytes.
    pub(crate) gpu_ok: Counter,
    pub(crate) gpu_bytes: Counter,
}

impl SvcStats {
    const fn new() -> Self {
        SvcStats {
            submitted: Counter::new(),
            ok: Counter::new(),
            errors: Counter::new(),
            timeouts: Counter::new(),
            nohelper: Counter::new(),
            busy: Counter::new(),
            detach_failed: Counter::new(),
            bytes_in: Counter::new(),
            bytes_out: Counter::new(),
            latency_ns: Counter::new(),
            gpu_ok: Counter::new(),
            gpu_bytes: Counter::new(),
        }
    }
}

/// Indexed by service id (0: unknown ids).
static SVC: [SvcStats; 4] = [
    SvcStats::new(),
    SvcStats::new(),
    SvcStats::new(),
    SvcStats::new(),
];

pub(crate) fn svc(service: u16) -> &'static SvcStats {
    &SVC[if (service as usize) < SVC.len() {
        service as usize
    } else {
        0
    }]
}

static ATTACHES: Counter = Counter::new();
static ATTACH_REFUSED: Counter = Counter::new();
static DETACHES: Counter = Counter::new();
static OPEN_REFUSED: Counter = Counter::new();
static BAD_COMPLETIONS: Counter = Counter::new();
static RING_CORRUPT: Counter = Counter::new();
static DOORBELLS: Counter = Counter::new();
static POLLS: Counter = Counter::new();
static LATE_COMPLETIONS: Counter = Counter::new();
static STALLS: Counter = Counter::new();

fn now_ns() -> i64 {
    Ktime::ktime_get().to_ns()
}

// ---- open / release / poll --------------------------------------------------

pub(crate) fn open() -> Result {
    STATE.with(|s| {
        if s.open {
            OPEN_REFUSED.add(1);
            Err(EBUSY)
        } else {
            s.open = true;
            Ok(())
        }
    })
}

pub(crate) fn release() {
    detach(Transport::Device, "its file was closed");
    STATE.with(|s| s.open = false);
}

pub(crate) fn poll_mask() -> u32 {
    STATE.with(|s| {
        let Some(a) = s.att.as_mut().filter(|a| a.transport() == Transport::Device) else {
            return 0;
        };
        if a.broken {
            return POLL_HUP;
        }
        let mut m = 0;
        match a.sq.space() {
            Ok(free) if free < a.sq.entries() => m |= POLL_IN,
            Ok(_) => {}
            Err(_) => {
                mark_broken(a, "submission ring head out of range");
                return POLL_HUP;
            }
        }
        if a.draining && a.slots.in_flight() == 0 {
            m |= POLL_HUP;
        }
        m
    })
}

pub(crate) fn assert_detached() {
    if STATE.with(|s| s.att.is_some()) {
        pr_err!("unloading with a region attached\n");
    }
}

/// True when a helper takes requests and is awake (it has not announced,
/// through `sq_flags.NEED_WAKEUP`, that it sleeps until woken).
pub(crate) fn helper_awake() -> bool {
    STATE.with(|s| match s.att.as_mut() {
        Some(a) => {
            a.takes_requests() && a.sq_flags().load(Ordering::Acquire) & sq_flag::NEED_WAKEUP == 0
        }
        None => false,
    })
}

/// True when a helper is attached and takes requests.
pub(crate) fn attached() -> bool {
    STATE.with(|s| s.att.as_mut().is_some_and(|a| a.takes_requests()))
}

// ---- ioctl ------------------------------------------------------------------

pub(crate) fn ioctl(cmd: c_uint, arg: c_ulong) -> Result<i64> {
    match cmd {
        KGPU_IOC_ATTACH => attach(arg).map(|()| 0),
        KGPU_IOC_DOORBELL => {
            if !STATE.with(|s| {
                s.att
                    .as_ref()
                    .is_some_and(|a| a.transport() == Transport::Device)
            }) {
                return Err(errno(ENOTCONN));
            }
            DOORBELLS.add(1);
            reap();
            Ok(0)
        }
        KGPU_IOC_DRAIN => {
            let ok = STATE.with(|s| match s.att.as_mut() {
                Some(a) if a.transport() == Transport::Device => {
                    a.draining = true;
                    true
                }
                _ => false,
            });
            if !ok {
                return Err(errno(ENOTCONN));
            }
            shim::wake_helper();
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}

fn refuse(why: &str, e: Error) -> Result {
    ATTACH_REFUSED.add(1);
    pr_warn!("attach refused: {}\n", why);
    Err(e)
}

fn attach(arg: c_ulong) -> Result {
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
        crate::policy::helper_attached();
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
fn detach(transport: Transport, why: &str) {
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

// ---- submission -------------------------------------------------------------

/// Space reserved for a request: a slot and its extents, data not yet copied.
pub(crate) struct Reservation {
    pub(crate) epoch: u64,
    pub(crate) ticket: Ticket,
    data: *mut u8,
    pub(crate) key: Extent,
    pub(crate) input: Extent,
    pub(crate) output: Extent,
    pub(crate) aux: Extent,
}

impl Reservation {
    /// Copies `src` into the data area at `e`.
    ///
    /// # Safety
    /// The reservation must be live (reserved, not yet committed or aborted)
    /// and `e` one of its extents with `src.len() <= e.len`.
    pub(crate) unsafe fn fill(&self, e: Extent, src: &[u8]) {
        // SAFETY: the extent came from the allocator over this data area and
        // the mapping is held alive by the reservation's user count; the
        // helper may read it concurrently, which it may not rely on anyway.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(e.off as usize), src.len())
        };
    }

    /// Gathers `e.len` bytes of a scatterlist (from `skip` on) into `e`;
    /// returns the bytes copied.
    ///
    /// # Safety
    /// As for [`Reservation::fill`]; `sgl` must be a valid scatterlist.
    pub(crate) unsafe fn fill_from_sg(&self, e: Extent, sgl: *mut c_void, skip: usize) -> usize {
        // SAFETY: the destination is the reservation's extent (see `fill`);
        // the caller vouches for the list.
        unsafe {
            shim::kgpu_shim_sg_to_buf(sgl, skip, self.data.add(e.off as usize), e.len as usize)
        }
    }
}

/// Sizes of the parts of a request.
pub(crate) struct Sizes {
    pub(crate) service: u16,
    pub(crate) key: usize,
    pub(crate) input: usize,
    pub(crate) output: usize,
    pub(crate) aux: usize,
    pub(crate) in_place: bool,
}

pub(crate) fn reserve(z: &Sizes) -> core::result::Result<Reservation, SubmitError> {
    let st = svc(z.service);
    let r = STATE.with(|s| {
        let Some(a) = s.att.as_mut() else {
            return Err(SubmitError::NoHelper);
        };
        if !a.takes_requests() {
            return Err(SubmitError::NoHelper);
        }
        match a.sq.space() {
            Ok(free) if free > a.sq_reserved => {}
            Ok(_) => return Err(SubmitError::Busy),
            Err(_) => {
                mark_broken(a, "submission ring head out of range");
                return Err(SubmitError::NoHelper);
            }
        }
        let out_len = if z.in_place { 0 } else { z.output };
        // What can never fit is not "busy".
        let chunk = a.alloc.chunk_size();
        let need: u64 = [z.key, z.input, out_len, z.aux]
            .iter()
            .map(|&l| (l as u64).div_ceil(chunk) * chunk)
            .sum();
        if need > a.alloc.total_bytes() {
            return Err(SubmitError::TooLarge);
        }
        let t = a.slots.alloc(z.output as u64).ok_or(SubmitError::Busy)?;
        let mut ext = [Extent::EMPTY; 4];
        for (i, len) in [z.key, z.input, out_len, z.aux].into_iter().enumerate() {
            match a.alloc.alloc(len as u64) {
                Some(e) => ext[i] = e,
                None => {
                    for e in &ext[..i] {
                        let _ = a.alloc.free(*e);
                    }
                    a.slots.release(t);
                    return Err(SubmitError::Busy);
                }
            }
        }
        if z.in_place {
            ext[2] = ext[1];
        }
        a.ctx[t.slot as usize] = SlotCtx {
            state: SlotState::Reserved,
            key: ext[0],
            input: ext[1],
            output: ext[2],
            aux: ext[3],
            in_place: z.in_place,
            service: z.service,
            bytes_in: z.input as u64,
            ..SlotCtx::FREE
        };
        a.sq_reserved += 1;
        a.users.fetch_add(1, Ordering::AcqRel);
        Ok(Reservation {
            epoch: a.epoch,
            ticket: t,
            data: a.data(),
            key: ext[0],
            input: ext[1],
            output: ext[2],
            aux: ext[3],
        })
    });
    match &r {
        Err(SubmitError::NoHelper) => st.nohelper.add(1),
        Err(SubmitError::Busy) => st.busy.add(1),
        _ => {}
    }
    r
}

/// Gives a reservation back without submitting it.
pub(crate) fn abort(r: Reservation) {
    STATE.with(|s| {
        if let Some(a) = s.att.as_mut() {
            if a.epoch == r.epoch {
                a.retire(r.ticket);
                a.sq_reserved -= 1;
                a.put_user();
            }
        }
    });
}

/// The fields of a submission record that are not extents.
pub(crate) struct Record {
    pub(crate) op: u16,
    pub(crate) key_tag: u64,
    pub(crate) unit: u32,
    pub(crate) count: u32,
    pub(crate) params: [u8; crate::kcommon::abi::PARAMS_LEN],
}

/// Publishes a filled reservation; `done(ctx, ..)` runs exactly once unless
/// this returns an error.
pub(crate) fn commit(
    r: Reservation,
    service: u16,
    rec: &Record,
    done: DoneFn,
    ctx: usize,
) -> core::result::Result<(), SubmitError> {
    let res = STATE.with(|s| {
        let Some(a) = s.att.as_mut() else {
            return Err(SubmitError::NoHelper);
        };
        if a.epoch != r.epoch {
            return Err(SubmitError::NoHelper);
        }
        a.sq_reserved -= 1;
        let sqe = Sqe {
            slot: r.ticket.slot,
            gen: r.ticket.gen,
            service,
            op: rec.op,
            flags: 0,
            key_tag: rec.key_tag,
            key: r.key,
            input: r.input,
            output: r.output,
            aux: r.aux,
            unit: rec.unit,
            count: rec.count,
            params: rec.params,
        };
        let staged = if a.draining {
            Err(SubmitError::NoHelper)
        } else {
            match a.sq.push(sqe) {
                Ok(()) => Ok(()),
                Err(RingError::Full) | Err(RingError::Corrupt { .. }) => {
                    // Space was reserved: only a consumer moving its head
                    // backwards gets here.
                    mark_broken(a, "submission ring head moved backwards");
                    Err(SubmitError::NoHelper)
                }
            }
        };
        match staged {
            Ok(()) => {
                let c = &mut a.ctx[r.ticket.slot as usize];
                c.state = SlotState::Pending;
                c.done = Some(done);
                c.ctx = ctx;
                c.submitted_ns = now_ns();
                if must_wake(a.sq_flags(), sq_flag::NEED_WAKEUP) {
                    a.sq_doorbell().fetch_add(1, Ordering::Release);
                }
            }
            Err(_) => a.retire(r.ticket),
        }
        a.put_user();
        staged
    });
    let st = svc(service);
    match res {
        Ok(()) => {
            st.submitted.add(1);
            shim::wake_helper();
            shim::kick_poll();
        }
        Err(_) => st.nohelper.add(1),
    }
    res
}

/// Gives up on a request still waiting for the helper: its callback will not
/// run. Returns false when it is completing or completed (the callback runs
/// or ran).
pub(crate) fn cancel(epoch: u64, t: Ticket) -> bool {
    let service = STATE.with(|s| {
        let a = s.att.as_mut()?;
        if a.epoch != epoch || !a.slots.is_current(t.slot, t.gen) {
            return None;
        }
        let c = &mut a.ctx[t.slot as usize];
        if c.state != SlotState::Pending {
            return None;
        }
        c.state = SlotState::Zombie;
        Some(c.service)
    });
    match service {
        Some(sv) => {
            svc(sv).timeouts.add(1);
            true
        }
        None => false,
    }
}

fn mark_broken(a: &mut Attached, why: &str) {
    if !a.broken {
        RING_CORRUPT.add(1);
        pr_err!(
            "helper {} broke the ring protocol ({}); no more requests go to it\n",
            a.pid,
            why
        );
    }
    a.broken = true;
    a.draining = true;
}

// ---- completion -------------------------------------------------------------

struct Reaped {
    ticket: Ticket,
    done: Option<DoneFn>,
    ctx: usize,
    status: Status,
    backend: u32,
    out_ptr: *const u8,
    bytes: usize,
    service: u16,
    bytes_in: u64,
    latency_ns: u64,
}

const NO_REAPED: Option<Reaped> = None;

/// Takes completions off the ring, validates them and runs the callbacks.
pub(crate) fn reap() {
    loop {
        // Callbacks run with preemption off (see `shim::NoPreempt`), from the
        // moment their slots are marked until they are released.
        let _np = shim::NoPreempt::new();
        let mut batch: [Option<Reaped>; REAP_BATCH] = [NO_REAPED; REAP_BATCH];
        let mut n = 0usize;
        let mut more = false;
        let mut dead: [Option<(DoneFn, usize, u16)>; REAP_BATCH] = [None; REAP_BATCH];
        let mut ndead = 0usize;
        let epoch = STATE.with(|s| {
            let a = s.att.as_mut()?;
            if a.detaching {
                return None;
            }
            if !a.broken {
                while n < REAP_BATCH {
                    let cqe = match a.cq.take() {
                        Ok(Some(c)) => c,
                        Ok(None) => break,
                        Err(_) => {
                            mark_broken(a, "completion ring tail out of range");
                            break;
                        }
                    };
                    let c = match a.slots.complete(&cqe) {
                        Ok(c) => c,
                        Err(e) => {
                            if BAD_COMPLETIONS.get() < 10 {
                                pr_warn!(
                                    "ignoring completion slot {} gen {}: {}\n",
                                    cqe.slot,
                                    cqe.gen,
                                    e.as_str()
                                );
                            }
                            BAD_COMPLETIONS.add(1);
                            continue;
                        }
                    };
                    let t = Ticket {
                        slot: c.slot,
                        gen: c.gen,
                    };
                    let sc = a.ctx[c.slot as usize];
                    match sc.state {
                        SlotState::Pending => {
                            a.ctx[c.slot as usize].state = SlotState::Completing;
                            let ok = c.status == Status::Ok;
                            batch[n] = Some(Reaped {
                                ticket: t,
                                done: sc.done,
                                ctx: sc.ctx,
                                status: c.status,
                                backend: c.backend,
                                // SAFETY: the output extent is the kernel's
                                // own allocation inside the data area.
                                out_ptr: unsafe { a.data().add(sc.output.off as usize) },
                                bytes: if ok { c.bytes as usize } else { 0 },
                                service: sc.service,
                                bytes_in: sc.bytes_in,
                                latency_ns: (now_ns() - sc.submitted_ns).max(0) as u64,
                            });
                            n += 1;
                        }
                        SlotState::Zombie => {
                            LATE_COMPLETIONS.add(1);
                            a.retire(t);
                        }
                        _ => {
                            // Reserved (never published) or already completing:
                            // the helper invented or duplicated it.
                            BAD_COMPLETIONS.add(1);
                        }
                    }
                }
                a.cq.release();
                more = n == REAP_BATCH;
            }
            if a.broken {
                // Fail everything still waiting; their extents stay allocated
                // (the helper may still write them) until detach.
                for i in 0..a.ctx.len() {
                    if ndead == REAP_BATCH {
                        more = true;
                        break;
                    }
                    let c = &mut a.ctx[i];
                    if c.state == SlotState::Pending {
                        c.state = SlotState::Zombie;
                        if let Some(d) = c.done {
                            dead[ndead] = Some((d, c.ctx, c.service));
                            ndead += 1;
                        }
                    }
                }
            }
            if n > 0 {
                a.users.fetch_add(1, Ordering::AcqRel);
            }
            Some(a.epoch)
        });
        let Some(epoch) = epoch else { return };

        for d in dead.iter().take(ndead).flatten() {
            svc(d.2).errors.add(1);
            let o = Outcome {
                status: Status::BackendError,
                backend: 0,
                out: OutView::empty(),
            };
            (d.0)(d.1, &o);
        }
        if n == 0 {
            if more {
                continue;
            }
            return;
        }
        for r in batch.iter().take(n).flatten() {
            let st = svc(r.service);
            if r.status == Status::Ok {
                st.ok.add(1);
                st.bytes_in.add(r.bytes_in);
                st.bytes_out.add(r.bytes as u64);
                if r.backend == crate::kcommon::abi::backend::GPU {
                    st.gpu_ok.add(1);
                    st.gpu_bytes.add(r.bytes_in);
                }
            } else {
                st.errors.add(1);
            }
            st.latency_ns.add(r.latency_ns);
            if let Some(done) = r.done {
                let o = Outcome {
                    status: r.status,
                    backend: r.backend,
                    // SAFETY: `bytes` was checked against the output extent's
                    // length by the in-flight table; the mapping is kept alive
                    // by the user count taken above.
                    out: unsafe { OutView::new(r.out_ptr, r.bytes) },
                };
                done(r.ctx, &o);
            }
        }
        STATE.with(|s| {
            if let Some(a) = s.att.as_mut() {
                if a.epoch == epoch {
                    for r in batch.iter().take(n).flatten() {
                        a.retire(r.ticket);
                    }
                    a.put_user();
                }
            }
        });
        if !more {
            return;
        }
    }
}

/// Reaps completions, then fails what waited too long (and notices a
/// stopped heartbeat).
pub(crate) fn service() {
    reap();
    expire();
}

/// Fails requests that waited longer than `request_timeout_ms`.
fn expire() {
    let limit_ms = shim::request_timeout_ms();
    let limit_ns = if limit_ms == 0 {
        i64::MAX
    } else {
        i64::from(limit_ms) * 1_000_000
    };
    let hb_ms = shim::heartbeat_timeout_ms();
    let now = now_ns();
    loop {
        // Preemption off from marking to callback (see `shim::NoPreempt`).
        let _np = shim::NoPreempt::new();
        let mut dead: [Option<(DoneFn, usize, u16)>; REAP_BATCH] = [None; REAP_BATCH];
        let mut ndead = 0usize;
        let mut more = false;
        STATE.with(|s| {
            let Some(a) = s.att.as_mut() else { return };
            if a.detaching || now - a.last_scan_ns < TIMEOUT_SCAN_NS {
                return;
            }
            // The heartbeat: a helper that stopped beating gets nothing more
            // and what it holds fails now rather than at the request timeout.
            let hb = a.heartbeat();
            if hb != a.hb_last {
                let _ = a.is_stalled();
                a.hb_last = hb;
                a.hb_changed_ns = now;
            } else if hb_ms != 0
                && !a.stalled
                && now - a.hb_changed_ns > i64::from(hb_ms) * 1_000_000
            {
                a.stalled = true;
                STALLS.add(1);
                pr_warn!(
                    "helper {}: no heartbeat for {} ms; its requests fail and new ones go to the CPU\n",
                    a.pid,
                    hb_ms
                );
            }
            let stalled = a.stalled;
            for i in 0..a.ctx.len() {
                let c = &mut a.ctx[i];
                if c.state == SlotState::Pending && (stalled || now - c.submitted_ns > limit_ns) {
                    if ndead == REAP_BATCH {
                        more = true;
                        break;
                    }
                    c.state = SlotState::Zombie;
                    if let Some(d) = c.done {
                        dead[ndead] = Some((d, c.ctx, c.service));
                        ndead += 1;
                    }
                }
            }
            if !more {
                a.last_scan_ns = now;
            }
        });
        for d in dead.iter().take(ndead).flatten() {
            svc(d.2).timeouts.add(1);
            let o = Outcome {
                status: Status::TimedOut,
                backend: 0,
                out: OutView::empty(),
            };
            (d.0)(d.1, &o);
        }
        if !more {
            return;
        }
    }
}

/// The bounded kernel-side poll: reaps, expires, and re-arms itself while
/// requests are in flight.
pub(crate) fn poll_work() {
    POLLS.add(1);
    service();
    let again = STATE
        .with(|s| matches!(s.att.as_ref(), Some(a) if !a.detaching && a.slots.in_flight() > 0));
    if again {
        shim::kick_poll();
    }
}

// ---- statistics -------------------------------------------------------------

pub(crate) fn write_stats(w: &mut BufWriter<'_>) {
    struct Snap {
        attached: bool,
        transport: &'static str,
        pid: i32,
        epoch: u64,
        region: u64,
        sq: u32,
        cq: u32,
        data: u64,
        data_free: u64,
        in_flight: u32,
        draining: bool,
        broken: bool,
        stalled: bool,
    }
    let s = STATE.with(|s| match s.att.as_ref() {
        Some(a) => Snap {
            attached: true,
            transport: a.transport().name(),
            pid: a.pid,
            epoch: a.epoch,
            region: a.geom.region_size,
            sq: a.geom.sq_entries,
            cq: a.geom.cq_entries,
            data: a.geom.data_size,
            data_free: a.alloc.free_bytes(),
            in_flight: a.slots.in_flight(),
            draining: a.draining,
            broken: a.broken,
            stalled: a.stalled,
        },
        None => Snap {
            attached: false,
            transport: "none",
            pid: 0,
            epoch: s.epoch,
            region: 0,
            sq: 0,
            cq: 0,
            data: 0,
            data_free: 0,
            in_flight: 0,
            draining: false,
            broken: false,
            stalled: false,
        },
    });
    let _ = writeln!(
        w,
        "state: {}",
        if !s.attached {
            "detached"
        } else if s.broken {
            "broken"
        } else if s.draining {
            "draining"
        } else if s.stalled {
            "stalled"
        } else {
            "attached"
        }
    );
    let _ = writeln!(
        w,
        "transport: {}\ntransport_param: {}\nivshmem_bar_bytes: {}",
        s.transport,
        shim::transport_mode().name(),
        crate::ivshmem::bar_bytes()
    );
    let _ = writeln!(w, "helper_pid: {}\nattach_epoch: {}", s.pid, s.epoch);
    let _ = writeln!(
        w,
        "region_bytes: {}\nsq_entries: {}\ncq_entries: {}\ndata_bytes: {}\ndata_free_bytes: {}\nin_flight: {}",
        s.region, s.sq, s.cq, s.data, s.data_free, s.in_flight
    );
    let _ = writeln!(
        w,
        "attaches: {}\nattach_refused: {}\ndetaches: {}\nopen_refused: {}\nbad_completions: {}\nlate_completions: {}\nstalls: {}\nring_corrupt: {}\ndoorbells: {}\npolls: {}",
        ATTACHES.get(),
        ATTACH_REFUSED.get(),
        DETACHES.get(),
        OPEN_REFUSED.get(),
        BAD_COMPLETIONS.get(),
        LATE_COMPLETIONS.get(),
        STALLS.get(),
        RING_CORRUPT.get(),
        DOORBELLS.get(),
        POLLS.get()
    );
    let _ = writeln!(
        w,
        "service submitted ok errors timeouts nohelper busy detach_failed bytes_in bytes_out avg_latency_ns gpu_ok gpu_bytes"
    );
    for (id, name) in [(1u16, "aes"), (2, "raid6"), (3, "echo"), (0, "other")] {
        let st = svc(id);
        let done = st.ok.get() + st.errors.get();
        let _ = writeln!(
            w,
            "{} {} {} {} {} {} {} {} {} {} {} {} {}",
            name,
            st.submitted.get(),
            st.ok.get(),
            st.errors.get(),
            st.timeouts.get(),
            st.nohelper.get(),
            st.busy.get(),
            st.detach_failed.get(),
            st.bytes_in.get(),
            st.bytes_out.get(),
            st.latency_ns.get().checked_div(done).unwrap_or(0),
            st.gpu_ok.get(),
            st.gpu_bytes.get()
        );
    }
}
