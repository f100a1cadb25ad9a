//! Single-producer single-consumer rings over shared memory, io_uring style.
//!
//! Each index has exactly one writer: the producer owns `tail`, the consumer
//! owns `head`. Both are free-running `u32` counters; the slot of a counter is
//! `counter & mask`. The producer writes an entry, then publishes it with a
//! release store of `tail`; the consumer reads `tail` with an acquire load,
//! copies the entry out, then frees it with a release store of `head`.
//!
//! Neither side ever re-reads the index it owns from shared memory (it keeps
//! its own copy), and every index written by the other side is checked:
//! `tail - head` must never exceed the ring's capacity. A violation is
//! reported as [`RingError::Corrupt`] and nothing is read or written.
//!
//! Entries are copied out with volatile reads before anyone looks at them, so
//! the other side cannot change a record between its validation and its use.

use super::abi::{RingIndices, CACHE_LINE, MAX_RING_ENTRIES};
use super::sync::{fence, AtomicU32, Ordering};

/// Errors of the ring protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The ring has no free entry (producer) — try again after the consumer advances.
    Full,
    /// The other side wrote an index that is impossible (`tail - head > entries`).
    Corrupt {
        /// The consumer index as read.
        head: u32,
        /// The producer index as read.
        tail: u32,
    },
}

/// Checks a ring capacity: a power of two in `1..=MAX_RING_ENTRIES`.
pub const fn valid_entries(entries: u32) -> bool {
    entries != 0 && entries <= MAX_RING_ENTRIES && entries.is_power_of_two()
}

/// Bytes a ring of `entries` records of `entry_size` bytes occupies
/// (indices plus records), rounded up to a cache line.
pub const fn ring_bytes(entries: u32, entry_size: usize) -> u64 {
    let raw = core::mem::size_of::<RingIndices>() as u64 + entries as u64 * entry_size as u64;
    let line = CACHE_LINE as u64;
    raw.div_ceil(line) * line
}

/// Storage for ring records.
///
/// Outside loom it is plain shared memory accessed with volatile copies; under
/// `cfg(loom)` each record is a loom cell, so the model checker sees every
/// access and flags a missing happens-before edge.
#[cfg(not(loom))]
struct Records<T> {
    ptr: *mut T,
}

#[cfg(not(loom))]
impl<T: Copy> Records<T> {
    /// # Safety
    /// `i` must be below the ring's capacity and `ptr` valid for it.
    unsafe fn write(&self, i: u32, value: T) {
        // SAFETY: the caller guarantees `i` is in bounds of the record array.
        unsafe { core::ptr::write_volatile(self.ptr.add(i as usize), value) }
    }

    /// # Safety
    /// `i` must be below the ring's capacity and `ptr` valid for it.
    unsafe fn read(&self, i: u32) -> T {
        // SAFETY: the caller guarantees `i` is in bounds of the record array.
        unsafe { core::ptr::read_volatile(self.ptr.add(i as usize)) }
    }
}

#[cfg(loom)]
struct Records<T> {
    ptr: *const loom::cell::UnsafeCell<T>,
}

#[cfg(loom)]
impl<T: Copy> Records<T> {
    unsafe fn write(&self, i: u32, value: T) {
        // SAFETY: the caller guarantees `i` is in bounds of the record array.
        unsafe { (*self.ptr.add(i as usize)).with_mut(|p| *p = value) }
    }

    unsafe fn read(&self, i: u32) -> T {
        // SAFETY: the caller guarantees `i` is in bounds of the record array.
        unsafe { (*self.ptr.add(i as usize)).with(|p| *p) }
    }
}

/// The element type a ring's record array is made of.
#[cfg(not(loom))]
pub type RecordCell<T> = T;
/// The element type a ring's record array is made of.
#[cfg(loom)]
pub type RecordCell<T> = loom::cell::UnsafeCell<T>;

/// The producing end of a ring.
pub struct Producer<T> {
    idx: *const RingIndices,
    records: Records<T>,
    mask: u32,
    /// Our own copy of `tail` (entries staged but maybe not published).
    tail: u32,
    /// Last `head` seen; refreshed when the ring looks full.
    head: u32,
}

// SAFETY: the producer only holds pointers into memory whose lifetime the
// creator guaranteed in `Producer::new`; it can be moved to another thread.
unsafe impl<T: Send> Send for Producer<T> {}

impl<T: Copy> Producer<T> {
    /// Creates the producer of a ring whose indices are at `idx` and whose
    /// `entries` records start at `records`. The producer starts at the
    /// current `tail` (0 for a fresh ring).
    ///
    /// # Safety
    /// `idx` and `records` (valid for `entries` records) must stay mapped and
    /// writable for the producer's lifetime; `entries` must satisfy
    /// [`valid_entries`]; there must be at most one producer of this ring.
    pub unsafe fn new(idx: *const RingIndices, records: *mut RecordCell<T>, entries: u32) -> Self {
        // SAFETY: the caller guarantees `idx` is valid.
        let i = unsafe { &*idx };
        let tail = i.tail.load(Ordering::Relaxed);
        let head = i.head.load(Ordering::Acquire);
        Producer {
            idx,
            records: Records { ptr: records },
            mask: entries - 1,
            tail,
            head,
        }
    }

    fn indices(&self) -> &RingIndices {
        // SAFETY: valid for our lifetime by the contract of `new`.
        unsafe { &*self.idx }
    }

    /// Capacity of the ring.
    pub fn entries(&self) -> u32 {
        self.mask + 1
    }

    /// Free entries, re-reading the consumer's `head`.
    pub fn space(&mut self) -> Result<u32, RingError> {
        let head = self.indices().head.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        if used > self.entries() {
            return Err(RingError::Corrupt {
                head,
                tail: self.tail,
            });
        }
        self.head = head;
        Ok(self.entries() - used)
    }

    /// Writes one entry without publishing it (see [`Producer::publish`]).
    pub fn stage(&mut self, value: T) -> Result<(), RingError> {
        if self.tail.wrapping_sub(self.head) >= self.entries() && self.space()? == 0 {
            return Err(RingError::Full);
        }
        // SAFETY: masked index is below the capacity given to `new`, and the
        // entry is free: the consumer's head has passed it.
        unsafe { self.records.write(self.tail & self.mask, value) };
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Makes every staged entry visible to the consumer (release store).
    pub fn publish(&self) {
        self.indices().tail.store(self.tail, Ordering::Release);
    }

    /// Stages and publishes one entry.
    pub fn push(&mut self, value: T) -> Result<(), RingError> {
        self.stage(value)?;
        self.publish();
        Ok(())
    }

    /// Entries staged or published and not yet consumed, as last seen.
    pub fn pending(&self) -> u32 {
        self.tail.wrapping_sub(self.head)
    }
}

/// The consuming end of a ring.
pub struct Consumer<T> {
    idx: *const RingIndices,
    records: Records<T>,
    mask: u32,
    /// Our own copy of `head`.
    head: u32,
    /// Last `tail` seen.
    tail: u32,
}

// SAFETY: see `Producer`.
unsafe impl<T: Send> Send for Consumer<T> {}

impl<T: Copy> Consumer<T> {
    /// Creates the consumer of a ring. It starts at the current `head`.
    ///
    /// # Safety
    /// Same as [`Producer::new`], with at most one consumer of this ring.
    pub unsafe fn new(idx: *const RingIndices, records: *mut RecordCell<T>, entries: u32) -> Self {
        // SAFETY: the caller guarantees `idx` is valid.
        let head = unsafe { &*idx }.head.load(Ordering::Relaxed);
        Consumer {
            idx,
            records: Records { ptr: records },
            mask: entries - 1,
            head,
            tail: head,
        }
    }

    fn indices(&self) -> &RingIndices {
        // SAFETY: valid for our lifetime by the contract of `new`.
        unsafe { &*self.idx }
    }

    /// Capacity of the ring.
    pub fn entries(&self) -> u32 {
        self.mask + 1
    }

    /// Published entries not yet consumed, re-reading the producer's `tail`.
    pub fn available(&mut self) -> Result<u32, RingError> {
        let tail = self.indices().tail.load(Ordering::Acquire);
        let n = tail.wrapping_sub(self.head);
        if n > self.entries() {
            return Err(RingError::Corrupt {
                head: self.head,
                tail,
            });
        }
        self.tail = tail;
        Ok(n)
    }

    /// Copies out the next entry without freeing it (see [`Consumer::release`]).
    pub fn take(&mut self) -> Result<Option<T>, RingError> {
        if self.head == self.tail && self.available()? == 0 {
            return Ok(None);
        }
        // SAFETY: masked index is in bounds; the entry was published by the
        // acquire load of `tail` in `available`.
        let value = unsafe { self.records.read(self.head & self.mask) };
        self.head = self.head.wrapping_add(1);
        Ok(Some(value))
    }

    /// Hands every entry taken with [`Consumer::take`] back to the producer.
    pub fn release(&self) {
        self.indices().head.store(self.head, Ordering::Release);
    }

    /// Takes one entry and frees it at once.
    pub fn pop(&mut self) -> Result<Option<T>, RingError> {
        let v = self.take()?;
        if v.is_some() {
            self.release();
        }
        Ok(v)
    }
}

/// The sleeping side of the NEED_WAKEUP handshake.
///
/// A consumer that found its ring empty calls [`arm`], then checks the ring
/// once more; only if it is still empty may it sleep (on a doorbell whose
/// value it read before arming). After waking or finding work it calls
/// [`disarm`].
pub fn arm(flags: &AtomicU32, bit: u32) {
    flags.fetch_or(bit, Ordering::SeqCst);
    fence(Ordering::SeqCst);
}

/// Clears the NEED_WAKEUP bit (see [`arm`]).
pub fn disarm(flags: &AtomicU32, bit: u32) {
    flags.fetch_and(!bit, Ordering::SeqCst);
}

/// The waking side: after [`Producer::publish`], returns whether the consumer
/// may be asleep and must be woken. If so, the producer bumps the doorbell
/// and wakes it.
pub fn must_wake(flags: &AtomicU32, bit: u32) -> bool {
    fence(Ordering::SeqCst);
    flags.load(Ordering::SeqCst) & bit != 0
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    extern crate std;
    use std::boxed::Box;
    use std::vec;

    struct Mem {
        idx: Box<RingIndices>,
        recs: std::vec::Vec<u64>,
    }

    fn ring(entries: u32) -> (Mem, Producer<u64>, Consumer<u64>) {
        let mut m = Mem {
            idx: Box::new(RingIndices::new()),
            recs: vec![0; entries as usize],
        };
        // SAFETY: the boxes outlive the ends in these tests (returned together).
        let p = unsafe { Producer::new(&*m.idx, m.recs.as_mut_ptr(), entries) };
        // SAFETY: as above.
        let c = unsafe { Consumer::new(&*m.idx, m.recs.as_mut_ptr(), entries) };
        (m, p, c)
    }

    #[test]
    fn fifo_full_empty() {
        let (_m, mut p, mut c) = ring(8);
        assert_eq!(c.pop(), Ok(None));
        for i in 0..8 {
            p.push(i).unwrap();
        }
        assert_eq!(p.push(99), Err(RingError::Full));
        for i in 0..8 {
            assert_eq!(c.pop(), Ok(Some(i)));
        }
        assert_eq!(c.pop(), Ok(None));
        p.push(100).unwrap();
        assert_eq!(c.pop(), Ok(Some(100)));
    }

    #[test]
    fn staged_entries_invisible_until_published() {
        let (_m, mut p, mut c) = ring(4);
        p.stage(1).unwrap();
        p.stage(2).unwrap();
        assert_eq!(c.pop(), Ok(None));
        p.publish();
        assert_eq!(c.pop(), Ok(Some(1)));
        assert_eq!(c.pop(), Ok(Some(2)));
    }

    #[test]
    fn unreleased_entries_keep_ring_full() {
        let (_m, mut p, mut c) = ring(2);
        p.push(1).unwrap();
        p.push(2).unwrap();
        assert_eq!(c.take(), Ok(Some(1)));
        assert_eq!(p.push(3), Err(RingError::Full));
        c.release();
        p.push(3).unwrap();
    }

    #[test]
    fn wraps_past_u32_max() {
        let (m, _, _) = ring(4);
        let start = u32::MAX - 5;
        m.idx.head.store(start, Ordering::Relaxed);
        m.idx.tail.store(start, Ordering::Relaxed);
        let mut m = m;
        // SAFETY: as in `ring`.
        let mut p = unsafe { Producer::new(&*m.idx, m.recs.as_mut_ptr(), 4) };
        // SAFETY: as in `ring`.
        let mut c = unsafe { Consumer::new(&*m.idx, m.recs.as_mut_ptr(), 4) };
        let mut next = 0u64;
        for round in 0..20u64 {
            for k in 0..(round % 4 + 1) {
                p.push(round * 10 + k).unwrap();
            }
            for k in 0..(round % 4 + 1) {
                assert_eq!(c.pop(), Ok(Some(round * 10 + k)));
                next += 1;
            }
        }
        assert!(m.idx.tail.load(Ordering::Relaxed) < 100, "counter wrapped");
        assert_eq!(next, 50);
    }

    #[test]
    fn corrupt_indices_detected() {
        let (m, mut p, mut c) = ring(8);
        // The consumer's view: a producer claiming 9 entries in an 8-entry ring.
        m.idx.tail.store(9, Ordering::Relaxed);
        assert_eq!(c.pop(), Err(RingError::Corrupt { head: 0, tail: 9 }));
        // The producer's view: a consumer whose head ran ahead of the tail.
        m.idx.head.store(3, Ordering::Relaxed);
        assert!(matches!(p.space(), Err(RingError::Corrupt { .. })));
        // A head far behind (tail - head > entries) is corrupt too.
        m.idx.head.store(0u32.wrapping_sub(100), Ordering::Relaxed);
        assert!(matches!(p.space(), Err(RingError::Corrupt { .. })));
    }

    #[test]
    fn valid_entries_rule() {
        assert!(!valid_entries(0));
        assert!(valid_entries(1));
        assert!(!valid_entries(3));
        assert!(valid_entries(MAX_RING_ENTRIES));
        assert!(!valid_entries(MAX_RING_ENTRIES * 2));
    }
}
