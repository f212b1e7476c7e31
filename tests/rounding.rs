//! Fixed-point rounding of the EMA increment: the naive truncating Q15 EMA
//! lags and stalls on a slow drift; nearest-even, stochastic and
//! error-feedback forms stay within the bounds `polyak::ema` documents.

use polyak::ema::Rounding;
use polyak::{CompF32, Ema, EmaShadow, Error, I1F15, I1F31, I2F62, Q15, Q15Ef, Q31};
use polyak_host::bounds;
use polyak_host::metrics::{LSB15, LSB31};
use polyak_host::naive;
use polyak_host::reference;
use polyak_host::strategies::{beta, config, q31_value};
use proptest::prelude::*;

/// A slowly drifting Q15 input: a ramp of one LSB every `every` steps from
/// −8000 LSB, plus a small dither.
fn drift(t: usize, every: usize) -> Q15 {
    let base = -8000 + (t / every) as i32;
    let dither = [0, 3, -2, 5, -4, 1, -1, 2][t % 8];
    Q15::from_bits((base + dither) as i16)
}

/// Error of `read` against the f64 EMA after every step, in Q15 LSB:
/// (worst |e|, mean e, RMS e).
fn track<A: EmaShadow<Param = Q15>>(
    mut ema: Ema<A, [A; 1]>,
    steps: usize,
    every: usize,
) -> (f64, f64, f64) {
    let alpha = A::coef_to_f64(ema.alpha());
    let mut r = reference::Ema::new(1, alpha);
    let mut out = [Q15::ZERO];
    let (mut worst, mut sum, mut sum2) = (0.0f64, 0.0f64, 0.0f64);
    for t in 0..steps {
        let x = drift(t, every);
        ema.update(&[x]).unwrap();
        r.update(&[x.to_num::<f64>()]);
        ema.read_into(&mut out).unwrap();
        let e = (out[0].to_num::<f64>() - r.value()[0]) / LSB15;
        worst = worst.max(e.abs());
        sum += e;
        sum2 += e * e;
    }
    let n = steps as f64;
    (worst, sum / n, (sum2 / n).sqrt())
}

#[test]
fn slow_drift_naive_stalls_and_every_form_stays_within_its_bound() {
    for b in [0.999f32, 0.9999] {
        let steps = 2_000_000;
        let every = 40;
        let sr = Rounding::Stochastic { seed: 0x5eed };

        // the naive form: Q15 shadow, product truncated
        let mut naive = naive::Q15Ema::new(1, f64::from(b));
        let wide = Ema::new([I1F31::ZERO; 1], b).unwrap();
        let alpha = wide.alpha().to_num::<f64>();
        let mut r = reference::Ema::new(1, alpha);
        let mut naive_worst = 0.0f64;
        for t in 0..steps {
            let x = drift(t, every);
            naive.update(&[x]);
            r.update(&[x.to_num::<f64>()]);
            naive_worst =
                naive_worst.max((naive.value()[0].to_num::<f64>() - r.value()[0]).abs() / LSB15);
        }

        let (wide_ne, ..) = track(wide, steps, every);
        let (wide_sr, wide_sr_mean, _) = track(
            Ema::new([I1F31::ZERO; 1], b)
                .unwrap()
                .with_rounding(sr)
                .unwrap(),
            steps,
            every,
        );
        let (ef, ..) = track(Ema::new([Q15Ef::ZERO; 1], b).unwrap(), steps, every);
        let (narrow_ne, narrow_ne_mean, _) =
            track(Ema::new([I1F15::ZERO; 1], b).unwrap(), steps, every);
        let (narrow_sr, narrow_sr_mean, narrow_sr_rms) = track(
            Ema::new([I1F15::ZERO; 1], b)
                .unwrap()
                .with_rounding(sr)
                .unwrap(),
            steps,
            every,
        );

        println!(
            "β = {b}, drift of 1 LSB per {every} steps, {steps} steps (worst |error| in LSB):"
        );
        println!("  naive Q15 (truncating)      {naive_worst:8.1}");
        println!(
            "  Q31 shadow, nearest-even    {wide_ne:8.3}  (bound {:.3})",
            bounds::ema_q15(alpha)
        );
        println!(
            "  Q31 shadow, stochastic      {wide_sr:8.3}  (bound {:.3}, mean {wide_sr_mean:+.4})",
            0.5 + 2f64.powi(-16) / alpha
        );
        println!(
            "  Q15 + error feedback        {ef:8.3}  (bound {:.3})",
            bounds::ema_q15(alpha)
        );
        println!(
            "  Q15 shadow, nearest-even    {narrow_ne:8.1}  (bound {:.1}, mean {narrow_ne_mean:+.1})",
            0.5 / alpha
        );
        println!(
            "  Q15 shadow, stochastic      {narrow_sr:8.1}  (bound {:.1}, mean {narrow_sr_mean:+.2}, RMS {narrow_sr_rms:.2})",
            1.0 / alpha
        );

        assert!(
            naive_worst >= 100.0,
            "the naive form should lag ≥ 100 LSB, got {naive_worst}"
        );
        assert!(wide_ne <= bounds::ema_q15(alpha));
        assert!(wide_sr <= 0.5 + 2f64.powi(-16) / alpha);
        assert!(ef <= bounds::ema_q15(alpha));
        assert!(narrow_ne <= 0.5 / alpha);
        assert!(narrow_sr < 1.0 / alpha);

        // Stochastic rounding of the narrow shadow is unbiased with standard
        // deviation at most σ = 1/(2·sqrt(α(2 − α))). The error is an AR(1)
        // process with correlation time 1/α, so N steps hold about N·α/2
        // independent samples: the mean is within 6 standard errors of 0,
        // and the RMS within a 6-sigma band of σ.
        let sigma = 1.0 / (2.0 * (alpha * (2.0 - alpha)).sqrt());
        let n_eff = steps as f64 * alpha / 2.0;
        assert!(
            narrow_sr_mean.abs() <= 6.0 * sigma / n_eff.sqrt(),
            "bias {narrow_sr_mean}"
        );
        assert!(
            narrow_sr_rms <= sigma * (1.0 + 6.0 * (2.0 / n_eff).sqrt()).sqrt(),
            "RMS {narrow_sr_rms} > σ {sigma}"
        );
        // while nearest-even on the same narrow shadow is biased: it lags
        // the drift by far more than the stochastic form's bias
        assert!(narrow_ne_mean.abs() > 10.0 * narrow_sr_mean.abs().max(1.0));
    }
}

#[test]
fn stochastic_rounding_is_reproducible() {
    let run = |seed: u32| {
        let mut e = Ema::new([I1F15::ZERO; 8], 0.999)
            .unwrap()
            .with_rounding(Rounding::Stochastic { seed })
            .unwrap();
        for t in 0..5000 {
            e.update(&[drift(t, 3); 8]).unwrap();
        }
        e.shadow().to_vec()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
    // the generator restarts from its seed on reset
    let mut e = Ema::new([I1F15::ZERO; 8], 0.999)
        .unwrap()
        .with_rounding(Rounding::Stochastic { seed: 1 })
        .unwrap();
    for _ in 0..2 {
        e.reset();
        for t in 0..5000 {
            e.update(&[drift(t, 3); 8]).unwrap();
        }
        assert_eq!(e.shadow(), run(1).as_slice());
    }
}

#[test]
fn stochastic_rounding_needs_fixed_point() {
    let e = Ema::new([0.0f32; 2], 0.9).unwrap();
    assert_eq!(
        e.with_rounding(Rounding::Stochastic { seed: 3 })
            .map(|_| ()),
        Err(Error::Unsupported)
    );
    let c = Ema::new([CompF32::ZERO; 2], 0.9).unwrap();
    assert_eq!(
        c.with_rounding(Rounding::Stochastic { seed: 3 })
            .map(|_| ()),
        Err(Error::Unsupported)
    );
    assert!(
        Ema::new([0.0f32; 2], 0.9)
            .unwrap()
            .with_rounding(Rounding::NearestEven)
            .is_ok()
    );
}

#[test]
fn debiased_reads_at_the_range_edge_saturate_and_are_counted() {
    // All inputs at the largest Q15 value. With a tiny α the first biased
    // shadow, round(α·x), rounds up relative to the weight α, so the
    // quotient lands one LSB past the range: the read clamps to Q15::MAX and
    // the counter says so.
    let mut clamped = 0;
    for raw in [1u32, 2, 3, 7, 100, 1000, 1 << 20] {
        let mut e =
            Ema::with_alpha_debiased([I1F31::ZERO; 4], polyak::U1F31::from_bits(raw)).unwrap();
        let mut out = [Q15::ZERO; 4];
        e.update(&[Q15::MAX; 4]).unwrap();
        e.read_into(&mut out).unwrap();
        assert_eq!(out, [Q15::MAX; 4], "α = {raw}·2⁻³¹");
        assert_eq!(e.saturated() % 4, 0, "all four elements clamp together");
        if e.saturated() > 0 {
            clamped += 1;
            e.read_into(&mut out).unwrap();
            assert_eq!(e.saturated(), 8, "each read counts");
            e.reset();
            assert_eq!(e.saturated(), 0);
        }
    }
    assert!(clamped >= 1, "α = 2⁻³¹ carries the quotient past the range");
    // copy-first reads never saturate
    let mut e = Ema::new([I1F31::ZERO; 1], 0.9).unwrap();
    let mut out = [Q15::ZERO];
    for _ in 0..100 {
        e.update(&[Q15::MAX]).unwrap();
        e.read_into(&mut out).unwrap();
    }
    assert_eq!(e.saturated(), 0);
}

proptest! {
    #![proptest_config(config(256))]

    /// Q31 with the Q62 shadow, zero-debiased: `½ + 2⁻³¹/(α − 2⁻⁶³)` LSB.
    #[test]
    fn q31_debiased_within_bound(b in beta(), xs in prop::collection::vec(prop::collection::vec(q31_value(), 4), 1..200)) {
        let mut e = Ema::new_debiased(vec![I2F62::ZERO; 4], b).unwrap();
        let alpha = e.alpha().to_num::<f64>();
        let mut r = reference::Ema::new_debiased(4, alpha);
        let mut out = [Q31::ZERO; 4];
        for x in &xs {
            e.update(x).unwrap();
            r.update(&x.iter().map(|v| v.to_num::<f64>()).collect::<Vec<_>>());
            e.read_into(&mut out).unwrap();
            for (i, (o, w)) in out.iter().zip(r.value()).enumerate() {
                let err = (o.to_num::<f64>() - w).abs() / LSB31;
                let bound = 0.5 + 2f64.powi(-31) / (alpha - 2f64.powi(-63)) + r.own_error(i) / LSB31;
                prop_assert!(err <= bound, "{err} > {bound}");
            }
        }
    }

    /// Stochastic rounding on the wide shadows stays within `½ + 2⁻¹⁶/α`
    /// (Q15) and `½ + 2⁻³¹/α` (Q31) LSB of the f64 EMA.
    #[test]
    fn stochastic_wide_shadows_within_bound(
        b in beta(),
        seed in any::<u32>(),
        xs in prop::collection::vec(prop::collection::vec(q31_value(), 4), 1..200),
    ) {
        let sr = Rounding::Stochastic { seed };
        let mut e31 = Ema::new(vec![I2F62::ZERO; 4], b).unwrap().with_rounding(sr).unwrap();
        let mut e15 = Ema::new(vec![I1F31::ZERO; 4], b).unwrap().with_rounding(sr).unwrap();
        let alpha = e31.alpha().to_num::<f64>();
        let mut r31 = reference::Ema::new(4, alpha);
        let mut r15 = reference::Ema::new(4, alpha);
        let (mut o31, mut o15) = ([Q31::ZERO; 4], [Q15::ZERO; 4]);
        for x in &xs {
            let q: Vec<Q15> = x.iter().map(|v| Q15::from_bits((v.to_bits() >> 16) as i16)).collect();
            e31.update(x).unwrap();
            e15.update(&q).unwrap();
            r31.update(&x.iter().map(|v| v.to_num::<f64>()).collect::<Vec<_>>());
            r15.update(&q.iter().map(|v| v.to_num::<f64>()).collect::<Vec<_>>());
            e31.read_into(&mut o31).unwrap();
            e15.read_into(&mut o15).unwrap();
            for i in 0..4 {
                let err31 = (o31[i].to_num::<f64>() - r31.value()[i]).abs() / LSB31;
                prop_assert!(err31 <= 0.5 + 2f64.powi(-31) / alpha + r31.own_error(i) / LSB31);
                let err15 = (o15[i].to_num::<f64>() - r15.value()[i]).abs() / LSB15;
                prop_assert!(err15 <= 0.5 + 2f64.powi(-16) / alpha + r15.own_error(i) / LSB15);
            }
        }
    }
}

#[test]
fn shift_decay_is_a_shift_with_the_documented_half_life() {
    use polyak::schedule::Schedule;
    // k = 10: half-life ln 2 / −ln(1 − 2⁻¹⁰) = 709.4 steps
    let k = 10;
    let half_life = 2f64.ln() / -(1.0 - 2f64.powi(-k)).ln();
    assert!((half_life - 709.4).abs() < 0.05);
    let mut e = Ema::with_schedule([I1F31::ZERO; 1], Schedule::shift(k as u8)).unwrap();
    assert_eq!(e.alpha().to_bits(), 1 << (31 - k));
    // a step from 0 to 0.5 is half-way after the half-life
    e.update(&[Q15::ZERO]).unwrap();
    let mut out = [Q15::ZERO];
    for _ in 0..709 {
        e.update(&[Q15::from_num(0.5)]).unwrap();
    }
    e.read_into(&mut out).unwrap();
    let v = out[0].to_num::<f64>();
    assert!((v - 0.25).abs() < 0.25 * 0.002, "{v}");
    // the same bits as the multiplying kernel at the same α
    let mut m = Ema::with_alpha([I1F31::ZERO; 1], polyak::U1F31::from_bits(1 << (31 - k))).unwrap();
    let mut s = Ema::with_schedule([I1F31::ZERO; 1], Schedule::shift(k as u8)).unwrap();
    for t in 0..20_000 {
        m.update(&[drift(t, 1)]).unwrap();
        s.update(&[drift(t, 1)]).unwrap();
        assert_eq!(m.shadow(), s.shadow());
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// The error-feedback and narrow Q15 shadows on arbitrary input, every
    /// mode: each within its documented bound after every step.
    #[test]
    fn q15_forms_within_bounds(
        b in beta(),
        seed in any::<u32>(),
        xs in prop::collection::vec(prop::collection::vec(polyak_host::strategies::q15_value(), 4), 1..200),
    ) {
        let sr = Rounding::Stochastic { seed };
        let mut ef = Ema::new(vec![Q15Ef::ZERO; 4], b).unwrap();
        let mut ef_sr = Ema::new(vec![Q15Ef::ZERO; 4], b).unwrap().with_rounding(sr).unwrap();
        let mut ef_deb = Ema::new_debiased(vec![Q15Ef::ZERO; 4], b).unwrap();
        let mut nar = Ema::new(vec![I1F15::ZERO; 4], b).unwrap();
        let mut nar_sr = Ema::new(vec![I1F15::ZERO; 4], b).unwrap().with_rounding(sr).unwrap();
        let alpha = ef.alpha().to_num::<f64>();
        let mut r = reference::Ema::new(4, alpha);
        let mut rd = reference::Ema::new_debiased(4, alpha);
        let mut o = [Q15::ZERO; 4];
        for x in &xs {
            let xd: Vec<f64> = x.iter().map(|v| v.to_num::<f64>()).collect();
            r.update(&xd);
            rd.update(&xd);
            let checks: [(&mut Ema<_, _>, f64, &reference::Ema); 3] = [
                (&mut ef, bounds::ema_q15(alpha), &r),
                (&mut ef_sr, 0.5 + 2f64.powi(-16) / alpha, &r),
                (&mut ef_deb, bounds::ema_q15_debiased(alpha), &rd),
            ];
            for (e, bound, rr) in checks {
                e.update(x).unwrap();
                e.read_into(&mut o).unwrap();
                for (i, (v, w)) in o.iter().zip(rr.value()).enumerate() {
                    let err = (v.to_num::<f64>() - w).abs() / LSB15;
                    prop_assert!(err <= bound + rr.own_error(i) / LSB15, "{err} > {bound}");
                }
            }
            for (e, bound) in [(&mut nar, 0.5 / alpha), (&mut nar_sr, 1.0 / alpha)] {
                e.update(x).unwrap();
                e.read_into(&mut o).unwrap();
                for (i, (v, w)) in o.iter().zip(r.value()).enumerate() {
                    let err = (v.to_num::<f64>() - w).abs() / LSB15;
                    prop_assert!(err <= bound + r.own_error(i) / LSB15, "{err} > {bound}");
                }
            }
        }
    }
}
