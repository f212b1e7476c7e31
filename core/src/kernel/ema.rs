//! EMA update and readout loops: `s ← s + α·(x − s)`.

use crate::format::{CompF32, I1F15, I1F31, I2F62};
use crate::num::{round_shift_i64, round_shift_i128, two_sum};

/// Plain f32: `s ← fl(s + fl(α·fl(x − s)))`.
pub(crate) fn plain_f32(s: &mut [f32], x: &[f32], alpha: f32) {
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
pub(crate) fn comp_f32(s: &mut [CompF32], x: &[f32], alpha: f32) {
    for (s, &x) in s.iter_mut().zip(x) {
        *s = comp_step(*s, x, alpha);
    }
}

/// One Q15-input step on a Q31 shadow; `alpha` is a Q31 coefficient in
/// `(0, 2^31]`. `|x·2^16 − s| < 2^32`, so the product is below 2^63.
#[inline(always)]
pub(crate) fn q15_step(s: i32, x: i16, alpha: i64) -> i32 {
    let d = (i64::from(x) << 16) - i64::from(s);
    let delta = round_shift_i64::<31>(d * alpha);
    // The result lies between s and x·2^16, so it fits in i32.
    (i64::from(s) + delta) as i32
}

/// Q15 input, Q31 (I1F31) shadow, rounding the increment to nearest-even.
pub(crate) fn q15(s: &mut [I1F31], x: &[I1F15], alpha: i64) {
    for (s, x) in s.iter_mut().zip(x) {
        *s = I1F31::from_bits(q15_step(s.to_bits(), x.to_bits(), alpha));
    }
}

/// One Q31-input step on a Q62 (I2F62) shadow. `|x·2^31 − s| < 2^63`.
#[inline(always)]
pub(crate) fn q31_step(s: i64, x: i32, alpha: i64) -> i64 {
    let d = (i64::from(x) << 31) - s;
    let delta = round_shift_i128::<31>(i128::from(d) * i128::from(alpha));
    // The result lies between s and x·2^31, so it fits in i64.
    (i128::from(s) + delta) as i64
}

/// Q31 input, Q62 (I2F62) shadow, rounding the increment to nearest-even.
pub(crate) fn q31(s: &mut [I2F62], x: &[I1F31], alpha: i64) {
    for (s, x) in s.iter_mut().zip(x) {
        *s = I2F62::from_bits(q31_step(s.to_bits(), x.to_bits(), alpha));
    }
}

/// Copies parameters into a shadow, converting exactly.
pub(crate) fn load<A, T: Copy>(s: &mut [A], x: &[T], widen: impl Fn(T) -> A) {
    for (s, &x) in s.iter_mut().zip(x) {
        *s = widen(x);
    }
}

/// Writes the shadow out, converting with `narrow`.
pub(crate) fn store<A: Copy, T>(s: &[A], out: &mut [T], narrow: impl Fn(A) -> T) {
    for (o, &s) in out.iter_mut().zip(s) {
        *o = narrow(s);
    }
}
