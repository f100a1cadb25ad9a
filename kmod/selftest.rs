// SPDX-License-Identifier: GPL-2.0-only

//! The kernel-side self-test, triggered through debugfs:
//!
//! ```text
//! echo "echo 5000 [window] [max_len]" > /sys/kernel/debug/kgpu/selftest
//! cat /sys/kernel/debug/kgpu/selftest
//! ```
//!
//! Pushes `count` ECHO requests of pseudo-random lengths (1..=max_len) and
//! contents through the ring, at most `window` in flight, one in eight of them
//! through the synchronous API, and checks every answer byte for byte against
//! the data it sent. Requests refused because no helper is attached are
//! counted, not retried, so the test also terminates when the helper dies
//! mid-run. The report says PASS only when every request came back correct.

use crate::api::{self, CallError, Job, Outcome, SubmitError};
use crate::kcommon::abi::Status;
use crate::{shim, BufWriter};
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::alloc::{flags::GFP_KERNEL, KVVec};
use kernel::prelude::*;
use kernel::time::Ktime;

struct Tally {
    run: AtomicU32,
    outstanding: AtomicU32,
    progress: AtomicU32,
    ok: AtomicU64,
    failed: AtomicU64,
    timeouts: AtomicU64,
    mismatches: AtomicU64,
    max_len: AtomicU32,
}

static T: Tally = Tally {
    run: AtomicU32::new(0),
    outstanding: AtomicU32::new(0),
    progress: AtomicU32::new(0),
    ok: AtomicU64::new(0),
    failed: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
    mismatches: AtomicU64::new(0),
    max_len: AtomicU32::new(1),
};

/// Deterministic generator: the length and bytes of request `k` of run `run`.
struct Gen(u64);

impl Gen {
    fn new(run: u32, k: u32) -> Self {
        let mut g = Gen((u64::from(run) << 32 | u64::from(k)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        g.next();
        g
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn len(&mut self, max: u32) -> usize {
        // Mostly small requests, some up to `max`.
        let r = self.next();
        let cap = if r & 3 == 0 { max } else { max.min(512) };
        1 + (r >> 8) as usize % (cap as usize).max(1)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

fn ctx_of(run: u32, k: u32) -> usize {
    ((run as usize) << 32) | k as usize
}

/// Compares an output with what request `k` of `run` sent.
fn verify(run: u32, k: u32, out: &api::OutView<'_>) -> bool {
    let mut g = Gen::new(run, k);
    let len = g.len(T.max_len.load(Ordering::Relaxed));
    if out.len() != len {
        return false;
    }
    let mut want = [0u8; 256];
    let mut got = [0u8; 256];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(want.len());
        g.fill(&mut want[..n]);
        if out.copy_to(off, &mut got[..n]) != n || want[..n] != got[..n] {
            return false;
        }
        off += n;
    }
    true
}

fn done(ctx: usize, o: &Outcome<'_>) {
    let run = (ctx >> 32) as u32;
    let k = ctx as u32;
    if run != T.run.load(Ordering::Acquire) {
        // A straggler from an earlier run that gave up waiting for it.
        return;
    }
    match o.status {
        Status::Ok if verify(run, k, &o.out) => T.ok.fetch_add(1, Ordering::Relaxed),
        Status::Ok => T.mismatches.fetch_add(1, Ordering::Relaxed),
        Status::TimedOut => T.timeouts.fetch_add(1, Ordering::Relaxed),
        _ => T.failed.fetch_add(1, Ordering::Relaxed),
    };
    T.outstanding.fetch_sub(1, Ordering::AcqRel);
    T.progress.store(1, Ordering::Release);
    shim::wake_waiters();
}

fn parse(cmd: &[u8]) -> Option<(u32, u32, u32)> {
    let s = core::str::from_utf8(cmd).ok()?;
    let mut it = s.split_ascii_whitespace();
    if it.next()? != "echo" {
        return None;
    }
    let count = it.next()?.parse::<u32>().ok()?;
    let window = it.next().map(|w| w.parse::<u32>().ok()).unwrap_or(Some(32))?;
    let max_len = it.next().map(|w| w.parse::<u32>().ok()).unwrap_or(Some(8192))?;
    if it.next().is_some() || count == 0 || window == 0 || max_len == 0 || max_len > (1 << 20) {
        return None;
    }
    Some((count, window, max_len))
}

/// Runs the self-test described by `cmd`; writes the report into `out`.
pub(crate) fn run(cmd: &[u8], out: &mut [u8]) -> Result {
    let Some((count, window, max_len)) = parse(cmd) else {
        pr_warn!("selftest: usage: echo COUNT [WINDOW] [MAX_LEN]\n");
        return Err(EINVAL);
    };
    let mut buf = KVVec::from_elem(0u8, max_len as usize, GFP_KERNEL)?;
    let mut sync_out = KVVec::from_elem(0u8, max_len as usize, GFP_KERNEL)?;

    let run = T.run.load(Ordering::Relaxed).wrapping_add(1).max(1);
    T.outstanding.store(0, Ordering::Relaxed);
    T.ok.store(0, Ordering::Relaxed);
    T.failed.store(0, Ordering::Relaxed);
    T.timeouts.store(0, Ordering::Relaxed);
    T.mismatches.store(0, Ordering::Relaxed);
    T.max_len.store(max_len, Ordering::Relaxed);
    T.run.store(run, Ordering::Release);

    let start = Ktime::ktime_get();
    let stall_ms = shim::request_timeout_ms().max(shim::sync_timeout_ms()) + 2000;
    let mut nohelper = 0u64;
    let mut busy_waits = 0u64;
    let mut refused = 0u64;
    let mut stalled = false;

    for k in 0..count {
        if !api::attached() {
            // Refused without building the request (the helper is gone).
            nohelper += 1;
            continue;
        }
        let mut g = Gen::new(run, k);
        let len = g.len(max_len);
        g.fill(&mut buf[..len]);
        let job = Job::echo(&buf[..len]);

        if k % 8 == 7 {
            match api::call(&job, &mut sync_out[..], 0) {
                Ok(n) => {
                    let mut g = Gen::new(run, k);
                    let _ = g.len(max_len);
                    g.fill(&mut buf[..len]);
                    if n == len && sync_out[..n] == buf[..n] {
                        T.ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        T.mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(CallError::Submit(SubmitError::NoHelper)) => nohelper += 1,
                Err(CallError::TimedOut) => {
                    T.timeouts.fetch_add(1, Ordering::Relaxed);
                }
                Err(CallError::Submit(SubmitError::Busy)) => {
                    // Counted as refused; the async path below retries instead.
                    refused += 1;
                }
                Err(_) => {
                    T.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            continue;
        }

        // Keep at most `window` requests in flight.
        let mut waited = 0u32;
        while T.outstanding.load(Ordering::Acquire) >= window {
            T.progress.store(0, Ordering::Release);
            if T.outstanding.load(Ordering::Acquire) < window {
                break;
            }
            if !shim::wait_word(&T.progress, 10) {
                waited += 10;
                if waited > stall_ms {
                    stalled = true;
                    break;
                }
            }
        }
        if stalled {
            break;
        }

        T.outstanding.fetch_add(1, Ordering::AcqRel);
        let mut tries = 0u32;
        loop {
            match api::submit(&job, done, ctx_of(run, k)) {
                Ok(_) => break,
                Err(SubmitError::Busy) if tries < stall_ms => {
                    busy_waits += 1;
                    tries += 1;
                    shim::msleep(1);
                }
                Err(e) => {
                    T.outstanding.fetch_sub(1, Ordering::AcqRel);
                    if e == SubmitError::NoHelper {
                        nohelper += 1;
                    } else {
                        refused += 1;
                    }
                    break;
                }
            }
        }
    }

    let drained = shim::wait_zero(&T.outstanding, stall_ms);
    let outstanding = T.outstanding.load(Ordering::Acquire);
    let elapsed_ms = (Ktime::ktime_get().to_ns() - start.to_ns()) / 1_000_000;
    // Late callbacks of this run are ignored from now on.
    T.run.store(run.wrapping_add(0x8000_0000), Ordering::Release);

    let ok = T.ok.load(Ordering::Relaxed);
    let failed = T.failed.load(Ordering::Relaxed);
    let timeouts = T.timeouts.load(Ordering::Relaxed);
    let mismatches = T.mismatches.load(Ordering::Relaxed);
    let pass = ok == u64::from(count) && mismatches == 0 && drained && !stalled;
    let mut w = BufWriter::new(out);
    let _ = writeln!(
        w,
        "echo: total={} ok={} failed={} nohelper={} refused={} timeouts={} mismatches={} outstanding={} stalled={} busy_waits={} elapsed_ms={}",
        count,
        ok,
        failed,
        nohelper,
        refused,
        timeouts,
        mismatches,
        outstanding,
        stalled as u32,
        busy_waits,
        elapsed_ms
    );
    let _ = writeln!(w, "result: {}", if pass { "PASS" } else { "FAIL" });
    pr_info!(
        "selftest echo {}: ok {} failed {} nohelper {} timeouts {} mismatches {} in {} ms: {}\n",
        count,
        ok,
        failed,
        nohelper,
        timeouts,
        mismatches,
        elapsed_ms,
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(())
}
