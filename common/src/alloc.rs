//! The data-area allocator.
//!
//! The submitter (the kernel, or the userspace stand-in) owns allocation: it
//! knows when a request starts and when its completion has been consumed, so
//! it alone can tell when an extent is free again. The helper never allocates;
//! it reads and writes only the extents named in requests, after checking
//! them. The allocator's metadata is a bitmap in the submitter's own memory
//! (one bit per chunk), never in the shared region, so a helper cannot corrupt
//! it.
//!
//! Allocation is next-fit over contiguous runs of chunks, skipping full words.

use super::abi::Extent;
use core::ops::DerefMut;

/// Why a free was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The extent is not chunk aligned or lies outside the area.
    BadExtent,
    /// Some chunk of the extent is not allocated (double free).
    NotAllocated,
}

/// Number of `u64` bitmap words needed for `data_size` bytes in chunks of
/// `1 << chunk_shift`.
pub const fn bitmap_words(data_size: u64, chunk_shift: u32) -> usize {
    let chunks = data_size >> chunk_shift;
    chunks.div_ceil(64) as usize
}

/// A chunk allocator over caller-provided bitmap storage.
pub struct ExtentAllocator<S> {
    bits: S,
    chunk_shift: u32,
    chunks: u64,
    free: u64,
    hint: u64,
}

impl<S: DerefMut<Target = [u64]>> ExtentAllocator<S> {
    /// Creates an allocator for a data area of `data_size` bytes split in
    /// chunks of `1 << chunk_shift` bytes. `bits` must hold at least
    /// [`bitmap_words`] words; a shorter bitmap just manages fewer chunks.
    pub fn new(mut bits: S, data_size: u64, chunk_shift: u32) -> Self {
        let chunk_shift = chunk_shift.min(40);
        let chunks = (data_size >> chunk_shift).min(bits.len() as u64 * 64);
        for w in bits.iter_mut() {
            *w = 0;
        }
        ExtentAllocator {
            bits,
            chunk_shift,
            chunks,
            free: chunks,
            hint: 0,
        }
    }

    /// Chunk size in bytes.
    pub fn chunk_size(&self) -> u64 {
        1 << self.chunk_shift
    }

    /// Free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free << self.chunk_shift
    }

    /// Total managed bytes.
    pub fn total_bytes(&self) -> u64 {
        self.chunks << self.chunk_shift
    }

    fn is_set(&self, c: u64) -> bool {
        self.bits
            .get((c / 64) as usize)
            .is_some_and(|w| w & (1 << (c % 64)) != 0)
    }

    fn set_range(&mut self, start: u64, n: u64, value: bool) {
        for c in start..start + n {
            if let Some(w) = self.bits.get_mut((c / 64) as usize) {
                if value {
                    *w |= 1 << (c % 64);
                } else {
                    *w &= !(1 << (c % 64));
                }
            }
        }
    }

    /// Finds `n` free chunks in a row starting the search at `from`, up to `end`.
    fn find(&self, n: u64, from: u64, end: u64) -> Option<u64> {
        let mut c = from;
        while c + n <= end {
            // Skip a full word quickly.
            if c.is_multiple_of(64) && self.bits.get((c / 64) as usize) == Some(&u64::MAX) {
                c += 64;
                continue;
            }
            if self.is_set(c) {
                c += 1;
                continue;
            }
            let mut run = 1;
            while run < n && !self.is_set(c + run) {
                run += 1;
            }
            if run == n {
                return Some(c);
            }
            c += run + 1;
        }
        None
    }

    /// Allocates `len` bytes (rounded up to whole chunks). `None` when no run
    /// of free chunks is long enough; a zero length gets an empty extent.
    pub fn alloc(&mut self, len: u64) -> Option<Extent> {
        if len == 0 {
            return Some(Extent::EMPTY);
        }
        let n = len.div_ceil(self.chunk_size());
        if n > self.free {
            return None;
        }
        let start = self
            .find(n, self.hint, self.chunks)
            .or_else(|| self.find(n, 0, self.hint.saturating_add(n).min(self.chunks)))?;
        self.set_range(start, n, true);
        self.free -= n;
        self.hint = if start + n >= self.chunks {
            0
        } else {
            start + n
        };
        Some(Extent::new(start << self.chunk_shift, len))
    }

    /// Frees an extent returned by [`ExtentAllocator::alloc`].
    pub fn free(&mut self, e: Extent) -> Result<(), AllocError> {
        if e.len == 0 {
            return Ok(());
        }
        if !e.off.is_multiple_of(self.chunk_size()) || !e.fits(self.total_bytes()) {
            return Err(AllocError::BadExtent);
        }
        let start = e.off >> self.chunk_shift;
        let n = e.len.div_ceil(self.chunk_size());
        if (start..start + n).any(|c| !self.is_set(c)) {
            return Err(AllocError::NotAllocated);
        }
        self.set_range(start, n, false);
        self.free += n;
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    extern crate std;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn alloc_free_reuse() {
        let mut a = ExtentAllocator::new(vec![0u64; 1], 64 * 4096, 12);
        assert_eq!(a.total_bytes(), 64 * 4096);
        let x = a.alloc(5000).unwrap();
        assert_eq!((x.off, x.len), (0, 5000));
        let y = a.alloc(4096).unwrap();
        assert_eq!(y.off, 8192);
        assert_eq!(a.free_bytes(), 61 * 4096);
        a.free(x).unwrap();
        assert_eq!(a.free(x), Err(AllocError::NotAllocated));
        assert_eq!(a.free(Extent::new(100, 10)), Err(AllocError::BadExtent));
        assert_eq!(
            a.free(Extent::new(64 * 4096, 10)),
            Err(AllocError::BadExtent)
        );
        assert_eq!(
            a.free(Extent::new(u64::MAX - 4095, 4096)),
            Err(AllocError::BadExtent)
        );
        a.free(y).unwrap();
        assert_eq!(a.free_bytes(), 64 * 4096);
        assert!(a.alloc(64 * 4096 + 1).is_none());
        assert!(a.alloc(64 * 4096).is_some());
        assert!(a.alloc(1).is_none());
    }

    #[test]
    fn random_model_check() {
        // A tiny deterministic generator; the model is a Vec<bool> per chunk.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let chunks = 300u64;
        let mut a =
            ExtentAllocator::new(vec![0u64; bitmap_words(chunks * 512, 9)], chunks * 512, 9);
        let mut model = vec![false; chunks as usize];
        let mut live: Vec<Extent> = Vec::new();
        for _ in 0..20000 {
            if rnd() % 3 != 0 || live.is_empty() {
                let len = rnd() % (512 * 20) + 1;
                if let Some(e) = a.alloc(len) {
                    let s = (e.off / 512) as usize;
                    for m in &mut model[s..s + len.div_ceil(512) as usize] {
                        assert!(!*m, "overlapping allocation");
                        *m = true;
                    }
                    live.push(e);
                } else {
                    // Refusal is only allowed when no run is long enough.
                    let need = len.div_ceil(512) as usize;
                    let fits = model.windows(need).any(|w| w.iter().all(|b| !b));
                    assert!(!fits, "refused {len} bytes although a run exists");
                }
            } else {
                let e = live.swap_remove((rnd() % live.len() as u64) as usize);
                a.free(e).unwrap();
                let s = (e.off / 512) as usize;
                for m in &mut model[s..s + e.len.div_ceil(512) as usize] {
                    *m = false;
                }
            }
            let used = model.iter().filter(|b| **b).count() as u64;
            assert_eq!(a.free_bytes(), (chunks - used) * 512);
        }
    }
}
