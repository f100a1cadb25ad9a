// SPDX-License-Identifier: GPL-2.0-only

//! The in-kernel submission API.
//!
//! [`submit`] is asynchronous: it copies the request's parts into the data
//! area, puts a record on the submission ring and returns; the callback runs
//! later (from the helper's doorbell, the completion poll, a timeout, the
//! helper's detach or a spinning caller), exactly once, never under a lock but
//! with preemption disabled: callbacks must not sleep. It may be called from
//! any context: it neither sleeps nor allocates.
//!
//! [`call_nosleep`] is for callers that cannot sleep: it spins, reaping
//! completions itself, for a bounded time.
//!
//! [`call`] is synchronous: it sleeps (uninterruptibly, bounded by a timeout)
//! until the answer is copied into the caller's buffer. On timeout the request
//! is cancelled first, so the helper can never write into a buffer the caller
//! reuses; the data area space it holds stays reserved until the helper
//! answers or detaches.
//!
//! With no helper attached both return [`SubmitError::NoHelper`] at once, so
//! callers take their CPU path.

pub use crate::api_types::{DoneFn, OutView, Outcome, SgList, SubmitError};
use crate::core_state::{self, Record, Sizes};
use crate::kcommon::abi::{Status, PARAMS_LEN};
use crate::kcommon::slots::Ticket;
use crate::shim;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};

/// Where the input of a request comes from.
#[derive(Clone, Copy)]
pub enum Src<'a> {
    /// A kernel buffer.
    Bytes(&'a [u8]),
    /// A scatterlist (gathered into the data area at submission).
    Sg(SgList<'a>),
}

impl Src<'_> {
    /// Bytes of input.
    pub fn len(&self) -> usize {
        match self {
            Src::Bytes(b) => b.len(),
            Src::Sg(s) => s.len,
        }
    }

    /// True when there is no input.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One request.
pub struct Job<'a> {
    /// Service id (`abi::service`).
    pub service: u16,
    /// Service-defined operation.
    pub op: u16,
    /// Key tag (see `abi::Sqe::key_tag`).
    pub key_tag: u64,
    /// Key material.
    pub key: &'a [u8],
    /// Input data.
    pub input: Src<'a>,
    /// Auxiliary data.
    pub aux: &'a [u8],
    /// Size of the output area.
    pub out_len: usize,
    /// Output written over the input (`out_len` must equal the input length).
    pub in_place: bool,
    /// Service-defined unit.
    pub unit: u32,
    /// Service-defined count.
    pub count: u32,
    /// Service-defined parameters.
    pub params: [u8; PARAMS_LEN],
}

impl Job<'_> {
    /// An ECHO request: the helper copies `input` to the output.
    pub fn echo(input: &[u8]) -> Job<'_> {
        Job {
            service: crate::kcommon::abi::service::ECHO,
            op: 0,
            key_tag: 0,
            key: &[],
            input: Src::Bytes(input),
            aux: &[],
            out_len: input.len(),
            in_place: false,
            unit: 0,
            count: 0,
            params: [0; PARAMS_LEN],
        }
    }
}

/// A submitted request, for [`cancel`].
#[derive(Clone, Copy, Debug)]
pub struct Handle {
    epoch: u64,
    ticket: Ticket,
}

/// True when a helper is attached and takes requests.
pub fn attached() -> bool {
    core_state::attached()
}

/// Submits `job`; `done(ctx, ..)` runs exactly once if this returns `Ok`.
pub fn submit(job: &Job<'_>, done: DoneFn, ctx: usize) -> Result<Handle, SubmitError> {
    let max = shim::max_request_bytes();
    if job.input.len() > max || job.out_len > max || job.key.len() > max || job.aux.len() > max {
        return Err(SubmitError::TooLarge);
    }
    if job.in_place && job.out_len != job.input.len() {
        return Err(SubmitError::Invalid);
    }
    let r = core_state::reserve(&Sizes {
        service: job.service,
        key: job.key.len(),
        input: job.input.len(),
        output: job.out_len,
        aux: job.aux.len(),
        in_place: job.in_place,
    })?;
    // SAFETY: the reservation is live and each extent was allocated with the
    // length of what is copied into it.
    let complete = unsafe {
        r.fill(r.key, job.key);
        r.fill(r.aux, job.aux);
        match job.input {
            Src::Bytes(b) => {
                r.fill(r.input, b);
                true
            }
            Src::Sg(sg) => r.fill_from_sg(r.input, sg.sgl, sg.skip) == sg.len,
        }
    };
    if !complete {
        // The scatterlist is shorter than it said.
        core_state::abort(r);
        return Err(SubmitError::Invalid);
    }
    let h = Handle {
        epoch: r.epoch,
        ticket: r.ticket,
    };
    let rec = Record {
        op: job.op,
        key_tag: job.key_tag,
        unit: job.unit,
        count: job.count,
        params: job.params,
    };
    core_state::commit(r, job.service, &rec, done, ctx)?;
    Ok(h)
}

/// Gives up on a submitted request if the helper has not answered yet.
/// Returns true when its callback will never run; false when it ran or is
/// running.
pub fn cancel(h: &Handle) -> bool {
    core_state::cancel(h.epoch, h.ticket)
}

/// Why a synchronous call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Not submitted.
    Submit(SubmitError),
    /// The helper answered with an error, or detached (`NoHelper`).
    Failed(Status),
    /// No answer within the timeout; the request was cancelled.
    TimedOut,
    /// The output did not fit the caller's buffer.
    Overflow,
}

impl From<SubmitError> for CallError {
    fn from(e: SubmitError) -> Self {
        CallError::Submit(e)
    }
}

struct SyncWait {
    done: AtomicU32,
    status: UnsafeCell<Status>,
    bytes: UnsafeCell<usize>,
    out: *mut u8,
    cap: usize,
}

fn sync_done(ctx: usize, o: &Outcome<'_>) {
    sync_store(ctx, o);
    shim::wake_waiters();
}

/// The spinning caller's callback: no wake-up (nobody sleeps).
fn spin_done(ctx: usize, o: &Outcome<'_>) {
    sync_store(ctx, o);
}

fn sync_store(ctx: usize, o: &Outcome<'_>) {
    // SAFETY: `ctx` is the address of the `SyncWait` on the stack of `call`,
    // which does not return before `done` is set unless `cancel` succeeded,
    // in which case this callback never runs.
    let w = unsafe { &*(ctx as *const SyncWait) };
    let status = o.status;
    let mut bytes = 0;
    if status == Status::Ok {
        if o.out.len() > w.cap {
            bytes = usize::MAX;
        } else {
            // SAFETY: `out` is the caller's buffer of `cap` bytes, which only
            // this callback writes while `call` waits.
            let dst = unsafe { core::slice::from_raw_parts_mut(w.out, w.cap) };
            bytes = o.out.copy_to(0, dst);
        }
    }
    // SAFETY: the waiter reads these only after the release store below.
    unsafe {
        *w.status.get() = status;
        *w.bytes.get() = bytes;
    }
    w.done.store(1, Ordering::Release);
}

fn sync_result(w: &SyncWait) -> Result<usize, CallError> {
    // SAFETY: `done` was set with release ordering after these were written
    // (the caller observed it with an acquire load), and nothing writes them
    // again.
    let (status, bytes) = unsafe { (*w.status.get(), *w.bytes.get()) };
    match status {
        Status::Ok if bytes == usize::MAX => Err(CallError::Overflow),
        Status::Ok => Ok(bytes),
        Status::TimedOut => Err(CallError::TimedOut),
        s => Err(CallError::Failed(s)),
    }
}

/// Runs `job` and waits for its output, copied into `out`; returns the output
/// length. `timeout_ms` 0 means the `sync_timeout_ms` parameter. Sleeps: only
/// for process context.
pub fn call(job: &Job<'_>, out: &mut [u8], timeout_ms: u32) -> Result<usize, CallError> {
    if !shim::may_sleep() {
        return Err(CallError::Submit(SubmitError::Invalid));
    }
    let timeout = if timeout_ms == 0 {
        shim::sync_timeout_ms().max(1)
    } else {
        timeout_ms
    };
    let w = SyncWait {
        done: AtomicU32::new(0),
        status: UnsafeCell::new(Status::TimedOut),
        bytes: UnsafeCell::new(0),
        out: out.as_mut_ptr(),
        cap: out.len(),
    };
    let h = submit(job, sync_done, &w as *const SyncWait as usize)?;
    if !shim::wait_word(&w.done, timeout) {
        if cancel(&h) {
            return Err(CallError::TimedOut);
        }
        // Completing right now: the callback is about to set the flag.
        shim::wait_word(&w.done, 0);
    }
    sync_result(&w)
}

/// Runs `job` without ever sleeping: submits, then reaps completions itself
/// (running any request's callback in this context) until its own answer is
/// in `out`, for at most `spin_us` microseconds (0: the `spin_timeout_us`
/// parameter). On timeout the request is cancelled and `TimedOut` returned,
/// so the caller computes the answer itself. For callers that must not sleep
/// (md's `gen_syndrome` runs with preemption disabled).
///
/// A helper that sleeps is woken but not waited for: the scheduler may well
/// put it on this CPU, which does not give way while spinning. The call then
/// returns `Submit(Busy)` at once, and the next call finds the helper awake.
pub fn call_nosleep(job: &Job<'_>, out: &mut [u8], spin_us: u32) -> Result<usize, CallError> {
    if !core_state::helper_awake() {
        if !attached() {
            return Err(CallError::Submit(SubmitError::NoHelper));
        }
        shim::wake_helper();
        return Err(CallError::Submit(SubmitError::Busy));
    }
    let spin_ns = i64::from(if spin_us == 0 {
        shim::spin_timeout_us()
    } else {
        spin_us
    }) * 1000;
    let w = SyncWait {
        done: AtomicU32::new(0),
        status: UnsafeCell::new(Status::TimedOut),
        bytes: UnsafeCell::new(0),
        out: out.as_mut_ptr(),
        cap: out.len(),
    };
    let h = submit(job, spin_done, &w as *const SyncWait as usize)?;
    let start = kernel::time::Ktime::ktime_get().to_ns();
    let mut gave_up = false;
    while w.done.load(Ordering::Acquire) == 0 {
        core_state::reap();
        if w.done.load(Ordering::Acquire) != 0 {
            break;
        }
        if !gave_up && kernel::time::Ktime::ktime_get().to_ns() - start > spin_ns {
            if cancel(&h) {
                return Err(CallError::TimedOut);
            }
            // Completing in another context right now: its callback is
            // about to set the flag.
            gave_up = true;
        }
        shim::cpu_relax();
    }
    sync_result(&w)
}
