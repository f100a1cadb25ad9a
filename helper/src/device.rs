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

/// Opens the device with a clear error for each way it can fail.
pub fn open(path: &Path) -> Result<File, DeviceError> {
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
