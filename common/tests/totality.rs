//! Everything that parses what the other side wrote is total: arbitrary bit
//! patterns give a value or an error, never a panic.
#![cfg(not(loom))]

use kgpu_common::abi::{Cqe, Extent, Sqe, Status};
use kgpu_common::region::{Geometry, HeaderSnapshot};
use kgpu_common::request::check_sqe;
use kgpu_common::slots::{Inflight, SlotEntry};
use proptest::prelude::*;

fn arb_extent() -> impl Strategy<Value = Extent> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(o, l)| Extent::new(o, l)),
        (0u64..1 << 21, 0u64..1 << 21).prop_map(|(o, l)| Extent::new(o, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20000))]

    #[test]
    fn header_validation_total(v in proptest::collection::vec(any::<u64>(), 13), len in any::<u64>(), pick in 0usize..13) {
        let g = Geometry::new(64, 128, 1 << 20).unwrap();
        // Start from a valid header and overwrite one field, or use raw words.
        let mut s = HeaderSnapshot {
            magic: kgpu_common::abi::REGION_MAGIC, version: kgpu_common::abi::ABI_VERSION,
            header_size: 4096, region_size: g.region_size, sq_off: g.sq_off, sq_entries: g.sq_entries,
            sqe_size: 128, cq_off: g.cq_off, cq_entries: g.cq_entries, cqe_size: 32,
            data_off: g.data_off, data_size: g.data_size, features: 0,
        };
        match pick {
            0 => s.magic = v[0], 1 => s.version = v[1] as u32, 2 => s.header_size = v[2] as u32,
            3 => s.region_size = v[3], 4 => s.sq_off = v[4], 5 => s.sq_entries = v[5] as u32,
            6 => s.sqe_size = v[6] as u32, 7 => s.cq_off = v[7], 8 => s.cq_entries = v[8] as u32,
            9 => s.cqe_size = v[9] as u32, 10 => s.data_off = v[10], 11 => s.data_size = v[11],
            _ => s.features = v[12],
        }
        if let Ok(g2) = s.validate(len) {
            // Anything accepted is canonical and fits the region it describes.
            prop_assert_eq!(Geometry::new(g2.sq_entries, g2.cq_entries, g2.data_size), Ok(g2));
            prop_assert_eq!(g2.region_size, len);
            prop_assert!(g2.data_off + g2.data_size <= len);
        }
    }

    #[test]
    fn completion_validation_total(slot in any::<u32>(), gen in 0u32..8, status in any::<i32>(), bytes in any::<u64>(), backend in any::<u32>()) {
        let mut t = Inflight::new(vec![SlotEntry::default(); 16]);
        let tickets: Vec<_> = (0..5).map(|i| t.alloc(i * 1000).unwrap()).collect();
        let cqe = Cqe { slot, gen, status, backend, bytes, nanos: 0 };
        if let Ok(c) = t.complete(&cqe) {
            let tk = tickets.iter().find(|k| k.slot == slot).expect("accepted slot is in flight");
            prop_assert_eq!(tk.gen, gen);
            prop_assert!(c.bytes <= slot as u64 * 1000);
            prop_assert!(Status::from_raw(status).is_some());
        }
    }

    #[test]
    fn sqe_check_total(k in arb_extent(), i in arb_extent(), o in arb_extent(), a in arb_extent(), flags in any::<u32>(), size in any::<u64>()) {
        let sqe = Sqe { key: k, input: i, output: o, aux: a, flags, ..Sqe::ZERO };
        if let Ok(c) = check_sqe(&sqe, size) {
            for e in [c.key, c.input, c.output, c.aux] {
                prop_assert!(e.off.checked_add(e.len).is_some_and(|end| end <= size));
            }
            prop_assert!(c.in_place || !c.input.overlaps(&c.output));
        }
    }
}
