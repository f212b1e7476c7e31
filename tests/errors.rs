//! Every error path: the typed error comes back and the state (or output
//! buffer) is bit-for-bit what it was.

use polyak::{
    CompF32, Ema, Error, F32_LIMIT, I1F31, I2F62, I33F31, I49F15, Q15, Q31, Swa, U1F31, merge,
};
use polyak_host::strategies::config;
use proptest::prelude::*;

/// A bit-exact fingerprint of an averager's whole state (private fields
/// included): `Debug` prints every f32 so that it round-trips.
fn state<T: core::fmt::Debug>(x: &T) -> String {
    format!("{x:?}")
}

fn bad_f32() -> impl Strategy<Value = (f32, Error)> {
    prop_oneof![
        Just((f32::NAN, Error::NonFinite { index: 0 })),
        Just((f32::INFINITY, Error::NonFinite { index: 0 })),
        Just((f32::NEG_INFINITY, Error::NonFinite { index: 0 })),
        Just((f32::MAX, Error::OutOfRange { index: 0 })),
        Just((-f32::MAX, Error::OutOfRange { index: 0 })),
        Just((F32_LIMIT * 2.0, Error::OutOfRange { index: 0 })),
        Just((
            f32::from_bits(F32_LIMIT.to_bits() + 1),
            Error::OutOfRange { index: 0 }
        )),
    ]
}

fn with_index(e: Error, index: usize) -> Error {
    match e {
        Error::NonFinite { .. } => Error::NonFinite { index },
        Error::OutOfRange { .. } => Error::OutOfRange { index },
        other => other,
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn ema_rejects_bad_f32_and_keeps_state(
        n in 1usize..40,
        warm in 0usize..4,
        pos in any::<prop::sample::Index>(),
        (bad, err) in bad_f32(),
        debiased in any::<bool>(),
    ) {
        let mut plain = if debiased { Ema::new_debiased(vec![0.0f32; n], 0.9) } else { Ema::new(vec![0.0f32; n], 0.9) }.unwrap();
        let mut comp = if debiased { Ema::new_debiased(vec![CompF32::ZERO; n], 0.9) } else { Ema::new(vec![CompF32::ZERO; n], 0.9) }.unwrap();
        for t in 0..warm {
            let x: Vec<f32> = (0..n).map(|i| (t * n + i) as f32 * 0.1).collect();
            plain.update(&x).unwrap();
            comp.update(&x).unwrap();
        }
        let i = pos.index(n);
        let mut x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        x[i] = bad;
        let (p0, c0) = (state(&plain), state(&comp));
        prop_assert_eq!(plain.update(&x), Err(with_index(err, i)));
        prop_assert_eq!(comp.update(&x), Err(with_index(err, i)));
        prop_assert_eq!(state(&plain), p0);
        prop_assert_eq!(state(&comp), c0);
        // a NaN never reached the shadow
        prop_assert!(plain.shadow().iter().all(|v| v.is_finite()));
        prop_assert!(comp.shadow().iter().all(|v| v.hi().is_finite() && v.lo().is_finite()));
    }

    #[test]
    fn swa_rejects_bad_f32_and_keeps_state(
        n in 1usize..40,
        warm in 0usize..4,
        pos in any::<prop::sample::Index>(),
        (bad, err) in bad_f32(),
    ) {
        let mut swa = Swa::new(vec![CompF32::ZERO; n]);
        for t in 0..warm {
            let x: Vec<f32> = (0..n).map(|i| (t + i) as f32).collect();
            swa.update(&x).unwrap();
        }
        let i = pos.index(n);
        let mut x = vec![1.0f32; n];
        x[i] = bad;
        let s0 = state(&swa);
        prop_assert_eq!(swa.update(&x), Err(with_index(err, i)));
        prop_assert_eq!(state(&swa), s0);
    }

    #[test]
    fn length_mismatch_everywhere(n in 0usize..20, m in 0usize..20) {
        prop_assume!(n != m);
        let mismatch = Error::LengthMismatch { expected: n, found: m };
        let x = vec![0.5f32; m];
        let mut out = vec![7.0f32; m];

        let mut ema = Ema::new(vec![CompF32::ZERO; n], 0.99).unwrap();
        ema.update(&vec![0.25; n]).unwrap();
        let s0 = state(&ema);
        prop_assert_eq!(ema.update(&x), Err(mismatch));
        prop_assert_eq!(ema.read_into(&mut out), Err(mismatch));
        prop_assert_eq!(ema.switch_into(&mut out), Err(mismatch));
        prop_assert_eq!(state(&ema), s0);
        prop_assert!(out.iter().all(|&v| v == 7.0));

        let mut q = Ema::new(vec![I1F31::ZERO; n], 0.99).unwrap();
        let s0 = state(&q);
        prop_assert_eq!(q.update(&vec![Q15::ZERO; m]), Err(mismatch));
        prop_assert_eq!(state(&q), s0);

        let mut q31 = Ema::new(vec![I2F62::ZERO; n], 0.99).unwrap();
        let s0 = state(&q31);
        prop_assert_eq!(q31.update(&vec![Q31::ZERO; m]), Err(mismatch));
        prop_assert_eq!(state(&q31), s0);

        let mut swa = Swa::new(vec![I49F15::ZERO; n]);
        swa.update(&vec![Q15::from_bits(8192); n]).unwrap();
        let s0 = state(&swa);
        prop_assert_eq!(swa.update(&vec![Q15::ZERO; m]), Err(mismatch));
        let mut qout = vec![Q15::MAX; m];
        prop_assert_eq!(swa.read_into(&mut qout), Err(mismatch));
        prop_assert_eq!(state(&swa), s0);
        prop_assert!(qout.iter().all(|&v| v == Q15::MAX));

        // merge: a model of the wrong length
        let a = vec![1.0f32; n];
        let mut mout = vec![7.0f32; n];
        prop_assert_eq!(
            merge::weighted_average(&[&a, &x], &[1.0, 1.0], &mut mout),
            Err(Error::LengthMismatch { expected: n, found: m })
        );
        prop_assert_eq!(
            merge::interpolate(&a, &x, 0.5, &mut mout),
            Err(Error::LengthMismatch { expected: n, found: m })
        );
        prop_assert!(mout.iter().all(|&v| v == 7.0));
    }
}

#[test]
fn invalid_decays() {
    for beta in [1.0f32, 1.5, -0.1, f32::NAN, f32::INFINITY, -0.0 - 1e-9] {
        assert_eq!(
            Ema::new([0.0f32; 2], beta).map(|_| ()),
            Err(Error::InvalidDecay),
            "{beta}"
        );
        assert_eq!(
            Ema::new([CompF32::ZERO; 2], beta).map(|_| ()),
            Err(Error::InvalidDecay)
        );
        assert_eq!(
            Ema::new([I1F31::ZERO; 2], beta).map(|_| ()),
            Err(Error::InvalidDecay)
        );
        assert_eq!(
            Ema::new_debiased([0.0f32; 2], beta).map(|_| ()),
            Err(Error::InvalidDecay)
        );
    }
    // β = 0 is allowed: the average is the last input.
    let mut e = Ema::new([0.0f32; 1], 0.0).unwrap();
    e.update(&[1.0]).unwrap();
    e.update(&[3.0]).unwrap();
    let mut o = [0.0];
    e.read_into(&mut o).unwrap();
    assert_eq!(o, [3.0]);
    for alpha in [0.0f32, -0.5, 1.0001, f32::NAN] {
        assert_eq!(
            Ema::with_alpha([0.0f32; 1], alpha).map(|_| ()),
            Err(Error::InvalidDecay)
        );
    }
    for raw in [0u32, (1 << 31) + 1, u32::MAX] {
        assert_eq!(
            Ema::with_alpha([I1F31::ZERO; 1], U1F31::from_bits(raw)).map(|_| ()),
            Err(Error::InvalidDecay)
        );
        assert_eq!(
            Ema::with_alpha([I2F62::ZERO; 1], U1F31::from_bits(raw)).map(|_| ()),
            Err(Error::InvalidDecay)
        );
    }
    assert!(Ema::with_alpha([I1F31::ZERO; 1], U1F31::from_bits(1 << 31)).is_ok());
}

#[test]
fn reading_before_the_first_update_is_empty() {
    let ema = Ema::new([0.0f32; 2], 0.9).unwrap();
    let mut out = [5.0f32; 2];
    assert_eq!(ema.read_into(&mut out), Err(Error::Empty));
    assert_eq!(out, [5.0; 2]);
    let ema = Ema::new_debiased([I1F31::ZERO; 2], 0.9).unwrap();
    let mut q = [Q15::MAX; 2];
    assert_eq!(ema.switch_into(&mut q), Err(Error::Empty));
    assert_eq!(q, [Q15::MAX; 2]);
    let swa = Swa::new([I33F31::ZERO; 2]);
    let mut q = [Q31::MAX; 2];
    assert_eq!(swa.read_into(&mut q), Err(Error::Empty));
    assert_eq!(q, [Q31::MAX; 2]);
}

#[test]
fn merge_errors_leave_out_untouched() {
    let a = [1.0f32, 2.0];
    let b = [3.0f32, 4.0];
    let nan = [1.0f32, f32::NAN];
    let mut out = [9.0f32; 2];
    let cases: Vec<(Result<(), Error>, Error)> = vec![
        (
            merge::weighted_average::<f32>(&[], &[], &mut out),
            Error::Empty,
        ),
        (
            merge::weighted_average(&[&a, &b], &[1.0], &mut out),
            Error::LengthMismatch {
                expected: 2,
                found: 1,
            },
        ),
        (
            merge::weighted_average(&[&a, &b], &[1.0, -1.0], &mut out),
            Error::InvalidWeight { index: 1 },
        ),
        (
            merge::weighted_average(&[&a, &b], &[f32::NAN, 1.0], &mut out),
            Error::InvalidWeight { index: 0 },
        ),
        (
            merge::weighted_average(&[&a, &b], &[f32::INFINITY, 1.0], &mut out),
            Error::InvalidWeight { index: 0 },
        ),
        (
            merge::weighted_average(&[&a, &b], &[0.0, -0.0], &mut out),
            Error::ZeroTotalWeight,
        ),
        (
            merge::weighted_average(&[&a, &nan], &[1.0, 1.0], &mut out),
            Error::NonFinite { index: 1 },
        ),
        (
            merge::fedavg(&[&a, &b], &[0, 0], &mut out),
            Error::ZeroTotalWeight,
        ),
        (
            merge::interpolate(&a, &b, 1.5, &mut out),
            Error::InvalidCoefficient,
        ),
        (
            merge::interpolate(&a, &b, -0.5, &mut out),
            Error::InvalidCoefficient,
        ),
        (
            merge::interpolate(&a, &b, f32::NAN, &mut out),
            Error::InvalidCoefficient,
        ),
        (
            merge::interpolate(&a, &nan, 0.5, &mut out),
            Error::NonFinite { index: 1 },
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, Err(want));
    }
    assert_eq!(out, [9.0; 2]);

    let qa = [Q15::from_bits(16384); 2];
    let mut qout = [Q15::MIN; 2];
    assert_eq!(
        merge::fedavg(&[&qa, &qa], &[u32::MAX, 1], &mut qout),
        Err(Error::WeightOverflow)
    );
    assert_eq!(
        merge::fedavg(&[&qa, &qa], &[0, 0], &mut qout),
        Err(Error::ZeroTotalWeight)
    );
    assert_eq!(merge::fedavg::<Q15>(&[], &[], &mut qout), Err(Error::Empty));
    assert_eq!(
        merge::interpolate(&qa, &qa, U1F31::from_bits((1 << 31) + 1), &mut qout),
        Err(Error::InvalidCoefficient)
    );
    assert_eq!(qout, [Q15::MIN; 2]);
    // the largest total that is still exact is accepted
    merge::fedavg(&[&qa, &qa], &[u32::MAX - 1, 1], &mut qout).unwrap();
    assert_eq!(qout, qa);
}

#[test]
fn errors_display_distinctly() {
    let all = [
        Error::LengthMismatch {
            expected: 3,
            found: 4,
        },
        Error::NonFinite { index: 2 },
        Error::OutOfRange { index: 5 },
        Error::InvalidDecay,
        Error::InvalidCoefficient,
        Error::InvalidWeight { index: 1 },
        Error::ZeroTotalWeight,
        Error::WeightOverflow,
        Error::CountOverflow,
        Error::InvalidState,
        Error::Unsupported,
        Error::InvalidIndex { index: 9 },
        Error::BadMagic,
        Error::UnsupportedVersion { found: 7 },
        Error::FormatMismatch,
        Error::LayoutMismatch,
        Error::BadChecksum,
        Error::Truncated,
        Error::ConfigMismatch,
        Error::BufferTooSmall,
        Error::Storage,
        Error::CapacityExceeded,
        Error::InvalidWindow,
        Error::TooFewSamples,
        Error::Empty,
    ];
    let texts: Vec<String> = all.iter().map(|e| e.to_string()).collect();
    for (i, t) in texts.iter().enumerate() {
        assert!(!t.is_empty());
        assert!(
            texts.iter().skip(i + 1).all(|u| u != t),
            "duplicate text {t}"
        );
    }
    assert!(texts[0].contains('3') && texts[0].contains('4'));
    let boxed: Box<dyn std::error::Error> = Box::new(Error::Empty);
    assert_eq!(boxed.to_string(), "nothing to read yet");
}
