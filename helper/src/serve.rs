//! The serve loop: drain the submission ring, hand batches to a backend, post
//! completions, sleep through the NEED_WAKEUP handshake when idle.

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
    /// Sleeps until the submitter rings (the doorbell moves past `bell`) or
    /// `timeout` passes.
    fn wait_for_work(&self, region: &SharedRegion, bell: u32, timeout: Duration);
    /// Tells the submitter that completions were posted.
    fn completions_posted(&self, region: &SharedRegion);
}

/// A region file or memfd shared with a userspace submitter: futex doorbells.
pub struct RegionTransport;

impl Transport for RegionTransport {
    fn wait_for_work(&self, region: &SharedRegion, bell: u32, timeout: Duration) {
        futex_wait(&region.header().sq_doorbell, bell, timeout);
    }

    fn completions_posted(&self, region: &SharedRegion) {
        let h = region.header();
        if ring::must_wake(&h.cq_flags, cq_flag::NEED_WAKEUP) {
            h.cq_doorbell.fetch_add(1, Ordering::SeqCst);
            futex_wake(&h.cq_doorbell);
        }
    }
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

/// Serves `region` until `stop` is set, then finishes what was submitted and returns.
pub fn serve(
    region: &SharedRegion,
    transport: &dyn Transport,
    backend: &mut dyn Backend,
    stop: &AtomicBool,
    opts: ServeOptions,
    stats: &Stats,
) -> Result<(), ServeError> {
    let h = region.header();
    // SAFETY: the serve loop is the region's only SQ consumer and CQ producer,
    // and both ends live no longer than `region`.
    let (mut sq, mut cq) = unsafe { (region.sq_consumer(), region.cq_producer()) };
    claim(region, stop)?;
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
    failure.map_or(Ok(()), Err)
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
