//! The CUDA backend through the ring against the CPU, on fresh random data of
//! odd sizes, every service and mode, outputs poisoned first. Skipped (with a
//! message) where no GPU is usable.
#![cfg(feature = "cuda")]

use kgpu_common::abi::{backend, Status};
use kgpu_helper::cuda::{device_count, CudaBackend, CudaOptions};
use kgpu_helper::dispatch::CpuServices;
use kgpu_helper::shm::RegionSpec;
use kgpu_helper::standin::Submitter;
use kgpu_helper::workload::{random_aes, Job, Rng, AES_OPS};
use kgpu_raid6::proto::{op as r6op, Raid6Params};
use std::time::{Duration, Instant};

fn gpu_present() -> bool {
    match device_count() {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipping: no CUDA device ({e})");
            false
        }
    }
}

mod common;
use common::{on_gpu as ran_on_gpu, run_and_check as run, InProcessHelper};

/// A CUDA helper that sends everything to the GPU, however small.
fn cuda_helper(sub: &Submitter) -> InProcessHelper {
    let make = |area| {
        let opts = CudaOptions {
            gpu_min_bytes: Some(0),
            ..CudaOptions::default()
        };
        CudaBackend::new(area, opts).expect("CUDA backend")
    };
    InProcessHelper::start(sub, make, Duration::from_secs(120))
}

#[test]
fn gpu_backend_matches_cpu_through_the_ring() {
    if !gpu_present() {
        return;
    }
    let sub = Submitter::create(
        None,
        RegionSpec {
            sq_entries: 256,
            cq_entries: 512,
            data_size: 256 << 20,
        },
    )
    .unwrap();
    let helper = cuda_helper(&sub);
    let services = CpuServices::new();
    let mut rng = Rng::new(0x9e1);
    let mut on_gpu = 0;
    let mut total = 0;
    for op in AES_OPS {
        for len in [
            16usize,
            17 * 16,
            4096,
            4096 * 3 + 512,
            65536 + 16,
            1 << 20,
            (3 << 20) + 4096,
        ] {
            let job = random_aes(&mut rng, op, len);
            total += 1;
            on_gpu += u32::from(ran_on_gpu(run(&sub, &job, &services)));
        }
    }
    // CTR with a partial last block, XTS with ciphertext stealing.
    for (op, len, unit) in [
        (kgpu_aes::proto::op::CTR, 1000usize, 0u32),
        (kgpu_aes::proto::op::XTS_ENC, 520 * 8, 520),
    ] {
        let mut iv = [0u8; 16];
        rng.fill(&mut iv);
        let params = if unit == 0 {
            kgpu_aes::proto::AesParams::single(iv)
        } else {
            kgpu_aes::proto::AesParams::plain64(rng.next_u64() >> 4)
        };
        let key = rng.bytes(32);
        let job = Job::aes(op, key, 0, rng.bytes(len), unit, params, Vec::new());
        total += 1;
        on_gpu += u32::from(ran_on_gpu(run(&sub, &job, &services)));
    }
    // RAID6: every operation on random arrays.
    for (disks, unit) in [(4u32, 64u32), (7, 4096), (16, 65536), (24, 4160)] {
        let nd = disks as usize - 2;
        let data = rng.bytes(nd * unit as usize);
        let gen = Job::raid6(
            r6op::GEN_SYNDROME,
            disks,
            unit,
            Raid6Params::NONE,
            data.clone(),
            Vec::new(),
        );
        let pq = gen.direct(&services).unwrap();
        let jobs = [
            gen,
            Job::raid6(
                r6op::XOR_SYNDROME,
                disks,
                unit,
                Raid6Params::xor(1, nd as u32 - 1),
                data[unit as usize..].to_vec(),
                pq.clone(),
            ),
            {
                let mut all = data.clone();
                all.extend_from_slice(&pq);
                Job::raid6(
                    r6op::RECOV_2DATA,
                    disks,
                    unit,
                    Raid6Params::recov_2data(0, nd as u32 - 1),
                    all,
                    Vec::new(),
                )
            },
            {
                let mut all = data.clone();
                all.extend_from_slice(&pq);
                Job::raid6(
                    r6op::RECOV_DATAP,
                    disks,
                    unit,
                    Raid6Params::recov_datap(nd as u32 / 2),
                    all,
                    Vec::new(),
                )
            },
        ];
        for job in &jobs {
            total += 1;
            on_gpu += u32::from(ran_on_gpu(run(&sub, job, &services)));
        }
    }
    // A request the service rejects still gets its precise error.
    let bad = Job::aes(
        kgpu_aes::proto::op::CBC_ENC,
        vec![0; 16],
        0,
        vec![0; 100],
        0,
        kgpu_aes::proto::AesParams::single([0; 16]),
        Vec::new(),
    );
    let (s, _) = run(&sub, &bad, &services);
    assert_eq!(s, Status::BadLength);
    drop(helper);
    eprintln!("{on_gpu} of {total} requests ran on the GPU");
    assert_eq!(on_gpu, total, "every valid request ran on the GPU");
}

/// Every service with a GPU part, from the registry (a new service is
/// covered without a line here): its calibration probes at odd sizes, small
/// to large, on the GPU through the ring against its CPU code.
#[test]
fn every_gpu_service_matches_cpu_on_its_probes() {
    if !gpu_present() {
        return;
    }
    let sub = Submitter::create(
        None,
        RegionSpec {
            sq_entries: 64,
            cq_entries: 128,
            data_size: 128 << 20,
        },
    )
    .unwrap();
    let helper = cuda_helper(&sub);
    let services = CpuServices::new();
    let mut rng = Rng::new(0x5e7);
    let (mut total, mut on_gpu) = (0, 0);
    for s in services.registry().iter() {
        let Some(gpu) = s.gpu() else { continue };
        for size in [4usize, 100, 4096 + 12, 65536 - 4, 1 << 20, (5 << 20) + 36] {
            let job = gpu.probe(size, &mut rng);
            assert_eq!(job.service, s.id(), "{} probes its own service", s.name());
            total += 1;
            on_gpu += u32::from(ran_on_gpu(run(&sub, &job, &services)));
        }
    }
    drop(helper);
    eprintln!("{on_gpu} of {total} probe requests ran on the GPU");
    assert!(total >= 12, "at least aes and raid6 have GPU parts");
    assert_eq!(on_gpu, total, "every probe ran on the GPU");
}

/// Under load: many large requests in flight at once on every stream, each
/// checked against the CPU, with the aggregate rate printed for comparison
/// with the benchmark.
#[test]
fn many_large_requests_in_flight_are_all_correct() {
    if !gpu_present() {
        return;
    }
    let sub = Submitter::create(
        None,
        RegionSpec {
            sq_entries: 256,
            cq_entries: 512,
            data_size: 1 << 30,
        },
    )
    .unwrap();
    let helper = cuda_helper(&sub);
    let services = CpuServices::new();
    let mut rng = Rng::new(0x10ad);
    let ops = [
        kgpu_aes::proto::op::XTS_ENC,
        kgpu_aes::proto::op::CTR,
        kgpu_aes::proto::op::ECB_ENC,
        kgpu_aes::proto::op::CBC_DEC,
    ];
    let mut jobs = Vec::new();
    for i in 0..40 {
        let job = if i % 5 == 4 {
            kgpu_helper::workload::random_raid6_gen(&mut rng, 16, 1 << 20)
        } else {
            let len = ((4 << 20) + rng.below(12 << 20) as usize) / 4096 * 4096;
            random_aes(&mut rng, ops[i % 4], len)
        };
        let want = job.direct(&services).unwrap();
        jobs.push((job, want));
    }
    let staged: Vec<_> = jobs
        .iter()
        .map(|(j, _)| j.stage(&sub).expect("room"))
        .collect();
    let reqs: Vec<_> = staged.iter().map(|s| s.request).collect();
    let t0 = Instant::now();
    let tickets = sub.submit_batch(&reqs).unwrap();
    let done: Vec<_> = tickets
        .into_iter()
        .map(|t| sub.wait(t, Duration::from_secs(60)).unwrap())
        .collect();
    let dt = t0.elapsed();
    let mut bytes = 0u64;
    for (((job, want), st), c) in jobs.iter().zip(&staged).zip(done) {
        assert_eq!(c.status, Status::Ok, "{}", job.name());
        assert_eq!(c.backend, backend::GPU);
        assert!(
            st.output(&sub, c.bytes) == *want,
            "{} {} bytes differs under load",
            job.name(),
            job.input.len()
        );
        bytes += job.payload();
    }
    eprintln!(
        "{} requests, {} MiB in {:.1} ms: {:.1} GB/s, all correct",
        jobs.len(),
        bytes >> 20,
        dt.as_secs_f64() * 1e3,
        bytes as f64 / dt.as_secs_f64() / 1e9
    );
    drop(helper);
}
