//! CPU backend: `lib/raid6` syndrome generation and recovery.
//!
//! Every algorithm is written once over a [`Lane`] (a group of bytes updated
//! together) and instantiated for 64-bit SWAR words (the kernel's `int64`
//! algorithm), AVX2 and AVX-512BW vectors. The vector paths are selected at
//! run time with `is_x86_feature_detected!`; elsewhere SWAR runs.
//!
//! Syndromes follow the kernel exactly: Horner's rule from the highest data
//! disk down (`wq = wq·{02} ^ D_z`, `wp ^= D_z`), and `xor_syndrome` multiplies
//! the partial Q by `g^start` before folding it in. Recovery follows
//! `raid6_2data_recov` / `raid6_datap_recov`: the syndrome of the surviving
//! disks is computed into the failed blocks, then combined with P and Q using
//! multiplications by constants (`raid6_gfexi`, `raid6_gfinv`); those
//! multiplications are done lane-wide by Horner over the constant's bits.

use crate::gf::{GFEXI, GFEXP, GFINV};
use crate::proto::{self, ProtoError, Raid6Layout, Raid6Op, PARAMS_LEN};
use kgpu_common::abi::Status;

/// Largest disk count of the pointer-convention API (as in [`proto::MAX_DISKS`]).
const MAX_DISKS: usize = proto::MAX_DISKS as usize;

/// An implementation of the syndrome arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algo {
    /// 64-bit SWAR words, 64 bytes per iteration (the kernel's `int64x8`).
    Swar,
    /// AVX2, 128 bytes per iteration.
    Avx2,
    /// AVX-512BW, 256 bytes per iteration.
    Avx512,
}

impl Algo {
    /// Every algorithm, slowest first.
    pub const ALL: [Algo; 3] = [Algo::Swar, Algo::Avx2, Algo::Avx512];

    /// Short name for logs and benchmarks.
    pub const fn name(self) -> &'static str {
        match self {
            Algo::Swar => "swar64",
            Algo::Avx2 => "avx2",
            Algo::Avx512 => "avx512bw",
        }
    }

    /// True when this machine can run the algorithm.
    pub fn is_available(self) -> bool {
        match self {
            Algo::Swar => true,
            #[cfg(target_arch = "x86_64")]
            Algo::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Algo::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Algo::Avx2 | Algo::Avx512 => false,
        }
    }

    /// The fastest algorithm available on this machine.
    pub fn best() -> Algo {
        for a in [Algo::Avx512, Algo::Avx2] {
            if a.is_available() {
                return a;
            }
        }
        Algo::Swar
    }

    /// `self` when available, otherwise [`Algo::Swar`].
    pub fn resolve(self) -> Algo {
        if self.is_available() {
            self
        } else {
            Algo::Swar
        }
    }
}

/// Why a CPU operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Raid6Error {
    /// The request failed validation.
    Proto(ProtoError),
    /// Pointer-convention API: the number of blocks differs from `disks`, or a
    /// block is shorter than `bytes`.
    BadBlocks,
}

impl Raid6Error {
    /// The completion status reported for this error.
    pub const fn status(self) -> Status {
        match self {
            Raid6Error::Proto(e) => crate::proto_status(e),
            Raid6Error::BadBlocks => Status::BadLength,
        }
    }
}

impl From<ProtoError> for Raid6Error {
    fn from(e: ProtoError) -> Self {
        Raid6Error::Proto(e)
    }
}

impl core::fmt::Display for Raid6Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Raid6Error::Proto(e) => f.write_str(e.as_str()),
            Raid6Error::BadBlocks => f.write_str("block count or block length wrong"),
        }
    }
}

impl std::error::Error for Raid6Error {}

/// A request as the helper hands it over (fields of the `Sqe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raid6Request<'a> {
    /// `Sqe::op`.
    pub op: u16,
    /// `Sqe::count`: disks including P and Q.
    pub disks: u32,
    /// `Sqe::unit`: bytes per disk.
    pub unit: u32,
    /// `Sqe::params`.
    pub params: &'a [u8; PARAMS_LEN],
}

/// The request-level CPU backend (uses [`Algo::best`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Raid6Cpu;

impl Raid6Cpu {
    /// Runs one request: `input` and `output` are the request's extents
    /// (disjoint). For `XOR_SYNDROME`, `output` holds the old P and Q on entry.
    /// Returns the number of output bytes written.
    pub fn execute(
        &self,
        req: &Raid6Request<'_>,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<u64, Raid6Error> {
        execute_with(Algo::best(), req, input, output)
    }
}

/// [`Raid6Cpu::execute`] with a chosen algorithm (falls back to SWAR when
/// `algo` is not available).
pub fn execute_with(
    algo: Algo,
    req: &Raid6Request<'_>,
    input: &[u8],
    output: &mut [u8],
) -> Result<u64, Raid6Error> {
    let layout = proto::validate(
        req.op,
        req.disks,
        req.unit,
        input.len() as u64,
        output.len() as u64,
        req.params,
    )?;
    // SAFETY: `layout` is what `validate` made of this request and these lengths.
    unsafe { execute_layout(algo, &layout, input, output) }
}

/// [`execute_with`] of a request already validated: nothing of it is
/// checked again but that `input` and `output` have the layout's lengths.
///
/// # Safety
///
/// `layout` must be what [`proto::validate`] returned for the request (the
/// block pointers are derived from it without further checks).
pub unsafe fn execute_layout(
    algo: Algo,
    layout: &Raid6Layout,
    input: &[u8],
    output: &mut [u8],
) -> Result<u64, Raid6Error> {
    if input.len() as u64 != layout.input_len {
        return Err(ProtoError::BadInputLen.into());
    }
    if output.len() as u64 != layout.output_len {
        return Err(ProtoError::BadOutputLen.into());
    }
    let algo = algo.resolve();
    let u = layout.unit as usize;
    let n = layout.data_disks() as usize;
    let mut ptrs = [core::ptr::null::<u8>(); MAX_DISKS];
    let (out0, out1) = output.split_at_mut(u);
    match layout.op {
        Raid6Op::GenSyndrome => {
            for (slot, chunk) in ptrs.iter_mut().zip(input.chunks_exact(u)) {
                *slot = chunk.as_ptr();
            }
            // SAFETY: validate() gave input_len == n*u (checked above), so each of the n
            // pointers reads u bytes inside `input`; out0/out1 are u bytes each,
            // writable and disjoint from `input` (distinct borrows).
            unsafe {
                syndrome(
                    algo,
                    &ptrs[..n],
                    0,
                    false,
                    out0.as_mut_ptr(),
                    out1.as_mut_ptr(),
                    u,
                )
            };
        }
        Raid6Op::XorSyndrome { start, stop } => {
            let k = (stop - start) as usize + 1;
            for (slot, chunk) in ptrs.iter_mut().zip(input.chunks_exact(u)) {
                *slot = chunk.as_ptr();
            }
            // SAFETY: input.len() == k*u was validated, so the k pointers read
            // u bytes each inside `input`; the outputs are u bytes each,
            // disjoint from the input and from each other.
            unsafe {
                syndrome(
                    algo,
                    &ptrs[..k],
                    start,
                    true,
                    out0.as_mut_ptr(),
                    out1.as_mut_ptr(),
                    u,
                )
            };
        }
        Raid6Op::Recov2Data { faila, failb } => {
            let (fa, fb) = (faila as usize, failb as usize);
            for (i, (slot, chunk)) in ptrs
                .iter_mut()
                .zip(input.chunks_exact(u))
                .enumerate()
                .take(n)
            {
                if i != fa && i != fb {
                    *slot = chunk.as_ptr();
                }
            }
            let p = input[n * u..].as_ptr();
            let q = input[(n + 1) * u..].as_ptr();
            let (dp, dq) = (out0.as_mut_ptr(), out1.as_mut_ptr());
            // SAFETY: input.len() == (n+2)*u was validated: the surviving data
            // pointers, P and Q each read u bytes inside `input`; dp and dq are
            // u writable bytes each, disjoint from the input and each other.
            unsafe {
                syndrome(algo, &ptrs[..n], 0, false, dp, dq, u);
                finish_2data(
                    algo,
                    p,
                    q,
                    dp,
                    dq,
                    GFEXI[fb - fa],
                    GFINV[(GFEXP[fa] ^ GFEXP[fb]) as usize],
                    u,
                );
            }
        }
        Raid6Op::RecovDataP { faila } => {
            let fa = faila as usize;
            for (i, (slot, chunk)) in ptrs
                .iter_mut()
                .zip(input.chunks_exact(u))
                .enumerate()
                .take(n)
            {
                if i != fa {
                    *slot = chunk.as_ptr();
                }
            }
            let q = input[(n + 1) * u..].as_ptr();
            let (dq, p) = (out0.as_mut_ptr(), out1.as_mut_ptr());
            // SAFETY: as for Recov2Data; here the recomputed P goes to the
            // second output block and the partial Q to the first.
            unsafe {
                syndrome(algo, &ptrs[..n], 0, false, p, dq, u);
                finish_datap(algo, q, dq, p, GFINV[GFEXP[fa] as usize], u);
            }
        }
    }
    Ok(layout.output_len)
}

/// Checks the pointer-convention arguments and collects the block pointers.
fn collect(
    disks: usize,
    bytes: usize,
    blocks: &mut [&mut [u8]],
    ptrs: &mut [*mut u8; MAX_DISKS],
) -> Result<(), Raid6Error> {
    if disks < proto::MIN_DISKS as usize || disks > MAX_DISKS {
        return Err(ProtoError::BadDisks.into());
    }
    if blocks.len() != disks || blocks.iter().any(|b| b.len() < bytes) {
        return Err(Raid6Error::BadBlocks);
    }
    for (slot, b) in ptrs.iter_mut().zip(blocks.iter_mut()) {
        *slot = b.as_mut_ptr();
    }
    Ok(())
}

/// `raid6_call.gen_syndrome(disks, bytes, ptrs)` with the best algorithm.
pub fn gen_syndrome(
    disks: usize,
    bytes: usize,
    blocks: &mut [&mut [u8]],
) -> Result<(), Raid6Error> {
    Algo::best().gen_syndrome(disks, bytes, blocks)
}

/// `raid6_call.xor_syndrome(disks, start, stop, bytes, ptrs)` with the best algorithm.
pub fn xor_syndrome(
    disks: usize,
    start: usize,
    stop: usize,
    bytes: usize,
    blocks: &mut [&mut [u8]],
) -> Result<(), Raid6Error> {
    Algo::best().xor_syndrome(disks, start, stop, bytes, blocks)
}

/// `raid6_2data_recov(disks, bytes, faila, failb, ptrs)` with the best algorithm.
pub fn recov_2data(
    disks: usize,
    bytes: usize,
    faila: usize,
    failb: usize,
    blocks: &mut [&mut [u8]],
) -> Result<(), Raid6Error> {
    Algo::best().recov_2data(disks, bytes, faila, failb, blocks)
}

/// `raid6_datap_recov(disks, bytes, faila, ptrs)` with the best algorithm.
pub fn recov_datap(
    disks: usize,
    bytes: usize,
    faila: usize,
    blocks: &mut [&mut [u8]],
) -> Result<(), Raid6Error> {
    Algo::best().recov_datap(disks, bytes, faila, blocks)
}

impl Algo {
    /// Kernel pointer convention: `blocks` = data disks, then P, then Q
    /// (`disks` blocks of at least `bytes` bytes). Writes P and Q.
    pub fn gen_syndrome(
        self,
        disks: usize,
        bytes: usize,
        blocks: &mut [&mut [u8]],
    ) -> Result<(), Raid6Error> {
        let mut ptrs = [core::ptr::null_mut(); MAX_DISKS];
        collect(disks, bytes, blocks, &mut ptrs)?;
        let data = data_ptrs(&ptrs, 0, disks - 2, &[]);
        // SAFETY: collect() checked that the `disks` pointers come from distinct
        // blocks of at least `bytes` bytes; P and Q are written, the data read.
        unsafe {
            syndrome(
                self.resolve(),
                &data[..disks - 2],
                0,
                false,
                ptrs[disks - 2],
                ptrs[disks - 1],
                bytes,
            )
        };
        Ok(())
    }

    /// Kernel pointer convention: folds data disks `start ..= stop` into P and
    /// Q (`P ^= ⊕ D_i`, `Q ^= ⊕ g^i·D_i`); the other data blocks are not read.
    pub fn xor_syndrome(
        self,
        disks: usize,
        start: usize,
        stop: usize,
        bytes: usize,
        blocks: &mut [&mut [u8]],
    ) -> Result<(), Raid6Error> {
        let mut ptrs = [core::ptr::null_mut(); MAX_DISKS];
        collect(disks, bytes, blocks, &mut ptrs)?;
        if start > stop || stop >= disks - 2 {
            return Err(ProtoError::BadRange.into());
        }
        let data = data_ptrs(&ptrs, start, stop + 1, &[]);
        // SAFETY: as in gen_syndrome; start ≤ stop < disks-2 was checked.
        unsafe {
            syndrome(
                self.resolve(),
                &data[..stop + 1 - start],
                start as u32,
                true,
                ptrs[disks - 2],
                ptrs[disks - 1],
                bytes,
            )
        };
        Ok(())
    }

    /// Kernel pointer convention: rebuilds data blocks `faila < failb` from the
    /// other data blocks, P and Q (P and Q are not modified).
    pub fn recov_2data(
        self,
        disks: usize,
        bytes: usize,
        faila: usize,
        failb: usize,
        blocks: &mut [&mut [u8]],
    ) -> Result<(), Raid6Error> {
        let mut ptrs = [core::ptr::null_mut(); MAX_DISKS];
        collect(disks, bytes, blocks, &mut ptrs)?;
        if faila >= failb || failb >= disks - 2 {
            return Err(ProtoError::BadFailIndex.into());
        }
        let data = data_ptrs(&ptrs, 0, disks - 2, &[faila, failb]);
        let algo = self.resolve();
        // SAFETY: distinct blocks of at least `bytes` bytes (collect); the
        // failed blocks are excluded from the reads and receive the results.
        unsafe {
            syndrome(
                algo,
                &data[..disks - 2],
                0,
                false,
                ptrs[faila],
                ptrs[failb],
                bytes,
            );
            finish_2data(
                algo,
                ptrs[disks - 2],
                ptrs[disks - 1],
                ptrs[faila],
                ptrs[failb],
                GFEXI[failb - faila],
                GFINV[(GFEXP[faila] ^ GFEXP[failb]) as usize],
                bytes,
            );
        }
        Ok(())
    }

    /// Kernel pointer convention: rebuilds data block `faila` and P from the
    /// other data blocks and Q.
    pub fn recov_datap(
        self,
        disks: usize,
        bytes: usize,
        faila: usize,
        blocks: &mut [&mut [u8]],
    ) -> Result<(), Raid6Error> {
        let mut ptrs = [core::ptr::null_mut(); MAX_DISKS];
        collect(disks, bytes, blocks, &mut ptrs)?;
        if faila >= disks - 2 {
            return Err(ProtoError::BadFailIndex.into());
        }
        let data = data_ptrs(&ptrs, 0, disks - 2, &[faila]);
        let algo = self.resolve();
        // SAFETY: distinct blocks of at least `bytes` bytes (collect); block
        // `faila` is excluded from the reads and receives the partial Q.
        unsafe {
            syndrome(
                algo,
                &data[..disks - 2],
                0,
                false,
                ptrs[disks - 2],
                ptrs[faila],
                bytes,
            );
            finish_datap(
                algo,
                ptrs[disks - 1],
                ptrs[faila],
                ptrs[disks - 2],
                GFINV[GFEXP[faila] as usize],
                bytes,
            );
        }
        Ok(())
    }
}

/// Read pointers of blocks `from..to`, null for the indices in `skip`.
fn data_ptrs(
    ptrs: &[*mut u8; MAX_DISKS],
    from: usize,
    to: usize,
    skip: &[usize],
) -> [*const u8; MAX_DISKS] {
    let mut out = [core::ptr::null(); MAX_DISKS];
    for (i, slot) in (from..to).zip(out.iter_mut()) {
        if !skip.contains(&i) {
            *slot = ptrs[i];
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Lane-generic kernels.

/// A group of bytes processed together.
///
/// # Safety
///
/// Implementations for vector types may only be used where the CPU supports
/// the corresponding instructions.
unsafe trait Lane: Copy {
    /// Bytes per lane.
    const BYTES: usize;
    /// Loads `BYTES` bytes from `p` (any alignment).
    unsafe fn load(p: *const u8) -> Self;
    /// Stores `BYTES` bytes to `p` (any alignment).
    unsafe fn store(self, p: *mut u8);
    /// All zero bytes.
    unsafe fn zero() -> Self;
    /// Bytewise xor.
    unsafe fn xor(self, o: Self) -> Self;
    /// Multiplies every byte by {02} in GF(2^8)/0x11d.
    unsafe fn mul2(self) -> Self;
}

// SAFETY: plain integer arithmetic, valid on every CPU.
unsafe impl Lane for u8 {
    const BYTES: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller guarantees one readable byte at p.
        unsafe { p.read() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller guarantees one writable byte at p.
        unsafe { p.write(self) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        0
    }
    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        self ^ o
    }
    #[inline(always)]
    unsafe fn mul2(self) -> Self {
        (self << 1) ^ if self & 0x80 != 0 { 0x1d } else { 0 }
    }
}

const NBYTES_80: u64 = 0x8080_8080_8080_8080;
const NBYTES_FE: u64 = 0xfefe_fefe_fefe_fefe;
const NBYTES_1D: u64 = 0x1d1d_1d1d_1d1d_1d1d;

// SAFETY: plain integer arithmetic, valid on every CPU.
unsafe impl Lane for u64 {
    const BYTES: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller guarantees 8 readable bytes at p.
        unsafe { p.cast::<u64>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller guarantees 8 writable bytes at p.
        unsafe { p.cast::<u64>().write_unaligned(self) }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        0
    }
    #[inline(always)]
    unsafe fn xor(self, o: Self) -> Self {
        self ^ o
    }
    #[inline(always)]
    unsafe fn mul2(self) -> Self {
        // The kernel's MASK()/SHLBYTE(): 0xff in every byte whose top bit is set.
        let hi = self & NBYTES_80;
        let mask = (hi << 1).wrapping_sub(hi >> 7);
        ((self << 1) & NBYTES_FE) ^ (mask & NBYTES_1D)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Lane;
    use core::arch::x86_64::*;

    // SAFETY: only instantiated inside functions compiled with
    // `target_feature(enable = "avx2")` and called after detection.
    unsafe impl Lane for __m256i {
        const BYTES: usize = 32;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> Self {
            // SAFETY: the caller guarantees 32 readable bytes and AVX2.
            unsafe { _mm256_loadu_si256(p.cast()) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut u8) {
            // SAFETY: the caller guarantees 32 writable bytes and AVX2.
            unsafe { _mm256_storeu_si256(p.cast(), self) }
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX2.
            unsafe { _mm256_setzero_si256() }
        }
        #[inline(always)]
        unsafe fn xor(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX2.
            unsafe { _mm256_xor_si256(self, o) }
        }
        #[inline(always)]
        unsafe fn mul2(self) -> Self {
            // SAFETY: the caller guarantees AVX2.
            unsafe {
                let hi = _mm256_cmpgt_epi8(_mm256_setzero_si256(), self);
                let sh = _mm256_add_epi8(self, self);
                _mm256_xor_si256(sh, _mm256_and_si256(hi, _mm256_set1_epi8(0x1d)))
            }
        }
    }

    // SAFETY: only instantiated inside functions compiled with
    // `target_feature(enable = "avx512f,avx512bw")` and called after detection.
    unsafe impl Lane for __m512i {
        const BYTES: usize = 64;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> Self {
            // SAFETY: the caller guarantees 64 readable bytes and AVX-512F.
            unsafe { _mm512_loadu_si512(p.cast()) }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut u8) {
            // SAFETY: the caller guarantees 64 writable bytes and AVX-512F.
            unsafe { _mm512_storeu_si512(p.cast(), self) }
        }
        #[inline(always)]
        unsafe fn zero() -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_setzero_si512() }
        }
        #[inline(always)]
        unsafe fn xor(self, o: Self) -> Self {
            // SAFETY: the caller guarantees AVX-512F.
            unsafe { _mm512_xor_si512(self, o) }
        }
        #[inline(always)]
        unsafe fn mul2(self) -> Self {
            // SAFETY: the caller guarantees AVX-512F and AVX-512BW.
            unsafe {
                let hi = _mm512_movepi8_mask(self);
                let sh = _mm512_add_epi8(self, self);
                _mm512_xor_si512(sh, _mm512_maskz_mov_epi8(hi, _mm512_set1_epi8(0x1d)))
            }
        }
    }
}

/// Multiplies every byte of `v` by the constant `c`.
#[inline(always)]
unsafe fn mulc<L: Lane>(v: L, c: u8) -> L {
    // SAFETY: forwarded from the caller (the lane type is usable here).
    unsafe {
        let mut r = L::zero();
        let mut bit = 0x80u8;
        while bit != 0 {
            r = r.mul2();
            if c & bit != 0 {
                r = r.xor(v);
            }
            bit >>= 1;
        }
        r
    }
}

/// Syndrome of `data` (data[j] is data disk `shift + j`; null = all zero)
/// over bytes `off..end` in steps of `N` lanes; returns where it stopped.
/// With `ACC`, P and Q are xored into instead of overwritten.
///
/// # Safety
///
/// `data` is not empty; every non-null pointer is readable and `p`, `q` are
/// writable for `end` bytes; outputs do not overlap inputs or each other; the
/// lane type is supported by the CPU.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn syndrome_range<L: Lane, const N: usize, const ACC: bool>(
    data: &[*const u8],
    shift: u32,
    shift_c: u8,
    p: *mut u8,
    q: *mut u8,
    mut off: usize,
    end: usize,
) -> usize {
    let step = L::BYTES * N;
    let top = data.len() - 1;
    // SAFETY: every access is at `off + k*BYTES .. + BYTES` ≤ `end`, inside
    // the ranges the caller guarantees; null pointers are never dereferenced.
    unsafe {
        while end - off >= step {
            let mut wp = [L::zero(); N];
            let mut wq = [L::zero(); N];
            let d = data[top];
            if !d.is_null() {
                for k in 0..N {
                    let v = L::load(d.add(off + k * L::BYTES));
                    wp[k] = v;
                    wq[k] = v;
                }
            }
            for z in (0..top).rev() {
                let d = *data.get_unchecked(z);
                for w in wq.iter_mut() {
                    *w = w.mul2();
                }
                if !d.is_null() {
                    for k in 0..N {
                        let v = L::load(d.add(off + k * L::BYTES));
                        wp[k] = wp[k].xor(v);
                        wq[k] = wq[k].xor(v);
                    }
                }
            }
            if shift != 0 {
                if shift <= 8 {
                    for _ in 0..shift {
                        for w in wq.iter_mut() {
                            *w = w.mul2();
                        }
                    }
                } else {
                    for w in wq.iter_mut() {
                        *w = mulc(*w, shift_c);
                    }
                }
            }
            for k in 0..N {
                let pp = p.add(off + k * L::BYTES);
                let qq = q.add(off + k * L::BYTES);
                if ACC {
                    L::load(pp).xor(wp[k]).store(pp);
                    L::load(qq).xor(wq[k]).store(qq);
                } else {
                    wp[k].store(pp);
                    wq[k].store(qq);
                }
            }
            off += step;
        }
    }
    off
}

/// Final step of `raid6_2data_recov` over `off..end`: on entry `dp`/`dq` hold
/// the syndrome of the surviving data disks; on exit D_a and D_b.
///
/// # Safety
///
/// As [`syndrome_range`]: `p`, `q` readable, `dp`, `dq` writable for `end` bytes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish_2data_range<L: Lane, const N: usize>(
    p: *const u8,
    q: *const u8,
    dp: *mut u8,
    dq: *mut u8,
    pbmul: u8,
    qmul: u8,
    mut off: usize,
    end: usize,
) -> usize {
    // SAFETY: accesses stay inside `off..end` of each block.
    unsafe {
        while end - off >= L::BYTES * N {
            for k in 0..N {
                let o = off + k * L::BYTES;
                let px = L::load(p.add(o)).xor(L::load(dp.add(o)));
                let qx = mulc(L::load(q.add(o)).xor(L::load(dq.add(o))), qmul);
                let db = mulc(px, pbmul).xor(qx);
                db.store(dq.add(o));
                db.xor(px).store(dp.add(o));
            }
            off += L::BYTES * N;
        }
    }
    off
}

/// Final step of `raid6_datap_recov` over `off..end`: on entry `dq` holds the
/// Q of the surviving data and `p` their P; on exit D_a and the full P.
///
/// # Safety
///
/// As [`syndrome_range`]: `q` readable, `dq`, `p` writable for `end` bytes.
#[inline(always)]
unsafe fn finish_datap_range<L: Lane, const N: usize>(
    q: *const u8,
    dq: *mut u8,
    p: *mut u8,
    qmul: u8,
    mut off: usize,
    end: usize,
) -> usize {
    // SAFETY: accesses stay inside `off..end` of each block.
    unsafe {
        while end - off >= L::BYTES * N {
            for k in 0..N {
                let o = off + k * L::BYTES;
                let d = mulc(L::load(q.add(o)).xor(L::load(dq.add(o))), qmul);
                d.store(dq.add(o));
                L::load(p.add(o)).xor(d).store(p.add(o));
            }
            off += L::BYTES * N;
        }
    }
    off
}

/// Whole-length drivers: the main lane type, then 8-byte words, then bytes.
macro_rules! drivers {
    ($syn:ident, $f2:ident, $fp:ident, $lane:ty, $n:expr $(, $feat:literal)?) => {
        $(#[target_feature(enable = $feat)])?
        /// # Safety
        ///
        /// As [`syndrome_range`], for `len` bytes.
        unsafe fn $syn<const ACC: bool>(data: &[*const u8], shift: u32, p: *mut u8, q: *mut u8, len: usize) {
            let c = GFEXP[shift as usize & 0xff];
            // SAFETY: forwarded from the caller.
            unsafe {
                let off = syndrome_range::<$lane, $n, ACC>(data, shift, c, p, q, 0, len);
                let off = syndrome_range::<u64, 1, ACC>(data, shift, c, p, q, off, len);
                syndrome_range::<u8, 1, ACC>(data, shift, c, p, q, off, len);
            }
        }

        $(#[target_feature(enable = $feat)])?
        /// # Safety
        ///
        /// As [`finish_2data_range`], for `len` bytes.
        unsafe fn $f2(p: *const u8, q: *const u8, dp: *mut u8, dq: *mut u8, pbmul: u8, qmul: u8, len: usize) {
            // SAFETY: forwarded from the caller.
            unsafe {
                let off = finish_2data_range::<$lane, $n>(p, q, dp, dq, pbmul, qmul, 0, len);
                let off = finish_2data_range::<u64, 1>(p, q, dp, dq, pbmul, qmul, off, len);
                finish_2data_range::<u8, 1>(p, q, dp, dq, pbmul, qmul, off, len);
            }
        }

        $(#[target_feature(enable = $feat)])?
        /// # Safety
        ///
        /// As [`finish_datap_range`], for `len` bytes.
        unsafe fn $fp(q: *const u8, dq: *mut u8, p: *mut u8, qmul: u8, len: usize) {
            // SAFETY: forwarded from the caller.
            unsafe {
                let off = finish_datap_range::<$lane, $n>(q, dq, p, qmul, 0, len);
                let off = finish_datap_range::<u64, 1>(q, dq, p, qmul, off, len);
                finish_datap_range::<u8, 1>(q, dq, p, qmul, off, len);
            }
        }
    };
}

drivers!(syndrome_swar, finish_2data_swar, finish_datap_swar, u64, 8);
#[cfg(target_arch = "x86_64")]
drivers!(
    syndrome_avx2,
    finish_2data_avx2,
    finish_datap_avx2,
    core::arch::x86_64::__m256i,
    4,
    "avx2"
);
#[cfg(target_arch = "x86_64")]
drivers!(
    syndrome_avx512,
    finish_2data_avx512,
    finish_datap_avx512,
    core::arch::x86_64::__m512i,
    4,
    "avx512f,avx512bw"
);

/// Dispatches a syndrome computation.
///
/// # Safety
///
/// As [`syndrome_range`] for `len` bytes; `algo` is available (use
/// [`Algo::resolve`]).
unsafe fn syndrome(
    algo: Algo,
    data: &[*const u8],
    shift: u32,
    acc: bool,
    p: *mut u8,
    q: *mut u8,
    len: usize,
) {
    // SAFETY: forwarded from the caller, who resolved `algo` to one this CPU runs.
    unsafe {
        match (algo, acc) {
            #[cfg(target_arch = "x86_64")]
            (Algo::Avx512, false) => syndrome_avx512::<false>(data, shift, p, q, len),
            #[cfg(target_arch = "x86_64")]
            (Algo::Avx512, true) => syndrome_avx512::<true>(data, shift, p, q, len),
            #[cfg(target_arch = "x86_64")]
            (Algo::Avx2, false) => syndrome_avx2::<false>(data, shift, p, q, len),
            #[cfg(target_arch = "x86_64")]
            (Algo::Avx2, true) => syndrome_avx2::<true>(data, shift, p, q, len),
            (_, false) => syndrome_swar::<false>(data, shift, p, q, len),
            (_, true) => syndrome_swar::<true>(data, shift, p, q, len),
        }
    }
}

/// Dispatches the last step of two-data recovery.
///
/// # Safety
///
/// As [`finish_2data_range`] for `len` bytes; `algo` is available.
#[allow(clippy::too_many_arguments)]
unsafe fn finish_2data(
    algo: Algo,
    p: *const u8,
    q: *const u8,
    dp: *mut u8,
    dq: *mut u8,
    pbmul: u8,
    qmul: u8,
    len: usize,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match algo {
            #[cfg(target_arch = "x86_64")]
            Algo::Avx512 => finish_2data_avx512(p, q, dp, dq, pbmul, qmul, len),
            #[cfg(target_arch = "x86_64")]
            Algo::Avx2 => finish_2data_avx2(p, q, dp, dq, pbmul, qmul, len),
            _ => finish_2data_swar(p, q, dp, dq, pbmul, qmul, len),
        }
    }
}

/// Dispatches the last step of data+P recovery.
///
/// # Safety
///
/// As [`finish_datap_range`] for `len` bytes; `algo` is available.
unsafe fn finish_datap(algo: Algo, q: *const u8, dq: *mut u8, p: *mut u8, qmul: u8, len: usize) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match algo {
            #[cfg(target_arch = "x86_64")]
            Algo::Avx512 => finish_datap_avx512(q, dq, p, qmul, len),
            #[cfg(target_arch = "x86_64")]
            Algo::Avx2 => finish_datap_avx2(q, dq, p, qmul, len),
            _ => finish_datap_swar(q, dq, p, qmul, len),
        }
    }
}
