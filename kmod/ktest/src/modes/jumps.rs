// SPDX-License-Identifier: GPL-2.0-only

//! `serve jumps`: head/tail jumps, one per session, each checked against the
//! kernel's counters and state.

use crate::dev::{stat, stat_u64};
use crate::figures::Figures;
use crate::session::{Session, SQ_BUSY};
use crate::util::Checks;
use std::sync::atomic::Ordering;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Jump {
    /// CQ tail ahead by exactly one ring: the kernel reads a whole ring of
    /// old records, all of them stale.
    CqFullRing,
    /// CQ tail ahead by a ring and one.
    CqPastRing,
    /// CQ tail ahead by 2^31.
    CqFar,
    /// CQ tail one behind the kernel's head.
    CqBack,
    /// CQ tail set to u32::MAX (a counter wrapped the wrong way).
    CqWrap,
    /// SQ head past the kernel's tail.
    SqPastTail,
    /// SQ head more than a ring behind the tail.
    SqBehind,
    /// SQ head half a ring backwards (legal: the kernel sees less space).
    SqBackHalf,
}

pub const JUMPS: [Jump; 8] = [
    Jump::CqFullRing,
    Jump::CqPastRing,
    Jump::CqFar,
    Jump::CqBack,
    Jump::CqWrap,
    Jump::SqPastTail,
    Jump::SqBehind,
    Jump::SqBackHalf,
];

impl Jump {
    fn fatal(self) -> bool {
        !matches!(self, Jump::CqFullRing | Jump::SqBackHalf)
    }
}

/// Waits until the kernel has consumed every completion we posted.
fn catch_up(s: &Session) -> bool {
    for _ in 0..2000 {
        let t = s.cq_tail();
        if s.cq_idx().head.load(Ordering::Acquire) == t {
            return true;
        }
        s.doorbell();
        s.heartbeat();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// Polls `f` for up to `ms` milliseconds.
fn eventually(ms: u64, s: &Session, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..ms / 5 {
        if f() {
            return true;
        }
        s.heartbeat();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    f()
}

/// Performs one jump and checks the kernel's reaction; returns the session
/// to go on with.
pub fn do_jump(mut s: Session, j: Jump, c: &mut Checks, fig: &mut Figures) -> Session {
    let g = s.geom();
    let bad0 = stat_u64("bad_completions");
    let corrupt0 = stat_u64("ring_corrupt");
    if !catch_up(&s) {
        c.check(
            &format!("{j:?}: kernel consumed our completions"),
            false,
            "it did not".into(),
        );
    }
    let t = s.cq_tail();
    match j {
        Jump::CqFullRing => s
            .cq_idx()
            .tail
            .store(t.wrapping_add(g.cq_entries), Ordering::Release),
        Jump::CqPastRing => s
            .cq_idx()
            .tail
            .store(t.wrapping_add(g.cq_entries + 1), Ordering::Release),
        Jump::CqFar => s
            .cq_idx()
            .tail
            .store(t.wrapping_add(1 << 31), Ordering::Release),
        Jump::CqBack => s.cq_idx().tail.store(t.wrapping_sub(1), Ordering::Release),
        Jump::CqWrap => s.cq_idx().tail.store(u32::MAX, Ordering::Release),
        Jump::SqPastTail => {
            let ktail = s.sq_idx().tail.load(Ordering::Acquire);
            s.sq_idx()
                .head
                .store(ktail.wrapping_add(SQ_BUSY), Ordering::Release);
        }
        Jump::SqBehind => {
            let h = s.sq_head();
            s.sq_idx()
                .head
                .store(h.wrapping_sub(g.sq_entries + 1), Ordering::Release);
        }
        Jump::SqBackHalf => {
            let h = s.sq_head();
            s.sq_idx()
                .head
                .store(h.wrapping_sub(g.sq_entries / 2), Ordering::Release);
        }
    }
    s.doorbell();
    if j.fatal() {
        let hup = eventually(5000, &s, || {
            s.doorbell();
            s.hung_up()
        });
        c.check(
            &format!("{j:?}: kernel hangs up"),
            hup,
            "no POLLHUP within 5 s".into(),
        );
        let state = stat("state");
        c.check(
            &format!("{j:?}: state broken"),
            state == "broken",
            format!("state '{state}'"),
        );
        let d = stat_u64("ring_corrupt").wrapping_sub(corrupt0);
        c.check(
            &format!("{j:?}: ring_corrupt +1"),
            d == 1,
            format!("ring_corrupt +{d}"),
        );
        fig.hangups += u64::from(hup);
        fig.reattaches += 1;
        return s.restart();
    }
    match j {
        Jump::CqFullRing => {
            let n = u64::from(g.cq_entries);
            fig.bad_records += n;
            let got = eventually(3000, &s, || {
                stat_u64("bad_completions").wrapping_sub(bad0) >= n
            });
            let d = stat_u64("bad_completions").wrapping_sub(bad0);
            c.check(
                &format!("{j:?}: all {n} old records rejected"),
                got && d == n,
                format!("bad_completions +{d}"),
            );
            s.resync_cq();
        }
        _ => {
            std::thread::sleep(std::time::Duration::from_millis(300));
            s.heartbeat();
            s.sq.release();
        }
    }
    let d = stat_u64("ring_corrupt").wrapping_sub(corrupt0);
    c.check(
        &format!("{j:?}: not treated as corruption"),
        d == 0 && !s.hung_up(),
        format!("ring_corrupt +{d}, state {}", stat("state")),
    );
    s
}
