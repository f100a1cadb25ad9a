//! Cross-checks of the CPU implementation against independent ones: the
//! `openssl` command (ECB, CBC, CTR) and the RustCrypto mode crates `ctr`,
//! `cbc` and `xts-mode` (CBC, CTR, XTS), on random data of many lengths, all
//! key sizes and multi-unit requests; each request also runs on every other
//! code path the CPU has (VAES, AES-NI, portable), which must agree.

use std::io::Write;
use std::process::{Command, Stdio};

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyInit, KeyIvInit, StreamCipher};
use aes::{Aes128, Aes192, Aes256, Block};
use kgpu_aes::cpu::{AesCpu, AesRequest, Path};
use kgpu_aes::proto::{self, op, AesParams};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn random(r: &mut StdRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    r.fill_bytes(&mut v);
    v
}

fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs `openssl enc` on `data`; `None` when the command is not available.
fn openssl(
    cipher: &str,
    key: &[u8],
    iv: Option<&[u8; 16]>,
    decrypt: bool,
    data: &[u8],
) -> Option<Vec<u8>> {
    let mut cmd = Command::new("openssl");
    cmd.arg("enc")
        .arg(format!("-{cipher}"))
        .arg("-K")
        .arg(hexs(key))
        .arg("-nopad");
    if let Some(iv) = iv {
        cmd.arg("-iv").arg(hexs(iv));
    }
    if decrypt {
        cmd.arg("-d");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("openssl output");
    writer.join().expect("writer").expect("write to openssl");
    assert!(
        out.status.success(),
        "openssl {cipher} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping openssl comparisons: no openssl command");
    }
    ok
}

fn execute(
    cpu: &AesCpu,
    op: u16,
    key: &[u8],
    unit: u32,
    params: AesParams,
    aux: &[u8],
    data: &mut [u8],
) {
    let req = AesRequest {
        op,
        unit,
        params: params.to_bytes(),
        key_tag: key.len() as u64 + 1,
        key,
        aux,
    };
    let input = data.to_vec();
    assert_eq!(
        cpu.execute(&req, data),
        Ok(data.len() as u64),
        "{} key {} len {} unit {unit}",
        proto::op::op_name(op),
        key.len(),
        data.len()
    );
    // Every other code path this CPU has gives the same bytes, so the
    // comparisons below hold for each of them.
    for other in Path::ALL.into_iter().filter(|&p| p != cpu.path()) {
        let Some(o) = AesCpu::with_path(other) else {
            continue;
        };
        let mut d = input.clone();
        assert_eq!(o.execute(&req, &mut d), Ok(d.len() as u64));
        assert_eq!(
            d,
            *data,
            "{other} against {}: {} key {} len {} unit {unit}",
            cpu.path(),
            proto::op::op_name(op),
            key.len(),
            data.len()
        );
    }
}

macro_rules! with_aes {
    ($key:expr, $C:ident => $body:expr) => {
        match $key.len() {
            16 => {
                type $C = Aes128;
                $body
            }
            24 => {
                type $C = Aes192;
                $body
            }
            32 => {
                type $C = Aes256;
                $body
            }
            n => panic!("key length {n}"),
        }
    };
}

/// One unit of `op` computed by the RustCrypto crates.
fn rustcrypto_unit(op: u16, key: &[u8], iv: &[u8; 16], data: &mut [u8]) {
    match op {
        op::CTR => with_aes!(key, C => {
            let mut c = ctr::Ctr128BE::<C>::new_from_slices(key, iv).unwrap();
            c.apply_keystream(data);
        }),
        op::CBC_ENC => with_aes!(key, C => {
            let mut c = cbc::Encryptor::<C>::new_from_slices(key, iv).unwrap();
            for b in data.chunks_exact_mut(16) {
                c.encrypt_block_mut(Block::from_mut_slice(b));
            }
        }),
        op::CBC_DEC => with_aes!(key, C => {
            let mut c = cbc::Decryptor::<C>::new_from_slices(key, iv).unwrap();
            for b in data.chunks_exact_mut(16) {
                c.decrypt_block_mut(Block::from_mut_slice(b));
            }
        }),
        op::XTS_ENC | op::XTS_DEC => {
            let (k1, k2) = key.split_at(key.len() / 2);
            with_aes!(k1, C => {
                let x = xts_mode::Xts128::new(
                    C::new_from_slice(k1).unwrap(),
                    C::new_from_slice(k2).unwrap(),
                );
                if op == op::XTS_ENC {
                    x.encrypt_sector(data, *iv);
                } else {
                    x.decrypt_sector(data, *iv);
                }
            })
        }
        _ => panic!("no RustCrypto reference for {op}"),
    }
}

fn key_sizes(op: u16) -> [usize; 3] {
    if op == op::XTS_ENC || op == op::XTS_DEC {
        [32, 48, 64]
    } else {
        [16, 24, 32]
    }
}

/// Single-unit requests of many lengths against openssl.
#[test]
fn openssl_single_unit() {
    if !have_openssl() {
        return;
    }
    let cpu = AesCpu::new();
    let mut r = rng(1);
    for op in [op::ECB_ENC, op::ECB_DEC, op::CBC_ENC, op::CBC_DEC, op::CTR] {
        for klen in [16, 24, 32] {
            for blocks in [1usize, 2, 7, 8, 9, 31, 33, 100, 257] {
                let tail = if op == op::CTR { r.gen_range(0..16) } else { 0 };
                let len = if op == op::CTR && tail > 0 {
                    (blocks - 1) * 16 + tail
                } else {
                    blocks * 16
                };
                let key = random(&mut r, klen);
                let iv: [u8; 16] = r.gen();
                let data = random(&mut r, len);
                let mode = match op {
                    op::ECB_ENC | op::ECB_DEC => "ecb",
                    op::CBC_ENC | op::CBC_DEC => "cbc",
                    _ => "ctr",
                };
                let cipher = format!("aes-{}-{mode}", klen * 8);
                let decrypt = op == op::ECB_DEC || op == op::CBC_DEC;
                let (params, ivo) = if mode == "ecb" {
                    (AesParams::none(), None)
                } else {
                    (AesParams::single(iv), Some(&iv))
                };
                let want = openssl(&cipher, &key, ivo, decrypt, &data).expect("openssl");
                let mut got = data.clone();
                execute(&cpu, op, &key, 0, params, &[], &mut got);
                assert_eq!(got, want, "{cipher} len {len}");
            }
        }
    }
}

/// The 128-bit counter carries across the 64-bit boundary and wraps at 2^128.
#[test]
fn ctr_counter_carry() {
    let cpu = AesCpu::new();
    let mut r = rng(2);
    let ivs = [
        *b"\x00\x11\x22\x33\x44\x55\x66\x77\xff\xff\xff\xff\xff\xff\xff\xfe",
        [0xff; 16],
        *b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\xff\xff\xff\xfd",
    ];
    for iv in ivs {
        for klen in [16, 24, 32] {
            let key = random(&mut r, klen);
            let data = random(&mut r, 16 * 5 + 3);
            let mut want = data.clone();
            rustcrypto_unit(op::CTR, &key, &iv, &mut want);
            let mut got = data.clone();
            execute(&cpu, op::CTR, &key, 0, AesParams::single(iv), &[], &mut got);
            assert_eq!(got, want);
            // Block 2 of the stream is the encryption of iv + 2 (with carry).
            let ctr2 = u128::from_be_bytes(iv).wrapping_add(2).to_be_bytes();
            let mut ks = ctr2;
            kgpu_aes::cpu::ecb_encrypt(&key, &mut ks).unwrap();
            let block2: Vec<u8> = data[32..48].iter().zip(ks).map(|(a, b)| a ^ b).collect();
            assert_eq!(&got[32..48], &block2[..]);
            if let Some(want) = have_openssl()
                .then(|| {
                    openssl(
                        &format!("aes-{}-ctr", klen * 8),
                        &key,
                        Some(&iv),
                        false,
                        &data,
                    )
                })
                .flatten()
            {
                assert_eq!(got, want);
            }
        }
    }
}

/// Single units of many lengths against the RustCrypto crates, including
/// XTS with ciphertext stealing.
#[test]
fn rustcrypto_single_unit() {
    let cpu = AesCpu::new();
    let mut r = rng(3);
    for op in [op::CBC_ENC, op::CBC_DEC, op::CTR, op::XTS_ENC, op::XTS_DEC] {
        for klen in key_sizes(op) {
            for len in [
                16usize, 17, 31, 32, 33, 47, 100, 255, 256, 511, 512, 513, 1000, 4096, 4111,
            ] {
                let len = match op {
                    op::CBC_ENC | op::CBC_DEC => len / 16 * 16,
                    _ => len,
                };
                let key = random(&mut r, klen);
                let iv: [u8; 16] = r.gen();
                let data = random(&mut r, len);
                let mut want = data.clone();
                rustcrypto_unit(op, &key, &iv, &mut want);
                let mut got = data.clone();
                execute(&cpu, op, &key, 0, AesParams::single(iv), &[], &mut got);
                assert_eq!(got, want, "{} key {klen} len {len}", op::op_name(op));
            }
        }
    }
}

/// Multi-unit requests: each unit equals a single-unit run of the reference
/// with the IV of that unit (plain64 and IV list), and decryption inverts.
#[test]
fn multi_unit_plain64_and_list() {
    let cpu = AesCpu::new();
    let mut r = rng(4);
    for op in [op::CBC_ENC, op::CBC_DEC, op::CTR, op::XTS_ENC, op::XTS_DEC] {
        for klen in key_sizes(op) {
            for unit in [16u32, 32, 48, 512, 4096, 17, 520, 4100] {
                if matches!(op, op::CBC_ENC | op::CBC_DEC) && unit % 16 != 0 {
                    continue;
                }
                let units = r.gen_range(1..6usize);
                let len = unit as usize * units;
                let key = random(&mut r, klen);
                let data = random(&mut r, len);
                let start = if r.gen_bool(0.5) {
                    u64::MAX - 2
                } else {
                    r.gen::<u32>() as u64
                };
                let aux = random(&mut r, 16 * units);
                for list in [false, true] {
                    let mut want = data.clone();
                    for (i, u) in want.chunks_exact_mut(unit as usize).enumerate() {
                        let iv: [u8; 16] = if list {
                            aux[16 * i..16 * i + 16].try_into().unwrap()
                        } else {
                            proto::plain64_iv(start.wrapping_add(i as u64))
                        };
                        rustcrypto_unit(op, &key, &iv, u);
                    }
                    let (params, a) = if list {
                        (AesParams::list(), &aux[..])
                    } else {
                        (AesParams::plain64(start), &[][..])
                    };
                    let mut got = data.clone();
                    execute(&cpu, op, &key, unit, params, a, &mut got);
                    assert_eq!(
                        got,
                        want,
                        "{} key {klen} unit {unit} list {list}",
                        op::op_name(op)
                    );
                    let inverse = match op {
                        op::CBC_ENC => op::CBC_DEC,
                        op::CBC_DEC => op::CBC_ENC,
                        op::XTS_ENC => op::XTS_DEC,
                        op::XTS_DEC => op::XTS_ENC,
                        other => other,
                    };
                    execute(&cpu, inverse, &key, unit, params, a, &mut got);
                    assert_eq!(got, data);
                }
            }
        }
    }
}

/// Multi-unit ECB equals one ECB run over the whole buffer, and matches openssl.
#[test]
fn ecb_units() {
    let cpu = AesCpu::new();
    let mut r = rng(5);
    for klen in [16, 24, 32] {
        let key = random(&mut r, klen);
        let data = random(&mut r, 4096);
        let mut a = data.clone();
        let mut b = data.clone();
        execute(&cpu, op::ECB_ENC, &key, 512, AesParams::none(), &[], &mut a);
        execute(&cpu, op::ECB_ENC, &key, 0, AesParams::none(), &[], &mut b);
        assert_eq!(a, b);
        assert_ne!(a, data);
        if have_openssl() {
            let want = openssl(&format!("aes-{}-ecb", klen * 8), &key, None, false, &data).unwrap();
            assert_eq!(a, want);
        }
    }
}
