//! The userspace stand-in of the kernel side: it owns a region, allocates
//! data extents, submits requests and reaps completions with the very ring
//! code the kernel module uses, validating every completion the same way.
//!
//! It detects a helper that went away (process gone, or detached), fails the
//! requests that helper held with [`Status::NoHelper`] so the caller can redo
//! them on the CPU, and resets the rings for the next helper. A request that
//! merely times out keeps its slot (and the caller should keep its extents)
//! until the helper answers or is known gone, so a late answer can never land
//! in memory that was reused.

use crate::shm::{futex_wait, futex_wake, RegionSpec, SharedRegion, ShmError};
use kgpu_common::abi::{cq_flag, helper_state, sq_flag, Cqe, Extent, Sqe, Status, PARAMS_LEN};
use kgpu_common::alloc::{bitmap_words, ExtentAllocator};
use kgpu_common::region;
use kgpu_common::ring::{self, Consumer, Producer, RingError};
use kgpu_common::slots::{Completion, Inflight, SlotEntry, Ticket};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long [`Submitter::wait`] polls before it sleeps on the doorbell.
pub const WAIT_SPIN: Duration = Duration::from_micros(50);

/// Chunk size of the data-area allocator (4 KiB).
pub const CHUNK_SHIFT: u32 = 12;

/// A request as a caller describes it (the stand-in fills slot and generation).
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// Service id.
    pub service: u16,
    /// Operation.
    pub op: u16,
    /// Key cache tag (0: none).
    pub key_tag: u64,
    /// Key extent.
    pub key: Extent,
    /// Input extent.
    pub input: Extent,
    /// Output extent.
    pub output: Extent,
    /// Auxiliary extent.
    pub aux: Extent,
    /// Service-defined unit.
    pub unit: u32,
    /// Service-defined count.
    pub count: u32,
    /// Service-defined parameters.
    pub params: [u8; PARAMS_LEN],
}

impl Request {
    /// A request with every extent empty.
    pub fn new(service: u16, op: u16) -> Self {
        Request {
            service,
            op,
            key_tag: 0,
            key: Extent::EMPTY,
            input: Extent::EMPTY,
            output: Extent::EMPTY,
            aux: Extent::EMPTY,
            unit: 0,
            count: 0,
            params: [0; PARAMS_LEN],
        }
    }

    fn sqe(&self, t: Ticket) -> Sqe {
        Sqe {
            slot: t.slot,
            gen: t.gen,
            service: self.service,
            op: self.op,
            flags: 0,
            key_tag: self.key_tag,
            key: self.key,
            input: self.input,
            output: self.output,
            aux: self.aux,
            unit: self.unit,
            count: self.count,
            params: self.params,
        }
    }
}

/// Why a submission was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// No helper serves the region: do the work on the CPU.
    #[error("no helper attached")]
    NoHelper,
    /// Every slot or ring entry is in use: reap, then try again.
    #[error("queue full")]
    Busy,
    /// The helper wrote impossible ring indices; it has been cut off.
    #[error("ring corrupt")]
    Corrupt,
}

/// Why waiting ended without a completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// Not finished within the time given; the request stays in flight.
    #[error("timed out")]
    TimedOut,
    /// The ticket does not name a request in flight.
    #[error("unknown ticket")]
    Unknown,
}

/// Counters of what the stand-in saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubmitterStats {
    /// Requests published.
    pub submitted: u64,
    /// Valid completions reaped.
    pub completed: u64,
    /// Completions rejected by validation.
    pub rejected: u64,
    /// Requests failed because their helper went away.
    pub failed_no_helper: u64,
    /// Times a helper was found gone.
    pub helper_losses: u64,
}

struct State {
    sq: Producer<Sqe>,
    cq: Consumer<Cqe>,
    inflight: Inflight<Vec<SlotEntry>>,
    /// Completion per slot, waiting for its owner.
    results: Vec<Option<Completion>>,
    /// Slots whose owner gave up waiting: released when the answer comes.
    abandoned: Vec<Option<Vec<Extent>>>,
    alloc: ExtentAllocator<Vec<u64>>,
    stats: SubmitterStats,
    /// Pid of the helper we last saw attached.
    helper_pid: u32,
    broken: bool,
}

/// The kernel side, in userspace.
pub struct Submitter {
    region: Arc<SharedRegion>,
    st: Mutex<State>,
}

impl Submitter {
    /// Creates a region (memfd when `path` is `None`, else a file a helper in
    /// another process can serve with `kgpu-helper serve --region PATH`).
    pub fn create(path: Option<&Path>, spec: RegionSpec) -> Result<Self, ShmError> {
        let region = Arc::new(SharedRegion::create(path, spec)?);
        Ok(Self::over(region))
    }

    fn over(region: Arc<SharedRegion>) -> Self {
        let g = *region.geometry();
        // In flight is bounded by the completion ring, so it never overflows.
        let slots = g.cq_entries as usize;
        // SAFETY: the submitter is the only SQ producer and CQ consumer of
        // its region, and holds the region for as long as the ends live.
        let (sq, cq) = unsafe { (region.sq_producer(), region.cq_consumer()) };
        let st = State {
            sq,
            cq,
            inflight: Inflight::new(vec![SlotEntry::default(); slots]),
            results: vec![None; slots],
            abandoned: vec![None; slots],
            alloc: ExtentAllocator::new(
                vec![0u64; bitmap_words(g.data_size, CHUNK_SHIFT)],
                g.data_size,
                CHUNK_SHIFT,
            ),
            stats: SubmitterStats::default(),
            helper_pid: 0,
            broken: false,
        };
        Submitter {
            region,
            st: Mutex::new(st),
        }
    }

    /// The region (to hand to a helper in the same process).
    pub fn region(&self) -> &Arc<SharedRegion> {
        &self.region
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates a data extent of `len` bytes.
    pub fn alloc(&self, len: u64) -> Option<Extent> {
        self.lock().alloc.alloc(len)
    }

    /// Frees an extent from [`Submitter::alloc`].
    pub fn free(&self, e: Extent) {
        if let Err(err) = self.lock().alloc.free(e) {
            log::error!("freeing {e:?}: {err:?}");
        }
    }

    /// Copies `src` into the data area at `e.off` (at most `e.len` bytes).
    pub fn write(&self, e: Extent, src: &[u8]) {
        let area = self.region.data();
        let n = src.len().min(e.len as usize);
        assert!(e.fits(area.size()), "extent outside the data area");
        // SAFETY: the extent fits the area and belongs to the caller, who
        // does not hand it to the helper before this copy returns.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), area.ptr(e.off), n) };
    }

    /// Copies `e` out of the data area into `dst` (at most `e.len` bytes).
    pub fn read(&self, e: Extent, dst: &mut [u8]) {
        let area = self.region.data();
        let n = dst.len().min(e.len as usize);
        assert!(e.fits(area.size()), "extent outside the data area");
        // SAFETY: as in `write`; the request owning `e` has completed.
        unsafe { std::ptr::copy_nonoverlapping(area.ptr(e.off), dst.as_mut_ptr(), n) };
    }

    /// Whether a helper currently serves the region.
    pub fn helper_attached(&self) -> bool {
        let st = self.region.header().helper_state.load(Ordering::Acquire);
        st == helper_state::ATTACHED
    }

    /// Submits requests as one batch (one publish, at most one wakeup).
    pub fn submit_batch(&self, reqs: &[Request]) -> Result<Vec<Ticket>, SubmitError> {
        let mut st = self.lock();
        self.check_helper(&mut st);
        if st.broken {
            return Err(SubmitError::Corrupt);
        }
        if !self.helper_attached() {
            return Err(SubmitError::NoHelper);
        }
        let space = st.sq.space().map_err(|_| SubmitError::Corrupt)?;
        let slots_free = st.inflight.capacity() - st.inflight.in_flight();
        if reqs.len() as u64 > u64::from(space.min(slots_free)) {
            return Err(SubmitError::Busy);
        }
        let mut tickets = Vec::with_capacity(reqs.len());
        for r in reqs {
            let t = st.inflight.alloc(r.output.len).ok_or(SubmitError::Busy)?;
            match st.sq.stage(r.sqe(t)) {
                Ok(()) => tickets.push(t),
                Err(RingError::Full) | Err(RingError::Corrupt { .. }) => {
                    st.inflight.release(t);
                    return Err(SubmitError::Busy);
                }
            }
        }
        st.sq.publish();
        st.stats.submitted += tickets.len() as u64;
        let h = self.region.header();
        if ring::must_wake(&h.sq_flags, sq_flag::NEED_WAKEUP) {
            h.sq_doorbell.fetch_add(1, Ordering::SeqCst);
            futex_wake(&h.sq_doorbell);
        }
        Ok(tickets)
    }

    /// Submits one request.
    pub fn submit(&self, r: &Request) -> Result<Ticket, SubmitError> {
        Ok(self.submit_batch(std::slice::from_ref(r))?[0])
    }

    /// Reaps completions; returns how many valid ones were found.
    fn reap(&self, st: &mut State) -> usize {
        let mut n = 0;
        loop {
            let cqe = match st.cq.take() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(RingError::Corrupt { head, tail }) => {
                    log::error!("completion ring corrupt (head {head}, tail {tail}): cutting the helper off");
                    st.broken = true;
                    break;
                }
                Err(RingError::Full) => break,
            };
            match st.inflight.complete(&cqe) {
                Ok(c) => {
                    n += 1;
                    st.stats.completed += 1;
                    let slot = c.slot as usize;
                    if let Some(extents) = st.abandoned[slot].take() {
                        let t = Ticket {
                            slot: c.slot,
                            gen: c.gen,
                        };
                        st.inflight.release(t);
                        for e in extents {
                            let _ = st.alloc.free(e);
                        }
                    } else {
                        st.results[slot] = Some(c);
                    }
                }
                Err(e) => {
                    st.stats.rejected += 1;
                    log::warn!("rejected a completion {cqe:?}: {}", e.as_str());
                }
            }
        }
        st.cq.release();
        n
    }

    /// Declares the helper gone if its process no longer exists or it detached,
    /// failing everything it held and resetting the rings for the next one.
    fn check_helper(&self, st: &mut State) {
        let h = self.region.header();
        let state = h.helper_state.load(Ordering::Acquire);
        let pid = h.helper_pid.load(Ordering::Relaxed);
        if state != helper_state::DETACHED && pid != 0 {
            st.helper_pid = pid;
        }
        let gone = st.helper_pid != 0
            && (state == helper_state::DETACHED || !process_alive(st.helper_pid));
        if !gone {
            return;
        }
        // Keep new helpers out while the rings are reset.
        if h.helper_state
            .compare_exchange(
                state,
                helper_state::RESETTING,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        // Collect what it answered before it went.
        self.reap(st);
        let mut lost = Vec::new();
        st.inflight.for_each_in_flight(|t| lost.push(t));
        let mut failed = 0;
        for t in lost {
            let slot = t.slot as usize;
            if st.results[slot].is_some() {
                continue;
            }
            if let Some(extents) = st.abandoned[slot].take() {
                st.inflight.release(t);
                for e in extents {
                    let _ = st.alloc.free(e);
                }
                continue;
            }
            failed += 1;
            st.results[slot] = Some(Completion {
                slot: t.slot,
                gen: t.gen,
                status: Status::NoHelper,
                bytes: 0,
                backend: 0,
            });
        }
        if failed > 0 {
            log::warn!(
                "the helper (pid {}) went away; {failed} requests in flight failed",
                st.helper_pid
            );
        }
        st.stats.failed_no_helper += failed;
        st.stats.helper_losses += 1;
        st.helper_pid = 0;
        let g = *self.region.geometry();
        // SAFETY: no helper runs on the region (it detached or its process is
        // gone, and the RESETTING state keeps new ones out), and we hold the
        // submitter lock, so we are the region's only user.
        unsafe {
            region::reset_rings(self.region.base(), &g);
            st.sq = self.region.sq_producer();
            st.cq = self.region.cq_consumer();
        }
        st.broken = false;
        h.helper_pid.store(0, Ordering::Relaxed);
        h.helper_state
            .store(helper_state::DETACHED, Ordering::Release);
        futex_wake(&h.cq_doorbell);
    }

    /// Waits for `t` at most `timeout`. On success the slot is freed and the
    /// completion returned (its status may be an error, `NoHelper` included).
    pub fn wait(&self, t: Ticket, timeout: Duration) -> Result<Completion, WaitError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let h = self.region.header();
        loop {
            let bell = h.cq_doorbell.load(Ordering::SeqCst);
            {
                let mut st = self.lock();
                if !st.inflight.is_current(t.slot, t.gen) {
                    return Err(WaitError::Unknown);
                }
                self.reap(&mut st);
                if let Some(c) = st.results[t.slot as usize].take() {
                    st.inflight.release(t);
                    return Ok(c);
                }
                self.check_helper(&mut st);
                if let Some(c) = st.results[t.slot as usize].take() {
                    st.inflight.release(t);
                    return Ok(c);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::TimedOut);
            }
            // Poll a little before sleeping: a wakeup costs more than a short
            // request takes.
            if now - start < WAIT_SPIN {
                std::hint::spin_loop();
                continue;
            }
            ring::arm(&h.cq_flags, cq_flag::NEED_WAKEUP);
            let pending = {
                let mut st = self.lock();
                st.cq.available().unwrap_or(1)
            };
            if pending == 0 {
                let slice = (deadline - now).min(Duration::from_millis(20));
                futex_wait(&h.cq_doorbell, bell, slice);
            }
            // Other waiters may still sleep: leave the flag set while any
            // request is in flight; the helper's extra doorbell is cheap.
        }
    }

    /// Gives up on a request that timed out: its slot and `extents` are
    /// released when its completion arrives or its helper is known gone,
    /// never before (a late answer must not land in reused memory).
    pub fn abandon(&self, t: Ticket, extents: Vec<Extent>) {
        let mut st = self.lock();
        if !st.inflight.is_current(t.slot, t.gen) {
            return;
        }
        if st.results[t.slot as usize].take().is_some() {
            st.inflight.release(t);
            for e in extents {
                let _ = st.alloc.free(e);
            }
        } else {
            st.abandoned[t.slot as usize] = Some(extents);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SubmitterStats {
        self.lock().stats
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.lock().inflight.in_flight()
    }

    /// Clears the completion-wait flag once nobody waits (tidiness only).
    pub fn quiesce(&self) {
        ring::disarm(&self.region.header().cq_flags, cq_flag::NEED_WAKEUP);
    }
}

/// Whether process `pid` exists.
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::ESRCH) => false,
        Err(_) => true,
    }
}
