//! The rings against a hostile peer: arbitrary values written into the other
//! side's index between operations never make an end read or write outside
//! the ring, and are reported as corruption when impossible.
#![no_main]

use kgpu_common::abi::RingIndices;
use kgpu_common::ring::{Consumer, Producer, RingError};
use kgpu_common::sync::Ordering;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let idx = Box::new(RingIndices::new());
    let mut recs = vec![0u64; 8];
    // SAFETY: `idx` and `recs` outlive both ends; one producer, one consumer.
    let mut p = unsafe { Producer::new(&*idx, recs.as_mut_ptr(), 8) };
    // SAFETY: as above.
    let mut c = unsafe { Consumer::new(&*idx, recs.as_mut_ptr(), 8) };
    for chunk in data.chunks(5) {
        if chunk.len() < 5 {
            break;
        }
        let v = u32::from_le_bytes(chunk[1..5].try_into().unwrap());
        match chunk[0] % 6 {
            0 => {
                let _ = p.push(u64::from(v));
            }
            1 => {
                let _ = c.pop();
            }
            // The "other side" scribbles on the index it owns.
            2 => idx.head.store(v, Ordering::Relaxed),
            3 => idx.tail.store(v, Ordering::Relaxed),
            4 => {
                if let Ok(n) = c.available() {
                    assert!(n <= 8);
                }
            }
            _ => match p.space() {
                Ok(n) => assert!(n <= 8),
                Err(RingError::Corrupt { head, tail }) => assert!(tail.wrapping_sub(head) > 8),
                Err(RingError::Full) => unreachable!("space() never reports Full"),
            },
        }
    }
});
