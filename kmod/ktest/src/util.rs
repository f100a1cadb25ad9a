// SPDX-License-Identifier: GPL-2.0-only

//! Check reporting and the seeded random number generator.

use std::process::exit;

pub struct Checks {
    pub failed: u32,
}

impl Checks {
    pub fn check(&mut self, name: &str, ok: bool, detail: String) {
        if ok {
            println!("ok: {name}");
        } else {
            println!("not ok: {name}: {detail}");
            self.failed += 1;
        }
    }
    pub fn finish(self) -> ! {
        exit(if self.failed == 0 { 0 } else { 1 })
    }
}

/// splitmix64: reproducible from the seed the test prints.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn fill(&mut self, dst: *mut u8, len: usize) {
        for i in 0..len {
            // SAFETY: callers pass a range inside the mapped region.
            unsafe { std::ptr::write_volatile(dst.add(i), self.next() as u8) };
        }
    }
}
