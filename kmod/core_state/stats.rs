// SPDX-License-Identifier: GPL-2.0-only

//! Counters and the debugfs statistics.

use super::STATE;
use crate::{shim, BufWriter, Counter};
use core::fmt::Write;

/// Per-service counters.
pub(crate) struct SvcStats {
    pub(crate) submitted: Counter,
    pub(crate) ok: Counter,
    pub(crate) errors: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) nohelper: Counter,
    pub(crate) busy: Counter,
    pub(crate) detach_failed: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) latency_ns: Counter,
    /// Completed `Ok` by a GPU backend (the `Cqe`'s backend field), and
    /// their input bytes.
    pub(crate) gpu_ok: Counter,
    pub(crate) gpu_bytes: Counter,
}

impl SvcStats {
    const fn new() -> Self {
        SvcStats {
            submitted: Counter::new(),
            ok: Counter::new(),
            errors: Counter::new(),
            timeouts: Counter::new(),
            nohelper: Counter::new(),
            busy: Counter::new(),
            detach_failed: Counter::new(),
            bytes_in: Counter::new(),
            bytes_out: Counter::new(),
            latency_ns: Counter::new(),
            gpu_ok: Counter::new(),
            gpu_bytes: Counter::new(),
        }
    }
}

/// One set per entry of the service table, in its order, and a last one
/// for requests of ids it does not list.
#[allow(clippy::declare_interior_mutable_const)]
const FRESH: SvcStats = SvcStats::new();
static SVC: [SvcStats; crate::SERVICES.len() + 1] = [FRESH; crate::SERVICES.len() + 1];

pub(crate) fn svc(service: u16) -> &'static SvcStats {
    &SVC[crate::service::position(service).unwrap_or(crate::SERVICES.len())]
}

pub(super) static ATTACHES: Counter = Counter::new();
pub(super) static ATTACH_REFUSED: Counter = Counter::new();
pub(super) static DETACHES: Counter = Counter::new();
pub(super) static OPEN_REFUSED: Counter = Counter::new();
pub(super) static BAD_COMPLETIONS: Counter = Counter::new();
pub(super) static RING_CORRUPT: Counter = Counter::new();
pub(super) static DOORBELLS: Counter = Counter::new();
pub(super) static POLLS: Counter = Counter::new();
pub(super) static LATE_COMPLETIONS: Counter = Counter::new();
pub(super) static STALLS: Counter = Counter::new();

pub(crate) fn write_stats(w: &mut BufWriter<'_>) {
    struct Snap {
        attached: bool,
        transport: &'static str,
        pid: i32,
        epoch: u64,
        region: u64,
        sq: u32,
        cq: u32,
        data: u64,
        data_free: u64,
        in_flight: u32,
        draining: bool,
        broken: bool,
        stalled: bool,
    }
    let s = STATE.with(|s| match s.att.as_ref() {
        Some(a) => Snap {
            attached: true,
            transport: a.transport().name(),
            pid: a.pid,
            epoch: a.epoch,
            region: a.geom.region_size,
            sq: a.geom.sq_entries,
            cq: a.geom.cq_entries,
            data: a.geom.data_size,
            data_free: a.alloc.free_bytes(),
            in_flight: a.slots.in_flight(),
            draining: a.draining,
            broken: a.broken,
            stalled: a.stalled,
        },
        None => Snap {
            attached: false,
            transport: "none",
            pid: 0,
            epoch: s.epoch,
            region: 0,
            sq: 0,
            cq: 0,
            data: 0,
            data_free: 0,
            in_flight: 0,
            draining: false,
            broken: false,
            stalled: false,
        },
    });
    let _ = writeln!(
        w,
        "state: {}",
        if !s.attached {
            "detached"
        } else if s.broken {
            "broken"
        } else if s.draining {
            "draining"
        } else if s.stalled {
            "stalled"
        } else {
            "attached"
        }
    );
    let _ = writeln!(
        w,
        "transport: {}\ntransport_param: {}\nivshmem_bar_bytes: {}",
        s.transport,
        shim::transport_mode().name(),
        crate::ivshmem::bar_bytes()
    );
    let _ = writeln!(w, "helper_pid: {}\nattach_epoch: {}", s.pid, s.epoch);
    let _ = writeln!(
        w,
        "region_bytes: {}\nsq_entries: {}\ncq_entries: {}\ndata_bytes: {}\ndata_free_bytes: {}\nin_flight: {}",
        s.region, s.sq, s.cq, s.data, s.data_free, s.in_flight
    );
    let _ = writeln!(
        w,
        "attaches: {}\nattach_refused: {}\ndetaches: {}\nopen_refused: {}\nbad_completions: {}\nlate_completions: {}\nstalls: {}\nring_corrupt: {}\ndoorbells: {}\npolls: {}",
        ATTACHES.get(),
        ATTACH_REFUSED.get(),
        DETACHES.get(),
        OPEN_REFUSED.get(),
        BAD_COMPLETIONS.get(),
        LATE_COMPLETIONS.get(),
        STALLS.get(),
        RING_CORRUPT.get(),
        DOORBELLS.get(),
        POLLS.get()
    );
    let _ = writeln!(
        w,
        "service submitted ok errors timeouts nohelper busy detach_failed bytes_in bytes_out avg_latency_ns gpu_ok gpu_bytes"
    );
    let names = crate::SERVICES.iter().map(|s| s.name()).chain(["other"]);
    for (st, name) in SVC.iter().zip(names) {
        let done = st.ok.get() + st.errors.get();
        let _ = writeln!(
            w,
            "{} {} {} {} {} {} {} {} {} {} {} {} {}",
            name,
            st.submitted.get(),
            st.ok.get(),
            st.errors.get(),
            st.timeouts.get(),
            st.nohelper.get(),
            st.busy.get(),
            st.detach_failed.get(),
            st.bytes_in.get(),
            st.bytes_out.get(),
            st.latency_ns.get().checked_div(done).unwrap_or(0),
            st.gpu_ok.get(),
            st.gpu_bytes.get()
        );
    }
}
