//! `kgpu-helper bench`: throughput and latency through the ring, per service
//! and mode, request size and queue depth, with the helper's CPU use; and with
//! `--compare` the same work called directly on the CPU, side by side.

use crate::dispatch::CpuServices;
use crate::standin::{SubmitError, Submitter};
use crate::workload::{DirectBuf, Job, Rng};
use kgpu_aes::proto::{self as aesp, AesParams};
use kgpu_common::abi::Status;
use kgpu_raid6::proto::{self as r6p, Raid6Params};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A benchmark case: a name and a way to build its job for a request size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// ECHO: the ring and the copies alone.
    Echo,
    /// AES-128-ECB encrypt.
    AesEcb,
    /// AES-128-CTR.
    AesCtr,
    /// AES-128-XTS encrypt, 4 KiB sectors.
    AesXts,
    /// AES-128-CBC decrypt, 4 KiB sectors.
    AesCbcDec,
    /// AES-128-CBC encrypt, 4 KiB sectors.
    AesCbcEnc,
    /// RAID6 gen_syndrome over 16 disks.
    Raid6Gen,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 7] = [
        Mode::Echo,
        Mode::AesEcb,
        Mode::AesCtr,
        Mode::AesXts,
        Mode::AesCbcDec,
        Mode::AesCbcEnc,
        Mode::Raid6Gen,
    ];

    /// Its name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::AesEcb => "aes128-ecb",
            Mode::AesCtr => "aes128-ctr",
            Mode::AesXts => "aes128-xts",
            Mode::AesCbcDec => "aes128-cbc-dec",
            Mode::AesCbcEnc => "aes128-cbc-enc",
            Mode::Raid6Gen => "raid6-gen16",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Whether a request of `size` payload bytes is one the service takes
    /// (the rules of its `proto` for the job [`Mode::job`] builds), and if
    /// not, what sizes are.
    pub fn check_size(self, size: usize) -> Result<(), &'static str> {
        // XTS and CBC cut requests into 4 KiB sectors (one shorter sector
        // when the request is shorter).
        let sectors = size <= 4096 || size.is_multiple_of(4096);
        let ok = match self {
            Mode::Echo | Mode::AesCtr | Mode::Raid6Gen => size > 0,
            Mode::AesEcb => size > 0 && size.is_multiple_of(16),
            Mode::AesXts => size >= 16 && sectors,
            Mode::AesCbcDec | Mode::AesCbcEnc => size > 0 && size.is_multiple_of(16) && sectors,
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Mode::AesEcb => "a whole number of 16-byte blocks",
            Mode::AesXts => "16 bytes to 4 KiB, or whole 4 KiB sectors",
            Mode::AesCbcDec | Mode::AesCbcEnc => {
                "whole 16-byte blocks up to 4 KiB, or whole 4 KiB sectors"
            }
            _ => "at least one byte",
        })
    }

    /// The job for a request of `size` payload bytes.
    pub fn job(self, size: usize, rng: &mut Rng) -> Job {
        let sectors = |unit: usize, rng: &mut Rng| {
            let unit = unit.min(size) as u32;
            let p = AesParams {
                iv_mode: aesp::IV_PLAIN64,
                iv: [0; 16],
                start_sector: rng.next_u64() >> 16,
            };
            (unit, p)
        };
        match self {
            Mode::Echo => Job::echo(rng.bytes(size)),
            Mode::AesEcb => Job::aes(
                aesp::op::ECB_ENC,
                rng.bytes(16),
                1,
                rng.bytes(size),
                0,
                AesParams::none(),
                Vec::new(),
            ),
            Mode::AesCtr => {
                let mut iv = [0u8; 16];
                rng.fill(&mut iv);
                Job::aes(
                    aesp::op::CTR,
                    rng.bytes(16),
                    2,
                    rng.bytes(size),
                    0,
                    AesParams::single(iv),
                    Vec::new(),
                )
            }
            Mode::AesXts => {
                let (unit, p) = sectors(4096, rng);
                Job::aes(
                    aesp::op::XTS_ENC,
                    rng.bytes(32),
                    3,
                    rng.bytes(size),
                    unit,
                    p,
                    Vec::new(),
                )
            }
            Mode::AesCbcDec => {
                let (unit, p) = sectors(4096, rng);
                Job::aes(
                    aesp::op::CBC_DEC,
                    rng.bytes(16),
                    4,
                    rng.bytes(size),
                    unit,
                    p,
                    Vec::new(),
                )
            }
            Mode::AesCbcEnc => {
                let (unit, p) = sectors(4096, rng);
                Job::aes(
                    aesp::op::CBC_ENC,
                    rng.bytes(16),
                    5,
                    rng.bytes(size),
                    unit,
                    p,
                    Vec::new(),
                )
            }
            Mode::Raid6Gen => {
                let disks = 16u32;
                let unit = ((size / (disks as usize - 2)) / 64).max(1) * 64;
                let data = rng.bytes(unit * (disks as usize - 2));
                Job::raid6(
                    r6p::op::GEN_SYNDROME,
                    disks,
                    unit as u32,
                    Raid6Params::NONE,
                    data,
                    Vec::new(),
                )
            }
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Row {
    /// Mode name.
    pub mode: String,
    /// Payload bytes per request.
    pub size: u64,
    /// Requests kept in flight.
    pub depth: usize,
    /// Requests completed.
    pub requests: u64,
    /// Payload GB/s through the ring.
    pub ring_gbps: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Helper CPU time per second of wall time (cores), when measurable.
    pub helper_cores: Option<f64>,
    /// Payload GB/s of the same work called directly on the CPU (one thread).
    pub direct_gbps: Option<f64>,
    /// ring / direct.
    pub ratio: Option<f64>,
    /// Completions that ran on a GPU.
    pub on_gpu: u64,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Modes.
    pub modes: Vec<Mode>,
    /// Request sizes in bytes.
    pub sizes: Vec<usize>,
    /// Queue depths.
    pub depths: Vec<usize>,
    /// Time per measurement.
    pub duration: Duration,
    /// Also time the direct CPU call.
    pub compare: bool,
}

/// Measures how long the same job takes called directly (one thread).
pub fn direct_gbps(job: &Job, services: &CpuServices, duration: Duration) -> Result<f64, Status> {
    let mut buf = DirectBuf::new(job);
    buf.run(job, services)?;
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < duration || n < 3 {
        buf.rerun(services)?;
        n += 1;
    }
    Ok(job.payload() as f64 * n as f64 / t0.elapsed().as_secs_f64() / 1e9)
}

/// Runs one measurement through the ring: keeps `depth` requests in flight
/// for `duration`, resubmitting each as it completes.
pub fn ring_row(
    sub: &Submitter,
    job: &Job,
    depth: usize,
    duration: Duration,
    helper_cpu: &dyn Fn() -> Option<Duration>,
) -> Result<Row, String> {
    // Keep within half of the data area.
    let budget = sub.region().geometry().data_size / 2;
    let per = (job.key.len()
        + job.input.len()
        + job.aux.len()
        + if job.in_place { 0 } else { job.out_len }) as u64
        + 4 * 4096;
    let depth = depth.min((budget / per).max(1) as usize);
    let mut staged = Vec::with_capacity(depth);
    for _ in 0..depth {
        staged.push(job.stage(sub).ok_or("no room in the data area")?);
    }
    let mut lat: Vec<u64> = Vec::new();
    let mut inflight = VecDeque::new();
    let submit = |i: usize| -> Result<_, String> {
        loop {
            match sub.submit(&staged[i].request) {
                Ok(t) => return Ok((i, t, Instant::now())),
                Err(SubmitError::Busy) => std::thread::yield_now(),
                Err(e) => return Err(format!("submit: {e}")),
            }
        }
    };
    // Warm up (key schedules, caches), then measure.
    for i in 0..depth {
        let (_, t, _) = submit(i)?;
        let c = sub
            .wait(t, Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        if c.status != Status::Ok {
            return Err(format!("status {}", c.status.as_str()));
        }
    }
    let cpu0 = helper_cpu();
    let t0 = Instant::now();
    for i in 0..depth {
        inflight.push_back(submit(i)?);
    }
    let mut done = 0u64;
    let mut on_gpu = 0u64;
    while let Some((i, t, at)) = inflight.pop_front() {
        let c = sub
            .wait(t, Duration::from_secs(60))
            .map_err(|e| e.to_string())?;
        lat.push(at.elapsed().as_nanos() as u64);
        if c.status != Status::Ok {
            return Err(format!("status {}", c.status.as_str()));
        }
        done += 1;
        on_gpu += u64::from(c.backend == kgpu_common::abi::backend::GPU);
        if t0.elapsed() < duration {
            inflight.push_back(submit(i)?);
        }
    }
    let wall = t0.elapsed();
    let cpu1 = helper_cpu();
    for s in staged {
        s.free(sub);
    }
    lat.sort_unstable();
    let q = |f: f64| lat[((lat.len() as f64 - 1.0) * f).round() as usize] as f64 / 1e3;
    Ok(Row {
        mode: String::new(),
        size: job.payload(),
        depth,
        requests: done,
        ring_gbps: job.payload() as f64 * done as f64 / wall.as_secs_f64() / 1e9,
        p50_us: q(0.5),
        p99_us: q(0.99),
        helper_cores: match (cpu0, cpu1) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a)).as_secs_f64() / wall.as_secs_f64()),
            _ => None,
        },
        direct_gbps: None,
        ratio: None,
        on_gpu,
    })
}

/// Runs the plan; `progress` receives a line per measurement.
pub fn run(
    sub: &Submitter,
    plan: &Plan,
    helper_cpu: &dyn Fn() -> Option<Duration>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, String> {
    let services = CpuServices::new();
    let mut rng = Rng::new(0x6b67_7075);
    let total = plan.modes.len() * plan.sizes.len() * plan.depths.len();
    let mut rows = Vec::new();
    for &mode in &plan.modes {
        for &size in &plan.sizes {
            let job = mode.job(size, &mut rng);
            let direct = if plan.compare {
                Some(
                    direct_gbps(&job, &services, plan.duration)
                        .map_err(|s| s.as_str().to_string())?,
                )
            } else {
                None
            };
            for &depth in &plan.depths {
                progress(&format!(
                    "[{}/{}] {} {} depth {}",
                    rows.len() + 1,
                    total,
                    mode.name(),
                    human(size as u64),
                    depth
                ));
                let mut row = ring_row(sub, &job, depth, plan.duration, helper_cpu)?;
                row.mode = mode.name().to_string();
                row.direct_gbps = direct;
                row.ratio = direct.map(|d| row.ring_gbps / d);
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

/// "4K", "1M", "16M".
pub fn human(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}M", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}K", n >> 10)
    } else {
        n.to_string()
    }
}

/// Parses "4K", "16M", "512".
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok().and_then(|n| n.checked_mul(mul))
}

/// The table as text.
pub fn table(rows: &[Row], backend: &str) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<15} {:>5} {:>5} {:>9} {:>9} {:>9} {:>7} {:>10} {:>7}\n",
        "mode", "size", "depth", "ring GB/s", "p50 us", "p99 us", "helper", "cpu GB/s", "ratio"
    ));
    for r in rows {
        let opt = |v: Option<f64>, w: usize, p: usize| match v {
            Some(x) => format!("{:>w$.p$}", x, w = w, p = p),
            None => format!("{:>w$}", "-", w = w),
        };
        s.push_str(&format!(
            "{:<15} {:>5} {:>5} {:>9.2} {:>9.1} {:>9.1} {} {} {}\n",
            r.mode,
            human(r.size),
            r.depth,
            r.ring_gbps,
            r.p50_us,
            r.p99_us,
            opt(r.helper_cores, 7, 2),
            opt(r.direct_gbps, 10, 2),
            opt(r.ratio, 7, 2),
        ));
    }
    s.push_str(&format!(
        "ring = through the submission/completion rings to the helper ({backend} backend); helper = helper CPU cores busy; cpu = the same work called directly on one CPU thread; ratio = ring / cpu\n"
    ));
    s
}

#[cfg(test)]
mod size_tests {
    use super::*;
    use crate::dispatch::CpuServices;

    /// `check_size` says exactly what the services' own rules say, on the
    /// jobs the bench builds.
    #[test]
    fn check_size_agrees_with_the_services() {
        let services = CpuServices::new();
        let mut rng = Rng::new(7);
        let sizes: Vec<usize> = (1..=48)
            .chain([
                4080, 4095, 4096, 4097, 4112, 6000, 8192, 8200, 12288, 65536, 65552,
            ])
            .collect();
        for m in Mode::ALL {
            for &size in &sizes {
                let runs = m.job(size, &mut rng).direct(&services).is_ok();
                assert_eq!(m.check_size(size).is_ok(), runs, "{} {size}", m.name());
            }
        }
    }
}
