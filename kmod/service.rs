// SPDX-License-Identifier: GPL-2.0-only

//! The module's service table.
//!
//! A service's kernel half (`services/<name>/kernel/`, included by path from
//! `kgpu_main.rs` with one line of its `services!` list) exports one
//! [`Service`] named `SERVICE`: its ring id and name, what it registers with
//! the kernel at load and removes at unload, what it does when a helper
//! attaches, and optionally a debugfs command file. The core keeps one set of
//! counters per entry ([`crate::core_state::svc`]), prints one statistics row
//! per entry, and registers the entries in order at load through
//! [`Registered`], a guard that removes them, last first, when it is dropped:
//! on a failed load as on unload, with no hand-written unwinding.

use crate::{shim, BufWriter};
use core::ffi::{c_char, c_long, c_uint, CStr};
use kernel::prelude::*;

/// What a service's kernel half does at load, unload and attach.
pub(crate) struct Service {
    /// The ring's service id (`abi::service`) of its requests.
    pub(crate) id: u16,
    /// Its name: the row of the statistics, the name of its command file.
    pub(crate) name: &'static CStr,
    /// Registers it with the kernel (crypto API, raid6, ...). Runs at load,
    /// after the core is up; an error fails the load.
    pub(crate) init: fn() -> Result,
    /// Undoes `init`: runs at unload, or when a later service failed to load.
    pub(crate) exit: fn(),
    /// Runs after every attach of a helper, outside the lock, in process
    /// context or not: it must not sleep (the policy decisions are made here).
    pub(crate) attached: fn(),
    /// A debugfs command file `kgpu/<name>`: a command written to it runs
    /// here, and what the function writes is read back from the file.
    pub(crate) command: Option<fn(&[u8], &mut BufWriter<'_>) -> Result>,
}

fn nothing() {}

fn ready() -> Result {
    Ok(())
}

impl Service {
    /// A service that registers nothing with the kernel.
    pub(crate) const fn new(id: u16, name: &'static CStr) -> Self {
        Service {
            id,
            name,
            init: ready,
            exit: nothing,
            attached: nothing,
            command: None,
        }
    }

    /// `init` at load, `exit` at unload.
    pub(crate) const fn registers(mut self, init: fn() -> Result, exit: fn()) -> Self {
        self.init = init;
        self.exit = exit;
        self
    }

    /// `f` after every attach.
    pub(crate) const fn on_attach(mut self, f: fn()) -> Self {
        self.attached = f;
        self
    }

    /// A debugfs command file run by `f`.
    pub(crate) const fn command_file(mut self, f: fn(&[u8], &mut BufWriter<'_>) -> Result) -> Self {
        self.command = Some(f);
        self
    }

    /// The name as text.
    pub(crate) fn name(&self) -> &'static str {
        self.name.to_str().unwrap_or("?")
    }
}

/// The position of service `id` in the table.
pub(crate) fn position(id: u16) -> Option<usize> {
    crate::SERVICES.iter().position(|s| s.id == id)
}

/// Runs every service's `attached`, in table order.
pub(crate) fn helper_attached() {
    for s in crate::SERVICES {
        (s.attached)();
    }
}

// Slot 0 of the command files is the self-test's (see kgpu_shim.h).
const _: () = assert!(crate::SERVICES.len() < shim::CMD_FILES as usize);

/// The services registered so far: dropping it removes them, last first.
pub(crate) struct Registered {
    up: usize,
}

impl Registered {
    /// Registers every service of the table in order; on an error the ones
    /// already registered are removed again.
    pub(crate) fn all() -> Result<Self> {
        let mut r = Registered { up: 0 };
        for (i, s) in crate::SERVICES.iter().enumerate() {
            (s.init)()?;
            r.up += 1;
            if s.command.is_some() {
                shim::command_file(1 + i as u32, s.name)?;
            }
        }
        Ok(r)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        for (i, s) in crate::SERVICES[..self.up].iter().enumerate().rev() {
            if s.command.is_some() {
                // Waits for a command running in the file.
                shim::command_file_remove(1 + i as u32);
            }
            (s.exit)();
        }
    }
}

/// A command written to command file `slot` (the shim passes its
/// NUL-terminated copy of the user's bytes, `cmd_len` long, and a zeroed
/// buffer of `out_len` bytes, both private to the call).
#[no_mangle]
extern "C" fn kgpu_rs_command(
    slot: c_uint,
    cmd: *const c_char,
    cmd_len: usize,
    out: *mut c_char,
    out_len: usize,
) -> c_long {
    // SAFETY: as the shim guarantees (above): two live buffers of these
    // lengths that nothing else touches during the call.
    let (cmd, out) = unsafe {
        (
            core::slice::from_raw_parts(cmd.cast::<u8>(), cmd_len),
            core::slice::from_raw_parts_mut(out.cast::<u8>(), out_len),
        )
    };
    let r = match slot {
        0 => crate::selftest::run(cmd, out),
        n => match crate::SERVICES.get(n as usize - 1).and_then(|s| s.command) {
            Some(f) => {
                let mut w = BufWriter::new(out);
                f(cmd, &mut w)
            }
            None => Err(ENOENT),
        },
    };
    match r {
        Ok(()) => 0,
        Err(e) => e.to_errno() as c_long,
    }
}
