// SPDX-License-Identifier: GPL-2.0-only

//! The region from an ivshmem PCI device: memory shared with a process
//! outside this machine (a helper on the VM's host, with the GPU).
//!
//! qemu's `ivshmem-plain` device exposes a host file as BAR2. The shim's PCI
//! driver maps it write-back and hands it here ([`bind`]); from then on a
//! kernel thread calls [`tick`] and sleeps for as long as it returns. With
//! `transport=ivshmem` the first such device is taken; with `auto` only one
//! whose memory already starts with a kgpu header (ivshmem has other uses).
//!
//! There is no file descriptor to close and no interrupt, so the header
//! carries the session: a helper writes a fresh header and sets its state to
//! `OFFERED`; the kernel checks it exactly as it checks a pinned region,
//! resets the rings and answers `ATTACHED`. The session ends when the
//! helper's state says it left (or a new helper rewrote the header), when
//! its heartbeat stops for `heartbeat_timeout_ms`, or when it breaks the
//! ring protocol: every request in flight then fails to the CPU path, as on
//! close, and a later offer attaches again. The helper is as untrusted as a
//! local one: it can write any byte of the BAR at any time, and nothing but
//! the checked protocol is read from it.
//!
//! Completions are polled: every `ivshmem_poll_us` while requests are in
//! flight, woken at once by a submission, every 20 ms otherwise (the
//! heartbeat), every 100 ms while no region is attached (offers).

use crate::core_state::{self, Offer, Transport};
use crate::kcommon::abi::{helper_state, RegionHeader};
use crate::{shim, Global};
use core::ffi::c_void;
use core::ptr::addr_of;
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// Sleep while attached with nothing in flight (a submission wakes it).
const IDLE_US: u32 = 20_000;
/// Sleep while waiting for an offer.
const WATCH_US: u32 = 100_000;

#[derive(Clone, Copy)]
struct Bar {
    base: *mut u8,
    len: u64,
}

struct State {
    bar: Option<Bar>,
    /// A refusal was logged since the last attach (logged once each).
    refused_logged: bool,
}

static STATE: Global<State> = Global::new(State {
    bar: None,
    refused_logged: false,
});

/// Takes the device's mapped BAR2 (`len` bytes at `base`).
///
/// # Safety
/// `base` must map `len` bytes until [`unbind`] returns, and the caller
/// must not run [`tick`] after calling [`unbind`].
pub(crate) unsafe fn bind(base: *mut c_void, len: u64) -> Result {
    if base.is_null() || len < 4 * u64::from(crate::kcommon::abi::HEADER_SIZE) {
        pr_warn!("ivshmem: BAR2 of {} bytes is too small for a region\n", len);
        return Err(EINVAL);
    }
    if shim::transport_mode() == shim::TransportMode::Auto {
        // ivshmem devices have other uses: unless told `transport=ivshmem`,
        // take only one that already holds a kgpu region.
        // SAFETY: the first 8 bytes of the mapping (the caller's contract),
        // read once.
        let magic = unsafe { core::ptr::read_volatile(base.cast::<u64>()) };
        if magic != crate::kcommon::abi::REGION_MAGIC {
            pr_info!("ivshmem: BAR2 holds no kgpu region; left alone (transport=ivshmem takes it)\n");
            return Err(ENODEV);
        }
    }
    let taken = STATE.with(|s| {
        if s.bar.is_some() {
            return false;
        }
        s.bar = Some(Bar {
            base: base.cast(),
            len,
        });
        s.refused_logged = false;
        true
    });
    if !taken {
        return Err(EBUSY);
    }
    pr_info!(
        "ivshmem: {} MiB shared region; waiting for a helper's offer\n",
        len >> 20
    );
    Ok(())
}

/// Lets go of the BAR: a region attached through it is detached first
/// (requests in flight fail to the CPU path).
pub(crate) fn unbind() {
    core_state::detach_shared("the ivshmem device went away");
    STATE.with(|s| s.bar = None);
}

/// Bytes of the bound BAR (0 when none), for the statistics.
pub(crate) fn bar_bytes() -> u64 {
    STATE.with(|s| s.bar.map_or(0, |b| b.len))
}

fn offered_state(bar: Bar) -> u32 {
    // SAFETY: the header lies at the start of the bound mapping (`bind`'s
    // contract); only its atomic field is referenced.
    unsafe { &*addr_of!((*bar.base.cast::<RegionHeader>()).helper_state) }.load(Ordering::Acquire)
}

/// One round of the ivshmem thread; returns how long to sleep, in
/// microseconds (a submission cuts a long sleep short).
pub(crate) fn tick() -> u32 {
    let Some(bar) = STATE.with(|s| s.bar) else {
        return WATCH_US;
    };
    match core_state::attached_transport() {
        Some(Transport::Ivshmem) => {
            core_state::service();
            let (gone, in_flight) = core_state::shared_health();
            if let Some(why) = gone {
                core_state::detach_shared(why);
                return 0;
            }
            if in_flight > 0 {
                shim::ivshmem_poll_us()
            } else {
                IDLE_US
            }
        }
        // The device transport holds the one region there is.
        Some(Transport::Device) => WATCH_US,
        None => {
            if offered_state(bar) != helper_state::OFFERED {
                return WATCH_US;
            }
            // SAFETY: the BAR stays mapped until `unbind`, which detaches
            // the region first; the region is this BAR alone.
            match unsafe { core_state::attach_shared(bar.base, bar.len) } {
                Offer::Attached => {
                    STATE.with(|s| s.refused_logged = false);
                    0
                }
                Offer::Refused => {
                    let first = STATE.with(|s| !core::mem::replace(&mut s.refused_logged, true));
                    if first {
                        pr_warn!("ivshmem: the helper's region was refused (see above); waiting for a new offer\n");
                    }
                    WATCH_US
                }
                Offer::Busy | Offer::Withdrawn => WATCH_US,
            }
        }
    }
}
