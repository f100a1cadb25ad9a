//! Test helpers: a deterministic generator and a byte-at-a-time reference
//! written independently of the crate's code.
#![allow(dead_code)]

/// xorshift64* generator (deterministic, seeded per test).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// x·{02} modulo x^8 + x^4 + x^3 + x^2 + 1.
pub fn ref_double(x: u8) -> u8 {
    let wide = (x as u16) << 1;
    if wide & 0x100 != 0 {
        (wide ^ 0x11d) as u8
    } else {
        wide as u8
    }
}

/// a·b by shift-and-add over the bits of b, doubling a each step.
pub fn ref_mul(a: u8, b: u8) -> u8 {
    let mut acc = 0u8;
    let mut term = a;
    for bit in 0..8 {
        if (b >> bit) & 1 == 1 {
            acc ^= term;
        }
        term = ref_double(term);
    }
    acc
}

/// g^i by repeated doubling of 1.
pub fn ref_gpow(i: usize) -> u8 {
    let mut v = 1u8;
    for _ in 0..i {
        v = ref_double(v);
    }
    v
}

/// P and Q of `data` by the definition (sum of g^i·D_i, not Horner).
pub fn ref_pq(data: &[Vec<u8>], len: usize) -> (Vec<u8>, Vec<u8>) {
    let mut p = vec![0u8; len];
    let mut q = vec![0u8; len];
    for (i, d) in data.iter().enumerate() {
        let c = ref_gpow(i);
        for b in 0..len {
            p[b] ^= d[b];
            q[b] ^= ref_mul(c, d[b]);
        }
    }
    (p, q)
}

/// Mutable views of a set of blocks, in order.
pub fn views(blocks: &mut [Vec<u8>]) -> Vec<&mut [u8]> {
    blocks.iter_mut().map(|b| b.as_mut_slice()).collect()
}

/// Concatenation of blocks.
pub fn concat(blocks: &[Vec<u8>]) -> Vec<u8> {
    blocks.iter().flat_map(|b| b.iter().copied()).collect()
}
