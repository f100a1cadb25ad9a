// SPDX-License-Identifier: GPL-2.0-only

//! The load-time choice between the GPU path and the kernel's own CPU code,
//! like lib/raid6's boot benchmark.
//!
//! At load the module times one core's copies ([`measure_copy`]: the kernel
//! path copies every byte into the region and out again) and each service
//! times its CPU code (gaes: the kernel's AES per mode; gpq: the raid6
//! algorithm md would use). When a helper attaches it has published in the
//! region header what it measured of its GPU path (ABI 3: throughput, round
//! trip, crossover per service); the module keeps a copy
//! ([`take_figures`]) and each service decides from these numbers, with the
//! shared cost model (`common/src/cost.rs`), per mode and size: GPU path or
//! CPU. One log line per decision; debugfs shows the decision and its inputs.
//!
//! `gaes_policy` and `gpq_policy` (`auto`, `gpu`, `cpu`) force either path.

use crate::kcommon::abi::{GpuFigures, RegionHeader, FIGURE_SLOTS};
use crate::kcommon::cost::{Decision, Inputs};
use crate::{ffi, BufWriter};
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::prelude::*;

/// Where a service sends its work (`gaes_policy`, `gpq_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The load-time choice.
    Auto,
    /// Every request the helper path takes.
    Gpu,
    /// None.
    Cpu,
}

impl Policy {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Policy::Auto => "auto",
            Policy::Gpu => "gpu",
            Policy::Cpu => "cpu",
        }
    }
}

/// The services with a policy parameter.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    Gaes = 0,
    Gpq = 1,
}

/// The policy in force now (the parameters are writable at run time).
pub(crate) fn policy(w: Which) -> Policy {
    match ffi::policy(w as u32) {
        1 => Policy::Gpu,
        2 => Policy::Cpu,
        _ => Policy::Auto,
    }
}

/// One core's copy rate, MB/s (0: not measured).
static COPY_MBPS: AtomicU64 = AtomicU64::new(0);

/// Times the copies, once at load (process context).
pub(crate) fn measure_copy() {
    let v = ffi::time_copy_mbps();
    COPY_MBPS.store(v, Ordering::Relaxed);
    pr_info!(
        "copies: {} MB/s on one core (memcpy of 32 MiB: the kernel path's copy into the region and out)\n",
        v
    );
}

pub(crate) fn copy_mbps() -> u64 {
    COPY_MBPS.load(Ordering::Relaxed)
}

/// The figures of the attached (or last attached) helper, per service id.
static FIGURES: [[AtomicU64; 3]; FIGURE_SLOTS] =
    [const { [const { AtomicU64::new(0) }; 3] }; FIGURE_SLOTS];

/// Copies the GPU figures out of a header just validated for attaching.
///
/// # Safety
/// `hdr` must be valid for reads of a whole [`RegionHeader`].
pub(crate) unsafe fn take_figures(hdr: *const RegionHeader) {
    for (id, slot) in FIGURES.iter().enumerate() {
        // SAFETY: forwarded; each field is read once, any value is valid.
        let f = unsafe { crate::kcommon::region::read_gpu_figures(hdr, id as u16) };
        slot[0].store(f.mbps, Ordering::Relaxed);
        slot[1].store(f.rtt_ns, Ordering::Relaxed);
        slot[2].store(f.crossover, Ordering::Relaxed);
    }
}

/// What the helper published for `service` (none before any attach).
pub(crate) fn figures(service: u16) -> GpuFigures {
    let Some(slot) = FIGURES.get(service as usize) else {
        return GpuFigures::NONE;
    };
    GpuFigures {
        mbps: slot[0].load(Ordering::Relaxed),
        rtt_ns: slot[1].load(Ordering::Relaxed),
        crossover: slot[2].load(Ordering::Relaxed),
        reserved: 0,
    }
}

/// The model's inputs for a service with CPU code at `cpu_mbps` per core
/// and `copy_num / copy_den` bytes copied per payload byte.
pub(crate) fn inputs(service: u16, cpu_mbps: u64, copy_num: u32, copy_den: u32) -> Inputs {
    let f = figures(service);
    Inputs {
        cpu_mbps,
        copy_mbps: copy_mbps(),
        copy_num,
        copy_den,
        gpu_mbps: f.mbps,
        gpu_rtt_ns: f.rtt_ns,
        crossover: f.crossover,
    }
}

/// Why the model chose what it chose, in words (zero figures from the
/// helper read "no gpu path", not "bad inputs").
pub(crate) fn reason_text(i: &Inputs, d: &Decision) -> &'static str {
    if i.gpu_mbps == 0 {
        "no gpu path"
    } else {
        d.reason.as_str()
    }
}

/// Seconds of one core per GB (= ns per byte), three decimals.
pub(crate) struct SecPerGb {
    pub(crate) ns: u64,
    pub(crate) bytes: u64,
}

impl core::fmt::Display for SecPerGb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let milli = self
            .ns
            .saturating_mul(1000)
            .checked_div(self.bytes)
            .unwrap_or(0);
        write!(f, "{}.{:03}", milli / 1000, milli % 1000)
    }
}

impl SecPerGb {
    /// Of a rate in MB/s.
    pub(crate) const fn of_mbps(mbps: u64) -> Self {
        SecPerGb {
            ns: 1000,
            bytes: if mbps == 0 { 1 } else { mbps },
        }
    }
}

/// A size in KiB or MiB for log lines.
pub(crate) struct Size(pub(crate) u64);

impl core::fmt::Display for Size {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.0;
        if b >= 1 << 20 && b % (1 << 20) == 0 {
            write!(f, "{} MiB", b >> 20)
        } else if b >= 1 << 10 && b % (1 << 10) == 0 {
            write!(f, "{} KiB", b >> 10)
        } else {
            write!(f, "{} B", b)
        }
    }
}

/// The GPU path's side of a log line: what it costs and what it was
/// computed from.
pub(crate) fn describe_gpu(w: &mut BufWriter<'_>, i: &Inputs, d: &Decision) {
    if i.gpu_mbps == 0 {
        let _ = write!(w, "no gpu path published by the helper");
        return;
    }
    let _ = write!(
        w,
        "gpu path {} s/GB (copies {} at {} MB/s, helper at {} MB/s), round trip {} us, crossover {}",
        SecPerGb {
            ns: d.gpu_cpu_ns,
            bytes: d.size
        },
        SecPerGb {
            ns: d.copy_ns,
            bytes: d.size
        },
        i.copy_mbps,
        i.gpu_mbps,
        i.gpu_rtt_ns / 1000,
        Size(i.crossover)
    );
}

/// The decision's inputs and numbers as `key value` pairs (for debugfs and
/// the tests that check a decision against its inputs).
pub(crate) fn write_pairs(w: &mut BufWriter<'_>, i: &Inputs, d: &Decision) {
    let _ = write!(
        w,
        "cpu_mbps {} copy_mbps {} copy_num {} copy_den {} gpu_mbps {} rtt_ns {} crossover {} at {} cpu_ns {} gpu_cpu_ns {} gpu_latency_ns {} reason {}",
        i.cpu_mbps,
        i.copy_mbps,
        i.copy_num,
        i.copy_den,
        i.gpu_mbps,
        i.gpu_rtt_ns,
        i.crossover,
        d.size,
        d.cpu_ns,
        d.gpu_cpu_ns,
        d.gpu_latency_ns,
        ReasonToken(reason_text(i, d))
    );
}

/// A reason's name with `_` for spaces: one token.
pub(crate) struct ReasonToken(pub(crate) &'static str);

impl core::fmt::Display for ReasonToken {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for c in self.0.chars() {
            f.write_char(if c == ' ' { '_' } else { c })?;
        }
        Ok(())
    }
}

/// Logs `prefix` and what `fill` wrote, as one line.
pub(crate) fn log_line(fill: impl FnOnce(&mut BufWriter<'_>)) {
    let mut buf = [0u8; 384];
    let mut w = BufWriter::new(&mut buf);
    fill(&mut w);
    let n = w.len;
    let text = match core::str::from_utf8(&buf[..n]) {
        Ok(t) => t,
        Err(e) => core::str::from_utf8(&buf[..e.valid_up_to()]).unwrap_or(""),
    };
    pr_info!("{}\n", text);
}
