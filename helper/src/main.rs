//! The `kgpu-helper` command.

use clap::{Parser, Subcommand};
use kgpu_helper::backend::{Backend, CpuBackend};
use kgpu_helper::bench::{parse_size, Mode, Plan};
use kgpu_helper::child::{ChildHelper, ChildOptions};
use kgpu_helper::out::{self, OutError};
use kgpu_helper::serve::{serve, DeviceTransport, RegionTransport, ServeOptions};
use kgpu_helper::shm::{RegionSpec, SharedRegion};
use kgpu_helper::standin::Submitter;
use kgpu_helper::stats::Stats;
use kgpu_helper::{device, serve::Transport};
use kgpu_helper::{limits, selftest};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The environment variables the helper reads, for `--help`.
const ENVIRONMENT: &str = "\
Environment:
  RUST_LOG            log filter (error, warn, info, debug, trace; default info);
                      -v and -q override it
  KGPU_MAX_GPUS       use at most this many GPUs (default: all)
  KGPU_GPU_MIN_BYTES  send requests of this many bytes and more to the GPU
                      instead of measuring the crossover at start-up
  KGPU_CACHE          cache directory of the compiled GPU kernels (DIR/cubin);
                      else $XDG_CACHE_HOME/kgpu-rs/cubin, else
                      $HOME/.cache/kgpu-rs/cubin
  NOTIFY_SOCKET       set by systemd (Type=notify): READY=1 is sent once the
                      helper is attached
  TMPDIR              where a non-root serve keeps its statistics file

Exit status: 0 success, 1 a failure (the message is on stderr), 2 a bad
command line.";

#[derive(Parser)]
#[command(
    name = "kgpu-helper",
    version,
    about = "Serves kgpu-rs requests from the kernel on a GPU or the CPU",
    after_help = ENVIRONMENT
)]
struct Cli {
    /// More log output (-v debug, -vv trace); overrides RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Less log output (-q warnings, -qq errors, -qqq none); overrides
    /// RUST_LOG. Fatal errors are printed whatever the level.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    quiet: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum BackendKind {
    /// A GPU if one is usable, else the CPU.
    Auto,
    /// The CPU only.
    Cpu,
    /// A GPU, or fail.
    Cuda,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve /dev/kgpu (or a region file made by a userspace stand-in).
    Serve {
        /// The device node.
        #[arg(long, default_value = device::DEFAULT_DEVICE)]
        device: PathBuf,
        /// Serve this region file instead of the device.
        #[arg(long, conflicts_with = "ivshmem")]
        region: Option<PathBuf>,
        /// Serve a guest: this file is the memory of the guest's ivshmem
        /// device (qemu: -object memory-backend-file,share=on,mem-path=FILE
        /// -device ivshmem-plain); created when missing. Offers the region
        /// again whenever the guest's kernel detaches.
        #[arg(long)]
        ivshmem: Option<PathBuf>,
        /// Size of a new --ivshmem file in MiB (a power of two; an existing
        /// file keeps its size, and must have this one if given).
        #[arg(long)]
        ivshmem_mib: Option<u64>,
        /// Which backend runs the requests.
        #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
        backend: BackendKind,
        /// CPU worker threads (0: run on the serving thread).
        #[arg(long, default_value_t = 1, value_parser = limits::parse_cpu_workers)]
        cpu_workers: usize,
        /// Data-area size in MiB of the region handed to the kernel.
        #[arg(long, default_value_t = 256, value_parser = limits::parse_data_mib)]
        data_mib: u64,
        /// Where to keep a statistics snapshot for `kgpu-helper stats`
        /// (default /run/kgpu-helper.json as root, else in $TMPDIR).
        #[arg(long)]
        stats_file: Option<PathBuf>,
        /// For tests of the kernel's load-time choice: publish these GPU
        /// figures in the region header instead of what the backend measured,
        /// as SERVICE=MBPS,RTT_US,CROSSOVER (service aes or raid6; repeat for
        /// both). The requests still run on the chosen backend.
        #[arg(long, hide = true, value_parser = limits::parse_gpu_figures)]
        gpu_figures: Vec<(u16, kgpu_common::abi::GpuFigures)>,
    },
    /// Show the kernel module's counters and the helper's statistics.
    Stats {
        /// Repeat every this many seconds.
        #[arg(long, value_parser = limits::parse_watch_secs)]
        watch: Option<u64>,
        /// The helper's statistics file (as given to serve --stats-file;
        /// default that of serve, else the systemd unit's /run/kgpu-helper/stats.json).
        #[arg(long)]
        stats_file: Option<PathBuf>,
    },
    /// Run every service's known answers and random cross-checks through the
    /// ring (userspace stand-in) on the chosen backend.
    Selftest {
        /// Which backend serves the ring.
        #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
        backend: BackendKind,
        /// CPU worker threads of the CPU backend.
        #[arg(long, default_value_t = 1, value_parser = limits::parse_cpu_workers)]
        cpu_workers: usize,
    },
    /// Say what this machine lacks for kgpu-rs (root, a Rust-enabled kernel,
    /// the module, /dev/kgpu, a GPU and a recent enough driver).
    Doctor,
    /// Draw a picture from rows saved with `bench --json-out`.
    Plot {
        /// The JSON rows.
        #[arg(long)]
        from: PathBuf,
        /// The SVG to write.
        #[arg(long)]
        out: PathBuf,
        /// Title of the picture.
        #[arg(long, default_value = "kgpu-rs: throughput through the ring")]
        title: String,
        /// A bound to draw, GB/s (for example the link limit `bench --plot`
        /// measured and printed); none by default.
        #[arg(long)]
        bound_gbps: Option<f64>,
    },
    /// Measure throughput and latency through the ring (and, with
    /// --compare, the same work called directly on the CPU).
    Bench {
        /// Which backend the helper uses.
        #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
        backend: BackendKind,
        /// Modes (comma separated): echo, aes128-ecb, aes128-ctr, aes128-xts, aes128-cbc-dec, aes128-cbc-enc, raid6-gen16.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "aes128-xts,aes128-ctr,aes128-ecb,raid6-gen16"
        )]
        modes: Vec<String>,
        /// Request sizes (comma separated, K/M suffixes).
        #[arg(long, value_delimiter = ',', default_value = "4K,64K,1M,16M")]
        sizes: Vec<String>,
        /// Queue depths (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
        depths: Vec<usize>,
        /// Milliseconds per measurement.
        #[arg(long, default_value_t = 300)]
        millis: u64,
        /// Also time the same work called directly on one CPU thread.
        #[arg(long)]
        compare: bool,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Also write the rows as JSON to this file.
        #[arg(long)]
        json_out: Option<PathBuf>,
        /// Also draw throughput against size as an SVG picture in this file.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The bound drawn on the picture, GB/s (0: none). By default the
        /// link is measured on GPU 0 (copies both ways at once) and drawn.
        #[arg(long)]
        bound_gbps: Option<f64>,
        /// CPU worker threads of the helper's CPU backend.
        #[arg(long, default_value_t = 1, value_parser = limits::parse_cpu_workers)]
        cpu_workers: usize,
        /// Data-area size of the benchmark region, MiB.
        #[arg(long, default_value_t = 1024, value_parser = limits::parse_data_mib)]
        data_mib: u64,
        /// Run the plan with 1, 2, ... N GPUs (every GPU present) and print
        /// the scaling against one GPU.
        #[arg(long)]
        gpu_scaling: bool,
        /// The kernel's path: submitter threads copy each request in from a
        /// caller pool out of cache and the output back out, against the
        /// same work on the CPU in the caller (1 and N threads), with CPU
        /// time per GB of both.
        #[arg(long)]
        kernel_path: bool,
        /// With --kernel-path: submitter thread counts (comma separated).
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        submitters: Vec<usize>,
        /// With --kernel-path: threads of the CPU path's whole-CPU run (0: every CPU).
        #[arg(long, default_value_t = 0)]
        cpu_threads: usize,
        /// With --kernel-path: the caller buffer pool, MiB.
        #[arg(long, default_value_t = 1024)]
        pool_mib: usize,
        /// Only the AES code paths this CPU has (VAES, AES-NI, portable),
        /// every mode, one thread, in cache, at --sizes.
        #[arg(long)]
        cpu_paths: bool,
    },
}

/// The log filter -v/-q ask for (None: RUST_LOG, else info).
fn log_filter(verbose: u8, quiet: u8) -> Option<&'static str> {
    match (verbose, quiet) {
        (0, 0) => None,
        (1, _) => Some("debug"),
        (_, 0) => Some("trace"),
        (_, 1) => Some("warn"),
        (_, 2) => Some("error"),
        _ => Some("off"),
    }
}

/// What -v/-q chose, for the helper that selftest and bench start.
static LOG_FILTER: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = log_filter(cli.verbose, cli.quiet);
    let mut logger = match filter {
        Some(f) => {
            let mut b = env_logger::Builder::new();
            b.parse_filters(f);
            b
        }
        None => env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")),
    };
    logger.init();
    let _ = LOG_FILTER.set(filter);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<OutError>() {
            // The reader of our output has gone (`... | head`): nothing to say.
            Some(OutError::Closed(_)) => ExitCode::SUCCESS,
            // Not a log record: RUST_LOG or -q must not hide why it failed.
            _ => {
                out::note(&format!("kgpu-helper: error: {e}"));
                ExitCode::FAILURE
            }
        },
    }
}

/// Set by SIGINT and SIGTERM: finish what was submitted, then exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_sig: i32) {
    STOP.store(true, Ordering::Relaxed);
}

fn stop_flag() -> Result<&'static AtomicBool, Box<dyn std::error::Error>> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler does one atomic store, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(&STOP)
}

fn make_backend(
    kind: BackendKind,
    region: &SharedRegion,
    cpu_workers: usize,
) -> Result<Box<dyn Backend>, Box<dyn std::error::Error>> {
    let cpu = || -> Box<dyn Backend> { Box::new(CpuBackend::new(region.data(), cpu_workers)) };
    if kind == BackendKind::Cpu {
        return Ok(cpu());
    }
    #[cfg(feature = "cuda")]
    {
        use kgpu_helper::cuda::{CudaBackend, CudaOptions};
        let opts = CudaOptions {
            max_gpus: env_usize("KGPU_MAX_GPUS").unwrap_or(0),
            gpu_min_bytes: env_usize("KGPU_GPU_MIN_BYTES").map(|v| v as u64),
            cpu_workers,
        };
        match CudaBackend::new(region.data(), opts) {
            Ok(mut b) => {
                let sizes: Vec<String> = b
                    .calibrate(opts.gpu_min_bytes)
                    .into_iter()
                    .enumerate()
                    .map(|(i, (id, bytes))| {
                        let name = kgpu_helper::services::registration(id)
                            .map_or("?", |r| r.name)
                            .to_uppercase();
                        match i {
                            0 => format!("{name} requests of {bytes} bytes and more"),
                            _ => format!("{name} of {bytes} and more"),
                        }
                    })
                    .collect();
                log::info!(
                    "to the GPU: {} ({}); smaller ones run on the CPU",
                    sizes.join(", "),
                    if opts.gpu_min_bytes.is_some() {
                        "KGPU_GPU_MIN_BYTES"
                    } else {
                        "measured"
                    }
                );
                log::info!("CUDA backend on {}", b.gpu_names().join(", "));
                Ok(Box::new(b))
            }
            Err(e) if kind == BackendKind::Auto => {
                log::info!("no GPU backend ({e}); using the CPU backend");
                Ok(cpu())
            }
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(feature = "cuda"))]
    match kind {
        BackendKind::Cuda => Err("this kgpu-helper was built without the cuda feature".into()),
        _ => {
            log::info!("built without the cuda feature; using the CPU backend");
            Ok(cpu())
        }
    }
}

#[cfg(feature = "cuda")]
fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Selftest {
            backend,
            cpu_workers,
        } => selftest(backend, cpu_workers),
        Cmd::Stats { watch, stats_file } => {
            let path = stats_file.unwrap_or_else(stats_file_to_read);
            loop {
                out::print(&stats_text(&path))?;
                match watch {
                    Some(n) => {
                        std::thread::sleep(Duration::from_secs(n));
                        out::print("\n")?;
                    }
                    None => return Ok(()),
                }
            }
        }
        Cmd::Doctor => {
            let f = kgpu_helper::doctor::check(&kgpu_helper::doctor::Env::here());
            out::print(&kgpu_helper::doctor::report(&f))?;
            if f.iter().all(|f| f.ok) {
                Ok(())
            } else {
                Err("some pieces are missing (see above)".into())
            }
        }
        Cmd::Plot {
            from,
            out,
            title,
            bound_gbps,
        } => {
            let text = std::fs::read_to_string(&from)
                .map_err(|e| format!("--from {}: {e}", from.display()))?;
            let rows: Vec<kgpu_helper::bench::Row> = serde_json::from_str(&text).map_err(|e| {
                format!(
                    "--from {}: not rows written by `bench --json-out`: {e}",
                    from.display()
                )
            })?;
            let bound = bound_gbps
                .filter(|b| *b > 0.0)
                .map(|b| (b, format!("given bound ({b} GB/s)")));
            write_plot(&rows, &out, &title, bound)
        }
        Cmd::Bench {
            backend,
            modes,
            sizes,
            depths,
            millis,
            compare,
            json,
            json_out,
            plot,
            bound_gbps,
            cpu_workers,
            data_mib,
            gpu_scaling,
            kernel_path,
            submitters,
            cpu_threads,
            pool_mib,
            cpu_paths,
        } => {
            let modes = modes
                .iter()
                .map(|m| {
                    Mode::parse(m).ok_or_else(|| {
                        let all: Vec<_> = Mode::ALL.iter().map(|m| m.name()).collect();
                        format!("--modes: unknown mode {m:?} (modes: {})", all.join(", "))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let sized = sizes
                .iter()
                .map(|s| {
                    parse_size(s).map(|n| (s.as_str(), n)).ok_or_else(|| {
                        format!("--sizes {s:?}: not a size (a number with an optional K, M or G)")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Before any region exists: a depth the rings cannot hold would
            // wait forever, a size the data area cannot hold fails late.
            limits::check_depths(&depths, RegionSpec::default().cq_entries as usize)?;
            limits::check_sizes(&sized, data_mib)?;
            for m in &modes {
                for &(text, n) in &sized {
                    m.check_size(n).map_err(|want| {
                        format!("--sizes {text} for {}: a request there is {want}", m.name())
                    })?;
                }
            }
            let sizes = sized.into_iter().map(|(_, n)| n).collect();
            let plan = Plan {
                modes,
                sizes,
                depths,
                duration: Duration::from_millis(millis),
                compare,
            };
            if gpu_scaling {
                return scaling(cpu_workers, data_mib, &plan);
            }
            if cpu_paths {
                let rows = kgpu_helper::kpath::cpu_paths(&plan.sizes, plan.duration)?;
                if let Some(p) = json_out {
                    std::fs::write(&p, serde_json::to_string_pretty(&rows)?)?;
                }
                print!("{}", kgpu_helper::kpath::paths_table(&rows));
                return Ok(());
            }
            if kernel_path {
                let kplan = kgpu_helper::kpath::KernelPathPlan {
                    modes: plan.modes,
                    sizes: plan.sizes,
                    depths: plan.depths,
                    submitters,
                    cpu_threads,
                    pool_bytes: pool_mib << 20,
                    duration: plan.duration,
                };
                return kernel_path_bench(backend, cpu_workers, data_mib, &kplan, json_out);
            }
            bench(
                backend,
                cpu_workers,
                data_mib,
                &plan,
                json,
                json_out,
                plot.map(|p| (p, bound_gbps)),
            )
        }
        Cmd::Serve {
            device: dev_path,
            region,
            ivshmem,
            ivshmem_mib,
            backend,
            cpu_workers,
            data_mib,
            stats_file,
            gpu_figures,
        } => {
            let stop = stop_flag()?;
            let figures = (!gpu_figures.is_empty()).then_some(gpu_figures);
            let stats = Stats::default();
            let opts = ServeOptions {
                stats_file: Some(stats_file.unwrap_or_else(default_stats_file)),
                ..ServeOptions::default()
            };
            if let Some(path) = ivshmem {
                serve_guest(
                    &path,
                    ivshmem_mib,
                    (backend, cpu_workers),
                    figures.as_deref(),
                    stop,
                    &opts,
                    &stats,
                )?;
                return Ok(());
            }
            match region {
                Some(path) => {
                    let region = SharedRegion::open(&path)?;
                    let mut be = make_backend(backend, &region, cpu_workers)?;
                    publish_figures(&region, be.as_ref(), figures.as_deref());
                    serve(
                        &region,
                        &RegionTransport,
                        be.as_mut(),
                        stop,
                        opts.clone(),
                        &stats,
                    )?;
                }
                None => {
                    let dev = device::open(&dev_path)?;
                    let spec = RegionSpec {
                        data_size: data_mib << 20,
                        ..RegionSpec::default()
                    };
                    let region = SharedRegion::create(None, spec)?;
                    // The backend first: it must be ready (and its start-up
                    // calibration done) before the kernel can submit.
                    let mut be = make_backend(backend, &region, cpu_workers)?;
                    publish_figures(&region, be.as_ref(), figures.as_deref());
                    device::attach(&dev, &dev_path, &region)?;
                    let t = DeviceTransport { fd: dev.as_fd() };
                    serve(
                        &region,
                        &t as &dyn Transport,
                        be.as_mut(),
                        stop,
                        opts.clone(),
                        &stats,
                    )?;
                }
            }
            let s = stats.snapshot("", Vec::new());
            let all = &s.services[0];
            log::info!(
                "stopped: {} requests completed, {} errors",
                all.completed,
                all.errors
            );
            Ok(())
        }
    }
}

/// `serve --ivshmem`: one session after another until stopped; a fresh
/// backend for each (its key caches belong to one session of the guest's
/// kernel).
fn serve_guest(
    path: &std::path::Path,
    mib: Option<u64>,
    (backend, cpu_workers): (BackendKind, usize),
    figures: Option<&[(u16, kgpu_common::abi::GpuFigures)]>,
    stop: &AtomicBool,
    opts: &ServeOptions,
    stats: &Stats,
) -> Result<(), Box<dyn std::error::Error>> {
    use kgpu_helper::serve::{Ended, IvshmemTransport, ServeError};
    let size = match mib {
        Some(m) => Some(
            m.checked_mul(1 << 20)
                .ok_or_else(|| format!("--ivshmem-mib {m}: too large"))?,
        ),
        None => None,
    };
    let region = SharedRegion::for_guest(path, size)?;
    let t = IvshmemTransport {
        path: path.to_path_buf(),
    };
    while !stop.load(Ordering::Relaxed) {
        let mut be = make_backend(backend, &region, cpu_workers)?;
        publish_figures(&region, be.as_ref(), figures);
        match serve(&region, &t, be.as_mut(), stop, opts.clone(), stats) {
            Ok(Ended::Stopped) | Err(ServeError::Stopped) => break,
            Ok(Ended::SessionOver) => {
                log::info!("the guest's kernel ended the session; offering the region again")
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Puts the backend's GPU figures (or the `--gpu-figures` given for tests)
/// in the region header, where the kernel reads them when it attaches.
fn publish_figures(
    region: &SharedRegion,
    be: &dyn Backend,
    given: Option<&[(u16, kgpu_common::abi::GpuFigures)]>,
) {
    let figures = given.map_or_else(|| be.gpu_figures(), <[_]>::to_vec);
    for (id, f) in &figures {
        log::info!(
            "published for the kernel: service {id}: {} MB/s, round trip {} us, crossover {} bytes{}",
            f.mbps,
            f.rtt_ns / 1000,
            f.crossover,
            if given.is_some() { " (--gpu-figures)" } else { "" }
        );
    }
    if figures.is_empty() {
        log::info!(
            "published for the kernel: no GPU path ({} backend)",
            be.name()
        );
    }
    region.publish_gpu_figures(&figures);
}

fn backend_arg(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Auto => "auto",
        BackendKind::Cpu => "cpu",
        BackendKind::Cuda => "cuda",
    }
}

/// Starts a helper serving `sub`'s region in a child process.
fn child_helper(
    sub: &Submitter,
    backend: BackendKind,
    cpu_workers: usize,
    max_gpus: Option<usize>,
) -> Result<ChildHelper, Box<dyn std::error::Error>> {
    let opts = ChildOptions {
        backend: backend_arg(backend).to_string(),
        cpu_workers,
        max_gpus,
        log_filter: LOG_FILTER.get().copied().flatten().map(str::to_string),
        attach_timeout: Duration::from_secs(60),
    };
    ChildHelper::start(&std::env::current_exe()?, sub, &opts)
}

fn selftest(backend: BackendKind, cpu_workers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let spec = RegionSpec {
        data_size: 64 << 20,
        ..RegionSpec::default()
    };
    let sub = Submitter::create(None, spec)?;
    let helper = child_helper(&sub, backend, cpu_workers, None)?;
    let services = kgpu_helper::dispatch::CpuServices::new();
    let cases: Vec<_> = selftest::known_answers()
        .into_iter()
        .chain(selftest::random_cases(1, &services))
        .collect();
    let (mut pass, mut fail) = (0, 0);
    for c in &cases {
        match selftest::run_case(&sub, c) {
            Ok(()) => {
                pass += 1;
                out::print(&format!("PASS {}\n", c.name))?;
            }
            Err(e) => {
                fail += 1;
                out::print(&format!("FAIL {}: {e}\n", c.name))?;
            }
        }
    }
    helper.stop()?;
    out::print(&format!("selftest: {pass} passed, {fail} failed\n"))?;
    if fail > 0 {
        return Err(format!("{fail} self-test cases failed").into());
    }
    Ok(())
}

/// A bench region of `data_mib` MiB and a helper serving it in its own process.
fn bench_helper(
    backend: BackendKind,
    cpu_workers: usize,
    data_mib: u64,
) -> Result<(Submitter, ChildHelper), Box<dyn std::error::Error>> {
    let spec = RegionSpec {
        data_size: data_mib << 20,
        ..RegionSpec::default()
    };
    let sub = Submitter::create(None, spec)?;
    let helper = child_helper(&sub, backend, cpu_workers, None)?;
    Ok((sub, helper))
}

fn bench(
    backend: BackendKind,
    cpu_workers: usize,
    data_mib: u64,
    plan: &Plan,
    json: bool,
    json_out: Option<PathBuf>,
    plot: Option<(PathBuf, Option<f64>)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (sub, helper) = bench_helper(backend, cpu_workers, data_mib)?;
    let rows = kgpu_helper::bench::run(&sub, plan, &|| helper.cpu_time(), &mut |line| {
        out::note(line)
    });
    helper.stop()?;
    let rows = rows?;
    if let Some(p) = json_out {
        std::fs::write(&p, serde_json::to_string_pretty(&rows)?)
            .map_err(|e| format!("--json-out {}: {e}", p.display()))?;
    }
    if let Some((p, bound)) = plot {
        let depths: Vec<String> = plan.depths.iter().map(|d| d.to_string()).collect();
        let title = format!(
            "kgpu-rs {} backend through the ring (best of depths {}) vs one CPU thread",
            backend_arg(backend),
            depths.join("/")
        );
        let bound = match bound {
            Some(b) if b > 0.0 => Some((b, format!("given bound ({b} GB/s)"))),
            Some(_) => None,
            None if backend == BackendKind::Cpu => None,
            None => kgpu_helper::link::measure(64 << 20).map(|l| {
                out::note(&format!(
                    "link of GPU 0, measured: {:.1} GB/s both ways at once (host to device {:.1}, device to host {:.1})",
                    l.both_gbps, l.h2d_gbps, l.d2h_gbps
                ));
                (
                    l.both_gbps,
                    format!("link, measured: both ways at once ({:.1} GB/s)", l.both_gbps),
                )
            }),
        };
        write_plot(&rows, &p, &title, bound)?;
    }
    if json {
        out::print(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
    } else {
        let cpu = kgpu_helper::kpath::cpu_model();
        out::print(&format!(
            "kgpu-helper bench: backend {}, CPU {cpu}, CPU AES path {}
{}",
            backend_arg(backend),
            kgpu_aes::cpu::Path::best(),
            kgpu_helper::bench::table(&rows, backend_arg(backend))
        ))?;
    }
    Ok(())
}

/// `bench --kernel-path`: a helper in its own process, the table of both paths.
fn kernel_path_bench(
    backend: BackendKind,
    cpu_workers: usize,
    data_mib: u64,
    plan: &kgpu_helper::kpath::KernelPathPlan,
    json_out: Option<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (sub, helper) = bench_helper(backend, cpu_workers, data_mib)?;
    let res = kgpu_helper::kpath::run(&sub, plan, &|| helper.cpu_time(), &mut |l| eprintln!("{l}"));
    helper.stop()?;
    let (rows, copy) = res?;
    if let Some(p) = json_out {
        std::fs::write(&p, serde_json::to_string_pretty(&rows)?)?;
    }
    let cpu = kgpu_helper::kpath::cpu_model();
    println!(
        "kgpu-helper bench --kernel-path: backend {}, CPU {cpu} ({} threads)",
        backend_arg(backend),
        kgpu_helper::kpath::all_cpus()
    );
    print!(
        "{}",
        kgpu_helper::kpath::table(&rows, backend_arg(backend), copy)
    );
    let shapes = kgpu_helper::kpath::copy_shapes(&plan.modes, 1 << 20);
    print!("{}", kgpu_helper::kpath::model_lines(&rows, copy, &shapes));
    Ok(())
}

fn write_plot(
    rows: &[kgpu_helper::bench::Row],
    out: &std::path::Path,
    title: &str,
    bound: Option<(f64, String)>,
) -> Result<(), Box<dyn std::error::Error>> {
    let b = bound.as_ref().map(|(v, label)| (*v, label.as_str()));
    std::fs::write(out, kgpu_helper::plot::svg(rows, title, b))
        .map_err(|e| format!("{}: {e}", out.display()))?;
    log::info!("wrote {}", out.display());
    Ok(())
}

/// Where `serve` keeps its statistics and `stats` reads them.
fn default_stats_file() -> PathBuf {
    if nix::unistd::geteuid().is_root() && std::path::Path::new("/run").is_dir() {
        PathBuf::from("/run/kgpu-helper.json")
    } else {
        std::env::temp_dir().join(format!("kgpu-helper-{}.json", nix::unistd::geteuid()))
    }
}

/// Where the systemd unit has `serve` keep its statistics (RuntimeDirectory=).
const UNIT_STATS_FILE: &str = "/run/kgpu-helper/stats.json";

/// The statistics `stats` shows without --stats-file: those of a helper the
/// unit started when there are no others.
fn stats_file_to_read() -> PathBuf {
    let own = default_stats_file();
    if !own.exists() && std::path::Path::new(UNIT_STATS_FILE).exists() {
        return PathBuf::from(UNIT_STATS_FILE);
    }
    own
}

/// The kernel's counters (debugfs) when the module is loaded, then the helper's.
fn stats_text(helper_file: &std::path::Path) -> String {
    const KERNEL: &str = "/sys/kernel/debug/kgpu/stats";
    let mut t = match std::fs::read_to_string(KERNEL) {
        Ok(s) => format!("kernel module ({KERNEL}):\n{}\n", s.trim_end()),
        Err(_) if std::path::Path::new("/sys/module/kgpu").is_dir() => format!(
            "kernel module loaded, but {KERNEL} is not readable (mount debugfs, run as root)\n"
        ),
        Err(_) => "kernel module not loaded\n".to_string(),
    };
    let snap = std::fs::read_to_string(helper_file)
        .ok()
        .and_then(|s| serde_json::from_str::<kgpu_helper::stats::StatsSnapshot>(&s).ok());
    t += &match snap {
        Some(s) if kgpu_helper::standin::process_alive(s.pid) => s.table(),
        Some(s) => format!(
            "helper (pid {}, no longer running), last snapshot:\n{}",
            s.pid,
            s.table()
        ),
        None => format!("no helper statistics at {}\n", helper_file.display()),
    };
    t
}

/// The plan once per GPU count, 1..=N, with the ratio to one GPU.
#[cfg(feature = "cuda")]
fn scaling(
    cpu_workers: usize,
    data_mib: u64,
    plan: &Plan,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = kgpu_helper::cuda::device_count()?;
    if n == 0 {
        return Err("--gpu-scaling: no GPU present".into());
    }
    let mut all: Vec<(usize, Vec<kgpu_helper::bench::Row>)> = Vec::new();
    for gpus in 1..=n {
        let spec = RegionSpec {
            data_size: data_mib << 20,
            ..RegionSpec::default()
        };
        let sub = Submitter::create(None, spec)?;
        let helper = child_helper(&sub, BackendKind::Cuda, cpu_workers, Some(gpus))?;
        let rows = kgpu_helper::bench::run(&sub, plan, &|| helper.cpu_time(), &mut |l| {
            out::note(&format!("{gpus} GPU(s): {l}"))
        });
        helper.stop()?;
        all.push((gpus, rows?));
    }
    let mut t = format!("kgpu-helper bench --gpu-scaling: {n} GPU(s) present\n");
    t += &format!(
        "{:<15} {:>9} {:>5} {:>5} {:>10} {:>8} {:>7}\n",
        "mode", "size", "depth", "gpus", "ring GB/s", "x 1 GPU", "helper"
    );
    let base = &all[0].1;
    for (i, b) in base.iter().enumerate() {
        for (gpus, rows) in &all {
            let r = &rows[i];
            t += &format!(
                "{:<15} {:>9} {:>5} {:>5} {:>10.2} {:>8.2} {:>7.2}\n",
                r.mode,
                kgpu_helper::bench::human(r.size),
                r.depth,
                gpus,
                r.ring_gbps,
                r.ring_gbps / b.ring_gbps,
                r.helper_cores.unwrap_or(0.0)
            );
        }
    }
    out::print(&t)?;
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn scaling(_: usize, _: u64, _: &Plan) -> Result<(), Box<dyn std::error::Error>> {
    Err("this kgpu-helper was built without the cuda feature".into())
}
