//! Cutting a large AES request into parts for several streams must not change
//! its result: every part is a valid request, and the parts' outputs together
//! equal the whole's. Checked on the CPU, so it runs without a GPU.
#![cfg(feature = "cuda")]

use kgpu_common::abi::{Extent, Sqe};
use kgpu_helper::cuda::split_request;
use kgpu_helper::dispatch::CpuServices;
use kgpu_helper::shm::DataArea;
use kgpu_helper::workload::{random_aes, Rng, AES_OPS};

fn area(mem: &mut [u64]) -> DataArea {
    // SAFETY: the window covers `mem`, which outlives its use in each test.
    unsafe { DataArea::from_raw(mem.as_mut_ptr().cast(), mem.len() as u64 * 8) }
}

#[test]
fn parts_compute_what_the_whole_computes() {
    let services = CpuServices::new();
    let mut rng = Rng::new(77);
    let mut split_seen = 0;
    for round in 0..40 {
        let op = AES_OPS[round % AES_OPS.len()];
        let len = (4 << 20) + rng.below(4 << 20) as usize;
        let job = random_aes(&mut rng, op, len);
        let size = 16 << 20;
        let mut a = vec![0u64; size / 8];
        let key = Extent::new(0, job.key.len() as u64);
        let data = Extent::new(4096, job.input.len() as u64);
        let aux = Extent::new(
            (data.off + data.len).div_ceil(4096) * 4096,
            job.aux.len() as u64,
        );
        {
            let ar = area(&mut a);
            // SAFETY: disjoint extents inside `a`.
            unsafe {
                ar.slice_mut(key).copy_from_slice(&job.key);
                ar.slice_mut(data).copy_from_slice(&job.input);
                ar.slice_mut(aux).copy_from_slice(&job.aux);
            }
        }
        let mut b = a.clone();
        let sqe = Sqe {
            service: job.service,
            op: job.op,
            key_tag: job.key_tag,
            key,
            input: data,
            output: data,
            aux,
            unit: job.unit,
            count: job.count,
            params: job.params,
            ..Sqe::ZERO
        };
        services.execute(&sqe, &area(&mut a)).unwrap();
        let parts = split_request(&sqe);
        if parts.len() > 1 {
            split_seen += 1;
        }
        let mut covered = 0;
        for p in &parts {
            assert_eq!(p.output.off, data.off + covered, "parts are contiguous");
            covered += p.output.len;
            services
                .execute(p, &area(&mut b))
                .unwrap_or_else(|e| panic!("part {p:?} of {} refused: {}", job.name(), e.as_str()));
        }
        assert_eq!(covered, data.len);
        assert!(
            a == b,
            "{} {} bytes: parts differ from the whole",
            job.name(),
            len
        );
    }
    assert!(
        split_seen >= 10,
        "the splittable requests were cut ({split_seen})"
    );
}
