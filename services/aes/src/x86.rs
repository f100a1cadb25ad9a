//! AES on x86-64 with the processor's AES instructions: AES-NI (one block per
//! 128-bit register, eight in flight) and VAES on AVX-512 (four blocks per
//! 512-bit register, sixteen in flight), with the modes fused into the block
//! loops (tweaks and counters computed in registers, one pass over the data).
//!
//! Each instruction set is reached only through a token ([`Ni`], [`Vaes`])
//! that exists only once run-time detection found the instructions, so every
//! `#[target_feature]` function below is called only on a processor that has
//! its features.
//!
//! The round keys come from [`crate::schedule::round_keys`] (FIPS-197 key
//! expansion; the decryption keys are those of the equivalent inverse cipher,
//! which is what `AESDEC` expects).

use core::arch::x86_64::*;

use crate::schedule::KeySchedule;

/// Expanded keys in the byte order of the AES instructions.
#[derive(Clone)]
pub struct RoundKeys {
    enc: [[u8; 16]; 15],
    dec: [[u8; 16]; 15],
    rounds: usize,
}

impl RoundKeys {
    /// The round keys of a FIPS-197 schedule.
    pub fn new(ks: &KeySchedule) -> Self {
        let mut enc = [[0u8; 16]; 15];
        let mut dec = [[0u8; 16]; 15];
        let rounds = ks.rounds as usize;
        for r in 0..=rounds {
            for c in 0..4 {
                enc[r][4 * c..4 * c + 4].copy_from_slice(&ks.enc[4 * r + c].to_be_bytes());
                dec[r][4 * c..4 * c + 4].copy_from_slice(&ks.dec[4 * r + c].to_be_bytes());
            }
        }
        RoundKeys { enc, dec, rounds }
    }
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        // Not a guarantee (copies may exist), but the expanded key does not
        // outlive its owner in this allocation.
        for k in self.enc.iter_mut().chain(self.dec.iter_mut()) {
            // SAFETY: `k` is a valid, aligned, exclusive reference to 16 bytes.
            unsafe { core::ptr::write_volatile(k, [0; 16]) };
        }
    }
}

/// Calls `$f::<NR>(args)` with the round count of `$rk` as a constant, so
/// that the round loops unroll and the keys stay in registers.
macro_rules! by_rounds {
    ($rk:expr, $f:ident($($a:expr),*)) => {
        match $rk.rounds {
            10 => $f::<10>($($a),*),
            12 => $f::<12>($($a),*),
            _ => $f::<14>($($a),*),
        }
    };
}

/// A method of a token type that calls `$f` with the round count as a
/// constant; sound because the token exists only once run-time detection
/// found every feature `$f` enables.
macro_rules! entry {
    ($(#[$m:meta])* $name:ident => $f:ident($($a:ident: $t:ty),*) $(-> $r:ty)?) => {
        $(#[$m])*
        pub fn $name(self, k: &RoundKeys, $($a: $t),*) $(-> $r)? {
            // SAFETY: `self` proves the features of `$f` were detected.
            unsafe { by_rounds!(k, $f(k, $($a),*)) }
        }
    };
}

/// Proof that the processor has AES-NI (and SSE4.1).
#[derive(Clone, Copy, Debug)]
pub struct Ni(());

impl Ni {
    /// The token, when the processor has the instructions.
    pub fn detect() -> Option<Ni> {
        (std::is_x86_feature_detected!("aes") && std::is_x86_feature_detected!("sse4.1"))
            .then_some(Ni(()))
    }

    entry!(
        /// Encrypts or decrypts one block.
        block => ni_block(b: &mut [u8; 16], decrypt: bool)
    );
    entry!(
        /// ECB over whole blocks (`data.len()` a multiple of 16).
        ecb => ni_ecb(data: &mut [u8], decrypt: bool)
    );
    entry!(
        /// CBC encryption over whole blocks.
        cbc_encrypt => ni_cbc_enc(iv: &[u8; 16], data: &mut [u8])
    );
    entry!(
        /// CBC encryption of [`CBC_LANES`] units side by side: `data` holds
        /// them back to back, each `data.len() / CBC_LANES` bytes (a multiple
        /// of 16), unit `l` chained from `ivs[l]`.
        cbc_encrypt_lanes => ni_cbc_enc_lanes(ivs: &[[u8; 16]; CBC_LANES], data: &mut [u8])
    );
    entry!(
        /// CBC decryption over whole blocks.
        cbc_decrypt => ni_cbc_dec(iv: &[u8; 16], data: &mut [u8])
    );
    entry!(
        /// CTR (128-bit big-endian counter from `iv`), any length.
        ctr => ni_ctr_iv(iv: &[u8; 16], data: &mut [u8])
    );
    entry!(
        /// XTS over whole blocks with tweaks from `t` (little-endian);
        /// returns the tweak of the block after the last.
        xts => ni_xts(t: u128, data: &mut [u8], decrypt: bool) -> u128
    );
}

/// Proof that the processor has VAES on AVX-512 (with AVX512BW, VPCLMULQDQ,
/// and AES-NI for the tails).
#[derive(Clone, Copy, Debug)]
pub struct Vaes(Ni);

impl Vaes {
    /// The token, when the processor has the instructions.
    pub fn detect() -> Option<Vaes> {
        let ni = Ni::detect()?;
        (std::is_x86_feature_detected!("vaes")
            && std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("vpclmulqdq"))
        .then_some(Vaes(ni))
    }

    /// The AES-NI token it implies.
    pub fn ni(self) -> Ni {
        self.0
    }

    entry!(
        /// ECB over whole blocks.
        ecb => vaes_ecb(data: &mut [u8], decrypt: bool)
    );
    entry!(
        /// CBC decryption over whole blocks.
        cbc_decrypt => vaes_cbc_dec(iv: &[u8; 16], data: &mut [u8])
    );
    entry!(
        /// CTR, any length.
        ctr => vaes_ctr_iv(iv: &[u8; 16], data: &mut [u8])
    );
    entry!(
        /// XTS over whole blocks; returns the next tweak.
        xts => vaes_xts(t: u128, data: &mut [u8], decrypt: bool) -> u128
    );
}

/// The rounds of AES on every register of `$b`: whitening with `$k[0]`,
/// `$nr - 1` rounds, the last round.
macro_rules! rounds {
    ($b:expr, $k:expr, $nr:expr, $xor:ident, $round:ident, $last:ident) => {{
        for x in $b.iter_mut() {
            *x = $xor(*x, $k[0]);
        }
        for rk in &$k[1..$nr] {
            for x in $b.iter_mut() {
                *x = $round(*x, *rk);
            }
        }
        for x in $b.iter_mut() {
            *x = $last(*x, $k[$nr]);
        }
    }};
}

// ---------------------------------------------------------------------------
// AES-NI

#[inline]
#[target_feature(enable = "sse2")]
fn ld(b: &[u8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: at least 16 readable bytes (checked); unaligned loads are allowed.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "sse2")]
fn st(b: &mut [u8], v: __m128i) {
    assert!(b.len() >= 16);
    // SAFETY: at least 16 writable bytes (checked), borrowed exclusively.
    unsafe { _mm_storeu_si128(b.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "sse2")]
fn from_u128(t: u128) -> __m128i {
    _mm_set_epi64x((t >> 64) as i64, t as i64)
}

#[inline]
#[target_feature(enable = "sse2")]
fn to_u128(v: __m128i) -> u128 {
    let mut b = [0u8; 16];
    st(&mut b, v);
    u128::from_le_bytes(b)
}

#[inline]
#[target_feature(enable = "sse2")]
fn keys128(k: &[[u8; 16]; 15]) -> [__m128i; 15] {
    core::array::from_fn(|i| ld(&k[i]))
}

/// Multiplies an XTS tweak by α.
#[inline]
fn dbl(t: u128) -> u128 {
    (t << 1) ^ (((t >> 127) as u8).wrapping_neg() as u128 & 0x87)
}

#[inline]
#[target_feature(enable = "aes,sse2")]
fn enc_n<const NR: usize, const N: usize>(k: &[__m128i; 15], b: &mut [__m128i; N]) {
    rounds!(
        b,
        k,
        NR,
        _mm_xor_si128,
        _mm_aesenc_si128,
        _mm_aesenclast_si128
    )
}

#[inline]
#[target_feature(enable = "aes,sse2")]
fn dec_n<const NR: usize, const N: usize>(k: &[__m128i; 15], b: &mut [__m128i; N]) {
    rounds!(
        b,
        k,
        NR,
        _mm_xor_si128,
        _mm_aesdec_si128,
        _mm_aesdeclast_si128
    )
}

#[inline]
#[target_feature(enable = "aes,sse2")]
fn crypt_n<const NR: usize, const N: usize>(
    k: &[__m128i; 15],
    b: &mut [__m128i; N],
    decrypt: bool,
) {
    if decrypt {
        dec_n::<NR, N>(k, b)
    } else {
        enc_n::<NR, N>(k, b)
    }
}

#[target_feature(enable = "aes,sse4.1")]
fn ni_block<const NR: usize>(k: &RoundKeys, b: &mut [u8; 16], decrypt: bool) {
    let ks = keys128(if decrypt { &k.dec } else { &k.enc });
    let mut x = [ld(b)];
    crypt_n::<NR, 1>(&ks, &mut x, decrypt);
    st(b, x[0]);
}

#[target_feature(enable = "aes,sse4.1")]
fn ni_ecb<const NR: usize>(k: &RoundKeys, data: &mut [u8], decrypt: bool) {
    let ks = keys128(if decrypt { &k.dec } else { &k.enc });
    let mut chunks = data.chunks_exact_mut(128);
    for c in &mut chunks {
        let mut b: [__m128i; 8] = core::array::from_fn(|i| ld(&c[16 * i..]));
        crypt_n::<NR, 8>(&ks, &mut b, decrypt);
        for (i, x) in b.iter().enumerate() {
            st(&mut c[16 * i..], *x);
        }
    }
    for c in chunks.into_remainder().chunks_exact_mut(16) {
        let mut b = [ld(c)];
        crypt_n::<NR, 1>(&ks, &mut b, decrypt);
        st(c, b[0]);
    }
}

#[target_feature(enable = "aes,sse4.1")]
fn ni_cbc_enc<const NR: usize>(k: &RoundKeys, iv: &[u8; 16], data: &mut [u8]) {
    let ks = keys128(&k.enc);
    let mut prev = ld(iv);
    for c in data.chunks_exact_mut(16) {
        let mut b = [_mm_xor_si128(ld(c), prev)];
        enc_n::<NR, 1>(&ks, &mut b);
        prev = b[0];
        st(c, prev);
    }
}

/// Units a CBC encryption interleaves: one chain is serial (each block
/// waits for the one before), eight independent chains fill the AES units.
pub const CBC_LANES: usize = 8;

#[target_feature(enable = "aes,sse4.1")]
fn ni_cbc_enc_lanes<const NR: usize>(k: &RoundKeys, ivs: &[[u8; 16]; CBC_LANES], data: &mut [u8]) {
    let ks = keys128(&k.enc);
    let unit = data.len() / CBC_LANES;
    assert!(unit.is_multiple_of(16) && unit * CBC_LANES == data.len());
    let mut prev: [__m128i; CBC_LANES] = core::array::from_fn(|l| ld(&ivs[l]));
    for j in (0..unit).step_by(16) {
        let mut b: [__m128i; CBC_LANES] =
            core::array::from_fn(|l| _mm_xor_si128(ld(&data[l * unit + j..]), prev[l]));
        enc_n::<NR, CBC_LANES>(&ks, &mut b);
        for (l, x) in b.iter().enumerate() {
            st(&mut data[l * unit + j..], *x);
        }
        prev = b;
    }
}

#[target_feature(enable = "aes,sse4.1")]
fn ni_cbc_dec<const NR: usize>(k: &RoundKeys, iv: &[u8; 16], data: &mut [u8]) {
    let ks = keys128(&k.dec);
    let mut prev = ld(iv);
    let mut chunks = data.chunks_exact_mut(128);
    for c in &mut chunks {
        let ct: [__m128i; 8] = core::array::from_fn(|i| ld(&c[16 * i..]));
        let mut b = ct;
        dec_n::<NR, 8>(&ks, &mut b);
        st(c, _mm_xor_si128(b[0], prev));
        for i in 1..8 {
            st(&mut c[16 * i..], _mm_xor_si128(b[i], ct[i - 1]));
        }
        prev = ct[7];
    }
    for c in chunks.into_remainder().chunks_exact_mut(16) {
        let ct = ld(c);
        let mut b = [ct];
        dec_n::<NR, 1>(&ks, &mut b);
        st(c, _mm_xor_si128(b[0], prev));
        prev = ct;
    }
}

/// A counter block: the big-endian bytes of `c`.
#[inline]
#[target_feature(enable = "sse2")]
fn ctr_block(c: u128) -> __m128i {
    from_u128(c.swap_bytes())
}

#[target_feature(enable = "aes,sse4.1")]
fn ni_ctr_iv<const NR: usize>(k: &RoundKeys, iv: &[u8; 16], data: &mut [u8]) {
    ni_ctr::<NR>(k, u128::from_be_bytes(*iv), data)
}

/// The byte shuffle that reverses a 128-bit lane.
#[inline]
#[target_feature(enable = "sse2")]
fn bswap128() -> __m128i {
    _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

#[target_feature(enable = "aes,sse4.1")]
fn ni_ctr<const NR: usize>(k: &RoundKeys, mut ctr: u128, data: &mut [u8]) {
    let ks = keys128(&k.enc);
    let mut chunks = data.chunks_exact_mut(128);
    for c in &mut chunks {
        let mut b: [__m128i; 8] = if (ctr as u64) <= u64::MAX - 7 {
            // No carry out of the low 64 bits: add in registers, then swap
            // the bytes of each counter to big-endian.
            let base = from_u128(ctr);
            core::array::from_fn(|i| {
                let c = _mm_add_epi64(base, _mm_set_epi64x(0, i as i64));
                _mm_shuffle_epi8(c, bswap128())
            })
        } else {
            core::array::from_fn(|i| ctr_block(ctr.wrapping_add(i as u128)))
        };
        ctr = ctr.wrapping_add(8);
        enc_n::<NR, 8>(&ks, &mut b);
        for (i, x) in b.iter().enumerate() {
            let v = _mm_xor_si128(*x, ld(&c[16 * i..]));
            st(&mut c[16 * i..], v);
        }
    }
    for c in chunks.into_remainder().chunks_mut(16) {
        let mut b = [ctr_block(ctr)];
        ctr = ctr.wrapping_add(1);
        enc_n::<NR, 1>(&ks, &mut b);
        let mut ksb = [0u8; 16];
        st(&mut ksb, b[0]);
        for (d, s) in c.iter_mut().zip(ksb) {
            *d ^= s;
        }
    }
}

/// Multiplies the tweak in a register by α: a 1-bit shift of each 64-bit half,
/// the bit carried out of the low half into the high one, and x^128 reduced
/// as 0x87 into the low half.
#[inline]
#[target_feature(enable = "sse2")]
fn xdbl(t: __m128i) -> __m128i {
    // Each half's top bit, halves swapped: (bit 127, bit 63).
    let c = _mm_shuffle_epi32::<0x4e>(_mm_srli_epi64::<63>(t));
    let mask = _mm_sub_epi64(_mm_setzero_si128(), c);
    _mm_xor_si128(
        _mm_slli_epi64::<1>(t),
        _mm_and_si128(mask, _mm_set_epi64x(1, 0x87)),
    )
}

/// Multiplies the tweak in a register by α^8: a 1-byte shift of the 128 bits,
/// and the byte shifted out reduced by x^128 = x^7 + x^2 + x + 1 (its
/// carry-less product with 0x87 by shifts: at most 15 bits, no carry on).
#[inline]
#[target_feature(enable = "sse2")]
fn mul_a8(t: __m128i) -> __m128i {
    let o = _mm_srli_si128::<15>(t);
    let r = _mm_xor_si128(
        _mm_xor_si128(o, _mm_slli_epi64::<1>(o)),
        _mm_xor_si128(_mm_slli_epi64::<2>(o), _mm_slli_epi64::<7>(o)),
    );
    _mm_xor_si128(_mm_slli_si128::<1>(t), r)
}

#[target_feature(enable = "aes,sse4.1")]
fn ni_xts<const NR: usize>(k: &RoundKeys, t: u128, data: &mut [u8], decrypt: bool) -> u128 {
    let ks = keys128(if decrypt { &k.dec } else { &k.enc });
    let mut t = from_u128(t);
    let mut chunks = data.chunks_exact_mut(128);
    // The tweaks of the next eight blocks; each step advances every one by
    // α^8 (independent of each other, unlike a chain of doublings).
    let mut tw: [__m128i; 8] = core::array::from_fn(|_| {
        let v = t;
        t = xdbl(t);
        v
    });
    for c in &mut chunks {
        let mut b: [__m128i; 8] = core::array::from_fn(|i| _mm_xor_si128(ld(&c[16 * i..]), tw[i]));
        crypt_n::<NR, 8>(&ks, &mut b, decrypt);
        for i in 0..8 {
            st(&mut c[16 * i..], _mm_xor_si128(b[i], tw[i]));
            tw[i] = mul_a8(tw[i]);
        }
    }
    let mut t = tw[0];
    for c in chunks.into_remainder().chunks_exact_mut(16) {
        let tw = t;
        t = xdbl(t);
        let mut b = [_mm_xor_si128(ld(c), tw)];
        crypt_n::<NR, 1>(&ks, &mut b, decrypt);
        st(c, _mm_xor_si128(b[0], tw));
    }
    to_u128(t)
}

// ---------------------------------------------------------------------------
// VAES on AVX-512: four blocks per register, four registers per step.

/// Bytes per VAES step: 16 blocks.
const STEP: usize = 256;

#[inline]
#[target_feature(enable = "avx512f")]
fn ld4(b: &[u8]) -> __m512i {
    assert!(b.len() >= 64);
    // SAFETY: at least 64 readable bytes (checked); unaligned loads are allowed.
    unsafe { _mm512_loadu_si512(b.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn st4(b: &mut [u8], v: __m512i) {
    assert!(b.len() >= 64);
    // SAFETY: at least 64 writable bytes (checked), borrowed exclusively.
    unsafe { _mm512_storeu_si512(b.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn keys512(k: &[[u8; 16]; 15]) -> [__m512i; 15] {
    core::array::from_fn(|i| _mm512_broadcast_i32x4(ld(&k[i])))
}

#[inline]
#[target_feature(enable = "avx512f,vaes")]
fn venc<const NR: usize>(k: &[__m512i; 15], b: &mut [__m512i; 4]) {
    rounds!(
        b,
        k,
        NR,
        _mm512_xor_si512,
        _mm512_aesenc_epi128,
        _mm512_aesenclast_epi128
    )
}

#[inline]
#[target_feature(enable = "avx512f,vaes")]
fn vdec<const NR: usize>(k: &[__m512i; 15], b: &mut [__m512i; 4]) {
    rounds!(
        b,
        k,
        NR,
        _mm512_xor_si512,
        _mm512_aesdec_epi128,
        _mm512_aesdeclast_epi128
    )
}

#[inline]
#[target_feature(enable = "avx512f,vaes")]
fn vcrypt<const NR: usize>(k: &[__m512i; 15], b: &mut [__m512i; 4], decrypt: bool) {
    if decrypt {
        vdec::<NR>(k, b)
    } else {
        venc::<NR>(k, b)
    }
}

#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes,sse4.1")]
fn vaes_ecb<const NR: usize>(k: &RoundKeys, data: &mut [u8], decrypt: bool) {
    let ks = keys512(if decrypt { &k.dec } else { &k.enc });
    let mut chunks = data.chunks_exact_mut(STEP);
    for c in &mut chunks {
        let mut b: [__m512i; 4] = core::array::from_fn(|i| ld4(&c[64 * i..]));
        vcrypt::<NR>(&ks, &mut b, decrypt);
        for (i, x) in b.iter().enumerate() {
            st4(&mut c[64 * i..], *x);
        }
    }
    ni_ecb::<NR>(k, chunks.into_remainder(), decrypt);
}

#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes,sse4.1")]
fn vaes_cbc_dec<const NR: usize>(k: &RoundKeys, iv: &[u8; 16], data: &mut [u8]) {
    let ks = keys512(&k.dec);
    // Lane 3 of `last` is the ciphertext block before the current step.
    let mut last = _mm512_broadcast_i32x4(ld(iv));
    let mut chunks = data.chunks_exact_mut(STEP);
    for c in &mut chunks {
        let ct: [__m512i; 4] = core::array::from_fn(|i| ld4(&c[64 * i..]));
        let mut b = ct;
        vdec::<NR>(&ks, &mut b);
        for i in 0..4 {
            let before = if i == 0 { last } else { ct[i - 1] };
            // Blocks (before.3, ct[i].0, ct[i].1, ct[i].2).
            let prev = _mm512_alignr_epi64::<6>(ct[i], before);
            st4(&mut c[64 * i..], _mm512_xor_si512(b[i], prev));
        }
        last = ct[3];
    }
    let mut next_iv = [0u8; 16];
    st(&mut next_iv, _mm512_extracti32x4_epi32::<3>(last));
    ni_cbc_dec::<NR>(k, &next_iv, chunks.into_remainder());
}

#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes,sse4.1")]
fn vaes_ctr_iv<const NR: usize>(k: &RoundKeys, iv: &[u8; 16], data: &mut [u8]) {
    vaes_ctr::<NR>(k, u128::from_be_bytes(*iv), data)
}

#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes,sse4.1")]
fn vaes_ctr<const NR: usize>(k: &RoundKeys, mut ctr: u128, data: &mut [u8]) {
    let ks = keys512(&k.enc);
    // Reverses the 16 bytes of each lane: little-endian counters to blocks.
    let bswap = _mm512_broadcast_i32x4(bswap128());
    let inc: [__m512i; 4] = core::array::from_fn(|i| {
        let j = 4 * i as i64;
        _mm512_set_epi64(0, j + 3, 0, j + 2, 0, j + 1, 0, j)
    });
    let mut chunks = data.chunks_exact_mut(STEP);
    for c in &mut chunks {
        let mut b: [__m512i; 4] = if (ctr as u64) <= u64::MAX - 15 {
            // No carry out of the low 64 bits within the step.
            let base = _mm512_broadcast_i32x4(from_u128(ctr));
            core::array::from_fn(|i| _mm512_shuffle_epi8(_mm512_add_epi64(base, inc[i]), bswap))
        } else {
            core::array::from_fn(|i| {
                let mut blk = [0u8; 64];
                for j in 0..4 {
                    let v = ctr.wrapping_add((4 * i + j) as u128).to_be_bytes();
                    blk[16 * j..16 * j + 16].copy_from_slice(&v);
                }
                ld4(&blk)
            })
        };
        ctr = ctr.wrapping_add(16);
        venc::<NR>(&ks, &mut b);
        for (i, x) in b.iter().enumerate() {
            let v = _mm512_xor_si512(*x, ld4(&c[64 * i..]));
            st4(&mut c[64 * i..], v);
        }
    }
    ni_ctr::<NR>(k, ctr, chunks.into_remainder());
}

/// Multiplies the tweak in each lane by α^16: a 2-byte shift left within the
/// lane, and the 16 bits shifted out reduced by x^128 = x^7 + x^2 + x + 1
/// with one carry-less multiplication (at most 23 bits, no further carry).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,vpclmulqdq")]
fn mul_a16(t: __m512i, poly: __m512i) -> __m512i {
    let hi = _mm512_bsrli_epi128::<14>(t);
    let sh = _mm512_bslli_epi128::<2>(t);
    _mm512_xor_si512(sh, _mm512_clmulepi64_epi128::<0x00>(hi, poly))
}

#[target_feature(enable = "avx512f,avx512bw,vaes,vpclmulqdq,aes,sse4.1")]
fn vaes_xts<const NR: usize>(k: &RoundKeys, mut t: u128, data: &mut [u8], decrypt: bool) -> u128 {
    let whole = data.len() / STEP * STEP;
    let (head, rest) = data.split_at_mut(whole);
    if !head.is_empty() {
        let ks = keys512(if decrypt { &k.dec } else { &k.enc });
        let poly = _mm512_broadcast_i32x4(_mm_set_epi64x(0, 0x87));
        let mut first = [0u8; STEP / 4];
        let mut tw: [__m512i; 4] = core::array::from_fn(|_| {
            for j in 0..4 {
                first[16 * j..16 * j + 16].copy_from_slice(&t.to_le_bytes());
                t = dbl(t);
            }
            ld4(&first)
        });
        for c in head.chunks_exact_mut(STEP) {
            let mut b: [__m512i; 4] =
                core::array::from_fn(|i| _mm512_xor_si512(ld4(&c[64 * i..]), tw[i]));
            vcrypt::<NR>(&ks, &mut b, decrypt);
            for i in 0..4 {
                st4(&mut c[64 * i..], _mm512_xor_si512(b[i], tw[i]));
                tw[i] = mul_a16(tw[i], poly);
            }
        }
        t = to_u128(_mm512_castsi512_si128(tw[0]));
    }
    ni_xts::<NR>(k, t, rest, decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdbl_matches_scalar_doubling() {
        let mut v = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        for i in 0..1000 {
            v = v
                .wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15)
                .rotate_left(i % 128);
            for t in [
                v,
                v | 1 << 127,
                v | 1 << 63,
                v & !(1 << 127),
                u128::MAX,
                1 << 127,
            ] {
                // SAFETY: SSE2 is part of x86-64.
                let got = unsafe { to_u128(xdbl(from_u128(t))) };
                assert_eq!(got, dbl(t), "{t:#x}");
            }
        }
    }

    #[test]
    fn mul_a8_matches_eight_doublings() {
        let mut v = 0x0f1e_2d3c_4b5a_6978_8796_a5b4_c3d2_e1f0u128;
        for i in 0..1000 {
            v = v
                .wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15)
                .rotate_left(i % 128);
            for t in [v, v | 0xff << 120, v & !(0xff << 120), u128::MAX] {
                // SAFETY: SSE2 is part of x86-64.
                let got = unsafe { to_u128(mul_a8(from_u128(t))) };
                assert_eq!(got, (0..8).fold(t, |a, _| dbl(a)), "{t:#x}");
            }
        }
    }

    #[test]
    fn mul_a16_matches_sixteen_doublings() {
        let Some(v) = Vaes::detect() else {
            eprintln!("no VAES/AVX-512 on this CPU: mul_a16 not tested here");
            return;
        };
        let _ = v;
        let mut seed = 0x9e37_79b9_7f4a_7c15u128 | (0xdead_beef_u128 << 96);
        for _ in 0..200 {
            seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).rotate_left(17) ^ 0xffff << 112;
            let lanes: [u128; 4] = core::array::from_fn(|i| seed.rotate_left(31 * i as u32));
            let mut bytes = [0u8; 64];
            for (i, l) in lanes.iter().enumerate() {
                bytes[16 * i..16 * i + 16].copy_from_slice(&l.to_le_bytes());
            }
            let mut out = [0u8; 64];
            // SAFETY: `Vaes::detect` found AVX-512F/BW and VPCLMULQDQ above.
            unsafe {
                let poly = _mm512_broadcast_i32x4(_mm_set_epi64x(0, 0x87));
                st4(&mut out, mul_a16(ld4(&bytes), poly));
            }
            for (i, l) in lanes.iter().enumerate() {
                let want = (0..16).fold(*l, |a, _| dbl(a));
                let got = u128::from_le_bytes(out[16 * i..16 * i + 16].try_into().unwrap());
                assert_eq!(got, want, "lane {i} of {l:#x}");
            }
        }
    }
}
