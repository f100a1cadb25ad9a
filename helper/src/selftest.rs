//! `kgpu-helper selftest`: known answers from the standards and random
//! cross-checks, each run through the ring against whatever backend serves it.

use crate::dispatch::CpuServices;
use crate::standin::{SubmitError, Submitter};
use crate::workload::{random_aes, random_raid6_gen, Job, Rng, AES_OPS};
use kgpu_aes::proto::{self as aesp, AesParams};
use kgpu_common::abi::Status;
use kgpu_raid6::proto::{self as r6p, Raid6Params};
use std::time::Duration;

/// One case: a job and the output it must produce.
pub struct Case {
    /// What the case checks.
    pub name: String,
    /// The job.
    pub job: Job,
    /// The expected output.
    pub want: Vec<u8>,
}

/// Decodes a hex string (test vectors only; panics on a malformed literal).
pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex literal"))
        .collect()
}

fn iv(s: &str) -> [u8; 16] {
    hex(s).try_into().expect("16-byte IV literal")
}

fn aes_kat(name: &str, op: u16, key: &str, params: AesParams, pt: &str, ct: &str) -> Case {
    Case {
        name: name.to_string(),
        job: Job::aes(op, hex(key), 0, hex(pt), 0, params, Vec::new()),
        want: hex(ct),
    }
}

/// Known answers: FIPS-197 appendix C, NIST SP 800-38A, IEEE 1619-2007, and
/// RAID6 syndromes small enough to compute by hand in GF(2^8)/0x11d.
pub fn known_answers() -> Vec<Case> {
    use aesp::op::*;
    let none = AesParams::none();
    let p38a = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51";
    let mut v = vec![
        aes_kat(
            "FIPS-197 C.1 AES-128",
            ECB_ENC,
            "000102030405060708090a0b0c0d0e0f",
            none,
            "00112233445566778899aabbccddeeff",
            "69c4e0d86a7b0430d8cdb78070b4c55a",
        ),
        aes_kat(
            "FIPS-197 C.2 AES-192",
            ECB_ENC,
            "000102030405060708090a0b0c0d0e0f1011121314151617",
            none,
            "00112233445566778899aabbccddeeff",
            "dda97ca4864cdfe06eaf70a0ec0d7191",
        ),
        aes_kat(
            "FIPS-197 C.3 AES-256",
            ECB_ENC,
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            none,
            "00112233445566778899aabbccddeeff",
            "8ea2b7ca516745bfeafc49904b496089",
        ),
        aes_kat(
            "FIPS-197 C.1 AES-128 decrypt",
            ECB_DEC,
            "000102030405060708090a0b0c0d0e0f",
            none,
            "69c4e0d86a7b0430d8cdb78070b4c55a",
            "00112233445566778899aabbccddeeff",
        ),
        aes_kat(
            "SP 800-38A F.1.1 ECB-AES128",
            ECB_ENC,
            "2b7e151628aed2a6abf7158809cf4f3c",
            none,
            p38a,
            "3ad77bb40d7a3660a89ecaf32466ef97 f5d3d58503b9699de785895a96fdbaaf",
        ),
        aes_kat(
            "SP 800-38A F.2.1 CBC-AES128 encrypt",
            CBC_ENC,
            "2b7e151628aed2a6abf7158809cf4f3c",
            AesParams::single(iv("000102030405060708090a0b0c0d0e0f")),
            p38a,
            "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2",
        ),
        aes_kat(
            "SP 800-38A F.2.2 CBC-AES128 decrypt",
            CBC_DEC,
            "2b7e151628aed2a6abf7158809cf4f3c",
            AesParams::single(iv("000102030405060708090a0b0c0d0e0f")),
            "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2",
            p38a,
        ),
        aes_kat(
            "SP 800-38A F.5.1 CTR-AES128",
            CTR,
            "2b7e151628aed2a6abf7158809cf4f3c",
            AesParams::single(iv("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")),
            p38a,
            "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff",
        ),
        aes_kat(
            "IEEE 1619 XTS-AES-128 vector 1",
            XTS_ENC,
            "00000000000000000000000000000000 00000000000000000000000000000000",
            AesParams::single([0; 16]),
            "00000000000000000000000000000000 00000000000000000000000000000000",
            "917cf69ebd68b2ec9b9fe9a3eadda692 cd43d2f59598ed858c02c2652fbf922e",
        ),
        aes_kat(
            "IEEE 1619 XTS-AES-128 vector 2",
            XTS_ENC,
            "11111111111111111111111111111111 22222222222222222222222222222222",
            AesParams::single(iv("33333333330000000000000000000000")),
            "44444444444444444444444444444444 44444444444444444444444444444444",
            "c454185e6a16936e39334038acef838b fb186fff7480adc4289382ecd6d394f0",
        ),
        aes_kat(
            "IEEE 1619 XTS-AES-128 vector 2 decrypt",
            XTS_DEC,
            "11111111111111111111111111111111 22222222222222222222222222222222",
            AesParams::single(iv("33333333330000000000000000000000")),
            "c454185e6a16936e39334038acef838b fb186fff7480adc4289382ecd6d394f0",
            "44444444444444444444444444444444 44444444444444444444444444444444",
        ),
    ];
    // RAID6: P is the xor; Q = sum of g^i * D_i with g = {02}, poly 0x11d.
    // {02}*{80} = {1d}, {04}*{80} = {3a}; {01} ^ {02} = {03}.
    let raid6 = |name: &str, disks: u32, fill: &[u8], p: u8, q: u8| {
        let unit = 64usize;
        let input: Vec<u8> = fill
            .iter()
            .flat_map(|b| std::iter::repeat_n(*b, unit))
            .collect();
        let mut want = vec![p; unit];
        want.extend(std::iter::repeat_n(q, unit));
        Case {
            name: name.to_string(),
            job: Job::raid6(
                r6p::op::GEN_SYNDROME,
                disks,
                unit as u32,
                Raid6Params::NONE,
                input,
                Vec::new(),
            ),
            want,
        }
    };
    v.push(raid6("RAID6 P/Q, D = {01,01}", 4, &[1, 1], 0, 3));
    v.push(raid6(
        "RAID6 P/Q, D = {00,80,00}",
        5,
        &[0, 0x80, 0],
        0x80,
        0x1d,
    ));
    v.push(raid6(
        "RAID6 P/Q, D = {00,00,80}",
        5,
        &[0, 0, 0x80],
        0x80,
        0x3a,
    ));
    v
}

/// Random cases: the ring's answer must equal the direct CPU call's.
pub fn random_cases(seed: u64, services: &CpuServices) -> Vec<Case> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::new();
    for op in AES_OPS {
        for len in [16usize, 4096, 65536 + 48, 1 << 20] {
            let job = random_aes(&mut rng, op, len);
            let want = job.direct(services).expect("valid random job");
            v.push(Case {
                name: format!(
                    "{} {} bytes, random, vs direct CPU",
                    job.name(),
                    job.input.len()
                ),
                job,
                want,
            });
        }
    }
    for (disks, unit) in [(4u32, 64u32), (8, 4096), (16, 65536)] {
        let job = random_raid6_gen(&mut rng, disks, unit);
        let want = job.direct(services).expect("valid random job");
        v.push(Case {
            name: format!("raid6 gen {disks} disks x {unit} bytes, random, vs direct CPU"),
            job,
            want,
        });
    }
    v
}

/// Runs one case through the ring; `Err` says what went wrong.
pub fn run_case(sub: &Submitter, case: &Case) -> Result<(), String> {
    let staged = case.job.stage(sub).ok_or("no room in the data area")?;
    // Poison the output so a request that writes nothing cannot pass.
    if !case.job.in_place {
        sub.write(
            staged.request.output,
            &vec![0xa5; staged.request.output.len as usize],
        );
    }
    let r = (|| {
        let t = loop {
            match sub.submit(&staged.request) {
                Ok(t) => break t,
                Err(SubmitError::Busy) => std::thread::yield_now(),
                Err(e) => return Err(format!("submit: {e}")),
            }
        };
        let c = sub
            .wait(t, Duration::from_secs(30))
            .map_err(|e| format!("wait: {e}"))?;
        if c.status != Status::Ok {
            return Err(format!("status: {}", c.status.as_str()));
        }
        let got = staged.output(sub, c.bytes);
        if got != case.want {
            let at = got
                .iter()
                .zip(&case.want)
                .position(|(a, b)| a != b)
                .unwrap_or(got.len().min(case.want.len()));
            return Err(format!(
                "output differs at byte {at} (got {} bytes, want {})",
                got.len(),
                case.want.len()
            ));
        }
        Ok(())
    })();
    staged.free(sub);
    r
}
