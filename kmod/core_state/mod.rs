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
//!
//! Here: the state and the kernel's view of an attached region, open,
//! release, poll and the ioctls. Attach and detach are in `attach`,
//! submission in `submit`, completions and timeouts in `reap`, the counters
//! in `stats`.

mod attach;
mod reap;
mod stats;
mod submit;

use self::attach::{attach, detach};
use self::reap::mark_broken;
use self::stats::{DOORBELLS, OPEN_REFUSED};
use crate::api_types::DoneFn;
use crate::kcommon::abi::{helper_state, sq_flag, Cqe, Extent, RegionHeader, Sqe};
use crate::kcommon::alloc::ExtentAllocator;
use crate::kcommon::ioctl::{KGPU_IOC_ATTACH, KGPU_IOC_DOORBELL, KGPU_IOC_DRAIN};
use crate::kcommon::region::Geometry;
use crate::kcommon::ring::{Consumer, Producer};
use crate::kcommon::slots::{Inflight, SlotEntry, Ticket};
use crate::{shim, Global};
use core::ffi::{c_uint, c_ulong, c_void};
use core::ptr::addr_of;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::alloc::{KBox, KVVec};
use kernel::prelude::*;
use kernel::time::Ktime;

pub(crate) use self::attach::{
    attach_shared, attached_transport, detach_shared, shared_health, Offer,
};
pub(crate) use self::reap::{poll_work, reap, service};
pub(crate) use self::stats::write_stats;
pub(crate) use self::submit::{abort, cancel, commit, reserve, Record, Sizes};

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
