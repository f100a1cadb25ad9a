//! Invalid requests get the right error, never a panic; decoding and
//! validation are total.

use kgpu_aes::cpu::{AesCpu, AesRequest};
use kgpu_aes::proto::{self, op, AesParams, ProtoError};
use kgpu_aes::{proto_status, AesError};
use kgpu_common::abi::Status;
use proptest::prelude::*;

fn run(
    op: u16,
    key_len: usize,
    len: usize,
    unit: u32,
    params: [u8; 32],
    aux_len: usize,
) -> Result<u64, AesError> {
    let cpu = AesCpu::new();
    let key = vec![0x5au8; key_len];
    let aux = vec![0xa5u8; aux_len];
    let mut data = vec![0x3cu8; len];
    let before = data.clone();
    let req = AesRequest {
        op,
        unit,
        params,
        key_tag: 9,
        key: &key,
        aux: &aux,
    };
    let r = cpu.execute(&req, &mut data);
    if r.is_err() {
        assert_eq!(data, before, "a refused request must not touch the data");
    }
    r
}

#[test]
fn bad_requests() {
    let p64 = AesParams::plain64(3).to_bytes();
    let none = AesParams::none().to_bytes();
    let list = AesParams::list().to_bytes();
    let single = AesParams::single([7; 16]).to_bytes();

    assert_eq!(run(0, 16, 16, 0, none, 0), Err(AesError::UnknownOp));
    assert_eq!(run(99, 16, 16, 0, none, 0), Err(AesError::UnknownOp));
    for k in [0, 1, 15, 17, 20, 31, 33, 64] {
        assert_eq!(
            run(op::CBC_ENC, k, 32, 0, p64, 0),
            Err(AesError::BadKey),
            "key {k}"
        );
    }
    for k in [16, 24, 31, 40, 63, 65, 128] {
        assert_eq!(
            run(op::XTS_ENC, k, 32, 0, p64, 0),
            Err(AesError::BadKey),
            "key {k}"
        );
    }
    assert_eq!(
        run(op::ECB_ENC, 16, 15, 0, none, 0),
        Err(AesError::BadLength)
    );
    assert_eq!(
        run(op::ECB_DEC, 16, 33, 0, none, 0),
        Err(AesError::BadLength)
    );
    assert_eq!(
        run(op::CBC_DEC, 32, 40, 20, p64, 0),
        Err(AesError::BadLength)
    );
    assert_eq!(run(op::CBC_ENC, 32, 0, 0, p64, 0), Err(AesError::BadLength));
    assert_eq!(run(op::CTR, 16, 100, 30, p64, 0), Err(AesError::BadLength));
    assert_eq!(
        run(op::XTS_DEC, 32, 15, 0, p64, 0),
        Err(AesError::BadLength)
    );
    assert_eq!(
        run(op::XTS_ENC, 32, 30, 15, p64, 0),
        Err(AesError::BadLength)
    );
    // IV list of the wrong size, or an aux extent where none is expected.
    assert_eq!(
        run(op::XTS_ENC, 32, 1024, 512, list, 16),
        Err(AesError::BadLength)
    );
    assert_eq!(
        run(op::XTS_ENC, 32, 1024, 512, list, 48),
        Err(AesError::BadLength)
    );
    assert_eq!(
        run(op::XTS_ENC, 32, 1024, 512, p64, 32),
        Err(AesError::BadLength)
    );
    assert_eq!(run(op::XTS_ENC, 32, 1024, 512, list, 32), Ok(1024));
    // Reserved bytes, unknown IV mode, IV mode not suiting the operation.
    let mut reserved = p64;
    reserved[30] = 1;
    assert_eq!(
        run(op::CTR, 16, 16, 0, reserved, 0),
        Err(AesError::BadParams)
    );
    let mut mode = p64;
    mode[24] = 9;
    assert_eq!(run(op::CTR, 16, 16, 0, mode, 0), Err(AesError::BadParams));
    assert_eq!(
        run(op::ECB_ENC, 16, 16, 0, p64, 0),
        Err(AesError::BadParams)
    );
    assert_eq!(
        run(op::CBC_ENC, 16, 16, 0, none, 0),
        Err(AesError::BadParams)
    );
    // IV_SINGLE with several units.
    assert_eq!(
        run(op::CBC_ENC, 16, 64, 16, single, 0),
        Err(AesError::BadParams)
    );
    assert_eq!(run(op::CBC_ENC, 16, 64, 0, single, 0), Ok(64));
    // Unused fields must be zero.
    let mut stray = AesParams::plain64(0);
    stray.iv[15] = 1;
    assert_eq!(
        run(op::CTR, 16, 16, 0, stray.to_bytes(), 0),
        Err(AesError::BadParams)
    );
    let mut stray = AesParams::list();
    stray.start_sector = 1;
    assert_eq!(
        run(op::CTR, 16, 16, 0, stray.to_bytes(), 16),
        Err(AesError::BadParams)
    );
}

#[test]
fn statuses() {
    assert_eq!(AesError::UnknownOp.status(), Status::UnknownOp);
    assert_eq!(AesError::BadKey.status(), Status::BadKey);
    assert_eq!(AesError::BadLength.status(), Status::BadLength);
    assert_eq!(AesError::BadParams.status(), Status::BadParams);
    for e in [
        ProtoError::UnknownOp,
        ProtoError::BadKey,
        ProtoError::BadLength,
        ProtoError::BadParams,
    ] {
        assert_eq!(proto_status(e), AesError::from(e).status());
    }
}

proptest! {
    #[test]
    fn params_decoding_is_total(raw in prop::array::uniform32(any::<u8>())) {
        match AesParams::from_bytes(&raw) {
            Ok(p) => {
                prop_assert_eq!(p.to_bytes(), raw);
                prop_assert!(p.iv_mode <= proto::IV_LIST);
            }
            Err(e) => {
                prop_assert_eq!(e, ProtoError::BadParams);
                prop_assert!(raw[28..].iter().any(|&b| b != 0)
                    || u32::from_le_bytes([raw[24], raw[25], raw[26], raw[27]]) > proto::IV_LIST);
            }
        }
    }

    #[test]
    fn validation_is_total(
        op in any::<u16>(),
        key_len in prop_oneof![any::<u64>(), 0u64..80],
        data_len in prop_oneof![any::<u64>(), 0u64..10_000],
        aux_len in prop_oneof![any::<u64>(), 0u64..1000],
        unit in prop_oneof![any::<u32>(), 0u32..5000],
        iv_mode in 0u32..6,
        iv in prop::array::uniform16(any::<u8>()),
        start_sector in any::<u64>(),
        index in any::<u64>(),
    ) {
        let p = AesParams { iv_mode, iv, start_sector };
        if let Ok(l) = proto::validate(op, key_len, data_len, aux_len, unit, &p) {
            prop_assert!(l.units >= 1);
            prop_assert_eq!(l.units.checked_mul(l.unit_len), Some(data_len));
            prop_assert!(matches!(l.rounds, 10 | 12 | 14));
            if p.iv_mode == proto::IV_LIST {
                prop_assert_eq!(Some(aux_len), l.units.checked_mul(16));
            } else {
                prop_assert_eq!(aux_len, 0);
            }
            if p.iv_mode == proto::IV_SINGLE {
                prop_assert_eq!(l.units, 1);
            }
        }
        let aux = [0u8; 64];
        let got = proto::unit_iv(&p, &aux, index);
        prop_assert_eq!(got.is_some(), iv_mode <= 2 || (iv_mode == 3 && index < 4));
    }

    #[test]
    fn execution_never_panics(
        op in 0u16..9,
        key_len in 0usize..70,
        len in 0usize..300,
        unit in prop_oneof![0u32..40, any::<u32>()],
        params in prop::array::uniform32(prop_oneof![Just(0u8), any::<u8>()]),
        aux_len in 0usize..80,
    ) {
        let r = run(op, key_len, len, unit, params, aux_len);
        if let Ok(n) = r {
            prop_assert_eq!(n, len as u64);
        }
    }
}
