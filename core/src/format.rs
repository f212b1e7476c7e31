//! Element formats: f32, the compensated f32 pair, and the fixed-point types.

use crate::Error;

pub use fixed::types::{I1F15, I1F31, I2F62, I16F16, I33F31, I49F15, U1F31};

/// Q15: a 16-bit fixed-point value in `[-1, 1)` with 15 fractional bits.
pub type Q15 = I1F15;
/// Q31: a 32-bit fixed-point value in `[-1, 1)` with 31 fractional bits.
pub type Q31 = I1F31;

/// The largest f32 magnitude accepted as input: 2^100 ≈ 1.27·10^30.
///
/// Inputs are checked against it (and for NaN / ±Inf) before anything is
/// written. Below it, every difference `x − s`, every SWA sum of up to 2^24
/// snapshots and every weighted sum stays finite, so the kernels need no
/// per-element overflow handling. Values of this size have no place in a
/// model; a gradient step that produced one is better refused than averaged.
pub const F32_LIMIT: f32 = f32::from_bits((127 + 100) << 23);

/// An f32 value carried as an unevaluated sum `hi + lo` with
/// `|lo| ≤ ulp(hi) / 2`.
///
/// This is the shadow of the compensated f32 EMA and the accumulator of the
/// f32 SWA: the low part keeps the rounding error of every update, so the
/// pair tracks the exact result to about 2^−48 relative instead of 2^−24,
/// and small updates are never lost to rounding.
///
/// The layout is `#[repr(C)]`, `hi` first: one pair is 8 bytes, and a buffer
/// of pairs is one stream of memory (better for caches than two buffers).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub struct CompF32 {
    hi: f32,
    lo: f32,
}

impl CompF32 {
    /// Zero (both parts +0.0).
    pub const ZERO: Self = Self { hi: 0.0, lo: 0.0 };

    /// A pair holding exactly `v` (`lo = 0`).
    pub const fn new(v: f32) -> Self {
        Self { hi: v, lo: 0.0 }
    }

    pub(crate) const fn from_parts_unchecked(hi: f32, lo: f32) -> Self {
        Self { hi, lo }
    }

    /// The high part: the value rounded to f32 (up to half an ulp off).
    pub const fn hi(self) -> f32 {
        self.hi
    }

    /// The low part: what `hi` misses of the carried value.
    pub const fn lo(self) -> f32 {
        self.lo
    }

    /// The carried value rounded to f32 (`fl(hi + lo)`, nearest-even).
    pub fn value(self) -> f32 {
        self.hi + self.lo
    }

    /// The carried value, exactly (every `hi + lo` is exact in f64).
    pub fn to_f64(self) -> f64 {
        f64::from(self.hi) + f64::from(self.lo)
    }
}

/// A Q15 EMA shadow with error feedback: the shadow rounded to Q15
/// (usable directly as a model) plus the residual that rounding dropped,
/// in units of 2⁻³¹ (`value·2¹⁶ + residual` is the exact Q31 shadow, with
/// `residual ∈ [−2¹⁵, 2¹⁵)`).
///
/// Four bytes per element, like the Q31 wide shadow, whose arithmetic it
/// shares; the difference is that [`value`](Self::value) is always a
/// ready-to-use Q15 weight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Q15Ef {
    value: I1F15,
    residual: i16,
}

impl Q15Ef {
    /// Zero.
    pub const ZERO: Self = Self {
        value: I1F15::ZERO,
        residual: 0,
    };

    /// The shadow rounded to Q15 (nearest, ties up).
    pub const fn value(self) -> I1F15 {
        self.value
    }

    /// What the rounding to Q15 dropped, in units of 2⁻³¹.
    pub const fn residual(self) -> i16 {
        self.residual
    }

    /// The exact shadow in Q31 units: `value·2¹⁶ + residual`.
    pub const fn wide(self) -> i32 {
        ((self.value.to_bits() as i32) << 16) + self.residual as i32
    }

    /// Splits a Q31-unit shadow: `value = (w + 2¹⁵) >> 16`.
    pub(crate) const fn from_wide(w: i32) -> Self {
        let v = ((w as i64 + (1 << 15)) >> 16) as i32;
        let v = if v > i16::MAX as i32 {
            i16::MAX as i32
        } else {
            v
        };
        Self {
            value: I1F15::from_bits(v as i16),
            residual: (w - (v << 16)) as i16,
        }
    }
}

/// Whether an f32 input is acceptable: finite and within [`F32_LIMIT`].
#[inline(always)]
pub(crate) fn valid_f32(x: f32) -> bool {
    x.to_bits() & 0x7fff_ffff <= F32_LIMIT.to_bits()
}

/// Checks f32 input: the first element that is NaN, ±Inf or larger in
/// magnitude than [`F32_LIMIT`] is reported by index.
pub(crate) fn check_f32(xs: &[f32]) -> Result<(), Error> {
    check_f32_within(xs, F32_LIMIT)
}

/// As [`check_f32`] with another limit.
pub(crate) fn check_f32_within(xs: &[f32], limit: f32) -> Result<(), Error> {
    const MASK: u32 = 0x7fff_ffff;
    // Branch-free reduction first (vectorises); locate only on failure.
    // `|x| ≤ limit` is false for NaN and ±Inf too. On Arm the integer form
    // (a mask and a compare per element) is the cheaper; elsewhere packed
    // float compares are (SSE2 has no unsigned 32-bit max).
    #[cfg(target_arch = "arm")]
    let ok = {
        let l = limit.to_bits();
        xs.iter().fold(0u32, |m, x| m.max(x.to_bits() & MASK)) <= l
    };
    #[cfg(not(target_arch = "arm"))]
    let ok = xs.iter().fold(true, |ok, x| ok & (x.abs() <= limit));
    if ok {
        return Ok(());
    }
    let limit = limit.to_bits();
    for (index, x) in xs.iter().enumerate() {
        if !x.is_finite() {
            return Err(Error::NonFinite { index });
        }
        if x.to_bits() & MASK > limit {
            return Err(Error::OutOfRange { index });
        }
    }
    Ok(())
}

/// Checks f32 weights: finite, not negative, and not larger than
/// [`F32_LIMIT`].
pub(crate) fn check_weights_f32(ws: &[f32]) -> Result<(), Error> {
    for (index, w) in ws.iter().enumerate() {
        // `!(w >= 0)` is true for NaN too; -0.0 is accepted as zero.
        if !(*w >= 0.0 && *w <= F32_LIMIT) {
            return Err(Error::InvalidWeight { index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_is_two_to_the_hundred() {
        assert_eq!(f64::from(F32_LIMIT), 2f64.powi(100));
    }

    #[test]
    fn check_reports_first_offender() {
        assert_eq!(check_f32(&[0.0, 1.0, -F32_LIMIT]), Ok(()));
        assert_eq!(
            check_f32(&[0.0, f32::MAX, f32::NAN]),
            Err(Error::OutOfRange { index: 1 })
        );
        assert_eq!(
            check_f32(&[f32::NEG_INFINITY, f32::MAX]),
            Err(Error::NonFinite { index: 0 })
        );
        assert_eq!(check_f32(&[]), Ok(()));
    }
}
