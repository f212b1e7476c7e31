//! The error bounds the kernels document, as formulas, so tests and
//! measurements use exactly the numbers in the docs.
//!
//! Notation: `m` the largest |x| an element has seen, `alpha` the stored
//! coefficient, `t` the number of updates, `ε = 2⁻²³`, `m₀ = 2⁻¹²⁶`,
//! `η = 2⁻¹⁴⁹`. f32 bounds are absolute; fixed-point bounds are in LSBs.

use crate::metrics::{EPS, ETA, MIN_NORMAL};

/// `Ema<f32>`, copy-first: `ε·(0.51·(M + m₀)/α + 2.01·M)`.
pub fn ema_plain(m: f64, alpha: f64) -> f64 {
    EPS * (0.51 * (m + MIN_NORMAL) / alpha + 2.01 * m)
}

/// `Ema<f32>`, zero-debiased:
/// `ε·((T + 5)·M + m₀·(1 + 1/α)/2) / (1 − ε·(T + 5)/2)`, `T = min(t, 1/α)`.
///
/// # Panics
/// Where the denominator is not positive (the bound is not defined there).
pub fn ema_plain_debiased(m: f64, alpha: f64, t: u64) -> f64 {
    let tt = (t as f64).min(1.0 / alpha);
    let den = 1.0 - EPS * (tt + 5.0) / 2.0;
    assert!(den > 0.0, "bound not defined here");
    EPS * ((tt + 5.0) * m + MIN_NORMAL * (1.0 + 1.0 / alpha) / 2.0) / den
}

/// `Ema<CompF32>`, copy-first: `ε·(2.51·M + (ε·M + m₀)/(2α))`.
pub fn ema_comp(m: f64, alpha: f64) -> f64 {
    EPS * (2.51 * m + (EPS * m + MIN_NORMAL) / (2.0 * alpha))
}

/// `Ema<CompF32>`, zero-debiased: `ε·((6 + ε·T)·M + m₀·(1 + 1/α)/2)`.
pub fn ema_comp_debiased(m: f64, alpha: f64, t: u64) -> f64 {
    let tt = (t as f64).min(1.0 / alpha);
    EPS * ((6.0 + EPS * tt) * m + MIN_NORMAL * (1.0 + 1.0 / alpha) / 2.0)
}

/// `Ema<I1F31>` (Q15 in, Q31 shadow), copy-first, read: `½ + 2⁻¹⁷/α` LSB.
pub fn ema_q15(alpha: f64) -> f64 {
    0.5 + ema_q15_shadow(alpha)
}

/// `Ema<I1F31>`, the shadow itself: `2⁻¹⁷/α` LSB of Q15 (`½/α` LSB of Q31).
pub fn ema_q15_shadow(alpha: f64) -> f64 {
    2f64.powi(-17) / alpha
}

/// `Ema<I1F31>`, zero-debiased, read: `½ + 2⁻¹⁶/(α − 2⁻³²)` LSB.
pub fn ema_q15_debiased(alpha: f64) -> f64 {
    0.5 + 2f64.powi(-16) / (alpha - 2f64.powi(-32))
}

/// `Ema<I2F62>` (Q31 in, Q62 shadow), copy-first, read: `½ + 2⁻³²/α` LSB.
pub fn ema_q31(alpha: f64) -> f64 {
    0.5 + ema_q31_shadow(alpha)
}

/// `Ema<I2F62>`, the shadow itself: `2⁻³²/α` LSB of Q31 (`½/α` LSB of Q62).
pub fn ema_q31_shadow(alpha: f64) -> f64 {
    2f64.powi(-32) / alpha
}

/// `Swa<CompF32>`: `ε·|mean| + n·ε²·mean|x| + η`.
pub fn swa_f32(mean: f64, mean_abs: f64, n: u64) -> f64 {
    EPS * mean.abs() + n as f64 * EPS * EPS * mean_abs + ETA
}

/// f32 weighted average of `k` models: `ε·(1.5·|ref| + M) + K·η·(M + 1)`.
pub fn weighted_f32(r: f64, m: f64, k: usize) -> f64 {
    EPS * (1.5 * r.abs() + m) + k as f64 * ETA * (m + 1.0)
}

/// f32 interpolation: `ε·(½·|ref| + t'·|b − a|)·(1 + ε) + η`,
/// `t' = min(t, 1 − t)`.
pub fn interpolate_f32(r: f64, a: f64, b: f64, t: f64) -> f64 {
    let tp = t.min(1.0 - t);
    EPS * (0.5 * r.abs() + tp * (b - a).abs()) * (1.0 + EPS) + ETA
}
