//! Running one submission record on the CPU: the common checks, then the
//! service's own. Every path ends in a completion; nothing panics on input.

use crate::services::Registry;
use crate::shm::DataArea;
use kgpu_common::abi::{Sqe, Status};
use kgpu_common::request::{check_sqe, CheckedExtents};

/// The CPU implementations of every service, shared by all workers.
#[derive(Default)]
pub struct CpuServices {
    registry: Registry,
}

impl CpuServices {
    /// All services with empty key caches.
    pub fn new() -> Self {
        Self::default()
    }

    /// The services.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Runs `sqe` against `area`; returns the output bytes written.
    pub fn execute(&self, sqe: &Sqe, area: &DataArea) -> Result<u64, Status> {
        let ext = check_sqe(sqe, area.size())?;
        let (_, svc) = self
            .registry
            .find(sqe.service)
            .ok_or(Status::UnknownService)?;
        svc.execute(sqe, &ext, area)
    }
}

/// Copies the input extent into the output extent unless they are the same.
pub fn copy_to_output(ext: &CheckedExtents, area: &DataArea) {
    if !ext.in_place && ext.input.len > 0 {
        let n = ext.input.len.min(ext.output.len) as usize;
        // SAFETY: both extents fit the area and do not overlap (checked).
        unsafe {
            std::ptr::copy_nonoverlapping(area.ptr(ext.input.off), area.ptr(ext.output.off), n)
        };
    }
}
