//! The helper against the userspace stand-in over a real shared mapping:
//! in-process with many submitter threads, and across processes with the
//! helper killed mid-run.

use kgpu_common::abi::{service, Extent, Status};
use kgpu_helper::backend::CpuBackend;
use kgpu_helper::dispatch::CpuServices;
use kgpu_helper::serve::{serve, RegionTransport, ServeOptions};
use kgpu_helper::shm::RegionSpec;
use kgpu_helper::standin::{Request, SubmitError, Submitter};
use kgpu_helper::stats::Stats;
use kgpu_helper::workload::{random_aes, random_raid6_gen, Job, Rng, AES_OPS};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn small_spec() -> RegionSpec {
    RegionSpec {
        sq_entries: 64,
        cq_entries: 128,
        data_size: 32 << 20,
    }
}

mod common;
use common::{run_and_check, InProcessHelper};

fn cpu_helper(sub: &Submitter, workers: usize) -> InProcessHelper {
    InProcessHelper::start(
        sub,
        move |area| CpuBackend::new(area, workers),
        Duration::from_secs(5),
    )
}

#[test]
fn many_submitters_one_helper_every_result_checked() {
    let sub = Arc::new(Submitter::create(None, small_spec()).unwrap());
    let _helper = cpu_helper(&sub, 2);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let sub = Arc::clone(&sub);
            std::thread::spawn(move || {
                let services = CpuServices::new();
                let mut rng = Rng::new(t + 1);
                for _ in 0..300 {
                    let job = match rng.below(3) {
                        0 => {
                            let n = rng.below(70000) as usize + 1;
                            Job::echo(rng.bytes(n))
                        }
                        1 => {
                            let op = AES_OPS[rng.below(AES_OPS.len() as u64) as usize];
                            let len = rng.below(40000) as usize + 16;
                            random_aes(&mut rng, op, len)
                        }
                        _ => {
                            let disks = 4 + rng.below(13) as u32;
                            let unit = 64 * (1 + rng.below(64) as u32);
                            random_raid6_gen(&mut rng, disks, unit)
                        }
                    };
                    run_and_check(&sub, &job, &services);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = sub.stats();
    assert_eq!(st.submitted, 1200);
    assert_eq!(st.completed, 1200);
    assert_eq!(st.rejected, 0);
    assert_eq!(sub.in_flight(), 0);
}

#[test]
fn bad_requests_get_errors_and_the_helper_keeps_serving() {
    let sub = Submitter::create(None, small_spec()).unwrap();
    let _helper = cpu_helper(&sub, 0);
    let size = sub.region().geometry().data_size;
    let buf = sub.alloc(4096).unwrap();
    let key = sub.alloc(32).unwrap();
    let mut cases: Vec<(Request, Status)> = Vec::new();
    let mut r = Request::new(99, 1);
    r.input = buf;
    r.output = buf;
    cases.push((r, Status::UnknownService));
    let mut r = Request::new(service::AES, 77);
    r.input = buf;
    r.output = buf;
    r.key = key;
    cases.push((r, Status::UnknownOp));
    let mut r = Request::new(service::ECHO, 0);
    r.input = Extent::new(size - 10, 20);
    r.output = buf;
    cases.push((r, Status::BadExtent));
    let mut r = Request::new(service::ECHO, 0);
    r.input = Extent::new(u64::MAX - 5, 10);
    r.output = buf;
    cases.push((r, Status::BadExtent));
    let mut r = Request::new(service::ECHO, 0);
    r.input = Extent::new(buf.off, 2048);
    r.output = Extent::new(buf.off + 1024, 2048);
    cases.push((r, Status::BadExtent));
    // AES with a 17-byte key.
    let mut r = Request::new(service::AES, kgpu_aes::proto::op::ECB_ENC);
    r.input = buf;
    r.output = buf;
    r.key = Extent::new(key.off, 17);
    cases.push((r, Status::BadKey));
    // AES-CBC on a length that is not a whole number of blocks.
    let mut r = Request::new(service::AES, kgpu_aes::proto::op::CBC_ENC);
    r.input = Extent::new(buf.off, 100);
    r.output = r.input;
    r.key = Extent::new(key.off, 16);
    r.params = kgpu_aes::proto::AesParams::single([0; 16]).to_bytes();
    cases.push((r, Status::BadLength));
    // RAID6 with 3 disks.
    let mut r = Request::new(service::RAID6, kgpu_raid6::proto::op::GEN_SYNDROME);
    r.input = Extent::new(buf.off, 64);
    r.output = Extent::new(key.off, 0);
    r.count = 3;
    r.unit = 64;
    cases.push((r, Status::BadParams));
    for (req, want) in cases {
        let t = sub.submit(&req).unwrap();
        let c = sub.wait(t, Duration::from_secs(10)).unwrap();
        assert_eq!(c.status, want, "{req:?}");
        assert_eq!(c.bytes, 0);
    }
    // Still serving.
    let services = CpuServices::new();
    run_and_check(&sub, &Job::echo(vec![7; 5000]), &services);
}

#[test]
fn submit_without_helper_says_so() {
    let sub = Submitter::create(None, small_spec()).unwrap();
    let e = sub.alloc(16).unwrap();
    let mut r = Request::new(service::ECHO, 0);
    r.input = e;
    r.output = e;
    assert_eq!(sub.submit(&r), Err(SubmitError::NoHelper));
}

fn helper_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kgpu-helper")
}

fn spawn_helper(path: &std::path::Path) -> Child {
    Command::new(helper_bin())
        .args([
            "serve",
            "--backend",
            "cpu",
            "--cpu-workers",
            "1",
            "--region",
        ])
        .arg(path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_attached(sub: &Submitter) {
    let t0 = Instant::now();
    while !sub.helper_attached() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "helper never attached"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn helper_killed_mid_run_loses_nothing_and_a_new_helper_takes_over() {
    let dir = std::env::temp_dir().join(format!("kgpu-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("region");
    let spec = RegionSpec {
        data_size: 128 << 20,
        ..small_spec()
    };
    let sub = Arc::new(Submitter::create(Some(&path), spec).unwrap());
    let mut child = spawn_helper(&path);
    wait_attached(&sub);
    // A second helper on the same region is refused.
    let second = Command::new(helper_bin())
        .args(["serve", "--backend", "cpu", "--region"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!second.status.success());
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(msg.contains("another helper is attached"), "{msg}");

    // Keep the queue full of large requests, kill the helper under load.
    let services = CpuServices::new();
    let mut rng = Rng::new(42);
    let mut pending = Vec::new();
    let mut killed_at = None;
    let (mut ok, mut failed) = (0u32, 0u32);
    let t0 = Instant::now();
    let mut frozen = false;
    while t0.elapsed() < Duration::from_secs(20) {
        if killed_at.is_none() && ok > 20 && !frozen {
            // Freeze the helper so the requests submitted next are surely
            // in flight when it dies.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .unwrap();
            frozen = true;
        }
        while pending.len() < 48 {
            let job = random_aes(&mut rng, kgpu_aes::proto::op::XTS_ENC, 1 << 20);
            let Some(st) = job.stage(&sub) else { break };
            match sub.submit(&st.request) {
                Ok(t) => pending.push((job, st, t)),
                Err(SubmitError::NoHelper) => {
                    st.free(&sub);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        if frozen && killed_at.is_none() {
            child.kill().unwrap();
            child.wait().unwrap();
            killed_at = Some(Instant::now());
        }
        if pending.is_empty() {
            break;
        }
        let (job, st, t) = pending.remove(0);
        let c = sub
            .wait(t, Duration::from_secs(5))
            .expect("bounded wait after a helper death");
        match c.status {
            Status::Ok => {
                assert_eq!(st.output(&sub, c.bytes), job.direct(&services).unwrap());
                ok += 1;
            }
            Status::NoHelper => failed += 1,
            s => panic!("unexpected status {s:?}"),
        }
        st.free(&sub);
    }
    // Reaped above when killed; a second wait just returns its status.
    let _ = child.kill();
    let _ = child.wait();
    let killed_at = killed_at.expect("the helper was killed");
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "detection took too long"
    );
    assert!(
        failed > 0,
        "requests in flight at the kill were reported failed"
    );
    let stats = sub.stats();
    assert_eq!(stats.failed_no_helper, failed as u64);
    assert_eq!(stats.submitted, stats.completed + stats.failed_no_helper);
    assert_eq!(sub.in_flight(), 0);

    // A new helper attaches to the reset region and serves.
    let mut child2 = spawn_helper(&path);
    wait_attached(&sub);
    for _ in 0..20 {
        run_and_check(
            &sub,
            &random_aes(&mut rng, kgpu_aes::proto::op::CTR, 10000),
            &services,
        );
    }
    // SIGTERM: it finishes and exits cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child2.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child2.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_region_header_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("kgpu-hdr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("region");
    drop(Submitter::create(Some(&path), small_spec()).unwrap());
    let good = std::fs::read(&path).unwrap();
    // Offsets in RegionHeader: magic at 0, version at 8, sq_entries at 32.
    let cases: [(usize, &[u8], &str); 3] = [
        (0, b"NOTKGPU!", "bad magic"),
        (8, &7u32.to_le_bytes(), "ABI version mismatch"),
        (32, &63u32.to_le_bytes(), "ring size"),
    ];
    for (off, bytes, want) in cases {
        let mut bad = good.clone();
        bad[off..off + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&path, &bad).unwrap();
        let out = Command::new(helper_bin())
            .args(["serve", "--backend", "cpu", "--region"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let msg = String::from_utf8_lossy(&out.stderr);
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_submission_ring_stops_the_helper_cleanly() {
    let sub = Submitter::create(None, small_spec()).unwrap();
    let region = Arc::clone(sub.region());
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let r2 = Arc::clone(&region);
    let t = std::thread::spawn(move || {
        let mut be = CpuBackend::new(r2.data(), 0);
        serve(
            &r2,
            &RegionTransport,
            &mut be,
            &s2,
            ServeOptions::default(),
            &Stats::default(),
        )
    });
    wait_attached(&sub);
    // Requests in flight are answered before the helper stops.
    let services = CpuServices::new();
    run_and_check(&sub, &Job::echo(vec![1; 4096]), &services);
    // The submitter's tail jumps far past the head: impossible.
    let g = *region.geometry();
    // SAFETY: the SQ indices lie at sq_off in the mapping.
    let idx = unsafe {
        &*region
            .base()
            .add(g.sq_off as usize)
            .cast::<kgpu_common::abi::RingIndices>()
    };
    idx.tail.store(
        idx.head.load(Ordering::Relaxed).wrapping_add(10_000),
        Ordering::Release,
    );
    region.header().sq_doorbell.fetch_add(1, Ordering::SeqCst);
    kgpu_helper::shm::futex_wake(&region.header().sq_doorbell);
    let r = t.join().unwrap();
    assert!(
        matches!(r, Err(kgpu_helper::serve::ServeError::CorruptRing { .. })),
        "{r:?}"
    );
    assert!(!sub.helper_attached());
    stop.store(true, Ordering::Relaxed);
}
