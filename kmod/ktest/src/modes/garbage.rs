// SPDX-License-Identifier: GPL-2.0-only

//! `serve garbage`: invalid completions around the correct one.

use crate::figures::Figures;
use crate::session::Session;
use kgpu_common::abi::{Cqe, Sqe};

/// Posts the invalid records that go before `cqe`, the correct answer to
/// `sqe`: a bad slot, a stale generation, an unknown status, overlong byte
/// counts, a slot never submitted, generation 0 (`seen_slots`: the slots
/// seen submitted so far).
pub fn post_bad_records(
    s: &mut Session,
    sqe: &Sqe,
    cqe: Cqe,
    seen_slots: &mut [bool],
    fig: &mut Figures,
) {
    if let Some(x) = seen_slots.get_mut(sqe.slot as usize) {
        *x = true;
    }
    let never = seen_slots.iter().rposition(|x| !x).unwrap_or(0) as u32;
    let bad = [
        Cqe {
            slot: 1 << 30,
            ..cqe
        },
        Cqe {
            gen: cqe.gen.wrapping_add(7),
            ..cqe
        },
        Cqe {
            status: 1000,
            ..cqe
        },
        Cqe {
            bytes: u64::MAX,
            ..cqe
        },
        Cqe {
            bytes: cqe.bytes + 1 + (64 << 20),
            ..cqe
        },
        // A slot that was never submitted.
        Cqe {
            slot: never,
            gen: 1,
            ..cqe
        },
        // Generation 0 is never used.
        Cqe { gen: 0, ..cqe },
    ];
    for b in bad {
        if s.push(b) {
            fig.bad_records += 1;
        }
    }
}
