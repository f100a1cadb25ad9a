// SPDX-License-Identifier: GPL-2.0-only

//! `attach-one`: one well-formed attach, its outcome printed.

use crate::dev::{attach, open_dev};
use crate::region::Region;
use std::process::exit;

/// Attaches one well-formed region and prints the outcome (`errno 0` when
/// attached); the region goes with the process.
pub fn attach_one() -> ! {
    let f = open_dev().expect("open /dev/kgpu");
    let r = Region::new(64, 128, 1 << 20);
    println!("attach: errno {}", attach(&f, &r.args()));
    exit(0)
}
