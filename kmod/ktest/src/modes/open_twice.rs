// SPDX-License-Identifier: GPL-2.0-only

//! `open-twice`: a second opener of /dev/kgpu gets EBUSY.

use crate::dev::{errno_of, open_dev};
use crate::sys::EBUSY;
use crate::util::Checks;

pub fn open_twice() -> ! {
    let mut c = Checks { failed: 0 };
    let first = open_dev();
    c.check(
        "first open succeeds",
        first.is_ok(),
        format!("{:?}", first.as_ref().err()),
    );
    let second = open_dev();
    c.check(
        "second open gets EBUSY",
        errno_of(&second) == EBUSY,
        format!("errno {}", errno_of(&second)),
    );
    drop(second);
    drop(first);
    let third = open_dev();
    c.check(
        "open after close succeeds",
        third.is_ok(),
        format!("{:?}", third.as_ref().err()),
    );
    c.finish()
}
