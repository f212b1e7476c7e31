//! EMA update and readout loops: `s ← s + α·(x − s)`.
//!
//! Fixed-point steps are generic over how the increment `α·(x − s)` is
//! rounded ([`Round`]): nearest-even or stochastic. A step always lands
//! between the old shadow and the input (the increment is at most
//! `|x − s|`, an integer, in magnitude, whichever way it rounds), so no
//! fixed-point update can overflow.

use crate::format::{CompF32, I1F15, I1F31, I2F62, Q15Ef};
use crate::num::{Round, two_sum};

/// Plain f32: `s ← fl(s + fl(α·fl(x − s)))`.
pub(crate) fn plain_f32(s: &mut [f32], x: &[f32], alpha: f32) {
    #[cfg(polyak_m4f)]
    let (s, x) = {
        let done = super::arm::ema_f32(s, x, alpha);
        (
            s.get_mut(done..).unwrap_or(&mut []),
            x.get(done..).unwrap_or(&[]),
        )
    };
    for (s, &x) in s.iter_mut().zip(x) {
        *s += alpha * (x - *s);
    }
}

/// One compensated step. `x − (hi + lo)` is formed with an error-free
/// difference, so the only rounding that reaches the result is that of
/// `d` and of `α·d` (each ≤ 2^−24 relative) and a second-order term in `lo`.
#[inline(always)]
pub(crate) fn comp_step(s: CompF32, x: f32, alpha: f32) -> CompF32 {
    let (dh, dl) = two_sum(x, -s.hi());
    let d = dh + (dl - s.lo());
    let p = alpha * d;
    let (h, e) = two_sum(s.hi(), p);
    let (hi, lo) = two_sum(h, s.lo() + e);
    CompF32::from_parts_unchecked(hi, lo)
}

/// Compensated f32 (`hi + lo` pairs).
#[inline(always)]
pub(crate) fn comp_f32(s: &mut [CompF32], x: &[f32], alpha: f32) {
    for (s, &x) in s.iter_mut().zip(x) {
        *s = comp_step(*s, x, alpha);
    }
}

/// One Q15-input step on a Q31-unit shadow; `alpha` is a Q31 coefficient
/// in `(0, 2³¹]`. `|x·2¹⁶ − s| < 2³²`, so the product is below 2⁶³.
#[inline(always)]
pub(crate) fn q15_wide_step(s: i32, x: i16, alpha: i64, r: &mut impl Round) -> i32 {
    let d = (i64::from(x) << 16) - i64::from(s);
    let delta = r.r64(d * alpha);
    (i64::from(s) + delta) as i32
}

/// Q15 input, Q31 shadow, nearest-even (the assembly loop on the
/// Cortex-M4F).
pub(crate) fn q15_wide_nearest(s: &mut [I1F31], x: &[I1F15], alpha: i64) {
    // α is a checked Q31 coefficient in (0, 2³¹]: the assembly takes every
    // element (it refuses only an α beyond 2³¹, which cannot reach here)
    #[cfg(polyak_m4f)]
    super::arm::ema_q15_wide(s, x, alpha as u32);
    #[cfg(not(polyak_m4f))]
    q15_wide(s, x, alpha, &mut crate::num::Nearest);
}

/// Q15 input, Q31 (I1F31) shadow.
pub(crate) fn q15_wide(s: &mut [I1F31], x: &[I1F15], alpha: i64, r: &mut impl Round) {
    for (s, x) in s.iter_mut().zip(x) {
        *s = I1F31::from_bits(q15_wide_step(s.to_bits(), x.to_bits(), alpha, r));
    }
}

/// Q15 input, Q15 (narrow) shadow: `|x − s| < 2¹⁶`, the product is below
/// 2⁴⁷.
pub(crate) fn q15_narrow(s: &mut [I1F15], x: &[I1F15], alpha: i64, r: &mut impl Round) {
    for (s, x) in s.iter_mut().zip(x) {
        let d = i64::from(x.to_bits()) - i64::from(s.to_bits());
        let delta = r.r64(d * alpha);
        *s = I1F15::from_bits((i64::from(s.to_bits()) + delta) as i16);
    }
}

/// Q15 input, error-feedback shadow: the Q31-unit step on
/// `value·2¹⁶ + residual`, split again into a Q15 value and a residual.
pub(crate) fn q15_ef(s: &mut [Q15Ef], x: &[I1F15], alpha: i64, r: &mut impl Round) {
    for (s, x) in s.iter_mut().zip(x) {
        *s = Q15Ef::from_wide(q15_wide_step(s.wide(), x.to_bits(), alpha, r));
    }
}

/// One Q31-input step on a Q62-unit shadow. `|x·2³¹ − s| < 2⁶³`.
#[inline(always)]
pub(crate) fn q31_wide_step(s: i64, x: i32, alpha: i64, r: &mut impl Round) -> i64 {
    let d = (i64::from(x) << 31) - s;
    let delta = r.r128(i128::from(d) * i128::from(alpha));
    (i128::from(s) + delta) as i64
}

/// Q31 input, Q62 (I2F62) shadow.
pub(crate) fn q31_wide(s: &mut [I2F62], x: &[I1F31], alpha: i64, r: &mut impl Round) {
    for (s, x) in s.iter_mut().zip(x) {
        *s = I2F62::from_bits(q31_wide_step(s.to_bits(), x.to_bits(), alpha, r));
    }
}

/// Q31 input, Q62 shadow, α = 2⁻ᵏ: a shift, rounded to nearest-even.
pub(crate) fn q31_wide_shift(s: &mut [I2F62], x: &[I1F31], k: u32) {
    let k = k.max(1).min(31);
    let mask = (1i64 << k) - 1;
    let half = 1i64 << (k - 1);
    for (s, x) in s.iter_mut().zip(x) {
        let d = (i64::from(x.to_bits()) << 31) - s.to_bits();
        let q = d >> k;
        let rem = d & mask;
        let delta = q + i64::from((rem > half) | ((rem == half) & (q & 1 != 0)));
        *s = I2F62::from_bits(s.to_bits() + delta);
    }
}

/// `round(s / 2¹⁶)`, nearest-even: the Q15 read of a Q31-unit shadow.
#[inline(always)]
pub(crate) fn q31_units_to_q15(s: i32) -> i64 {
    // in 32 bits: the quotient is below 2¹⁵ in magnitude, so adding the
    // rounding bit cannot overflow
    let q = s >> 16;
    let r = s & 0xffff;
    i64::from(q + i32::from((r > 0x8000) | ((r == 0x8000) & (q & 1 != 0))))
}

/// Copies parameters into a shadow, converting exactly.
pub(crate) fn load<A, T: Copy>(s: &mut [A], x: &[T], widen: impl Fn(T) -> A) {
    for (s, &x) in s.iter_mut().zip(x) {
        *s = widen(x);
    }
}

/// Writes the shadow out, converting with `narrow`.
pub(crate) fn store<A: Copy, T>(s: &[A], out: &mut [T], mut narrow: impl FnMut(A) -> T) {
    for (o, &s) in out.iter_mut().zip(s) {
        *o = narrow(s);
    }
}
