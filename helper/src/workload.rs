//! Jobs: a request with its bytes, which can be run through the ring (staged
//! into a submitter's data area) or directly on the CPU in the calling thread.
//! Shared by the self-test, the benchmark and the tests.

use crate::dispatch::CpuServices;
use crate::shm::DataArea;
use crate::standin::{Request, Submitter};
use kgpu_aes::proto::{self as aesp, AesParams};
use kgpu_common::abi::{service, Extent, Sqe, Status, PARAMS_LEN};
use kgpu_raid6::proto::{self as r6p, Raid6Params};

/// A small, fast, seedable generator (xorshift64*), for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// A request and its bytes.
#[derive(Clone, Debug)]
pub struct Job {
    /// Service id.
    pub service: u16,
    /// Operation.
    pub op: u16,
    /// Key cache tag.
    pub key_tag: u64,
    /// Key bytes.
    pub key: Vec<u8>,
    /// Input bytes.
    pub input: Vec<u8>,
    /// Auxiliary bytes.
    pub aux: Vec<u8>,
    /// Initial content of the output (for read-modify-write operations);
    /// empty means "no initial content" and the output has `out_len` bytes.
    pub output_init: Vec<u8>,
    /// Output length.
    pub out_len: usize,
    /// Run in place (output extent = input extent).
    pub in_place: bool,
    /// Service-defined unit.
    pub unit: u32,
    /// Service-defined count.
    pub count: u32,
    /// Service-defined parameters.
    pub params: [u8; PARAMS_LEN],
}

impl Job {
    /// An ECHO job.
    pub fn echo(data: Vec<u8>) -> Self {
        Job {
            service: service::ECHO,
            op: 0,
            key_tag: 0,
            key: Vec::new(),
            out_len: data.len(),
            input: data,
            aux: Vec::new(),
            output_init: Vec::new(),
            in_place: false,
            unit: 0,
            count: 0,
            params: [0; PARAMS_LEN],
        }
    }

    /// An AES job, in place.
    pub fn aes(
        op: u16,
        key: Vec<u8>,
        key_tag: u64,
        data: Vec<u8>,
        unit: u32,
        params: AesParams,
        aux: Vec<u8>,
    ) -> Self {
        Job {
            service: service::AES,
            op,
            key_tag,
            key,
            out_len: data.len(),
            input: data,
            aux,
            output_init: Vec::new(),
            in_place: true,
            unit,
            count: 0,
            params: params.to_bytes(),
        }
    }

    /// A RAID6 job: `input` holds the blocks the operation reads, laid out
    /// as the service defines; `output_init` the old P/Q for XOR_SYNDROME.
    pub fn raid6(
        op: u16,
        disks: u32,
        unit: u32,
        params: Raid6Params,
        input: Vec<u8>,
        output_init: Vec<u8>,
    ) -> Self {
        Job {
            service: service::RAID6,
            op,
            key_tag: 0,
            key: Vec::new(),
            input,
            aux: Vec::new(),
            output_init,
            out_len: 2 * unit as usize,
            in_place: false,
            unit,
            count: disks,
            params: params.to_bytes(),
        }
    }

    /// Bytes of payload the job moves (its input), for throughput figures.
    pub fn payload(&self) -> u64 {
        self.input.len() as u64
    }

    /// A short name ("aes xts-enc", "raid6 gen", ...).
    pub fn name(&self) -> String {
        match crate::services::registration(self.service) {
            Some(r) => match (r.op_name)(self.op) {
                Some(op) => format!("{} {op}", r.name),
                None => r.name.to_string(),
            },
            None => "unknown".to_string(),
        }
    }

    fn sqe_for(&self, key: Extent, input: Extent, output: Extent, aux: Extent) -> Sqe {
        Sqe {
            service: self.service,
            op: self.op,
            key_tag: self.key_tag,
            key,
            input,
            output,
            aux,
            unit: self.unit,
            count: self.count,
            params: self.params,
            ..Sqe::ZERO
        }
    }

    /// Runs the job directly on the CPU in the calling thread (no ring).
    pub fn direct(&self, services: &CpuServices) -> Result<Vec<u8>, Status> {
        let mut buf = DirectBuf::new(self);
        buf.run(self, services)
    }

    /// Copies the job's bytes into freshly allocated extents of `sub`.
    /// `None` when the data area has no room now.
    pub fn stage(&self, sub: &Submitter) -> Option<Staged> {
        let mut got: Vec<Extent> = Vec::new();
        let mut take = |len: usize| -> Option<Extent> {
            let e = sub.alloc(len as u64)?;
            if e.len > 0 {
                got.push(e);
            }
            Some(e)
        };
        let staged = (|| {
            let key = take(self.key.len())?;
            let input = take(self.input.len())?;
            let output = if self.in_place {
                input
            } else {
                take(self.out_len)?
            };
            let aux = take(self.aux.len())?;
            Some((key, input, output, aux))
        })();
        let Some((key, input, output, aux)) = staged else {
            for e in got {
                sub.free(e);
            }
            return None;
        };
        sub.write(key, &self.key);
        sub.write(input, &self.input);
        if !self.in_place && !self.output_init.is_empty() {
            sub.write(output, &self.output_init);
        }
        sub.write(aux, &self.aux);
        let s = self.sqe_for(key, input, output, aux);
        Some(Staged {
            request: Request {
                service: s.service,
                op: s.op,
                key_tag: s.key_tag,
                key,
                input,
                output,
                aux,
                unit: s.unit,
                count: s.count,
                params: s.params,
            },
            extents: got,
        })
    }
}

/// A job copied into a submitter's data area.
#[derive(Clone, Debug)]
pub struct Staged {
    /// The request to submit.
    pub request: Request,
    /// Every extent allocated for it.
    pub extents: Vec<Extent>,
}

impl Staged {
    /// Reads the output (after completion).
    pub fn output(&self, sub: &Submitter, bytes: u64) -> Vec<u8> {
        let mut v = vec![0; bytes.min(self.request.output.len) as usize];
        sub.read(self.request.output, &mut v);
        v
    }

    /// Frees the extents.
    pub fn free(self, sub: &Submitter) {
        for e in self.extents {
            sub.free(e);
        }
    }
}

/// A private buffer laid out like a data area, for direct runs.
pub struct DirectBuf {
    mem: Vec<u64>,
    sqe: Sqe,
}

impl DirectBuf {
    /// A buffer sized for `job`.
    pub fn new(job: &Job) -> Self {
        let r = |n: usize| (n as u64).div_ceil(64) * 64;
        let key = Extent::new(0, job.key.len() as u64);
        let input = Extent::new(r(job.key.len()), job.input.len() as u64);
        let output = if job.in_place {
            input
        } else {
            Extent::new(input.off + r(job.input.len()), job.out_len as u64)
        };
        let aux = Extent::new(output.off + r(output.len as usize), job.aux.len() as u64);
        let total = aux.off + r(job.aux.len());
        DirectBuf {
            mem: vec![0; (total as usize).div_ceil(8).max(1)],
            sqe: job.sqe_for(key, input, output, aux),
        }
    }

    fn area(&mut self) -> DataArea {
        // SAFETY: the window covers exactly our own buffer, which outlives it.
        unsafe { DataArea::from_raw(self.mem.as_mut_ptr().cast(), self.mem.len() as u64 * 8) }
    }

    fn put(&mut self, e: Extent, src: &[u8]) {
        let area = self.area();
        // SAFETY: `e` lies in the buffer by construction in `new`.
        unsafe { area.slice_mut(Extent::new(e.off, src.len() as u64)) }.copy_from_slice(src);
    }

    /// Loads the job's bytes and runs it; returns the output.
    pub fn run(&mut self, job: &Job, services: &CpuServices) -> Result<Vec<u8>, Status> {
        let s = self.sqe;
        self.put(s.key, &job.key);
        self.put(s.input, &job.input);
        if !job.in_place && !job.output_init.is_empty() {
            self.put(s.output, &job.output_init);
        }
        self.put(s.aux, &job.aux);
        let area = self.area();
        let n = services.execute(&s, &area)?;
        // SAFETY: the output extent lies in the buffer.
        Ok(unsafe { area.slice(Extent::new(s.output.off, n)) }.to_vec())
    }

    /// Runs the job on bytes already loaded (for timing loops).
    pub fn rerun(&mut self, services: &CpuServices) -> Result<u64, Status> {
        let area = self.area();
        services.execute(&self.sqe, &area)
    }
}

/// AES modes the tests and the benchmark exercise: (op, XTS key?).
pub const AES_OPS: [u16; 7] = [
    aesp::op::ECB_ENC,
    aesp::op::ECB_DEC,
    aesp::op::CBC_ENC,
    aesp::op::CBC_DEC,
    aesp::op::CTR,
    aesp::op::XTS_ENC,
    aesp::op::XTS_DEC,
];

/// A random AES job: random key of a size valid for `op`, sector units with
/// plain64 or listed IVs, `len` bytes (rounded to what the mode accepts).
pub fn random_aes(rng: &mut Rng, op: u16, len: usize) -> Job {
    let xts = matches!(op, aesp::op::XTS_ENC | aesp::op::XTS_DEC);
    let key_len = if xts {
        [32, 64][rng.below(2) as usize]
    } else {
        [16, 24, 32][rng.below(3) as usize]
    };
    let key = rng.bytes(key_len);
    let ecb = matches!(op, aesp::op::ECB_ENC | aesp::op::ECB_DEC);
    let len = (len.max(16) / 16) * 16;
    let unit: u32 = if ecb {
        0
    } else {
        [512u32, 4096][rng.below(2) as usize].min(len as u32)
    };
    let unit = if unit > 0 && !len.is_multiple_of(unit as usize) {
        0
    } else {
        unit
    };
    let units = if unit == 0 { 1 } else { len / unit as usize };
    let (params, aux) = if ecb {
        (AesParams::none(), Vec::new())
    } else if unit == 0 || units == 1 {
        let mut iv = [0u8; 16];
        rng.fill(&mut iv);
        (AesParams::single(iv), Vec::new())
    } else if rng.below(2) == 0 {
        let p = AesParams {
            iv_mode: aesp::IV_PLAIN64,
            iv: [0; 16],
            start_sector: rng.next_u64() >> 8,
        };
        (p, Vec::new())
    } else {
        let p = AesParams {
            iv_mode: aesp::IV_LIST,
            iv: [0; 16],
            start_sector: 0,
        };
        (p, rng.bytes(16 * units))
    };
    let tag = rng.next_u64() | 1;
    Job::aes(op, key, tag, rng.bytes(len), unit, params, aux)
}

/// A random RAID6 gen_syndrome job over `disks` disks of `unit` bytes.
pub fn random_raid6_gen(rng: &mut Rng, disks: u32, unit: u32) -> Job {
    let data = rng.bytes((disks as usize - 2) * unit as usize);
    Job::raid6(
        r6p::op::GEN_SYNDROME,
        disks,
        unit,
        Raid6Params::NONE,
        data,
        Vec::new(),
    )
}
