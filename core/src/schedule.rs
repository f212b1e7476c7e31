//! Decay schedules: how β (and α = 1 − β) evolves with the step.
//!
//! A [`Schedule`] is a small `Copy` value kept apart from the averager's
//! state. The averager asks it, at every call, what to do: copy the
//! parameters (before `update_after_step`), skip (between `update_every`
//! updates), or take an EMA step with coefficient `α_t`.
//!
//! | decay | β_t | α_t as computed |
//! |---|---|---|
//! | [`Decay::Constant`] | β | `1 − β` (exact for β ≥ ½) |
//! | `Decay::Warmup` | `clamp(1 − (1 + e/γ)^(−p), β_min, β_max)`, `e = t − 1` | `clamp((1 + e/γ)^(−p), 1 − β_max, 1 − β_min)` |
//! | `Decay::HalfLife` | `0.5^(Δ/h)` | `−expm1(−ln 2·Δ/h)` |
//! | `Decay::Power` | `(1 − 1/t)^(γ+1)` | `−expm1((γ + 1)·log1p(−1/t))`, 1 at t = 1 |
//! | [`Decay::Shift`] | `1 − 2^−k` | `2^−k` (exact; a shift in fixed point) |
//!
//! `t ≥ 1` numbers the EMA steps since averaging started (copies and
//! skipped calls do not count). α_t is computed directly, never as `1 − β_t`,
//! which would cancel: at β = 0.99999 that alone costs 1% of α in f32.
//!
//! **Accuracy of α_t** against the f64 formula (asserted over the whole
//! parameter range by the property tests, with the parameters taken as the
//! f32 values given): relative error at most [`Decay::alpha_rel_error`] —
//! `ε/2` for constant and shift decays, `3·ε` for half-life, `(1 + 1.5·p)·ε`
//! for warmup, `4·ε` for the power function (`ε = 2⁻²³`).
//!
//! The transcendental functions come from the `libm` crate (feature `libm`,
//! on by default): pure Rust, the same bits on every target, within about
//! 1 ulp. `micromath` was measured and is not accurate enough here: its
//! `powf` puts warmup α off by 2.4·10⁻³ (20 000 ε), and forming the
//! power-function α as `1 − powf(1 − 1/t, γ + 1)` is off by up to 13× at
//! large t; libm's `powf`, `expm1f`, `log1pf` keep all three within 2.6 ε.
//! Without `libm`, only [`Decay::Constant`] and [`Decay::Shift`] are
//! available.
//!
//! ```
//! use polyak::schedule::{Decay, Schedule};
//! // ema-pytorch defaults: warmup with γ = 1, p = 2/3, β ≤ 0.9999,
//! // start averaging after 100 steps, update every 10.
//! let s = Schedule::warmup(1.0, 2.0 / 3.0, 0.0, 0.9999).after(100).every(10);
//! s.validate()?;
//! assert_eq!(s.alpha(1), 1.0);              // e = 0: α = 1 (copy)
//! assert!((s.alpha(2) - 0.63).abs() < 0.01); // e = 1: 2^(−2/3)
//! # Ok::<(), polyak::Error>(())
//! ```

use crate::Error;

/// How β evolves with the EMA step `t` (1-based).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Decay {
    /// A constant β in `[0, 1)`.
    Constant {
        /// The decay.
        beta: f32,
    },
    /// The warmup of timm's `ModelEmaV3` and ema-pytorch:
    /// `β_t = clamp(1 − (1 + e/γ)^(−p), β_min, β_max)` with `e = t − 1`.
    #[cfg(feature = "libm")]
    Warmup {
        /// γ (ema-pytorch `inv_gamma`), > 0; default 1.
        inv_gamma: f32,
        /// p (`power`), > 0; default 2/3 (use 3/4 for short runs).
        power: f32,
        /// Lower clamp on β, in `[0, β_max]`.
        min_beta: f32,
        /// Upper clamp on β, in `[0, 1)`.
        max_beta: f32,
    },
    /// A half-life of `half_life` units, with `per_step` units per step
    /// (1 for a half-life in steps, the batch size for one in samples):
    /// `β = 0.5^(per_step/half_life)` (EDM2's traditional EMA).
    #[cfg(feature = "libm")]
    HalfLife {
        /// Half-life, > 0.
        half_life: f32,
        /// Units per step, > 0.
        per_step: f32,
    },
    /// The power-function EMA of EDM2 (Karras et al. 2024):
    /// `β_t = (1 − 1/t)^(γ+1)`; its relative width is
    /// [`gamma_to_sigma_rel`]`(γ)`.
    #[cfg(feature = "libm")]
    Power {
        /// γ ≥ 0 (γ = 16.97 is σ_rel = 0.05; γ = 6.94 is σ_rel = 0.10).
        gamma: f32,
    },
    /// `β = 1 − 2^−k`, `k ∈ 1..=31`: α is a power of two, and the fixed
    /// point update is a shift. Half-life `ln 2 / −ln(1 − 2^−k) ≈ 0.693·2^k`
    /// steps (k = 10: 709.4 steps).
    Shift {
        /// The shift.
        k: u8,
    },
}

/// A decay plus when to apply it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Schedule {
    /// How β evolves.
    pub decay: Decay,
    /// The first `update_after_step` calls copy the parameters into the
    /// shadow; averaging starts after them (ema-pytorch's
    /// `update_after_step`).
    pub update_after_step: u32,
    /// After that, only every `update_every`-th call updates (≥ 1).
    pub update_every: u32,
}

/// What one call to `update` does under a schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Copy the parameters (`α = 1`, exactly).
    Copy,
    /// Leave the shadow alone.
    Skip,
    /// An EMA step with this α, the `t`-th since averaging started.
    Step {
        /// The step's coefficient.
        alpha: f32,
        /// 1-based index of the EMA step.
        t: u64,
    },
}

impl Schedule {
    /// A constant β.
    pub const fn constant(beta: f32) -> Self {
        Self::from_decay(Decay::Constant { beta })
    }

    /// `β = 1 − 2^−k`.
    pub const fn shift(k: u8) -> Self {
        Self::from_decay(Decay::Shift { k })
    }

    /// The timm / ema-pytorch warmup.
    #[cfg(feature = "libm")]
    pub const fn warmup(inv_gamma: f32, power: f32, min_beta: f32, max_beta: f32) -> Self {
        Self::from_decay(Decay::Warmup {
            inv_gamma,
            power,
            min_beta,
            max_beta,
        })
    }

    /// A half-life in steps.
    #[cfg(feature = "libm")]
    pub const fn half_life_steps(steps: f32) -> Self {
        Self::from_decay(Decay::HalfLife {
            half_life: steps,
            per_step: 1.0,
        })
    }

    /// A half-life in samples, with `batch` samples per step.
    #[cfg(feature = "libm")]
    pub const fn half_life_samples(samples: f32, batch: f32) -> Self {
        Self::from_decay(Decay::HalfLife {
            half_life: samples,
            per_step: batch,
        })
    }

    /// The power-function EMA with exponent γ.
    #[cfg(feature = "libm")]
    pub const fn power(gamma: f32) -> Self {
        Self::from_decay(Decay::Power { gamma })
    }

    /// The power-function EMA with relative width σ_rel (EDM2's
    /// parameterisation).
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] unless `0 < σ_rel < 12^(−1/2)`.
    #[cfg(feature = "libm")]
    pub fn power_sigma_rel(sigma_rel: f32) -> Result<Self, Error> {
        Ok(Self::power(sigma_rel_to_gamma(f64::from(sigma_rel))? as f32))
    }

    /// A schedule applying `decay` from the first call.
    pub const fn from_decay(decay: Decay) -> Self {
        Self {
            decay,
            update_after_step: 0,
            update_every: 1,
        }
    }

    /// Copy for the first `steps` calls, then average.
    pub const fn after(self, steps: u32) -> Self {
        Self {
            update_after_step: steps,
            ..self
        }
    }

    /// Average only on every `k`-th call after the start.
    pub const fn every(self, k: u32) -> Self {
        Self {
            update_every: k,
            ..self
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] for a β outside `[0, 1)`, a non-positive or
    /// non-finite γ, p, half-life or step, `min_beta > max_beta`, a shift
    /// outside `1..=31`, or `update_every = 0`.
    pub fn validate(&self) -> Result<(), Error> {
        let beta_ok = |b: f32| (0.0..1.0).contains(&b);
        #[cfg_attr(not(feature = "libm"), allow(unused_variables))]
        let pos = |v: f32| v > 0.0 && v.is_finite();
        let ok = self.update_every > 0
            && match self.decay {
                Decay::Constant { beta } => beta_ok(beta),
                #[cfg(feature = "libm")]
                Decay::Warmup {
                    inv_gamma,
                    power,
                    min_beta,
                    max_beta,
                } => {
                    pos(inv_gamma)
                        && pos(power)
                        && beta_ok(min_beta)
                        && beta_ok(max_beta)
                        && min_beta <= max_beta
                }
                #[cfg(feature = "libm")]
                Decay::HalfLife {
                    half_life,
                    per_step,
                } => pos(half_life) && pos(per_step),
                #[cfg(feature = "libm")]
                Decay::Power { gamma } => gamma >= 0.0 && gamma.is_finite(),
                Decay::Shift { k } => (1..=31).contains(&k),
            };
        if ok { Ok(()) } else { Err(Error::InvalidDecay) }
    }

    /// What the `call`-th call to `update` (1-based) does, given that
    /// `steps_done` EMA steps were taken before it.
    pub fn action(&self, call: u64, steps_done: u64) -> Action {
        let after = u64::from(self.update_after_step);
        if call <= after {
            return Action::Copy;
        }
        let every = u64::from(self.update_every.max(1));
        if !(call - after).is_multiple_of(every) {
            return Action::Skip;
        }
        let t = steps_done.saturating_add(1);
        Action::Step {
            alpha: self.alpha(t),
            t,
        }
    }

    /// α_t for the `t`-th EMA step (t ≥ 1; t = 0 is treated as 1). Assumes
    /// a schedule that passed [`validate`](Self::validate).
    #[cfg_attr(not(feature = "libm"), allow(unused_variables))]
    pub fn alpha(&self, t: u64) -> f32 {
        match self.decay {
            Decay::Constant { beta } => 1.0 - beta,
            #[cfg(feature = "libm")]
            Decay::Warmup {
                inv_gamma,
                power,
                min_beta,
                max_beta,
            } => {
                let e = t.saturating_sub(1) as f32;
                let a = libm::powf(1.0 + e / inv_gamma, -power);
                // max/min rather than clamp: clamp has a panic path
                a.max(1.0 - max_beta).min(1.0 - min_beta)
            }
            #[cfg(feature = "libm")]
            Decay::HalfLife {
                half_life,
                per_step,
            } => -libm::expm1f(-core::f32::consts::LN_2 * (per_step / half_life)),
            #[cfg(feature = "libm")]
            Decay::Power { gamma } => {
                if t <= 1 {
                    1.0
                } else {
                    -libm::expm1f((gamma + 1.0) * libm::log1pf(-1.0 / t as f32))
                }
            }
            Decay::Shift { k } => f32::from_bits((127 - u32::from(k.min(126))) << 23),
        }
    }

    /// The schedule as 25 bytes (decay tag, four f32 parameters,
    /// `update_after_step`, `update_every`), for the state codec.
    pub fn to_bytes(&self) -> [u8; 25] {
        let (tag, p): (u8, [f32; 4]) = match self.decay {
            Decay::Constant { beta } => (0, [beta, 0.0, 0.0, 0.0]),
            #[cfg(feature = "libm")]
            Decay::Warmup {
                inv_gamma,
                power,
                min_beta,
                max_beta,
            } => (1, [inv_gamma, power, min_beta, max_beta]),
            #[cfg(feature = "libm")]
            Decay::HalfLife {
                half_life,
                per_step,
            } => (2, [half_life, per_step, 0.0, 0.0]),
            #[cfg(feature = "libm")]
            Decay::Power { gamma } => (3, [gamma, 0.0, 0.0, 0.0]),
            Decay::Shift { k } => (4, [f32::from(k), 0.0, 0.0, 0.0]),
        };
        let mut b = [0u8; 25];
        b[0] = tag;
        for (dst, v) in b[1..17].chunks_exact_mut(4).zip(p) {
            dst.copy_from_slice(&v.to_bits().to_le_bytes());
        }
        b[17..21].copy_from_slice(&self.update_after_step.to_le_bytes());
        b[21..25].copy_from_slice(&self.update_every.to_le_bytes());
        b
    }

    /// Whether α_t is the same for every step (the averager can then
    /// compute it once).
    pub fn is_constant(&self) -> bool {
        match self.decay {
            Decay::Constant { .. } | Decay::Shift { .. } => true,
            #[cfg(feature = "libm")]
            Decay::HalfLife { .. } => true,
            #[cfg(feature = "libm")]
            Decay::Warmup { .. } | Decay::Power { .. } => false,
        }
    }
}

impl Decay {
    /// The documented bound on the relative error of α_t against the f64
    /// formula, in units of ε = 2⁻²³.
    pub fn alpha_rel_error(&self) -> f32 {
        match *self {
            Decay::Constant { .. } | Decay::Shift { .. } => 0.5,
            #[cfg(feature = "libm")]
            Decay::HalfLife { .. } => 3.0,
            #[cfg(feature = "libm")]
            Decay::Warmup { power, .. } => 1.0 + 1.5 * power,
            #[cfg(feature = "libm")]
            Decay::Power { .. } => 4.0,
        }
    }
}

/// σ_rel of a power-function EMA with exponent γ:
/// `sqrt((γ + 1) / ((γ + 2)²·(γ + 3)))` (EDM2, eq. 3).
pub fn gamma_to_sigma_rel(gamma: f64) -> f64 {
    let g = gamma;
    // sqrt via Newton in f64 keeps this free of libm and exact enough
    sqrt_f64((g + 1.0) / ((g + 2.0) * (g + 2.0) * (g + 3.0)))
}

/// γ for a relative width σ_rel: the largest real root of
/// `γ³ + 7γ² + (16 − σ⁻²)γ + (12 − σ⁻²) = 0`.
///
/// # Errors
/// [`Error::InvalidDecay`] unless `0 < σ_rel < 12^(−1/2) ≈ 0.2887` (σ_rel
/// of γ = 0; larger widths need γ < 0, which has no EMA).
pub fn sigma_rel_to_gamma(sigma_rel: f64) -> Result<f64, Error> {
    let max = gamma_to_sigma_rel(0.0);
    if !(sigma_rel > 0.0 && sigma_rel < max) {
        return Err(Error::InvalidDecay);
    }
    let c = 1.0 / (sigma_rel * sigma_rel);
    let f = |g: f64| ((g + 7.0) * g + (16.0 - c)) * g + (12.0 - c);
    let df = |g: f64| (3.0 * g + 14.0) * g + (16.0 - c);
    // At γ = sqrt(c) the cubic is 6c + 16·sqrt(c) + 12 > 0 and increasing,
    // and it is convex for γ > −7/3: Newton from there descends
    // monotonically onto the largest root.
    let mut g = sqrt_f64(c);
    for _ in 0..200 {
        let step = f(g) / df(g);
        let next = g - step;
        if next.is_nan() || next >= g {
            break;
        }
        g = next;
    }
    Ok(g.max(0.0))
}

/// Square root in f64 by Newton's method (no libm needed); exact to about
/// one ulp for positive finite input.
fn sqrt_f64(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return 0.0;
    }
    // initial guess from the exponent
    let bits = v.to_bits();
    let mut x = f64::from_bits((bits >> 1) + (0x3ff << 51));
    for _ in 0..8 {
        x = 0.5 * (x + v / x);
    }
    x
}
