// SPDX-License-Identifier: GPL-2.0-only

//! The example service's kernel half: a debugfs command file that sends
//! requests to the helper through the ring and checks every answer.
//!
//! ```text
//! echo "COUNT [LEN]" > /sys/kernel/debug/kgpu/example
//! cat /sys/kernel/debug/kgpu/example
//! ```
//!
//! Each of COUNT requests adds a random 32-bit constant to LEN bytes (a
//! multiple of 4, 4 ..= 262144; default 4096) of random words, every second
//! one in place. The expected answer is computed first with the service's own
//! CPU code (`src/proto.rs`, the same source the helper's CPU path runs);
//! the helper's answer (CPU or GPU) must equal it byte for byte. A request
//! the helper cannot take or answer (none attached, ring full, an error, a
//! timeout) is computed here on the CPU instead, as a real service does, and
//! counted as `cpu`. The report ends in `result: PASS` when every answer was
//! right and every request was answered one way or the other.
//!
//! What this file shows a new service: a [`SERVICE`] entry for the module's
//! table, its wire encoding included by path, a request built as an
//! [`api::Job`] and run with [`api::call`], and a CPU path for when the
//! helper is not there.

use crate::api::{self, CallError, Job, Src};
use crate::kcommon::abi::service;
use crate::selftest::Rng;
use crate::service::Service;
use crate::BufWriter;
use core::fmt::Write;
use kernel::alloc::{flags::GFP_KERNEL, KVec};
use kernel::prelude::*;
use kernel::time::Ktime;

// The wire encoding and CPU code, shared with the helper (which uses the rest).
#[path = "../src/proto.rs"]
#[allow(dead_code, unreachable_pub)]
mod proto;

/// The example in the module's service table: nothing to register with the
/// kernel, one command file.
pub(crate) const SERVICE: Service = Service::new(service::EXAMPLE, c"example").command_file(run);

/// Largest LEN of a command.
const MAX_LEN: usize = 256 << 10;

/// The request counts of one command.
#[derive(Default)]
struct Tally {
    helper: u32,
    cpu: u32,
    mismatches: u32,
    bytes: u64,
}

/// "COUNT [LEN]".
fn parse(cmd: &[u8]) -> Option<(u32, usize)> {
    let s = core::str::from_utf8(cmd).ok()?;
    let mut it = s.split_ascii_whitespace();
    let count = it.next()?.parse::<u32>().ok()?;
    let len = match it.next() {
        Some(w) => w.parse::<usize>().ok()?,
        None => 4096,
    };
    let ok = count > 0 && len > 0 && len % 4 == 0 && len <= MAX_LEN && it.next().is_none();
    ok.then_some((count, len))
}

/// Runs a command written to the file; its report is what `w` receives.
fn run(cmd: &[u8], w: &mut BufWriter<'_>) -> Result {
    let Some((count, len)) = parse(cmd) else {
        let _ = writeln!(w, "usage: COUNT [LEN] (LEN a multiple of 4, at most {MAX_LEN})");
        return Err(EINVAL);
    };
    let mut input = KVec::from_elem(0u8, len, GFP_KERNEL)?;
    let mut want = KVec::from_elem(0u8, len, GFP_KERNEL)?;
    let mut out = KVec::from_elem(0u8, len, GFP_KERNEL)?;
    let mut rng = Rng::new(Ktime::ktime_get().to_ns() as u64);
    let mut t = Tally::default();
    for i in 0..count {
        let addend = rng.next() as u32;
        rng.fill(&mut input);
        proto::add(addend, &input, &mut want);
        out.fill(0x5a);
        let job = Job {
            service: service::EXAMPLE,
            op: proto::op::ADD,
            key_tag: 0,
            key: &[],
            input: Src::Bytes(&input),
            aux: &[],
            out_len: len,
            in_place: i % 2 == 1,
            unit: 0,
            count: 0,
            params: proto::params(addend),
        };
        match api::call(&job, &mut out, 0) {
            Ok(n) if n == len => t.helper += 1,
            Ok(_) | Err(CallError::Overflow) => {
                // A wrong length is a wrong answer.
                t.helper += 1;
                t.mismatches += 1;
                continue;
            }
            Err(CallError::Submit(_) | CallError::Failed(_) | CallError::TimedOut) => {
                // No answer from the helper: the CPU path.
                proto::add(addend, &input, &mut out);
                t.cpu += 1;
            }
        }
        if out[..] != want[..] {
            t.mismatches += 1;
        }
        t.bytes += len as u64;
    }
    let pass = t.mismatches == 0 && t.helper + t.cpu == count;
    let _ = writeln!(
        w,
        "example: requests={count} len={len} helper={} cpu={} mismatches={} bytes={}\nresult: {}",
        t.helper,
        t.cpu,
        t.mismatches,
        t.bytes,
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(())
}
