// SPDX-License-Identifier: GPL-2.0-only

//! The functions of `shim.c` that [`crate::policy`] and [`crate::selftest`]
//! call, behind safe typed wrappers: the policy parameters, the copy
//! timing, the kernel's own ciphers and raid6 for the self-test's answers
//! ([`Cipher`], [`raid6_gen`]), scatterlist arrays ([`SgArray`]) and running
//! on several workers ([`run_parallel`]).

use core::ffi::{c_char, c_int, c_uint, c_void, CStr};
use core::ptr::NonNull;
use kernel::prelude::*;

/// `struct scatterlist`, only handled by pointer.
#[repr(C)]
struct RawSg {
    _opaque: [u8; 0],
}

/// `struct crypto_sync_skcipher`, only handled by pointer.
#[repr(C)]
struct RawCipher {
    _opaque: [u8; 0],
}

extern "C" {
    fn kgpu_shim_policy(which: c_uint) -> c_uint;
    fn kgpu_shim_time_copy_mbps() -> u64;
    fn kgpu_shim_cipher_new(alg: *const c_char) -> *mut RawCipher;
    fn kgpu_shim_cipher_free(tfm: *mut RawCipher);
    fn kgpu_shim_cipher_run(
        tfm: *mut RawCipher,
        key: *const u8,
        keylen: c_uint,
        iv: *const u8,
        src: *const u8,
        dst: *mut u8,
        len: c_uint,
        encrypt: bool,
    ) -> c_int;
    fn kgpu_shim_raid6_name() -> *const c_char;
    fn kgpu_shim_sg_alloc(n: c_uint) -> *mut RawSg;
    fn kgpu_shim_sg_free(sgl: *mut RawSg);
    fn kgpu_shim_run_parallel(
        n: c_uint,
        f: extern "C" fn(ctx: *mut c_void, idx: c_uint),
        ctx: *mut c_void,
    ) -> c_int;
    fn kgpu_shim_sg_fill(
        sgl: *mut RawSg,
        n: c_uint,
        buf: *mut u8,
        len: usize,
        piece: usize,
    ) -> c_uint;
    fn kgpu_shim_raid6_gen(disks: c_int, unit: usize, data: *const u8, pq: *mut u8) -> c_int;
}

// ---- policy ------------------------------------------------------------------

/// The value of `gaes_policy` (`which` 0) or `gpq_policy` (1): 0 auto, 1
/// gpu, 2 cpu.
pub(crate) fn policy(which: u32) -> u32 {
    // SAFETY: reads an integer module parameter.
    unsafe { kgpu_shim_policy(which) }
}

/// One core's copy rate, MB/s (0 when the buffers cannot be had). Sleeps.
pub(crate) fn time_copy_mbps() -> u64 {
    // SAFETY: no preconditions.
    unsafe { kgpu_shim_time_copy_mbps() }
}

// ---- the self-test's references ---------------------------------------------------

/// A synchronous skcipher of the kernel ("ecb(aes)", ...), freed on drop.
///
/// # Invariants
/// A live tfm of `kgpu_shim_cipher_new`, owned.
pub(crate) struct Cipher(NonNull<RawCipher>);

impl Cipher {
    /// The kernel's implementation of `alg`; None when there is none.
    pub(crate) fn new(alg: &CStr) -> Option<Self> {
        // SAFETY: `alg` is NUL-terminated.
        NonNull::new(unsafe { kgpu_shim_cipher_new(alg.as_ptr()) }).map(Cipher)
    }

    /// Sets `key` and runs one request from `src` into `dst` (as long as
    /// `src`), with `iv` (16 bytes) or none.
    ///
    /// # Safety
    /// `src` and `dst` must be in the linear map (kmalloc'ed, as a `KVec`'s
    /// buffer is): the shim describes each with one scatterlist entry.
    pub(crate) unsafe fn run(
        &self,
        key: &[u8],
        iv: Option<&[u8; 16]>,
        src: &[u8],
        dst: &mut [u8],
        enc: bool,
    ) -> Result {
        if dst.len() < src.len() {
            return Err(EINVAL);
        }
        let (Ok(keylen), Ok(len)) = (c_uint::try_from(key.len()), c_uint::try_from(src.len()))
        else {
            return Err(EINVAL);
        };
        // SAFETY: the tfm is live (invariant) and used by this thread only
        // during the call; `dst` holds at least `len` bytes; `src`/`dst` are in
        // the linear map (the caller's contract).
        let r = unsafe {
            kgpu_shim_cipher_run(
                self.0.as_ptr(),
                key.as_ptr(),
                keylen,
                iv.map_or(core::ptr::null(), |v| v.as_ptr()),
                src.as_ptr(),
                dst.as_mut_ptr(),
                len,
                enc,
            )
        };
        kernel::error::to_result(r)
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        // SAFETY: allocated by `kgpu_shim_cipher_new` (invariant), freed once.
        unsafe { kgpu_shim_cipher_free(self.0.as_ptr()) }
    }
}

/// The name of the selected `raid6_call`.
pub(crate) fn raid6_name() -> &'static CStr {
    // SAFETY: raid6_call.name is a string literal of the raid6 library, which
    // this module depends on.
    unsafe { CStr::from_ptr(kgpu_shim_raid6_name()) }
}

/// P then Q of `disks - 2` data blocks of `unit` bytes (back to back in
/// `data`) into `pq`, with the kernel's own raid6 algorithm (never gpq).
/// Sleeps.
pub(crate) fn raid6_gen(disks: usize, unit: usize, data: &[u8], pq: &mut [u8]) -> Result {
    let data_len = disks.checked_sub(2).and_then(|d| d.checked_mul(unit));
    let pq_len = unit.checked_mul(2);
    let (Some(data_len), Some(pq_len), Ok(d)) = (data_len, pq_len, c_int::try_from(disks)) else {
        return Err(EINVAL);
    };
    if data.len() < data_len || pq.len() < pq_len {
        return Err(EINVAL);
    }
    // SAFETY: `data` holds the `disks - 2` blocks the shim reads, `pq` room
    // for the two it writes.
    kernel::error::to_result(unsafe {
        kgpu_shim_raid6_gen(d, unit, data.as_ptr(), pq.as_mut_ptr())
    })
}

// ---- scatterlists ------------------------------------------------------------------

/// An array of scatterlist entries, allocated by the shim and freed on drop.
///
/// # Invariants
/// Points to entries of `kgpu_shim_sg_alloc`, owned.
pub(crate) struct SgArray(NonNull<RawSg>);

impl SgArray {
    /// `n` zeroed entries; None when out of memory.
    pub(crate) fn new(n: u32) -> Option<Self> {
        // SAFETY: no preconditions.
        NonNull::new(unsafe { kgpu_shim_sg_alloc(n) }).map(SgArray)
    }

    /// The entries, for [`sg_fill`] and as a submission's scatterlist.
    pub(crate) fn as_ptr(&self) -> *mut c_void {
        self.0.as_ptr().cast()
    }
}

impl Drop for SgArray {
    fn drop(&mut self) {
        // SAFETY: allocated by `kgpu_shim_sg_alloc` (invariant), freed once.
        unsafe { kgpu_shim_sg_free(self.0.as_ptr()) }
    }
}

/// Describes `buf` in the entries at `sg`, `piece` bytes each (the last one
/// shorter); returns how many, 0 when `n` are not enough. The entries point
/// into `buf` (which must be kmalloc'ed for a scatterlist to reach it).
///
/// # Safety
/// `sg` must be the [`SgArray::as_ptr`] of a live array of at least `n`
/// entries that nothing else uses during the call.
pub(crate) unsafe fn sg_fill(sg: *mut c_void, n: u32, buf: &mut [u8], piece: usize) -> u32 {
    // SAFETY: the shim writes at most `n` entries at `sg` (the caller's
    // contract) and only records `buf`'s addresses.
    unsafe { kgpu_shim_sg_fill(sg.cast(), n, buf.as_mut_ptr(), buf.len(), piece) }
}

// ---- workers -----------------------------------------------------------------------

/// Runs `f(0)`, ..., `f(n - 1)` on `n` unbound workqueue workers and waits
/// for all of them. Sleeps.
pub(crate) fn run_parallel<F: Fn(u32) + Sync>(n: u32, f: &F) -> Result {
    extern "C" fn call<F: Fn(u32) + Sync>(ctx: *mut c_void, idx: c_uint) {
        // SAFETY: `ctx` is the `&F` of `run_parallel`, which outlives the
        // workers (the shim waits for all of them); `F: Sync`.
        let f = unsafe { &*ctx.cast::<F>() };
        f(idx);
    }
    // SAFETY: `call::<F>` takes the `ctx` given here, which stays valid until
    // the shim returns, after every worker finished.
    let r = unsafe { kgpu_shim_run_parallel(n, call::<F>, (f as *const F).cast_mut().cast()) };
    kernel::error::to_result(r)
}
