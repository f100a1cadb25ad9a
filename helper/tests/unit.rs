//! The systemd unit as `make install` writes it: paths from PREFIX, the
//! readiness protocol the helper speaks, its cache and runtime directories,
//! no core dumps, and (where systemd-analyze is installed) an exposure
//! score of at most 2.0.

use std::path::{Path, PathBuf};
use std::process::Command;

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `make install` into a scratch DESTDIR with PREFIX=/opt/kgpu-test; the unit's text.
fn installed_unit(dest: &Path) -> String {
    let o = Command::new("make")
        .current_dir(top())
        .args(["-s", "install", "PREFIX=/opt/kgpu-test"])
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("HELPER={}", env!("CARGO_BIN_EXE_kgpu-helper")))
        .output()
        .expect("make");
    assert!(
        o.status.success(),
        "make install: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    for f in [
        "opt/kgpu-test/sbin/kgpu-helper",
        "opt/kgpu-test/sbin/stopkgpu",
        "opt/kgpu-test/share/doc/kgpu-rs/USING.md",
    ] {
        assert!(dest.join(f).exists(), "{f} not installed");
    }
    std::fs::read_to_string(dest.join("etc/systemd/system/kgpu-helper.service")).unwrap()
}

#[test]
fn the_installed_unit() {
    let dest = std::env::temp_dir().join(format!("kgpu-unit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    let unit = installed_unit(&dest);
    let lines: Vec<&str> = unit.lines().filter(|l| !l.starts_with('#')).collect();
    for want in [
        "Type=notify",
        "ExecStart=/opt/kgpu-test/sbin/kgpu-helper serve --stats-file /run/kgpu-helper/stats.json",
        "Documentation=file:/opt/kgpu-test/share/doc/kgpu-rs/USING.md",
        "CacheDirectory=kgpu-helper",
        "Environment=KGPU_CACHE=/var/cache/kgpu-helper",
        "RuntimeDirectory=kgpu-helper",
        "LimitCORE=0",
        "Before=cryptsetup-pre.target",
        "Wants=cryptsetup-pre.target",
        "ProtectSystem=strict",
        "DeviceAllow=/dev/kgpu rw",
        "DeviceAllow=char-nvidia rw",
        "DeviceAllow=char-nvidia-uvm rw",
    ] {
        assert!(
            lines.contains(&want),
            "{want:?} missing from the unit:\n{unit}"
        );
    }
    assert!(!unit.contains("@SBINDIR@") && !unit.contains("@DOCDIR@"));
    for fixed in ["/usr/local/sbin", "/usr/local/share"] {
        assert!(!unit.contains(fixed), "a fixed {fixed} path:\n{unit}");
    }
    assert!(!lines.iter().any(|l| l.contains("mdmonitor")));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        let o = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(dest.join("etc/systemd/system/kgpu-helper.service"))
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let score: f64 = out
            .lines()
            .find_map(|l| l.split("kgpu-helper.service: ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no score in {out}"));
        assert!(score <= 2.0, "exposure {score}:\n{out}");
    }
    std::fs::remove_dir_all(&dest).unwrap();
}
