//! EMA kernels against the f64 reference: each bound stated in
//! `polyak::ema`'s docs is asserted here with the same formula.

use fixed::types::{I1F15, I1F31};
use polyak::{CompF32, Ema, EmaShadow, I2F62, Q15, Q31, U1F31};
use polyak_host::metrics::{EPS, LSB15, LSB31, ulp};
use polyak_host::naive;
use polyak_host::reference;
use polyak_host::strategies::{beta, config, f32_scale, f32_value, q15_value, q31_value};
use proptest::prelude::*;

// The documented bounds, as formulas: `polyak_host::bounds`.
use polyak_host::bounds::{
    ema_comp as bound_comp, ema_comp_debiased as bound_comp_debiased, ema_plain as bound_plain,
    ema_plain_debiased as bound_plain_debiased, ema_q15 as bound_q15,
    ema_q15_debiased as bound_q15_debiased, ema_q15_shadow, ema_q31 as bound_q31, ema_q31_shadow,
};

// ---- drivers -------------------------------------------------------------

/// Runs an f32 EMA and the reference side by side; after every step checks
/// every element against `bound(M, α, t)` plus the reference's own error.
/// Returns the worst error seen, in units of `ε·M`.
fn check_f32<A>(
    mut ema: Ema<A, Vec<A>>,
    steps: &[Vec<f32>],
    bound: impl Fn(f64, f64, u64) -> f64,
) -> Result<f64, TestCaseError>
where
    A: EmaShadow<Param = f32, Coef = f32>,
{
    let n = ema.len();
    let alpha = f64::from(ema.alpha());
    let mut r = if ema.init() == polyak::Init::ZeroDebiased {
        reference::Ema::new_debiased(n, alpha)
    } else {
        reference::Ema::new(n, alpha)
    };
    let mut out = vec![0.0f32; n];
    let mut worst = 0.0f64;
    for x in steps {
        ema.update(x)
            .map_err(|e| TestCaseError::fail(format!("{e}")))?;
        r.update(&x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
        ema.read_into(&mut out).unwrap();
        let want = r.value();
        for i in 0..n {
            let m = r.max_abs()[i];
            let err = (f64::from(out[i]) - want[i]).abs();
            let b = bound(m, alpha, r.steps()) + r.own_error(i);
            prop_assert!(
                err <= b,
                "step {} elem {i}: got {} want {} err {err:e} > bound {b:e} (M {m:e}, α {alpha})",
                r.steps(),
                out[i],
                want[i]
            );
            if m > 0.0 {
                worst = worst.max(err / (EPS * m));
            }
        }
    }
    Ok(worst)
}

fn steps_strategy(max_len: usize, max_steps: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    (1..=max_len, 1..=max_steps).prop_flat_map(|(n, t)| {
        prop_oneof![
            // values from every regime mixed together
            prop::collection::vec(prop::collection::vec(f32_value(), n), t),
            // one magnitude regime, scaled
            (
                f32_scale(),
                prop::collection::vec(prop::collection::vec(-1.0f32..1.0, n), t)
            )
                .prop_map(|(s, v)| {
                    v.into_iter()
                        .map(|b| b.into_iter().map(|x| x * s).collect())
                        .collect()
                }),
        ]
    })
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn plain_f32_within_stall_bound(b in beta(), steps in steps_strategy(16, 200)) {
        let ema = Ema::new(vec![0.0f32; steps[0].len()], b).unwrap();
        check_f32(ema, &steps, |m, a, _| bound_plain(m, a))?;
    }

    #[test]
    fn plain_f32_debiased_within_bound(b in beta(), steps in steps_strategy(16, 200)) {
        let ema = Ema::new_debiased(vec![0.0f32; steps[0].len()], b).unwrap();
        check_f32(ema, &steps, bound_plain_debiased)?;
    }

    #[test]
    fn compensated_within_bound(b in beta(), steps in steps_strategy(16, 200)) {
        let ema = Ema::new(vec![CompF32::ZERO; steps[0].len()], b).unwrap();
        check_f32(ema, &steps, |m, a, _| bound_comp(m, a))?;
    }

    #[test]
    fn compensated_debiased_within_bound(b in beta(), steps in steps_strategy(16, 200)) {
        let ema = Ema::new_debiased(vec![CompF32::ZERO; steps[0].len()], b).unwrap();
        check_f32(ema, &steps, bound_comp_debiased)?;
    }
}

/// A long deterministic trajectory: a slow drift plus a fast oscillation,
/// like weights under SGD noise.
fn trajectory(t: usize, i: usize) -> f32 {
    let t = t as f64;
    let i = i as f64;
    (0.6 * (t * 1e-5 + i).sin() + 0.3 * (t * 0.37 + 2.0 * i).sin() + 0.05 * (t * 1.3).cos()) as f32
}

#[test]
fn compensated_long_run_at_high_beta() {
    // 10^6 steps at β = 0.99999 and 2·10^5 at the other betas.
    for (b, n_steps) in [
        (0.5f32, 200_000),
        (0.99, 200_000),
        (0.9999, 200_000),
        (0.99999, 1_000_000),
    ] {
        let n = 4;
        let steps: Vec<Vec<f32>> = (0..n_steps)
            .map(|t| (0..n).map(|i| trajectory(t, i)).collect())
            .collect();
        let ema = Ema::new(vec![CompF32::ZERO; n], b).unwrap();
        let worst = check_f32(ema, &steps, |m, a, _| bound_comp(m, a)).unwrap();
        println!(
            "compensated β={b}: worst error {worst:.3} ε·M (bound {:.3})",
            bound_comp(1.0, 1.0 - f64::from(b)) / EPS
        );
    }
}

#[test]
fn plain_long_run_within_stall_bound() {
    for b in [0.5f32, 0.99, 0.9999, 0.99999] {
        let n = 4;
        let steps: Vec<Vec<f32>> = (0..200_000)
            .map(|t| (0..n).map(|i| trajectory(t, i)).collect())
            .collect();
        let ema = Ema::new(vec![0.0f32; n], b).unwrap();
        let worst = check_f32(ema, &steps, |m, a, _| bound_plain(m, a)).unwrap();
        println!(
            "plain β={b}: worst error {worst:.1} ε·M (bound {:.1})",
            bound_plain(1.0, 1.0 - f64::from(b)) / EPS
        );
    }
}

#[test]
fn plain_stalls_on_a_step_where_compensated_does_not() {
    // x = 0 once, then x = 1: the reference climbs to 1 − βᵗ.
    let b = 0.9999f32;
    let mut plain = Ema::new([0.0f32; 1], b).unwrap();
    let mut comp = Ema::new([CompF32::ZERO; 1], b).unwrap();
    let alpha = f64::from(plain.alpha());
    let mut r = reference::Ema::new(1, alpha);
    for t in 0..200_000 {
        let x = if t == 0 { 0.0f32 } else { 1.0 };
        plain.update(&[x]).unwrap();
        comp.update(&[x]).unwrap();
        r.update(&[f64::from(x)]);
    }
    let want = r.value()[0];
    let mut p = [0.0f32];
    let mut c = [0.0f32];
    plain.read_into(&mut p).unwrap();
    comp.read_into(&mut c).unwrap();
    let ulp1 = ulp(1.0);
    let plain_ulps = (f64::from(p[0]) - want).abs() / ulp1;
    let comp_err = (f64::from(c[0]) - want).abs();
    println!(
        "step at β=0.9999: reference {want:.9}, plain {} ({plain_ulps:.0} ulps short), compensated {} ({:.2} ulps)",
        p[0],
        c[0],
        comp_err / ulp1
    );
    assert!(
        plain_ulps >= 1000.0,
        "plain form should stall ≥ 1000 ulps short, got {plain_ulps}"
    );
    assert!(want - f64::from(p[0]) > 2.5e-4, "stall distance about 3e-4");
    assert!(comp_err <= bound_comp(1.0, alpha) + r.own_error(0));
    assert!(
        comp_err <= 2.0 * ulp1,
        "compensated within 2 ulps of 1.0, got {}",
        comp_err / ulp1
    );
}

// ---- fixed point -----------------------------------------------------------

fn q15_alpha(ema_alpha: U1F31) -> f64 {
    ema_alpha.to_num::<f64>()
}

fn check_q15(
    mut ema: Ema<I1F31, Vec<I1F31>>,
    steps: &[Vec<I1F15>],
    bound: f64,
) -> Result<f64, TestCaseError> {
    let n = ema.len();
    let alpha = q15_alpha(ema.alpha());
    let mut r = if ema.init() == polyak::Init::ZeroDebiased {
        reference::Ema::new_debiased(n, alpha)
    } else {
        reference::Ema::new(n, alpha)
    };
    let mut out = vec![Q15::ZERO; n];
    let mut worst = 0.0f64;
    // the shadow itself (before the read rounds it): within 2⁻¹⁷/α LSB
    let shadow_bound = ema_q15_shadow(alpha);
    for x in steps {
        ema.update(x).unwrap();
        r.update(&x.iter().map(|v| v.to_num::<f64>()).collect::<Vec<_>>());
        for (i, (s, w)) in ema.shadow().iter().zip(r.raw()).enumerate() {
            let err = (s.to_num::<f64>() - w).abs() / LSB15;
            let own = r.own_error(i) / LSB15;
            prop_assert!(
                err <= shadow_bound + own,
                "shadow {i}: {err} LSB > {shadow_bound}"
            );
        }
        ema.read_into(&mut out).unwrap();
        for (i, (o, w)) in out.iter().zip(r.value()).enumerate() {
            let err = (o.to_num::<f64>() - w).abs() / LSB15;
            let own = r.own_error(i) / LSB15;
            prop_assert!(
                err <= bound + own,
                "step {} elem {i}: {err} LSB > {bound}",
                r.steps()
            );
            worst = worst.max(err);
        }
    }
    Ok(worst)
}

fn q31_steps(max_len: usize, max_steps: usize) -> impl Strategy<Value = Vec<Vec<I1F31>>> {
    (1..=max_len, 1..=max_steps)
        .prop_flat_map(|(n, t)| prop::collection::vec(prop::collection::vec(q31_value(), n), t))
}

fn q15_steps(max_len: usize, max_steps: usize) -> impl Strategy<Value = Vec<Vec<I1F15>>> {
    (1..=max_len, 1..=max_steps)
        .prop_flat_map(|(n, t)| prop::collection::vec(prop::collection::vec(q15_value(), n), t))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn q15_wide_within_bound(b in beta(), steps in q15_steps(16, 200)) {
        let ema = Ema::new(vec![I1F31::ZERO; steps[0].len()], b).unwrap();
        let a = q15_alpha(ema.alpha());
        check_q15(ema, &steps, bound_q15(a))?;
    }

    #[test]
    fn q15_wide_debiased_within_bound(b in beta(), steps in q15_steps(16, 200)) {
        let ema = Ema::new_debiased(vec![I1F31::ZERO; steps[0].len()], b).unwrap();
        let a = q15_alpha(ema.alpha());
        check_q15(ema, &steps, bound_q15_debiased(a))?;
    }

    #[test]
    fn q31_wide_within_bound(b in beta(), steps in q31_steps(16, 200)) {
        let mut ema = Ema::new(vec![I2F62::ZERO; steps[0].len()], b).unwrap();
        let alpha = ema.alpha().to_num::<f64>();
        let n = ema.len();
        let mut r = reference::Ema::new(n, alpha);
        let mut out = vec![Q31::ZERO; n];
        for x in &steps {
            ema.update(x).unwrap();
            r.update(&x.iter().map(|v| v.to_num::<f64>()).collect::<Vec<_>>());
            // the Q62 shadow itself: within 2⁻³²/α LSB of Q31
            for (i, (s, w)) in ema.shadow().iter().zip(r.raw()).enumerate() {
                let err = (s.to_num::<f64>() - w).abs() / LSB31;
                prop_assert!(err <= ema_q31_shadow(alpha) + r.own_error(i) / LSB31, "shadow {err} LSB");
            }
            ema.read_into(&mut out).unwrap();
            for (i, (o, w)) in out.iter().zip(r.value()).enumerate() {
                let err = (o.to_num::<f64>() - w).abs() / LSB31;
                let own = r.own_error(i) / LSB31;
                prop_assert!(err <= bound_q31(alpha) + own, "{err} LSB");
            }
        }
    }

    #[test]
    fn alpha_from_beta_is_nearest_q31(b in prop_oneof![0.0f32..1.0, 0.5f32..1.0, 0.999f32..1.0]) {
        // α = 1 − β in f32 (exact for β ≥ ½), then rounded to the nearest
        // multiple of 2⁻³¹ (at least one LSB)
        let ema = Ema::new(vec![I1F31::ZERO; 1], b).unwrap();
        let alpha32 = 1.0f32 - b;
        if b >= 0.5 {
            prop_assert_eq!(f64::from(alpha32), 1.0 - f64::from(b));
        }
        let want = f64::from(alpha32) * 2f64.powi(31);
        let got = f64::from(ema.alpha().to_bits());
        prop_assert!((got - want).abs() <= 0.5 || (want < 1.0 && got == 1.0), "{got} vs {want}");
        if (got - want).abs() == 0.5 {
            prop_assert_eq!(ema.alpha().to_bits() % 2, 0, "tie to even");
        }
    }
}

/// A slowly drifting Q15 input: a ramp that moves one LSB every `every`
/// steps, plus a small dither.
fn drifting_q15(t: usize, every: usize) -> I1F15 {
    let base = -8000 + (t / every) as i32;
    let dither = [0, 3, -2, 5, -4, 1, -1, 2][t % 8];
    I1F15::from_bits((base + dither) as i16)
}

#[test]
fn q15_wide_shadow_tracks_where_naive_q15_stalls() {
    for (b, n_steps) in [(0.999f64, 100_000usize), (0.9999, 400_000)] {
        // A step from 0 to 0.5 (16384 LSB) held long enough to converge.
        let mut wide = Ema::new([I1F31::ZERO; 1], b as f32).unwrap();
        let mut naive = naive::Q15Ema::new(1, b);
        let alpha = q15_alpha(wide.alpha());
        let mut r = reference::Ema::new(1, alpha);
        let mut worst_after = 0.0f64;
        let settle = (12.0 / alpha) as usize;
        let mut out = [Q15::ZERO];
        for t in 0..n_steps {
            let x = if t == 0 {
                Q15::ZERO
            } else {
                Q15::from_num(0.5)
            };
            wide.update(&[x]).unwrap();
            naive.update(&[x]);
            r.update(&[x.to_num::<f64>()]);
            if t > settle {
                wide.read_into(&mut out).unwrap();
                worst_after =
                    worst_after.max((out[0].to_num::<f64>() - r.value()[0]).abs() / LSB15);
            }
        }
        let naive_err = (naive.value()[0].to_num::<f64>() - r.value()[0]).abs() / LSB15;
        println!(
            "Q15 step at β={b}: naive Q15 shadow stalls {naive_err:.0} LSB short; wide shadow worst {worst_after:.3} LSB after convergence (bound {:.3})",
            bound_q15(alpha)
        );
        assert!(
            naive_err >= 100.0,
            "naive should stall ≥ 100 LSB away, got {naive_err}"
        );
        assert!(
            worst_after <= 1.0,
            "wide shadow bias ≤ 1 LSB, got {worst_after}"
        );
        assert!(worst_after <= bound_q15(alpha));
    }
}

#[test]
fn q15_wide_follows_a_slow_drift() {
    for b in [0.999f32, 0.9999] {
        let mut wide = Ema::new([I1F31::ZERO; 1], b).unwrap();
        let mut naive = naive::Q15Ema::new(1, f64::from(b));
        let alpha = q15_alpha(wide.alpha());
        let mut r = reference::Ema::new(1, alpha);
        let mut out = [Q15::ZERO];
        let mut worst = 0.0f64;
        let mut naive_worst = 0.0f64;
        for t in 0..300_000 {
            let x = drifting_q15(t, 50);
            wide.update(&[x]).unwrap();
            naive.update(&[x]);
            r.update(&[x.to_num::<f64>()]);
            wide.read_into(&mut out).unwrap();
            let want = r.value()[0];
            worst = worst.max((out[0].to_num::<f64>() - want).abs() / LSB15);
            naive_worst = naive_worst.max((naive.value()[0].to_num::<f64>() - want).abs() / LSB15);
        }
        println!("Q15 drift at β={b}: wide worst {worst:.3} LSB, naive worst {naive_worst:.0} LSB");
        assert!(worst <= bound_q15(alpha));
        assert!(naive_worst >= 100.0);
    }
}

// ---- storage ---------------------------------------------------------------

#[test]
fn storage_kinds_give_identical_bits() {
    const N: usize = 8;
    let steps: Vec<[f32; N]> = (0..500)
        .map(|t| core::array::from_fn(|i| trajectory(t, i)))
        .collect();

    let mut arr = Ema::new([CompF32::ZERO; N], 0.99).unwrap();
    let mut buf = [CompF32::ZERO; N];
    let mut slice = Ema::new(&mut buf[..], 0.99).unwrap();
    let mut hv: heapless::Vec<CompF32, N> = heapless::Vec::new();
    hv.resize(N, CompF32::ZERO).unwrap();
    let mut hvec = Ema::new(hv, 0.99).unwrap();
    for x in &steps {
        arr.update(x).unwrap();
        slice.update(x).unwrap();
        hvec.update(x).unwrap();
    }
    let bits = |s: &[CompF32]| {
        s.iter()
            .map(|c| (c.hi().to_bits(), c.lo().to_bits()))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(arr.shadow()), bits(slice.shadow()));
    assert_eq!(bits(arr.shadow()), bits(hvec.shadow()));

    let mut a = Ema::new([I1F31::ZERO; N], 0.999).unwrap();
    let mut sbuf = [I1F31::ZERO; N];
    let mut s = Ema::new(&mut sbuf[..], 0.999).unwrap();
    let mut hv: heapless::Vec<I1F31, N> = heapless::Vec::new();
    hv.resize(N, I1F31::ZERO).unwrap();
    let mut h = Ema::new(hv, 0.999).unwrap();
    for x in &steps {
        let q: Vec<Q15> = x.iter().map(|&v| Q15::saturating_from_num(v)).collect();
        a.update(&q).unwrap();
        s.update(&q).unwrap();
        h.update(&q).unwrap();
    }
    assert_eq!(a.shadow(), s.shadow());
    assert_eq!(a.shadow(), h.shadow());
}

#[test]
fn switch_into_copies_the_average_and_keeps_it() {
    let mut ema = Ema::new([CompF32::ZERO; 3], 0.9).unwrap();
    ema.update(&[1.0, 2.0, 3.0]).unwrap();
    ema.update(&[3.0, 2.0, 1.0]).unwrap();
    let before = format!("{ema:?}");
    let mut model = [9.0f32; 3];
    ema.switch_into(&mut model).unwrap();
    let mut avg = [0.0f32; 3];
    ema.read_into(&mut avg).unwrap();
    assert_eq!(model, avg);
    assert_eq!(format!("{ema:?}"), before);
    // training continues from the average; the next update blends into it
    ema.update(&model).unwrap();
    ema.read_into(&mut avg).unwrap();
    assert_eq!(model, avg);
}

#[test]
fn reset_starts_over() {
    let mut ema = Ema::new([0.0f32; 2], 0.5).unwrap();
    ema.update(&[1.0, 1.0]).unwrap();
    ema.update(&[3.0, 3.0]).unwrap();
    ema.reset();
    assert_eq!(ema.steps(), 0);
    let mut out = [0.0; 2];
    assert_eq!(ema.read_into(&mut out), Err(polyak::Error::Empty));
    ema.update(&[5.0, -5.0]).unwrap();
    ema.read_into(&mut out).unwrap();
    assert_eq!(out, [5.0, -5.0]);

    let mut d = Ema::new_debiased([CompF32::ZERO; 1], 0.5).unwrap();
    d.update(&[2.0]).unwrap();
    d.reset();
    assert_eq!(d.shadow(), &[CompF32::ZERO]);
    d.update(&[8.0]).unwrap();
    let mut o = [0.0f32];
    d.read_into(&mut o).unwrap();
    assert_eq!(o, [8.0]);
}

/// For a constant input after the start the exact EMA has a closed form,
/// `x − (x − s₀)·βᵗ`, precise enough in f64 (as a distance from `x`) to
/// check the wide shadows at their own resolution, which a recurrence in
/// f64 is not (its stall, `2⁻⁵³·|x|/α`, exceeds the Q62 shadow's bound).
#[test]
fn wide_shadows_track_a_step_within_their_own_resolution() {
    for b in [0.9f32, 0.999, 0.9999] {
        // Q15 → Q31 shadow: bound 2⁻¹⁷/α LSB of Q15 = ½/α LSB of Q31
        let mut q15 = Ema::new([I1F31::ZERO; 1], b).unwrap();
        let a_raw = q15.alpha().to_bits();
        let alpha = f64::from(a_raw) / 2f64.powi(31);
        let beta = 1.0 - alpha;
        let x = Q15::from_num(0.5);
        q15.update(&[Q15::ZERO]).unwrap();
        let steps = (40.0 / alpha) as i32;
        let bound31 = ema_q15_shadow(alpha) * 65536.0;
        let bound62 = ema_q31_shadow(alpha) * 2f64.powi(31);
        let mut worst = 0.0f64;
        for t in 1..=steps {
            q15.update(&[x]).unwrap();
            // distance from x in Q31 LSBs, exact for the shadow
            let got = f64::from((i32::from(x.to_bits()) << 16) - q15.shadow()[0].to_bits());
            let want = 0.5 * beta.powi(t) * 2f64.powi(31);
            worst = worst.max((got - want).abs());
        }
        assert!(
            worst <= bound31,
            "Q15 shadow at β={b}: {worst} LSB31 > {}",
            bound31
        );

        // Q31 → Q62 shadow: bound ½/α LSB of Q62 (= 2⁻³²/α LSB of Q31)
        let mut q31 = Ema::new([I2F62::ZERO; 1], b).unwrap();
        let x = Q31::from_num(0.5);
        q31.update(&[Q31::ZERO]).unwrap();
        let mut worst31 = 0.0f64;
        for t in 1..=steps {
            q31.update(&[x]).unwrap();
            let got =
                ((i128::from(x.to_bits()) << 31) - i128::from(q31.shadow()[0].to_bits())) as f64;
            let want = 0.5 * beta.powi(t) * 2f64.powi(62);
            // f64 resolves LSB62 only once the distance is below 2^50;
            // its own relative error (≤ 2⁻⁴⁸ with powi) is added.
            if want < 2f64.powi(50) {
                let err = (got - want).abs() - want * 2f64.powi(-48);
                worst31 = worst31.max(err);
            }
        }
        assert!(
            worst31 <= bound62,
            "Q31 shadow at β={b}: {worst31} LSB62 > {}",
            bound62
        );
        println!(
            "step at β={b}: Q31 shadow worst {worst:.1} LSB31, Q62 shadow worst {worst31:.1} LSB62 (bound {:.1})",
            bound62
        );
    }
}

proptest! {
    #![proptest_config(config(24))]

    /// Whole buffers of 0 to 4096 elements, as a model's parameters are:
    /// every element within its bound after a few steps, in every format.
    #[test]
    fn long_buffers_within_bounds(
        b in beta(),
        steps in (0usize..=4096).prop_flat_map(|n| prop::collection::vec(polyak_host::strategies::f32_buffer(n), 1..4)),
    ) {
        let n = steps[0].len();
        check_f32(Ema::new(vec![0.0f32; n], b).unwrap(), &steps, |m, a, _| bound_plain(m, a))?;
        check_f32(Ema::new(vec![CompF32::ZERO; n], b).unwrap(), &steps, |m, a, _| bound_comp(m, a))?;
        check_f32(Ema::new_debiased(vec![CompF32::ZERO; n], b).unwrap(), &steps, bound_comp_debiased)?;
        let q: Vec<Vec<I1F15>> = steps
            .iter()
            .map(|s| s.iter().map(|&v| I1F15::saturating_from_num(v)).collect())
            .collect();
        let ema = Ema::new(vec![I1F31::ZERO; n], b).unwrap();
        let a = q15_alpha(ema.alpha());
        check_q15(ema, &q, bound_q15(a))?;
    }
}
