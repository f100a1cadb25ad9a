//! The `kgpu-helper` command.

use clap::{Parser, Subcommand};
use kgpu_helper::backend::{Backend, CpuBackend};
use kgpu_helper::serve::{serve, DeviceTransport, RegionTransport, ServeOptions};
use kgpu_helper::shm::{RegionSpec, SharedRegion};
use kgpu_helper::stats::Stats;
use kgpu_helper::{device, serve::Transport};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Parser)]
#[command(
    name = "kgpu-helper",
    version,
    about = "Serves kgpu-rs requests from the kernel on a GPU or the CPU"
)]
struct Cli {
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
        #[arg(long)]
        region: Option<PathBuf>,
        /// Which backend runs the requests.
        #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
        backend: BackendKind,
        /// CPU worker threads (0: run on the serving thread).
        #[arg(long, default_value_t = 1)]
        cpu_workers: usize,
        /// Data-area size in MiB of the region handed to the kernel.
        #[arg(long, default_value_t = 256)]
        data_mib: u64,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
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
    match kind {
        BackendKind::Cuda => Err("the CUDA backend is not built into this helper".into()),
        BackendKind::Auto | BackendKind::Cpu => {
            Ok(Box::new(CpuBackend::new(region.data(), cpu_workers)))
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Serve {
            device: dev_path,
            region,
            backend,
            cpu_workers,
            data_mib,
        } => {
            let stop = stop_flag()?;
            let stats = Stats::default();
            match region {
                Some(path) => {
                    let region = SharedRegion::open(&path)?;
                    let mut be = make_backend(backend, &region, cpu_workers)?;
                    serve(
                        &region,
                        &RegionTransport,
                        be.as_mut(),
                        stop,
                        ServeOptions::default(),
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
                    device::attach(&dev, &dev_path, &region)?;
                    let mut be = make_backend(backend, &region, cpu_workers)?;
                    let t = DeviceTransport { fd: dev.as_fd() };
                    serve(
                        &region,
                        &t as &dyn Transport,
                        be.as_mut(),
                        stop,
                        ServeOptions::default(),
                        &stats,
                    )?;
                }
            }
            let s = stats.snapshot();
            log::info!(
                "stopped: {} requests completed, {} errors",
                s.completed,
                s.errors
            );
            Ok(())
        }
    }
}
