//! Region header validation: any header bytes and region length give a
//! geometry or an error; an accepted geometry is canonical and fits.
#![no_main]

use kgpu_common::abi::RegionHeader;
use kgpu_common::region::{Geometry, HeaderSnapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap());
    let mut hdr = vec![0u8; std::mem::size_of::<RegionHeader>() + 64];
    let n = (data.len() - 8).min(hdr.len());
    hdr[..n].copy_from_slice(&data[8..8 + n]);
    // SAFETY: the buffer holds a whole header (align 8 via the copy below).
    let aligned: Vec<u64> = hdr
        .chunks(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(b)
        })
        .collect();
    // SAFETY: `aligned` is 8-byte aligned and at least one header long.
    let snap = unsafe { HeaderSnapshot::read(aligned.as_ptr().cast()) };
    if let Ok(g) = snap.validate(len) {
        assert_eq!(
            Geometry::new(g.sq_entries, g.cq_entries, g.data_size),
            Ok(g)
        );
        assert_eq!(g.region_size, len);
        assert!(g
            .data_off
            .checked_add(g.data_size)
            .is_some_and(|e| e <= len));
        assert!(g.sq_records() <= g.cq_off && g.cq_records() <= g.data_off);
    }
});
