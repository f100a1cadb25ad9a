//! The request encoding: round trips, every refusal, and totality.

use kgpu_common::abi::Status;
use kgpu_raid6::cpu::{Raid6Cpu, Raid6Request};
use kgpu_raid6::proto::{
    self, op, validate, ProtoError, Raid6Op, Raid6Params, MAX_DISKS, MIN_DISKS,
};
use kgpu_raid6::proto_status;
use proptest::prelude::*;

#[test]
fn op_names() {
    assert_eq!(op::op_name(op::GEN_SYNDROME), "gen_syndrome");
    assert_eq!(op::op_name(op::XOR_SYNDROME), "xor_syndrome");
    assert_eq!(op::op_name(op::RECOV_2DATA), "recov_2data");
    assert_eq!(op::op_name(op::RECOV_DATAP), "recov_datap");
    assert_eq!(op::op_name(0), "unknown");
    assert_eq!(op::op_name(0xffff), "unknown");
}

#[test]
fn params_encoding() {
    let raw = Raid6Params::xor(0x0403_0201, 0x0807_0605).to_bytes();
    assert_eq!(&raw[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(raw[8..].iter().all(|&b| b == 0));
    assert_eq!(
        Raid6Params::from_bytes(&raw),
        Ok(Raid6Params {
            a: 0x0403_0201,
            b: 0x0807_0605
        })
    );
    for i in 8..32 {
        let mut bad = raw;
        bad[i] = 0x80;
        assert_eq!(
            Raid6Params::from_bytes(&bad),
            Err(ProtoError::ReservedParams)
        );
    }
    assert_eq!(Raid6Params::recov_datap(7).to_bytes()[4..8], [0, 0, 0, 0]);
}

#[test]
fn validate_accepts_and_decodes() {
    let l = validate(op::GEN_SYNDROME, 18, 4096, 16 * 4096, 8192, &[0; 32]).unwrap();
    assert_eq!(l.op, Raid6Op::GenSyndrome);
    assert_eq!(
        (l.disks, l.unit, l.input_len, l.output_len, l.data_disks()),
        (18, 4096, 65536, 8192, 16)
    );
    let l = validate(
        op::XOR_SYNDROME,
        18,
        64,
        3 * 64,
        128,
        &Raid6Params::xor(5, 7).to_bytes(),
    )
    .unwrap();
    assert_eq!(l.op, Raid6Op::XorSyndrome { start: 5, stop: 7 });
    assert_eq!(l.op.code(), op::XOR_SYNDROME);
    assert_eq!(l.op.params(), Raid6Params::xor(5, 7));
    let l = validate(
        op::RECOV_2DATA,
        4,
        64,
        256,
        128,
        &Raid6Params::recov_2data(0, 1).to_bytes(),
    )
    .unwrap();
    assert_eq!(l.op, Raid6Op::Recov2Data { faila: 0, failb: 1 });
    let l = validate(
        op::RECOV_DATAP,
        256,
        64,
        256 * 64,
        128,
        &Raid6Params::recov_datap(253).to_bytes(),
    )
    .unwrap();
    assert_eq!(l.op, Raid6Op::RecovDataP { faila: 253 });
    let l = validate(
        op::GEN_SYNDROME,
        4,
        proto::MAX_UNIT,
        2 << 30,
        2 << 30,
        &[0; 32],
    )
    .unwrap();
    assert_eq!(l.input_len, 2 << 30);
}

#[test]
fn validate_refusals() {
    let z = [0u8; 32];
    assert_eq!(validate(0, 6, 64, 256, 128, &z), Err(ProtoError::UnknownOp));
    assert_eq!(
        validate(99, 3, 1, 0, 0, &z),
        Err(ProtoError::UnknownOp),
        "op is checked first"
    );
    assert_eq!(
        validate(op::GEN_SYNDROME, 3, 64, 64, 128, &z),
        Err(ProtoError::BadDisks)
    );
    assert_eq!(
        validate(op::GEN_SYNDROME, 0, 64, 0, 128, &z),
        Err(ProtoError::BadDisks)
    );
    assert_eq!(
        validate(op::GEN_SYNDROME, 257, 64, 255 * 64, 128, &z),
        Err(ProtoError::BadDisks)
    );
    assert_eq!(
        validate(op::GEN_SYNDROME, u32::MAX, 64, 0, 128, &z),
        Err(ProtoError::BadDisks)
    );
    for unit in [0, 1, 32, 100, 4097, proto::MAX_UNIT + 64, u32::MAX] {
        assert_eq!(
            validate(op::GEN_SYNDROME, 6, unit, 0, 0, &z),
            Err(ProtoError::BadUnit),
            "{unit}"
        );
    }
    assert_eq!(
        validate(op::GEN_SYNDROME, 6, 64, 320, 128, &z),
        Err(ProtoError::BadInputLen)
    );
    assert_eq!(
        validate(op::GEN_SYNDROME, 6, 64, 256, 256, &z),
        Err(ProtoError::BadOutputLen)
    );
    assert_eq!(
        validate(op::GEN_SYNDROME, 6, 64, u64::MAX, 128, &z),
        Err(ProtoError::BadInputLen)
    );
    let p = |a, b| Raid6Params { a, b }.to_bytes();
    assert_eq!(
        validate(op::GEN_SYNDROME, 6, 64, 256, 128, &p(1, 0)),
        Err(ProtoError::ReservedParams)
    );
    assert_eq!(
        validate(op::XOR_SYNDROME, 6, 64, 64, 128, &p(3, 2)),
        Err(ProtoError::BadRange)
    );
    assert_eq!(
        validate(op::XOR_SYNDROME, 6, 64, 64, 128, &p(4, 4)),
        Err(ProtoError::BadRange)
    );
    assert_eq!(
        validate(op::XOR_SYNDROME, 6, 64, 64, 128, &p(0, u32::MAX)),
        Err(ProtoError::BadRange)
    );
    assert_eq!(
        validate(op::XOR_SYNDROME, 6, 64, 128, 128, &p(3, 3)),
        Err(ProtoError::BadInputLen)
    );
    assert_eq!(
        validate(op::RECOV_2DATA, 6, 64, 384, 128, &p(2, 2)),
        Err(ProtoError::BadFailIndex)
    );
    assert_eq!(
        validate(op::RECOV_2DATA, 6, 64, 384, 128, &p(3, 0)),
        Err(ProtoError::BadFailIndex)
    );
    assert_eq!(
        validate(op::RECOV_2DATA, 6, 64, 384, 128, &p(0, 4)),
        Err(ProtoError::BadFailIndex)
    );
    assert_eq!(
        validate(op::RECOV_DATAP, 6, 64, 384, 128, &p(4, 0)),
        Err(ProtoError::BadFailIndex)
    );
    assert_eq!(
        validate(op::RECOV_DATAP, 6, 64, 384, 128, &p(0, 1)),
        Err(ProtoError::ReservedParams)
    );
    assert_eq!(
        validate(op::RECOV_DATAP, 6, 64, 320, 128, &p(0, 0)),
        Err(ProtoError::BadInputLen)
    );
}

#[test]
fn status_mapping() {
    assert_eq!(proto_status(ProtoError::UnknownOp), Status::UnknownOp);
    for e in [
        ProtoError::BadUnit,
        ProtoError::BadInputLen,
        ProtoError::BadOutputLen,
    ] {
        assert_eq!(proto_status(e), Status::BadLength);
        assert!(e.is_length_error());
    }
    for e in [
        ProtoError::BadDisks,
        ProtoError::ReservedParams,
        ProtoError::BadRange,
        ProtoError::BadFailIndex,
    ] {
        assert_eq!(proto_status(e), Status::BadParams);
        assert!(!e.is_length_error());
        assert!(!e.as_str().is_empty());
    }
}

fn any_op() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..=6, any::<u16>()]
}

fn any_disks() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..=260, any::<u32>()]
}

fn any_unit() -> impl Strategy<Value = u32> {
    prop_oneof![(0u32..=64).prop_map(|k| k * 64), 0u32..=5000, any::<u32>()]
}

fn any_params() -> impl Strategy<Value = [u8; 32]> {
    prop_oneof![
        (0u32..=300, 0u32..=300).prop_map(|(a, b)| Raid6Params { a, b }.to_bytes()),
        any::<[u8; 32]>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

    /// validate is total and every acceptance satisfies the documented rules.
    #[test]
    fn validate_is_total(
        op_code in any_op(),
        disks in any_disks(),
        unit in any_unit(),
        inp in prop_oneof![0u64..=100_000, any::<u64>()],
        out in prop_oneof![0u64..=10_000, any::<u64>()],
        params in any_params(),
    ) {
        if let Ok(l) = validate(op_code, disks, unit, inp, out, &params) {
            prop_assert!((MIN_DISKS..=MAX_DISKS).contains(&disks));
            prop_assert!(unit > 0 && unit % 64 == 0);
            prop_assert!(params[8..].iter().all(|&b| b == 0));
            prop_assert_eq!(l.op.code(), op_code);
            prop_assert_eq!(l.op.params().to_bytes(), params);
            prop_assert_eq!(out, 2 * unit as u64);
            prop_assert_eq!(l.input_len, inp);
            let u = unit as u64;
            let n = disks - 2;
            match l.op {
                Raid6Op::GenSyndrome => prop_assert_eq!(inp, n as u64 * u),
                Raid6Op::XorSyndrome { start, stop } => {
                    prop_assert!(start <= stop && stop < n);
                    prop_assert_eq!(inp, (stop - start + 1) as u64 * u);
                }
                Raid6Op::Recov2Data { faila, failb } => {
                    prop_assert!(faila < failb && failb < n);
                    prop_assert_eq!(inp, disks as u64 * u);
                }
                Raid6Op::RecovDataP { faila } => {
                    prop_assert!(faila < n);
                    prop_assert_eq!(inp, disks as u64 * u);
                }
            }
        }
    }

    /// execute never panics on small arbitrary buffers and agrees with validate.
    #[test]
    fn execute_is_total(
        op_code in 0u16..=5,
        disks in 0u32..=12,
        unit in prop_oneof![Just(64u32), Just(128), 0u32..=200],
        inp in 0usize..=2048,
        out in 0usize..=512,
        params in (0u32..=12, 0u32..=12).prop_map(|(a, b)| Raid6Params { a, b }.to_bytes()),
    ) {
        let req = Raid6Request { op: op_code, disks, unit, params: &params };
        let input = vec![0x5au8; inp];
        let mut output = vec![0u8; out];
        let r = Raid6Cpu.execute(&req, &input, &mut output);
        let v = validate(op_code, disks, unit, inp as u64, out as u64, &params);
        match (r, v) {
            (Ok(n), Ok(l)) => prop_assert_eq!(n, l.output_len),
            (Err(e), Err(pe)) => prop_assert_eq!(e.status(), proto_status(pe)),
            (r, v) => prop_assert!(false, "execute {:?} but validate {:?}", r, v),
        }
    }
}
