// SPDX-License-Identifier: GPL-2.0-only

//! gaes: AES skciphers that run on the GPU through the helper.
//!
//! Four asynchronous skciphers are registered (in `shim_crypto.c`):
//! `ecb(aes)` as `gaes_ecb`, `cbc(aes)` as `gaes_cbc`, `ctr(aes)` as
//! `gaes_ctr` and `xts(aes)` as `gaes_xts`, all `CRYPTO_ALG_ASYNC` and never
//! `CRYPTO_ALG_ALLOCATES_MEMORY` (nothing is allocated per request: batches
//! come from a pool made at load). The kernel's unmodified dm-crypt and
//! eCryptfs use them like any other driver.
//!
//! A request goes one of two ways:
//!
//! * **CPU**, synchronously in the caller's context, through a fallback tfm of
//!   the kernel's own implementation (allocated per tfm with
//!   `CRYPTO_ALG_ASYNC` masked): when no helper is attached, for lengths the
//!   mode does not accept (the fallback returns the kernel's error), for
//!   isolated small requests (shorter than `gaes_cpu_max_bytes` with no batch
//!   of theirs open and no request of their kind within the last window), and
//!   when every batch of the pool is busy (the caller's CPU absorbs the
//!   overload instead of queueing without bound, so `-EBUSY` is never needed).
//! * **Helper**: the request joins the open batch of its operation, key (tag)
//!   and length, or opens one (dm-crypt sends one request per sector, so the
//!   sectors of a bio batch together, and devices with different keys writing
//!   at once fill batches of their own); its IV goes to the batch's IV list
//!   and its source pages to the batch's scatterlist. A batch is submitted as
//!   ONE ring request (`IV_LIST`, unit = request length, in place in the data
//!   area) when it is full (`gaes_batch_reqs`, `gaes_batch_kb`) or when its
//!   window (`gaes_window_us`, an hrtimer) ends. The caller gets
//!   `-EINPROGRESS`; when the helper answers, each request's part of the
//!   output is copied to its destination, its output IV set like the kernel's
//!   templates (CBC: last ciphertext block, CTR: counter advanced by the
//!   blocks used), and it is completed with `skcipher_request_complete`.
//!
//! A batch the helper failed, timed out, or could not take (ring full, helper
//! gone) is redone on the CPU by a work item, request by request, through the
//! fallback: callers never see a helper error. The destination is written only
//! after a complete, correctly sized answer, and the input was copied into the
//! data area at submission, so a redo always starts from intact input, in
//! place or not.
//!
//! Keys: `setkey` checks the key with the fallback and stores the raw key with
//! a fresh tag; nothing is expanded on the submission path. The AES service
//! protocol carries the raw key in every ring request (64 bytes at most, once
//! per batch) and the helper caches expanded schedules by tag.

use crate::api::{self, Job, Outcome, SgList, Src};
use crate::kcommon::abi::{service, Status};
use crate::kservices::aes as proto;
use crate::policy::{self, Policy, Which};
use crate::BufWriter;
use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_uint, c_ulong, c_void};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

extern "C" {
    fn gaes_shim_register() -> c_int;
    fn gaes_shim_unregister();
    fn gaes_shim_param(which: c_uint) -> c_uint;
    fn gaes_shim_req_info(req: *mut c_void, info: *mut ReqInfo);
    fn gaes_shim_fallback(req: *mut c_void, enc: bool) -> c_int;
    fn gaes_shim_complete(req: *mut c_void, err: c_int);
    fn gaes_shim_sg_alloc(n: c_uint) -> *mut c_void;
    fn gaes_shim_sg_free(sg: *mut c_void);
    fn gaes_shim_sg_reset(tbl: *mut c_void, cap: c_uint);
    fn gaes_shim_sg_count(src: *mut c_void, len: c_uint) -> c_uint;
    fn gaes_shim_sg_append(
        tbl: *mut c_void,
        used: c_uint,
        cap: c_uint,
        src: *mut c_void,
        len: c_uint,
    ) -> c_int;
    fn gaes_shim_sg_mark_end(tbl: *mut c_void, idx: c_uint);
    fn gaes_shim_sg_copy(
        sg: *mut c_void,
        skip: usize,
        buf: *mut u8,
        len: usize,
        to_buf: bool,
    ) -> usize;
    fn gaes_shim_zalloc(size: usize) -> *mut c_void;
    fn gaes_shim_free(p: *mut c_void);
    fn gaes_shim_lock() -> c_ulong;
    fn gaes_shim_unlock(flags: c_ulong);
    fn gaes_shim_now_ns() -> u64;
    fn gaes_shim_timer_arm(batch: c_uint, us: c_uint);
    fn gaes_shim_timer_count() -> c_uint;
    fn gaes_shim_queue_work();
    fn gaes_shim_time_cpu(mode: c_uint, best: bool) -> u64;
    fn gaes_shim_cpu_driver(mode: c_uint, best: bool) -> *const c_char;
}

// Parameter indices of `gaes_shim_param` (`GAES_P_*` in kgpu_shim.h).
const P_WINDOW_US: c_uint = 0;
const P_BATCH_KB: c_uint = 1;
const P_BATCH_REQS: c_uint = 2;
const P_CPU_MAX: c_uint = 3;
const P_MAX_BATCHES: c_uint = 4;

fn param(which: c_uint) -> u32 {
    // SAFETY: reads an integer module parameter.
    unsafe { gaes_shim_param(which) }
}

fn now_ns() -> u64 {
    // SAFETY: no preconditions.
    unsafe { gaes_shim_now_ns() }
}

// Modes, as numbered by shim_crypto.c (`GAES_ECB`..`GAES_XTS` in kgpu_shim.h).
const ECB: u32 = 0;
const CBC: u32 = 1;
const CTR: u32 = 2;
const XTS: u32 = 3;
const MODES: usize = 4;
const MODE_NAMES: [&str; MODES] = ["ecb(aes)", "cbc(aes)", "ctr(aes)", "xts(aes)"];

// ---- the load-time choice ------------------------------------------------------

/// One core's rate of the kernel's best driver per mode, MB/s (timed at load).
static CPU_BEST: [AtomicU64; MODES] = [const { AtomicU64::new(0) }; MODES];
/// One core's rate of gaes's own CPU path (the synchronous fallback), MB/s.
static CPU_FALLBACK: [AtomicU64; MODES] = [const { AtomicU64::new(0) }; MODES];
/// Per mode, under `gaes_policy=auto`: batches of at least this many bytes
/// go to the helper; `u64::MAX`: none (the CPU).
static THRESHOLD: [AtomicU64; MODES] = [const { AtomicU64::new(u64::MAX) }; MODES];
/// The largest request the model considers (the submission API's default
/// `max_request_kb`).
const MODEL_MAX: u64 = 16 << 20;

fn driver(mode: usize, best: bool) -> &'static str {
    // SAFETY: returns a NUL-terminated static buffer of shim_crypto.c,
    // written only by `gaes_shim_time_cpu` at load, before any reader.
    let p = unsafe { gaes_shim_cpu_driver(mode as c_uint, best) };
    if p.is_null() {
        return "";
    }
    // SAFETY: as above.
    unsafe { core::ffi::CStr::from_ptr(p) }
        .to_str()
        .unwrap_or("?")
}

/// Times the kernel's AES per mode, once at load (before registration, so
/// gaes is not among the candidates).
fn time_cpu() {
    for m in 0..MODES {
        // SAFETY: process context at load.
        let best = unsafe { gaes_shim_time_cpu(m as c_uint, true) };
        // SAFETY: as above.
        let fb = unsafe { gaes_shim_time_cpu(m as c_uint, false) };
        CPU_BEST[m].store(best, Ordering::Relaxed);
        CPU_FALLBACK[m].store(fb, Ordering::Relaxed);
        pr_info!(
            "gaes: {}: cpu {} {} MB/s/core (gaes's own cpu path {} {} MB/s/core), 4 KiB requests\n",
            MODE_NAMES[m],
            driver(m, true),
            best,
            driver(m, false),
            fb
        );
    }
}

/// The model's inputs for `mode`: the kernel's best CPU code (the one a
/// user of the algorithm would get without gaes), two copies per byte.
fn inputs(mode: usize) -> crate::kcommon::cost::Inputs {
    let cpu = CPU_BEST[mode]
        .load(Ordering::Relaxed)
        .max(CPU_FALLBACK[mode].load(Ordering::Relaxed));
    policy::inputs(service::AES, cpu, 2, 1)
}

/// Decides every mode from the figures of the helper that just attached,
/// and logs one line per mode.
pub(crate) fn decide() {
    use crate::kcommon::cost;
    let batch = u64::from(max_batch_bytes());
    for m in 0..MODES {
        let i = inputs(m);
        let t = cost::threshold(&i, 4096, MODEL_MAX).unwrap_or(u64::MAX);
        THRESHOLD[m].store(t, Ordering::Relaxed);
        let d = cost::decide(&i, batch);
        policy::log_line(|w| {
            let _ = write!(w, "gaes: {}: ", MODE_NAMES[m]);
            if t <= batch {
                let _ = write!(w, "gpu from {}", policy::Size(t));
            } else if t != u64::MAX {
                let _ = write!(
                    w,
                    "cpu (the gpu path pays from {}, above the largest batch)",
                    policy::Size(t)
                );
            } else {
                let _ = write!(w, "cpu ({})", policy::reason_text(&i, &d));
            }
            let _ = write!(
                w,
                ": at {} batches cpu {} {} MB/s/core = {} s/GB vs ",
                policy::Size(batch),
                driver(m, true),
                i.cpu_mbps,
                policy::SecPerGb::of_mbps(i.cpu_mbps)
            );
            policy::describe_gpu(w, &i, &d);
        });
    }
}

/// The decision lines of debugfs: per mode, what `auto` chose, from what.
fn write_decisions(w: &mut BufWriter<'_>) {
    use crate::kcommon::cost;
    let pol = policy::policy(Which::Gaes);
    let batch = u64::from(max_batch_bytes());
    let _ = writeln!(w, "policy: {}", pol.name());
    for m in 0..MODES {
        let i = inputs(m);
        let t = THRESHOLD[m].load(Ordering::Relaxed);
        let d = cost::decide(&i, batch);
        let short = &MODE_NAMES[m][..3];
        let _ = writeln!(
            w,
            "cpu_driver {}: {} {} MB/s, fallback {} {} MB/s",
            short,
            driver(m, true),
            CPU_BEST[m].load(Ordering::Relaxed),
            driver(m, false),
            CPU_FALLBACK[m].load(Ordering::Relaxed)
        );
        let _ = write!(
            w,
            "decision {}: gpu {} threshold {} ",
            short,
            (t <= batch) as u32,
            if t == u64::MAX { 0 } else { t }
        );
        policy::write_pairs(w, &i, &d);
        let _ = writeln!(w);
    }
}

/// Requests per batch, at most.
const MAX_REQS: usize = 256;
/// Scatterlist entries per batch.
const SG_CAP: u32 = 512;
/// Batches in the pool (`GAES_TIMERS` in kgpu_shim.h: one window timer each;
/// `init` checks there are enough).
const POOL: usize = 16;
/// Operations (ring op codes 1..=7), for the small-request policy.
const SLOTS: usize = 8;
/// Batch size histogram buckets: 1, 2-3, 4-7, ..., 128-255, 256.
const HIST: usize = 9;
/// Largest raw key (XTS-256: two 32-byte keys).
const KEY_MAX: usize = 64;

/// The Rust part of a tfm context (zeroed by `init_tfm`).
#[repr(C)]
struct TfmCtx {
    key: [u8; KEY_MAX],
    key_len: u32,
    _pad: u32,
    tag: u64,
}

/// The Rust part of a request context.
#[repr(C)]
struct ReqCtx {
    /// CBC decryption: the last ciphertext block, saved before an in-place
    /// answer overwrites it (the output IV).
    next_iv: [u8; 16],
}

/// What the shim reports of a `struct skcipher_request`.
#[repr(C)]
struct ReqInfo {
    src: *mut c_void,
    dst: *mut c_void,
    iv: *mut u8,
    len: u32,
    flags: u32,
}

fn req_info(req: *mut c_void) -> ReqInfo {
    let mut info = ReqInfo {
        src: core::ptr::null_mut(),
        dst: core::ptr::null_mut(),
        iv: core::ptr::null_mut(),
        len: 0,
        flags: 0,
    };
    // SAFETY: `req` is a live skcipher request handed to us by the crypto API
    // and not completed yet; `info` is a local.
    unsafe { gaes_shim_req_info(req, &mut info) };
    info
}

fn fallback(req: *mut c_void, enc: bool) -> c_int {
    // SAFETY: `req` is a live request of a gaes tfm, not completed yet; the
    // fallback runs synchronously on its own sub-request in the context.
    unsafe { gaes_shim_fallback(req, enc) }
}

fn complete(req: *mut c_void, err: c_int) {
    // SAFETY: `req` was answered -EINPROGRESS and is completed exactly once,
    // here; it is not touched afterwards.
    unsafe { gaes_shim_complete(req, err) }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Free,
    Open,
    Busy,
}

/// What a batch takes: requests of one operation, key and length.
#[derive(Clone, Copy, PartialEq, Eq)]
struct BatchKey {
    op: u16,
    tag: u64,
    unit: u32,
}

/// A batch of requests of one operation, key and length.
struct Batch {
    phase: Phase,
    op: u16,
    mode: u32,
    enc: bool,
    tag: u64,
    key: [u8; KEY_MAX],
    key_len: usize,
    unit: u32,
    n: usize,
    sg: *mut c_void,
    sg_used: u32,
    opened_ns: u64,
    submitted_ns: u64,
    reqs: [*mut c_void; MAX_REQS],
    aux: [u8; MAX_REQS * 16],
}

struct Shared {
    /// `POOL` batches (kvzalloc'ed at init), null before init.
    batches: *mut Batch,
    /// The key of each open batch of the pool (`None`: not open). Several
    /// batches of one operation may be open at once, one per key and length,
    /// so that interleaved streams (dm-crypt devices with different keys)
    /// each fill their own.
    open: [Option<BatchKey>; POOL],
    /// Last arrival of a request of each operation (small-request policy).
    last_ns: [u64; SLOTS],
    /// Batches waiting for the CPU redo (bit per batch).
    redo: u32,
    /// Batches not free.
    used: u32,
}

struct Locked(UnsafeCell<Shared>);

// SAFETY: the contents are only reached through `Locked::with`, under the
// gaes spinlock with interrupts off.
unsafe impl Sync for Locked {}

static SHARED: Locked = Locked(UnsafeCell::new(Shared {
    batches: core::ptr::null_mut(),
    open: [None; POOL],
    last_ns: [0; SLOTS],
    redo: 0,
    used: 0,
}));

impl Locked {
    /// Runs `f` under the lock. `f` must not sleep, take the lock again or
    /// call into the ring API or a completion.
    fn with<R>(&self, f: impl FnOnce(&mut Shared) -> R) -> R {
        // SAFETY: spin_lock_irqsave on the shim's static lock.
        let flags = unsafe { gaes_shim_lock() };
        // SAFETY: the lock is held: this is the only reference until unlock.
        let r = f(unsafe { &mut *self.0.get() });
        // SAFETY: releases the lock taken above.
        unsafe { gaes_shim_unlock(flags) };
        r
    }
}

/// Batch `i` of the pool.
///
/// # Safety
/// The pool must be allocated, and the caller must own the batch: either hold
/// the lock while the batch is open (or being opened), or have taken it out
/// of the open ones (the flusher, the completion and the redo own it until it
/// is freed).
#[allow(clippy::mut_from_ref)]
unsafe fn batch<'a>(s: *mut Batch, i: usize) -> &'a mut Batch {
    // SAFETY: `i < POOL` and the ownership rules are the caller's.
    unsafe { &mut *s.add(i) }
}

fn batches_ptr() -> *mut Batch {
    SHARED.with(|s| s.batches)
}

// ---- counters --------------------------------------------------------------

struct Stats {
    /// Every encrypt/decrypt call.
    requests: AtomicU64,
    /// Calls answered `-EINPROGRESS` (placed in a batch); each is completed
    /// exactly once, by the helper's answer (`gpu_reqs`) or the redo
    /// (`cpu_redo`).
    queued: AtomicU64,
    gpu_reqs: AtomicU64,
    gpu_bytes: AtomicU64,
    cpu_nohelper: AtomicU64,
    cpu_small: AtomicU64,
    cpu_busy: AtomicU64,
    cpu_other: AtomicU64,
    cpu_policy: AtomicU64,
    cpu_redo: AtomicU64,
    batch_cpu: AtomicU64,
    batches: AtomicU64,
    flush_full: AtomicU64,
    flush_timer: AtomicU64,
    flush_nofit: AtomicU64,
    submit_refused: AtomicU64,
    helper_failed: AtomicU64,
    lat_sum_ns: AtomicU64,
    lat_max_ns: AtomicU64,
    wait_sum_ns: AtomicU64,
    hist: [AtomicU64; HIST],
}

#[allow(clippy::declare_interior_mutable_const)]
const Z: AtomicU64 = AtomicU64::new(0);

static STATS: Stats = Stats {
    requests: Z,
    queued: Z,
    gpu_reqs: Z,
    gpu_bytes: Z,
    cpu_nohelper: Z,
    cpu_small: Z,
    cpu_busy: Z,
    cpu_other: Z,
    cpu_policy: Z,
    cpu_redo: Z,
    batch_cpu: Z,
    batches: Z,
    flush_full: Z,
    flush_timer: Z,
    flush_nofit: Z,
    submit_refused: Z,
    helper_failed: Z,
    lat_sum_ns: Z,
    lat_max_ns: Z,
    wait_sum_ns: Z,
    hist: [Z; HIST],
};

fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn hist_bucket(n: usize) -> usize {
    if n >= MAX_REQS {
        HIST - 1
    } else {
        (usize::BITS - 1 - n.max(1).leading_zeros()) as usize
    }
}

// ---- init / exit -----------------------------------------------------------

/// Allocates the batch pool and registers the algorithms.
pub(crate) fn init() -> Result {
    // SAFETY: no preconditions.
    if (unsafe { gaes_shim_timer_count() } as usize) < POOL {
        pr_err!("gaes: fewer window timers than batches\n");
        return Err(EINVAL);
    }
    let size = core::mem::size_of::<Batch>() * POOL;
    // SAFETY: plain kvzalloc.
    let p = unsafe { gaes_shim_zalloc(size) }.cast::<Batch>();
    if p.is_null() {
        return Err(ENOMEM);
    }
    let mut ok = true;
    for i in 0..POOL {
        // SAFETY: `p` holds `POOL` zeroed batches, nothing else sees it yet;
        // all-zero bytes are a valid `Batch` except `phase`, set here first.
        let b = unsafe { &mut *p.add(i) };
        // SAFETY: as above; `phase` is written without reading the old value.
        unsafe { core::ptr::addr_of_mut!(b.phase).write(Phase::Free) };
        // SAFETY: allocates and initialises a scatterlist table.
        b.sg = unsafe { gaes_shim_sg_alloc(SG_CAP) };
        ok &= !b.sg.is_null();
    }
    if !ok {
        free_pool(p);
        return Err(ENOMEM);
    }
    SHARED.with(|s| {
        s.batches = p;
        s.open = [None; POOL];
        s.redo = 0;
        s.used = 0;
    });
    time_cpu();
    // SAFETY: the pool is ready; registration runs the self-tests, which
    // call back into `gaes_rs_crypt`.
    let ret = unsafe { gaes_shim_register() };
    if ret != 0 {
        SHARED.with(|s| s.batches = core::ptr::null_mut());
        free_pool(p);
        return Err(Error::from_errno(ret));
    }
    pr_info!("gaes: gaes_ecb, gaes_cbc, gaes_ctr, gaes_xts registered\n");
    Ok(())
}

fn free_pool(p: *mut Batch) {
    for i in 0..POOL {
        // SAFETY: `p` holds `POOL` batches that nothing uses any more.
        let b = unsafe { &mut *p.add(i) };
        if !b.sg.is_null() {
            // SAFETY: allocated by `gaes_shim_sg_alloc`.
            unsafe { gaes_shim_sg_free(b.sg) };
        }
    }
    // SAFETY: allocated by `gaes_shim_zalloc`, no longer referenced.
    unsafe { gaes_shim_free(p.cast()) };
}

/// Unregisters the algorithms and frees the pool. No tfm exists at unload
/// (each holds a module reference), so no request or batch is pending.
pub(crate) fn exit() {
    // SAFETY: registered by `init`; waits for the timers and the work.
    unsafe { gaes_shim_unregister() };
    let p = SHARED.with(|s| {
        let p = s.batches;
        s.batches = core::ptr::null_mut();
        if s.used != 0 {
            pr_err!("gaes: {} batches still in use at unload\n", s.used);
        }
        p
    });
    if !p.is_null() {
        free_pool(p);
    }
}

// ---- entry points from shim_crypto.c ---------------------------------------

// Checked against `GAES_RS_TFM` and `GAES_RS_REQ` (kgpu_shim.h) at registration.
#[no_mangle]
extern "C" fn gaes_rs_tfm_ctx_size() -> usize {
    core::mem::size_of::<TfmCtx>()
}

#[no_mangle]
extern "C" fn gaes_rs_req_ctx_size() -> usize {
    core::mem::size_of::<ReqCtx>()
}

#[no_mangle]
extern "C" fn gaes_rs_setkey(tctx: *mut c_void, key: *const u8, len: c_uint) -> c_int {
    static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
    let len = len as usize;
    if len > KEY_MAX {
        return EINVAL.to_errno();
    }
    // SAFETY: the shim passes the tfm context's Rust part (sized and aligned
    // by the check at registration) and the caller's key of `len` bytes; the
    // crypto API forbids setkey concurrently with requests on the tfm.
    let (ctx, key) = unsafe {
        (
            &mut *tctx.cast::<TfmCtx>(),
            core::slice::from_raw_parts(key, len),
        )
    };
    ctx.key[..len].copy_from_slice(key);
    ctx.key[len..].fill(0);
    ctx.key_len = len as u32;
    // A new tag per key: the helper's schedule cache never serves a stale key.
    ctx.tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
    0
}

fn op_of(mode: u32, enc: bool) -> u16 {
    use proto::op;
    match (mode, enc) {
        (ECB, true) => op::ECB_ENC,
        (ECB, false) => op::ECB_DEC,
        (CBC, true) => op::CBC_ENC,
        (CBC, false) => op::CBC_DEC,
        (CTR, _) => op::CTR,
        (XTS, true) => op::XTS_ENC,
        _ => op::XTS_DEC,
    }
}

/// Whether the helper path takes a request of this mode and length (the
/// others go to the fallback, which returns the kernel's answer or error).
fn eligible(mode: u32, len: u32, max_bytes: u32) -> bool {
    if len == 0 || len > max_bytes {
        return false;
    }
    match mode {
        ECB | CBC => len % 16 == 0,
        CTR => true,
        XTS => len >= 16,
        _ => false,
    }
}

fn max_batch_bytes() -> u32 {
    let kb = param(P_BATCH_KB).clamp(4, 16 * 1024);
    let max = crate::shim::max_request_bytes().min(u32::MAX as usize) as u32;
    (kb << 10).min(max)
}

enum Placed {
    /// Queued in a batch; the batches to submit now (full or replaced).
    Queued([Option<usize>; 2]),
    /// Run it on the CPU (and submit these batches).
    Cpu([Option<usize>; 2], CpuWhy),
}

#[derive(Clone, Copy)]
enum CpuWhy {
    Small,
    Busy,
    Other,
}

#[no_mangle]
extern "C" fn gaes_rs_crypt(
    req: *mut c_void,
    tctx: *mut c_void,
    rctx: *mut c_void,
    mode: c_uint,
    enc: bool,
) -> c_int {
    // SAFETY: the shim passes the Rust parts of this request's tfm and request
    // contexts; nothing else writes the tfm context during a request.
    let (ctx, rc) = unsafe { (&*tctx.cast::<TfmCtx>(), &mut *rctx.cast::<ReqCtx>()) };
    let info = req_info(req);
    inc(&STATS.requests, 1);
    let max_bytes = max_batch_bytes();
    if ctx.key_len == 0 || !eligible(mode, info.len, max_bytes) {
        inc(&STATS.cpu_other, 1);
        return fallback(req, enc);
    }
    if !api::attached() {
        inc(&STATS.cpu_nohelper, 1);
        return fallback(req, enc);
    }
    let pol = policy::policy(Which::Gaes);
    if pol == Policy::Cpu
        || (pol == Policy::Auto
            && THRESHOLD
                .get(mode as usize)
                .map_or(u64::MAX, |t| t.load(Ordering::Relaxed))
                > u64::from(max_bytes))
    {
        inc(&STATS.cpu_policy, 1);
        return fallback(req, enc);
    }
    // SAFETY: `src` is the request's source list, valid for `len` bytes.
    let nents = unsafe { gaes_shim_sg_count(info.src, info.len) };
    if nents > SG_CAP {
        inc(&STATS.cpu_other, 1);
        return fallback(req, enc);
    }
    if mode == CBC && !enc {
        // SAFETY: as above; copies the last 16 bytes into the context.
        let n = unsafe {
            gaes_shim_sg_copy(
                info.src,
                info.len as usize - 16,
                rc.next_iv.as_mut_ptr(),
                16,
                true,
            )
        };
        if n != 16 {
            inc(&STATS.cpu_other, 1);
            return fallback(req, enc);
        }
    }
    let op = op_of(mode, enc);
    let slot = op as usize % SLOTS;
    let key = BatchKey {
        op,
        tag: ctx.tag,
        unit: info.len,
    };
    let mut iv = [0u8; 16];
    if mode != ECB {
        // SAFETY: the crypto API gives an IV of `ivsize` (16) bytes.
        unsafe { core::ptr::copy_nonoverlapping(info.iv, iv.as_mut_ptr(), 16) };
    }
    let window_ns = u64::from(param(P_WINDOW_US)) * 1000;
    let cpu_max = param(P_CPU_MAX);
    let max_reqs = (param(P_BATCH_REQS) as usize).clamp(1, MAX_REQS);
    let max_batches = (param(P_MAX_BATCHES) as usize).clamp(1, POOL);
    let now = now_ns();

    let placed = SHARED.with(|s| {
        if s.batches.is_null() {
            return Placed::Cpu([None, None], CpuWhy::Other);
        }
        let recent = now.wrapping_sub(s.last_ns[slot]) <= window_ns;
        s.last_ns[slot] = now;
        let mut flush = [None, None];
        let mut open = s.open.iter().position(|o| *o == Some(key));
        if let Some(i) = open {
            // SAFETY: the batch is open and the lock is held.
            let b = unsafe { batch(s.batches, i) };
            let fits = b.n < max_reqs
                && (b.n as u64 + 1) * u64::from(info.len) <= u64::from(max_bytes)
                && b.sg_used + nents <= SG_CAP;
            if !fits {
                s.open[i] = None;
                open = None;
                b.phase = Phase::Busy;
                flush[0] = Some(i);
                inc(&STATS.flush_nofit, 1);
            }
        } else if info.len < cpu_max && !recent {
            return Placed::Cpu(flush, CpuWhy::Small);
        }
        let i = match open {
            Some(i) => i,
            None => {
                let free = (0..POOL.min(max_batches)).find(|&i| s.used & (1 << i) == 0);
                let Some(i) = free else {
                    return Placed::Cpu(flush, CpuWhy::Busy);
                };
                s.used |= 1 << i;
                // SAFETY: the batch was free; the lock is held.
                let b = unsafe { batch(s.batches, i) };
                b.phase = Phase::Open;
                b.op = op;
                b.mode = mode;
                b.enc = enc;
                b.tag = ctx.tag;
                b.key = ctx.key;
                b.key_len = ctx.key_len as usize;
                b.unit = info.len;
                b.n = 0;
                b.sg_used = 0;
                b.opened_ns = now;
                // SAFETY: the batch's own table of `SG_CAP` entries.
                unsafe { gaes_shim_sg_reset(b.sg, SG_CAP) };
                s.open[i] = Some(key);
                // SAFETY: arms this batch's window timer (`i < POOL`).
                unsafe { gaes_shim_timer_arm(i as c_uint, param(P_WINDOW_US)) };
                i
            }
        };
        // SAFETY: the batch is open and the lock is held.
        let b = unsafe { batch(s.batches, i) };
        // SAFETY: the batch's table has room for `nents` more entries (checked
        // above, or the batch is new); `src` is valid for `len` bytes.
        let used = unsafe { gaes_shim_sg_append(b.sg, b.sg_used, SG_CAP, info.src, info.len) };
        if used < 0 {
            // Cannot happen after the count; run it on the CPU all the same.
            if b.n == 0 {
                s.open[i] = None;
                b.phase = Phase::Free;
                s.used &= !(1 << i);
            }
            return Placed::Cpu(flush, CpuWhy::Other);
        }
        b.sg_used = used as u32;
        b.reqs[b.n] = req;
        b.aux[b.n * 16..b.n * 16 + 16].copy_from_slice(&iv);
        b.n += 1;
        let full = b.n >= max_reqs
            || (b.n as u64 + 1) * u64::from(info.len) > u64::from(max_bytes)
            || b.sg_used >= SG_CAP;
        if full {
            s.open[i] = None;
            b.phase = Phase::Busy;
            flush[1] = Some(i);
            inc(&STATS.flush_full, 1);
        }
        Placed::Queued(flush)
    });

    match placed {
        Placed::Queued(f) => {
            inc(&STATS.queued, 1);
            f.into_iter().flatten().for_each(submit_batch);
            -EINPROGRESS
        }
        Placed::Cpu(f, why) => {
            f.into_iter().flatten().for_each(submit_batch);
            inc(
                match why {
                    CpuWhy::Small => &STATS.cpu_small,
                    CpuWhy::Busy => &STATS.cpu_busy,
                    CpuWhy::Other => &STATS.cpu_other,
                },
                1,
            );
            fallback(req, enc)
        }
    }
}

/// `EINPROGRESS` (not among the Rust crate's error codes in 6.12).
const EINPROGRESS: c_int = 115;

/// The window of batch `i` ended: submit it if it is still open.
#[no_mangle]
extern "C" fn gaes_rs_timer(i: c_uint) {
    let i = i as usize;
    if i >= POOL {
        return;
    }
    let taken = SHARED.with(|s| {
        if s.batches.is_null() {
            return None;
        }
        s.open[i].take()?;
        // SAFETY: the batch was open; the lock is held.
        unsafe { batch(s.batches, i) }.phase = Phase::Busy;
        Some(i)
    });
    if let Some(i) = taken {
        inc(&STATS.flush_timer, 1);
        submit_batch(i);
    }
}

/// Sends a batch taken out of the open ones to the helper, or to the CPU redo.
fn submit_batch(i: usize) {
    let p = batches_ptr();
    // SAFETY: the caller took batch `i` out of the open ones: it owns it.
    let b = unsafe { batch(p, i) };
    let total = b.n * b.unit as usize;
    if policy::policy(Which::Gaes) == Policy::Auto
        && (total as u64) < THRESHOLD[b.mode as usize % MODES].load(Ordering::Relaxed)
    {
        // Too small to pay on the GPU path (below the helper's crossover it
        // would even run on the helper's CPU): the kernel's own code.
        inc(&STATS.batch_cpu, 1);
        to_cpu(i);
        return;
    }
    // SAFETY: `sg_used >= 1` (a batch holds at least one request).
    unsafe { gaes_shim_sg_mark_end(b.sg, b.sg_used - 1) };
    // SAFETY: the table describes the `n` requests' sources, `unit` bytes
    // each, in order; they stay valid until each request is completed.
    let input = unsafe { SgList::new(b.sg, 0, total) };
    // ECB has no IVs; the other modes take one IV per request from the list.
    let (params, aux_len) = if b.mode == ECB {
        (proto::AesParams::none(), 0)
    } else {
        (proto::AesParams::list(), b.n * 16)
    };
    let job = Job {
        service: service::AES,
        op: b.op,
        key_tag: b.tag,
        key: &b.key[..b.key_len],
        input: Src::Sg(input),
        aux: &b.aux[..aux_len],
        out_len: total,
        in_place: true,
        unit: b.unit,
        count: 0,
        params: params.to_bytes(),
    };
    b.submitted_ns = now_ns();
    inc(
        &STATS.wait_sum_ns,
        b.submitted_ns.saturating_sub(b.opened_ns),
    );
    match api::submit(&job, batch_done, i) {
        Ok(_) => {}
        Err(_) => {
            inc(&STATS.submit_refused, 1);
            to_cpu(i);
        }
    }
}

/// 128-bit big-endian counter plus `n`.
fn ctr_add(iv: &mut [u8; 16], n: u64) {
    let v = u128::from_be_bytes(*iv).wrapping_add(u128::from(n));
    *iv = v.to_be_bytes();
}

fn batch_done(ctx: usize, o: &Outcome<'_>) {
    let p = batches_ptr();
    // SAFETY: `ctx` is the index of a batch this module submitted; it stays
    // owned by the submission until this callback (run once) releases it.
    let b = unsafe { batch(p, ctx) };
    let unit = b.unit as usize;
    let total = b.n * unit;
    if o.status != Status::Ok || o.out.len() != total {
        inc(&STATS.helper_failed, 1);
        to_cpu(ctx);
        return;
    }
    let lat = now_ns().saturating_sub(b.submitted_ns);
    inc(&STATS.lat_sum_ns, lat);
    STATS.lat_max_ns.fetch_max(lat, Ordering::Relaxed);
    inc(&STATS.batches, 1);
    inc(&STATS.hist[hist_bucket(b.n)], 1);
    inc(&STATS.gpu_reqs, b.n as u64);
    inc(&STATS.gpu_bytes, total as u64);
    let (n, mode, enc) = (b.n, b.mode, b.enc);
    for k in 0..n {
        let req = b.reqs[k];
        let info = req_info(req);
        // SAFETY: the request's destination covers `cryptlen` = `unit` bytes.
        let dst = unsafe { SgList::new(info.dst, 0, unit) };
        let copied = o.out.copy_to_sg(k * unit, &dst);
        let mut err = 0;
        if copied != unit {
            // Only a destination shorter than the request says does this.
            err = EINVAL.to_errno();
        } else {
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&b.aux[k * 16..k * 16 + 16]);
            let out_iv = match (mode, enc) {
                (CBC, true) => {
                    // SAFETY: reads back the last block just written to dst.
                    unsafe { gaes_shim_sg_copy(info.dst, unit - 16, iv.as_mut_ptr(), 16, true) };
                    Some(iv)
                }
                (CBC, false) => {
                    // SAFETY: the request context of a live request.
                    let rc = unsafe { &*gaes_req_ctx(req) };
                    Some(rc.next_iv)
                }
                (CTR, _) => {
                    ctr_add(&mut iv, unit.div_ceil(16) as u64);
                    Some(iv)
                }
                _ => None,
            };
            if let Some(v) = out_iv {
                // SAFETY: the request's IV buffer holds `ivsize` (16) bytes.
                unsafe { core::ptr::copy_nonoverlapping(v.as_ptr(), info.iv, 16) };
            }
        }
        complete(req, err);
    }
    release(ctx);
}

extern "C" {
    fn gaes_shim_req_ctx(req: *mut c_void) -> *mut c_void;
}

/// The Rust part of a request's context.
///
/// # Safety
/// `req` must be a live request of a gaes tfm.
unsafe fn gaes_req_ctx(req: *mut c_void) -> *const ReqCtx {
    // SAFETY: by the caller's contract.
    unsafe { gaes_shim_req_ctx(req) }.cast::<ReqCtx>()
}

fn release(i: usize) {
    SHARED.with(|s| {
        if !s.batches.is_null() {
            // SAFETY: the caller owned the batch and gives it back here.
            unsafe { batch(s.batches, i) }.phase = Phase::Free;
        }
        s.used &= !(1 << i);
    });
}

fn to_cpu(i: usize) {
    SHARED.with(|s| s.redo |= 1 << i);
    // SAFETY: queues the static work item on the gaes workqueue.
    unsafe { gaes_shim_queue_work() };
}

/// The CPU redo: every request of every batch the helper did not answer.
#[no_mangle]
extern "C" fn gaes_rs_work() {
    loop {
        let next = SHARED.with(|s| {
            if s.redo == 0 {
                return None;
            }
            let i = s.redo.trailing_zeros() as usize;
            s.redo &= !(1 << i);
            Some((s.batches, i))
        });
        let Some((p, i)) = next else { break };
        // SAFETY: a batch in the redo set is owned by the redo.
        let b = unsafe { batch(p, i) };
        let (n, enc) = (b.n, b.enc);
        for k in 0..n {
            let req = b.reqs[k];
            let err = fallback(req, enc);
            complete(req, err);
        }
        inc(&STATS.cpu_redo, n as u64);
        release(i);
    }
}

#[no_mangle]
extern "C" fn gaes_rs_reset_stats() {
    let all = [
        &STATS.requests,
        &STATS.queued,
        &STATS.gpu_reqs,
        &STATS.gpu_bytes,
        &STATS.cpu_nohelper,
        &STATS.cpu_small,
        &STATS.cpu_busy,
        &STATS.cpu_other,
        &STATS.cpu_policy,
        &STATS.cpu_redo,
        &STATS.batch_cpu,
        &STATS.batches,
        &STATS.flush_full,
        &STATS.flush_timer,
        &STATS.flush_nofit,
        &STATS.submit_refused,
        &STATS.helper_failed,
        &STATS.lat_sum_ns,
        &STATS.lat_max_ns,
        &STATS.wait_sum_ns,
    ];
    for c in Iterator::chain(all.into_iter(), STATS.hist.iter()) {
        c.store(0, Ordering::Relaxed);
    }
}

#[no_mangle]
extern "C" fn gaes_rs_stats(buf: *mut c_char, len: usize) -> usize {
    // SAFETY: the shim passes a kmalloc'ed buffer of `len` bytes private to
    // this call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    let mut w = BufWriter::new(out);
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let batches = g(&STATS.batches);
    let reqs = g(&STATS.gpu_reqs);
    let _ = writeln!(w, "requests: {}", g(&STATS.requests));
    let _ = writeln!(w, "queued: {}", g(&STATS.queued));
    let _ = writeln!(w, "gpu_requests: {}", reqs);
    let _ = writeln!(w, "gpu_bytes: {}", g(&STATS.gpu_bytes));
    let _ = writeln!(w, "batches: {}", batches);
    let _ = writeln!(
        w,
        "avg_batch_requests: {}",
        if batches > 0 { reqs / batches } else { 0 }
    );
    let _ = writeln!(
        w,
        "avg_batch_latency_ns: {}",
        if batches > 0 {
            g(&STATS.lat_sum_ns) / batches
        } else {
            0
        }
    );
    let _ = writeln!(w, "max_batch_latency_ns: {}", g(&STATS.lat_max_ns));
    let sent = g(&STATS.flush_full) + g(&STATS.flush_timer) + g(&STATS.flush_nofit);
    let _ = writeln!(
        w,
        "avg_batch_open_ns: {}",
        if sent > 0 {
            g(&STATS.wait_sum_ns) / sent
        } else {
            0
        }
    );
    let _ = writeln!(w, "flush_full: {}", g(&STATS.flush_full));
    let _ = writeln!(w, "flush_timer: {}", g(&STATS.flush_timer));
    let _ = writeln!(w, "flush_nofit: {}", g(&STATS.flush_nofit));
    let _ = writeln!(w, "submit_refused: {}", g(&STATS.submit_refused));
    let _ = writeln!(w, "helper_failed: {}", g(&STATS.helper_failed));
    let _ = writeln!(w, "cpu_nohelper: {}", g(&STATS.cpu_nohelper));
    let _ = writeln!(w, "cpu_small: {}", g(&STATS.cpu_small));
    let _ = writeln!(w, "cpu_busy: {}", g(&STATS.cpu_busy));
    let _ = writeln!(w, "cpu_other: {}", g(&STATS.cpu_other));
    let _ = writeln!(w, "cpu_policy: {}", g(&STATS.cpu_policy));
    let _ = writeln!(w, "cpu_redo: {}", g(&STATS.cpu_redo));
    let _ = writeln!(w, "batch_cpu: {}", g(&STATS.batch_cpu));
    let _ = write!(w, "batch_hist:");
    let labels = [
        "1", "2-3", "4-7", "8-15", "16-31", "32-63", "64-127", "128-255", "256",
    ];
    for (l, c) in labels.iter().zip(STATS.hist.iter()) {
        let _ = write!(w, " {}={}", l, g(c));
    }
    let _ = writeln!(w);
    write_decisions(&mut w);
    w.len
}

/// gaes in the module's service table: the four skciphers and their batch
/// pool at load, a decision per mode at each attach.
pub(crate) const SERVICE: crate::service::Service =
    crate::service::Service::new(service::AES, c"aes")
        .registers(init, exit)
        .on_attach(decide);
