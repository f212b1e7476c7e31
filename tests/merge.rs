//! Weighted averages and interpolation against the f64 formulas.

use polyak::{Error, Q15, Q31, U1F31, merge};
use polyak_host::reference;
use polyak_host::strategies::{config, f32_scale, f32_value, q15_value, q31_value};
use proptest::prelude::*;

use polyak_host::bounds::{interpolate_f32 as bound_lerp, weighted_f32 as bound_weighted};

fn weight() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => 0.0f32..10.0,
        1 => Just(0.0f32),
        1 => 1.0e-30f32..1.0e-20,
        1 => 1.0e20f32..1.0e30,
        1 => (1u32..1000).prop_map(|c| c as f32),
    ]
}

fn models(max_k: usize, max_len: usize) -> impl Strategy<Value = (Vec<Vec<f32>>, Vec<f32>)> {
    (1..=max_k, 0..=max_len).prop_flat_map(|(k, len)| {
        let vals = prop_oneof![
            prop::collection::vec(prop::collection::vec(f32_value(), len), k),
            (
                f32_scale(),
                prop::collection::vec(prop::collection::vec(-1.0f32..1.0, len), k)
            )
                .prop_map(|(s, v)| v
                    .into_iter()
                    .map(|m| m.into_iter().map(|x| x * s).collect())
                    .collect()),
        ];
        (vals, prop::collection::vec(weight(), k))
    })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn f32_weighted_average_within_bound((ms, ws) in models(8, 200)) {
        let refs: Vec<&[f32]> = ms.iter().map(|m| m.as_slice()).collect();
        let len = ms[0].len();
        let mut out = vec![f32::NAN; len];
        let res = merge::weighted_average(&refs, &ws, &mut out);
        let total: f64 = ws.iter().map(|&w| f64::from(w)).sum();
        if total == 0.0 {
            prop_assert_eq!(res, Err(Error::ZeroTotalWeight));
            prop_assert!(out.iter().all(|v| v.is_nan()), "out must be untouched");
            return Ok(());
        }
        res.unwrap();
        let wd: Vec<f64> = ws.iter().map(|&w| f64::from(w)).collect();
        for i in 0..len {
            let xs: Vec<f64> = ms.iter().map(|m| f64::from(m[i])).collect();
            let want = reference::weighted_average(&xs, &wd);
            let m = xs.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            let err = (f64::from(out[i]) - want).abs();
            // the f64 reference's own error: K products and sums, relative 2K·u64
            let own = 2.0 * ms.len() as f64 * reference::U64 * m;
            prop_assert!(err <= bound_weighted(want, m, ms.len()) + own,
                "elem {i}: got {} want {want} err {err:e}", out[i]);
        }
    }

    #[test]
    fn f32_interpolation_within_bound(
        (a, b) in (0usize..200).prop_flat_map(|n| (prop::collection::vec(f32_value(), n), prop::collection::vec(f32_value(), n))),
        t in prop_oneof![0.0f32..=1.0, Just(0.0f32), Just(1.0f32), Just(0.5f32)],
    ) {
        let mut out = vec![0.0f32; a.len()];
        merge::interpolate(&a, &b, t, &mut out).unwrap();
        for i in 0..a.len() {
            let (ad, bd, td) = (f64::from(a[i]), f64::from(b[i]), f64::from(t));
            let want = reference::interpolate(ad, bd, td);
            let err = (f64::from(out[i]) - want).abs();
            let own = 2.0 * reference::U64 * (ad.abs() + bd.abs());
            prop_assert!(err <= bound_lerp(want, ad, bd, td) + own, "{} vs {want}", out[i]);
            if t == 0.0 { prop_assert_eq!(out[i].to_bits(), a[i].to_bits()); }
            if t == 1.0 { prop_assert_eq!(out[i].to_bits(), b[i].to_bits()); }
        }
    }

    #[test]
    fn q15_fedavg_correctly_rounded_and_order_free(
        (ms, counts, perm) in (1usize..10, 0usize..100).prop_flat_map(|(k, len)| (
            prop::collection::vec(prop::collection::vec(q15_value(), len), k),
            prop::collection::vec(prop_oneof![0u32..1000, Just(u32::MAX / 16)], k),
            Just((0..k).collect::<Vec<_>>()).prop_shuffle(),
        ))
    ) {
        check_fixed(&ms, &counts, &perm, |q: Q15| i128::from(q.to_bits()))?;
    }

    #[test]
    fn q31_fedavg_correctly_rounded_and_order_free(
        (ms, counts, perm) in (1usize..10, 0usize..100).prop_flat_map(|(k, len)| (
            prop::collection::vec(prop::collection::vec(q31_value(), len), k),
            prop::collection::vec(prop_oneof![0u32..1000, Just(u32::MAX / 16)], k),
            Just((0..k).collect::<Vec<_>>()).prop_shuffle(),
        ))
    ) {
        check_fixed(&ms, &counts, &perm, |q: Q31| i128::from(q.to_bits()))?;
    }

    #[test]
    fn q15_interpolation_correctly_rounded(
        (a, b) in (0usize..100).prop_flat_map(|n| (prop::collection::vec(q15_value(), n), prop::collection::vec(q15_value(), n))),
        t in prop_oneof![0u32..=(1 << 31), Just(0), Just(1 << 31)],
    ) {
        let mut out = vec![Q15::ZERO; a.len()];
        merge::interpolate(&a, &b, U1F31::from_bits(t), &mut out).unwrap();
        for i in 0..a.len() {
            // exact: a + t(b − a) = (a·(2³¹ − t) + b·t) / 2³¹
            let num = i128::from(a[i].to_bits()) * ((1i128 << 31) - i128::from(t)) + i128::from(b[i].to_bits()) * i128::from(t);
            check_rounded(i128::from(out[i].to_bits()), num, 1i128 << 31)?;
        }
    }

    #[test]
    fn q31_interpolation_correctly_rounded(
        (a, b) in (0usize..100).prop_flat_map(|n| (prop::collection::vec(q31_value(), n), prop::collection::vec(q31_value(), n))),
        t in prop_oneof![0u32..=(1 << 31), Just(0), Just(1 << 31)],
    ) {
        let mut out = vec![Q31::ZERO; a.len()];
        merge::interpolate(&a, &b, U1F31::from_bits(t), &mut out).unwrap();
        for i in 0..a.len() {
            let num = i128::from(a[i].to_bits()) * ((1i128 << 31) - i128::from(t)) + i128::from(b[i].to_bits()) * i128::from(t);
            check_rounded(i128::from(out[i].to_bits()), num, 1i128 << 31)?;
        }
    }
}

fn check_rounded(q: i128, num: i128, den: i128) -> Result<(), TestCaseError> {
    let dist2 = 2 * (q * den - num).abs();
    prop_assert!(dist2 <= den, "{q} is more than ½ LSB from {num}/{den}");
    if dist2 == den {
        prop_assert_eq!(q % 2, 0, "tie not rounded to even");
    }
    Ok(())
}

fn check_fixed<T: polyak::merge::Merge<Weight = u32> + Default + PartialEq + core::fmt::Debug>(
    ms: &[Vec<T>],
    counts: &[u32],
    perm: &[usize],
    bits: impl Fn(T) -> i128,
) -> Result<(), TestCaseError> {
    let len = ms[0].len();
    let refs: Vec<&[T]> = ms.iter().map(|m| m.as_slice()).collect();
    let mut out = vec![T::default(); len];
    let res = merge::fedavg(&refs, counts, &mut out);
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total == 0 {
        prop_assert_eq!(res, Err(Error::ZeroTotalWeight));
        return Ok(());
    }
    if total > u64::from(u32::MAX) {
        prop_assert_eq!(res, Err(Error::WeightOverflow));
        return Ok(());
    }
    res.unwrap();
    // the same through weighted_average, and in a shuffled order
    let prefs: Vec<&[T]> = perm.iter().map(|&k| ms[k].as_slice()).collect();
    let pcounts: Vec<u32> = perm.iter().map(|&k| counts[k]).collect();
    let mut out2 = vec![T::default(); len];
    merge::weighted_average(&prefs, &pcounts, &mut out2).unwrap();
    prop_assert_eq!(&out, &out2);
    for i in 0..len {
        let num: i128 = ms
            .iter()
            .zip(counts)
            .map(|(m, &c)| bits(m[i]) * i128::from(c))
            .sum();
        check_rounded(bits(out[i]), num, i128::from(total))?;
    }
    Ok(())
}

#[test]
fn fedavg_in_f32_and_q15_agree_on_a_small_case() {
    let a = [0.5f32, -0.25];
    let b = [0.25f32, 0.75];
    let mut out = [0.0f32; 2];
    merge::fedavg(&[&a, &b], &[1, 3], &mut out).unwrap();
    assert_eq!(out, [0.3125, 0.5]);
    let aq = a.map(Q15::from_num);
    let bq = b.map(Q15::from_num);
    let mut outq = [Q15::ZERO; 2];
    merge::fedavg(&[&aq, &bq], &[1, 3], &mut outq).unwrap();
    assert_eq!(outq, out.map(Q15::from_num));
}

#[test]
fn fixed_ties_round_to_even() {
    let q = |v: i16| Q15::from_bits(v);
    let mut out = [Q15::ZERO; 4];
    // (1+2)/2 = 1.5 → 2, (2+3)/2 = 2.5 → 2, (−1−2)/2 = −1.5 → −2, (−2−3)/2 = −2.5 → −2
    merge::fedavg(
        &[&[q(1), q(2), q(-1), q(-2)], &[q(2), q(3), q(-2), q(-3)]],
        &[1, 1],
        &mut out,
    )
    .unwrap();
    assert_eq!(out.map(|v| v.to_bits()), [2, 2, -2, -2]);
    let half = U1F31::from_bits(1 << 30);
    merge::interpolate(
        &[q(1), q(2), q(-1), q(-2)],
        &[q(2), q(3), q(-2), q(-3)],
        half,
        &mut out,
    )
    .unwrap();
    assert_eq!(out.map(|v| v.to_bits()), [2, 2, -2, -2]);
    let r = |v: i32| Q31::from_bits(v);
    let mut out31 = [Q31::ZERO; 2];
    merge::interpolate(
        &[r(i32::MAX - 1), r(-3)],
        &[r(i32::MAX), r(-2)],
        half,
        &mut out31,
    )
    .unwrap();
    assert_eq!(out31.map(|v| v.to_bits()), [i32::MAX - 1, -2]);
}
