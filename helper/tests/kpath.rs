//! `bench --kernel-path` through an in-process CPU helper: every row present,
//! every request accounted for, the figures consistent with each other.

use kgpu_helper::backend::CpuBackend;
use kgpu_helper::bench::Mode;
use kgpu_helper::kpath::{self, KernelPathPlan};
use kgpu_helper::shm::RegionSpec;
use kgpu_helper::standin::Submitter;
use std::time::Duration;

mod common;
use common::InProcessHelper;

#[test]
fn kernel_path_rows_are_complete_and_consistent() {
    let spec = RegionSpec {
        sq_entries: 64,
        cq_entries: 128,
        data_size: 32 << 20,
    };
    let sub = Submitter::create(None, spec).unwrap();
    let _helper = InProcessHelper::start(
        &sub,
        |area| CpuBackend::new(area, 1),
        Duration::from_secs(5),
    );
    let plan = KernelPathPlan {
        modes: vec![Mode::AesXts, Mode::AesCbcEnc, Mode::Raid6Gen, Mode::Echo],
        sizes: vec![4096, 65536],
        depths: vec![1, 4],
        submitters: vec![1, 3],
        cpu_threads: 2,
        pool_bytes: 16 << 20,
        duration: Duration::from_millis(20),
    };
    let (rows, copy) = kpath::run(&sub, &plan, &|| None, &mut |_| {}).unwrap();
    assert!(copy > 0.0);
    assert_eq!(rows.len(), 4 * 2 * 2 * 2);
    let mut i = 0;
    for m in &plan.modes {
        for &size in &plan.sizes {
            for &depth in &plan.depths {
                for &subs in &plan.submitters {
                    let r = &rows[i];
                    i += 1;
                    assert_eq!(r.mode, m.name());
                    // Every submitter keeps at least one request in flight.
                    assert_eq!((r.depth, r.submitters), (depth.max(subs), subs));
                    // RAID6 rounds the data to whole 64-byte disk blocks.
                    assert!(r.size <= size as u64 && r.size * 2 > size as u64, "{r:?}");
                    assert!(r.requests >= subs as u64, "{r:?}");
                    assert_eq!(r.on_gpu, 0.0, "the CPU backend ran it");
                    assert!(r.helper_cores.is_none());
                    assert!(r.gpu_path_gbps > 0.0 && r.cpu1_gbps > 0.0 && r.cpun_gbps > 0.0);
                    assert_eq!(r.cpu_threads, 2);
                    let want = r.gpu_path_cpu_s_per_gb / r.cpu_path_cpu_s_per_gb;
                    assert!((r.cost_ratio - want).abs() <= 1e-9 * want, "{r:?}");
                    assert!(r.p50_us > 0.0);
                }
            }
        }
    }
    let text = kpath::table(&rows, "cpu", copy);
    assert_eq!(text.lines().count(), rows.len() + 2);
}

#[test]
fn cpu_paths_cover_every_path_and_mode() {
    let rows = kpath::cpu_paths(&[4096], Duration::from_millis(1)).unwrap();
    let paths = kgpu_aes::cpu::Path::ALL
        .into_iter()
        .filter(|p| p.available())
        .count();
    assert_eq!(rows.len(), 2 * 6 * paths);
    assert!(rows.iter().all(|r| r.gbps > 0.0 && r.size == 4096));
}
