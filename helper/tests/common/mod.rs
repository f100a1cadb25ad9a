//! Pieces shared by the helper's integration tests.
#![allow(dead_code)]

use kgpu_common::abi::{backend, Status};
use kgpu_helper::backend::Backend;
use kgpu_helper::dispatch::CpuServices;
use kgpu_helper::serve::{serve, RegionTransport, ServeOptions};
use kgpu_helper::shm::DataArea;
use kgpu_helper::standin::{SubmitError, Submitter};
use kgpu_helper::stats::Stats;
use kgpu_helper::workload::Job;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A helper serve loop on a thread of this process, stopped on drop.
pub struct InProcessHelper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcessHelper {
    /// Starts serving `sub`'s region with the backend `make` builds (on the
    /// serving thread), and waits up to `attach` for it to attach.
    pub fn start<B, F>(sub: &Submitter, make: F, attach: Duration) -> Self
    where
        B: Backend,
        F: FnOnce(DataArea) -> B + Send + 'static,
    {
        let region = Arc::clone(sub.region());
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut be = make(region.data());
            serve(
                &region,
                &RegionTransport,
                &mut be,
                &s2,
                ServeOptions::default(),
                &Stats::default(),
            )
            .unwrap();
        });
        let t0 = Instant::now();
        while !sub.helper_attached() {
            assert!(t0.elapsed() < attach, "helper never attached");
            std::thread::sleep(Duration::from_millis(1));
        }
        InProcessHelper {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for InProcessHelper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// Stages `job` (output poisoned first when it is not in place and has no
/// initial content), submits it (retrying while busy), waits, and checks the
/// answer against the direct CPU call. Returns the status and the backend.
pub fn run_and_check(sub: &Submitter, job: &Job, services: &CpuServices) -> (Status, u32) {
    let want = job.direct(services);
    let staged = loop {
        if let Some(s) = job.stage(sub) {
            break s;
        }
        std::thread::yield_now();
    };
    if !job.in_place && job.output_init.is_empty() {
        sub.write(
            staged.request.output,
            &vec![0x5a; staged.request.output.len as usize],
        );
    }
    let t = loop {
        match sub.submit(&staged.request) {
            Ok(t) => break t,
            Err(SubmitError::Busy) => std::thread::yield_now(),
            Err(e) => panic!("submit: {e}"),
        }
    };
    let c = sub.wait(t, Duration::from_secs(60)).expect("completion");
    match want {
        Ok(bytes) => {
            assert_eq!(c.status, Status::Ok, "{}", job.name());
            assert_eq!(
                staged.output(sub, c.bytes),
                bytes,
                "{} {} bytes: output differs",
                job.name(),
                job.input.len()
            );
        }
        Err(s) => assert_eq!(c.status, s, "{}", job.name()),
    }
    staged.free(sub);
    (c.status, c.backend)
}

/// Whether a completion ran on a GPU and succeeded.
pub fn on_gpu(r: (Status, u32)) -> bool {
    r.0 == Status::Ok && r.1 == backend::GPU
}
