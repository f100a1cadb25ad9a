// SPDX-License-Identifier: GPL-2.0-only

//! `serve header`: every layout field of the header overwritten while
//! serving; then the kernel's geometry and a reattach are checked.

use crate::dev::{attach, open_dev, stat_u64};
use crate::figures::Figures;
use crate::session::Session;
use crate::sys::EBADMSG;
use crate::util::{Checks, Rng};
use kgpu_common::abi::{self, RegionHeader};
use kgpu_common::region::{init_header, KNOWN_FEATURES};
use std::process::exit;

/// Header mode: every layout field of the header gets a wrong value, and the
/// reserved rest of the page random bytes (the atomics stay: the helper
/// needs its heartbeat).
pub fn overwrite_header(s: &Session, rng: &mut Rng) {
    let h = s.r.base.cast::<RegionHeader>();
    let g = s.geom();
    // SAFETY: fields of the header page of our mapping, written through raw
    // pointers (the kernel only reads the atomics, which are not touched).
    unsafe {
        use std::ptr::{addr_of_mut, write_volatile as w};
        w(
            addr_of_mut!((*h).magic),
            abi::REGION_MAGIC ^ (1 | rng.next()),
        );
        w(
            addr_of_mut!((*h).version),
            abi::ABI_VERSION + 1 + rng.below(100) as u32,
        );
        w(addr_of_mut!((*h).header_size), rng.next() as u32 | 1);
        w(
            addr_of_mut!((*h).region_size),
            g.region_size ^ (1 | rng.next()),
        );
        w(addr_of_mut!((*h).sq_off), rng.next());
        w(addr_of_mut!((*h).sq_entries), (rng.next() as u32) | 3);
        w(addr_of_mut!((*h).sqe_size), 1 + rng.below(4096) as u32);
        w(addr_of_mut!((*h).cq_off), rng.next());
        w(addr_of_mut!((*h).cq_entries), 1 << 31);
        w(addr_of_mut!((*h).cqe_size), 0);
        w(addr_of_mut!((*h).data_off), g.region_size - 1);
        w(addr_of_mut!((*h).data_size), u64::MAX);
        w(addr_of_mut!((*h).features), rng.next() | 1 << 63);
        let tail = std::mem::offset_of!(RegionHeader, heartbeat) + 8;
        rng.fill(s.r.base.add(tail), abi::HEADER_SIZE as usize - tail);
    }
}

/// Header mode: answers this many requests with the header overwritten,
/// then checks that the same region cannot be attached again.
pub const HEADER_REQUESTS: u64 = 1000;

/// Header mode, at the end: the kernel still used its own geometry; the same
/// region, header overwritten, cannot be attached again; restored, it can.
pub fn header_reattach(s: Session, c: &mut Checks, fig: &Figures) -> Session {
    let g = s.geom();
    for (name, want) in [
        ("sq_entries", u64::from(g.sq_entries)),
        ("cq_entries", u64::from(g.cq_entries)),
        ("region_bytes", g.region_size),
        ("data_bytes", g.data_size),
    ] {
        let got = stat_u64(name);
        c.check(
            &format!("kernel's {name} unchanged"),
            got == want,
            format!("{got}, wanted {want}"),
        );
    }
    fig.print("header done");
    let Session { f, r, .. } = s;
    drop(f);
    let f = open_dev().unwrap_or_else(|e| {
        println!("kgpu-ktest: reopen: {e}");
        exit(1)
    });
    let rc = attach(&f, &r.args());
    c.check(
        "attach with the overwritten header refused (EBADMSG)",
        rc == EBADMSG,
        format!("errno {rc}"),
    );
    // SAFETY: our own mapping; the kernel refused it and holds nothing.
    unsafe { init_header(r.base, &r.geom, KNOWN_FEATURES) };
    let rc = attach(&f, &r.args());
    c.check(
        "attach after restoring the header",
        rc == 0,
        format!("errno {rc}"),
    );
    if rc != 0 {
        exit(1);
    }
    println!(
        "kgpu-ktest: header: done, {} checks failed, serving correctly",
        c.failed
    );
    Session::with(f, r)
}
