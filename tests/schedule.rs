//! Decay schedules: α_t against the f64 formulas over the whole parameter
//! range (the bound each `Decay` documents), the σ_rel ↔ γ conversions, the
//! `update_after_step` / `update_every` semantics, and scheduled EMAs
//! against an f64 reference that computes α_t from the formula.

use polyak::schedule::{Action, Decay, Schedule, gamma_to_sigma_rel, sigma_rel_to_gamma};
use polyak::{CompF32, Ema, Error, I1F31, Q15};
use polyak_host::bounds;
use polyak_host::metrics::{EPS, LSB15};
use polyak_host::reference::{self, schedule as refs};
use polyak_host::strategies::config;
use proptest::prelude::*;

/// Checks `alpha_t` for `t` against `want` within the documented relative
/// bound.
fn check_alpha(s: &Schedule, t: u64, want: f64) -> Result<(), TestCaseError> {
    let got = f64::from(s.alpha(t));
    let bound = f64::from(s.decay.alpha_rel_error()) * EPS * want;
    prop_assert!(
        (got - want).abs() <= bound,
        "{s:?} t={t}: α {got:e} vs {want:e} (rel {:.2} ε)",
        ((got - want) / want).abs() / EPS
    );
    Ok(())
}

fn any_t() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..100, 1u64..100_000, 1u64..(1 << 40), Just(1), Just(2)]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn constant_alpha(beta in 0.0f32..1.0) {
        let s = Schedule::constant(beta);
        s.validate().unwrap();
        check_alpha(&s, 1, refs::constant(f64::from(beta)))?;
    }

    #[test]
    fn shift_alpha_is_exact(k in 1u8..=31) {
        let s = Schedule::shift(k);
        s.validate().unwrap();
        prop_assert_eq!(f64::from(s.alpha(5)), 2f64.powi(-i32::from(k)));
    }

    #[test]
    fn warmup_alpha(
        t in any_t(),
        inv_gamma in prop_oneof![Just(1.0f32), 0.01f32..100.0, 1.0f32..1.0e4],
        power in prop_oneof![Just(2.0f32 / 3.0), Just(0.75f32), 0.05f32..4.0],
        clamp in (0.0f32..1.0, 0.0f32..1.0),
    ) {
        let (min_beta, max_beta) = if clamp.0 <= clamp.1 { clamp } else { (clamp.1, clamp.0) };
        let s = Schedule::warmup(inv_gamma, power, min_beta, max_beta);
        s.validate().unwrap();
        let want = refs::warmup(t, f64::from(inv_gamma), f64::from(power), f64::from(min_beta), f64::from(max_beta));
        // the clamp bounds are formed in f32: 1 − β is exact for β ≥ ½ and
        // rounded (½ ε) below, within the documented relative bound
        check_alpha(&s, t, want)?;
    }

    #[test]
    fn half_life_alpha(
        (h, per_step) in prop_oneof![0.5f32..10.0, 1.0f32..1.0e9].prop_flat_map(|h| {
            // samples per step up to 4096, and below 60 half-lives per step
            let top = (60.0 * h).clamp(1.0, 4096.0);
            (Just(h), prop_oneof![Just(1.0f32), 1.0f32..=top])
        }),
    ) {
        prop_assume!(per_step / h < 60.0);
        let s = Schedule::half_life_samples(h, per_step);
        s.validate().unwrap();
        check_alpha(&s, 1, refs::half_life(f64::from(h), f64::from(per_step)))?;
    }

    #[test]
    fn power_alpha(t in any_t(), gamma in prop_oneof![0.0f32..1.0, 0.0f32..100.0, Just(6.94f32), Just(16.97f32)]) {
        let s = Schedule::power(gamma);
        s.validate().unwrap();
        check_alpha(&s, t, refs::power(t, f64::from(gamma)))?;
    }

    #[test]
    fn sigma_rel_round_trips(sigma in 1.0e-4f64..0.2886) {
        let gamma = sigma_rel_to_gamma(sigma).unwrap();
        prop_assert!(gamma >= 0.0);
        // the largest real root of the cubic
        let c = sigma.powi(-2);
        let f = |g: f64| g.powi(3) + 7.0 * g * g + (16.0 - c) * g + (12.0 - c);
        prop_assert!(f(gamma).abs() <= 1e-9 * c * gamma.max(1.0), "residual {}", f(gamma));
        prop_assert!(f(gamma * (1.0 + 1e-6) + 1e-9) > 0.0);
        let back = refs::sigma_rel(gamma);
        prop_assert!((back - sigma).abs() <= 1e-12 * sigma, "{back} vs {sigma}");
        prop_assert!((gamma_to_sigma_rel(gamma) - back).abs() <= 1e-14 * back);
    }
}

#[test]
fn sigma_rel_known_values() {
    // EDM2: σ_rel 0.05 ↔ γ 16.97, σ_rel 0.10 ↔ γ 6.94
    assert!((sigma_rel_to_gamma(0.05).unwrap() - 16.97).abs() < 0.01);
    assert!((sigma_rel_to_gamma(0.10).unwrap() - 6.94).abs() < 0.01);
    assert!((gamma_to_sigma_rel(0.0) - 12f64.powf(-0.5)).abs() < 1e-15);
    for bad in [0.0, -0.1, 0.29, f64::NAN, f64::INFINITY] {
        assert_eq!(sigma_rel_to_gamma(bad), Err(Error::InvalidDecay), "{bad}");
    }
    let s = Schedule::power_sigma_rel(0.10).unwrap();
    assert!(matches!(s.decay, Decay::Power { gamma } if (gamma - 6.94).abs() < 0.01));
}

#[test]
fn invalid_schedules_are_refused() {
    let bad = [
        Schedule::constant(1.0),
        Schedule::constant(f32::NAN),
        Schedule::shift(0),
        Schedule::shift(32),
        Schedule::warmup(0.0, 0.5, 0.0, 0.9),
        Schedule::warmup(1.0, -1.0, 0.0, 0.9),
        Schedule::warmup(1.0, 0.5, 0.95, 0.9),
        Schedule::warmup(1.0, 0.5, 0.0, 1.0),
        Schedule::half_life_steps(0.0),
        Schedule::half_life_samples(10.0, f32::INFINITY),
        Schedule::power(-0.5),
        Schedule::power(f32::NAN),
        Schedule::constant(0.9).every(0),
    ];
    for s in bad {
        assert_eq!(s.validate(), Err(Error::InvalidDecay), "{s:?}");
        assert_eq!(
            Ema::with_schedule([0.0f32; 2], s).map(|_| ()),
            Err(Error::InvalidDecay)
        );
    }
}

#[test]
fn actions_follow_after_and_every() {
    let s = Schedule::constant(0.9).after(3).every(2);
    let mut steps = 0;
    let mut seen = Vec::new();
    for call in 1..=9 {
        let a = s.action(call, steps);
        if let Action::Step { t, .. } = a {
            steps = t;
        }
        seen.push(match a {
            Action::Copy => 'c',
            Action::Skip => '.',
            Action::Step { .. } => 's',
        });
    }
    // copy for calls 1–3, then every second call from call 5
    assert_eq!(seen.iter().collect::<String>(), "ccc.s.s.s");
    assert_eq!(steps, 3);
}

/// The semantics, written out plainly: the f64 reference of a scheduled,
/// copy-first EMA.
struct ScheduledRef {
    r: reference::Ema,
    calls: u64,
    t: u64,
    after: u64,
    every: u64,
    alpha: Box<dyn Fn(u64) -> f64>,
}

impl ScheduledRef {
    fn update(&mut self, x: &[f64]) {
        self.calls += 1;
        if self.calls == 1 && self.after == 0 {
            self.r.copy(x);
            self.t = 1;
        } else if self.calls <= self.after {
            self.r.copy(x);
        } else if (self.calls - self.after).is_multiple_of(self.every) {
            self.t += 1;
            let a = (self.alpha)(self.t);
            self.r.update_with_alpha(x, a);
        }
    }
}

fn schedules() -> impl Strategy<Value = (Schedule, f64)> {
    prop_oneof![
        (0.5f32..0.9999).prop_map(|b| (Schedule::constant(b), 0.5)),
        (0.1f32..10.0, 0.3f32..1.0, 0.9f32..0.99999)
            .prop_map(|(g, p, m)| (Schedule::warmup(g, p, 0.0, m), f64::from(1.0 + 1.5 * p))),
        (0.0f32..30.0).prop_map(|g| (Schedule::power(g), 4.0)),
        (2.0f32..5000.0).prop_map(|h| (Schedule::half_life_steps(h), 3.0)),
        (1u8..=16).prop_map(|k| (Schedule::shift(k), 0.5)),
    ]
    .prop_flat_map(|(s, c)| (0u32..20, 1u32..4).prop_map(move |(a, e)| (s.after(a).every(e), c)))
}

fn alpha_fn(s: Schedule) -> Box<dyn Fn(u64) -> f64> {
    match s.decay {
        Decay::Constant { beta } => Box::new(move |_| refs::constant(f64::from(beta))),
        Decay::Warmup {
            inv_gamma,
            power,
            min_beta,
            max_beta,
        } => Box::new(move |t| {
            refs::warmup(
                t,
                f64::from(inv_gamma),
                f64::from(power),
                f64::from(min_beta),
                f64::from(max_beta),
            )
        }),
        Decay::HalfLife {
            half_life,
            per_step,
        } => Box::new(move |_| refs::half_life(f64::from(half_life), f64::from(per_step))),
        Decay::Power { gamma } => Box::new(move |t| refs::power(t, f64::from(gamma))),
        Decay::Shift { k } => Box::new(move |_| 2f64.powi(-i32::from(k))),
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A compensated f32 EMA under a schedule, against the f64 reference
    /// with α_t from the formula: within the kernel bound at the current
    /// α_t plus `c·ε·D` for the schedule's own error (module docs).
    #[test]
    fn scheduled_compensated_ema_within_bound(
        (s, c) in schedules(),
        xs in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 4), 1..400),
    ) {
        let mut ema = Ema::with_schedule(vec![CompF32::ZERO; 4], s).unwrap();
        let mut r = ScheduledRef {
            r: reference::Ema::new(4, 1.0),
            calls: 0, t: 0,
            after: u64::from(s.update_after_step),
            every: u64::from(s.update_every),
            alpha: alpha_fn(s),
        };
        let mut out = [0.0f32; 4];
        let mut d = [0.0f64; 4];
        for x in &xs {
            let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let before = r.r.value();
            for i in 0..4 { d[i] = d[i].max((xd[i] - before[i]).abs()); }
            ema.update(x).unwrap();
            r.update(&xd);
            prop_assert_eq!(ema.ema_steps(), r.t);
            ema.read_into(&mut out).unwrap();
            let alpha_t = f64::from(ema.alpha());
            for (i, (o, w)) in out.iter().zip(r.r.value()).enumerate() {
                let m = r.r.max_abs()[i];
                let b = bounds::ema_comp(m, alpha_t) + c * EPS * d[i] + r.r.own_error(i);
                prop_assert!((f64::from(*o) - w).abs() <= b, "elem {i}: {o} vs {w}");
            }
        }
    }

    /// The same for the Q15 EMA with its Q31 shadow: α_t is quantised to
    /// Q31, adding `(2⁻³²/α_t + c·ε)·D`.
    #[test]
    fn scheduled_q15_ema_within_bound(
        (s, c) in schedules(),
        xs in prop::collection::vec(prop::collection::vec(any::<i16>().prop_map(Q15::from_bits), 4), 1..400),
    ) {
        let mut ema = Ema::with_schedule(vec![I1F31::ZERO; 4], s).unwrap();
        let mut r = ScheduledRef {
            r: reference::Ema::new(4, 1.0),
            calls: 0, t: 0,
            after: u64::from(s.update_after_step),
            every: u64::from(s.update_every),
            alpha: alpha_fn(s),
        };
        let mut out = [Q15::ZERO; 4];
        let mut d = [0.0f64; 4];
        for x in &xs {
            let xd: Vec<f64> = x.iter().map(|v| v.to_num::<f64>()).collect();
            let before = r.r.value();
            for i in 0..4 { d[i] = d[i].max((xd[i] - before[i]).abs()); }
            ema.update(x).unwrap();
            r.update(&xd);
            ema.read_into(&mut out).unwrap();
            let alpha_t = ema.alpha().to_num::<f64>();
            for (i, (o, w)) in out.iter().zip(r.r.value()).enumerate() {
                let b = bounds::ema_q15(alpha_t) + (2f64.powi(-32) / alpha_t + c * EPS) * d[i] / LSB15 + r.r.own_error(i) / LSB15;
                prop_assert!((o.to_num::<f64>() - w).abs() / LSB15 <= b, "elem {i}: {o} vs {w}");
            }
        }
    }
}
