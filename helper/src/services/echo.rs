//! ECHO: the output receives the input (used by tests and to measure the
//! ring itself). CPU only.

use super::Service;
use crate::dispatch::copy_to_output;
use crate::shm::DataArea;
use kgpu_common::abi::{service, Sqe, Status};
use kgpu_common::request::CheckedExtents;

/// The ECHO service.
#[derive(Default)]
pub struct Echo;

impl Service for Echo {
    const ID: u16 = service::ECHO;
    const NAME: &'static str = "echo";
    type Command = CheckedExtents;

    fn parse(&self, _sqe: &Sqe, ext: &CheckedExtents) -> Result<CheckedExtents, Status> {
        if ext.input.len != ext.output.len {
            return Err(Status::BadLength);
        }
        Ok(*ext)
    }

    fn execute(&self, ext: &CheckedExtents, area: &DataArea) -> Result<u64, Status> {
        copy_to_output(ext, area);
        Ok(ext.output.len)
    }
}
