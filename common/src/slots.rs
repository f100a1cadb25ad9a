//! The submitter's table of requests in flight, and the validation of every
//! completion the helper writes.
//!
//! A request is named by `(slot, gen)`. The slot indexes this table; the
//! generation is bumped each time the slot is reused, so a completion that
//! arrives late (after a timeout redid the request on the CPU and the slot was
//! reused) is recognised as stale, and a duplicate completion finds its slot
//! free. [`Inflight::complete`] is total: any [`Cqe`] bit pattern yields a
//! result or an error, without panicking or indexing out of bounds.

use super::abi::{Cqe, Status};
use core::ops::DerefMut;

/// One slot of the table. Lives in memory the submitter owns (never shared).
#[derive(Clone, Copy, Debug, Default)]
pub struct SlotEntry {
    gen: u32,
    busy: bool,
    /// Next free slot (free list link), meaningful while free.
    next: u32,
    /// Most output bytes the request may report.
    out_len: u64,
}

/// A request just given a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// Slot index.
    pub slot: u32,
    /// Generation to put in the [`super::abi::Sqe`].
    pub gen: u32,
}

/// A validated completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Slot of the finished request (still reserved until [`Inflight::release`]).
    pub slot: u32,
    /// Its generation.
    pub gen: u32,
    /// Its status.
    pub status: Status,
    /// Output bytes written (≤ the request's output length).
    pub bytes: u64,
    /// The backend that ran it.
    pub backend: u32,
}

/// Why a completion was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionError {
    /// The slot index is outside the table.
    SlotOutOfRange,
    /// The slot holds no request: a duplicate or invented completion.
    NotInFlight,
    /// The slot holds a newer request than the one completed.
    StaleGeneration,
    /// The status value is not a known [`Status`].
    BadStatus,
    /// More bytes reported than the request's output can hold, or bytes on error.
    BadBytes,
}

impl CompletionError {
    /// A one-line description.
    pub const fn as_str(self) -> &'static str {
        match self {
            CompletionError::SlotOutOfRange => "slot out of range",
            CompletionError::NotInFlight => "slot not in flight (duplicate or invented)",
            CompletionError::StaleGeneration => "stale generation",
            CompletionError::BadStatus => "unknown status value",
            CompletionError::BadBytes => "byte count larger than the output extent",
        }
    }
}

const NONE: u32 = u32::MAX;

/// The in-flight table over caller-provided storage (`Vec`, `KVec`, a slice…).
pub struct Inflight<S> {
    slots: S,
    free_head: u32,
    in_flight: u32,
}

impl<S: DerefMut<Target = [SlotEntry]>> Inflight<S> {
    /// Builds a table with every slot free. At most `u32::MAX - 1` slots are used.
    pub fn new(mut slots: S) -> Self {
        let n = slots.len().min(NONE as usize - 1);
        for (i, s) in slots.iter_mut().enumerate().take(n) {
            *s = SlotEntry {
                gen: 0,
                busy: false,
                next: if i + 1 < n { i as u32 + 1 } else { NONE },
                out_len: 0,
            };
        }
        Inflight {
            slots,
            free_head: if n > 0 { 0 } else { NONE },
            in_flight: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.slots.len().min(NONE as usize - 1) as u32
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Reserves a slot for a request whose output holds `out_len` bytes.
    pub fn alloc(&mut self, out_len: u64) -> Option<Ticket> {
        let slot = self.free_head;
        let e = self.slots.get_mut(slot as usize)?;
        self.free_head = e.next;
        // Generation 0 is never used, so an all-zero record never matches.
        e.gen = match e.gen.wrapping_add(1) {
            0 => 1,
            g => g,
        };
        e.busy = true;
        e.out_len = out_len;
        self.in_flight += 1;
        Some(Ticket { slot, gen: e.gen })
    }

    /// Whether `(slot, gen)` names a request in flight.
    pub fn is_current(&self, slot: u32, gen: u32) -> bool {
        matches!(self.slots.get(slot as usize), Some(e) if e.busy && e.gen == gen)
    }

    /// Validates a completion against the table. On success the slot stays
    /// reserved; the caller finishes the request, then calls [`Inflight::release`].
    pub fn complete(&self, cqe: &Cqe) -> Result<Completion, CompletionError> {
        let e = self
            .slots
            .get(cqe.slot as usize)
            .filter(|_| cqe.slot < self.capacity())
            .ok_or(CompletionError::SlotOutOfRange)?;
        if !e.busy {
            return Err(CompletionError::NotInFlight);
        }
        if e.gen != cqe.gen {
            return Err(CompletionError::StaleGeneration);
        }
        let status = Status::from_raw(cqe.status).ok_or(CompletionError::BadStatus)?;
        if cqe.bytes > e.out_len || (status != Status::Ok && cqe.bytes != 0) {
            return Err(CompletionError::BadBytes);
        }
        Ok(Completion {
            slot: cqe.slot,
            gen: cqe.gen,
            status,
            bytes: cqe.bytes,
            backend: cqe.backend,
        })
    }

    /// Frees a slot reserved by [`Inflight::alloc`]. Returns false (and does
    /// nothing) if the ticket is not current.
    pub fn release(&mut self, t: Ticket) -> bool {
        if !self.is_current(t.slot, t.gen) {
            return false;
        }
        let head = self.free_head;
        if let Some(e) = self.slots.get_mut(t.slot as usize) {
            e.busy = false;
            e.next = head;
        }
        self.free_head = t.slot;
        self.in_flight -= 1;
        true
    }

    /// Every ticket in flight (for failing them all when the helper goes away).
    pub fn for_each_in_flight(&self, mut f: impl FnMut(Ticket)) {
        for (i, e) in self.slots.iter().enumerate().take(self.capacity() as usize) {
            if e.busy {
                f(Ticket {
                    slot: i as u32,
                    gen: e.gen,
                });
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    fn cqe(slot: u32, gen: u32, status: i32, bytes: u64) -> Cqe {
        Cqe {
            slot,
            gen,
            status,
            bytes,
            ..Cqe::ZERO
        }
    }

    #[test]
    fn alloc_complete_release() {
        let mut t = Inflight::new(vec![SlotEntry::default(); 4]);
        let a = t.alloc(100).unwrap();
        let b = t.alloc(50).unwrap();
        assert_ne!(a.slot, b.slot);
        assert_eq!(t.in_flight(), 2);
        let c = t.complete(&cqe(a.slot, a.gen, 0, 100)).unwrap();
        assert_eq!((c.status, c.bytes), (Status::Ok, 100));
        assert!(t.release(a));
        assert!(!t.release(a), "double release refused");
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn exhaustion() {
        let mut t = Inflight::new(vec![SlotEntry::default(); 3]);
        let v: Vec<_> = (0..3).map(|_| t.alloc(0).unwrap()).collect();
        assert!(t.alloc(0).is_none());
        t.release(v[1]);
        assert_eq!(t.alloc(0).unwrap().slot, v[1].slot);
        let mut empty = Inflight::new(Vec::<SlotEntry>::new());
        assert!(empty.alloc(0).is_none());
    }

    #[test]
    fn hostile_completions_rejected() {
        let mut t = Inflight::new(vec![SlotEntry::default(); 4]);
        let a = t.alloc(64).unwrap();
        assert_eq!(
            t.complete(&cqe(4, a.gen, 0, 0)),
            Err(CompletionError::SlotOutOfRange)
        );
        assert_eq!(
            t.complete(&cqe(u32::MAX, 1, 0, 0)),
            Err(CompletionError::SlotOutOfRange)
        );
        assert_eq!(
            t.complete(&cqe(a.slot + 1, 1, 0, 0)),
            Err(CompletionError::NotInFlight)
        );
        assert_eq!(
            t.complete(&cqe(a.slot, a.gen + 1, 0, 0)),
            Err(CompletionError::StaleGeneration)
        );
        assert_eq!(
            t.complete(&cqe(a.slot, a.gen, 1000, 0)),
            Err(CompletionError::BadStatus)
        );
        assert_eq!(
            t.complete(&cqe(a.slot, a.gen, -1, 0)),
            Err(CompletionError::BadStatus)
        );
        assert_eq!(
            t.complete(&cqe(a.slot, a.gen, 0, 65)),
            Err(CompletionError::BadBytes)
        );
        assert_eq!(
            t.complete(&cqe(a.slot, a.gen, 3, 1)),
            Err(CompletionError::BadBytes)
        );
        // The slot is reused: the old generation is now stale.
        t.release(a);
        let b = t.alloc(64).unwrap();
        assert_eq!(b.slot, a.slot);
        assert_eq!(
            t.complete(&cqe(a.slot, a.gen, 0, 0)),
            Err(CompletionError::StaleGeneration)
        );
        assert!(t.complete(&cqe(b.slot, b.gen, 0, 64)).is_ok());
    }

    #[test]
    fn generation_skips_zero() {
        let mut t = Inflight::new(vec![SlotEntry::default(); 1]);
        t.slots[0].gen = u32::MAX;
        let a = t.alloc(0).unwrap();
        assert_eq!(a.gen, 1);
        assert_eq!(
            t.complete(&cqe(0, 0, 0, 0)),
            Err(CompletionError::StaleGeneration)
        );
    }
}
