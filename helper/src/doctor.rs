//! `kgpu-helper doctor`: what this machine lacks for kgpu-rs, one line per
//! piece, each missing one with how to get it.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The oldest CUDA driver API the helper is built against (12.4).
pub const MIN_DRIVER: i32 = 12040;

/// What the checks look at; tests point it at a fake tree.
#[derive(Clone, Debug)]
pub struct Env {
    /// Prefix of /proc, /sys, /dev and /boot ("/" on a real machine).
    pub root: PathBuf,
    /// Effective user id.
    pub euid: u32,
    /// Kernel release (`uname -r`).
    pub release: String,
    /// GPUs and driver version, or why none.
    pub gpu: Result<(usize, i32), String>,
    /// Whether NVRTC (libnvrtc) can be loaded.
    pub nvrtc: bool,
    /// RLIMIT_MEMLOCK in bytes (None: unlimited).
    pub memlock: Option<u64>,
    /// Whether the process has CAP_IPC_LOCK (then the limit does not apply).
    pub cap_ipc_lock: bool,
    /// `systemctl is-active` and `is-enabled` of kgpu-helper.service, when
    /// systemd runs here.
    pub unit: Option<(String, String)>,
}

/// The data area a helper locks by default (serve --data-mib), plus header
/// and rings.
pub const REGION_BYTES: u64 = 257 << 20;

impl Env {
    /// The machine this runs on.
    pub fn here() -> Self {
        Env {
            root: PathBuf::from("/"),
            euid: nix::unistd::geteuid().as_raw(),
            release: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            gpu: gpu_probe(),
            nvrtc: nvrtc_present(),
            memlock: memlock_limit(),
            cap_ipc_lock: cap_ipc_lock(),
            unit: unit_state(),
        }
    }

    fn p(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

#[cfg(feature = "cuda")]
fn gpu_probe() -> Result<(usize, i32), String> {
    let n = crate::cuda::device_count().map_err(|e| e.to_string())?;
    let mut v = 0i32;
    // SAFETY: cuDriverGetVersion writes one int; the library is loaded
    // (device_count succeeded).
    let rc = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    if rc != cudarc::driver::sys::CUresult::CUDA_SUCCESS {
        return Err(format!("cuDriverGetVersion: {rc:?}"));
    }
    Ok((n, v))
}

#[cfg(not(feature = "cuda"))]
fn gpu_probe() -> Result<(usize, i32), String> {
    Err("this kgpu-helper was built without the cuda feature".into())
}

#[cfg(feature = "cuda")]
fn nvrtc_present() -> bool {
    // SAFETY: only tries to load the library (by each name cudarc would use).
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(not(feature = "cuda"))]
fn nvrtc_present() -> bool {
    false
}

fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    (r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// CAP_IPC_LOCK (bit 14) in the effective set of /proc/self/status.
fn cap_ipc_lock() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

fn unit_state() -> Option<(String, String)> {
    if !Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let q = |what: &str| {
        std::process::Command::new("systemctl")
            .args([what, "kgpu-helper.service"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    Some((q("is-active")?, q("is-enabled")?))
}

/// Where the module is installed for `release` (dkms, make install, or the
/// distribution's tree), if anywhere.
fn installed_module(env: &Env) -> Option<PathBuf> {
    let dir = env.p(&format!("/lib/modules/{}", env.release));
    let base = &dir;
    ["updates/dkms", "updates", "extra", "kernel/drivers/misc"]
        .iter()
        .flat_map(|d| {
            ["kgpu.ko", "kgpu.ko.xz", "kgpu.ko.zst", "kgpu.ko.gz"]
                .iter()
                .map(move |f| base.join(d).join(f))
        })
        .find(|p| p.is_file())
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Short name of the piece.
    pub what: &'static str,
    /// Present and usable.
    pub ok: bool,
    /// What was found, or how to fix it.
    pub detail: String,
}

fn kernel_config(env: &Env) -> Option<String> {
    let boot = env.p(&format!("/boot/config-{}", env.release));
    if let Ok(s) = std::fs::read_to_string(&boot) {
        return Some(s);
    }
    let gz = std::fs::File::open(env.p("/proc/config.gz")).ok()?;
    let mut child = std::process::Command::new("gzip")
        .arg("-dc")
        .stdin(gz)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    let mut s = String::new();
    child.stdout.take()?.read_to_string(&mut s).ok()?;
    child.wait().ok()?;
    Some(s)
}

fn is_char_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

/// Runs every check.
pub fn check(env: &Env) -> Vec<Finding> {
    let mut v = Vec::new();
    v.push(Finding {
        what: "root",
        ok: env.euid == 0,
        detail: if env.euid == 0 {
            "running as root".into()
        } else {
            format!("running as uid {}: the helper must run as root (it opens /dev/kgpu, mode 0600, and locks its region in memory)", env.euid)
        },
    });
    let is_612 = env.release.starts_with("6.12.") || env.release == "6.12";
    v.push(Finding {
        what: "kernel 6.12",
        ok: is_612,
        detail: if is_612 {
            format!("kernel {}", env.release)
        } else {
            format!("kernel {}: kgpu.ko builds only against Linux 6.12 (the kernel's Rust interfaces change between releases); boot a Rust-enabled 6.12 kernel (docs/USING.md)", env.release)
        },
    });
    const SERVER_KERNEL: &str = "build this server's kernel with CONFIG_RUST=y and CONFIG_MODVERSIONS off, then install the module with dkms (docs/USING.md; scripts/kernel/build-kernel only builds the qemu test kernel)";
    let config = kernel_config(env);
    let (ok, detail) = match &config {
        Some(c) if c.lines().any(|l| l.trim() == "CONFIG_RUST=y") => (true, format!("kernel {} has CONFIG_RUST=y", env.release)),
        Some(_) => (
            false,
            format!("kernel {} is built without Rust (CONFIG_RUST): kgpu.ko cannot load; {SERVER_KERNEL}", env.release),
        ),
        None => (false, format!("no kernel config found (/boot/config-{} or /proc/config.gz): cannot tell whether the kernel has CONFIG_RUST=y", env.release)),
    };
    v.push(Finding {
        what: "Rust-enabled kernel",
        ok,
        detail,
    });
    if let Some(c) = &config {
        let modversions = c.lines().any(|l| l.trim() == "CONFIG_MODVERSIONS=y");
        v.push(Finding {
            what: "MODVERSIONS off",
            ok: !modversions,
            detail: if modversions {
                format!("kernel {} has CONFIG_MODVERSIONS=y, which Rust modules cannot be built with; {SERVER_KERNEL}", env.release)
            } else {
                "CONFIG_MODVERSIONS is off".into()
            },
        });
    }
    let loaded = env.p("/sys/module/kgpu").is_dir();
    let installed = installed_module(env);
    v.push(Finding {
        what: "kgpu module",
        ok: loaded,
        detail: match (loaded, &installed) {
            (true, _) => "loaded".into(),
            (false, Some(p)) => format!(
                "installed ({}), not loaded: modprobe kgpu, or systemctl start kgpu-helper",
                p.display()
            ),
            (false, None) => format!(
                "not installed for kernel {}: dkms install kgpu/0.1.0 (docs/USING.md), or from a source tree make kmod && scripts/runkgpu",
                env.release
            ),
        },
    });
    let dev = is_char_device(&env.p("/dev/kgpu"));
    v.push(Finding {
        what: "/dev/kgpu",
        ok: dev,
        detail: if dev {
            "present".into()
        } else if loaded {
            "missing although the module is loaded: is devtmpfs mounted on /dev?".into()
        } else {
            "missing (the module creates it)".into()
        },
    });
    let (ok, detail) = match &env.gpu {
        Ok((n, _)) => (true, format!("{n} CUDA device(s)")),
        Err(e) => (
            false,
            format!("no GPU: {e}; the helper runs on the CPU backend"),
        ),
    };
    v.push(Finding {
        what: "GPU",
        ok,
        detail,
    });
    if env.gpu.is_ok() {
        v.push(Finding {
            what: "NVRTC",
            ok: env.nvrtc,
            detail: if env.nvrtc {
                "libnvrtc loads".into()
            } else {
                "libnvrtc not found: the helper compiles its GPU kernels with NVRTC at start-up; install the CUDA toolkit's NVRTC (e.g. cuda-nvrtc-12-x) and put its lib64 in the library path (the unit sets LD_LIBRARY_PATH=/usr/local/cuda/lib64)".into()
            },
        });
    }
    let mib = |b: u64| b >> 20;
    let (ok, detail) = match (env.cap_ipc_lock, env.memlock) {
        (true, _) => (true, "CAP_IPC_LOCK: the memlock limit does not apply".to_string()),
        (false, None) => (true, "memlock limit unlimited".to_string()),
        (false, Some(l)) if l >= REGION_BYTES => (true, format!("memlock limit {} MiB", mib(l))),
        (false, Some(l)) => (
            false,
            format!(
                "memlock limit {} MiB is below the {} MiB region the helper locks: raise it (ulimit -l, LimitMEMLOCK= in the unit) or pass a smaller --data-mib; unlocked pages still work but can be swapped",
                mib(l),
                mib(REGION_BYTES)
            ),
        ),
    };
    v.push(Finding {
        what: "memlock limit",
        ok,
        detail,
    });
    if let Some((active, enabled)) = &env.unit {
        let failed = active == "failed";
        v.push(Finding {
            what: "systemd unit",
            ok: !failed,
            detail: match (active.as_str(), enabled.as_str()) {
                ("failed", _) => "kgpu-helper.service failed: systemctl status kgpu-helper; journalctl -u kgpu-helper".into(),
                (_, "not-found") | (_, "") => "kgpu-helper.service not installed (make install); scripts/runkgpu works without it".into(),
                (a, e) => format!("kgpu-helper.service {a}, {e}"),
            },
        });
    }
    if let Ok((_, ver)) = env.gpu {
        let ok = ver >= MIN_DRIVER;
        v.push(Finding {
            what: "GPU driver",
            ok,
            detail: format!(
                "CUDA driver API {}.{}{}",
                ver / 1000,
                (ver % 1000) / 10,
                if ok {
                    String::new()
                } else {
                    format!(
                        ": too old, need {}.{} or newer",
                        MIN_DRIVER / 1000,
                        (MIN_DRIVER % 1000) / 10
                    )
                }
            ),
        });
    }
    v
}

/// The findings as text, one line each.
pub fn report(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| {
            format!(
                "{:<8} {:<20} {}\n",
                if f.ok { "ok" } else { "MISSING" },
                f.what,
                f.detail
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree(PathBuf);
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fake root with everything present (the device node is a link to
    /// /dev/null, a character device).
    fn full(tag: &str) -> (Tree, Env) {
        let root = std::env::temp_dir().join(format!("kgpu-doctor-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::create_dir_all(root.join("sys/module/kgpu")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::write(
            root.join("boot/config-6.12.0-test"),
            "CONFIG_MODULES=y\nCONFIG_RUST=y\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/null", root.join("dev/kgpu")).unwrap();
        let env = Env {
            root: root.clone(),
            euid: 0,
            release: "6.12.0-test".into(),
            gpu: Ok((1, 13000)),
            nvrtc: true,
            memlock: Some(8 << 20),
            cap_ipc_lock: true,
            unit: Some(("active".into(), "enabled".into())),
        };
        (Tree(root), env)
    }

    fn missing(env: &Env) -> Vec<&'static str> {
        check(env)
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| f.what)
            .collect()
    }

    #[test]
    fn everything_present() {
        let (_t, env) = full("all");
        assert!(missing(&env).is_empty(), "{:?}", check(&env));
    }

    #[test]
    fn each_missing_piece_is_named() {
        let (t, env) = full("each");
        assert_eq!(
            missing(&Env {
                euid: 1000,
                ..env.clone()
            }),
            vec!["root"]
        );
        assert_eq!(
            missing(&Env {
                gpu: Err("none".into()),
                ..env.clone()
            }),
            vec!["GPU"]
        );
        assert_eq!(
            missing(&Env {
                gpu: Ok((1, 11080)),
                ..env.clone()
            }),
            vec!["GPU driver"]
        );
        assert_eq!(
            missing(&Env {
                nvrtc: false,
                ..env.clone()
            }),
            vec!["NVRTC"]
        );
        // Without a GPU, NVRTC is not asked for.
        assert_eq!(
            missing(&Env {
                nvrtc: false,
                gpu: Err("none".into()),
                ..env.clone()
            }),
            vec!["GPU"]
        );
        let small = Env {
            cap_ipc_lock: false,
            ..env.clone()
        };
        assert_eq!(missing(&small), vec!["memlock limit"]);
        assert!(missing(&Env {
            memlock: Some(REGION_BYTES),
            ..small.clone()
        })
        .is_empty());
        assert!(missing(&Env {
            memlock: None,
            ..small
        })
        .is_empty());
        assert_eq!(
            missing(&Env {
                unit: Some(("failed".into(), "enabled".into())),
                ..env.clone()
            }),
            vec!["systemd unit"]
        );
        assert!(missing(&Env {
            unit: Some(("inactive".into(), "not-found".into())),
            ..env.clone()
        })
        .is_empty());
        assert_eq!(
            missing(&Env {
                release: "6.1.0-28-amd64".into(),
                ..env.clone()
            }),
            vec!["kernel 6.12", "Rust-enabled kernel"]
        );
        std::fs::write(
            t.0.join("boot/config-6.12.0-test"),
            "CONFIG_RUST=y\nCONFIG_MODVERSIONS=y\n",
        )
        .unwrap();
        let f = check(&env);
        assert_eq!(missing(&env), vec!["MODVERSIONS off"]);
        assert!(f
            .iter()
            .any(|x| x.what == "MODVERSIONS off" && x.detail.contains("dkms")));
        std::fs::write(
            t.0.join("boot/config-6.12.0-test"),
            "CONFIG_RUST is not set\n",
        )
        .unwrap();
        assert_eq!(missing(&env), vec!["Rust-enabled kernel"]);
        std::fs::remove_file(t.0.join("boot/config-6.12.0-test")).unwrap();
        assert_eq!(missing(&env), vec!["Rust-enabled kernel"]);
        std::fs::write(t.0.join("boot/config-6.12.0-test"), "CONFIG_RUST=y\n").unwrap();
        std::fs::remove_file(t.0.join("dev/kgpu")).unwrap();
        assert_eq!(missing(&env), vec!["/dev/kgpu"]);
        std::fs::remove_dir(t.0.join("sys/module/kgpu")).unwrap();
        assert_eq!(missing(&env), vec!["kgpu module", "/dev/kgpu"]);
        let f = check(&env);
        assert!(f
            .iter()
            .any(|x| x.what == "kgpu module" && x.detail.contains("dkms install")));
        let dkms = t.0.join("lib/modules/6.12.0-test/updates/dkms");
        std::fs::create_dir_all(&dkms).unwrap();
        std::fs::write(dkms.join("kgpu.ko.xz"), "").unwrap();
        let f = check(&env);
        assert!(f
            .iter()
            .any(|x| x.what == "kgpu module" && x.detail.contains("modprobe kgpu")));
    }
}
