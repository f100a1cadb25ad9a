// SPDX-License-Identifier: GPL-2.0-only

//! `serve race`: a second thread rewrites completion records while the
//! kernel copies them.
//!
//! The race mode is the exception: it writes, on purpose, records the kernel
//! is reading, some of them valid answers for another request, so it can make
//! the kernel accept a wrong answer (as `wrongdata` does). What it checks is
//! that the kernel validates its own copy of each record: no request
//! completed twice, none lost, nothing touched outside the region.

use crate::session::Session;
use crate::util::Rng;
use kgpu_common::abi::{Cqe, RingIndices, Sqe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Race mode: correct answers posted while the racer runs.
pub const RACE_REQUESTS: u64 = 2000;
/// Race mode: (slot, generation) pairs of recent submissions, for the racer.
const RACE_RECENT: usize = 64;
/// Race mode: at most one racing write per this many answers posted, so
/// that most answers still get through and the kernel keeps serving.
const RACE_EVERY: u64 = 4;

/// The completion ring of a live mapping, for the racer thread.
struct RaceTarget {
    idx: *const RingIndices,
    records: *mut Cqe,
    entries: u32,
}

// SAFETY: the pointers lie in the session's mapping, which lives until the
// racer is stopped and joined (or the process exits).
unsafe impl Send for RaceTarget {}

/// Race mode: a thread rewriting completion records while the kernel copies
/// them.
pub struct Racer {
    stop: Arc<AtomicBool>,
    recent: Arc<Vec<AtomicU64>>,
    answers: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<(u64, u64)>,
}

/// Two consecutive 4-byte fields of a record (slot and generation, status
/// and backend) as one 8-byte word, as they lie in memory.
fn pair_word(first: u32, second: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&first.to_ne_bytes());
    b[4..].copy_from_slice(&second.to_ne_bytes());
    u64::from_ne_bytes(b)
}

impl Racer {
    pub fn start(s: &Session, seed: u64) -> Racer {
        let g = s.geom();
        let t = RaceTarget {
            idx: s.cq_idx(),
            // SAFETY: an offset from the geometry we created, inside the mapping.
            records: unsafe { s.r.base.add(g.cq_records() as usize) }.cast::<Cqe>(),
            entries: g.cq_entries,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let recent: Arc<Vec<AtomicU64>> =
            Arc::new((0..RACE_RECENT).map(|_| AtomicU64::new(0)).collect());
        let answers = Arc::new(AtomicU64::new(0));
        let (stop2, recent2, answers2) = (stop.clone(), recent.clone(), answers.clone());
        let thread = std::thread::spawn(move || race(t, &stop2, &recent2, &answers2, seed));
        Racer {
            stop,
            recent,
            answers,
            thread,
        }
    }

    pub fn saw(&self, n: u64, sqe: &Sqe) {
        self.recent[n as usize % RACE_RECENT]
            .store(pair_word(sqe.slot, sqe.gen), Ordering::Relaxed);
    }

    pub fn answered(&self, n: u64) {
        self.answers.store(n, Ordering::Relaxed);
    }

    /// Stops the thread; returns (writes, writes into unconsumed records).
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// The racer's loop: one 8-byte store at a time into a record between the
/// kernel's head and our tail (published, not yet consumed: the kernel may be
/// copying it), or just past our tail (about to be published). It watches the
/// indices and writes as soon as a record is pending, at most once per
/// `RACE_EVERY` answers; after 2 ms with none pending it writes past the tail.
fn race(
    t: RaceTarget,
    stop: &AtomicBool,
    recent: &[AtomicU64],
    answers: &AtomicU64,
    seed: u64,
) -> (u64, u64) {
    let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let (mut writes, mut unconsumed) = (0u64, 0u64);
    let off_status = std::mem::offset_of!(Cqe, status);
    let off_bytes = std::mem::offset_of!(Cqe, bytes);
    let mut next = RACE_EVERY;
    let mut spins = 0u32;
    let mut armed = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        }
        if answers.load(Ordering::Relaxed) < next {
            armed = std::time::Instant::now();
            std::hint::spin_loop();
            continue;
        }
        // SAFETY: the completion ring's indices in the live mapping.
        let idx = unsafe { &*t.idx };
        let head = idx.head.load(Ordering::Acquire);
        let tail = idx.tail.load(Ordering::Acquire);
        let pending = tail.wrapping_sub(head);
        let pos = if (1..=t.entries).contains(&pending) {
            unconsumed += 1;
            head.wrapping_add(rng.below(u64::from(pending)) as u32)
        } else if armed.elapsed().as_millis() >= 2 {
            tail.wrapping_add(rng.below(4) as u32)
        } else {
            std::hint::spin_loop();
            continue;
        };
        next = answers.load(Ordering::Relaxed) + RACE_EVERY;
        armed = std::time::Instant::now();
        let (off, v) = match rng.below(4) {
            0 => (
                0,
                recent[rng.below(RACE_RECENT as u64) as usize].load(Ordering::Relaxed),
            ),
            1 => (0, rng.next()),
            // Status 0 (Ok) .. 9, any backend.
            2 => (
                off_status,
                pair_word(rng.below(10) as u32, rng.next() as u32),
            ),
            _ => (off_bytes, rng.below(8192)),
        };
        // SAFETY: `pos` masked to the ring: a record of the live mapping,
        // 8-aligned (records are 32 bytes from an aligned offset). The
        // kernel reads it concurrently, on purpose; it only ever copies it.
        unsafe {
            let rec = t.records.add((pos & (t.entries - 1)) as usize).cast::<u8>();
            AtomicU64::from_ptr(rec.add(off).cast::<u64>()).store(v, Ordering::Relaxed);
        }
        writes += 1;
    }
    (writes, unconsumed)
}
