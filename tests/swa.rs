//! SWA against the f64 mean: the bounds in `polyak::swa`'s docs, the exact
//! rounding and order independence of the fixed-point sums, and the count
//! limits.

use fixed::types::{I1F15, I1F31};
use polyak::{CompF32, Error, I33F31, I49F15, Q15, Q31, Swa};
use polyak_host::metrics::ulp;
use polyak_host::naive::RunningMean;
use polyak_host::reference::Mean;
use polyak_host::strategies::{config, f32_scale, f32_value, q15_value, q31_value};
use proptest::prelude::*;

use polyak_host::bounds::swa_f32 as bound_f32;

/// Checks an f32 SWA against the reference after every snapshot; returns
/// the worst error in ulps of `mean|x|`.
fn check_f32(snapshots: &[Vec<f32>]) -> Result<f64, TestCaseError> {
    let n = snapshots[0].len();
    let mut swa = Swa::new(vec![CompF32::ZERO; n]);
    let mut r = Mean::new(n);
    let mut out = vec![0.0f32; n];
    let mut worst = 0.0f64;
    for x in snapshots {
        swa.update(x).unwrap();
        r.update(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        swa.read_into(&mut out).unwrap();
        let (want, mean_abs) = (r.value(), r.mean_abs());
        for i in 0..n {
            let err = (f64::from(out[i]) - want[i]).abs();
            let b = bound_f32(want[i], mean_abs[i], r.count()) + r.own_error(i);
            prop_assert!(err <= b, "n {} elem {i}: err {err:e} > {b:e}", r.count());
            if mean_abs[i] > 0.0 {
                worst = worst.max(err / ulp(mean_abs[i]));
            }
        }
    }
    Ok(worst)
}

fn snapshots(max_len: usize, max_n: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (1..=max_len, 1..=max_n).prop_flat_map(|(len, n)| {
        prop_oneof![
            prop::collection::vec(prop::collection::vec(f32_value(), len), n),
            (
                f32_scale(),
                prop::collection::vec(prop::collection::vec(-1.0f32..1.0, len), n)
            )
                .prop_map(|(s, v)| v
                    .into_iter()
                    .map(|b| b.into_iter().map(|x| x * s).collect())
                    .collect()),
        ]
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn f32_mean_within_bound(snaps in snapshots(16, 300)) {
        check_f32(&snaps)?;
    }

    #[test]
    fn q15_mean_is_correctly_rounded_and_order_free(
        (snaps, perm) in (1usize..8, 1usize..64).prop_flat_map(|(len, n)| {
            (prop::collection::vec(prop::collection::vec(q15_value(), len), n), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let len = snaps[0].len();
        let mut swa = Swa::new(vec![I49F15::ZERO; len]);
        let mut shuffled = Swa::new(vec![I49F15::ZERO; len]);
        for s in &snaps { swa.update(s).unwrap(); }
        for &k in &perm { shuffled.update(&snaps[k]).unwrap(); }
        let mut out = vec![Q15::ZERO; len];
        let mut out2 = vec![Q15::ZERO; len];
        swa.read_into(&mut out).unwrap();
        shuffled.read_into(&mut out2).unwrap();
        prop_assert_eq!(&out, &out2);
        for i in 0..len {
            let sum: i128 = snaps.iter().map(|s| i128::from(s[i].to_bits())).sum();
            check_rounded(i128::from(out[i].to_bits()), sum, snaps.len() as i128)?;
        }
    }

    #[test]
    fn q31_mean_is_correctly_rounded_and_order_free(
        (snaps, perm) in (1usize..8, 1usize..64).prop_flat_map(|(len, n)| {
            (prop::collection::vec(prop::collection::vec(q31_value(), len), n), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    ) {
        let len = snaps[0].len();
        let mut swa = Swa::new(vec![I33F31::ZERO; len]);
        let mut shuffled = Swa::new(vec![I33F31::ZERO; len]);
        for s in &snaps { swa.update(s).unwrap(); }
        for &k in &perm { shuffled.update(&snaps[k]).unwrap(); }
        let mut out = vec![Q31::ZERO; len];
        let mut out2 = vec![Q31::ZERO; len];
        swa.read_into(&mut out).unwrap();
        shuffled.read_into(&mut out2).unwrap();
        prop_assert_eq!(&out, &out2);
        for i in 0..len {
            let sum: i128 = snaps.iter().map(|s| i128::from(s[i].to_bits())).sum();
            check_rounded(i128::from(out[i].to_bits()), sum, snaps.len() as i128)?;
        }
    }
}

/// `q` is `num/den` rounded to nearest, ties to even, checked exactly:
/// `|q·den − num| ≤ den/2`, and at a tie `q` is even.
fn check_rounded(q: i128, num: i128, den: i128) -> Result<(), TestCaseError> {
    let dist2 = 2 * (q * den - num).abs();
    prop_assert!(dist2 <= den, "{q} is more than ½ LSB from {num}/{den}");
    if dist2 == den {
        prop_assert_eq!(q % 2, 0, "tie not rounded to even");
    }
    Ok(())
}

#[test]
fn million_snapshots_stay_within_two_ulps() {
    // Same-sign data around 1 (a weight that drifts slowly), and mixed-sign
    // data; 10^6 snapshots each. The running-mean form is measured beside.
    let n_snap = 1_000_000usize;
    for (name, offset) in [("same-sign", 1.0f64), ("mixed-sign", 0.0)] {
        let len = 4;
        let mut swa = Swa::new(vec![CompF32::ZERO; len]);
        let mut naive = RunningMean::new(len);
        let mut r = Mean::new(len);
        let mut x = vec![0.0f32; len];
        let mut xd = vec![0.0f64; len];
        for t in 0..n_snap {
            for i in 0..len {
                let tt = t as f64;
                let v = offset
                    + 0.3 * (tt * 1e-5 + i as f64).sin()
                    + 0.2 * (tt * 0.61 + i as f64).sin();
                x[i] = v as f32;
                xd[i] = f64::from(x[i]);
            }
            swa.update(&x).unwrap();
            naive.update(&x);
            r.update(&xd);
        }
        let mut out = vec![0.0f32; len];
        swa.read_into(&mut out).unwrap();
        let (want, mean_abs) = (r.value(), r.mean_abs());
        let mut worst = 0.0f64;
        let mut worst_naive = 0.0f64;
        for i in 0..len {
            let err = (f64::from(out[i]) - want[i]).abs();
            assert!(err <= bound_f32(want[i], mean_abs[i], r.count()) + r.own_error(i));
            // "within 2 ulp": of the mean for same-sign data, of mean|x| in general
            let scale = if offset > 0.0 {
                want[i].abs()
            } else {
                mean_abs[i]
            };
            let ulps = err / ulp(scale);
            assert!(ulps <= 2.0, "{name}: {ulps} ulps");
            worst = worst.max(ulps);
            worst_naive =
                worst_naive.max((f64::from(naive.value()[i]) - want[i]).abs() / ulp(scale));
        }
        println!(
            "{name}, 10^6 snapshots: compensated sum {worst:.3} ulps, running mean {worst_naive:.1} ulps"
        );
        assert!(
            worst_naive > 4.0 * worst.max(0.25),
            "the running mean should do clearly worse"
        );
    }
}

#[test]
fn f32_count_limit_is_an_error() {
    let mut swa = Swa::new([CompF32::ZERO; 1]);
    for _ in 0..(1u32 << 24) {
        swa.update(&[0.5]).unwrap();
    }
    let before = format!("{swa:?}");
    assert_eq!(swa.update(&[0.5]), Err(Error::CountOverflow));
    assert_eq!(format!("{swa:?}"), before);
    let mut out = [0.0f32];
    swa.read_into(&mut out).unwrap();
    assert_eq!(out, [0.5]);
}

#[test]
fn fixed_count_limit_is_an_error() {
    // u32::MAX snapshots of −1 and of the largest value: the sums at their
    // extremes are still exact, and one more is refused.
    let n = u32::MAX;
    let acc = [
        I49F15::from_bits(-(i64::from(n) << 15)),
        I49F15::from_bits(i64::from(n) * 32767),
    ];
    let mut swa = Swa::from_parts(acc, n).unwrap();
    let before = format!("{swa:?}");
    assert_eq!(swa.update(&[Q15::MIN, Q15::MAX]), Err(Error::CountOverflow));
    assert_eq!(format!("{swa:?}"), before);
    let mut out = [Q15::ZERO; 2];
    swa.read_into(&mut out).unwrap();
    assert_eq!(out, [Q15::MIN, Q15::MAX]);

    let acc = [
        I33F31::from_bits(-(i64::from(n) << 31)),
        I33F31::from_bits(i64::from(n) * i64::from(i32::MAX)),
    ];
    let mut swa = Swa::from_parts(acc, n).unwrap();
    assert_eq!(swa.update(&[Q31::MIN, Q31::MAX]), Err(Error::CountOverflow));
    let mut out = [Q31::ZERO; 2];
    swa.read_into(&mut out).unwrap();
    assert_eq!(out, [Q31::MIN, Q31::MAX]);
    // one step below the limit, one more update is accepted and exact
    let acc = [I33F31::from_bits(-(i64::from(n - 1) << 31))];
    let mut swa = Swa::from_parts(acc, n - 1).unwrap();
    swa.update(&[I1F31::MIN]).unwrap();
    assert_eq!(swa.accumulator()[0].to_bits(), -(i64::from(n) << 31));
}

#[test]
fn from_parts_rejects_impossible_states() {
    assert_eq!(
        Swa::from_parts([I49F15::from_bits(32768 * 3)], 2).map(|_| ()),
        Err(Error::InvalidState)
    );
    assert_eq!(
        Swa::from_parts([I49F15::from_bits(1)], 0).map(|_| ()),
        Err(Error::InvalidState)
    );
    assert!(Swa::from_parts([I49F15::from_bits(-65536)], 2).is_ok());
    assert_eq!(
        Swa::from_parts([CompF32::ZERO], (1 << 24) + 1).map(|_| ()),
        Err(Error::InvalidState)
    );
    assert_eq!(
        Swa::from_parts([CompF32::new(f32::NAN)], 3).map(|_| ()),
        Err(Error::InvalidState)
    );
}

#[test]
fn storage_kinds_give_identical_bits() {
    const N: usize = 5;
    let mut a = Swa::new([I49F15::ZERO; N]);
    let mut buf = [I49F15::ZERO; N];
    let mut s = Swa::new(&mut buf[..]);
    let mut hv: heapless::Vec<I49F15, N> = heapless::Vec::new();
    hv.resize(N, I49F15::ONE).unwrap(); // non-zero: new() must clear it
    let mut h = Swa::new(hv);
    for t in 0..1000i32 {
        let x: [I1F15; N] = core::array::from_fn(|i| {
            I1F15::from_bits(((t * 7919 + i as i32 * 104_729) % 65536 - 32768) as i16)
        });
        a.update(&x).unwrap();
        s.update(&x).unwrap();
        h.update(&x).unwrap();
    }
    assert_eq!(a.accumulator(), s.accumulator());
    assert_eq!(a.accumulator(), h.accumulator());
}

#[test]
fn reset_clears() {
    let mut swa = Swa::new([CompF32::ZERO; 2]);
    swa.update(&[1.0, 2.0]).unwrap();
    swa.reset();
    assert_eq!(swa.count(), 0);
    let mut out = [0.0f32; 2];
    assert_eq!(swa.read_into(&mut out), Err(Error::Empty));
    swa.update(&[3.0, 4.0]).unwrap();
    swa.read_into(&mut out).unwrap();
    assert_eq!(out, [3.0, 4.0]);
}
