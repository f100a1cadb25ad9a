//! FIPS-197 key expansion and lookup tables for table-driven AES
//! implementations (the CUDA kernels), with a plain reference cipher that
//! uses them, so that the GPU side relies on tested schedules and tables.
//!
//! Words are big-endian: word `i` of a schedule holds bytes `4i..4i+4` of the
//! round-key sequence with the first byte in the most significant position.

use crate::AesError;

/// Most words an expanded key has (AES-256: 15 round keys of 4 words).
pub const MAX_SCHEDULE_WORDS: usize = 60;

/// An expanded AES key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySchedule {
    /// Encryption round keys, `4 * (rounds + 1)` words used, the rest zero.
    pub enc: [u32; MAX_SCHEDULE_WORDS],
    /// Decryption round keys for the equivalent inverse cipher (FIPS-197
    /// 5.3.5), in the order they are used: the last encryption round key
    /// first, InvMixColumns applied to the middle round keys.
    pub dec: [u32; MAX_SCHEDULE_WORDS],
    /// 10, 12 or 14.
    pub rounds: u32,
}

impl KeySchedule {
    /// The used encryption words.
    pub fn enc_words(&self) -> &[u32] {
        &self.enc[..4 * (self.rounds as usize + 1)]
    }

    /// The used decryption words.
    pub fn dec_words(&self) -> &[u32] {
        &self.dec[..4 * (self.rounds as usize + 1)]
    }
}

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1.
pub const fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

/// The AES S-box, computed from the multiplicative inverse and the affine map.
pub const fn sbox() -> [u8; 256] {
    // Walks the multiplicative group with generator 3: p runs over 3^k and
    // q over its inverse 3^-k, so S[p] is the affine map of q.
    let mut s = [0u8; 256];
    let mut p: u8 = 1;
    let mut q: u8 = 1;
    loop {
        p = p ^ (p << 1) ^ if p & 0x80 != 0 { 0x1b } else { 0 };
        q ^= q << 1;
        q ^= q << 2;
        q ^= q << 4;
        if q & 0x80 != 0 {
            q ^= 0x09;
        }
        s[p as usize] =
            q ^ q.rotate_left(1) ^ q.rotate_left(2) ^ q.rotate_left(3) ^ q.rotate_left(4) ^ 0x63;
        if p == 1 {
            break;
        }
    }
    s[0] = 0x63;
    s
}

/// The inverse S-box.
pub const fn inv_sbox() -> [u8; 256] {
    let s = sbox();
    let mut inv = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        inv[s[x] as usize] = x as u8;
        x += 1;
    }
    inv
}

/// The S-box.
pub static SBOX: [u8; 256] = sbox();
/// The inverse S-box.
pub static INV_SBOX: [u8; 256] = inv_sbox();

const fn te0() -> [u32; 256] {
    let s = sbox();
    let mut t = [0u32; 256];
    let mut x = 0;
    while x < 256 {
        let v = s[x];
        t[x] = (gmul(v, 2) as u32) << 24 | (v as u32) << 16 | (v as u32) << 8 | gmul(v, 3) as u32;
        x += 1;
    }
    t
}

const fn td0() -> [u32; 256] {
    let s = inv_sbox();
    let mut t = [0u32; 256];
    let mut x = 0;
    while x < 256 {
        let v = s[x];
        t[x] = (gmul(v, 14) as u32) << 24
            | (gmul(v, 9) as u32) << 16
            | (gmul(v, 13) as u32) << 8
            | gmul(v, 11) as u32;
        x += 1;
    }
    t
}

/// Encryption T-table 0: `Te0[x] = (2·S[x], S[x], S[x], 3·S[x])`; table `k`
/// is `Te0` rotated right by `8k` bits.
pub static TE0: [u32; 256] = te0();
/// Decryption T-table 0: `Td0[x] = (14·I[x], 9·I[x], 13·I[x], 11·I[x])` with
/// `I` the inverse S-box; table `k` is `Td0` rotated right by `8k` bits.
pub static TD0: [u32; 256] = td0();

/// Words in [`gpu_tables`].
pub const GPU_TABLE_WORDS: usize = 10 * 256;

/// The lookup tables the CUDA kernels load: `Te0..Te3`, `Td0..Td3`, the S-box
/// and the inverse S-box (one byte value per word), 256 words each, in that order.
pub fn gpu_tables() -> Vec<u32> {
    let mut out = Vec::with_capacity(GPU_TABLE_WORDS);
    for k in 0..4 {
        out.extend(TE0.iter().map(|w| w.rotate_right(8 * k)));
    }
    for k in 0..4 {
        out.extend(TD0.iter().map(|w| w.rotate_right(8 * k)));
    }
    out.extend(SBOX.iter().map(|&b| u32::from(b)));
    out.extend(INV_SBOX.iter().map(|&b| u32::from(b)));
    out
}

fn sub_word(w: u32) -> u32 {
    let b = w.to_be_bytes();
    u32::from_be_bytes([
        SBOX[b[0] as usize],
        SBOX[b[1] as usize],
        SBOX[b[2] as usize],
        SBOX[b[3] as usize],
    ])
}

fn inv_mix_column(w: u32) -> u32 {
    let [a0, a1, a2, a3] = w.to_be_bytes();
    let r0 = gmul(a0, 14) ^ gmul(a1, 11) ^ gmul(a2, 13) ^ gmul(a3, 9);
    let r1 = gmul(a0, 9) ^ gmul(a1, 14) ^ gmul(a2, 11) ^ gmul(a3, 13);
    let r2 = gmul(a0, 13) ^ gmul(a1, 9) ^ gmul(a2, 14) ^ gmul(a3, 11);
    let r3 = gmul(a0, 11) ^ gmul(a1, 13) ^ gmul(a2, 9) ^ gmul(a3, 14);
    u32::from_be_bytes([r0, r1, r2, r3])
}

/// FIPS-197 key expansion of a 16, 24 or 32-byte key.
pub fn round_keys(key: &[u8]) -> Result<KeySchedule, AesError> {
    let nk = key.len() / 4;
    let rounds = match key.len() {
        16 => 10,
        24 => 12,
        32 => 14,
        _ => return Err(AesError::BadKey),
    };
    let total = 4 * (rounds + 1);
    let mut w = [0u32; MAX_SCHEDULE_WORDS];
    for (i, c) in key.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    let mut rcon: u8 = 1;
    for i in nk..total {
        let mut t = w[i - 1];
        if i % nk == 0 {
            t = sub_word(t.rotate_left(8)) ^ (u32::from(rcon) << 24);
            rcon = gmul(rcon, 2);
        } else if nk > 6 && i % nk == 4 {
            t = sub_word(t);
        }
        w[i] = w[i - nk] ^ t;
    }
    let mut d = [0u32; MAX_SCHEDULE_WORDS];
    let nr = rounds;
    for r in 0..=nr {
        for c in 0..4 {
            let src = w[4 * (nr - r) + c];
            d[4 * r + c] = if r == 0 || r == nr {
                src
            } else {
                inv_mix_column(src)
            };
        }
    }
    Ok(KeySchedule {
        enc: w,
        dec: d,
        rounds: rounds as u32,
    })
}

fn te(k: u32, x: u32) -> u32 {
    TE0[(x & 0xff) as usize].rotate_right(8 * k)
}

fn td(k: u32, x: u32) -> u32 {
    TD0[(x & 0xff) as usize].rotate_right(8 * k)
}

/// Encrypts one block with the T-table formulation the CUDA kernels use.
pub fn reference_encrypt(ks: &KeySchedule, block: &[u8; 16]) -> [u8; 16] {
    let rk = ks.enc_words();
    let mut s = [0u32; 4];
    for (i, c) in block.chunks_exact(4).enumerate() {
        s[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]) ^ rk[i];
    }
    let nr = ks.rounds as usize;
    for r in 1..nr {
        let mut t = [0u32; 4];
        for (i, ti) in t.iter_mut().enumerate() {
            *ti = te(0, s[i] >> 24)
                ^ te(1, s[(i + 1) % 4] >> 16)
                ^ te(2, s[(i + 2) % 4] >> 8)
                ^ te(3, s[(i + 3) % 4])
                ^ rk[4 * r + i];
        }
        s = t;
    }
    let mut out = [0u8; 16];
    for i in 0..4 {
        let v = (te(2, s[i] >> 24) & 0xff00_0000)
            ^ (te(3, s[(i + 1) % 4] >> 16) & 0x00ff_0000)
            ^ (te(0, s[(i + 2) % 4] >> 8) & 0x0000_ff00)
            ^ (te(1, s[(i + 3) % 4]) & 0x0000_00ff)
            ^ rk[4 * nr + i];
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// Decrypts one block with the equivalent inverse cipher and T-tables.
pub fn reference_decrypt(ks: &KeySchedule, block: &[u8; 16]) -> [u8; 16] {
    let rk = ks.dec_words();
    let mut s = [0u32; 4];
    for (i, c) in block.chunks_exact(4).enumerate() {
        s[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]) ^ rk[i];
    }
    let nr = ks.rounds as usize;
    for r in 1..nr {
        let mut t = [0u32; 4];
        for (i, ti) in t.iter_mut().enumerate() {
            *ti = td(0, s[i] >> 24)
                ^ td(1, s[(i + 3) % 4] >> 16)
                ^ td(2, s[(i + 2) % 4] >> 8)
                ^ td(3, s[(i + 1) % 4])
                ^ rk[4 * r + i];
        }
        s = t;
    }
    let mut out = [0u8; 16];
    for i in 0..4 {
        let b = [
            INV_SBOX[(s[i] >> 24) as usize],
            INV_SBOX[((s[(i + 3) % 4] >> 16) & 0xff) as usize],
            INV_SBOX[((s[(i + 2) % 4] >> 8) & 0xff) as usize],
            INV_SBOX[(s[(i + 1) % 4] & 0xff) as usize],
        ];
        let v = u32::from_be_bytes(b) ^ rk[4 * nr + i];
        out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn sbox_values() {
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x01], 0x7c);
        assert_eq!(SBOX[0x53], 0xed);
        assert_eq!(SBOX[0xff], 0x16);
        assert_eq!(INV_SBOX[0x63], 0x00);
        assert_eq!(INV_SBOX[0x16], 0xff);
    }

    #[test]
    fn fips197_key_expansion() {
        // FIPS-197 Appendix A.1 / A.3: first, some middle and last words.
        let ks = round_keys(&hex("2b7e151628aed2a6abf7158809cf4f3c")).unwrap();
        assert_eq!(ks.rounds, 10);
        assert_eq!(ks.enc[4], 0xa0fafe17);
        assert_eq!(ks.enc[43], 0xb6630ca6);
        let ks = round_keys(&hex(
            "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
        ))
        .unwrap();
        assert_eq!(ks.rounds, 14);
        assert_eq!(ks.enc[8], 0x9ba35411);
        assert_eq!(ks.enc[59], 0x706c631e);
        let ks = round_keys(&hex("8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b")).unwrap();
        assert_eq!(ks.rounds, 12);
        assert_eq!(ks.enc[6], 0xfe0c91f7);
        assert_eq!(ks.enc[51], 0x01002202);
        assert!(round_keys(&[0; 20]).is_err());
    }

    #[test]
    fn fips197_appendix_c() {
        let pt: [u8; 16] = hex("00112233445566778899aabbccddeeff").try_into().unwrap();
        let cases = [
            (
                "000102030405060708090a0b0c0d0e0f",
                "69c4e0d86a7b0430d8cdb78070b4c55a",
            ),
            (
                "000102030405060708090a0b0c0d0e0f1011121314151617",
                "dda97ca4864cdfe06eaf70a0ec0d7191",
            ),
            (
                "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
                "8ea2b7ca516745bfeafc49904b496089",
            ),
        ];
        for (k, c) in cases {
            let ks = round_keys(&hex(k)).unwrap();
            let ct = reference_encrypt(&ks, &pt);
            assert_eq!(ct.to_vec(), hex(c));
            assert_eq!(reference_decrypt(&ks, &ct), pt);
        }
    }

    #[test]
    fn gpu_table_layout() {
        let t = gpu_tables();
        assert_eq!(t.len(), GPU_TABLE_WORDS);
        assert_eq!(t[0], 0xc66363a5);
        assert_eq!(t[256], 0xa5c66363);
        assert_eq!(t[1024], TD0[0]);
        assert_eq!(t[8 * 256 + 1], 0x7c);
        assert_eq!(t[9 * 256 + 0x7c], 1);
    }
}
