// SPDX-License-Identifier: GPL-2.0-only

//! gaes's boundary with `shim_crypto.c`: the C functions gaes calls, behind
//! safe typed wrappers, and the entry points the C side calls.
//!
//! A [`Request`] is a `struct skcipher_request` the crypto API handed to
//! gaes and that is not completed yet; [`Request::complete`] consumes it. An
//! [`SgTable`] is a batch's scatterlist table, freed on drop. [`Locked`] is
//! data behind the gaes spinlock. The module parameters are plain functions.

use super::{ReqCtx, TfmCtx, MODES, SG_CAP};
use crate::api::SgList;
use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU8, Ordering};
use kernel::prelude::*;

/// `struct skcipher_request`, only handled by pointer.
#[repr(C)]
struct RawRequest {
    _opaque: [u8; 0],
}

/// `struct scatterlist`, only handled by pointer.
#[repr(C)]
struct RawSg {
    _opaque: [u8; 0],
}

/// What the shim reports of a request (`struct gaes_req_info`).
#[repr(C)]
struct RawInfo {
    src: *mut RawSg,
    dst: *mut RawSg,
    iv: *mut u8,
    len: u32,
    ivsize: u32,
}

extern "C" {
    fn kgpu_gaes_shim_register() -> c_int;
    fn kgpu_gaes_shim_unregister();
    fn kgpu_gaes_shim_param(which: c_uint) -> c_uint;
    fn kgpu_gaes_shim_req_info(req: *mut RawRequest, info: *mut RawInfo);
    fn kgpu_gaes_shim_req_ctx(req: *mut RawRequest) -> *mut c_void;
    fn kgpu_gaes_shim_fallback(req: *mut RawRequest, enc: bool) -> c_int;
    fn kgpu_gaes_shim_complete(req: *mut RawRequest, err: c_int);
    fn kgpu_gaes_shim_sg_alloc(n: c_uint) -> *mut RawSg;
    fn kgpu_gaes_shim_sg_free(sg: *mut RawSg);
    fn kgpu_gaes_shim_sg_reset(tbl: *mut RawSg, cap: c_uint);
    fn kgpu_gaes_shim_sg_count(src: *mut RawSg, len: c_uint) -> c_uint;
    fn kgpu_gaes_shim_sg_append(
        tbl: *mut RawSg,
        used: c_uint,
        cap: c_uint,
        src: *mut RawSg,
        len: c_uint,
    ) -> c_int;
    fn kgpu_gaes_shim_sg_mark_end(tbl: *mut RawSg, idx: c_uint);
    fn kgpu_gaes_shim_lock() -> c_ulong;
    fn kgpu_gaes_shim_unlock(flags: c_ulong);
    fn kgpu_gaes_shim_now_ns() -> u64;
    fn kgpu_gaes_shim_timer_arm(batch: c_uint, us: c_uint);
    fn kgpu_gaes_shim_timer_count() -> c_uint;
    fn kgpu_gaes_shim_queue_work();
    fn kgpu_gaes_shim_time_cpu(mode: c_uint, best: bool) -> u64;
    fn kgpu_gaes_shim_cpu_driver(mode: c_uint, best: bool) -> *const c_char;
}

// ---- module parameters, time ------------------------------------------------

// Parameter indices of `kgpu_gaes_shim_param` (`GAES_P_*` in kgpu_shim.h).
const P_WINDOW_US: c_uint = 0;
const P_BATCH_KB: c_uint = 1;
const P_BATCH_REQS: c_uint = 2;
const P_CPU_MAX: c_uint = 3;
const P_MAX_BATCHES: c_uint = 4;

fn param(which: c_uint) -> u32 {
    // SAFETY: reads an integer module parameter; an unknown index reads 0.
    unsafe { kgpu_gaes_shim_param(which) }
}

/// `gaes_window_us`: the longest a batch stays open (microseconds).
pub(super) fn window_us() -> u32 {
    param(P_WINDOW_US)
}

/// `gaes_batch_kb`: a batch is sent when it holds this many KiB.
pub(super) fn batch_kb() -> u32 {
    param(P_BATCH_KB)
}

/// `gaes_batch_reqs`: a batch is sent when it holds this many requests.
pub(super) fn batch_reqs() -> u32 {
    param(P_BATCH_REQS)
}

/// `gaes_cpu_max_bytes`: shorter requests run on the CPU unless they join a batch.
pub(super) fn cpu_max_bytes() -> u32 {
    param(P_CPU_MAX)
}

/// `gaes_max_batches`: batches open or in flight at once.
pub(super) fn max_batches() -> u32 {
    param(P_MAX_BATCHES)
}

/// `ktime_get_ns()`.
pub(super) fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { kgpu_gaes_shim_now_ns() }
}

// ---- registration, timers, work ---------------------------------------------

/// Registers the algorithms (their self-tests run, and are waited for,
/// here) with the window timers, the redo work queue and the debugfs file.
///
/// # Safety
/// They must not be registered: once at load, or again after [`unregister`].
pub(super) unsafe fn register() -> Result {
    // SAFETY: not registered, by the caller's contract.
    kernel::error::to_result(unsafe { kgpu_gaes_shim_register() })
}

/// Unregisters the algorithms, cancels the timers and drains the work.
///
/// # Safety
/// They must be registered by [`register`], with no tfm left (each holds a
/// module reference: at unload none exists), so no request is pending.
pub(super) unsafe fn unregister() {
    // SAFETY: by the caller's contract.
    unsafe { kgpu_gaes_shim_unregister() }
}

/// Window timers the shim has (`GAES_TIMERS` in kgpu_shim.h).
pub(super) fn timer_count() -> u32 {
    // SAFETY: no preconditions.
    unsafe { kgpu_gaes_shim_timer_count() }
}

/// (Re)arms the window timer of batch `i` for `us` microseconds; the shim
/// ignores an `i` past its timers. It fires in softirq context.
///
/// # Safety
/// The algorithms must be registered ([`register`] sets the timers up,
/// [`unregister`] cancels them).
pub(super) unsafe fn timer_arm(i: usize, us: u32) {
    let Ok(i) = c_uint::try_from(i) else {
        return;
    };
    // SAFETY: the timers are set up (the caller's contract).
    unsafe { kgpu_gaes_shim_timer_arm(i, us) }
}

/// Queues the redo work item on the gaes work queue.
///
/// # Safety
/// The algorithms must be registered ([`register`] allocates the queue,
/// [`unregister`] destroys it).
pub(super) unsafe fn queue_work() {
    // SAFETY: the queue exists (the caller's contract).
    unsafe { kgpu_gaes_shim_queue_work() }
}

// ---- the kernel's own AES, timed at load --------------------------------------

/// Per mode and kind (`best`), whether [`time_cpu`] ran: 0 not yet, 1
/// running, 2 done (the driver's name is final).
static TIMED: [AtomicU8; 2 * MODES] = [const { AtomicU8::new(0) }; 2 * MODES];

fn timed(mode: usize, best: bool) -> Option<&'static AtomicU8> {
    (mode < MODES).then(|| &TIMED[2 * mode + best as usize])
}

/// Times the kernel's implementation of `mode` on this core (4 KiB
/// requests): `best`, the driver a user of the algorithm gets now, else the
/// synchronous one gaes's CPU path uses. Returns MB/s (0: none, it failed, or
/// it was timed already) and records the driver's name. Sleeps.
pub(super) fn time_cpu(mode: usize, best: bool) -> u64 {
    let Some(t) = timed(mode, best) else {
        return 0;
    };
    if t.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return 0;
    }
    // SAFETY: `mode` is a mode of the shim; this is the only call for
    // `(mode, best)` (the flag), and its name is not read before the flag
    // says done.
    let mbps = unsafe { kgpu_gaes_shim_time_cpu(mode as c_uint, best) };
    t.store(2, Ordering::Release);
    mbps
}

/// The driver [`time_cpu`] timed for `(mode, best)` ("" before that, or if
/// none).
pub(super) fn cpu_driver(mode: usize, best: bool) -> &'static str {
    match timed(mode, best) {
        Some(t) if t.load(Ordering::Acquire) == 2 => {}
        _ => return "",
    }
    // SAFETY: `mode` is a mode of the shim, timed: its name is in a static
    // buffer of shim_crypto.c that nothing writes any more.
    let p = unsafe { kgpu_gaes_shim_cpu_driver(mode as c_uint, best) };
    if p.is_null() {
        return "";
    }
    // SAFETY: as above; the buffer is NUL-terminated.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("?")
}

// ---- the lock -------------------------------------------------------------------

/// Data behind the gaes spinlock, taken with interrupts off (one lock in
/// `shim_crypto.c`, shared by every `Locked`).
pub(super) struct Locked<T>(UnsafeCell<T>);

// SAFETY: the contents are only reached through `Locked::with`, under the
// lock; they may be used from any CPU (`T: Send`).
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    pub(super) const fn new(v: T) -> Self {
        Locked(UnsafeCell::new(v))
    }

    /// Runs `f` under the lock. `f` must not sleep or take the lock again.
    pub(super) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: spin_lock_irqsave on the shim's static lock.
        let flags = unsafe { kgpu_gaes_shim_lock() };
        // SAFETY: the lock is held: this is the only reference until unlock
        // (a nested `with` would spin on the lock, not alias).
        let r = f(unsafe { &mut *self.0.get() });
        // SAFETY: releases the lock taken above, with its flags.
        unsafe { kgpu_gaes_shim_unlock(flags) };
        r
    }
}

// ---- requests ---------------------------------------------------------------------

/// A request of a gaes algorithm, from the crypto API's call into gaes until
/// it is given back: returned with its result ([`Answer::Done`]) or completed
/// ([`Request::complete`]).
///
/// # Invariants
/// Points to a live `struct skcipher_request` of a gaes tfm that is not
/// completed and that only this handle uses.
#[repr(transparent)]
pub(super) struct Request(NonNull<RawRequest>);

/// What gaes did with a request.
pub(super) enum Answer {
    /// Finished in the caller's context with this result (0 or a negative
    /// errno): the crypto API has the request back.
    Done(Request, c_int),
    /// Queued (`-EINPROGRESS`): it is completed later, with
    /// [`Request::complete`].
    Queued,
}

/// A request's source or destination scatterlist, borrowed from the request.
#[derive(Clone, Copy)]
pub(super) struct ReqSg<'a> {
    sg: *mut RawSg,
    _req: PhantomData<&'a Request>,
}

impl Request {
    /// # Safety
    /// `req` must be a live request of a gaes tfm that the crypto API handed
    /// to gaes and that is not completed; the handle is its only user from
    /// now on.
    unsafe fn from_raw(req: *mut RawRequest) -> Self {
        // SAFETY: a live request is not null.
        Request(unsafe { NonNull::new_unchecked(req) })
    }

    fn info(&self) -> RawInfo {
        let mut info = RawInfo {
            src: core::ptr::null_mut(),
            dst: core::ptr::null_mut(),
            iv: core::ptr::null_mut(),
            len: 0,
            ivsize: 0,
        };
        // SAFETY: the request is live (invariant); `info` is a local.
        unsafe { kgpu_gaes_shim_req_info(self.0.as_ptr(), &mut info) };
        info
    }

    /// `cryptlen`: the bytes to process.
    pub(super) fn len(&self) -> u32 {
        self.info().len
    }

    /// The source list.
    pub(super) fn src(&self) -> ReqSg<'_> {
        ReqSg {
            sg: self.info().src,
            _req: PhantomData,
        }
    }

    /// The destination list.
    pub(super) fn dst(&self) -> ReqSg<'_> {
        ReqSg {
            sg: self.info().dst,
            _req: PhantomData,
        }
    }

    /// The destination as the submission API takes it: `cryptlen` bytes.
    pub(super) fn dst_list(&self) -> SgList<'_> {
        let info = self.info();
        // SAFETY: the crypto API requires the destination to be a valid,
        // terminated list of `cryptlen` writable bytes, left to the driver
        // until the request is completed (the borrow of the handle).
        unsafe { SgList::new(info.dst.cast(), 0, info.len as usize) }
    }

    /// The IV (output IV on completion); None when the algorithm has no
    /// 16-byte IV (ECB).
    pub(super) fn iv(&mut self) -> Option<&mut [u8; 16]> {
        let info = self.info();
        if info.ivsize != 16 || info.iv.is_null() {
            return None;
        }
        // SAFETY: the crypto API requires `iv` to hold `ivsize` bytes, left
        // to the driver until the request is completed; the handle is its
        // only user (invariant), borrowed mutably.
        Some(unsafe { &mut *info.iv.cast::<[u8; 16]>() })
    }

    /// The Rust part of the request's context.
    pub(super) fn ctx(&mut self) -> &mut ReqCtx {
        // SAFETY: the shim returns the room for the Rust part in the
        // request's context (`GAES_RS_REQ` bytes, 8-byte aligned, checked
        // against `size_of::<ReqCtx>()` before registration), which belongs
        // to the request; the handle is its only user (invariant), borrowed
        // mutably. `ReqCtx` is bytes, written before they are read.
        unsafe { &mut *kgpu_gaes_shim_req_ctx(self.0.as_ptr()).cast::<ReqCtx>() }
    }

    /// Runs the request on the CPU, synchronously, through the tfm's
    /// fallback (which sets the output IV as the kernel's templates do);
    /// returns its result.
    pub(super) fn fallback(&mut self, enc: bool) -> c_int {
        // SAFETY: the request is live and not completed (invariant); the
        // fallback runs synchronously on the sub-request in its context.
        unsafe { kgpu_gaes_shim_fallback(self.0.as_ptr(), enc) }
    }

    /// Completes a request gaes answered `-EINPROGRESS` ([`Answer::Queued`]).
    pub(super) fn complete(self, err: c_int) {
        // SAFETY: the request is live and not completed (invariant); the
        // handle is consumed, so nothing touches the request afterwards.
        unsafe { kgpu_gaes_shim_complete(self.0.as_ptr(), err) }
    }
}

impl ReqSg<'_> {
    /// Entries needed to describe the first `len` bytes; None when the list
    /// is shorter.
    pub(super) fn count(self, len: u32) -> Option<u32> {
        // SAFETY: the list of a live request (the borrow), only walked up to
        // its end; a null list is an empty one.
        let n = unsafe { kgpu_gaes_shim_sg_count(self.sg, len) };
        (n != c_uint::MAX).then_some(n)
    }

    /// Copies the bytes from `skip` on into `buf`; returns how many (fewer
    /// when the list is shorter).
    pub(super) fn read(self, skip: usize, buf: &mut [u8]) -> usize {
        // SAFETY: as in `count`; `buf` is writable for its length.
        unsafe {
            crate::shim::kgpu_shim_sg_to_buf(self.sg.cast(), skip, buf.as_mut_ptr(), buf.len())
        }
    }
}

// ---- a batch's scatterlist table ----------------------------------------------------

/// A scatterlist table of [`SG_CAP`] entries, allocated by the shim and freed
/// on drop.
///
/// # Invariants
/// Points to a table of `SG_CAP` entries of `kgpu_gaes_shim_sg_alloc`, owned.
#[repr(transparent)]
pub(super) struct SgTable(NonNull<RawSg>);

impl SgTable {
    /// A new, initialised table; None when out of memory.
    pub(super) fn new() -> Option<Self> {
        // SAFETY: no preconditions.
        NonNull::new(unsafe { kgpu_gaes_shim_sg_alloc(SG_CAP) }).map(SgTable)
    }

    /// Clears every entry, for a new batch.
    pub(super) fn reset(&mut self) {
        // SAFETY: the table has `SG_CAP` entries (invariant).
        unsafe { kgpu_gaes_shim_sg_reset(self.0.as_ptr(), SG_CAP) }
    }

    /// Appends the entries describing `src`'s first `len` bytes after the
    /// first `used`; returns the new count, None when they do not fit or the
    /// list is shorter.
    pub(super) fn append(&mut self, used: u32, src: ReqSg<'_>, len: u32) -> Option<u32> {
        // SAFETY: the shim writes only entries below `SG_CAP`, the table's
        // size (invariant); `src` is the list of a live request, only read.
        let n = unsafe { kgpu_gaes_shim_sg_append(self.0.as_ptr(), used, SG_CAP, src.sg, len) };
        u32::try_from(n).ok()
    }

    /// Marks entry `idx` as the last one (nothing past the table's end).
    pub(super) fn mark_end(&mut self, idx: u32) {
        if idx < SG_CAP {
            // SAFETY: `idx` is inside the table (invariant).
            unsafe { kgpu_gaes_shim_sg_mark_end(self.0.as_ptr(), idx) }
        }
    }

    /// The first `len` bytes the table describes, as the submission API
    /// takes them.
    ///
    /// # Safety
    /// The table must be terminated ([`SgTable::mark_end`]) and describe at
    /// least `len` bytes of memory that stays valid and readable while the
    /// list is in use: its entries point into the sources of the requests
    /// appended since the last [`SgTable::reset`], which must not be
    /// completed meanwhile.
    pub(super) unsafe fn list(&self, len: usize) -> SgList<'_> {
        // SAFETY: by the caller's contract.
        unsafe { SgList::new(self.0.as_ptr().cast(), 0, len) }
    }
}

impl Drop for SgTable {
    fn drop(&mut self) {
        // SAFETY: allocated by `kgpu_gaes_shim_sg_alloc` (invariant), freed once.
        unsafe { kgpu_gaes_shim_sg_free(self.0.as_ptr()) }
    }
}

// ---- entry points of shim_crypto.c ------------------------------------------------

/// `EINPROGRESS` (not among the Rust crate's error codes in 6.12).
const EINPROGRESS: c_int = 115;

// Checked against `GAES_RS_TFM` and `GAES_RS_REQ` (kgpu_shim.h) at registration.
#[no_mangle]
extern "C" fn kgpu_gaes_rs_tfm_ctx_size() -> usize {
    core::mem::size_of::<TfmCtx>()
}

#[no_mangle]
extern "C" fn kgpu_gaes_rs_req_ctx_size() -> usize {
    core::mem::size_of::<ReqCtx>()
}

#[no_mangle]
extern "C" fn kgpu_gaes_rs_setkey(tctx: *mut c_void, key: *const u8, len: c_uint) -> c_int {
    // SAFETY: the shim passes the Rust part of the tfm context (sized and
    // aligned by the check at registration) and the caller's key of `len`
    // bytes; the crypto API forbids setkey concurrently with requests on the
    // tfm.
    let (ctx, key) = unsafe {
        (
            &mut *tctx.cast::<TfmCtx>(),
            core::slice::from_raw_parts(key, len as usize),
        )
    };
    match super::setkey(ctx, key) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn kgpu_gaes_rs_crypt(
    req: *mut RawRequest,
    tctx: *const c_void,
    mode: c_uint,
    enc: bool,
) -> c_int {
    // SAFETY: the shim passes the request the crypto API just handed to
    // gaes's encrypt or decrypt, and the Rust part of its tfm's context,
    // which nothing writes during a request.
    let (req, ctx) = unsafe { (Request::from_raw(req), &*tctx.cast::<TfmCtx>()) };
    match super::crypt(req, ctx, mode, enc) {
        // The crypto API has the request back.
        Answer::Done(_req, err) => err,
        Answer::Queued => -EINPROGRESS,
    }
}

#[no_mangle]
extern "C" fn kgpu_gaes_rs_timer(i: c_uint) {
    super::window_ended(i as usize);
}

#[no_mangle]
extern "C" fn kgpu_gaes_rs_work() {
    super::redo();
}

#[no_mangle]
extern "C" fn kgpu_gaes_rs_reset_stats() {
    super::reset_stats();
}

#[no_mangle]
extern "C" fn kgpu_gaes_rs_stats(buf: *mut c_char, len: usize) -> usize {
    // SAFETY: the shim passes a kmalloc'ed buffer of `len` bytes private to
    // this call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    super::write_stats(out)
}
