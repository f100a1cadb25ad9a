//! The kernel's validation of completions: any sequence of submissions and
//! arbitrary completion records is accepted only where it names a request in
//! flight, with its generation, a known status and a byte count that fits.
#![no_main]

use kgpu_common::abi::{Cqe, Status};
use kgpu_common::slots::{Inflight, SlotEntry, Ticket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut t = Inflight::new(vec![SlotEntry::default(); 8]);
    let mut live: Vec<(Ticket, u64)> = Vec::new();
    for chunk in data.chunks(29) {
        if chunk.len() < 29 {
            break;
        }
        let op = chunk[0];
        if op % 3 == 0 {
            let out = u64::from(chunk[1]) * 16;
            if let Some(k) = t.alloc(out) {
                live.push((k, out));
            }
            continue;
        }
        let w = |i: usize| u32::from_le_bytes(chunk[i..i + 4].try_into().unwrap());
        let mut cqe = Cqe {
            slot: w(1),
            gen: w(5),
            status: w(9) as i32,
            backend: w(13),
            bytes: u64::from_le_bytes(chunk[17..25].try_into().unwrap()),
            nanos: 0,
        };
        // Half the time aim at a live request, to reach the acceptance path.
        if op % 3 == 1 && !live.is_empty() {
            let (k, _) = live[w(25) as usize % live.len()];
            cqe.slot = k.slot;
            if op & 8 == 0 {
                cqe.gen = k.gen;
            }
        }
        if let Ok(c) = t.complete(&cqe) {
            let pos = live
                .iter()
                .position(|(k, _)| k.slot == c.slot && k.gen == c.gen)
                .expect("accepted completion names a live request");
            let (k, out) = live.swap_remove(pos);
            assert!(c.bytes <= out);
            assert!(Status::from_raw(cqe.status).is_some());
            assert!(c.status == Status::Ok || c.bytes == 0);
            assert!(t.release(k));
            assert!(!t.release(k), "released twice");
        }
    }
    assert_eq!(t.in_flight() as usize, live.len());
});
