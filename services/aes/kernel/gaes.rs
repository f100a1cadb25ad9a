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

use self::ffi::{Answer, Locked, Request, SgTable};
use crate::api::{self, Job, Outcome, Src};
use crate::kcommon::abi::{service, Status};
use crate::kservices::aes as proto;
use crate::policy::{self, Policy, Which};
use crate::BufWriter;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

#[path = "ffi.rs"]
mod ffi;

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

/// Times the kernel's AES per mode, once at load (before registration, so
/// gaes is not among the candidates).
fn time_cpu() {
    for m in 0..MODES {
        let best = ffi::time_cpu(m, true);
        let fb = ffi::time_cpu(m, false);
        CPU_BEST[m].store(best, Ordering::Relaxed);
        CPU_FALLBACK[m].store(fb, Ordering::Relaxed);
        pr_info!(
            "gaes: {}: cpu {} {} MB/s/core (gaes's own cpu path {} {} MB/s/core), 4 KiB requests\n",
            MODE_NAMES[m],
            ffi::cpu_driver(m, true),
            best,
            ffi::cpu_driver(m, false),
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
                ffi::cpu_driver(m, true),
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
            ffi::cpu_driver(m, true),
            CPU_BEST[m].load(Ordering::Relaxed),
            ffi::cpu_driver(m, false),
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

/// A batch's state (`Free` is 0: the pool is allocated zeroed).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    Free = 0,
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
    /// The batch's table (`None` only until `init` allocates it).
    sg: Option<SgTable>,
    sg_used: u32,
    opened_ns: u64,
    submitted_ns: u64,
    /// The batch's `n` requests, each taken out when it is completed.
    reqs: [Option<Request>; MAX_REQS],
    aux: [u8; MAX_REQS * 16],
}

struct Shared {
    /// `POOL` batches (allocated at init), null before init.
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

// SAFETY: `batches` is the pool, reached under the lock or by the owner of a
// batch (see `batch`) from any CPU; nothing in it is tied to one.
unsafe impl Send for Shared {}

/// The pool and what says which batch is where, behind the gaes lock; the
/// closures given to `SHARED.with` must not sleep, take the lock again or call
/// into the ring API or a completion.
static SHARED: Locked<Shared> = Locked::new(Shared {
    batches: core::ptr::null_mut(),
    open: [None; POOL],
    last_ns: [0; SLOTS],
    redo: 0,
    used: 0,
});

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

/// `Stats`, its zeroed static `STATS` and `Stats::reset` from one list of
/// counters (plus the batch size histogram).
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        struct Stats {
            $($(#[$doc])* $name: AtomicU64,)*
            hist: [AtomicU64; HIST],
        }

        static STATS: Stats = Stats {
            $($name: AtomicU64::new(0),)*
            hist: [const { AtomicU64::new(0) }; HIST],
        };

        impl Stats {
            /// Zeroes every counter.
            fn reset(&self) {
                $(self.$name.store(0, Ordering::Relaxed);)*
                for c in self.hist.iter() {
                    c.store(0, Ordering::Relaxed);
                }
            }
        }
    };
}

counters! {
    /// Every encrypt/decrypt call.
    requests,
    /// Calls answered `-EINPROGRESS` (placed in a batch); each is completed
    /// exactly once, by the helper's answer (`gpu_reqs`) or the redo
    /// (`cpu_redo`).
    queued,
    gpu_reqs,
    gpu_bytes,
    cpu_nohelper,
    cpu_small,
    cpu_busy,
    cpu_other,
    cpu_policy,
    cpu_redo,
    batch_cpu,
    batches,
    flush_full,
    flush_timer,
    flush_nofit,
    submit_refused,
    helper_failed,
    lat_sum_ns,
    lat_max_ns,
    wait_sum_ns,
}

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

/// The batch pool, as `init` allocates it.
type Pool = KVBox<[Batch; POOL]>;

/// Allocates the batch pool and registers the algorithms.
pub(crate) fn init() -> Result {
    if (ffi::timer_count() as usize) < POOL {
        pr_err!("gaes: fewer window timers than batches\n");
        return Err(EINVAL);
    }
    let pool = Pool::new_uninit(GFP_KERNEL | __GFP_ZERO)?;
    // SAFETY: the memory is zeroed, and all-zero bytes are a valid `Batch`:
    // integers, `bool`s and byte arrays, a `Phase` (`#[repr(u8)]`, `Free` is
    // 0) and `Option`s of `#[repr(transparent)]` `NonNull` wrappers (0 is
    // `None`).
    let mut pool = unsafe { pool.assume_init() };
    for b in pool.iter_mut() {
        b.sg = Some(SgTable::new().ok_or(ENOMEM)?);
    }
    let p = Pool::into_raw(pool).cast::<Batch>();
    SHARED.with(|s| {
        s.batches = p;
        s.open = [None; POOL];
        s.redo = 0;
        s.used = 0;
    });
    time_cpu();
    // SAFETY: not registered (`init` runs once, at load); the pool is ready
    // for the self-tests, which call back into `crypt`.
    if let Err(e) = unsafe { ffi::register() } {
        SHARED.with(|s| s.batches = core::ptr::null_mut());
        // SAFETY: the pool made above; nothing else has it any more.
        unsafe { free_pool(p) };
        return Err(e);
    }
    pr_info!("gaes: gaes_ecb, gaes_cbc, gaes_ctr, gaes_xts registered\n");
    Ok(())
}

/// Frees the pool and its tables.
///
/// # Safety
/// `p` must be the pool of `init` (`Pool::into_raw`), no longer used.
unsafe fn free_pool(p: *mut Batch) {
    // SAFETY: by the caller's contract.
    drop(unsafe { Pool::from_raw(p.cast()) });
}

/// Unregisters the algorithms and frees the pool. No tfm exists at unload
/// (each holds a module reference), so no request or batch is pending.
pub(crate) fn exit() {
    // SAFETY: registered by `init` (`exit` runs only after it succeeded), and
    // no tfm is left; this waits for the timers and the work.
    unsafe { ffi::unregister() };
    let p = SHARED.with(|s| {
        let p = s.batches;
        s.batches = core::ptr::null_mut();
        if s.used != 0 {
            pr_err!("gaes: {} batches still in use at unload\n", s.used);
        }
        p
    });
    if !p.is_null() {
        // SAFETY: the pool of `init`; with the algorithms gone nothing uses
        // it (no request, batch, timer or work is left).
        unsafe { free_pool(p) };
    }
}

// ---- requests ----------------------------------------------------------------

/// `setkey` of every mode (the fallback checked the key already).
fn setkey(ctx: &mut TfmCtx, key: &[u8]) -> Result {
    static NEXT_TAG: AtomicU64 = AtomicU64::new(1);
    let len = key.len();
    if len > KEY_MAX {
        return Err(EINVAL);
    }
    ctx.key[..len].copy_from_slice(key);
    ctx.key[len..].fill(0);
    ctx.key_len = len as u32;
    // A new tag per key: the helper's schedule cache never serves a stale key.
    ctx.tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
    Ok(())
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
    let kb = ffi::batch_kb().clamp(4, 16 * 1024);
    let max = crate::shim::max_request_bytes().min(u32::MAX as usize) as u32;
    (kb << 10).min(max)
}

enum Placed {
    /// Queued in a batch; the batches to submit now (full or replaced).
    Queued([Option<usize>; 2]),
    /// Run it on the CPU (and submit these batches).
    Cpu([Option<usize>; 2], CpuWhy, Request),
}

#[derive(Clone, Copy)]
enum CpuWhy {
    Small,
    Busy,
    Other,
}

/// The request on the CPU: the fallback, in the caller's context.
fn cpu(mut req: Request, enc: bool) -> Answer {
    let err = req.fallback(enc);
    Answer::Done(req, err)
}

/// Encrypt or decrypt of `mode`: every request starts here.
fn crypt(mut req: Request, ctx: &TfmCtx, mode: u32, enc: bool) -> Answer {
    let len = req.len();
    inc(&STATS.requests, 1);
    let max_bytes = max_batch_bytes();
    if ctx.key_len == 0 || !eligible(mode, len, max_bytes) {
        inc(&STATS.cpu_other, 1);
        return cpu(req, enc);
    }
    if !api::attached() {
        inc(&STATS.cpu_nohelper, 1);
        return cpu(req, enc);
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
        return cpu(req, enc);
    }
    let nents = match req.src().count(len) {
        Some(n) if n <= SG_CAP => n,
        _ => {
            inc(&STATS.cpu_other, 1);
            return cpu(req, enc);
        }
    };
    if mode == CBC && !enc {
        // The last ciphertext block, kept in the context.
        let mut last = [0u8; 16];
        if req.src().read(len as usize - 16, &mut last) != 16 {
            inc(&STATS.cpu_other, 1);
            return cpu(req, enc);
        }
        req.ctx().next_iv = last;
    }
    let op = op_of(mode, enc);
    let slot = op as usize % SLOTS;
    let key = BatchKey {
        op,
        tag: ctx.tag,
        unit: len,
    };
    let mut iv = [0u8; 16];
    if mode != ECB {
        if let Some(v) = req.iv() {
            iv = *v;
        }
    }
    let window_ns = u64::from(ffi::window_us()) * 1000;
    let cpu_max = ffi::cpu_max_bytes();
    let max_reqs = (ffi::batch_reqs() as usize).clamp(1, MAX_REQS);
    let max_batches = (ffi::max_batches() as usize).clamp(1, POOL);
    let now = ffi::now_ns();

    let placed = SHARED.with(|s| {
        if s.batches.is_null() {
            return Placed::Cpu([None, None], CpuWhy::Other, req);
        }
        let recent = now.wrapping_sub(s.last_ns[slot]) <= window_ns;
        s.last_ns[slot] = now;
        let mut flush = [None, None];
        let mut open = s.open.iter().position(|o| *o == Some(key));
        if let Some(i) = open {
            // SAFETY: the batch is open and the lock is held.
            let b = unsafe { batch(s.batches, i) };
            let fits = b.n < max_reqs
                && (b.n as u64 + 1) * u64::from(len) <= u64::from(max_bytes)
                && b.sg_used + nents <= SG_CAP;
            if !fits {
                s.open[i] = None;
                open = None;
                b.phase = Phase::Busy;
                flush[0] = Some(i);
                inc(&STATS.flush_nofit, 1);
            }
        } else if len < cpu_max && !recent {
            return Placed::Cpu(flush, CpuWhy::Small, req);
        }
        let i = match open {
            Some(i) => i,
            None => {
                let free = (0..POOL.min(max_batches)).find(|&i| s.used & (1 << i) == 0);
                let Some(i) = free else {
                    return Placed::Cpu(flush, CpuWhy::Busy, req);
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
                b.unit = len;
                b.n = 0;
                b.sg_used = 0;
                b.opened_ns = now;
                if let Some(t) = b.sg.as_mut() {
                    t.reset();
                }
                s.open[i] = Some(key);
                // SAFETY: requests reach `crypt` only while the algorithms
                // are registered.
                unsafe { ffi::timer_arm(i, ffi::window_us()) };
                i
            }
        };
        // SAFETY: the batch is open and the lock is held.
        let b = unsafe { batch(s.batches, i) };
        // The table has room for `nents` more entries (checked above, or the
        // batch is new).
        let used = match b.sg.as_mut() {
            Some(t) => t.append(b.sg_used, req.src(), len),
            None => None,
        };
        let Some(used) = used else {
            // Cannot happen after the count; run it on the CPU all the same.
            if b.n == 0 {
                s.open[i] = None;
                b.phase = Phase::Free;
                s.used &= !(1 << i);
            }
            return Placed::Cpu(flush, CpuWhy::Other, req);
        };
        b.sg_used = used;
        b.reqs[b.n] = Some(req);
        b.aux[b.n * 16..b.n * 16 + 16].copy_from_slice(&iv);
        b.n += 1;
        let full = b.n >= max_reqs
            || (b.n as u64 + 1) * u64::from(len) > u64::from(max_bytes)
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
            Answer::Queued
        }
        Placed::Cpu(f, why, req) => {
            f.into_iter().flatten().for_each(submit_batch);
            inc(
                match why {
                    CpuWhy::Small => &STATS.cpu_small,
                    CpuWhy::Busy => &STATS.cpu_busy,
                    CpuWhy::Other => &STATS.cpu_other,
                },
                1,
            );
            cpu(req, enc)
        }
    }
}

/// The window of batch `i` ended: submit it if it is still open.
fn window_ended(i: usize) {
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
    let Some(tbl) = b.sg.as_mut() else {
        // Every batch of the pool has its table.
        to_cpu(i);
        return;
    };
    // `sg_used >= 1`: a batch holds at least one request.
    tbl.mark_end(b.sg_used - 1);
    // SAFETY: the table, terminated, describes the `n` requests' sources,
    // `unit` bytes each, in order; none is completed before the batch is
    // answered or redone, so they stay valid while the submission copies
    // them.
    let input = unsafe { tbl.list(total) };
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
    b.submitted_ns = ffi::now_ns();
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
    let lat = ffi::now_ns().saturating_sub(b.submitted_ns);
    inc(&STATS.lat_sum_ns, lat);
    STATS.lat_max_ns.fetch_max(lat, Ordering::Relaxed);
    inc(&STATS.batches, 1);
    inc(&STATS.hist[hist_bucket(b.n)], 1);
    inc(&STATS.gpu_reqs, b.n as u64);
    inc(&STATS.gpu_bytes, total as u64);
    let (n, mode, enc) = (b.n, b.mode, b.enc);
    for k in 0..n {
        let Some(mut req) = b.reqs[k].take() else {
            continue;
        };
        // The destination covers `cryptlen` = `unit` bytes.
        let copied = o.out.copy_to_sg(k * unit, &req.dst_list());
        let mut err = 0;
        if copied != unit {
            // Only a destination shorter than the request says does this.
            err = EINVAL.to_errno();
        } else {
            let mut iv = [0u8; 16];
            iv.copy_from_slice(&b.aux[k * 16..k * 16 + 16]);
            let out_iv = match (mode, enc) {
                (CBC, true) => {
                    // The last block just written to the destination.
                    req.dst().read(unit - 16, &mut iv);
                    Some(iv)
                }
                (CBC, false) => Some(req.ctx().next_iv),
                (CTR, _) => {
                    ctr_add(&mut iv, unit.div_ceil(16) as u64);
                    Some(iv)
                }
                _ => None,
            };
            if let Some(v) = out_iv {
                if let Some(out) = req.iv() {
                    *out = v;
                }
            }
        }
        req.complete(err);
    }
    release(ctx);
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
    // SAFETY: a batch exists only while the algorithms are registered (at
    // unload no tfm, so no request or batch, is left).
    unsafe { ffi::queue_work() };
}

/// The CPU redo (the work item): every request of every batch the helper
/// did not answer.
fn redo() {
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
            if let Some(mut req) = b.reqs[k].take() {
                let err = req.fallback(enc);
                req.complete(err);
            }
        }
        inc(&STATS.cpu_redo, n as u64);
        release(i);
    }
}

/// Zeroes the counters (debugfs `reset`).
fn reset_stats() {
    STATS.reset();
}

/// The debugfs file: the counters and the decisions, into `out`; returns
/// the length written.
fn write_stats(out: &mut [u8]) -> usize {
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
