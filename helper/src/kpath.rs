//! `kgpu-helper bench --kernel-path`: the whole cost of the kernel's path
//! against the CPU code the caller already has, side by side.
//!
//! The GPU path does what gaes and gpq do: each submitter thread takes the
//! next request's input from caller buffers that do not fit in cache (a pool,
//! 1 GiB by default, cycled), copies it into the region, submits, and on
//! completion copies the output back into the pool. The CPU path runs the
//! same requests on the same pool with the best CPU code in the calling
//! thread (VAES/AES-NI for AES, AVX-512/AVX2 for RAID6), on one thread and on
//! every CPU. Both report CPU time per GB: for the GPU path the submitter
//! threads (copies, submission, waiting) plus the helper process; for the
//! CPU path the calling threads.

use crate::bench::{human, Mode};
use crate::dispatch::CpuServices;
use crate::shm::DataArea;
use crate::standin::{SubmitError, Submitter};
use crate::workload::{Job, Rng, Staged};
use kgpu_common::abi::{backend, Extent, Sqe, Status};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Clone, Debug)]
pub struct KernelPathPlan {
    /// Modes.
    pub modes: Vec<Mode>,
    /// Request sizes, bytes.
    pub sizes: Vec<usize>,
    /// Requests in flight in all (spread over the submitters).
    pub depths: Vec<usize>,
    /// Submitter thread counts.
    pub submitters: Vec<usize>,
    /// Threads of the "whole CPU" run of the CPU path (0: every CPU).
    pub cpu_threads: usize,
    /// Caller buffer pool, bytes.
    pub pool_bytes: usize,
    /// Time per measurement.
    pub duration: Duration,
}

/// One row: one mode, size, depth and submitter count, both paths.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct KernelPathRow {
    /// Mode name.
    pub mode: String,
    /// Payload bytes per request.
    pub size: u64,
    /// Requests in flight in all.
    pub depth: usize,
    /// Submitter threads.
    pub submitters: usize,
    /// Requests completed on the GPU path.
    pub requests: u64,
    /// Share of them the helper ran on a GPU (the rest on its CPU backend).
    pub on_gpu: f64,
    /// Payload GB/s through the kernel path (copies included).
    pub gpu_path_gbps: f64,
    /// Median latency, copy in to copy out, µs.
    pub p50_us: f64,
    /// CPU time of the submitter threads per wall second (cores).
    pub submitter_cores: f64,
    /// CPU time of the helper process per wall second, when measurable.
    pub helper_cores: Option<f64>,
    /// CPU seconds per GB on the GPU path: submitters plus helper.
    pub gpu_path_cpu_s_per_gb: f64,
    /// CPU path, one thread, payload GB/s.
    pub cpu1_gbps: f64,
    /// CPU path on `cpu_threads` threads, payload GB/s.
    pub cpun_gbps: f64,
    /// Threads of that run.
    pub cpu_threads: usize,
    /// CPU seconds per GB on the CPU path (its one-thread run).
    pub cpu_path_cpu_s_per_gb: f64,
    /// gpu_path_cpu_s_per_gb / cpu_path_cpu_s_per_gb: above 1 the GPU path
    /// costs more CPU time than doing the work on the CPU.
    pub cost_ratio: f64,
    /// The AES code path of the CPU side (vaes, aesni, portable).
    pub aes_path: String,
}

/// User + system CPU time of this process (every thread).
pub fn process_cpu() -> Duration {
    // SAFETY: `getrusage` only writes the struct we pass, which is plain data
    // and may start zeroed.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Where one request's bytes lie in a thread's share of the pool.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Key and aux, once at the start of the share.
    key: Extent,
    aux: Extent,
    /// Bytes from one request's input to the next.
    span: u64,
    /// Requests that fit the share.
    slots: u64,
    /// First slot's offset.
    first: u64,
    in_len: u64,
    out_len: u64,
    in_place: bool,
}

const fn round64(n: u64) -> u64 {
    n.div_ceil(64) * 64
}

impl Layout {
    fn new(job: &Job, share: u64) -> Option<Layout> {
        let key = Extent::new(0, job.key.len() as u64);
        let aux = Extent::new(round64(key.len), job.aux.len() as u64);
        let first = (aux.off + round64(aux.len)).div_ceil(4096) * 4096;
        let in_len = job.input.len() as u64;
        let out_len = job.out_len as u64;
        let span = if job.in_place {
            round64(in_len)
        } else {
            round64(in_len) + round64(out_len)
        };
        let slots = share.checked_sub(first)? / span.max(1);
        (slots > 0).then_some(Layout {
            key,
            aux,
            span,
            slots,
            first,
            in_len,
            out_len,
            in_place: job.in_place,
        })
    }

    fn input(&self, i: u64) -> Extent {
        Extent::new(self.first + (i % self.slots) * self.span, self.in_len)
    }

    fn output(&self, i: u64) -> Extent {
        let inp = self.input(i);
        if self.in_place {
            inp
        } else {
            Extent::new(inp.off + round64(self.in_len), self.out_len)
        }
    }

    fn range(e: Extent) -> std::ops::Range<usize> {
        e.off as usize..(e.off + e.len) as usize
    }
}

/// What one thread did.
#[derive(Default)]
struct ThreadOut {
    bytes: u64,
    requests: u64,
    on_gpu: u64,
    lat_ns: Vec<u64>,
}

/// A timed parallel run: `setup` per thread (not timed), then `work` until
/// the stop flag; wall and CPU time cover the work only.
struct Timed {
    wall: Duration,
    cpu: Duration,
    helper: Option<Duration>,
    out: ThreadOut,
}

fn timed<S, F, W>(
    shares: Vec<&mut [u8]>,
    duration: Duration,
    helper_cpu: &dyn Fn() -> Option<Duration>,
    setup: F,
    work: W,
) -> Result<Timed, String>
where
    S: Send,
    F: Fn(&mut [u8]) -> Result<S, String> + Sync,
    W: Fn(S, &mut [u8], &AtomicBool) -> Result<ThreadOut, String> + Sync,
{
    let barrier = Barrier::new(shares.len() + 1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|sc| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                let (barrier, stop, setup, work) = (&barrier, &stop, &setup, &work);
                sc.spawn(move || {
                    let st = setup(share);
                    barrier.wait();
                    work(st?, share, stop)
                })
            })
            .collect();
        barrier.wait();
        let (t0, c0, h0) = (Instant::now(), process_cpu(), helper_cpu());
        std::thread::sleep(duration);
        stop.store(true, Ordering::Relaxed);
        let mut out = ThreadOut::default();
        let mut err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(o)) => {
                    out.bytes += o.bytes;
                    out.requests += o.requests;
                    out.on_gpu += o.on_gpu;
                    out.lat_ns.extend(o.lat_ns);
                }
                Ok(Err(e)) => err = Some(e),
                Err(_) => err = Some("a bench thread panicked".to_string()),
            }
        }
        let (wall, c1, h1) = (t0.elapsed(), process_cpu(), helper_cpu());
        if let Some(e) = err {
            return Err(e);
        }
        Ok(Timed {
            wall,
            cpu: c1.saturating_sub(c0),
            helper: h0.zip(h1).map(|(a, b)| b.saturating_sub(a)),
            out,
        })
    })
}

/// Bytes of each of `n` threads' shares of a pool of `len` bytes.
fn share_len(len: usize, n: usize) -> usize {
    ((len / n.max(1)) / 4096 * 4096).max(4096)
}

fn split(pool: &mut [u8], n: usize) -> Vec<&mut [u8]> {
    let each = share_len(pool.len(), n);
    pool.chunks_exact_mut(each).take(n).collect()
}

/// The CPU path: `threads` callers run the job over their share of the pool
/// with the best CPU code. Returns (GB/s, CPU s per GB).
fn cpu_path(
    job: &Job,
    pool: &mut [u8],
    threads: usize,
    duration: Duration,
) -> Result<(f64, f64), String> {
    let lay = Layout::new(job, share_len(pool.len(), threads) as u64)
        .ok_or("pool too small for the request size")?;
    let setup = |share: &mut [u8]| -> Result<CpuServices, String> {
        share[Layout::range(lay.key)].copy_from_slice(&job.key);
        share[Layout::range(lay.aux)].copy_from_slice(&job.aux);
        Ok(CpuServices::new())
    };
    let work = |services: CpuServices, share: &mut [u8], stop: &AtomicBool| {
        // SAFETY: the window is this thread's own share of the pool, which it
        // borrows exclusively and which outlives the window.
        let area = unsafe { DataArea::from_raw(share.as_mut_ptr(), share.len() as u64) };
        let mut out = ThreadOut::default();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let sqe = Sqe {
                service: job.service,
                op: job.op,
                key_tag: job.key_tag,
                key: lay.key,
                input: lay.input(i),
                output: lay.output(i),
                aux: lay.aux,
                unit: job.unit,
                count: job.count,
                params: job.params,
                ..Sqe::ZERO
            };
            services
                .execute(&sqe, &area)
                .map_err(|s| format!("cpu path: {}", s.as_str()))?;
            out.bytes += lay.in_len;
            out.requests += 1;
            i += 1;
        }
        Ok(out)
    };
    let none = || None;
    let t = timed(split(pool, threads), duration, &none, setup, work)?;
    let gb = t.out.bytes as f64 / 1e9;
    Ok((gb / t.wall.as_secs_f64(), t.cpu.as_secs_f64() / gb))
}

/// Requests of `job` that fit half the data area (as `bench` keeps them).
fn in_flight_room(sub: &Submitter, job: &Job) -> u64 {
    let budget = sub.region().geometry().data_size / 2;
    let per = (job.key.len() + job.input.len() + job.aux.len()) as u64
        + if job.in_place { 0 } else { job.out_len as u64 }
        + 4 * 4096;
    (budget / per).max(1)
}

/// The GPU path: `submitters` threads, `depth` requests in flight in all,
/// copying in from and out to their share of the pool.
#[allow(clippy::too_many_arguments)]
fn gpu_path(
    sub: &Submitter,
    job: &Job,
    pool: &mut [u8],
    submitters: usize,
    depth: usize,
    duration: Duration,
    helper_cpu: &dyn Fn() -> Option<Duration>,
) -> Result<Timed, String> {
    let lay = Layout::new(job, share_len(pool.len(), submitters) as u64)
        .ok_or("pool too small for the request size")?;
    let per = depth.div_ceil(submitters).max(1);
    let room = in_flight_room(sub, job);
    if submitters as u64 > room {
        return Err(format!(
            "{submitters} submitters need more than half the data area for {} byte requests",
            job.payload()
        ));
    }
    let per = per.min((room / submitters as u64) as usize);
    let setup = |_: &mut [u8]| -> Result<Vec<Staged>, String> {
        (0..per)
            .map(|_| {
                job.stage(sub)
                    .ok_or_else(|| "no room in the data area".to_string())
            })
            .collect()
    };
    let work = |staged: Vec<Staged>, share: &mut [u8], stop: &AtomicBool| {
        let mut out = ThreadOut::default();
        let mut next = 0u64;
        let mut inflight = VecDeque::new();
        let result = (|| -> Result<(), String> {
            let submit = |k: usize, slot: u64, share: &[u8]| -> Result<_, String> {
                let st = &staged[k];
                let at = Instant::now();
                sub.write(st.request.input, &share[Layout::range(lay.input(slot))]);
                loop {
                    match sub.submit(&st.request) {
                        Ok(t) => return Ok((k, slot, t, at)),
                        Err(SubmitError::Busy) => std::thread::yield_now(),
                        Err(e) => return Err(format!("submit: {e}")),
                    }
                }
            };
            for k in 0..staged.len() {
                inflight.push_back(submit(k, next, share)?);
                next += 1;
            }
            while let Some((k, slot, t, at)) = inflight.pop_front() {
                let c = sub
                    .wait(t, Duration::from_secs(60))
                    .map_err(|e| e.to_string())?;
                if c.status != Status::Ok {
                    return Err(format!("status {}", c.status.as_str()));
                }
                let dst = &mut share[Layout::range(lay.output(slot))];
                sub.read(staged[k].request.output, &mut dst[..c.bytes as usize]);
                out.lat_ns.push(at.elapsed().as_nanos() as u64);
                out.bytes += lay.in_len;
                out.requests += 1;
                out.on_gpu += u64::from(c.backend == backend::GPU);
                if !stop.load(Ordering::Relaxed) {
                    inflight.push_back(submit(k, next, share)?);
                    next += 1;
                }
            }
            Ok(())
        })();
        for s in staged {
            s.free(sub);
        }
        result.map(|()| out)
    };
    timed(split(pool, submitters), duration, helper_cpu, setup, work)
}

/// Fills the pool with random bytes (page faults taken here, not timed).
fn fill_pool(pool: &mut [u8]) {
    std::thread::scope(|sc| {
        for (i, part) in split(pool, 8).into_iter().enumerate() {
            sc.spawn(move || Rng::new(0x706f_6f6c + i as u64).fill(part));
        }
    });
}

/// One thread copying 64 KiB chunks from one half of the pool to the other,
/// out of cache: GB/s copied.
pub fn copy_gbps(pool: &mut [u8], duration: Duration) -> f64 {
    const CHUNK: usize = 64 << 10;
    let half = pool.len() / 2 / CHUNK * CHUNK;
    let (a, b) = pool.split_at_mut(half);
    let n = half / CHUNK;
    let t0 = Instant::now();
    let mut copied = 0u64;
    let mut i = 0;
    while t0.elapsed() < duration {
        for _ in 0..16 {
            let (s, d) = (i % n * CHUNK, (i * 7 + 3) % n * CHUNK);
            b[d..d + CHUNK].copy_from_slice(&a[s..s + CHUNK]);
            i += 1;
        }
        copied += 16 * CHUNK as u64;
    }
    std::hint::black_box(&b[..64]);
    copied as f64 / t0.elapsed().as_secs_f64() / 1e9
}

/// Every CPU of this machine.
pub fn all_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs the plan: for each mode and size the CPU path (1 and N threads),
/// then the GPU path for each depth and submitter count.
pub fn run(
    sub: &Submitter,
    plan: &KernelPathPlan,
    helper_cpu: &dyn Fn() -> Option<Duration>,
    progress: &mut dyn FnMut(&str),
) -> Result<(Vec<KernelPathRow>, f64), String> {
    let mut pool = vec![0u8; plan.pool_bytes];
    fill_pool(&mut pool);
    let copy = copy_gbps(&mut pool, plan.duration);
    progress(&format!("one-thread copy out of cache: {copy:.2} GB/s"));
    let threads = if plan.cpu_threads == 0 {
        all_cpus()
    } else {
        plan.cpu_threads
    };
    let mut rng = Rng::new(0x6b70_6174);
    let mut rows = Vec::new();
    for &mode in &plan.modes {
        for &size in &plan.sizes {
            let job = mode.job(size, &mut rng);
            progress(&format!("{} {}: cpu path", mode.name(), human(size as u64)));
            let (cpu1, cpu_s_gb) = cpu_path(&job, &mut pool, 1, plan.duration)?;
            let (cpun, _) = cpu_path(&job, &mut pool, threads, plan.duration)?;
            for &depth in &plan.depths {
                for &subs in &plan.submitters {
                    progress(&format!(
                        "{} {}: gpu path, depth {depth}, {subs} submitter(s)",
                        mode.name(),
                        human(size as u64)
                    ));
                    let room = in_flight_room(sub, &job) as usize;
                    let depth = depth.min(room / subs * subs).max(subs);
                    let t = gpu_path(sub, &job, &mut pool, subs, depth, plan.duration, helper_cpu)?;
                    let wall = t.wall.as_secs_f64();
                    let gb = t.out.bytes as f64 / 1e9;
                    let mut lat = t.out.lat_ns;
                    lat.sort_unstable();
                    let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0) as f64 / 1e3;
                    let helper = t.helper.map(|h| h.as_secs_f64());
                    let gpu_s_gb = (t.cpu.as_secs_f64() + helper.unwrap_or(0.0)) / gb;
                    rows.push(KernelPathRow {
                        mode: mode.name().to_string(),
                        size: job.payload(),
                        depth,
                        submitters: subs,
                        requests: t.out.requests,
                        on_gpu: t.out.on_gpu as f64 / t.out.requests.max(1) as f64,
                        gpu_path_gbps: gb / wall,
                        p50_us: p50,
                        submitter_cores: t.cpu.as_secs_f64() / wall,
                        helper_cores: helper.map(|h| h / wall),
                        gpu_path_cpu_s_per_gb: gpu_s_gb,
                        cpu1_gbps: cpu1,
                        cpun_gbps: cpun,
                        cpu_threads: threads,
                        cpu_path_cpu_s_per_gb: cpu_s_gb,
                        cost_ratio: gpu_s_gb / cpu_s_gb,
                        aes_path: kgpu_aes::cpu::Path::best().name().to_string(),
                    });
                }
            }
        }
    }
    Ok((rows, copy))
}

/// Bytes a request of each mode copies in and out, for [`model_lines`].
pub fn copy_shapes(modes: &[Mode], size: usize) -> Vec<(String, u64, u64)> {
    let mut rng = Rng::new(1);
    modes
        .iter()
        .map(|m| {
            let j = m.job(size, &mut rng);
            (m.name().to_string(), j.input.len() as u64, j.out_len as u64)
        })
        .collect()
}

/// The table as text.
pub fn table(rows: &[KernelPathRow], backend: &str, copy_gbps: f64) -> String {
    let mut s = format!(
        "{:<14} {:>5} {:>5} {:>4} {:>8} {:>6} {:>8} {:>5} {:>6} {:>7} | {:>7} {:>8} {:>7} | {:>6}\n",
        "mode", "size", "depth", "subs", "gpu GB/s", "on gpu", "p50 us", "subm", "helper",
        "cpu s/GB", "cpu1", "cpuN", "s/GB", "ratio"
    );
    for r in rows {
        let h = r
            .helper_cores
            .map_or("-".to_string(), |h| format!("{h:.2}"));
        s.push_str(&format!(
            "{:<14} {:>5} {:>5} {:>4} {:>8.2} {:>5.0}% {:>8.1} {:>5.2} {:>6} {:>7.3} | {:>7.2} {:>8.2} {:>7.3} | {:>6.2}\n",
            r.mode,
            human(r.size),
            r.depth,
            r.submitters,
            r.gpu_path_gbps,
            r.on_gpu * 100.0,
            r.p50_us,
            r.submitter_cores,
            h,
            r.gpu_path_cpu_s_per_gb,
            r.cpu1_gbps,
            r.cpun_gbps,
            r.cpu_path_cpu_s_per_gb,
            r.cost_ratio,
        ));
    }
    let (threads, path) = rows
        .first()
        .map_or((0, ""), |r| (r.cpu_threads, r.aes_path.as_str()));
    s.push_str(&format!(
        "gpu = the kernel path ({backend} backend): copy in from a caller pool out of cache, ring, copy out; \
subm/helper = cores busy in the submitter threads / the helper; cpu s/GB = CPU seconds per GB of both; \
cpu1/cpuN = the same work in the caller with the best CPU code (AES: {path}) on 1 / {threads} threads, GB/s, s/GB its CPU seconds per GB; \
ratio = gpu path CPU time per GB / cpu path's (above 1: the GPU path costs more CPU); one-thread copy {copy_gbps:.2} GB/s\n"
    ));
    s
}

/// What the cost model (`kgpu_common::cost`) decides per mode and size from
/// this run's own figures: the CPU path's one-thread rate at the largest size,
/// the copy rate, the bytes each request copies, and of the rows that ran on
/// a GPU the best rate (copies included, so it flatters the CPU path's rival
/// less), the smallest request's median latency and the smallest size sent
/// there (the helper's crossover). Modes with no row on a GPU have no model.
pub fn model_lines(rows: &[KernelPathRow], copy_gbps: f64, jobs: &[(String, u64, u64)]) -> String {
    use kgpu_common::cost::{decide, Inputs};
    let mut s = String::new();
    let mut modes: Vec<&str> = rows.iter().map(|r| r.mode.as_str()).collect();
    modes.dedup();
    for m in modes {
        let mine: Vec<&KernelPathRow> = rows.iter().filter(|r| r.mode == m).collect();
        let gpu: Vec<&&KernelPathRow> = mine.iter().filter(|r| r.on_gpu >= 0.5).collect();
        let Some(big) = mine.iter().max_by_key(|r| r.size) else {
            continue;
        };
        let Some(first) = gpu.iter().min_by_key(|r| (r.size, r.depth, r.submitters)) else {
            s.push_str(&format!("model {m}: no request ran on a GPU in this run\n"));
            continue;
        };
        let (copy_num, copy_den) = jobs
            .iter()
            .find(|j| j.0 == m)
            .map_or((2, 1), |j| (((j.1 + j.2) * 1024 / j.1.max(1)) as u32, 1024));
        let inputs = Inputs {
            cpu_mbps: (big.cpu1_gbps * 1000.0) as u64,
            copy_mbps: (copy_gbps * 1000.0) as u64,
            copy_num,
            copy_den,
            gpu_mbps: (gpu.iter().map(|r| r.gpu_path_gbps).fold(0.0, f64::max) * 1000.0) as u64,
            gpu_rtt_ns: (first.p50_us * 1000.0) as u64,
            crossover: first.size,
        };
        s.push_str(&format!(
            "model {m}: cpu {} MB/s/core, copy {} MB/s, gpu {} MB/s, rtt {} us, crossover {}:",
            inputs.cpu_mbps,
            inputs.copy_mbps,
            inputs.gpu_mbps,
            inputs.gpu_rtt_ns / 1000,
            human(inputs.crossover)
        ));
        let mut sizes: Vec<u64> = mine.iter().map(|r| r.size).collect();
        sizes.dedup();
        for size in sizes {
            let d = decide(&inputs, size);
            s.push_str(&format!(
                " {} {} ({}, x{:.2})",
                human(size),
                if d.gpu { "gpu" } else { "cpu" },
                d.reason.as_str(),
                d.cost_ratio_milli() as f64 / 1000.0
            ));
        }
        s.push('\n');
    }
    s
}

/// One row of [`cpu_paths`].
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct PathRow {
    /// "xts-enc", "ctr", ...
    pub mode: String,
    /// Key bits (XTS: of each half).
    pub bits: u32,
    /// The code path.
    pub path: String,
    /// Bytes per call (XTS and CBC: in 4 KiB units).
    pub size: usize,
    /// One thread, data in cache, GB/s.
    pub gbps: f64,
}

/// One AES call over a buffer, in place.
type AesOp<'a> = dyn FnMut(&mut [u8]) -> Result<(), kgpu_aes::AesError> + 'a;

/// Every AES mode on every code path this CPU has, one thread, in cache
/// (what `openssl speed` measures).
pub fn cpu_paths(sizes: &[usize], duration: Duration) -> Result<Vec<PathRow>, String> {
    use kgpu_aes::cpu::{AesKey, Path, XtsKey};
    let mut rng = Rng::new(0x7061_7468);
    let mut rows = Vec::new();
    let modes = ["xts-enc", "xts-dec", "ctr", "ecb-enc", "cbc-enc", "cbc-dec"];
    for bits in [128u32, 256] {
        for mode in modes {
            for &size in sizes {
                for path in Path::ALL.into_iter().filter(|p| p.available()) {
                    let kl = bits as usize / 8;
                    let key = rng.bytes(if mode.starts_with("xts") { 2 * kl } else { kl });
                    let iv = [7u8; 16];
                    let mut buf = rng.bytes(size.max(16) / 16 * 16);
                    let bad = |e: kgpu_aes::AesError| e.to_string();
                    let xk = XtsKey::with_path(&key, path);
                    let k = AesKey::with_path(&key[..kl], path).map_err(bad)?;
                    // XTS and CBC over 4 KiB units (sectors), as dm-crypt sends them.
                    let unit = buf.len().min(4096);
                    let mut op: Box<AesOp> = match mode {
                        "xts-enc" | "xts-dec" => {
                            let xk = xk.clone().map_err(bad)?;
                            let dec = mode == "xts-dec";
                            Box::new(move |d: &mut [u8]| {
                                d.chunks_mut(unit).try_for_each(|u| xk.unit(&iv, u, dec))
                            })
                        }
                        "ctr" => Box::new(|d: &mut [u8]| {
                            k.ctr_apply(&iv, d);
                            Ok(())
                        }),
                        "ecb-enc" => Box::new(|d: &mut [u8]| k.ecb_encrypt(d)),
                        "cbc-enc" => {
                            Box::new(|d: &mut [u8]| k.cbc_encrypt_units(unit, d, |_| Some(iv)))
                        }
                        _ => Box::new(|d: &mut [u8]| {
                            d.chunks_mut(unit).try_for_each(|u| k.cbc_decrypt(&iv, u))
                        }),
                    };
                    op(&mut buf).map_err(bad)?;
                    let t0 = Instant::now();
                    let mut n = 0u64;
                    while t0.elapsed() < duration {
                        for _ in 0..16 {
                            op(&mut buf).map_err(bad)?;
                        }
                        n += 16;
                    }
                    rows.push(PathRow {
                        mode: mode.to_string(),
                        bits,
                        path: path.name().to_string(),
                        size: buf.len(),
                        gbps: (buf.len() as u64 * n) as f64 / t0.elapsed().as_secs_f64() / 1e9,
                    });
                }
            }
        }
    }
    Ok(rows)
}

/// The [`cpu_paths`] table as text.
pub fn paths_table(rows: &[PathRow]) -> String {
    let mut s = format!(
        "{:<8} {:>4} {:>8} {:>6} {:>8}\n",
        "mode", "bits", "path", "size", "GB/s"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<8} {:>4} {:>8} {:>6} {:>8.2}\n",
            r.mode,
            r.bits,
            r.path,
            human(r.size as u64),
            r.gbps
        ));
    }
    s.push_str("one thread, the same buffer over and over (in cache, like openssl speed); XTS and CBC in 4 KiB units\n");
    s
}

/// The processor's model name, from /proc/cpuinfo.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, size: u64, on_gpu: f64, gbps: f64, p50: f64, cpu1: f64) -> KernelPathRow {
        KernelPathRow {
            mode: mode.to_string(),
            size,
            depth: 16,
            submitters: 1,
            requests: 100,
            on_gpu,
            gpu_path_gbps: gbps,
            p50_us: p50,
            submitter_cores: 1.0,
            helper_cores: Some(1.0),
            gpu_path_cpu_s_per_gb: 0.4,
            cpu1_gbps: cpu1,
            cpun_gbps: cpu1 * 16.0,
            cpu_threads: 16,
            cpu_path_cpu_s_per_gb: 1.0 / cpu1,
            cost_ratio: 0.4 * cpu1,
            aes_path: "vaes".to_string(),
        }
    }

    #[test]
    fn layouts_stay_inside_their_share_and_apart() {
        let mut rng = Rng::new(3);
        for mode in [Mode::AesXts, Mode::Raid6Gen, Mode::Echo] {
            for size in [4096, 65536, 1 << 20] {
                let job = mode.job(size, &mut rng);
                for (pool, n) in [(16usize << 20, 3usize), (1 << 30, 16), (5 << 20, 7)] {
                    let share = share_len(pool, n) as u64;
                    assert!(share * n as u64 <= pool as u64);
                    let Some(l) = Layout::new(&job, share) else {
                        assert!(share < 2 * size as u64 + 4096);
                        continue;
                    };
                    assert!(l.key.off + l.key.len <= l.aux.off && l.aux.off + l.aux.len <= l.first);
                    for i in 0..l.slots + 2 {
                        let (a, b) = (l.input(i), l.output(i));
                        assert!(b.off + b.len <= share, "{mode:?} {size} slot {i}");
                        assert!(a.off >= l.first);
                        if !l.in_place {
                            assert!(a.off + a.len <= b.off, "output after input");
                        }
                        let next = l.input(i + 1);
                        assert!(next.off >= b.off + b.len || next.off == l.first);
                    }
                }
            }
        }
    }

    #[test]
    fn model_lines_follow_the_rows() {
        let shapes = copy_shapes(&[Mode::AesXts, Mode::Raid6Gen], 1 << 20);
        assert_eq!(shapes[0].1, shapes[0].2, "AES copies its input back out");
        assert!(
            shapes[1].2 * 7 == shapes[1].1,
            "RAID6 16 disks: 2 of 14 back"
        );
        // A fast CPU: every size stays on the CPU, the big ones because the
        // copies cost more.
        let fast = [
            row("aes128-xts", 4096, 0.0, 0.5, 20.0, 12.0),
            row("aes128-xts", 1 << 20, 1.0, 30.0, 100.0, 12.0),
            row("aes128-xts", 16 << 20, 1.0, 40.0, 500.0, 12.0),
        ];
        let text = model_lines(&fast, 6.0, &shapes);
        assert!(text.starts_with("model aes128-xts: cpu 12000 MB/s/core, copy 6000 MB/s, gpu 40000 MB/s, rtt 100 us, crossover 1M:"), "{text}");
        assert!(text.contains(" 4K cpu (below crossover"), "{text}");
        assert!(text.contains(" 16M cpu (costs more cpu"), "{text}");
        // A slow CPU (0.2 GB/s): from the crossover up, the GPU.
        let slow: Vec<KernelPathRow> = fast
            .iter()
            .map(|r| KernelPathRow {
                cpu1_gbps: 0.2,
                ..r.clone()
            })
            .collect();
        let text = model_lines(&slow, 6.0, &shapes);
        assert!(
            text.contains(" 1M gpu (gpu") && text.contains(" 16M gpu (gpu"),
            "{text}"
        );
        // No row on a GPU: no model.
        let cpu_only = [row("raid6-gen16", 65408, 0.0, 3.0, 300.0, 12.0)];
        assert_eq!(
            model_lines(&cpu_only, 6.0, &shapes),
            "model raid6-gen16: no request ran on a GPU in this run\n"
        );
    }
}
