//! Running one submission record on the CPU: the common checks, then the
//! service's own. Every path ends in a completion; nothing panics on input.

use crate::shm::DataArea;
use kgpu_common::abi::{service, Sqe, Status};
use kgpu_common::request::{check_sqe, CheckedExtents};

/// The CPU implementations of every service, shared by all workers.
#[derive(Default)]
pub struct CpuServices {
    aes: kgpu_aes::cpu::AesCpu,
    raid6: kgpu_raid6::cpu::Raid6Cpu,
}

impl CpuServices {
    /// All services with empty key caches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `sqe` against `area`; returns the output bytes written.
    pub fn execute(&self, sqe: &Sqe, area: &DataArea) -> Result<u64, Status> {
        let ext = check_sqe(sqe, area.size())?;
        match sqe.service {
            service::ECHO => echo(&ext, area),
            service::AES => self.aes(sqe, &ext, area),
            service::RAID6 => self.raid6(sqe, &ext, area),
            _ => Err(Status::UnknownService),
        }
    }

    fn aes(&self, sqe: &Sqe, ext: &CheckedExtents, area: &DataArea) -> Result<u64, Status> {
        if ext.input.len != ext.output.len {
            return Err(Status::BadLength);
        }
        // Refuse before touching the output: a bad request changes nothing.
        let params =
            kgpu_aes::proto::AesParams::from_bytes(&sqe.params).map_err(kgpu_aes::proto_status)?;
        kgpu_aes::proto::validate(
            sqe.op,
            ext.key.len,
            ext.output.len,
            ext.aux.len,
            sqe.unit,
            &params,
        )
        .map_err(kgpu_aes::proto_status)?;
        copy_to_output(ext, area);
        // SAFETY: extents were checked to fit; the output is disjoint from the
        // key and aux extents, and the request owns its extents while in flight.
        let (key, aux, data) = unsafe {
            (
                area.slice(ext.key),
                area.slice(ext.aux),
                area.slice_mut(ext.output),
            )
        };
        let req = kgpu_aes::cpu::AesRequest {
            op: sqe.op,
            unit: sqe.unit,
            params: sqe.params,
            key_tag: sqe.key_tag,
            key,
            aux,
        };
        self.aes.execute(&req, data).map_err(|e| e.status())
    }

    fn raid6(&self, sqe: &Sqe, ext: &CheckedExtents, area: &DataArea) -> Result<u64, Status> {
        if ext.in_place {
            return Err(Status::BadExtent);
        }
        // SAFETY: extents fit and input and output are disjoint (checked).
        let (input, output) = unsafe { (area.slice(ext.input), area.slice_mut(ext.output)) };
        let req = kgpu_raid6::cpu::Raid6Request {
            op: sqe.op,
            disks: sqe.count,
            unit: sqe.unit,
            params: &sqe.params,
        };
        self.raid6
            .execute(&req, input, output)
            .map_err(|e| e.status())
    }
}

/// ECHO: the output receives the input (used by tests and to measure the ring).
fn echo(ext: &CheckedExtents, area: &DataArea) -> Result<u64, Status> {
    if ext.input.len != ext.output.len {
        return Err(Status::BadLength);
    }
    copy_to_output(ext, area);
    Ok(ext.output.len)
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
