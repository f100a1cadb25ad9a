// SPDX-License-Identifier: GPL-2.0-only

//! What a serving run did, for the tests to compare with the kernel's counters.

/// What a serving run did, printed so that the tests can compare it with the
/// kernel's counters.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// Submissions taken off the ring.
    pub requests: u64,
    /// Correct answers posted.
    pub answers: u64,
    /// Error answers posted (a valid error status, no bytes).
    pub errors: u64,
    /// Requests never answered.
    pub unanswered: u64,
    /// Records posted that the kernel must reject (garbage, jumps).
    pub bad_records: u64,
    /// Records of random bytes posted.
    pub random_records: u64,
    /// Random writes into the region, by target.
    pub scribbles: [u64; SCRIBBLE_TARGETS],
    pub scribbled_bytes: u64,
    /// Random writes into the extents of requests then failed or left
    /// unanswered (random mode).
    pub data_scribbles: u64,
    /// Header layout overwrites (header mode).
    pub header_overwrites: u64,
    /// Attaches after the first (random, jumps).
    pub reattaches: u64,
    /// Sessions the kernel ended with POLLHUP.
    pub hangups: u64,
    /// Sessions ended because the helper's own end of a ring was corrupted.
    pub helper_ring_errors: u64,
}

const SCRIBBLE_TARGETS: usize = 7;
const SCRIBBLE_NAMES: [&str; SCRIBBLE_TARGETS] = [
    "header",
    "sq_head",
    "sq_tail",
    "cq_head",
    "cq_tail",
    "sq_records",
    "cq_records",
];

impl Figures {
    pub fn print(&self, label: &str) {
        let mut by = String::new();
        for (n, c) in SCRIBBLE_NAMES.iter().zip(self.scribbles) {
            by.push_str(&format!(" {n}={c}"));
        }
        println!(
            "kgpu-ktest: figures ({label}): requests={} answers={} errors={} unanswered={} bad_records={} random_records={} scribbles={} scribbled_bytes={} data_scribbles={} header_overwrites={} reattaches={} hangups={} helper_ring_errors={} |{by}",
            self.requests,
            self.answers,
            self.errors,
            self.unanswered,
            self.bad_records,
            self.random_records,
            self.scribbles.iter().sum::<u64>(),
            self.scribbled_bytes,
            self.data_scribbles,
            self.header_overwrites,
            self.reattaches,
            self.hangups,
            self.helper_ring_errors
        );
    }
}
