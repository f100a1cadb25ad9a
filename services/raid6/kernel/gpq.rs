// SPDX-License-Identifier: GPL-2.0-only

//! gpq: a `raid6_calls` that sends RAID6 P/Q work to the helper, for
//! unmodified md (and dm-raid, btrfs) through the exported `raid6_call`.
//!
//! At load (module parameter `gpq_enable`, default on) the current
//! `raid6_call` is saved and `gpq` installed over it; at unload the saved one
//! is put back, then unload waits until no call is inside gpq.
//!
//! Policy of each `gen_syndrome` / `xor_syndrome` call:
//! 1. a layout the helper path does not take (fewer than 4 or more than 256
//!    disks, bytes per disk not a multiple of 64 or above [`MAX_UNIT`], a
//!    block outside the linear map), or a context where spinning is not
//!    allowed (interrupts, interrupts off): the saved CPU algorithm;
//! 2. disks × bytes below the threshold: the saved CPU algorithm. The
//!    threshold is `gpq_policy`'s: `auto` (default) the load-time choice
//!    below, `gpu` every call, `cpu` none; `gpq_threshold` (≥ 0) overrides
//!    it unless the policy is `cpu`;
//! 3. otherwise: one request through [`api::call_nosleep`], spinning at most
//!    `gpq_spin_us`; on any error or timeout the saved CPU algorithm.
//!
//! A call never sleeps and always returns with P and Q computed. md calls
//! `gen_syndrome` with preemption disabled; the helper path keeps it disabled
//! (its buffers are per CPU).
//!
//! `xor_syndrome(start, stop)` goes to the helper as a `GEN_SYNDROME` of the
//! data disks `0..=stop` with zero blocks below `start`: its P and Q are
//! exactly the deltas, which are then folded into the caller's P and Q. (The
//! service's own `XOR_SYNDROME` op needs the old P/Q in the output extent,
//! which the submission API cannot pre-fill.)
//!
//! The load-time choice ([`decide`], with `crate::policy`): the saved
//! algorithm is timed at load at a few sizes, the copies by the core; when a
//! helper attaches, its published GPU figures and these go through the cost
//! model (`common/src/cost.rs`): calls go to the helper from the smallest size
//! where the GPU path costs less CPU time (copies included) and is not
//! slower, and never below the helper's crossover. The helper path itself can
//! be timed from the kernel on `echo bench > /sys/kernel/debug/kgpu/gpq`
//! (shown, not used by the choice).

use self::ffi::{BenchBufs, PerCpu, Stripe};
use crate::api::{self, CallError, Job, Outcome, Src, SubmitError};
use crate::kcommon::abi::service;
use crate::kcommon::abi::Status;
use crate::kservices::raid6 as r6p;
use crate::policy::{self, Policy, Which};
use crate::{BufWriter, Counter};
use core::ffi::c_int;
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::alloc::{flags::GFP_KERNEL, KVec};
use kernel::prelude::*;
use kernel::time::Ktime;

#[path = "ffi.rs"]
mod ffi;

/// Largest bytes per disk the helper path takes (`GPQ_MAX_UNIT` in kgpu_shim.h;
/// `kgpu_gpq_shim_init` checks the two agree).
pub(crate) const MAX_UNIT: usize = 64 * 1024;
/// Largest number of scatterlist entries (`GPQ_MAX_SG` in kgpu_shim.h, checked
/// the same way).
const MAX_SG: usize = 256;

// ---- state and counters -------------------------------------------------------

/// gpq is `raid6_call` (installed at load, restored at unload).
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// Calls currently inside gpq (unload waits for zero).
static ACTIVE: AtomicU32 = AtomicU32::new(0);

/// Per-path counters, shown in /sys/kernel/debug/kgpu/gpq.
struct Stats {
    gen_calls: Counter,
    xor_calls: Counter,
    gpu: Counter,
    gpu_xor: Counter,
    gpu_bytes: Counter,
    cpu_threshold: Counter,
    cpu_policy: Counter,
    cpu_nohelper: Counter,
    cpu_context: Counter,
    cpu_layout: Counter,
    cpu_asleep: Counter,
    cpu_busy: Counter,
    cpu_spinners: Counter,
    cpu_fallback: Counter,
    timeout: Counter,
    verify_mismatch: Counter,
}

static STATS: Stats = Stats {
    gen_calls: Counter::new(),
    xor_calls: Counter::new(),
    gpu: Counter::new(),
    gpu_xor: Counter::new(),
    gpu_bytes: Counter::new(),
    cpu_threshold: Counter::new(),
    cpu_policy: Counter::new(),
    cpu_nohelper: Counter::new(),
    cpu_context: Counter::new(),
    cpu_layout: Counter::new(),
    cpu_asleep: Counter::new(),
    cpu_busy: Counter::new(),
    cpu_spinners: Counter::new(),
    cpu_fallback: Counter::new(),
    timeout: Counter::new(),
    verify_mismatch: Counter::new(),
};

/// The sizes measured: (disks, bytes per disk), ascending in disks × bytes.
const SIZES: [(u32, usize); 4] = [(6, 4096), (18, 4096), (6, 65536), (18, 65536)];

/// MB/s of data (disks - 2 blocks per call) per size; 0: not measured or failed.
static CPU_MBS: [AtomicU64; SIZES.len()] = [const { AtomicU64::new(0) }; SIZES.len()];
static HELPER_MBS: [AtomicU64; SIZES.len()] = [const { AtomicU64::new(0) }; SIZES.len()];

const MEASURE_NONE: u32 = 0;
const MEASURE_QUEUED: u32 = 1;
const MEASURE_DONE: u32 = 2;
/// State of the helper measurement.
static MEASURE: AtomicU32 = AtomicU32::new(MEASURE_NONE);
/// The load-time choice (disks × bytes): calls from this size on go to the
/// helper under `gpq_policy=auto`; `u64::MAX`: none, the CPU at every size.
static DECIDED: AtomicU64 = AtomicU64::new(u64::MAX);

fn now_ns() -> i64 {
    Ktime::ktime_get().to_ns()
}

/// Where the threshold in force comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ThresholdFrom {
    /// `gpq_threshold`.
    Param,
    /// `gpq_policy=cpu`.
    PolicyCpu,
    /// `gpq_policy=gpu` with `gpq_threshold=-1`: every call.
    PolicyGpu,
    /// `gpq_policy=auto`: the load-time choice.
    Decided,
}

impl ThresholdFrom {
    const fn name(self) -> &'static str {
        match self {
            ThresholdFrom::Param => "gpq_threshold",
            ThresholdFrom::PolicyCpu => "gpq_policy=cpu",
            ThresholdFrom::PolicyGpu => "gpq_policy=gpu",
            ThresholdFrom::Decided => "decided",
        }
    }
}

/// The threshold in force (disks x bytes; `u64::MAX`: none) and where it
/// comes from. `gpq_policy=cpu` wins; otherwise `gpq_threshold`, when set,
/// overrides the policy's own.
fn threshold() -> (u64, ThresholdFrom) {
    let pol = policy::policy(Which::Gpq);
    if pol == Policy::Cpu {
        return (u64::MAX, ThresholdFrom::PolicyCpu);
    }
    let p = ffi::param_threshold();
    if p >= 0 {
        (p as u64, ThresholdFrom::Param)
    } else if pol == Policy::Gpu {
        (0, ThresholdFrom::PolicyGpu)
    } else {
        (DECIDED.load(Ordering::Relaxed), ThresholdFrom::Decided)
    }
}

/// gpq calls waiting for the helper's answer right now (spinning, with
/// preemption off), and the most there ever were at once.
static SPINNERS: AtomicU32 = AtomicU32::new(0);
static SPINNERS_PEAK: AtomicU32 = AtomicU32::new(0);

/// A place among the callers waiting for the helper. There are at most as
/// many as leave the helper (and the rest of the machine) a CPU: callers
/// spinning with preemption off on every CPU would starve a local helper, so
/// nothing could answer them (`gpq_max_spinners`, capped at the online CPUs
/// less one). Whatever the policy, the others compute on the CPU at once.
struct Spinner;

impl Spinner {
    fn enter() -> Option<Self> {
        let max = ffi::max_spinners();
        let mut n = SPINNERS.load(Ordering::Relaxed);
        loop {
            if n >= max {
                return None;
            }
            match SPINNERS.compare_exchange_weak(n, n + 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    SPINNERS_PEAK.fetch_max(n + 1, Ordering::Relaxed);
                    return Some(Spinner);
                }
                Err(v) => n = v,
            }
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        SPINNERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a call inside gpq for its lifetime.
struct Inside;

impl Inside {
    fn enter() -> Self {
        ACTIVE.fetch_add(1, Ordering::AcqRel);
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

// ---- the helper path --------------------------------------------------------------

/// Why the helper path did not produce the answer.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Miss {
    /// The layout cannot go to the helper.
    Layout,
    /// No helper attached.
    NoHelper,
    /// The helper sleeps (and waking it is not allowed: `gpq_wake_us` 0),
    /// or it did not answer within the wake and spin bounds.
    Asleep,
    /// No answer within the spin bound.
    Timeout,
    /// The ring, the slot table or the data area is full.
    Busy,
    /// Any other error (helper error, bad output length, re-entry).
    Failed,
}

/// What the helper path is asked.
#[derive(Clone, Copy)]
enum Work {
    Gen,
    Xor { start: usize, stop: usize },
}

/// Runs one call through the helper; on success P and Q of `s` hold the
/// answer.
fn helper_call(s: &mut Stripe<'_>, w: Work, wake_ns: i64) -> Result<(), Miss> {
    let (disks, bytes) = (s.disks() as usize, s.bytes());
    let ndata = disks - 2;
    // The data disks sent, zero blocks around the caller's.
    let (start, stop, sent) = match w {
        Work::Gen => (0, ndata - 1, ndata),
        Work::Xor { start, stop } => (start, stop, (stop + 1).max(2)),
    };
    let lead = start;
    let trail = sent - (stop + 1);
    if sent + 2 > r6p::MAX_DISKS as usize || lead + (stop - start + 1) + trail > MAX_SG {
        return Err(Miss::Layout);
    }
    let awake = crate::core_state::helper_awake();
    if !awake {
        if !api::attached() {
            return Err(Miss::NoHelper);
        }
        if wake_ns <= 0 {
            return Err(Miss::Asleep);
        }
    }
    let mut pc = PerCpu::take().ok_or(Miss::Failed)?;
    // The list describes the `sent * bytes` bytes sent (the caller's blocks
    // and the zero block); `out` is this CPU's buffer for P and Q.
    let (input, out) = pc.build(s, start, stop, lead, trail).ok_or(Miss::Layout)?;
    let job = Job {
        service: service::RAID6,
        op: r6p::op::GEN_SYNDROME,
        key_tag: 0,
        key: &[],
        input: Src::Sg(input),
        aux: &[],
        out_len: 2 * bytes,
        in_place: false,
        unit: bytes as u32,
        count: (sent + 2) as u32,
        params: r6p::Raid6Params::NONE.to_bytes(),
    };
    let spin = ffi::param_spin_us().max(1);
    if awake {
        match api::call_nosleep(&job, out, spin) {
            Ok(len) if len == 2 * bytes => {}
            Ok(_) => return Err(Miss::Failed),
            Err(CallError::TimedOut) => return Err(Miss::Timeout),
            Err(CallError::Submit(SubmitError::NoHelper)) => return Err(Miss::NoHelper),
            Err(CallError::Submit(SubmitError::TooLarge)) => return Err(Miss::Layout),
            // The helper went to sleep since it was seen awake: wake it with
            // the request itself.
            Err(CallError::Submit(SubmitError::Busy))
                if wake_ns > 0 && !crate::core_state::helper_awake() =>
            {
                waking_call(&job, out, wake_ns + i64::from(spin) * 1000)?
            }
            Err(CallError::Submit(SubmitError::Busy)) => return Err(Miss::Busy),
            Err(_) => return Err(Miss::Failed),
        }
    } else {
        waking_call(&job, out, wake_ns + i64::from(spin) * 1000)?;
    }
    let (hp, hq) = out.split_at_mut(bytes);
    let verify = ffi::param_verify();
    match w {
        Work::Gen => {
            if verify {
                s.cpu_gen();
                let (p, q) = s.pq().ok_or(Miss::Layout)?;
                if hp[..] != p[..] || hq[..] != q[..] {
                    STATS.verify_mismatch.add(1);
                }
            } else {
                let (p, q) = s.pq().ok_or(Miss::Layout)?;
                p.copy_from_slice(hp);
                q.copy_from_slice(hq);
            }
        }
        Work::Xor { start, stop } => {
            if verify {
                // The helper's new P/Q in the bounce buffer, the CPU's in place.
                let (p, q) = s.pq().ok_or(Miss::Layout)?;
                xor_into(hp, p);
                xor_into(hq, q);
                s.cpu_xor(start as c_int, stop as c_int);
                let (p, q) = s.pq().ok_or(Miss::Layout)?;
                if hp[..] != p[..] || hq[..] != q[..] {
                    STATS.verify_mismatch.add(1);
                }
            } else {
                let (p, q) = s.pq().ok_or(Miss::Layout)?;
                xor_into(p, hp);
                xor_into(q, hq);
            }
        }
    }
    Ok(())
}

/// Where a spinning submission waits for its answer.
struct SpinWait {
    /// 0 while waiting; then 1 (answer copied), 2 (timed out), 3 (failed).
    state: AtomicU32,
    out: *mut u8,
    cap: usize,
}

fn spin_done(ctx: usize, o: &Outcome<'_>) {
    // SAFETY: `ctx` is the address of the `SpinWait` of `waking_call`, which
    // does not return before `state` is set unless `cancel` succeeded, in
    // which case this callback never runs.
    let w = unsafe { &*(ctx as *const SpinWait) };
    let state = match o.status {
        Status::Ok if o.out.len() == w.cap => {
            // SAFETY: `out` is the caller's buffer of `cap` bytes, which only
            // this callback writes while `waking_call` spins.
            let dst = unsafe { core::slice::from_raw_parts_mut(w.out, w.cap) };
            if o.out.copy_to(0, dst) == w.cap {
                1
            } else {
                3
            }
        }
        Status::TimedOut => 2,
        _ => 3,
    };
    w.state.store(state, Ordering::Release);
}

/// For a helper that sleeps (it armed NEED_WAKEUP after being idle):
/// `call_nosleep` refuses at once, and a wake-up without work does not get
/// it out of `poll()`. The request itself wakes it: submit, then spin for
/// the answer for at most `bound_ns`, reaping completions here. On timeout
/// the request is cancelled. Never sleeps.
fn waking_call(job: &Job<'_>, out: &mut [u8], bound_ns: i64) -> Result<(), Miss> {
    let w = SpinWait {
        state: AtomicU32::new(0),
        out: out.as_mut_ptr(),
        cap: out.len(),
    };
    let h = match api::submit(job, spin_done, &w as *const SpinWait as usize) {
        Ok(h) => h,
        Err(SubmitError::NoHelper) => return Err(Miss::NoHelper),
        Err(SubmitError::TooLarge) => return Err(Miss::Layout),
        Err(SubmitError::Busy) => return Err(Miss::Busy),
        Err(_) => return Err(Miss::Failed),
    };
    let start = now_ns();
    let mut gave_up = false;
    while w.state.load(Ordering::Acquire) == 0 {
        crate::core_state::reap();
        if w.state.load(Ordering::Acquire) != 0 {
            break;
        }
        if !gave_up && now_ns() - start > bound_ns {
            if api::cancel(&h) {
                return Err(Miss::Asleep);
            }
            // Completing in another context right now: its callback is
            // about to set the state.
            gave_up = true;
        }
        crate::shim::cpu_relax();
    }
    match w.state.load(Ordering::Acquire) {
        1 => Ok(()),
        2 => Err(Miss::Timeout),
        _ => Err(Miss::Failed),
    }
}

/// `dst ^= src` over the common length (whole 8-byte words, then bytes).
fn xor_into(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    let words = n / 8;
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    for i in 0..words {
        // SAFETY: word `i` lies within the first `n` bytes of both slices;
        // unaligned accesses are used, and the slices do not overlap (one is
        // borrowed mutably).
        unsafe {
            let x = (d.add(8 * i) as *const u64).read_unaligned()
                ^ (s.add(8 * i) as *const u64).read_unaligned();
            (d.add(8 * i) as *mut u64).write_unaligned(x);
        }
    }
    for i in 8 * words..n {
        dst[i] ^= src[i];
    }
}

/// The policy; true when the helper computed P and Q.
fn try_helper(s: &mut Stripe<'_>, w: Work) -> bool {
    let (disks, bytes) = (s.disks(), s.bytes());
    let layout_ok = (r6p::MIN_DISKS as c_int..=r6p::MAX_DISKS as c_int).contains(&disks)
        && bytes != 0
        && bytes % r6p::UNIT_ALIGN as usize == 0
        && bytes <= MAX_UNIT
        && s.has_ptrs();
    if !layout_ok {
        STATS.cpu_layout.add(1);
        return false;
    }
    if !ffi::may_spin() {
        STATS.cpu_context.add(1);
        return false;
    }
    let (limit, from) = threshold();
    if (disks as u64) * (bytes as u64) < limit {
        if from == ThresholdFrom::PolicyCpu {
            STATS.cpu_policy.add(1);
        } else {
            STATS.cpu_threshold.add(1);
        }
        return false;
    }
    let Some(_spinner) = Spinner::enter() else {
        STATS.cpu_spinners.add(1);
        return false;
    };
    let wake_ns = i64::from(ffi::param_wake_us()) * 1000;
    match helper_call(s, w, wake_ns) {
        Ok(()) => {
            STATS.gpu.add(1);
            if matches!(w, Work::Xor { .. }) {
                STATS.gpu_xor.add(1);
            }
            STATS.gpu_bytes.add((disks as u64) * (bytes as u64));
            true
        }
        Err(m) => {
            match m {
                Miss::Layout => STATS.cpu_layout.add(1),
                Miss::NoHelper => STATS.cpu_nohelper.add(1),
                Miss::Timeout => STATS.timeout.add(1),
                Miss::Asleep => STATS.cpu_asleep.add(1),
                Miss::Busy => STATS.cpu_busy.add(1),
                Miss::Failed => STATS.cpu_fallback.add(1),
            }
            false
        }
    }
}

// ---- entry points of the raid6_calls (shim_raid6.c) -------------------------------

/// `gen_syndrome`.
fn gen_syndrome(mut s: Stripe<'_>) {
    let _inside = Inside::enter();
    STATS.gen_calls.add(1);
    if !try_helper(&mut s, Work::Gen) {
        s.cpu_gen();
    }
}

/// `xor_syndrome` (installed only over an algorithm that has one).
fn xor_syndrome(mut s: Stripe<'_>, start: c_int, stop: c_int) {
    let _inside = Inside::enter();
    STATS.xor_calls.add(1);
    let range_ok = 0 <= start && start <= stop && stop < s.disks() - 2;
    let w = Work::Xor {
        start: start.max(0) as usize,
        stop: stop.max(0) as usize,
    };
    // `start..=stop` are data disks (checked) for the helper path.
    if !range_ok || !try_helper(&mut s, w) {
        if !range_ok {
            STATS.cpu_layout.add(1);
        }
        s.cpu_xor(start, stop);
    }
}

// ---- measurement --------------------------------------------------------------------

/// How long each size is timed.
const BENCH_NS: i64 = 4_000_000;

fn mbs(data_bytes: u64, iters: u64, ns: i64) -> u64 {
    if ns <= 0 {
        return 0;
    }
    data_bytes * iters * 1000 / ns as u64
}

/// Times the saved CPU algorithm at every size.
fn measure_cpu() {
    for (i, &(disks, bytes)) in SIZES.iter().enumerate() {
        let Some(mut b) = BenchBufs::new(disks as usize, bytes) else {
            continue;
        };
        let start = now_ns();
        let mut iters = 0u64;
        while iters < 4 || now_ns() - start < BENCH_NS {
            b.stripe().cpu_gen();
            iters += 1;
        }
        let v = mbs((disks as u64 - 2) * bytes as u64, iters, now_ns() - start);
        CPU_MBS[i].store(v, Ordering::Relaxed);
        pr_info!(
            "gpq: {:<8} gen() {:5} MB/s ({}x{})\n",
            ffi::saved_name(),
            v,
            disks,
            bytes
        );
    }
}

/// One helper call for the measurement, retried while the helper wakes up.
fn bench_helper_call(b: &mut BenchBufs) -> Result<(), Miss> {
    let mut tries = 0;
    loop {
        match helper_call(&mut b.stripe(), Work::Gen, 20_000_000) {
            Err(Miss::Failed | Miss::Asleep | Miss::Busy) if tries < 50 => {
                // Busy, or slow to wake: give it a moment.
                tries += 1;
                crate::shim::msleep(1);
            }
            r => return r,
        }
    }
}

/// Times the helper path at every size and chooses the threshold. Process
/// context. Returns false when the helper path failed or gave wrong answers.
fn measure_helper() -> bool {
    let mut ok_all = true;
    for (i, &(disks, bytes)) in SIZES.iter().enumerate() {
        HELPER_MBS[i].store(0, Ordering::Relaxed);
        let (disks, bu) = (disks as usize, bytes);
        let Some(mut b) = BenchBufs::new(disks, bu) else {
            ok_all = false;
            continue;
        };
        // Correctness first: the helper's P/Q against the CPU's.
        let first = bench_helper_call(&mut b);
        if let Err(m) = first {
            pr_info!("gpq: helper   gen() {:?} ({}x{})\n", m, disks, bu);
        }
        let mut good = first.is_ok();
        if good {
            let mut pq = KVec::new();
            if pq
                .extend_from_slice(b.block(disks - 2), GFP_KERNEL)
                .is_err()
                || pq
                    .extend_from_slice(b.block(disks - 1), GFP_KERNEL)
                    .is_err()
            {
                good = false;
            } else {
                b.stripe().cpu_gen();
                good = pq[..bu] == *b.block(disks - 2) && pq[bu..] == *b.block(disks - 1);
                if !good {
                    pr_warn!(
                        "gpq: the helper's P/Q differ from the CPU's ({}x{})\n",
                        disks,
                        bu
                    );
                }
            }
        }
        let mut iters = 0u64;
        let start = now_ns();
        while good && (iters < 4 || now_ns() - start < BENCH_NS) && iters < 100_000 {
            if bench_helper_call(&mut b).is_err() {
                good = false;
                break;
            }
            iters += 1;
            ffi::cond_resched();
        }
        let elapsed = now_ns() - start;
        if !good {
            ok_all = false;
            pr_info!("gpq: helper   gen() failed ({}x{})\n", disks, bu);
            continue;
        }
        let v = mbs((disks as u64 - 2) * bu as u64, iters, elapsed).max(1);
        HELPER_MBS[i].store(v, Ordering::Relaxed);
        pr_info!(
            "gpq: helper   gen() {:5} MB/s ({}x{}, cpu {} MB/s)\n",
            v,
            disks,
            bu,
            CPU_MBS[i].load(Ordering::Relaxed)
        );
    }
    ok_all
}

/// The payload (data) rate of the largest measured size: the one the
/// decision uses (the CPU algorithm at its best, on one core).
const DECIDE_SIZE: usize = SIZES.len() - 1;

/// Decides from the figures of the helper that just attached, and logs it.
pub(crate) fn decide() {
    use crate::kcommon::cost;
    let (disks, bytes) = SIZES[DECIDE_SIZE];
    let (data, all) = (disks - 2, disks);
    let i = inputs();
    // The model speaks of payload (data) bytes; the threshold is in disks x
    // bytes per disk, all the blocks of the call.
    let max_payload = (r6p::MAX_DISKS as u64 - 2) * MAX_UNIT as u64;
    let t = cost::threshold(&i, 4096, max_payload)
        .map_or(u64::MAX, |p| (p * u64::from(all)).div_ceil(u64::from(data)));
    DECIDED.store(t, Ordering::Relaxed);
    let d = cost::decide(&i, decide_at());
    policy::log_line(|w| {
        let _ = write!(w, "gpq: raid6: ");
        if t == u64::MAX {
            let _ = write!(w, "cpu ({})", policy::reason_text(&i, &d));
        } else {
            let _ = write!(w, "gpu from {} (disks x bytes)", policy::Size(t));
        }
        let _ = write!(
            w,
            ": at {}x{} cpu {} {} MB/s/core = {} s/GB vs ",
            disks,
            bytes,
            ffi::saved_name(),
            i.cpu_mbps,
            policy::SecPerGb::of_mbps(i.cpu_mbps)
        );
        policy::describe_gpu(w, &i, &d);
    });
}

/// The size the logged decision is shown at: the data blocks of the
/// decision size (the model speaks of payload bytes).
fn decide_at() -> u64 {
    let (disks, bytes) = SIZES[DECIDE_SIZE];
    u64::from(disks - 2) * bytes as u64
}

/// The model's inputs: the saved algorithm's rate at the decision size, the
/// data copied in and P, Q copied out (`disks / (disks - 2)` per byte).
fn inputs() -> crate::kcommon::cost::Inputs {
    let (disks, _) = SIZES[DECIDE_SIZE];
    policy::inputs(
        service::RAID6,
        CPU_MBS[DECIDE_SIZE].load(Ordering::Relaxed),
        disks,
        disks - 2,
    )
}

// ---- debugfs ------------------------------------------------------------------------

/// The debugfs file, into `out`; returns the length written.
fn show(out: &mut [u8]) -> usize {
    let mut w = BufWriter::new(out);
    write_stats(&mut w);
    w.len
}

fn write_stats(w: &mut BufWriter<'_>) {
    let (t, from) = threshold();
    let s = &STATS;
    let cur = ffi::current_name();
    let _ = writeln!(w, "installed: {}", INSTALLED.load(Ordering::Acquire) as u32);
    let _ = writeln!(w, "raid6_call: {}", cur);
    let _ = writeln!(w, "cpu_algorithm: {}", ffi::saved_name());
    let _ = writeln!(w, "policy: {}", policy::policy(Which::Gpq).name());
    if t == u64::MAX {
        let _ = writeln!(w, "threshold: none ({})", from.name());
    } else {
        let _ = writeln!(w, "threshold: {} ({})", t, from.name());
    }
    {
        let i = inputs();
        let d = crate::kcommon::cost::decide(&i, decide_at());
        let dt = DECIDED.load(Ordering::Relaxed);
        let _ = write!(
            w,
            "decision: gpu {} threshold {} ",
            (dt != u64::MAX) as u32,
            if dt == u64::MAX { 0 } else { dt }
        );
        policy::write_pairs(w, &i, &d);
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "measured: {}",
        match MEASURE.load(Ordering::Acquire) {
            MEASURE_NONE => "cpu",
            MEASURE_QUEUED => "running",
            _ => "cpu+helper",
        }
    );
    for (i, &(d, b)) in SIZES.iter().enumerate() {
        let _ = writeln!(
            w,
            "size {}x{}: cpu {} MB/s, helper {} MB/s",
            d,
            b,
            CPU_MBS[i].load(Ordering::Relaxed),
            HELPER_MBS[i].load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(w, "active: {}", ACTIVE.load(Ordering::Relaxed));
    let _ = writeln!(w, "gen_calls: {}", s.gen_calls.get());
    let _ = writeln!(w, "xor_calls: {}", s.xor_calls.get());
    let _ = writeln!(w, "gpu: {}", s.gpu.get());
    let _ = writeln!(w, "gpu_xor: {}", s.gpu_xor.get());
    let _ = writeln!(w, "gpu_bytes: {}", s.gpu_bytes.get());
    let _ = writeln!(w, "cpu_threshold: {}", s.cpu_threshold.get());
    let _ = writeln!(w, "cpu_policy: {}", s.cpu_policy.get());
    let _ = writeln!(w, "cpu_nohelper: {}", s.cpu_nohelper.get());
    let _ = writeln!(w, "cpu_context: {}", s.cpu_context.get());
    let _ = writeln!(w, "cpu_layout: {}", s.cpu_layout.get());
    let _ = writeln!(w, "cpu_asleep: {}", s.cpu_asleep.get());
    let _ = writeln!(w, "cpu_busy: {}", s.cpu_busy.get());
    let _ = writeln!(w, "cpu_spinners: {}", s.cpu_spinners.get());
    let _ = writeln!(w, "spinners_max: {}", ffi::max_spinners());
    let _ = writeln!(w, "spinners_peak: {}", SPINNERS_PEAK.load(Ordering::Relaxed));
    let _ = writeln!(w, "cpu_fallback: {}", s.cpu_fallback.get());
    let _ = writeln!(w, "timeout: {}", s.timeout.get());
    let _ = writeln!(w, "verify_mismatch: {}", s.verify_mismatch.get());
}

/// A command written to the debugfs file. `bench`: measure the helper path
/// now (process context, sleeps).
fn command(cmd: &[u8]) -> Result {
    let cmd = core::str::from_utf8(cmd).unwrap_or("").trim();
    match cmd {
        "bench" => {
            if !INSTALLED.load(Ordering::Acquire) {
                return Err(EINVAL);
            }
            if !api::attached() {
                return Err(ENODEV);
            }
            if MEASURE
                .compare_exchange(
                    MEASURE_NONE,
                    MEASURE_QUEUED,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
                && MEASURE
                    .compare_exchange(
                        MEASURE_DONE,
                        MEASURE_QUEUED,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                return Err(EBUSY);
            }
            let ok = measure_helper();
            MEASURE.store(MEASURE_DONE, Ordering::Release);
            if ok {
                Ok(())
            } else {
                Err(EIO)
            }
        }
        _ => Err(EINVAL),
    }
}

// ---- load and unload -------------------------------------------------------------------

/// At module load, after the core shim: buffers, the debugfs file, the CPU
/// measurement and (with `gpq_enable`) the installation.
pub(crate) fn init() -> Result {
    // SAFETY: once, at load (process context), before `install`.
    unsafe { ffi::shim_init() }?;
    if !ffi::param_enable() {
        pr_info!("gpq: not installed (gpq_enable=0)\n");
        return Ok(());
    }
    // SAFETY: not installed (once, at load); nothing else installs or
    // restores gpq.
    if let Err(r) = unsafe { ffi::install() } {
        pr_warn!("gpq: not installed (raid6_call unavailable: {})\n", r);
        return Ok(());
    }
    INSTALLED.store(true, Ordering::Release);
    // Times the saved algorithm (now in place, called directly).
    measure_cpu();
    let xor = ffi::has_xor();
    pr_info!(
        "gpq: installed as raid6_call (CPU algorithm {}, xor_syndrome {})\n",
        ffi::saved_name(),
        if xor {
            "yes"
        } else {
            "no: the saved algorithm has none"
        }
    );
    match threshold() {
        (t, ThresholdFrom::Param) => pr_info!("gpq: threshold {} bytes (gpq_threshold)\n", t),
        (_, from) => pr_info!(
            "gpq: {}: the CPU until a helper attaches with its GPU figures\n",
            from.name()
        ),
    }
    Ok(())
}

/// At module unload: restore `raid6_call`, wait until no call is inside
/// gpq, then free the buffers.
pub(crate) fn exit() {
    if INSTALLED.swap(false, Ordering::AcqRel) {
        // SAFETY: installed by `init`; nothing else installs or restores gpq.
        unsafe { ffi::restore() };
        let mut waited_ms = 0u32;
        while ACTIVE.load(Ordering::Acquire) != 0 {
            crate::shim::msleep(1);
            waited_ms += 1;
            if waited_ms % 5000 == 0 {
                pr_warn!(
                    "gpq: still waiting for {} call(s) to leave\n",
                    ACTIVE.load(Ordering::Relaxed)
                );
            }
        }
        // A caller past the counter's decrement is still returning through
        // gpq's code: one more grace period.
        ffi::sync();
        pr_info!(
            "gpq: raid6_call restored to {} (gpu {}, cpu_threshold {}, cpu_fallback {}, timeout {})\n",
            ffi::saved_name(),
            STATS.gpu.get(),
            STATS.cpu_threshold.get(),
            STATS.cpu_fallback.get(),
            STATS.timeout.get()
        );
    }
    // SAFETY: nothing can enter gpq any more (never installed, or restored
    // with every call gone); once, after `init` succeeded.
    unsafe { ffi::shim_exit() };
}

/// gpq in the module's service table: the raid6 algorithm at load, a
/// decision at each attach.
pub(crate) const SERVICE: crate::service::Service =
    crate::service::Service::new(service::RAID6, c"raid6")
        .registers(init, exit)
        .on_attach(decide);
