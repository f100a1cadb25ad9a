//! The helper's handling of arbitrary submission records: every record gets
//! an answer (never a panic), and nothing outside its output extent changes.
#![no_main]

use kgpu_common::abi::{Extent, Sqe};
use kgpu_helper::dispatch::CpuServices;
use kgpu_helper::shm::DataArea;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const AREA: usize = 64 << 10;

fn services() -> &'static CpuServices {
    static S: OnceLock<CpuServices> = OnceLock::new();
    S.get_or_init(CpuServices::new)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let w = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
    // Extents mostly inside the small area, sometimes anywhere.
    let ext = |i: usize| {
        let (o, l) = (u64::from(w(i)), u64::from(w(i + 4)));
        if data[0] & 1 == 0 {
            Extent::new((o % AREA as u64) & !15, l % (AREA as u64 / 2))
        } else {
            Extent::new(o, l)
        }
    };
    let mut params = [0u8; 32];
    let n = (data.len() - 64).min(32);
    params[..n].copy_from_slice(&data[64..64 + n]);
    let sqe = Sqe {
        slot: 0,
        gen: 1,
        service: u16::from(data[1] % 4),
        op: u16::from(data[2] % 9),
        flags: u32::from(data[3] == 0xff),
        key_tag: u64::from(data[4]),
        key: ext(8),
        input: ext(16),
        output: ext(24),
        aux: ext(32),
        unit: w(40) % 8192,
        count: w(44) % 40,
        params,
    };
    let mut mem = vec![0u64; AREA / 8];
    for (i, m) in mem.iter_mut().enumerate() {
        *m = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let before = mem.clone();
    // SAFETY: the window covers `mem`, which outlives it.
    let area = unsafe { DataArea::from_raw(mem.as_mut_ptr().cast(), AREA as u64) };
    let r = services().execute(&sqe, &area);
    let bytes = |m: &Vec<u64>| m.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let (b, a) = (bytes(&before), bytes(&mem));
    for (i, (x, y)) in b.iter().zip(&a).enumerate() {
        if x != y {
            let i = i as u64;
            assert!(r.is_ok(), "a refused request wrote byte {i}");
            assert!(
                i >= sqe.output.off && i < sqe.output.off + sqe.output.len,
                "byte {i} outside the output extent changed: {sqe:?}"
            );
        }
    }
});
