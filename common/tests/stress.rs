//! Two threads, millions of records through a ring: no loss, no duplicate,
//! order kept, across counter wraparound.
#![cfg(not(loom))]

use kgpu_common::abi::RingIndices;
use kgpu_common::ring::{Consumer, Producer};
use kgpu_common::sync::Ordering;
use std::sync::Arc;

struct Shared {
    idx: RingIndices,
    recs: Box<[std::cell::UnsafeCell<u64>]>,
}
// SAFETY: records are only accessed through the ring protocol under test.
unsafe impl Sync for Shared {}

fn run(entries: u32, total: u64, start: u32, batch: u64) {
    let sh = Arc::new(Shared {
        idx: RingIndices::new(),
        recs: (0..entries)
            .map(|_| std::cell::UnsafeCell::new(0))
            .collect(),
    });
    sh.idx.head.store(start, Ordering::Relaxed);
    sh.idx.tail.store(start, Ordering::Relaxed);
    let rec_ptr = sh.recs.as_ptr() as *mut u64 as usize;
    let p_sh = sh.clone();
    let producer = std::thread::spawn(move || {
        // SAFETY: `p_sh` keeps the memory alive; one producer.
        let mut p = unsafe { Producer::<u64>::new(&p_sh.idx, rec_ptr as *mut u64, entries) };
        let mut i = 0u64;
        while i < total {
            let mut staged = 0;
            while staged < batch && i < total {
                match p.stage(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
                    Ok(()) => {
                        i += 1;
                        staged += 1;
                    }
                    Err(_) => break,
                }
            }
            p.publish();
            if staged == 0 {
                std::hint::spin_loop();
            }
        }
    });
    // SAFETY: `sh` keeps the memory alive; one consumer.
    let mut c = unsafe { Consumer::<u64>::new(&sh.idx, rec_ptr as *mut u64, entries) };
    let mut expect = 0u64;
    while expect < total {
        let mut got = 0;
        while let Some(v) = c.take().unwrap() {
            assert_eq!(
                v,
                expect.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                "record {expect}"
            );
            expect += 1;
            got += 1;
            if got == 7 {
                break;
            }
        }
        c.release();
        if got == 0 {
            std::hint::spin_loop();
        }
    }
    producer.join().unwrap();
    assert_eq!(c.pop().unwrap(), None, "no extra record");
}

#[test]
fn two_threads_millions() {
    run(256, 3_000_000, 0, 16);
}

#[test]
fn two_threads_across_u32_wrap() {
    run(8, 1_000_000, u32::MAX - 1000, 3);
}
