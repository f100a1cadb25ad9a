// SPDX-License-Identifier: GPL-2.0-only

//! kgpu: the kernel side of kgpu-rs.
//!
//! A userspace helper (`kgpu-helper serve`) opens `/dev/kgpu` and hands the
//! kernel a shared region (header, submission ring, completion ring, data
//! area) with `KGPU_IOC_ATTACH`. The kernel pins and maps it, then kernel
//! users submit requests through [`api`]: the data is copied into the data
//! area, a record goes on the submission ring, the helper runs it and posts a
//! completion, and the kernel validates the completion before calling the
//! submitter back. Closing `/dev/kgpu` (a helper crash included) fails every
//! request in flight, unpins the region and frees everything.
//!
//! Nothing the helper writes is trusted: ring indices and completions are
//! checked by the shared `common` code, the geometry is copied once at attach
//! and never re-read, and every extent used is the kernel's own copy.
//!
//! Inside a VM the region can instead be an ivshmem PCI device's memory,
//! served by a helper on the host ([`ivshmem`]).
//!
//! The C registrations Linux 6.12's Rust crate lacks (misc device, page
//! pinning, vmap, spinlock with interrupts off, wait queues, delayed work,
//! the ivshmem PCI driver and its thread, debugfs, module parameters) live
//! in `shim.c`.

use core::cell::UnsafeCell;
use core::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_void};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::prelude::*;

pub mod api;
mod api_types;
mod core_state;
mod ffi;
mod ivshmem;
pub mod kcommon;
mod policy;
pub mod kservices;
mod selftest;
mod service;

/// The kernel halves of the services, each from its folder
/// (`services/<name>/kernel/`), and [`SERVICES`], their table: one line per
/// service.
macro_rules! services {
    ($($m:ident => $path:literal),* $(,)?) => {
        $(
            #[path = $path]
            mod $m;
        )*
        /// Every service of the module, in load order (and in the order of
        /// the statistics rows). ECHO is the core's own.
        pub(crate) const SERVICES: &[service::Service] = &[
            $($m::SERVICE,)*
            service::Service::new(kcommon::abi::service::ECHO, c"echo"),
        ];
    };
}

services! {
    gaes => "../services/aes/kernel/gaes.rs",
    gpq => "../services/raid6/kernel/gpq.rs",
    example => "../services/example/kernel/example.rs",
}

module! {
    type: Kgpu,
    name: "kgpu",
    author: "kgpu-rs developers",
    description: "Kernel side of kgpu-rs: GPU offload through a userspace helper",
    license: "GPL v2",
}

/// Functions implemented in `shim.c`.
pub(crate) mod shim {
    use super::*;

    extern "C" {
        pub(crate) fn kgpu_shim_init() -> c_int;
        pub(crate) fn kgpu_shim_exit();
        pub(crate) fn kgpu_shim_lock() -> c_ulong;
        pub(crate) fn kgpu_shim_unlock(flags: c_ulong);
        pub(crate) fn kgpu_shim_wake_helper();
        pub(crate) fn kgpu_shim_wake_waiters();
        pub(crate) fn kgpu_shim_wait_word(word: *const u32, timeout_ms: c_uint) -> c_int;
        pub(crate) fn kgpu_shim_wait_zero(counter: *const u32, timeout_ms: c_uint) -> c_int;
        pub(crate) fn kgpu_shim_msleep(ms: c_uint);
        pub(crate) fn kgpu_shim_may_sleep() -> bool;
        pub(crate) fn kgpu_shim_kick_poll();
        pub(crate) fn kgpu_shim_cancel_poll();
        pub(crate) fn kgpu_shim_pin_map(
            uaddr: c_ulong,
            npages: c_ulong,
            pages_out: *mut *mut c_void,
            vaddr_out: *mut *mut c_void,
        ) -> c_int;
        pub(crate) fn kgpu_shim_unpin_unmap(
            pages: *mut c_void,
            npages: c_ulong,
            vaddr: *mut c_void,
        );
        pub(crate) fn kgpu_shim_sg_to_buf(
            sgl: *mut c_void,
            skip: usize,
            buf: *mut u8,
            len: usize,
        ) -> usize;
        pub(crate) fn kgpu_shim_sg_from_buf(
            sgl: *mut c_void,
            skip: usize,
            buf: *const u8,
            len: usize,
        ) -> usize;
        pub(crate) fn kgpu_shim_copy_from_user(
            dst: *mut c_void,
            src: c_ulong,
            len: c_ulong,
        ) -> c_int;
        pub(crate) fn kgpu_shim_sync_timeout_ms() -> c_uint;
        pub(crate) fn kgpu_shim_request_timeout_ms() -> c_uint;
        pub(crate) fn kgpu_shim_max_region_mb() -> c_uint;
        pub(crate) fn kgpu_shim_max_request_kb() -> c_uint;
        pub(crate) fn kgpu_shim_spin_timeout_us() -> c_uint;
        pub(crate) fn kgpu_shim_heartbeat_timeout_ms() -> c_uint;
        pub(crate) fn kgpu_shim_cpu_relax();
        pub(crate) fn kgpu_shim_preempt_disable();
        pub(crate) fn kgpu_shim_preempt_enable();
        pub(crate) fn kgpu_shim_transport_mode() -> c_uint;
        pub(crate) fn kgpu_shim_ivshmem_poll_us() -> c_uint;
        fn kgpu_shim_command_file(slot: c_uint, name: *const c_char) -> c_int;
        fn kgpu_shim_command_file_remove(slot: c_uint);
    }

    /// `KGPU_CMD_FILES` of kgpu_shim.h.
    pub(crate) const CMD_FILES: u32 = 8;

    /// Creates the debugfs command file `kgpu/<name>` in `slot` (see
    /// kgpu_shim.h); its commands go to `kgpu_rs_command`.
    pub(crate) fn command_file(slot: u32, name: &'static core::ffi::CStr) -> Result {
        // SAFETY: `name` is NUL-terminated and static; the shim checks `slot`.
        let r = unsafe { kgpu_shim_command_file(slot, name.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::from_errno(r))
        }
    }

    /// Removes command file `slot`, waiting for a command running in it.
    pub(crate) fn command_file_remove(slot: u32) {
        // SAFETY: process context (unload); the shim checks `slot`.
        unsafe { kgpu_shim_command_file_remove(slot) }
    }

    /// The `transport` module parameter, parsed once at load.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum TransportMode {
        /// The first helper to offer a region, through either door.
        Auto,
        /// `/dev/kgpu` only.
        Device,
        /// An ivshmem device only.
        Ivshmem,
    }

    impl TransportMode {
        pub(crate) const fn name(self) -> &'static str {
            match self {
                TransportMode::Auto => "auto",
                TransportMode::Device => "device",
                TransportMode::Ivshmem => "ivshmem",
            }
        }
    }

    /// See `transport` in shim.c.
    pub(crate) fn transport_mode() -> TransportMode {
        // SAFETY: reads a value set once at load.
        match unsafe { kgpu_shim_transport_mode() } {
            1 => TransportMode::Device,
            2 => TransportMode::Ivshmem,
            _ => TransportMode::Auto,
        }
    }

    /// See `ivshmem_poll_us` in shim.c (at least 1).
    pub(crate) fn ivshmem_poll_us() -> u32 {
        // SAFETY: reads an integer parameter.
        unsafe { kgpu_shim_ivshmem_poll_us() }.max(1)
    }

    /// Wakes the helper if it sleeps in `poll()`.
    pub(crate) fn wake_helper() {
        // SAFETY: no preconditions; callable from any context.
        unsafe { kgpu_shim_wake_helper() }
    }

    /// Wakes every sleeper of the waiter queue (sync submitters, self-test, detach).
    pub(crate) fn wake_waiters() {
        // SAFETY: no preconditions; callable from any context.
        unsafe { kgpu_shim_wake_waiters() }
    }

    /// Sleeps until `word` is non-zero or `timeout_ms` passes (0: no bound).
    /// Returns true when the word is set. Must be called where sleeping is allowed.
    pub(crate) fn wait_word(word: &AtomicU32, timeout_ms: u32) -> bool {
        // SAFETY: `word` is a live atomic for the duration of the call; the
        // shim only reads it with acquire loads.
        unsafe { kgpu_shim_wait_word(word.as_ptr(), timeout_ms) != 0 }
    }

    /// Sleeps until `counter` is zero or `timeout_ms` passes (0: no bound).
    pub(crate) fn wait_zero(counter: &AtomicU32, timeout_ms: u32) -> bool {
        // SAFETY: as in `wait_word`.
        unsafe { kgpu_shim_wait_zero(counter.as_ptr(), timeout_ms) != 0 }
    }

    /// Sleeps for `ms` milliseconds.
    pub(crate) fn msleep(ms: u32) {
        // SAFETY: callers run in process context.
        unsafe { kgpu_shim_msleep(ms) }
    }

    /// True in a context that may sleep.
    pub(crate) fn may_sleep() -> bool {
        // SAFETY: no preconditions.
        unsafe { kgpu_shim_may_sleep() }
    }

    /// Schedules the completion poll unless it is pending.
    pub(crate) fn kick_poll() {
        // SAFETY: no preconditions; callable from any context.
        unsafe { kgpu_shim_kick_poll() }
    }

    /// Module parameters, read on every use (they are writable at run time).
    pub(crate) fn sync_timeout_ms() -> u32 {
        // SAFETY: reads an integer parameter.
        unsafe { kgpu_shim_sync_timeout_ms() }
    }

    /// See `request_timeout_ms` in shim.c.
    pub(crate) fn request_timeout_ms() -> u32 {
        // SAFETY: reads an integer parameter.
        unsafe { kgpu_shim_request_timeout_ms() }
    }

    /// See `max_region_mb` in shim.c.
    pub(crate) fn max_region_bytes() -> u64 {
        // SAFETY: reads an integer parameter.
        u64::from(unsafe { kgpu_shim_max_region_mb() }) << 20
    }

    /// See `heartbeat_timeout_ms` in shim.c.
    pub(crate) fn heartbeat_timeout_ms() -> u32 {
        // SAFETY: reads an integer parameter.
        unsafe { kgpu_shim_heartbeat_timeout_ms() }
    }

    /// See `spin_timeout_us` in shim.c.
    pub(crate) fn spin_timeout_us() -> u32 {
        // SAFETY: reads an integer parameter.
        unsafe { kgpu_shim_spin_timeout_us() }
    }

    /// A pause inside a spin loop.
    pub(crate) fn cpu_relax() {
        // SAFETY: no preconditions.
        unsafe { kgpu_shim_cpu_relax() }
    }

    /// Preemption off for its lifetime. Callbacks run under one, so a caller
    /// spinning for a request that another context is completing cannot have
    /// preempted that context on its own CPU.
    pub(crate) struct NoPreempt(());

    impl NoPreempt {
        pub(crate) fn new() -> Self {
            // SAFETY: balanced by the `Drop` below.
            unsafe { kgpu_shim_preempt_disable() };
            NoPreempt(())
        }
    }

    impl Drop for NoPreempt {
        fn drop(&mut self) {
            // SAFETY: pairs with the disable in `new`.
            unsafe { kgpu_shim_preempt_enable() };
        }
    }

    /// See `max_request_kb` in shim.c.
    pub(crate) fn max_request_bytes() -> usize {
        // SAFETY: reads an integer parameter.
        (unsafe { kgpu_shim_max_request_kb() } as usize) << 10
    }
}

/// The interrupt-safe lock around everything the module shares.
pub(crate) struct Global<T>(UnsafeCell<T>);

// SAFETY: the contents are only reached through `Global::with`, which holds
// the shim's spinlock (interrupts off) for the whole access.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub(crate) const fn new(v: T) -> Self {
        Global(UnsafeCell::new(v))
    }

    /// Runs `f` with the lock held. `f` must not call `with` again, sleep, or
    /// call back into code that may (callbacks run outside the lock).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: plain spin_lock_irqsave on the shim's static lock.
        let flags = unsafe { shim::kgpu_shim_lock() };
        // SAFETY: the lock is held, so this is the only reference to the
        // contents until it is released below.
        let r = f(unsafe { &mut *self.0.get() });
        // SAFETY: releases the lock taken above with its saved flags.
        unsafe { shim::kgpu_shim_unlock(flags) };
        r
    }
}

/// A `core::fmt::Write` sink over a byte buffer that truncates silently.
pub(crate) struct BufWriter<'a> {
    buf: &'a mut [u8],
    pub(crate) len: usize,
}

impl<'a> BufWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        BufWriter { buf, len: 0 }
    }
}

impl Write for BufWriter<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The core (the device, debugfs, the ivshmem driver and the poll work in
/// shim.c) while it is up.
struct Core(());

impl Core {
    fn up() -> Result<Self> {
        // SAFETY: called once at load, before any file operation can run.
        let ret = unsafe { shim::kgpu_shim_init() };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(Core(()))
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // The device cannot be open here (its file operations hold a module
        // reference), so no pinned region is attached; the shim unbinds the
        // ivshmem device (detaching its region: requests in flight fail to
        // the CPU path) and removes the device, the debugfs files and the
        // poll work.
        // SAFETY: `Core::up` succeeded; called once.
        unsafe { shim::kgpu_shim_exit() };
        core_state::assert_detached();
        pr_info!("unloaded\n");
    }
}

/// The loaded module. Fields drop in order: the services first, then the
/// core.
struct Kgpu {
    _services: service::Registered,
    _core: Core,
}

impl kernel::Module for Kgpu {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let core = Core::up()?;
        policy::measure_copy();
        let services = service::Registered::all()?;
        pr_info!(
            "/dev/kgpu ready (ABI {}, sqe {} B, cqe {} B)\n",
            kcommon::abi::ABI_VERSION,
            core::mem::size_of::<kcommon::abi::Sqe>(),
            core::mem::size_of::<kcommon::abi::Cqe>()
        );
        Ok(Kgpu {
            _services: services,
            _core: core,
        })
    }
}

// ---- entry points called by shim.c ------------------------------------------

#[no_mangle]
extern "C" fn kgpu_rs_open() -> c_int {
    match core_state::open() {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn kgpu_rs_release() {
    core_state::release();
}

#[no_mangle]
extern "C" fn kgpu_rs_poll_mask() -> c_uint {
    core_state::poll_mask()
}

#[no_mangle]
extern "C" fn kgpu_rs_ioctl(cmd: c_uint, arg: c_ulong) -> c_long {
    match core_state::ioctl(cmd, arg) {
        Ok(v) => v as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

#[no_mangle]
extern "C" fn kgpu_rs_poll_work() {
    core_state::poll_work();
}

#[no_mangle]
extern "C" fn kgpu_rs_ivshmem_bind(base: *mut c_void, len: u64) -> c_int {
    // SAFETY: the shim's PCI probe passes its memremap()ed BAR2, unmapped
    // only after `kgpu_rs_ivshmem_unbind`, and stops the thread that calls
    // `kgpu_rs_ivshmem_tick` before unbinding.
    match unsafe { ivshmem::bind(base, len) } {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

#[no_mangle]
extern "C" fn kgpu_rs_ivshmem_unbind() {
    ivshmem::unbind();
}

#[no_mangle]
extern "C" fn kgpu_rs_ivshmem_tick() -> c_uint {
    ivshmem::tick()
}

#[no_mangle]
extern "C" fn kgpu_rs_stats(buf: *mut c_char, len: usize) -> usize {
    // SAFETY: the shim passes a kmalloc'ed buffer of `len` bytes that nothing
    // else uses during the call.
    let out = unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), len) };
    let mut w = BufWriter::new(out);
    core_state::write_stats(&mut w);
    w.len
}

/// Counters kept with atomics, readable without the lock.
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
