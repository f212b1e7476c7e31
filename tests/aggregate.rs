//! The streaming aggregators against their double-double references: every
//! documented bound, exact fixed-point results that do not depend on the
//! arrival order, and typed errors that leave the state unchanged.

// Parallel per-element arrays read best by index.
#![allow(clippy::needless_range_loop)]

use polyak::aggregate::{
    Drop, DualAveraging, Fisher, FisherAcc, MaskedAverage, Participation, TaskArithmetic, Ties,
    TiesAcc, VarianceCorrected, WeightedAverage, median, trimmed_mean,
};
use polyak::layout::Layout;
use polyak::{CompF32, Error, I16F16, I33F31, I49F15, Q15, Q31, merge};
use polyak_host::dd::Dd;
use polyak_host::metrics::{EPS, ETA};
use polyak_host::reference::aggregate as r;
use polyak_host::strategies::{config, f32_value, q15_value, q31_value};
use proptest::prelude::*;

fn state<T: core::fmt::Debug>(x: &T) -> String {
    format!("{x:?}")
}

/// `k` models of `n` f32 values.
fn f32_models(k: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (0usize..12, k)
        .prop_flat_map(|(n, k)| prop::collection::vec(prop::collection::vec(f32_value(), n), k))
}

/// `k` models of `n` moderate f32 values (for methods whose bounds are
/// relative to the data, with products of several of them).
fn moderate_models(
    k: std::ops::Range<usize>,
    n: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (n, k).prop_flat_map(|(n, k)| prop::collection::vec(prop::collection::vec(-4.0f32..4.0, n), k))
}

fn col(models: &[Vec<f32>], i: usize) -> Vec<f64> {
    models.iter().map(|m| f64::from(m[i])).collect()
}

fn err(got: f32, want: Dd) -> f64 {
    (Dd::from(got) - want).abs().to_f64()
}

/// Round-half-even of `num / den` for `den > 0`, in i128.
fn div_even(num: i128, den: i128) -> i128 {
    let q = num.div_euclid(den);
    let r = num.rem_euclid(den);
    match (2 * r).cmp(&den) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal => q + (q & 1),
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// f32 weighted average: `ε·(1.5·|ref| + M) + K·η·(M + 1)`.
    #[test]
    fn weighted_f32_within_bound(models in f32_models(1..8), ws in prop::collection::vec(0.0f32..4.0, 8)) {
        let n = models[0].len();
        let ws = &ws[..models.len()];
        prop_assume!(ws.iter().any(|&w| w > 0.0));
        let mut avg = WeightedAverage::new(vec![CompF32::ZERO; n]);
        for (m, &w) in models.iter().zip(ws) {
            avg.fold(m, w).unwrap();
        }
        let mut out = vec![0.0f32; n];
        avg.finish(&mut out).unwrap();
        let wd: Vec<f64> = ws.iter().map(|&w| f64::from(w)).collect();
        let k = models.len() as f64;
        for i in 0..n {
            let xs = col(&models, i);
            let want = r::weighted(&xs, &wd);
            let m = xs.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            let total: f64 = wd.iter().sum();
            let b = EPS * (1.5 * want.abs().to_f64() + m) + (k / total + 1.0) * ETA;
            prop_assert!(err(out[i], want) <= b, "elem {i}: {} vs {want:?}", out[i]);
        }
    }

    /// Fixed point: the correctly rounded weighted average, the same bits
    /// in any arrival order.
    #[test]
    fn weighted_fixed_is_exact_in_any_order(
        q in (1usize..8, 0usize..10).prop_flat_map(|(k, n)| (
            prop::collection::vec((prop::collection::vec(q15_value(), n), prop::collection::vec(q31_value(), n), 0u32..1000), k),
        )).prop_flat_map(|(v,)| (Just(v.clone()), Just(v).prop_shuffle())),
    ) {
        let (models, shuffled) = q;
        let n = models[0].0.len();
        prop_assume!(models.iter().any(|m| m.2 > 0));
        let run = |ms: &[(Vec<Q15>, Vec<Q31>, u32)]| {
            let mut a15 = WeightedAverage::new(vec![I49F15::ZERO; n]);
            let mut a31 = WeightedAverage::new(vec![I33F31::ZERO; n]);
            for (m15, m31, w) in ms {
                a15.fold(m15, *w).unwrap();
                a31.fold(m31, *w).unwrap();
            }
            let (mut o15, mut o31) = (vec![Q15::ZERO; n], vec![Q31::ZERO; n]);
            a15.finish(&mut o15).unwrap();
            a31.finish(&mut o31).unwrap();
            (o15, o31)
        };
        let (o15, o31) = run(&models);
        prop_assert_eq!(&run(&shuffled), &(o15.clone(), o31.clone()));
        let total: i128 = models.iter().map(|m| i128::from(m.2)).sum();
        for i in 0..n {
            let s15: i128 = models.iter().map(|m| i128::from(m.2) * i128::from(m.0[i].to_bits())).sum();
            let s31: i128 = models.iter().map(|m| i128::from(m.2) * i128::from(m.1[i].to_bits())).sum();
            prop_assert_eq!(i128::from(o15[i].to_bits()), div_even(s15, total));
            prop_assert_eq!(i128::from(o31[i].to_bits()), div_even(s31, total));
        }
    }

    /// A soup is the average with unit weights; segments left out of a
    /// layer-wise average keep their values.
    #[test]
    fn soup_and_layerwise(models in moderate_models(1..6, 2..12), split in 1usize..11, keep in any::<[bool; 2]>()) {
        let n = models[0].len();
        let split = split.min(n - 1);
        let mut soup = WeightedAverage::new(vec![CompF32::ZERO; n]);
        let mut ones = WeightedAverage::new(vec![CompF32::ZERO; n]);
        for m in &models {
            soup.fold_uniform(m).unwrap();
            ones.fold(m, 1.0).unwrap();
        }
        let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
        soup.finish(&mut a).unwrap();
        ones.finish(&mut b).unwrap();
        prop_assert_eq!(&a, &b);
        let mut layout: Layout<2> = Layout::new();
        layout.push("a", split).unwrap();
        layout.push("b", n - split).unwrap();
        let mut local = vec![7.0f32; n];
        soup.finish_segments(&mut local, &layout, &keep).unwrap();
        for i in 0..n {
            let inc = if i < split { keep[0] } else { keep[1] };
            prop_assert_eq!(local[i], if inc { a[i] } else { 7.0 });
        }
    }

    /// Models sharing a mask average to exactly zero outside it; a model
    /// with another mask is refused at its first differing element.
    #[test]
    fn masks_are_preserved(
        models in moderate_models(2..6, 1..40),
        mask in prop::collection::vec(any::<bool>(), 40),
        flip in any::<prop::sample::Index>(),
    ) {
        let n = models[0].len();
        let sparse: Vec<Vec<f32>> = models
            .iter()
            .map(|m| m.iter().zip(&mask).map(|(&x, &on)| if on { if x == 0.0 { 1.0 } else { x } } else { 0.0 }).collect())
            .collect();
        let mut soup = MaskedAverage::new(vec![CompF32::ZERO; n], vec![0u32; n.div_ceil(32)]).unwrap();
        for m in &sparse {
            soup.fold(m, 1.0).unwrap();
        }
        let mut out = vec![1.0f32; n];
        soup.finish(&mut out).unwrap();
        let mut plain = WeightedAverage::new(vec![CompF32::ZERO; n]);
        for m in &sparse {
            plain.fold(m, 1.0).unwrap();
        }
        let mut want = vec![0.0f32; n];
        plain.finish(&mut want).unwrap();
        for i in 0..n {
            prop_assert_eq!(soup.in_mask(i), mask[i]);
            if !mask[i] {
                prop_assert_eq!(out[i], 0.0);
            }
            prop_assert_eq!(out[i], want[i]);
        }
        // one element flipped in or out of the mask
        let j = flip.index(n);
        let mut bad = sparse[0].clone();
        bad[j] = if mask[j] { 0.0 } else { 0.5 };
        let before = state(&soup);
        prop_assert_eq!(soup.fold(&bad, 1.0), Err(Error::MaskMismatch { index: j }));
        prop_assert_eq!(state(&soup), before);
    }

    /// IDA: each weight is `floor/max(d, floor)`, rounded once, and the
    /// average is the weighted average with those weights.
    #[test]
    fn inverse_distance_weights(models in moderate_models(1..6, 1..12), reference in prop::collection::vec(-4.0f32..4.0, 12), floor in 0.001f32..2.0) {
        let n = models[0].len();
        let reference = &reference[..n];
        let mut ida = WeightedAverage::new(vec![CompF32::ZERO; n]);
        let mut check = WeightedAverage::new(vec![CompF32::ZERO; n]);
        for m in &models {
            let w = ida.fold_inverse_distance(m, reference, floor).unwrap();
            let d = m.iter().zip(reference).fold(Dd::ZERO, |s, (&x, &y)| {
                let e = Dd::from(x) - Dd::from(y);
                s + e * e
            }).to_f64().sqrt();
            let want = if d <= f64::from(floor) { 1.0 } else { f64::from(floor) / d };
            prop_assert!((f64::from(w) - want).abs() <= (EPS / 2.0 + 2f64.powi(-40)) * want, "{w} vs {want}");
            check.fold(m, w).unwrap();
        }
        prop_assert_eq!(state(&ida), state(&check));
    }

    /// Variance correction against its formula on the f32 average, and
    /// what it preserves.
    #[test]
    fn variance_correction_within_bound(models in moderate_models(2..8, 2..24), split in 1usize..23) {
        let n = models[0].len();
        let split = split.min(n - 1);
        let mut layout: Layout<2> = Layout::new();
        layout.push("a", split).unwrap();
        layout.push("b", n - split).unwrap();
        let mut vc = VarianceCorrected::new(vec![CompF32::ZERO; n], layout).unwrap();
        for m in &models {
            vc.fold(m).unwrap();
        }
        let mut avg = vec![0.0f32; n];
        vc.average().finish(&mut avg).unwrap();
        let mut out = vec![0.0f32; n];
        vc.finish(&mut out).unwrap();
        for range in [0..split, split..n] {
            let a: Vec<f64> = avg[range.clone()].iter().map(|&x| f64::from(x)).collect();
            let vars: Vec<f64> = models
                .iter()
                .map(|m| {
                    let xs: Vec<f64> = m[range.clone()].iter().map(|&x| f64::from(x)).collect();
                    r::mean_var(&xs).1.to_f64()
                })
                .collect();
            let (want, m, s) = r::variance_corrected(&a, &vars);
            let dev = a.iter().fold(0.0f64, |acc, x| acc.max((x - m).abs()));
            for (j, i) in range.clone().enumerate() {
                let b = EPS / 2.0 * want[j].abs() + 2f64.powi(-40) * (m.abs() + s * dev);
                prop_assert!((f64::from(out[i]) - want[j]).abs() <= b, "elem {i}: {} vs {}", out[i], want[j]);
            }
        }
    }

    /// Per-segment interpolation is `interpolate` on each segment.
    #[test]
    fn segment_interpolation(a in prop::collection::vec(f32_value(), 2..12), b in prop::collection::vec(f32_value(), 12), t in [0.0f32..=1.0, 0.0f32..=1.0], split in 1usize..11) {
        let n = a.len();
        let b = &b[..n];
        let split = split.min(n - 1);
        let mut layout: Layout<2> = Layout::new();
        layout.push("a", split).unwrap();
        layout.push("b", n - split).unwrap();
        let mut out = vec![0.0f32; n];
        merge::interpolate_segments(&a, b, &layout, &t, &mut out).unwrap();
        let (mut lo, mut hi) = (vec![0.0f32; split], vec![0.0f32; n - split]);
        merge::interpolate(&a[..split], &b[..split], t[0], &mut lo).unwrap();
        merge::interpolate(&a[split..], &b[split..], t[1], &mut hi).unwrap();
        prop_assert_eq!(&out[..split], &lo[..]);
        prop_assert_eq!(&out[split..], &hi[..]);
    }

    /// Slerp against the formula with exact norms.
    #[test]
    fn slerp_within_bound(a in prop::collection::vec(-4.0f32..4.0, 1..40), b in prop::collection::vec(-4.0f32..4.0, 40), t in 0.0f32..=1.0) {
        let n = a.len();
        let b = &b[..n];
        let mut out = vec![0.0f32; n];
        let spherical = merge::slerp(&a, b, t, &mut out).unwrap();
        let ad: Vec<f64> = a.iter().map(|&x| f64::from(x)).collect();
        let bd: Vec<f64> = b.iter().map(|&x| f64::from(x)).collect();
        match r::slerp(&ad, &bd, f64::from(t), merge::SLERP_LINEAR_BELOW) {
            Some((want, s)) if spherical => {
                for i in 0..n {
                    let bound = EPS / 2.0 * want[i].abs()
                        + 2f64.powi(-49) * n as f64 * (ad[i].abs() + bd[i].abs()) / (s * s);
                    prop_assert!((f64::from(out[i]) - want[i]).abs() <= bound, "elem {i}: {} vs {}", out[i], want[i]);
                }
            }
            None if !spherical => {
                let mut lin = vec![0.0f32; n];
                merge::interpolate(&a, b, t, &mut lin).unwrap();
                prop_assert_eq!(&out, &lin);
            }
            // the two sides of the colinearity threshold, within rounding
            _ => {}
        }
    }

    /// Fisher merging and the precision-weighted form within their bounds.
    #[test]
    fn fisher_within_bound(
        models in f32_models(1..6),
        fs in prop::collection::vec(prop::collection::vec(prop_oneof![Just(0.0f32), 0.0f32..100.0], 12), 6),
        base in prop::collection::vec(-4.0f32..4.0, 12),
        h0 in prop::collection::vec(0.0f32..10.0, 12),
    ) {
        let n = models[0].len();
        let k = models.len();
        let floor = 1e-3f32;
        let mut fm = Fisher::new(vec![FisherAcc::ZERO; n], floor).unwrap();
        for (m, f) in models.iter().zip(&fs) {
            fm.fold(m, &f[..n]).unwrap();
        }
        let mut out = vec![0.0f32; n];
        fm.finish(&mut out).unwrap();
        for i in 0..n {
            let xs = col(&models, i);
            let f: Vec<f64> = fs[..k].iter().map(|f| f64::from(f[i])).collect();
            let want = r::fisher(&xs, &f, f64::from(floor));
            let m = xs.iter().fold(0.0f64, |a, x| a.max(x.abs()));
            let w: f64 = f.iter().map(|&f| f.max(f64::from(floor))).sum();
            let b = EPS * (1.5 * want.abs().to_f64() + m) + (k as f64 / w + 1.0) * ETA;
            prop_assert!(err(out[i], want) <= b, "fisher elem {i}: {} vs {want:?}", out[i]);
        }
        // precision-weighted, around a base (moderate models so θ − θ₀ stays in range)
        let models: Vec<Vec<f32>> = models.iter().map(|m| m.iter().map(|x| x.clamp(-1e20, 1e20)).collect()).collect();
        let base = &base[..n];
        let mut pm = Fisher::new(vec![FisherAcc::ZERO; n], floor).unwrap();
        for (m, f) in models.iter().zip(&fs) {
            pm.fold_delta(m, base, &f[..n]).unwrap();
        }
        pm.finish_delta(base, &h0[..n], &mut out).unwrap();
        for i in 0..n {
            let xs = col(&models, i);
            let f: Vec<f64> = fs[..k].iter().map(|f| f64::from(f[i])).collect();
            let b0 = f64::from(base[i]);
            let want = r::precision(b0, &xs, &f, f64::from(h0[i]), f64::from(floor));
            let d = xs.iter().fold(0.0f64, |a, x| a.max((x - b0).abs()));
            let delta = (want - Dd::from(b0)).abs().to_f64();
            let w: f64 = f64::from(h0[i]) + f.iter().map(|&f| f.max(f64::from(floor))).sum::<f64>();
            let b = EPS * (0.5 * want.abs().to_f64() + 1.5 * delta + d) + (k as f64 / w + 1.0) * ETA;
            prop_assert!(err(out[i], want) <= b, "precision elem {i}: {} vs {want:?}", out[i]);
        }
        prop_assert_eq!(pm.finish(&mut out), Err(Error::ConfigMismatch));
    }

    /// f32 task arithmetic, with and without DARE, within its bound.
    #[test]
    fn task_arithmetic_f32_within_bound(
        models in moderate_models(1..6, 0..24),
        base in prop::collection::vec(-4.0f32..4.0, 24),
        ws in prop::collection::vec(-2.0f32..2.0, 6),
        lambda in -2.0f32..2.0,
        rate in prop_oneof![Just(0.0f32), 0.0f32..0.95],
        seed in any::<u64>(),
        dare in any::<bool>(),
    ) {
        let n = models[0].len();
        let k = models.len();
        let base = &base[..n];
        let mut ta = TaskArithmetic::new(vec![CompF32::ZERO; n]);
        for (j, (m, &w)) in models.iter().zip(&ws).enumerate() {
            if dare {
                ta.fold_dare(m, base, w, Drop { rate, seed, model: j as u32 }).unwrap();
            } else {
                ta.fold(m, base, w).unwrap();
            }
        }
        let mut out = vec![0.0f32; n];
        ta.finish(base, lambda, &mut out).unwrap();
        // per segment: the same as separate finishes with each λ
        if n >= 2 {
            let mut layout: Layout<2> = Layout::new();
            layout.push("a", n / 2).unwrap();
            layout.push("b", n - n / 2).unwrap();
            let mut seg = vec![0.0f32; n];
            ta.finish_segments(base, &layout, &[lambda, -lambda], &mut seg).unwrap();
            let mut neg = vec![0.0f32; n];
            ta.finish(base, -lambda, &mut neg).unwrap();
            prop_assert_eq!(&seg[..n / 2], &out[..n / 2]);
            prop_assert_eq!(&seg[n / 2..], &neg[n / 2..]);
        }
        let wd: Vec<f64> = ws[..k].iter().map(|&w| f64::from(w)).collect();
        for i in 0..n {
            let xs = col(&models, i);
            let drop = dare.then_some((f64::from(rate), seed));
            let (want, s, a) = r::task(f64::from(base[i]), &xs, &wd, f64::from(lambda), drop, i);
            let l = f64::from(lambda).abs();
            let b = EPS * (0.5 * want.abs().to_f64() + l * (0.5 * s.abs().to_f64() + 1.5 * a)) * (1.0 + EPS)
                + (l * k as f64 + 1.0) * ETA;
            prop_assert!(err(out[i], want) <= b, "elem {i}: {} vs {want:?}", out[i]);
        }
    }

    /// Fixed-point task arithmetic (and DARE): the documented integer
    /// result, the same bits in any arrival order.
    #[test]
    fn task_arithmetic_fixed_exact_in_any_order(
        q in (1usize..6, 0usize..10).prop_flat_map(|(k, n)| (
            prop::collection::vec((prop::collection::vec(q15_value(), n), prop::collection::vec(q31_value(), n), -65536i32..65536, any::<u32>()), k),
            prop::collection::vec(q15_value(), n),
            prop::collection::vec(q31_value(), n),
        )).prop_flat_map(|(v, b15, b31)| (Just(v.clone()), Just(v).prop_shuffle(), Just(b15), Just(b31))),
        lambda in -131072i32..131072,
        rate in 0.0f32..0.9,
        seed in any::<u64>(),
        dare in any::<bool>(),
    ) {
        let (models, shuffled, b15, b31) = q;
        let n = b15.len();
        let lam = I16F16::from_bits(lambda);
        let run = |ms: &[(Vec<Q15>, Vec<Q31>, i32, u32)]| {
            let mut t15 = TaskArithmetic::<i64, _>::new(vec![0i64; n]);
            let mut t31 = TaskArithmetic::<i128, _>::new(vec![0i128; n]);
            for (m15, m31, w, id) in ms {
                let w = I16F16::from_bits(*w);
                if dare {
                    let d = Drop { rate, seed, model: *id };
                    t15.fold_dare(m15, &b15, w, d).unwrap();
                    t31.fold_dare(m31, &b31, w, d).unwrap();
                } else {
                    t15.fold(m15, &b15, w).unwrap();
                    t31.fold(m31, &b31, w).unwrap();
                }
            }
            let (mut o15, mut o31) = (vec![Q15::ZERO; n], vec![Q31::ZERO; n]);
            let s = t15.finish(&b15, lam, &mut o15).unwrap() + t31.finish(&b31, lam, &mut o31).unwrap();
            (o15, o31, s)
        };
        let got = run(&models);
        prop_assert_eq!(&run(&shuffled), &got);
        // the documented integer formula, written out
        let p = (f64::from(rate) * 4_294_967_296.0).floor() as i128;
        let keep = (1i128 << 32) - p;
        for i in 0..n {
            let mut s15 = 0i128;
            let mut s31 = 0i128;
            for (m15, m31, w, id) in &models {
                let kept = !dare || r::dare_keeps(f64::from(rate), seed, *id, i);
                let scale = |d: i128| if dare { div_even(d << 32, keep) } else { d };
                if kept {
                    s15 += i128::from(*w) * scale(i128::from(m15[i].to_bits()) - i128::from(b15[i].to_bits()));
                    s31 += i128::from(*w) * scale(i128::from(m31[i].to_bits()) - i128::from(b31[i].to_bits()));
                }
            }
            let v15 = i128::from(b15[i].to_bits()) + div_even(i128::from(lambda) * s15, 1 << 32);
            let v31 = i128::from(b31[i].to_bits()) + div_even(i128::from(lambda) * s31, 1 << 32);
            prop_assert_eq!(i128::from(got.0[i].to_bits()), v15.clamp(-32768, 32767));
            prop_assert_eq!(i128::from(got.1[i].to_bits()), v31.clamp(i32::MIN.into(), i32::MAX.into()));
        }
    }

    /// TIES, f32 within its bound and Q15 exact in any order.
    #[test]
    fn ties_within_bound(
        models in moderate_models(1..6, 1..24),
        base in prop::collection::vec(-4.0f32..4.0, 24),
        density in prop_oneof![Just(1.0f32), 0.05f32..1.0],
        lambda in -2.0f32..2.0,
    ) {
        let n = models[0].len();
        let base = &base[..n];
        let mut ties = Ties::new(vec![TiesAcc::default(); n]);
        for m in &models {
            ties.fold(m, base, density).unwrap();
        }
        let mut out = vec![0.0f32; n];
        ties.finish(base, lambda, &mut out).unwrap();
        // the reference trims the f32 differences, as the device does
        let bd: Vec<f64> = base.iter().map(|&x| f64::from(x)).collect();
        let md: Vec<Vec<f64>> = models
            .iter()
            .map(|m| m.iter().zip(base).map(|(&t, &b)| f64::from(b) + f64::from(t - b)).collect())
            .collect();
        let want = r::ties(&bd, &md, f64::from(density), f64::from(lambda));
        for i in 0..n {
            let (w, mu, agree) = want[i];
            let dmax = md.iter().fold(0.0f64, |a, m| a.max((m[i] - bd[i]).abs()));
            let b = EPS * (0.5 * w.abs() + f64::from(lambda).abs() * (1.5 * mu.abs() + agree as f64 * EPS * dmax)) + ETA;
            prop_assert!((f64::from(out[i]) - w).abs() <= b, "elem {i}: {} vs {w}", out[i]);
        }
    }

    #[test]
    fn ties_q15_exact_in_any_order(
        q in (1usize..6, 1usize..16).prop_flat_map(|(k, n)| (
            prop::collection::vec(prop::collection::vec(q15_value(), n), k),
            prop::collection::vec(q15_value(), n),
        )).prop_flat_map(|(v, b)| (Just(v.clone()), Just(v).prop_shuffle(), Just(b))),
        density in prop_oneof![Just(1.0f32), 0.05f32..1.0],
        lambda in -131072i32..131072,
    ) {
        let (models, shuffled, base) = q;
        let n = base.len();
        let run = |ms: &[Vec<Q15>]| {
            let mut t = Ties::new(vec![TiesAcc::default(); n]);
            for m in ms {
                t.fold(m, &base, density).unwrap();
            }
            let mut out = vec![Q15::ZERO; n];
            t.finish(&base, I16F16::from_bits(lambda), &mut out).unwrap();
            out
        };
        let got = run(&models);
        prop_assert_eq!(&run(&shuffled), &got);
        let bd: Vec<f64> = base.iter().map(|x| f64::from(x.to_bits())).collect();
        let md: Vec<Vec<f64>> = models.iter().map(|m| m.iter().map(|x| f64::from(x.to_bits())).collect()).collect();
        let want = r::ties(&bd, &md, f64::from(density), 1.0);
        for i in 0..n {
            let (_, mu, agree) = want[i];
            // θ₀ + round(λ·Σ/(n·2¹⁶)) with Σ = mean·n, exactly
            let sum = (mu * agree as f64).round() as i128;
            let v = i128::from(base[i].to_bits()) + if agree == 0 { 0 } else { div_even(i128::from(lambda) * sum, (agree as i128) << 16) };
            prop_assert_eq!(i128::from(got[i].to_bits()), v.clamp(-32768, 32767), "elem {}", i);
        }
    }

    /// Median and trimmed mean: f32 within their bounds, fixed point
    /// exact.
    #[test]
    fn robust_statistics(models in f32_models(1..12), q in (1usize..12, 0usize..8).prop_flat_map(|(k, n)| prop::collection::vec(prop::collection::vec(q31_value(), n), k)), trim in 0usize..6) {
        let n = models[0].len();
        let refs: Vec<&[f32]> = models.iter().map(|m| m.as_slice()).collect();
        let mut out = vec![0.0f32; n];
        median(&refs, &mut out).unwrap();
        let k = models.len();
        for i in 0..n {
            let want = r::median(&col(&models, i));
            let b = if k % 2 == 1 { 0.0 } else { EPS / 2.0 * want.abs() + ETA };
            prop_assert!((f64::from(out[i]) - want).abs() <= b, "median elem {i}: {} vs {want}", out[i]);
        }
        if 2 * trim < k {
            trimmed_mean(&refs, trim, &mut out).unwrap();
            for i in 0..n {
                let xs = col(&models, i);
                let want = r::trimmed_mean(&xs, trim);
                let mut s = xs.clone();
                s.sort_by(|a, b| a.total_cmp(b));
                let kept = &s[trim..k - trim];
                let m = kept.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                let b = EPS * want.abs().to_f64() + kept.len() as f64 * EPS * EPS * m + ETA;
                prop_assert!(err(out[i], want) <= b, "trimmed elem {i}: {} vs {want:?}", out[i]);
            }
        } else {
            prop_assert_eq!(trimmed_mean(&refs, trim, &mut out), Err(Error::InvalidCoefficient));
        }
        let n = q[0].len();
        let refs: Vec<&[Q31]> = q.iter().map(|m| m.as_slice()).collect();
        let mut o = vec![Q31::ZERO; n];
        median(&refs, &mut o).unwrap();
        for i in 0..n {
            let mut v: Vec<i128> = q.iter().map(|m| i128::from(m[i].to_bits())).collect();
            v.sort();
            let k = v.len();
            let want = if k % 2 == 1 { v[k / 2] } else { div_even(v[k / 2 - 1] + v[k / 2], 2) };
            prop_assert_eq!(i128::from(o[i].to_bits()), want);
        }
    }

    /// FedAU weights from random participation histories.
    #[test]
    fn participation_weights(rounds in prop::collection::vec(prop::collection::vec(0usize..4, 0..4), 0..60), cutoff in 1u32..10) {
        let mut p: Participation<4> = Participation::new(cutoff).unwrap();
        for who in &rounds {
            p.record_round(who).unwrap();
        }
        for c in 0..4 {
            let want = r::fedau_weight(&rounds, c, cutoff);
            let w = p.weight(c).unwrap();
            prop_assert!((f64::from(w) - want).abs() <= EPS / 2.0 * want, "client {c}: {w} vs {want}");
            let wf = p.weight_fixed(c).unwrap();
            prop_assert!((wf.to_num::<f64>() - want).abs() <= 0.5 / 65536.0);
        }
    }

    /// Dual averaging: the f32 readout within its bound; fixed point the
    /// same bits in any order.
    #[test]
    fn dual_averaging(
        gs in moderate_models(1..20, 1..8),
        q in (1usize..20, 1usize..8).prop_flat_map(|(k, n)| prop::collection::vec(prop::collection::vec(q15_value(), n), k))
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        beta in 0.5f32..100.0,
        beta_q in 1i32..(1 << 24),
    ) {
        let n = gs[0].len();
        let mut da = DualAveraging::new(vec![CompF32::ZERO; n]);
        for g in &gs {
            da.add(g).unwrap();
        }
        let mut x = vec![0.0f32; n];
        da.readout(beta, &mut x).unwrap();
        for i in 0..n {
            let gi = col(&gs, i);
            let want = -(Dd::sum(gi.iter().copied()) / Dd::from(f64::from(beta)));
            let l1: f64 = gi.iter().map(|g| g.abs()).sum();
            let b = EPS * want.abs().to_f64() + gs.len() as f64 * EPS * EPS * l1 / f64::from(beta) + ETA;
            prop_assert!(err(x[i], want) <= b, "elem {i}: {} vs {want:?}", x[i]);
        }
        // around a center
        let center: Vec<f32> = gs[0].iter().map(|g| 3.0 - g).collect();
        da.readout_around(&center, beta, &mut x).unwrap();
        for i in 0..n {
            let gi = col(&gs, i);
            let step = -(Dd::sum(gi.iter().copied()) / Dd::from(f64::from(beta)));
            let want = Dd::from(center[i]) + step;
            let l1: f64 = gi.iter().map(|g| g.abs()).sum();
            let b = EPS * (0.5 * want.abs().to_f64() + step.abs().to_f64())
                + gs.len() as f64 * EPS * EPS * l1 / f64::from(beta) + ETA;
            prop_assert!(err(x[i], want) <= b, "around, elem {i}: {} vs {want:?}", x[i]);
        }
        let (qs, shuffled) = q;
        let n = qs[0].len();
        let center = qs[0].clone();
        let run = |gs: &[Vec<Q15>]| {
            let mut da = DualAveraging::new(vec![I49F15::ZERO; n]);
            for g in gs {
                da.add(g).unwrap();
            }
            let mut x = vec![Q15::ZERO; n];
            da.readout(I16F16::from_bits(beta_q), &mut x).unwrap();
            let mut y = vec![Q15::ZERO; n];
            da.readout_around(&center, I16F16::from_bits(beta_q), &mut y).unwrap();
            (x, y)
        };
        let got = run(&qs);
        prop_assert_eq!(&run(&shuffled), &got);
        for i in 0..n {
            let z: i128 = qs.iter().map(|g| i128::from(g[i].to_bits())).sum();
            let v = div_even(-(z << 16), i128::from(beta_q));
            prop_assert_eq!(i128::from(got.0[i].to_bits()), v.clamp(-32768, 32767));
            let c = i128::from(qs[0][i].to_bits());
            prop_assert_eq!(i128::from(got.1[i].to_bits()), (c + v).clamp(-32768, 32767));
        }
    }
}

/// Bad input: a typed error and the state unchanged, for every aggregator.
#[test]
fn errors_leave_state_unchanged() {
    fn same<T: core::fmt::Debug>(
        x: &mut T,
        f: impl FnOnce(&mut T) -> Result<(), Error>,
        want: Error,
    ) {
        let before = state(x);
        assert_eq!(f(x), Err(want));
        assert_eq!(state(x), before, "state changed on {want:?}");
    }
    let mut avg = WeightedAverage::new(vec![CompF32::ZERO; 2]);
    avg.fold(&[1.0, 2.0], 1.0).unwrap();
    same(
        &mut avg,
        |a| a.fold(&[1.0], 1.0),
        Error::LengthMismatch {
            expected: 2,
            found: 1,
        },
    );
    same(
        &mut avg,
        |a| a.fold(&[1.0, f32::NAN], 1.0),
        Error::NonFinite { index: 1 },
    );
    same(
        &mut avg,
        |a| a.fold(&[1.0, 2.0], -1.0),
        Error::InvalidWeight { index: 0 },
    );
    same(
        &mut avg,
        |a| a.fold(&[1.0, 2.0], f32::NAN),
        Error::InvalidWeight { index: 0 },
    );
    same(
        &mut avg,
        |a| a.fold(&[1e30, 2.0], 1e30),
        Error::WeightOverflow,
    );
    let mut zero = WeightedAverage::new(vec![CompF32::ZERO; 2]);
    zero.fold(&[1.0, 2.0], 0.0).unwrap();
    assert_eq!(zero.finish(&mut [0.0; 2]), Err(Error::ZeroTotalWeight));
    let mut layout: Layout<2> = Layout::new();
    layout.push("a", 1).unwrap();
    layout.push("b", 1).unwrap();
    assert_eq!(
        avg.finish_segments(&mut [0.0; 2], &layout, &[true]),
        Err(Error::LengthMismatch {
            expected: 2,
            found: 1
        })
    );
    let mut q = WeightedAverage::new(vec![I49F15::ZERO; 1]);
    q.fold(&[Q15::MAX], u32::MAX).unwrap();
    same(&mut q, |a| a.fold(&[Q15::MAX], 1), Error::WeightOverflow);
    let mut ida = WeightedAverage::new(vec![CompF32::ZERO; 1]);
    same(
        &mut ida,
        |a| a.fold_inverse_distance(&[1.0], &[0.0], 0.0).map(|_| ()),
        Error::InvalidCoefficient,
    );
    same(
        &mut ida,
        |a| {
            a.fold_inverse_distance(&[1.0], &[f32::INFINITY], 1.0)
                .map(|_| ())
        },
        Error::NonFinite { index: 0 },
    );

    let mut masked = MaskedAverage::new(vec![CompF32::ZERO; 2], vec![0u32; 1]).unwrap();
    masked.fold(&[1.0, 0.0], 1.0).unwrap();
    same(
        &mut masked,
        |m| m.fold(&[0.0, 0.0], 1.0),
        Error::MaskMismatch { index: 0 },
    );
    same(
        &mut masked,
        |m| m.fold(&[1.0, 0.0], -1.0),
        Error::InvalidWeight { index: 0 },
    );
    assert!(matches!(
        MaskedAverage::new(vec![CompF32::ZERO; 33], vec![0u32; 1]),
        Err(Error::LengthMismatch {
            expected: 2,
            found: 1
        })
    ));

    let mut vc =
        VarianceCorrected::new(vec![CompF32::ZERO; 2], Layout::<1>::single("w", 2).unwrap())
            .unwrap();
    vc.fold(&[1.0, 2.0]).unwrap();
    same(
        &mut vc,
        |v| v.fold(&[1.0, f32::NAN]),
        Error::NonFinite { index: 1 },
    );
    assert!(
        VarianceCorrected::new(vec![CompF32::ZERO; 3], Layout::<1>::single("w", 2).unwrap())
            .is_err()
    );

    let mut f = Fisher::new(vec![FisherAcc::ZERO; 2], 1e-6).unwrap();
    f.fold(&[1.0, 2.0], &[1.0, 1.0]).unwrap();
    same(
        &mut f,
        |f| f.fold(&[1.0, 2.0], &[1.0, -1.0]),
        Error::InvalidWeight { index: 1 },
    );
    same(
        &mut f,
        |f| f.fold(&[1.0, f32::NAN], &[1.0, 1.0]),
        Error::NonFinite { index: 1 },
    );
    same(
        &mut f,
        |f| f.fold_delta(&[1.0, 2.0], &[0.0, 0.0], &[1.0, 1.0]),
        Error::ConfigMismatch,
    );
    same(
        &mut f,
        |f| f.fold(&[1e30, 1.0], &[1e30, 1.0]),
        Error::WeightOverflow,
    );
    assert_eq!(
        Fisher::new(vec![FisherAcc::ZERO; 1], 0.0).err(),
        Some(Error::InvalidCoefficient)
    );
    let empty = Fisher::new(vec![FisherAcc::ZERO; 1], 1e-6).unwrap();
    assert_eq!(empty.finish(&mut [0.0]), Err(Error::Empty));

    let mut ta = TaskArithmetic::new(vec![CompF32::ZERO; 2]);
    ta.fold(&[1.0, 2.0], &[0.0, 0.0], 1.0).unwrap();
    same(
        &mut ta,
        |t| t.fold(&[1.0, 2.0], &[0.0, f32::NAN], 1.0),
        Error::NonFinite { index: 1 },
    );
    same(
        &mut ta,
        |t| t.fold(&[1.0, 2.0], &[0.0, 0.0], f32::INFINITY),
        Error::InvalidWeight { index: 0 },
    );
    same(
        &mut ta,
        |t| {
            t.fold_dare(
                &[1.0, 2.0],
                &[0.0, 0.0],
                1.0,
                Drop {
                    rate: 1.0,
                    seed: 1,
                    model: 0,
                },
            )
        },
        Error::InvalidCoefficient,
    );
    same(
        &mut ta,
        |t| t.fold(&[1e30, 2.0], &[-1e30, 0.0], 1e30),
        Error::WeightOverflow,
    );
    let t0 = TaskArithmetic::new(vec![CompF32::ZERO; 1]);
    assert_eq!(t0.finish(&[0.0], 1.0, &mut [0.0]), Err(Error::Empty));

    let mut ties = Ties::new(vec![TiesAcc::default(); 2]);
    same(
        &mut ties,
        |t| t.fold(&[1.0, 2.0], &[0.0, 0.0], 0.0),
        Error::InvalidCoefficient,
    );
    same(
        &mut ties,
        |t| t.fold(&[1.0, 2.0], &[0.0], 0.5),
        Error::LengthMismatch {
            expected: 2,
            found: 1,
        },
    );
    same(
        &mut ties,
        |t| t.fold(&[1.0, f32::NAN], &[0.0, 0.0], 0.5),
        Error::NonFinite { index: 1 },
    );

    let (a, b) = ([1.0f32], [2.0f32, 3.0]);
    let mut out = [5.0f32];
    assert_eq!(median::<f32>(&[], &mut out), Err(Error::Empty));
    assert_eq!(
        median(&[&a[..], &b[..]], &mut out),
        Err(Error::LengthMismatch {
            expected: 1,
            found: 2
        })
    );
    let many: Vec<&[f32]> = (0..65).map(|_| &a[..]).collect();
    assert_eq!(median(&many, &mut out), Err(Error::CapacityExceeded));
    assert_eq!(
        trimmed_mean(&[&a[..], &a[..]], 1, &mut out),
        Err(Error::InvalidCoefficient)
    );
    assert_eq!(out, [5.0]);

    let mut p: Participation<2> = Participation::new(4).unwrap();
    same(
        &mut p,
        |p| p.record_round(&[0, 2]),
        Error::InvalidIndex { index: 2 },
    );
    assert_eq!(p.weight(2), Err(Error::InvalidIndex { index: 2 }));
    assert!(Participation::<2>::new(0).is_err());

    let mut da = DualAveraging::new(vec![CompF32::ZERO; 2]);
    da.add(&[1.0, 2.0]).unwrap();
    same(
        &mut da,
        |d| d.add(&[1.0, f32::NEG_INFINITY]),
        Error::NonFinite { index: 1 },
    );
    assert_eq!(
        da.readout(0.0, &mut [0.0; 2]),
        Err(Error::InvalidCoefficient)
    );
    let dq = DualAveraging::new(vec![I49F15::ZERO; 1]);
    assert_eq!(
        dq.readout(I16F16::ZERO, &mut [Q15::ZERO]),
        Err(Error::InvalidCoefficient)
    );

    let layout1 = Layout::<2>::single("all", 2).unwrap();
    let mut o = [9.0f32; 2];
    assert_eq!(
        merge::interpolate_segments(&[0.0, 0.0], &[1.0, 1.0], &layout1, &[0.5, 0.5], &mut o),
        Err(Error::LengthMismatch {
            expected: 1,
            found: 2
        })
    );
    assert_eq!(
        merge::interpolate_segments(&[0.0, 0.0], &[1.0, 1.0], &layout1, &[1.5], &mut o),
        Err(Error::InvalidCoefficient)
    );
    assert_eq!(
        merge::slerp(&[0.0, 1.0], &[1.0, f32::NAN], 0.5, &mut o),
        Err(Error::NonFinite { index: 1 })
    );
    assert_eq!(o, [9.0; 2]);
}

/// A Q15 sparse soup: exact, zeros kept, another mask refused.
#[test]
fn masked_fixed_point() {
    let q = |v: f32| Q15::from_num(v);
    let mut soup = MaskedAverage::new([I49F15::ZERO; 3], [0u32; 1]).unwrap();
    soup.fold(&[q(0.5), Q15::ZERO, q(-0.25)], 3).unwrap();
    soup.fold(&[q(0.25), Q15::ZERO, q(-0.5)], 1).unwrap();
    assert_eq!(
        soup.fold(&[q(0.25), q(0.5), q(-0.5)], 1),
        Err(Error::MaskMismatch { index: 1 })
    );
    let mut out = [Q15::MAX; 3];
    soup.finish(&mut out).unwrap();
    assert_eq!(out, [q(0.4375), Q15::ZERO, q(-0.3125)]);
}
