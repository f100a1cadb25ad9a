// SPDX-License-Identifier: GPL-2.0-only

//! Submission: reserve, fill, commit, abort and cancel.

use super::reap::mark_broken;
use super::stats::svc;
use super::{now_ns, SlotCtx, SlotState, STATE};
use crate::api_types::{DoneFn, SubmitError};
use crate::kcommon::abi::{sq_flag, Extent, Sqe};
use crate::kcommon::ring::{must_wake, RingError};
use crate::kcommon::slots::Ticket;
use crate::shim;
use core::ffi::c_void;
use core::sync::atomic::Ordering;

/// Space reserved for a request: a slot and its extents, data not yet copied.
pub(crate) struct Reservation {
    pub(crate) epoch: u64,
    pub(crate) ticket: Ticket,
    data: *mut u8,
    pub(crate) key: Extent,
    pub(crate) input: Extent,
    pub(crate) output: Extent,
    pub(crate) aux: Extent,
}

impl Reservation {
    /// Copies `src` into the data area at `e`.
    ///
    /// # Safety
    /// The reservation must be live (reserved, not yet committed or aborted)
    /// and `e` one of its extents with `src.len() <= e.len`.
    pub(crate) unsafe fn fill(&self, e: Extent, src: &[u8]) {
        // SAFETY: the extent came from the allocator over this data area and
        // the mapping is held alive by the reservation's user count; the
        // helper may read it concurrently, which it may not rely on anyway.
        unsafe {
            core::ptr::copy_nonoverlapping(src.as_ptr(), self.data.add(e.off as usize), src.len())
        };
    }

    /// Gathers `e.len` bytes of a scatterlist (from `skip` on) into `e`;
    /// returns the bytes copied.
    ///
    /// # Safety
    /// As for [`Reservation::fill`]; `sgl` must be a valid scatterlist.
    pub(crate) unsafe fn fill_from_sg(&self, e: Extent, sgl: *mut c_void, skip: usize) -> usize {
        // SAFETY: the destination is the reservation's extent (see `fill`);
        // the caller vouches for the list.
        unsafe {
            shim::kgpu_shim_sg_to_buf(sgl, skip, self.data.add(e.off as usize), e.len as usize)
        }
    }
}

/// Sizes of the parts of a request.
pub(crate) struct Sizes {
    pub(crate) service: u16,
    pub(crate) key: usize,
    pub(crate) input: usize,
    pub(crate) output: usize,
    pub(crate) aux: usize,
    pub(crate) in_place: bool,
}

pub(crate) fn reserve(z: &Sizes) -> core::result::Result<Reservation, SubmitError> {
    let st = svc(z.service);
    let r = STATE.with(|s| {
        let Some(a) = s.att.as_mut() else {
            return Err(SubmitError::NoHelper);
        };
        if !a.takes_requests() {
            return Err(SubmitError::NoHelper);
        }
        match a.sq.space() {
            Ok(free) if free > a.sq_reserved => {}
            Ok(_) => return Err(SubmitError::Busy),
            Err(_) => {
                mark_broken(a, "submission ring head out of range");
                return Err(SubmitError::NoHelper);
            }
        }
        let out_len = if z.in_place { 0 } else { z.output };
        // What can never fit is not "busy".
        let chunk = a.alloc.chunk_size();
        let need: u64 = [z.key, z.input, out_len, z.aux]
            .iter()
            .map(|&l| (l as u64).div_ceil(chunk) * chunk)
            .sum();
        if need > a.alloc.total_bytes() {
            return Err(SubmitError::TooLarge);
        }
        let t = a.slots.alloc(z.output as u64).ok_or(SubmitError::Busy)?;
        let mut ext = [Extent::EMPTY; 4];
        for (i, len) in [z.key, z.input, out_len, z.aux].into_iter().enumerate() {
            match a.alloc.alloc(len as u64) {
                Some(e) => ext[i] = e,
                None => {
                    for e in &ext[..i] {
                        let _ = a.alloc.free(*e);
                    }
                    a.slots.release(t);
                    return Err(SubmitError::Busy);
                }
            }
        }
        if z.in_place {
            ext[2] = ext[1];
        }
        a.ctx[t.slot as usize] = SlotCtx {
            state: SlotState::Reserved,
            key: ext[0],
            input: ext[1],
            output: ext[2],
            aux: ext[3],
            in_place: z.in_place,
            service: z.service,
            bytes_in: z.input as u64,
            ..SlotCtx::FREE
        };
        a.sq_reserved += 1;
        a.users.fetch_add(1, Ordering::AcqRel);
        Ok(Reservation {
            epoch: a.epoch,
            ticket: t,
            data: a.data(),
            key: ext[0],
            input: ext[1],
            output: ext[2],
            aux: ext[3],
        })
    });
    match &r {
        Err(SubmitError::NoHelper) => st.nohelper.add(1),
        Err(SubmitError::Busy) => st.busy.add(1),
        _ => {}
    }
    r
}

/// Gives a reservation back without submitting it.
pub(crate) fn abort(r: Reservation) {
    STATE.with(|s| {
        if let Some(a) = s.att.as_mut() {
            if a.epoch == r.epoch {
                a.retire(r.ticket);
                a.sq_reserved -= 1;
                a.put_user();
            }
        }
    });
}

/// The fields of a submission record that are not extents.
pub(crate) struct Record {
    pub(crate) op: u16,
    pub(crate) key_tag: u64,
    pub(crate) unit: u32,
    pub(crate) count: u32,
    pub(crate) params: [u8; crate::kcommon::abi::PARAMS_LEN],
}

/// Publishes a filled reservation; `done(ctx, ..)` runs exactly once unless
/// this returns an error.
pub(crate) fn commit(
    r: Reservation,
    service: u16,
    rec: &Record,
    done: DoneFn,
    ctx: usize,
) -> core::result::Result<(), SubmitError> {
    let res = STATE.with(|s| {
        let Some(a) = s.att.as_mut() else {
            return Err(SubmitError::NoHelper);
        };
        if a.epoch != r.epoch {
            return Err(SubmitError::NoHelper);
        }
        a.sq_reserved -= 1;
        let sqe = Sqe {
            slot: r.ticket.slot,
            gen: r.ticket.gen,
            service,
            op: rec.op,
            flags: 0,
            key_tag: rec.key_tag,
            key: r.key,
            input: r.input,
            output: r.output,
            aux: r.aux,
            unit: rec.unit,
            count: rec.count,
            params: rec.params,
        };
        let staged = if a.draining {
            Err(SubmitError::NoHelper)
        } else {
            match a.sq.push(sqe) {
                Ok(()) => Ok(()),
                Err(RingError::Full) | Err(RingError::Corrupt { .. }) => {
                    // Space was reserved: only a consumer moving its head
                    // backwards gets here.
                    mark_broken(a, "submission ring head moved backwards");
                    Err(SubmitError::NoHelper)
                }
            }
        };
        match staged {
            Ok(()) => {
                let c = &mut a.ctx[r.ticket.slot as usize];
                c.state = SlotState::Pending;
                c.done = Some(done);
                c.ctx = ctx;
                c.submitted_ns = now_ns();
                if must_wake(a.sq_flags(), sq_flag::NEED_WAKEUP) {
                    a.sq_doorbell().fetch_add(1, Ordering::Release);
                }
            }
            Err(_) => a.retire(r.ticket),
        }
        a.put_user();
        staged
    });
    let st = svc(service);
    match res {
        Ok(()) => {
            st.submitted.add(1);
            shim::wake_helper();
            shim::kick_poll();
        }
        Err(_) => st.nohelper.add(1),
    }
    res
}

/// Gives up on a request still waiting for the helper: its callback will not
/// run. Returns false when it is completing or completed (the callback runs
/// or ran).
pub(crate) fn cancel(epoch: u64, t: Ticket) -> bool {
    let service = STATE.with(|s| {
        let a = s.att.as_mut()?;
        if a.epoch != epoch || !a.slots.is_current(t.slot, t.gen) {
            return None;
        }
        let c = &mut a.ctx[t.slot as usize];
        if c.state != SlotState::Pending {
            return None;
        }
        c.state = SlotState::Zombie;
        Some(c.service)
    });
    match service {
        Some(sv) => {
            svc(sv).timeouts.add(1);
            true
        }
        None => false,
    }
}
