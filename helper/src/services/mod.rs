//! The services the helper serves, behind one interface.
//!
//! A service is a type implementing [`Service`]: its id and name, one
//! [`Service::parse`] that turns a submission record and its checked extents
//! into a typed command (the only place a request is validated: what comes
//! after works on the command and checks nothing again), and the command's
//! execution on the CPU. A service with CUDA kernels also implements
//! [`gpu::GpuService`] (feature `cuda`): its kernels and their launch, how a
//! request is cut into parts and the job that calibrates it.
//!
//! [`SERVICES`] lists them; [`Registry`] holds one instance of each (with its
//! state, such as key caches) in that order. Everything else (dispatch, the
//! CUDA backend, statistics) works over the registry and never names a
//! service: what a service knows lives in its own module here ([`echo`],
//! [`aes`], [`raid6`], [`example`], each from its folder `services/<name>/`)
//! and in its crate (`kgpu-aes`, `kgpu-raid6`, `kgpu-example`).

use crate::shm::DataArea;
use kgpu_common::abi::{Sqe, Status};
use kgpu_common::request::CheckedExtents;

#[cfg(feature = "cuda")]
pub mod gpu;

/// The services' helper halves, each from its folder
/// (`services/<name>/helper.rs`; ECHO is the helper's own), and
/// [`SERVICES`]: one line per service, in the order of the statistics rows.
macro_rules! services {
    ($($m:ident :: $t:ident => $path:literal),* $(,)?) => {
        $(
            #[path = $path]
            pub mod $m;
        )*
        /// Every service, in the order of the statistics rows.
        pub static SERVICES: &[Registration] = &[$(Registration::of::<$m::$t>(),)*];
    };
}

services! {
    aes::Aes => "../../../services/aes/helper.rs",
    raid6::Raid6 => "../../../services/raid6/helper.rs",
    echo::Echo => "echo.rs",
    example::Example => "../../../services/example/helper.rs",
}

/// One service, as the helper knows it.
pub trait Service: Default + Send + Sync + 'static {
    /// The service id of its requests (`Sqe::service`).
    const ID: u16;
    /// Its name in statistics, logs and on the command line.
    const NAME: &'static str;
    /// Whether it has a GPU path ([`gpu::GpuService`] with the `cuda`
    /// feature); its figures then go into the region header.
    const GPU: bool = false;
    /// A request that passed [`Service::parse`].
    type Command: Clone + Send + 'static;

    /// The name of an operation, for job names ("aes xts-enc"); `None` when
    /// the service has a single operation.
    fn op_name(_op: u16) -> Option<&'static str> {
        None
    }

    /// Checks everything of a request that the common checks
    /// ([`kgpu_common::request::check_sqe`], which gave `ext`) leave to the
    /// service, and decodes it. Never touches the data; an error is the
    /// completion status.
    fn parse(&self, sqe: &Sqe, ext: &CheckedExtents) -> Result<Self::Command, Status>;

    /// Runs a command on the CPU over `area` (the area `ext` was checked
    /// against); returns the output bytes written.
    fn execute(&self, cmd: &Self::Command, area: &DataArea) -> Result<u64, Status>;

    /// Its GPU part, if it has one: `Some(self)` from a service that
    /// implements [`gpu::GpuService`].
    #[cfg(feature = "cuda")]
    fn gpu(&self) -> Option<&dyn gpu::DynGpu> {
        None
    }
}

/// A [`Service`] behind a pointer: what the registry holds.
pub trait DynService: Send + Sync {
    /// [`Service::ID`].
    fn id(&self) -> u16;
    /// [`Service::NAME`].
    fn name(&self) -> &'static str;
    /// Parses the request and runs it on the CPU.
    fn execute(&self, sqe: &Sqe, ext: &CheckedExtents, area: &DataArea) -> Result<u64, Status>;
    /// [`Service::gpu`].
    #[cfg(feature = "cuda")]
    fn gpu(&self) -> Option<&dyn gpu::DynGpu>;
}

impl<S: Service> DynService for S {
    fn id(&self) -> u16 {
        S::ID
    }

    fn name(&self) -> &'static str {
        S::NAME
    }

    fn execute(&self, sqe: &Sqe, ext: &CheckedExtents, area: &DataArea) -> Result<u64, Status> {
        let cmd = self.parse(sqe, ext)?;
        Service::execute(self, &cmd, area)
    }

    #[cfg(feature = "cuda")]
    fn gpu(&self) -> Option<&dyn gpu::DynGpu> {
        Service::gpu(self)
    }
}

/// What is known of a service without building it.
pub struct Registration {
    /// [`Service::ID`].
    pub id: u16,
    /// [`Service::NAME`].
    pub name: &'static str,
    /// [`Service::GPU`].
    pub gpu: bool,
    /// [`Service::op_name`].
    pub op_name: fn(u16) -> Option<&'static str>,
    build: fn() -> Box<dyn DynService>,
}

impl Registration {
    /// The registration of `S`.
    pub const fn of<S: Service>() -> Self {
        Registration {
            id: S::ID,
            name: S::NAME,
            gpu: S::GPU,
            op_name: S::op_name,
            build: build::<S>,
        }
    }
}

fn build<S: Service>() -> Box<dyn DynService> {
    Box::new(S::default())
}

/// The position of service `id` in [`SERVICES`] (and in every [`Registry`]).
pub fn position(id: u16) -> Option<usize> {
    SERVICES.iter().position(|r| r.id == id)
}

/// The registration of service `id`.
pub fn registration(id: u16) -> Option<&'static Registration> {
    SERVICES.iter().find(|r| r.id == id)
}

/// The registration of the service called `name`.
pub fn by_name(name: &str) -> Option<&'static Registration> {
    SERVICES.iter().find(|r| r.name == name)
}

/// One instance of every service of [`SERVICES`], in that order.
pub struct Registry {
    entries: Vec<Box<dyn DynService>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// Every service, with empty caches.
    pub fn new() -> Self {
        Registry {
            entries: SERVICES.iter().map(|r| (r.build)()).collect(),
        }
    }

    /// Number of services.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The service at `pos`.
    pub fn get(&self, pos: usize) -> Option<&dyn DynService> {
        self.entries.get(pos).map(|e| &**e)
    }

    /// The service `id`, with its position.
    pub fn find(&self, id: u16) -> Option<(usize, &dyn DynService)> {
        let pos = position(id)?;
        Some((pos, &*self.entries[pos]))
    }

    /// Every service, in order.
    pub fn iter(&self) -> impl Iterator<Item = &dyn DynService> {
        self.entries.iter().map(|e| &**e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_matches_the_abi() {
        let reg = Registry::new();
        assert_eq!(reg.len(), SERVICES.len());
        for (pos, (r, s)) in SERVICES.iter().zip(reg.iter()).enumerate() {
            assert_eq!((s.id(), s.name()), (r.id, r.name));
            assert_eq!(position(r.id), Some(pos));
            assert_eq!(by_name(r.name).map(|b| b.id), Some(r.id));
            #[cfg(feature = "cuda")]
            assert_eq!(s.gpu().is_some(), r.gpu, "{}", r.name);
        }
        let mut ids: Vec<u16> = SERVICES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), SERVICES.len(), "ids are unique");
        assert!(reg.find(0).is_none());
    }
}
