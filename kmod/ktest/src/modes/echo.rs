// SPDX-License-Identifier: GPL-2.0-only

//! `serve echo`: the correct answer to a request (also `wrongdata`'s, a byte
//! changed).

use kgpu_common::abi::{self, service, Cqe, Sqe, Status};
use kgpu_common::request::check_sqe;

/// The correct answer to `sqe` (ECHO only), the output written.
pub fn answer(sqe: &Sqe, data: *mut u8, data_size: u64, wrong: bool) -> Cqe {
    let mut cqe = Cqe {
        slot: sqe.slot,
        gen: sqe.gen,
        status: Status::Ok.raw(),
        backend: abi::backend::CPU,
        bytes: 0,
        nanos: 0,
    };
    match check_sqe(sqe, data_size) {
        Ok(x) if sqe.service == service::ECHO && x.output.len >= x.input.len => {
            // SAFETY: both extents were checked to lie in the data area.
            unsafe {
                std::ptr::copy(
                    data.add(x.input.off as usize),
                    data.add(x.output.off as usize),
                    x.input.len as usize,
                );
                if wrong && x.input.len > 0 {
                    *data.add(x.output.off as usize) ^= 0x5a;
                }
            }
            cqe.bytes = x.input.len;
        }
        Ok(_) if sqe.service != service::ECHO => cqe.status = Status::UnknownService.raw(),
        Ok(_) => cqe.status = Status::BadLength.raw(),
        Err(s) => cqe.status = s.raw(),
    }
    cqe
}
