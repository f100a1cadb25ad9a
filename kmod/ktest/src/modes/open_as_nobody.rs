// SPDX-License-Identifier: GPL-2.0-only

//! `open-as-nobody`: uid 65534 cannot open /dev/kgpu.

use crate::dev::{errno_of, open_dev};
use crate::sys::{setgid, setuid, EACCES, EPERM};
use crate::util::Checks;
use std::io;

pub fn open_as_nobody() -> ! {
    let mut c = Checks { failed: 0 };
    // SAFETY: plain syscalls dropping privileges for the rest of the process.
    let dropped = unsafe { setgid(65534) == 0 && setuid(65534) == 0 };
    c.check(
        "dropped to uid 65534",
        dropped,
        io::Error::last_os_error().to_string(),
    );
    let r = open_dev();
    let e = errno_of(&r);
    c.check(
        "open refused (EACCES or EPERM)",
        e == EACCES || e == EPERM,
        format!("errno {e}"),
    );
    c.finish()
}
