// SPDX-License-Identifier: GPL-2.0-only

//! `serve random`: hostile sessions of random writes and answers.
//!
//! What the random mode leaves alone, and why: the kernel cannot tell a
//! correct answer from a wrong one (see `wrongdata`), so random bytes never
//! go where they would turn an answer posted as correct into wrong data: the
//! data-area writes hit the extents of requests it then fails or leaves
//! unanswered; submission records are written only where the kernel cannot
//! be writing (more than 64 entries past our head) and get an invalid slot;
//! completion records only where the kernel is not reading, and get an
//! invalid generation; indices the other side checks are moved anywhere
//! except "ahead by at most a ring" of the owner's copy, which would let a
//! side overwrite entries the other is reading (the completion tail may move
//! so: we then go on from there, as the kernel does).

use crate::figures::Figures;
use crate::session::{Session, SQ_BUSY};
use crate::util::Rng;
use kgpu_common::abi::{self, Cqe, Sqe};
use kgpu_common::request::check_sqe;
use std::sync::atomic::Ordering;

/// A record of random bytes.
pub fn random_cqe(rng: &mut Rng) -> Cqe {
    Cqe {
        slot: rng.next() as u32,
        gen: rng.next() as u32,
        status: rng.next() as i32,
        backend: rng.next() as u32,
        bytes: rng.next(),
        nanos: rng.next(),
    }
}

/// An index value for a random write that is never "ahead by at most a ring"
/// of `own`: behind it, far ahead, or random.
fn index_not_just_ahead(rng: &mut Rng, own: u32, entries: u32) -> u32 {
    let v = match rng.below(3) {
        0 => rng.next() as u32,
        1 => own.wrapping_sub(1 + rng.below(2 * u64::from(entries)) as u32),
        _ => own.wrapping_add(entries + 1 + rng.below(1 << 20) as u32),
    };
    if v.wrapping_sub(own) <= entries {
        own.wrapping_sub(1)
    } else {
        v
    }
}

/// Random mode: how many sessions are hostile before it behaves.
const RANDOM_SESSIONS: u64 = 8;
/// Random mode: a hostile session ends after this many requests or this long.
pub const RANDOM_SESSION_REQUESTS: u64 = 300;
pub const RANDOM_SESSION_MS: u128 = 4000;

/// One random write somewhere in the region (never into a record or extent
/// the kernel may be reading as a correct answer: see the `random` mode).
pub fn scribble(s: &mut Session, rng: &mut Rng, fig: &mut Figures) {
    let g = s.geom();
    // Mostly places the kernel must ignore or check; the kernel-owned
    // indices (which it never reads back) rarely, as they mostly break our
    // own end of the ring and end the session.
    let target = match rng.below(1000) {
        0..=299 => 0,
        300..=309 => 1,
        310..=314 => 2,
        315..=319 => 3,
        320..=329 => 4,
        330..=664 => 5,
        _ => 6,
    };
    // Index writes store one u32; the others 1 to 16 random bytes.
    let len = if (1..=4).contains(&target) {
        4
    } else {
        1 + rng.below(16) as usize
    };
    match target {
        0 => {
            // Anywhere in the header page: layout fields, flags, doorbells,
            // helper_state, heartbeat, reserved bytes.
            let off = rng.below(u64::from(abi::HEADER_SIZE) - len as u64) as usize;
            // SAFETY: inside the header page of our mapping.
            rng.fill(unsafe { s.r.base.add(off) }, len);
        }
        1 => {
            // Ours: the kernel checks it (a head past its tail or more than
            // a ring behind is corrupt; a head ahead of what we consumed
            // would let the kernel overwrite entries we read: not written).
            let own = s.sq_head();
            let v = index_not_just_ahead(rng, own, g.sq_entries);
            s.sq_idx().head.store(v, Ordering::Release);
        }
        2 => {
            // The kernel's: it never reads it back; our consumer sees it.
            let own = s.sq_idx().tail.load(Ordering::Acquire);
            let v = index_not_just_ahead(rng, own, g.sq_entries);
            s.sq_idx().tail.store(v, Ordering::Release);
        }
        3 => {
            // The kernel's: never read back; our producer sees it.
            let own = s.cq_idx().head.load(Ordering::Acquire);
            let v = index_not_just_ahead(rng, own, g.cq_entries);
            s.cq_idx().head.store(v, Ordering::Release);
        }
        4 => {
            // Ours: the kernel checks it. Ahead by at most a ring, the kernel
            // reads old records (all stale); we go on from there.
            let own = s.cq_tail();
            let v = if rng.chance(50) {
                own.wrapping_add(1 + rng.below(u64::from(g.cq_entries)) as u32)
            } else {
                index_not_just_ahead(rng, own, g.cq_entries)
            };
            s.cq_idx().tail.store(v, Ordering::Release);
            if v.wrapping_sub(own) <= g.cq_entries {
                // Go on after the records the kernel now takes as posted.
                s.resync_cq();
            }
        }
        5 => {
            // A submission entry the kernel cannot be writing (more than
            // SQ_BUSY past our head), with its slot made invalid so that its
            // answer, if we ever read it, is rejected.
            let pos = s
                .sq_head()
                .wrapping_add(SQ_BUSY + rng.below(u64::from(g.sq_entries - SQ_BUSY)) as u32)
                & (g.sq_entries - 1);
            let rec = g.sq_records() as usize + pos as usize * std::mem::size_of::<Sqe>();
            let off = rng.below((std::mem::size_of::<Sqe>() - len) as u64) as usize;
            // SAFETY: inside submission record `pos` of our mapping.
            unsafe {
                rng.fill(s.r.base.add(rec + off), len);
                let slot = s.r.base.add(rec).cast::<u32>();
                std::ptr::write_volatile(slot, std::ptr::read_volatile(slot) | 1 << 31);
            }
        }
        _ => {
            // A completion entry the kernel does not read now (outside
            // [kernel head, our tail)), its generation made invalid.
            let tail = s.cq_tail();
            let head = s.cq_idx().head.load(Ordering::Acquire);
            let used = tail.wrapping_sub(head);
            if used >= g.cq_entries {
                return;
            }
            let pos = tail.wrapping_add(rng.below(u64::from(g.cq_entries - used)) as u32)
                & (g.cq_entries - 1);
            let rec = g.cq_records() as usize + pos as usize * std::mem::size_of::<Cqe>();
            // SAFETY: inside completion record `pos` of our mapping.
            unsafe {
                let gen = s.r.base.add(rec + 4).cast::<u32>();
                std::ptr::write_volatile(gen, std::ptr::read_volatile(gen) | 1 << 31);
                let off = rng.below((std::mem::size_of::<Cqe>() - len) as u64) as usize;
                rng.fill(s.r.base.add(rec + off), len);
                std::ptr::write_volatile(gen, std::ptr::read_volatile(gen) | 1 << 31);
            }
        }
    }
    fig.scribbles[target] += 1;
    fig.scribbled_bytes += len as u64;
}

/// Random bytes over the extents of a request the helper will not answer
/// correctly.
pub fn scribble_extents(s: &Session, rng: &mut Rng, sqe: &Sqe) -> u64 {
    let Ok(x) = check_sqe(sqe, s.geom().data_size) else {
        return 0;
    };
    let mut n = 0;
    for e in [x.input, x.output] {
        if e.len == 0 {
            continue;
        }
        let len = 1 + rng.below(e.len.min(64)) as usize;
        let off = e.off + rng.below(e.len - len as u64 + 1);
        // SAFETY: the extent was checked to lie in the data area.
        rng.fill(unsafe { s.data().add(off as usize) }, len);
        n += len as u64;
    }
    n
}

/// Random mode: the current attach (session) and how many there were.
pub struct RandomSessions {
    /// Requests seen in this session (slot, generation).
    pub seen: std::collections::HashSet<(u32, u32)>,
    pub start: std::time::Instant,
    pub requests: u64,
    count: u64,
}

impl RandomSessions {
    pub fn new() -> Self {
        Self {
            seen: std::collections::HashSet::new(),
            start: std::time::Instant::now(),
            requests: 0,
            count: 1,
        }
    }

    /// Ends the session and attaches again; after `RANDOM_SESSIONS`
    /// sessions the stand-in stops being hostile and serves correctly.
    pub fn restart(&mut self, s: Session, fig: &mut Figures, hostile: &mut bool) -> Session {
        fig.reattaches += 1;
        if self.count >= RANDOM_SESSIONS {
            *hostile = false;
            fig.print("random done");
            println!(
                "kgpu-ktest: random: done after {} sessions, serving correctly",
                self.count
            );
        }
        self.count += 1;
        let s = s.restart();
        self.seen.clear();
        self.start = std::time::Instant::now();
        self.requests = 0;
        s
    }
}
