//! `/dev/kgpu`: opening it, handing it the region, ringing its doorbell.

use crate::shm::SharedRegion;
use kgpu_common::abi::ABI_VERSION;
use kgpu_common::ioctl::{AttachArgs, KGPU_IOC_ATTACH, KGPU_IOC_DOORBELL};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// The device node the module creates.
pub const DEFAULT_DEVICE: &str = "/dev/kgpu";

/// Why the device could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The node does not exist.
    #[error("{0} does not exist: the kgpu module is not loaded (run scripts/runkgpu, or `insmod kgpu.ko`), or use --region FILE to serve a userspace stand-in")]
    Missing(String),
    /// The path is something else than the module's device node.
    #[error("{path} is not the kgpu device: {why} (the module creates /dev/kgpu, a misc character device; use --region FILE to serve a userspace stand-in's region)")]
    NotKgpu {
        /// Device path.
        path: String,
        /// What it is instead.
        why: String,
    },
    /// Another helper holds the device.
    #[error("{0} is busy: another helper is attached")]
    Busy(String),
    /// Not allowed.
    #[error("{0}: permission denied (the helper must run as root)")]
    Permission(String),
    /// The kernel refused the region.
    #[error("{path}: the module refused the region: {source}")]
    Attach {
        /// Device path.
        path: String,
        /// The errno.
        source: std::io::Error,
    },
    /// Any other failure.
    #[error("{path}: {source}")]
    Io {
        /// Device path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Major number of the misc character devices (`MISC_MAJOR`).
pub const MISC_MAJOR: u32 = 10;

/// Checks that `path` is kgpu's misc device before anything is sent to it:
/// a character device of the misc major whose sysfs name (under `sys`, when
/// sysfs says) is `kgpu`.
pub fn check_node(path: &Path, sys: &Path) -> Result<(), DeviceError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let p = path.display().to_string();
    let m = std::fs::metadata(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => DeviceError::Missing(p.clone()),
        _ => DeviceError::Io {
            path: p.clone(),
            source: e,
        },
    })?;
    let not = |why: String| DeviceError::NotKgpu {
        path: p.clone(),
        why,
    };
    let ft = m.file_type();
    if !ft.is_char_device() {
        let what = if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_block_device() {
            "a block device"
        } else {
            "not a character device"
        };
        return Err(not(what.into()));
    }
    let (major, minor) = (libc::major(m.rdev()), libc::minor(m.rdev()));
    if major != MISC_MAJOR {
        return Err(not(format!(
            "character device {major}:{minor}, not a misc device ({MISC_MAJOR}:*)"
        )));
    }
    let uevent = sys.join(format!("dev/char/{major}:{minor}/uevent"));
    if let Ok(u) = std::fs::read_to_string(uevent) {
        if let Some(name) = u.lines().find_map(|l| l.strip_prefix("DEVNAME=")) {
            if name != "kgpu" {
                return Err(not(format!(
                    "misc device {major}:{minor} is {name:?}, not \"kgpu\""
                )));
            }
        }
    }
    Ok(())
}

/// Opens the device with a clear error for each way it can fail.
pub fn open(path: &Path) -> Result<File, DeviceError> {
    check_node(path, Path::new("/sys"))?;
    let p = path.display().to_string();
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| match (e.kind(), e.raw_os_error()) {
            (ErrorKind::NotFound, _) => DeviceError::Missing(p),
            (_, Some(libc::EBUSY)) => DeviceError::Busy(p),
            (ErrorKind::PermissionDenied, _) => DeviceError::Permission(p),
            _ => DeviceError::Io { path: p, source: e },
        })
}

/// Hands the region to the kernel.
pub fn attach(dev: &File, path: &Path, region: &SharedRegion) -> Result<(), DeviceError> {
    let args = AttachArgs {
        version: ABI_VERSION,
        flags: 0,
        addr: region.base() as u64,
        len: region.len() as u64,
    };
    // SAFETY: ATTACH reads one AttachArgs from the pointer, which lives for the call.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            KGPU_IOC_ATTACH as _,
            &args as *const AttachArgs,
        )
    };
    if rc != 0 {
        return Err(DeviceError::Attach {
            path: path.display().to_string(),
            source: std::io::Error::last_os_error(),
        });
    }
    crate::notify::ready(&path.display().to_string());
    Ok(())
}

/// Tells the kernel completions are waiting.
pub fn doorbell(fd: BorrowedFd<'_>) {
    // SAFETY: DOORBELL takes no argument.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), KGPU_IOC_DOORBELL as _) };
    if rc != 0 {
        log::debug!("doorbell: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(path: &str, sys: &str) -> String {
        check_node(Path::new(path), Path::new(sys))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn only_the_kgpu_misc_device_is_accepted() {
        let e = why("/etc/passwd", "/sys");
        assert!(
            e.contains("/etc/passwd is not the kgpu device: a regular file"),
            "{e}"
        );
        assert!(!e.contains("module refused"), "{e}");
        assert!(why("/etc", "/sys").contains("a directory"));
        assert!(why("/dev/null", "/sys").contains("character device 1:3, not a misc device"));
        assert!(why("/nonexistent/kgpu", "/sys").contains("does not exist"));
        // A misc device by another name, with a sysfs that says so.
        let sys = std::env::temp_dir().join(format!("kgpu-dev-sys-{}", std::process::id()));
        let dir = sys.join("dev/char/10:229");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("uevent"), "MAJOR=10\nMINOR=229\nDEVNAME=fuse\n").unwrap();
        let fuse = Path::new("/dev/fuse");
        if fuse.exists() {
            let e = check_node(fuse, &sys).unwrap_err().to_string();
            assert!(e.contains("is \"fuse\", not \"kgpu\""), "{e}");
            std::fs::write(dir.join("uevent"), "MAJOR=10\nMINOR=229\nDEVNAME=kgpu\n").unwrap();
            assert!(check_node(fuse, &sys).is_ok());
        }
        std::fs::remove_dir_all(&sys).unwrap();
    }
}
