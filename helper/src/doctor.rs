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
}

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
    let (ok, detail) = match kernel_config(env) {
        Some(c) if c.lines().any(|l| l.trim() == "CONFIG_RUST=y") => (true, format!("kernel {} has CONFIG_RUST=y", env.release)),
        Some(_) => (
            false,
            format!("kernel {} is built without Rust (CONFIG_RUST): kgpu.ko cannot load; build a Rust-enabled kernel (scripts/kernel/build-kernel shows how)", env.release),
        ),
        None => (false, format!("no kernel config found (/boot/config-{} or /proc/config.gz): cannot tell whether the kernel has CONFIG_RUST=y", env.release)),
    };
    v.push(Finding {
        what: "Rust-enabled kernel",
        ok,
        detail,
    });
    let loaded = env.p("/sys/module/kgpu").is_dir();
    v.push(Finding {
        what: "kgpu module",
        ok: loaded,
        detail: if loaded {
            "loaded".into()
        } else {
            "not loaded: run scripts/runkgpu (or insmod kgpu.ko; dkms install for a packaged build)"
                .into()
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
            .any(|x| x.what == "kgpu module" && x.detail.contains("runkgpu")));
    }
}
