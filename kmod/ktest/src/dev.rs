// SPDX-License-Identifier: GPL-2.0-only

//! The device: opening it, its ioctls, the kernel's stats file.

use crate::sys::ioctl;
use kgpu_common::ioctl::{AttachArgs, KGPU_IOC_ATTACH};
use std::ffi::{c_ulong, c_void};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

pub const DEV: &str = "/dev/kgpu";

pub fn open_dev() -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(DEV)
}

pub fn errno_of(r: &io::Result<File>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

pub fn do_ioctl(f: &File, req: u32, arg: *const c_void) -> i32 {
    // SAFETY: the kgpu ioctls read at most one AttachArgs from `arg`; the
    // tests pass either a valid AttachArgs or a deliberately bad pointer,
    // which the kernel must reject with EFAULT.
    let rc = unsafe { ioctl(f.as_raw_fd(), req as c_ulong, arg) };
    if rc == 0 {
        0
    } else {
        io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    }
}

pub fn attach(f: &File, a: &AttachArgs) -> i32 {
    do_ioctl(f, KGPU_IOC_ATTACH, (a as *const AttachArgs).cast())
}

const STATS: &str = "/sys/kernel/debug/kgpu/stats";

/// A line `NAME: VALUE` of the kernel's stats file.
pub fn stat(name: &str) -> String {
    let text = std::fs::read_to_string(STATS).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .unwrap_or("?")
        .to_owned()
}

pub fn stat_u64(name: &str) -> u64 {
    stat(name).parse().unwrap_or(u64::MAX)
}
