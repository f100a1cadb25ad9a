// SPDX-License-Identifier: GPL-2.0-only

//! gpq's boundary with `shim_raid6.c`: the C functions gpq calls, behind
//! safe typed wrappers, and the entry points of its `raid6_calls`.
//!
//! A [`Stripe`] is the pointer array of one `gen_syndrome` or
//! `xor_syndrome` call; [`PerCpu`] holds this CPU's scatterlist and output
//! buffer, with preemption off, until dropped; [`BenchBufs`] are random blocks
//! for the measurement, freed on drop. The module parameters are plain
//! functions.

use super::{MAX_SG, MAX_UNIT};
use crate::api::SgList;
use core::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr};
use core::marker::PhantomData;
use core::ptr::NonNull;
use kernel::prelude::*;

/// `struct scatterlist`, only handled by pointer.
#[repr(C)]
struct RawSg {
    _opaque: [u8; 0],
}

extern "C" {
    fn kgpu_gpq_shim_init(max_unit: usize, max_sg: c_uint) -> c_int;
    fn kgpu_gpq_shim_exit();
    fn kgpu_gpq_shim_param_enable() -> bool;
    fn kgpu_gpq_shim_param_threshold() -> c_long;
    fn kgpu_gpq_shim_param_spin_us() -> c_uint;
    fn kgpu_gpq_shim_param_verify() -> bool;
    fn kgpu_gpq_shim_param_wake_us() -> c_uint;
    fn kgpu_gpq_shim_install() -> c_int;
    fn kgpu_gpq_shim_restore();
    fn kgpu_gpq_shim_has_xor() -> bool;
    fn kgpu_gpq_shim_saved_name() -> *const c_char;
    fn kgpu_gpq_shim_current_name() -> *const c_char;
    fn kgpu_gpq_shim_cpu_gen(disks: c_int, bytes: usize, ptrs: *mut *mut c_void);
    fn kgpu_gpq_shim_cpu_xor(
        disks: c_int,
        start: c_int,
        stop: c_int,
        bytes: usize,
        ptrs: *mut *mut c_void,
    );
    fn kgpu_gpq_shim_may_spin() -> bool;
    fn kgpu_gpq_shim_max_spinners() -> c_uint;
    fn kgpu_gpq_shim_pcpu_begin(sg: *mut *mut RawSg, bounce: *mut *mut u8) -> bool;
    fn kgpu_gpq_shim_pcpu_end();
    fn kgpu_gpq_shim_sg_build(
        sg: *mut RawSg,
        ptrs: *mut *mut c_void,
        start: c_int,
        stop: c_int,
        lead_zero: c_uint,
        trail_zero: c_uint,
        bytes: usize,
    ) -> c_uint;
    fn kgpu_gpq_shim_sync();
    fn kgpu_gpq_shim_bench_alloc(disks: c_int, bytes: usize) -> *mut *mut c_void;
    fn kgpu_gpq_shim_bench_free(ptrs: *mut *mut c_void, disks: c_int);
    fn kgpu_gpq_shim_cond_resched();
}

// ---- module parameters and context ----------------------------------------------

/// `gpq_enable`: install gpq at load.
pub(super) fn param_enable() -> bool {
    // SAFETY: reads a boolean module parameter.
    unsafe { kgpu_gpq_shim_param_enable() }
}

/// `gpq_threshold` (disks x bytes); negative: unset.
pub(super) fn param_threshold() -> i64 {
    // SAFETY: reads an integer module parameter.
    i64::from(unsafe { kgpu_gpq_shim_param_threshold() })
}

/// `gpq_spin_us`: how long a call spins for the helper's answer.
pub(super) fn param_spin_us() -> u32 {
    // SAFETY: reads an integer module parameter.
    unsafe { kgpu_gpq_shim_param_spin_us() }
}

/// `gpq_verify`: recompute every helper answer on the CPU.
pub(super) fn param_verify() -> bool {
    // SAFETY: reads a boolean module parameter.
    unsafe { kgpu_gpq_shim_param_verify() }
}

/// `gpq_wake_us`: the extra spin allowed while the helper sleeps.
pub(super) fn param_wake_us() -> u32 {
    // SAFETY: reads an integer module parameter.
    unsafe { kgpu_gpq_shim_param_wake_us() }
}

/// `gpq_max_spinners`, capped at the online CPUs less one.
pub(super) fn max_spinners() -> u32 {
    // SAFETY: reads a parameter and the online CPU count.
    unsafe { kgpu_gpq_shim_max_spinners() }
}

/// Whether this context may spin for the helper (no interrupt context,
/// interrupts on, another CPU online).
pub(super) fn may_spin() -> bool {
    // SAFETY: no preconditions.
    unsafe { kgpu_gpq_shim_may_spin() }
}

/// `cond_resched()`.
pub(super) fn cond_resched() {
    // SAFETY: no preconditions.
    unsafe { kgpu_gpq_shim_cond_resched() }
}

/// Waits for an RCU grace period (and a tasks-RCU one where there is
/// tasks-RCU). Sleeps.
pub(super) fn sync() {
    // SAFETY: no preconditions.
    unsafe { kgpu_gpq_shim_sync() }
}

/// A name the shim returns: a static NUL-terminated string.
fn name(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "none";
    }
    // SAFETY: raid6 algorithm names are string literals of the raid6
    // library (which gpq's module depends on) or of shim_raid6.c.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("?")
}

/// The saved CPU algorithm's name ("none" before `install`).
pub(super) fn saved_name() -> &'static str {
    // SAFETY: no preconditions.
    name(unsafe { kgpu_gpq_shim_saved_name() })
}

/// `raid6_call`'s name now.
pub(super) fn current_name() -> &'static str {
    // SAFETY: no preconditions.
    name(unsafe { kgpu_gpq_shim_current_name() })
}

/// Whether the saved algorithm has an `xor_syndrome` (gpq's is installed
/// only then).
pub(super) fn has_xor() -> bool {
    // SAFETY: no preconditions.
    unsafe { kgpu_gpq_shim_has_xor() }
}

// ---- load and unload ------------------------------------------------------------------

/// Allocates the per-CPU buffers and creates the debugfs file, after
/// checking the shim's limits against [`MAX_UNIT`] and [`MAX_SG`].
///
/// # Safety
/// Once, at load (process context), before [`install`]; undone by
/// [`shim_exit`].
pub(super) unsafe fn shim_init() -> Result {
    // SAFETY: by the caller's contract.
    kernel::error::to_result(unsafe { kgpu_gpq_shim_init(MAX_UNIT, MAX_SG as c_uint) })
}

/// Removes the debugfs file and frees the buffers.
///
/// # Safety
/// Once, after a successful [`shim_init`], when nothing can enter gpq any
/// more: never installed, or restored ([`restore`]) with every call gone.
pub(super) unsafe fn shim_exit() {
    // SAFETY: by the caller's contract.
    unsafe { kgpu_gpq_shim_exit() }
}

/// Saves `raid6_call` and installs gpq over it; the errno when gpq is there
/// already or there is no `raid6_call`.
///
/// # Safety
/// gpq must not be installed, and nothing may install or restore it
/// meanwhile.
pub(super) unsafe fn install() -> Result<(), c_int> {
    // SAFETY: by the caller's contract.
    match unsafe { kgpu_gpq_shim_install() } {
        0 => Ok(()),
        r => Err(r),
    }
}

/// Puts the saved algorithm back and waits until no caller can still be
/// about to enter gpq through it. Sleeps.
///
/// # Safety
/// gpq must be installed by [`install`], and nothing may install or
/// restore it meanwhile.
pub(super) unsafe fn restore() {
    // SAFETY: by the caller's contract.
    unsafe { kgpu_gpq_shim_restore() }
}

// ---- the blocks of a call ----------------------------------------------------------------

/// The blocks of one `gen_syndrome` or `xor_syndrome` call, as its caller
/// passed them: `disks` pointers to blocks of `bytes` bytes, P and Q last.
///
/// # Invariants
/// `ptrs` is null, or points to `disks` pointers to blocks of `bytes` bytes,
/// valid for `'a`, with P and Q (the last two) writable and distinct from
/// each other and from the other blocks; nothing else writes them meanwhile.
pub(super) struct Stripe<'a> {
    disks: c_int,
    bytes: usize,
    ptrs: *mut *mut c_void,
    _blocks: PhantomData<&'a mut [u8]>,
}

impl Stripe<'_> {
    /// # Safety
    /// `ptrs` must be null or meet the invariants (the `raid6_calls`
    /// contract) for the stripe's life.
    unsafe fn new(disks: c_int, bytes: usize, ptrs: *mut *mut c_void) -> Self {
        Stripe {
            disks,
            bytes,
            ptrs,
            _blocks: PhantomData,
        }
    }

    /// The number of blocks, P and Q included.
    pub(super) fn disks(&self) -> c_int {
        self.disks
    }

    /// Bytes per block.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether there is a pointer array at all.
    pub(super) fn has_ptrs(&self) -> bool {
        !self.ptrs.is_null()
    }

    /// Computes P and Q with the saved CPU algorithm (`raid6_call` itself
    /// before gpq is installed).
    pub(super) fn cpu_gen(&mut self) {
        // SAFETY: the caller's arguments, unchanged, for an algorithm of the
        // same contract; P and Q are borrowed mutably through `self`.
        unsafe { kgpu_gpq_shim_cpu_gen(self.disks, self.bytes, self.ptrs) }
    }

    /// Folds data disks `start..=stop` into P and Q with the saved CPU
    /// algorithm's `xor_syndrome` (gpq's is installed only over one).
    pub(super) fn cpu_xor(&mut self, start: c_int, stop: c_int) {
        // SAFETY: as in `cpu_gen`.
        unsafe { kgpu_gpq_shim_cpu_xor(self.disks, start, stop, self.bytes, self.ptrs) }
    }

    /// P and Q; None without a pointer array of at least two blocks.
    pub(super) fn pq(&mut self) -> Option<(&mut [u8], &mut [u8])> {
        let disks = usize::try_from(self.disks).ok().filter(|&d| d >= 2)?;
        if self.ptrs.is_null() {
            return None;
        }
        // SAFETY: `ptrs` holds `disks` pointers, the last two P and Q:
        // writable blocks of `bytes` bytes, distinct from each other and from
        // the other blocks (invariants), borrowed mutably through `self`.
        unsafe {
            let (p, q) = (*self.ptrs.add(disks - 2), *self.ptrs.add(disks - 1));
            Some((
                core::slice::from_raw_parts_mut(p.cast::<u8>(), self.bytes),
                core::slice::from_raw_parts_mut(q.cast::<u8>(), self.bytes),
            ))
        }
    }
}

// ---- this CPU's buffers -------------------------------------------------------------------

/// This CPU's scatterlist ([`MAX_SG`] entries) and output buffer (P then Q,
/// `2 * MAX_UNIT` bytes), held with preemption off until dropped.
///
/// # Invariants
/// Both are this CPU's, taken by a successful `kgpu_gpq_shim_pcpu_begin` that
/// the drop pairs with `kgpu_gpq_shim_pcpu_end`.
pub(super) struct PerCpu {
    sg: *mut RawSg,
    bounce: *mut u8,
}

impl PerCpu {
    /// None when this CPU's buffers are in use already (re-entry) or were
    /// never allocated.
    pub(super) fn take() -> Option<Self> {
        let mut sg = core::ptr::null_mut();
        let mut bounce = core::ptr::null_mut();
        // SAFETY: both out-pointers are valid locals.
        if unsafe { kgpu_gpq_shim_pcpu_begin(&mut sg, &mut bounce) } {
            Some(PerCpu { sg, bounce })
        } else {
            None
        }
    }

    /// Describes, in the scatterlist, `lead` zero blocks, data disks
    /// `start..=stop` of `s` and `trail` zero blocks, `s.bytes()` each, and
    /// returns that list with the output buffer for P and Q (`2 * bytes`).
    /// None when `start..=stop` are not data disks of `s`, there are more
    /// than [`MAX_SG`] blocks, the blocks are larger than [`MAX_UNIT`], or
    /// one is not in the linear map.
    pub(super) fn build<'l, 'p: 'l, 's: 'l>(
        &'p mut self,
        s: &'s Stripe<'_>,
        start: usize,
        stop: usize,
        lead: usize,
        trail: usize,
    ) -> Option<(SgList<'l>, &'p mut [u8])> {
        let data = usize::try_from(s.disks).ok()?.checked_sub(2)?;
        let n = lead
            .checked_add(stop.checked_sub(start)? + 1)?
            .checked_add(trail)?;
        if s.ptrs.is_null() || stop >= data || n > MAX_SG || s.bytes > MAX_UNIT {
            return None;
        }
        // SAFETY: the scatterlist has `MAX_SG >= n` entries and is this CPU's
        // (invariant); `ptrs[start..=stop]` are valid blocks of `bytes` bytes
        // (the stripe's invariants, `stop` below its data disks), only read.
        let built = unsafe {
            kgpu_gpq_shim_sg_build(
                self.sg,
                s.ptrs,
                start as c_int,
                stop as c_int,
                lead as c_uint,
                trail as c_uint,
                s.bytes,
            )
        };
        if built == 0 {
            return None;
        }
        // SAFETY: the list just built and terminated: `n` entries of `bytes`
        // bytes of the stripe's blocks (valid for `'s`) and the shim's zero
        // block (alive until `shim_exit`), read-only here.
        let list = unsafe { SgList::new(self.sg.cast(), 0, n * s.bytes) };
        // SAFETY: the output buffer holds `2 * MAX_UNIT` bytes, is this CPU's
        // (invariant) and is not the list's memory; `bytes <= MAX_UNIT`.
        let out = unsafe { core::slice::from_raw_parts_mut(self.bounce, 2 * s.bytes) };
        Some((list, out))
    }
}

impl Drop for PerCpu {
    fn drop(&mut self) {
        // SAFETY: pairs with the successful `kgpu_gpq_shim_pcpu_begin` of `take`
        // (invariant), on the same CPU (preemption is off meanwhile).
        unsafe { kgpu_gpq_shim_pcpu_end() }
    }
}

// ---- bench buffers ---------------------------------------------------------------------------

/// `disks` blocks of `bytes` random bytes (kmalloc'ed), freed on drop.
///
/// # Invariants
/// `ptrs` is an array of `disks` distinct blocks of `bytes` bytes from
/// `kgpu_gpq_shim_bench_alloc`, owned.
pub(super) struct BenchBufs {
    ptrs: NonNull<*mut c_void>,
    disks: usize,
    bytes: usize,
}

impl BenchBufs {
    /// None when out of memory or outside the shim's limits. Sleeps.
    pub(super) fn new(disks: usize, bytes: usize) -> Option<Self> {
        let d = c_int::try_from(disks).ok()?;
        // SAFETY: the shim checks the sizes.
        let ptrs = NonNull::new(unsafe { kgpu_gpq_shim_bench_alloc(d, bytes) })?;
        Some(BenchBufs { ptrs, disks, bytes })
    }

    /// Block `i` (P and Q are the last two).
    pub(super) fn block(&self, i: usize) -> &[u8] {
        // SAFETY: `disks` pointers (invariant).
        let ptrs = unsafe { core::slice::from_raw_parts(self.ptrs.as_ptr(), self.disks) };
        // SAFETY: a block of `bytes` bytes, alive with `self` (invariant).
        unsafe { core::slice::from_raw_parts(ptrs[i].cast::<u8>(), self.bytes) }
    }

    /// The blocks as a call's stripe.
    pub(super) fn stripe(&mut self) -> Stripe<'_> {
        // SAFETY: distinct blocks of `bytes` bytes (invariant), borrowed
        // mutably for the stripe's life.
        unsafe { Stripe::new(self.disks as c_int, self.bytes, self.ptrs.as_ptr()) }
    }
}

impl Drop for BenchBufs {
    fn drop(&mut self) {
        // SAFETY: allocated by `kgpu_gpq_shim_bench_alloc` with this count
        // (invariant), freed once.
        unsafe { kgpu_gpq_shim_bench_free(self.ptrs.as_ptr(), self.disks as c_int) }
    }
}

// ---- entry points of shim_raid6.c --------------------------------------------------------------

#[no_mangle]
extern "C" fn kgpu_gpq_rs_gen(disks: c_int, bytes: usize, ptrs: *mut *mut c_void) {
    // SAFETY: md, async_tx, btrfs and lib/raid6 call gen_syndrome with a
    // valid pointer array of `disks` blocks of `bytes` bytes, P and Q last,
    // for the duration of the call.
    super::gen_syndrome(unsafe { Stripe::new(disks, bytes, ptrs) });
}

#[no_mangle]
extern "C" fn kgpu_gpq_rs_xor(
    disks: c_int,
    start: c_int,
    stop: c_int,
    bytes: usize,
    ptrs: *mut *mut c_void,
) {
    // SAFETY: as for gen_syndrome.
    super::xor_syndrome(unsafe { Stripe::new(disks, bytes, ptrs) }, start, stop);
}

#[no_mangle]
extern "C" fn kgpu_gpq_rs_show(buf: *mut c_char, len: usize) -> usize {
    // SAFETY: the shim passes a kmalloc'ed buffer of `len` bytes private to
    // this call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    super::show(out)
}

#[no_mangle]
extern "C" fn kgpu_gpq_rs_command(cmd: *const c_char, len: usize) -> c_long {
    // SAFETY: the shim passes its NUL-terminated copy of `len` bytes.
    let cmd = unsafe { core::slice::from_raw_parts(cmd.cast::<u8>(), len) };
    match super::command(cmd) {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
    }
}
