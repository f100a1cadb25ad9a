//! The serve loop: drain the submission ring, hand batches to a backend, post
//! completions, sleep through the NEED_WAKEUP handshake when idle.
//!
//! Three transports: `/dev/kgpu` (poll and a doorbell ioctl), a region file
//! shared with a userspace submitter (futexes), and a region file that qemu
//! shows a guest as an ivshmem device (both sides poll; the session lives in
//! the header, see [`IvshmemTransport`]).

use crate::backend::Backend;
use crate::shm::{futex_wait, futex_wake, SharedRegion};
use crate::stats::Stats;
use kgpu_common::abi::{cq_flag, helper_state, sq_flag, Cqe};
use kgpu_common::ring::{self, RingError};
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How the helper waits for work and signals completions.
pub trait Transport {
    /// Takes the region for this session (see [`claim`]).
    fn claim(&self, region: &SharedRegion, stop: &AtomicBool) -> Result<(), ServeError> {
        claim(region, stop)
    }
    /// Sleeps until the submitter rings (the doorbell moves past `bell`) or
    /// `timeout` passes.
    fn wait_for_work(&self, region: &SharedRegion, bell: u32, timeout: Duration);
    /// Tells the submitter that completions were posted.
    fn completions_posted(&self, region: &SharedRegion);
    /// True when the submitter ended the session (nothing more may be read
    /// from or written to the rings).
    fn session_over(&self, _region: &SharedRegion) -> bool {
        false
    }
}

/// How serving ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// Asked to stop; what was submitted was finished.
    Stopped,
    /// The submitter ended the session (over ivshmem: the guest's kernel
    /// detached); requests still on the backend were finished and dropped.
    SessionOver,
}

/// A region file or memfd shared with a userspace submitter: futex doorbells.
pub struct RegionTransport;

impl Transport for RegionTransport {
    fn wait_for_work(&self, region: &SharedRegion, bell: u32, timeout: Duration) {
        futex_wait(&region.header().sq_doorbell, bell, timeout);
    }

    fn completions_posted(&self, region: &SharedRegion) {
        if ring_cq_doorbell(region) {
            futex_wake(&region.header().cq_doorbell);
        }
    }
}

/// The completion side of the NEED_WAKEUP handshake in shared memory: bumps
/// the doorbell word when the submitter asked for it; true when it did.
fn ring_cq_doorbell(region: &SharedRegion) -> bool {
    let h = region.header();
    let wake = ring::must_wake(&h.cq_flags, cq_flag::NEED_WAKEUP);
    if wake {
        h.cq_doorbell.fetch_add(1, Ordering::SeqCst);
    }
    wake
}

/// `/dev/kgpu`: `poll()` for work, the doorbell ioctl for completions.
pub struct DeviceTransport<'a> {
    /// The open device.
    pub fd: BorrowedFd<'a>,
}

impl Transport for DeviceTransport<'_> {
    fn wait_for_work(&self, _region: &SharedRegion, _bell: u32, timeout: Duration) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(timeout.as_millis().min(60_000) as i32)
            .unwrap_or(PollTimeout::NONE);
        let _ = poll(&mut fds, ms);
    }

    fn completions_posted(&self, _region: &SharedRegion) {
        crate::device::doorbell(self.fd);
    }
}

/// A region file that qemu shows a guest as an ivshmem device's BAR2, so a
/// helper on the VM's host serves the guest kernel's rings. Nothing is
/// shared but memory: no file descriptor, no interrupt.
///
/// - The session is offered through the header: [`IvshmemTransport::claim`]
///   writes a fresh header (rings empty) with this helper's pid and the
///   state `OFFERED`, keeps its heartbeat moving, and waits for the guest's
///   kernel to answer `ATTACHED` (it has checked the header and reset the
///   rings) or `REFUSED`.
/// - The guest's kernel ends the session by writing `DETACHED` (module
///   unloaded, a stopped heartbeat, a broken ring); the helper then stops
///   using the rings, finishes what its backend holds without posting it, and
///   offers again (see `kgpu-helper serve --ivshmem`).
/// - Both sides poll: the helper spins briefly after work, then sleeps in
///   steps growing from 20 µs to 1 ms, looking at the doorbell word between.
pub struct IvshmemTransport {
    /// The file, for messages.
    pub path: std::path::PathBuf,
}

impl IvshmemTransport {
    fn offer(&self, region: &SharedRegion) -> Result<(), ServeError> {
        let h = region.header();
        let me = std::process::id();
        // SAFETY: the header page is the start of the mapping; only plain
        // fields are read, once each.
        let snap = unsafe { kgpu_common::region::HeaderSnapshot::read(region.base().cast()) };
        if snap.magic == kgpu_common::abi::REGION_MAGIC {
            let (st, pid) = (
                h.helper_state.load(Ordering::Acquire),
                h.helper_pid.load(Ordering::Acquire),
            );
            let serving = matches!(
                st,
                helper_state::ATTACHED | helper_state::OFFERED | helper_state::DRAINING
            );
            if serving && pid != me && crate::standin::process_alive(pid) {
                return Err(ServeError::AnotherHelper(pid));
            }
        }
        // SAFETY: the mapping is the whole region laid out as its geometry
        // (SharedRegion::for_guest); the guest's kernel reads the layout only
        // after it sees OFFERED, published below with a release store.
        unsafe {
            kgpu_common::region::init_header(
                region.base(),
                region.geometry(),
                kgpu_common::region::KNOWN_FEATURES,
            )
        };
        region.rewrite_gpu_figures();
        h.helper_pid.store(me, Ordering::Release);
        h.helper_state
            .store(helper_state::OFFERED, Ordering::Release);
        Ok(())
    }
}

impl Transport for IvshmemTransport {
    fn claim(&self, region: &SharedRegion, stop: &AtomicBool) -> Result<(), ServeError> {
        let h = region.header();
        self.offer(region)?;
        let t0 = Instant::now();
        let mut told = false;
        loop {
            h.heartbeat.fetch_add(1, Ordering::Relaxed);
            match h.helper_state.load(Ordering::Acquire) {
                helper_state::ATTACHED => {
                    log::info!(
                        "the guest's kernel attached the region in {} after {:.1} s",
                        self.path.display(),
                        t0.elapsed().as_secs_f64()
                    );
                    crate::notify::ready(&self.path.display().to_string());
                    return Ok(());
                }
                helper_state::REFUSED => {
                    return Err(ServeError::Refused(self.path.display().to_string()))
                }
                helper_state::OFFERED => {}
                // Rewritten by someone else (another helper starting):
                // offer again, unless that one is alive.
                _ => self.offer(region)?,
            }
            if stop.load(Ordering::Relaxed) {
                let _ = h.helper_state.compare_exchange(
                    helper_state::OFFERED,
                    helper_state::DETACHED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                return Err(ServeError::Stopped);
            }
            if !told && t0.elapsed() > Duration::from_secs(1) {
                log::info!(
                    "offered the region in {} ({} MiB); waiting for the guest's kernel to attach it (insmod kgpu.ko transport=ivshmem)",
                    self.path.display(),
                    region.len() >> 20
                );
                told = true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn wait_for_work(&self, region: &SharedRegion, bell: u32, timeout: Duration) {
        let h = region.header();
        let t0 = Instant::now();
        let mut step = Duration::from_micros(20);
        while h.sq_doorbell.load(Ordering::Acquire) == bell && t0.elapsed() < timeout {
            std::thread::sleep(step);
            step = (step * 2).min(Duration::from_millis(1));
        }
    }

    fn completions_posted(&self, region: &SharedRegion) {
        // The kernel polls the word; there is no futex across the VM.
        ring_cq_doorbell(region);
    }

    fn session_over(&self, region: &SharedRegion) -> bool {
        !matches!(
            region.header().helper_state.load(Ordering::Acquire),
            helper_state::ATTACHED | helper_state::DRAINING
        )
    }
}

/// Tuning of the serve loop.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where to write a statistics snapshot (JSON) about once a second.
    pub stats_file: Option<std::path::PathBuf>,
    /// Busy-poll this long after the last work before sleeping.
    pub spin: Duration,
    /// Most requests taken from the ring per batch.
    pub max_batch: usize,
    /// Longest sleep before the loop looks at its stop flag and heartbeat.
    pub idle_tick: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            stats_file: None,
            spin: Duration::from_micros(50),
            max_batch: 256,
            idle_tick: Duration::from_millis(50),
        }
    }
}

/// Why serving stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another live helper serves the region.
    #[error("another helper is attached (pid {0})")]
    AnotherHelper(u32),
    /// Asked to stop before the region could be claimed.
    #[error("stopped before the region was free")]
    Stopped,
    /// The guest's kernel refused the offered region (over ivshmem).
    #[error("the guest's kernel refused the region in {0} (an ABI version mismatch? see the guest's dmesg)")]
    Refused(String),
    /// The submitter wrote impossible ring indices.
    #[error("the submission ring is corrupt (head {head}, tail {tail}): refusing to serve it")]
    CorruptRing {
        /// Head as seen.
        head: u32,
        /// Tail as seen.
        tail: u32,
    },
}

/// Takes the region: only from `DETACHED`. A live helper already there is an
/// error; a dead one's region is waited for until its submitter has reset it.
pub fn claim(region: &SharedRegion, stop: &AtomicBool) -> Result<(), ServeError> {
    let h = region.header();
    let mut told = false;
    loop {
        match h.helper_state.compare_exchange(
            helper_state::DETACHED,
            helper_state::ATTACHED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                h.helper_pid.store(std::process::id(), Ordering::Release);
                return Ok(());
            }
            Err(_) => {
                let pid = h.helper_pid.load(Ordering::Acquire);
                if pid != 0 && crate::standin::process_alive(pid) {
                    return Err(ServeError::AnotherHelper(pid));
                }
                if !told {
                    log::warn!(
                        "the region still belongs to a helper that is gone (pid {pid}); waiting for its submitter to reset it"
                    );
                    told = true;
                }
                if stop.load(Ordering::Relaxed) {
                    return Err(ServeError::Stopped);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Serves `region` until `stop` is set, then finishes what was submitted and
/// returns; or until the submitter ends the session.
pub fn serve(
    region: &SharedRegion,
    transport: &dyn Transport,
    backend: &mut dyn Backend,
    stop: &AtomicBool,
    opts: ServeOptions,
    stats: &Stats,
) -> Result<Ended, ServeError> {
    let h = region.header();
    transport.claim(region, stop)?;
    // SAFETY: the serve loop is the region's only SQ consumer and CQ producer,
    // and both ends live no longer than `region`. Made after the claim: over
    // ivshmem the submitter resets the rings while attaching.
    let (mut sq, mut cq) = unsafe { (region.sq_consumer(), region.cq_producer()) };
    log::info!(
        "serving: {} MiB data area, {} submission / {} completion entries, backend {}",
        region.geometry().data_size >> 20,
        region.geometry().sq_entries,
        region.geometry().cq_entries,
        backend.name()
    );
    let mut unposted: VecDeque<Cqe> = VecDeque::new();
    let mut done: Vec<Cqe> = Vec::new();
    let mut last_work = Instant::now();
    let mut draining = false;
    let mut failure: Option<ServeError> = None;
    let mut last_stats = Instant::now();
    loop {
        h.heartbeat.fetch_add(1, Ordering::Relaxed);
        if transport.session_over(region) {
            let held = backend.outstanding();
            log::warn!(
                "the submitter ended the session; finishing {held} requests without posting them"
            );
            while backend.outstanding() > 0 {
                h.heartbeat.fetch_add(1, Ordering::Relaxed);
                backend.reap(&mut done, Some(Duration::from_millis(1)));
                done.clear();
            }
            return Ok(Ended::SessionOver);
        }
        if let Some(path) = &opts.stats_file {
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                write_stats(path, stats, backend);
            }
        }
        if stop.load(Ordering::Relaxed) && !draining {
            draining = true;
            h.helper_state
                .store(helper_state::DRAINING, Ordering::Release);
            log::info!("stopping: finishing the requests already submitted");
        }
        // Take what the submitter published.
        let mut batch = Vec::new();
        let taken = loop {
            if batch.len() >= opts.max_batch || failure.is_some() {
                break Ok(());
            }
            match sq.take() {
                Ok(Some(sqe)) => batch.push(sqe),
                Ok(None) => break Ok(()),
                Err(RingError::Corrupt { head, tail }) => {
                    break Err(ServeError::CorruptRing { head, tail })
                }
                Err(RingError::Full) => break Ok(()),
            }
        };
        sq.release();
        if let Err(e) = taken {
            // Finish what the backend holds, then stop: nothing more is read.
            log::error!("{e}");
            failure = Some(e);
            draining = true;
            h.helper_state
                .store(helper_state::DRAINING, Ordering::Release);
        }
        let got_work = !batch.is_empty();
        if got_work {
            stats.record_submitted(&batch);
            backend.submit(batch);
            last_work = Instant::now();
        }
        // Collect and post completions.
        let wait = (!got_work && backend.outstanding() > 0).then_some(Duration::from_micros(200));
        backend.reap(&mut done, wait);
        if !done.is_empty() {
            stats.record_completed(&done);
            unposted.extend(done.drain(..));
            last_work = Instant::now();
        }
        let mut posted = 0;
        while let Some(c) = unposted.front() {
            match cq.stage(*c) {
                Ok(()) => {
                    unposted.pop_front();
                    posted += 1;
                }
                Err(RingError::Full) => break,
                Err(RingError::Corrupt { head, tail }) => {
                    log::error!("the completion ring is corrupt (head {head}, tail {tail})");
                    break;
                }
            }
        }
        if posted > 0 {
            cq.publish();
            transport.completions_posted(region);
        }
        let busy = backend.outstanding() > 0 || !unposted.is_empty();
        if draining && !busy && (failure.is_some() || sq.available().unwrap_or(0) == 0) {
            break;
        }
        if busy || got_work || last_work.elapsed() < opts.spin {
            if !busy {
                std::hint::spin_loop();
            }
            continue;
        }
        // Idle: arm NEED_WAKEUP, look once more, then sleep on the doorbell.
        let bell = h.sq_doorbell.load(Ordering::SeqCst);
        ring::arm(&h.sq_flags, sq_flag::NEED_WAKEUP);
        if sq.available().unwrap_or(1) == 0 {
            transport.wait_for_work(region, bell, opts.idle_tick);
        }
        ring::disarm(&h.sq_flags, sq_flag::NEED_WAKEUP);
    }
    h.helper_state
        .store(helper_state::DETACHED, Ordering::Release);
    h.helper_pid.store(0, Ordering::Relaxed);
    // A waiter parked on the completion doorbell learns of the detach at once.
    h.cq_doorbell.fetch_add(1, Ordering::SeqCst);
    futex_wake(&h.cq_doorbell);
    failure.map_or(Ok(Ended::Stopped), Err)
}

/// Writes a snapshot atomically (temporary file, then rename).
fn write_stats(path: &std::path::Path, stats: &Stats, backend: &dyn Backend) {
    let snap = stats.snapshot(backend.name(), backend.decisions());
    let Ok(json) = serde_json::to_string_pretty(&snap) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        log::debug!("could not write statistics to {}", path.display());
    }
}
