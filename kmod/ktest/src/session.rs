// SPDX-License-Identifier: GPL-2.0-only

//! One attached region and the helper's ends of its rings.

use crate::dev::{attach, do_ioctl, open_dev, stat, DEV};
use crate::region::Region;
use crate::sys::{poll, PollFd, POLLHUP, POLLIN};
use kgpu_common::abi::{Cqe, RingIndices, Sqe};
use kgpu_common::ioctl::KGPU_IOC_DOORBELL;
use kgpu_common::region::Geometry;
use kgpu_common::ring::{Consumer, Producer, RingError};
use std::ffi::{c_int, c_short};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::exit;
use std::sync::atomic::Ordering;

/// One attached region and the helper's ends of its rings.
pub struct Session {
    /// Dropped first: closing detaches before the region is unmapped.
    pub f: File,
    pub r: Region,
    pub sq: Consumer<Sqe>,
    pub cq: Producer<Cqe>,
}

/// The helper's ends of the rings of `r`, starting from the indices found there.
fn ring_ends(r: &Region) -> (Consumer<Sqe>, Producer<Cqe>) {
    let g = r.geom;
    // SAFETY: offsets from the geometry we created; the mapping lives as long
    // as the region, which outlives the ends (both live in one `Session`); the
    // callers drop the previous ends first, so there is one consumer of the SQ
    // and one producer of the CQ on this side.
    unsafe {
        (
            Consumer::<Sqe>::new(
                r.base.add(g.sq_off as usize).cast::<RingIndices>(),
                r.base.add(g.sq_records() as usize).cast(),
                g.sq_entries,
            ),
            Producer::<Cqe>::new(
                r.base.add(g.cq_off as usize).cast::<RingIndices>(),
                r.base.add(g.cq_records() as usize).cast(),
                g.cq_entries,
            ),
        )
    }
}

impl Session {
    pub fn start() -> Session {
        let f = open_dev().unwrap_or_else(|e| {
            eprintln!("kgpu-ktest: open {DEV}: {e}");
            exit(1)
        });
        let r = Region::new(256, 512, 8 << 20);
        let rc = attach(&f, &r.args());
        if rc != 0 {
            eprintln!("kgpu-ktest: attach: errno {rc}");
            exit(1);
        }
        Session::with(f, r)
    }

    pub fn with(f: File, r: Region) -> Session {
        let (sq, cq) = ring_ends(&r);
        Session { f, r, sq, cq }
    }

    pub fn geom(&self) -> Geometry {
        self.r.geom
    }

    pub fn sq_idx(&self) -> &RingIndices {
        // SAFETY: the submission ring's indices inside our live mapping.
        unsafe {
            &*self
                .r
                .base
                .add(self.r.geom.sq_off as usize)
                .cast::<RingIndices>()
        }
    }

    pub fn cq_idx(&self) -> &RingIndices {
        // SAFETY: the completion ring's indices inside our live mapping.
        unsafe {
            &*self
                .r
                .base
                .add(self.r.geom.cq_off as usize)
                .cast::<RingIndices>()
        }
    }

    pub fn data(&self) -> *mut u8 {
        // SAFETY: the data area lies inside our mapping.
        unsafe { self.r.base.add(self.r.geom.data_off as usize) }
    }

    pub fn doorbell(&self) -> i32 {
        do_ioctl(&self.f, KGPU_IOC_DOORBELL, std::ptr::null())
    }

    pub fn heartbeat(&self) {
        self.r.header().heartbeat.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits up to `ms` for the kernel; returns poll's `revents`.
    pub fn wait(&self, ms: c_int) -> c_short {
        let mut p = PollFd {
            fd: self.f.as_raw_fd(),
            events: POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { poll(&mut p, 1, ms) };
        p.revents
    }

    pub fn hung_up(&self) -> bool {
        self.wait(0) & POLLHUP != 0
    }

    /// Re-reads the completion ring's indices (after writing them behind the
    /// producer's back).
    pub fn resync_cq(&mut self) {
        let (_, cq) = ring_ends(&self.r);
        self.cq = cq;
    }

    /// Our own completion-ring tail (what `publish` stores).
    pub fn cq_tail(&self) -> u32 {
        self.cq.publish();
        self.cq_idx().tail.load(Ordering::Acquire)
    }

    /// Our own submission-ring head (what `release` stores).
    pub fn sq_head(&self) -> u32 {
        self.sq.release();
        self.sq_idx().head.load(Ordering::Acquire)
    }

    /// Posts one record; false when the ring stays full or is broken.
    pub fn push(&mut self, c: Cqe) -> bool {
        for _ in 0..2000 {
            match self.cq.push(c) {
                Ok(()) => return true,
                Err(RingError::Full) => {
                    // Full: let the kernel reap, then retry.
                    self.doorbell();
                    if self.hung_up() {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(RingError::Corrupt { .. }) => return false,
            }
        }
        false
    }

    /// Closes the device (the kernel detaches) and attaches a fresh region.
    pub fn restart(self) -> Session {
        drop(self);
        let state = stat("state");
        if state != "detached" {
            println!("not ok: state after close is '{state}', wanted 'detached'");
        }
        Session::start()
    }
}

/// In-flight submissions live in the first `SQ_BUSY` entries from the
/// helper's head: the self-test keeps at most 64 requests in flight.
pub const SQ_BUSY: u32 = 64;
