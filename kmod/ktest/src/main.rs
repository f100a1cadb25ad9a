// SPDX-License-Identifier: GPL-2.0-only

//! In-guest test program for the kgpu module.
//!
//! ```text
//! kgpu-ktest open-twice          a second opener of /dev/kgpu gets EBUSY
//! kgpu-ktest open-as-nobody      uid 65534 cannot open /dev/kgpu
//! kgpu-ktest attach-errors       every malformed attach gets its errno; a good one works
//! kgpu-ktest serve [MODE] [SEED]  a minimal helper serving ECHO; MODE picks a misbehaviour:
//!     echo      answer correctly (default)
//!     garbage   post invalid completions (bad slot, stale generation, generation
//!               0, a slot never submitted, unknown status, overlong byte counts)
//!               around the correct one, a duplicate right after it and another
//!               one round later, once the kernel has taken it
//!     silent    take requests and never answer
//!     corrupt   answer a few, then write an impossible completion-ring tail
//!     wrongdata answer with one byte changed
//!     freeze    answer 100 requests, then stop everything, heartbeat included
//!     drain     answer correctly, ask the kernel to drain after 200 requests,
//!               exit when poll() reports POLLHUP
//!     random    eight hostile sessions (seeded: SEED, printed): random writes all
//!               over the region (header page, both rings' indices, submission
//!               and completion records, the data area) mixed with correct
//!               answers, error answers, no answers and records of random
//!               bytes; a session ends when the kernel hangs up, when our own
//!               end of a ring is broken, or after 300 requests or 4 s, and the
//!               next one attaches a fresh region; then it serves correctly
//!     jumps     head/tail jumps, one per session (completion tail a ring ahead,
//!               a ring and one ahead, 2^31 ahead, one back, u32::MAX;
//!               submission head past the kernel's tail, more than a ring
//!               behind, half a ring back), each checked against the kernel's
//!               counters and state; then it serves correctly
//!     header    overwrite every layout field of the header (and its reserved
//!               bytes) after every round while answering 1000 requests; then
//!               check that the kernel kept its geometry, that the same region
//!               cannot be attached again, and serve correctly after restoring it
//!     race      answer 2000 requests correctly while a second thread rewrites
//!               completion records the kernel may be copying at that moment
//!               (published and not yet consumed, or about to be published):
//!               the (slot, generation) of another request in flight, random
//!               ones, a small status, a small byte count; then serve correctly
//! ```
//!
//! The hostile modes print `figures (...)` lines (records written, random
//! writes by target, sessions) for the tests to compare with the kernel's
//! counters, and `ok:`/`not ok:` lines for their own checks.
//!
//! Each mode is a module of `modes/` (the serve modes share the loop in
//! `modes/serve.rs`); `modes/random.rs` says what the random mode leaves
//! alone and why, `modes/race.rs` why the race mode does not.
//!
//! It exercises the kernel's side of the protocol with a peer the tests
//! control, including a hostile one; the real helper is tested separately.

mod dev;
mod figures;
mod modes;
mod region;
mod session;
mod sys;
mod util;

use modes::attach_errors::attach_errors;
use modes::attach_one::attach_one;
use modes::open_as_nobody::open_as_nobody;
use modes::open_twice::open_twice;
use modes::serve::{serve, Mode};
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("open-twice") => open_twice(),
        Some("open-as-nobody") => open_as_nobody(),
        Some("attach-errors") => attach_errors(),
        Some("attach-one") => attach_one(),
        Some("serve") => {
            let mode = match args.get(2).map(String::as_str) {
                None | Some("echo") => Mode::Echo,
                Some("garbage") => Mode::Garbage,
                Some("silent") => Mode::Silent,
                Some("corrupt") => Mode::Corrupt,
                Some("wrongdata") => Mode::WrongData,
                Some("drain") => Mode::Drain,
                Some("freeze") => Mode::Freeze,
                Some("random") => Mode::Random,
                Some("jumps") => Mode::Jumps,
                Some("header") => Mode::Header,
                Some("race") => Mode::Race,
                Some(m) => {
                    eprintln!("kgpu-ktest: unknown serve mode {m}");
                    exit(2)
                }
            };
            let seed = match args.get(3).map(|a| a.parse::<u64>()) {
                Some(Ok(v)) => v,
                Some(Err(_)) => {
                    eprintln!("kgpu-ktest: seed must be a number");
                    exit(2)
                }
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1),
            };
            serve(mode, seed)
        }
        _ => {
            eprintln!("usage: kgpu-ktest open-twice|open-as-nobody|attach-errors|attach-one|serve [echo|garbage|silent|corrupt|wrongdata|drain|freeze|random|jumps|header|race] [SEED]");
            exit(2)
        }
    }
}
