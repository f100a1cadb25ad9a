//! `serve --ivshmem`'s side of the ivshmem transport, against a test that
//! plays the guest's kernel on the same file: the offer in the header, the
//! attach (the header checked with the kernel's code, the rings reset), an
//! echo request through the rings with the doorbell polled, the session
//! ended by the kernel, a refusal, another live helper, and a stop while
//! offering.

use kgpu_common::abi::{helper_state, service, Cqe, Extent, Sqe, Status};
use kgpu_common::region::{reset_rings, HeaderSnapshot};
use kgpu_common::ring::must_wake;
use kgpu_helper::backend::CpuBackend;
use kgpu_helper::serve::{serve, Ended, IvshmemTransport, ServeError, ServeOptions};
use kgpu_helper::shm::SharedRegion;
use kgpu_helper::stats::Stats;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// A fresh region file path, removed on drop.
struct TmpFile(PathBuf);

impl TmpFile {
    fn new(tag: &str) -> Self {
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let p = dir.join(format!("kgpu-test-ivs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        TmpFile(p)
    }
}

impl Drop for TmpFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn state(r: &SharedRegion) -> u32 {
    r.header().helper_state.load(Ordering::Acquire)
}

fn wait_state(r: &SharedRegion, want: u32) {
    let t0 = Instant::now();
    while state(r) != want {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "state {} never became {want}",
            state(r)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The helper serving `file` in a thread, until the session or `stop` ends.
fn helper(
    file: &TmpFile,
    stop: &Arc<AtomicBool>,
) -> (Arc<SharedRegion>, JoinHandle<Result<Ended, ServeError>>) {
    let region = Arc::new(SharedRegion::for_guest(&file.0, Some(4 * MIB)).unwrap());
    let (r2, s2, path) = (Arc::clone(&region), Arc::clone(stop), file.0.clone());
    let t = std::thread::spawn(move || {
        let mut be = CpuBackend::new(r2.data(), 0);
        serve(
            &r2,
            &IvshmemTransport { path },
            &mut be,
            &s2,
            ServeOptions::default(),
            &Stats::default(),
        )
    });
    (region, t)
}

/// The helper thread's outcome, within 10 s (a broken transport fails the
/// test rather than hanging it).
fn join(t: JoinHandle<Result<Ended, ServeError>>) -> Result<Ended, ServeError> {
    let t0 = Instant::now();
    while !t.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the helper did not return"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    t.join().unwrap()
}

/// What the guest's kernel does on an offer: check the header with the
/// module's code, reset the rings, answer.
fn attach_as_kernel(r: &SharedRegion) {
    wait_state(r, helper_state::OFFERED);
    // SAFETY: the header is the start of the mapping.
    let snap = unsafe { HeaderSnapshot::read(r.base().cast()) };
    let g = snap.validate(r.len() as u64).expect("the offered header");
    assert_eq!(g, *r.geometry());
    // SAFETY: the mapping is laid out as `g`; the helper waits for ATTACHED.
    unsafe { reset_rings(r.base(), &g) };
    r.header()
        .helper_state
        .compare_exchange(
            helper_state::OFFERED,
            helper_state::ATTACHED,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .unwrap();
}

#[test]
fn guest_file_sizes() {
    let f = TmpFile::new("sizes");
    let r = SharedRegion::for_guest(&f.0, Some(8 * MIB)).unwrap();
    assert_eq!(r.len() as u64, 8 * MIB);
    assert_eq!(r.geometry().region_size, 8 * MIB);
    assert_eq!(std::fs::metadata(&f.0).unwrap().len(), 8 * MIB);
    drop(r);
    // An existing file keeps its size; asking for another one is an error
    // that says what to do.
    assert_eq!(
        SharedRegion::for_guest(&f.0, None).unwrap().len() as u64,
        8 * MIB
    );
    let e = SharedRegion::for_guest(&f.0, Some(16 * MIB)).err().unwrap();
    assert!(e.to_string().contains("not 16 MiB"), "{e}");
    let g = TmpFile::new("odd");
    let e = SharedRegion::for_guest(&g.0, Some(3 * MIB)).err().unwrap();
    assert!(e.to_string().contains("power of two"), "{e}");
    // Refused before anything is created.
    assert!(!g.0.exists());
    let e = SharedRegion::for_guest(&g.0, Some(64 << 30)).err().unwrap();
    assert!(e.to_string().contains("power of two between"), "{e}");
    assert!(!g.0.exists());
}

#[test]
fn offer_attach_serve_then_the_kernel_ends_the_session() {
    let f = TmpFile::new("session");
    let stop = Arc::new(AtomicBool::new(false));
    let (r, t) = helper(&f, &stop);
    attach_as_kernel(&r);
    assert_eq!(
        r.header().helper_pid.load(Ordering::Acquire),
        std::process::id()
    );

    // One echo request, as the kernel submits it.
    let data = r.data();
    let payload: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    let (input, output) = (Extent::new(0, 8192), Extent::new(8192, 8192));
    // SAFETY: the extents lie in the data area; the helper reads the input
    // only after the record is published.
    unsafe { data.slice_mut(input) }.copy_from_slice(&payload);
    // SAFETY: this test is the only producer of the SQ and consumer of the
    // CQ, as the kernel is.
    let (mut sq, mut cq) = unsafe { (r.sq_producer(), r.cq_consumer()) };
    let sqe = Sqe {
        slot: 5,
        gen: 1,
        service: service::ECHO,
        input,
        output,
        ..Sqe::ZERO
    };
    sq.push(sqe).unwrap();
    let h = r.header();
    if must_wake(&h.sq_flags, kgpu_common::abi::sq_flag::NEED_WAKEUP) {
        h.sq_doorbell.fetch_add(1, Ordering::Release);
    }
    let t0 = Instant::now();
    let cqe: Cqe = loop {
        if let Some(c) = cq.take().unwrap() {
            break c;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no completion");
        std::thread::sleep(Duration::from_micros(50));
    };
    cq.release();
    assert_eq!((cqe.slot, cqe.gen, cqe.status), (5, 1, Status::Ok.raw()));
    assert_eq!(cqe.bytes, 8192);
    // SAFETY: the helper finished with the output extent (completion seen).
    assert_eq!(unsafe { data.slice(output) }, &payload[..]);
    // The heartbeat moves while the helper is idle.
    let hb = h.heartbeat.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(120));
    assert!(h.heartbeat.load(Ordering::Relaxed) > hb);

    // The kernel detaches (module unloaded, stalled heartbeat...).
    h.helper_state
        .store(helper_state::DETACHED, Ordering::Release);
    assert_eq!(join(t).unwrap(), Ended::SessionOver);
}

#[test]
fn a_refused_offer_is_an_error_naming_the_file() {
    let f = TmpFile::new("refused");
    let stop = Arc::new(AtomicBool::new(false));
    let (r, t) = helper(&f, &stop);
    wait_state(&r, helper_state::OFFERED);
    r.header()
        .helper_state
        .store(helper_state::REFUSED, Ordering::Release);
    let e = join(t).unwrap_err();
    assert!(matches!(e, ServeError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains(&*f.0.to_string_lossy()), "{e}");
}

#[test]
fn another_live_helper_keeps_the_region() {
    let f = TmpFile::new("other");
    {
        let r = SharedRegion::for_guest(&f.0, Some(4 * MIB)).unwrap();
        // SAFETY: our own fresh mapping, laid out as its geometry.
        unsafe {
            kgpu_common::region::init_header(
                r.base(),
                r.geometry(),
                kgpu_common::region::KNOWN_FEATURES,
            )
        };
        // A live process (init) serves it.
        r.header().helper_pid.store(1, Ordering::Release);
        r.header()
            .helper_state
            .store(helper_state::ATTACHED, Ordering::Release);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (r, t) = helper(&f, &stop);
    assert!(matches!(join(t), Err(ServeError::AnotherHelper(1))));
    assert_eq!(state(&r), helper_state::ATTACHED);
}

#[test]
fn stopped_while_offering_withdraws_the_offer() {
    let f = TmpFile::new("stop");
    let stop = Arc::new(AtomicBool::new(false));
    let (r, t) = helper(&f, &stop);
    wait_state(&r, helper_state::OFFERED);
    stop.store(true, Ordering::Relaxed);
    assert!(matches!(join(t), Err(ServeError::Stopped)));
    assert_eq!(state(&r), helper_state::DETACHED);
}
