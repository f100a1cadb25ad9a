// SPDX-License-Identifier: GPL-2.0-only

//! Completion: reaping, timeouts, the heartbeat, the kernel-side poll,
//! and a helper that broke the ring protocol.

use super::stats::{svc, SvcStats, BAD_COMPLETIONS, LATE_COMPLETIONS, POLLS, RING_CORRUPT, STALLS};
use super::{now_ns, Attached, SlotCtx, SlotState, REAP_BATCH, STATE, TIMEOUT_SCAN_NS};
use crate::api_types::{DoneFn, OutView, Outcome};
use crate::kcommon::abi::Status;
use crate::kcommon::slots::Ticket;
use crate::{shim, Counter};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

pub(super) fn mark_broken(a: &mut Attached, why: &str) {
    if !a.broken {
        RING_CORRUPT.add(1);
        pr_err!(
            "helper {} broke the ring protocol ({}); no more requests go to it\n",
            a.pid,
            why
        );
    }
    a.broken = true;
    a.draining = true;
}

struct Reaped {
    ticket: Ticket,
    done: Option<DoneFn>,
    ctx: usize,
    status: Status,
    backend: u32,
    out_ptr: *const u8,
    bytes: usize,
    service: u16,
    bytes_in: u64,
    latency_ns: u64,
}

const NO_REAPED: Option<Reaped> = None;

/// Requests given up on (a broken helper, a timeout, a stopped heartbeat):
/// marked `Zombie` under the lock, at most `REAP_BATCH` per round trip,
/// their callbacks run after it is dropped. Their extents stay allocated
/// until the helper completes them or detaches.
struct Doomed {
    dead: [Option<(DoneFn, usize, u16)>; REAP_BATCH],
    n: usize,
}

impl Doomed {
    const fn new() -> Self {
        Doomed {
            dead: [None; REAP_BATCH],
            n: 0,
        }
    }

    fn is_full(&self) -> bool {
        self.n == REAP_BATCH
    }

    /// Gives up on a pending slot and keeps its callback (the caller checked
    /// that there is room).
    fn take(&mut self, c: &mut SlotCtx) {
        c.state = SlotState::Zombie;
        if let Some(d) = c.done {
            self.dead[self.n] = Some((d, c.ctx, c.service));
            self.n += 1;
        }
    }

    /// Outside the lock, preemption still off: counts each request in
    /// `counter` of its service and runs its callback with `status`.
    fn fail(&self, status: Status, counter: fn(&SvcStats) -> &Counter) {
        for d in self.dead.iter().take(self.n).flatten() {
            counter(svc(d.2)).add(1);
            let o = Outcome {
                status,
                backend: 0,
                out: OutView::empty(),
            };
            (d.0)(d.1, &o);
        }
    }
}

/// Takes completions off the ring, validates them and runs the callbacks.
pub(crate) fn reap() {
    loop {
        // Callbacks run with preemption off (see `shim::NoPreempt`), from the
        // moment their slots are marked until they are released.
        let _np = shim::NoPreempt::new();
        let mut batch: [Option<Reaped>; REAP_BATCH] = [NO_REAPED; REAP_BATCH];
        let mut n = 0usize;
        let mut more = false;
        let mut dead = Doomed::new();
        let epoch = STATE.with(|s| {
            let a = s.att.as_mut()?;
            if a.detaching {
                return None;
            }
            if !a.broken {
                while n < REAP_BATCH {
                    let cqe = match a.cq.take() {
                        Ok(Some(c)) => c,
                        Ok(None) => break,
                        Err(_) => {
                            mark_broken(a, "completion ring tail out of range");
                            break;
                        }
                    };
                    let c = match a.slots.complete(&cqe) {
                        Ok(c) => c,
                        Err(e) => {
                            if BAD_COMPLETIONS.get() < 10 {
                                pr_warn!(
                                    "ignoring completion slot {} gen {}: {}\n",
                                    cqe.slot,
                                    cqe.gen,
                                    e.as_str()
                                );
                            }
                            BAD_COMPLETIONS.add(1);
                            continue;
                        }
                    };
                    let t = Ticket {
                        slot: c.slot,
                        gen: c.gen,
                    };
                    let sc = a.ctx[c.slot as usize];
                    match sc.state {
                        SlotState::Pending => {
                            a.ctx[c.slot as usize].state = SlotState::Completing;
                            let ok = c.status == Status::Ok;
                            batch[n] = Some(Reaped {
                                ticket: t,
                                done: sc.done,
                                ctx: sc.ctx,
                                status: c.status,
                                backend: c.backend,
                                // SAFETY: the output extent is the kernel's
                                // own allocation inside the data area.
                                out_ptr: unsafe { a.data().add(sc.output.off as usize) },
                                bytes: if ok { c.bytes as usize } else { 0 },
                                service: sc.service,
                                bytes_in: sc.bytes_in,
                                latency_ns: (now_ns() - sc.submitted_ns).max(0) as u64,
                            });
                            n += 1;
                        }
                        SlotState::Zombie => {
                            LATE_COMPLETIONS.add(1);
                            a.retire(t);
                        }
                        _ => {
                            // Reserved (never published) or already completing:
                            // the helper invented or duplicated it.
                            BAD_COMPLETIONS.add(1);
                        }
                    }
                }
                a.cq.release();
                more = n == REAP_BATCH;
            }
            if a.broken {
                // Fail everything still waiting; their extents stay allocated
                // (the helper may still write them) until detach.
                for i in 0..a.ctx.len() {
                    if dead.is_full() {
                        more = true;
                        break;
                    }
                    let c = &mut a.ctx[i];
                    if c.state == SlotState::Pending {
                        dead.take(c);
                    }
                }
            }
            if n > 0 {
                a.users.fetch_add(1, Ordering::AcqRel);
            }
            Some(a.epoch)
        });
        let Some(epoch) = epoch else { return };

        dead.fail(Status::BackendError, |st| &st.errors);
        if n == 0 {
            if more {
                continue;
            }
            return;
        }
        for r in batch.iter().take(n).flatten() {
            let st = svc(r.service);
            if r.status == Status::Ok {
                st.ok.add(1);
                st.bytes_in.add(r.bytes_in);
                st.bytes_out.add(r.bytes as u64);
                if r.backend == crate::kcommon::abi::backend::GPU {
                    st.gpu_ok.add(1);
                    st.gpu_bytes.add(r.bytes_in);
                }
            } else {
                st.errors.add(1);
            }
            st.latency_ns.add(r.latency_ns);
            if let Some(done) = r.done {
                let o = Outcome {
                    status: r.status,
                    backend: r.backend,
                    // SAFETY: `bytes` was checked against the output extent's
                    // length by the in-flight table; the mapping is kept alive
                    // by the user count taken above.
                    out: unsafe { OutView::new(r.out_ptr, r.bytes) },
                };
                done(r.ctx, &o);
            }
        }
        STATE.with(|s| {
            if let Some(a) = s.att.as_mut() {
                if a.epoch == epoch {
                    for r in batch.iter().take(n).flatten() {
                        a.retire(r.ticket);
                    }
                    a.put_user();
                }
            }
        });
        if !more {
            return;
        }
    }
}

/// Reaps completions, then fails what waited too long (and notices a
/// stopped heartbeat).
pub(crate) fn service() {
    reap();
    expire();
}

/// Fails requests that waited longer than `request_timeout_ms`.
fn expire() {
    let limit_ms = shim::request_timeout_ms();
    let limit_ns = if limit_ms == 0 {
        i64::MAX
    } else {
        i64::from(limit_ms) * 1_000_000
    };
    let hb_ms = shim::heartbeat_timeout_ms();
    let now = now_ns();
    loop {
        // Preemption off from marking to callback (see `shim::NoPreempt`).
        let _np = shim::NoPreempt::new();
        let mut dead = Doomed::new();
        let mut more = false;
        STATE.with(|s| {
            let Some(a) = s.att.as_mut() else { return };
            if a.detaching || now - a.last_scan_ns < TIMEOUT_SCAN_NS {
                return;
            }
            // The heartbeat: a helper that stopped beating gets nothing more
            // and what it holds fails now rather than at the request timeout.
            let hb = a.heartbeat();
            if hb != a.hb_last {
                let _ = a.is_stalled();
                a.hb_last = hb;
                a.hb_changed_ns = now;
            } else if hb_ms != 0
                && !a.stalled
                && now - a.hb_changed_ns > i64::from(hb_ms) * 1_000_000
            {
                a.stalled = true;
                STALLS.add(1);
                pr_warn!(
                    "helper {}: no heartbeat for {} ms; its requests fail and new ones go to the CPU\n",
                    a.pid,
                    hb_ms
                );
            }
            let stalled = a.stalled;
            for i in 0..a.ctx.len() {
                let c = &mut a.ctx[i];
                if c.state == SlotState::Pending && (stalled || now - c.submitted_ns > limit_ns) {
                    if dead.is_full() {
                        more = true;
                        break;
                    }
                    dead.take(c);
                }
            }
            if !more {
                a.last_scan_ns = now;
            }
        });
        dead.fail(Status::TimedOut, |st| &st.timeouts);
        if !more {
            return;
        }
    }
}

/// The bounded kernel-side poll: reaps, expires, and re-arms itself while
/// requests are in flight.
pub(crate) fn poll_work() {
    POLLS.add(1);
    service();
    let again = STATE
        .with(|s| matches!(s.att.as_ref(), Some(a) if !a.detaching && a.slots.in_flight() > 0));
    if again {
        shim::kick_poll();
    }
}
