//! Merging whole models: weighted averages (FedAvg, soups) and
//! interpolation (WiSE-FT).
//!
//! These functions take every model at once as slices. Streaming
//! aggregators that fold models in one at a time build on the same kernels.
//!
//! | element | weights | sum | error of each output element |
//! |---|---|---|---|
//! | `f32` | `f32 ≥ 0` | products rounded, sum compensated | `ε·(1.5·|ref| + M) + K·η·(M + 1)` |
//! | [`Q15`], [`Q31`] | `u32` counts | exact i64 | ≤ ½ LSB, nearest-even, any model order |
//!
//! (`M = max_k |x_k|` for that element, `K` the number of models,
//! `ε = 2⁻²³`, `η = 2⁻¹⁴⁹`.)
//!
//! ```
//! use polyak::merge;
//!
//! let a = [1.0f32, 2.0];
//! let b = [3.0f32, 6.0];
//! let mut out = [0.0f32; 2];
//! // FedAvg: client a saw 100 examples, client b 300.
//! merge::fedavg(&[&a, &b], &[100, 300], &mut out)?;
//! assert_eq!(out, [2.5, 5.0]);
//! // WiSE-FT: a quarter of the way from a to b.
//! merge::interpolate(&a, &b, 0.25, &mut out)?;
//! assert_eq!(out, [1.5, 3.0]);
//! # Ok::<(), polyak::Error>(())
//! ```

use core::num::NonZeroU64;

use crate::ema::check_len;
use crate::format::{CompF32, U1F31, check_f32, check_weights_f32};
use crate::kernel::merge as k;
use crate::kernel::swa::comp_add;
use crate::{Error, Q15, Q31};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::Q15 {}
    impl Sealed for super::Q31 {}
}

/// An element type that can be merged: `f32`, [`Q15`], [`Q31`]. Sealed.
pub trait Merge: Copy + sealed::Sealed {
    /// Weight type of [`weighted_average`]: `f32` for f32 models, `u32`
    /// counts (exact) for fixed point.
    type Weight: Copy;
    /// Interpolation coefficient type: `f32` for f32, [`U1F31`] for fixed
    /// point (1.0 exactly representable).
    type Frac: Copy;
    #[doc(hidden)]
    fn check(values: &[Self]) -> Result<(), Error>;
    #[doc(hidden)]
    fn weighted(
        models: &[&[Self]],
        weights: &[Self::Weight],
        out: &mut [Self],
    ) -> Result<(), Error>;
    #[doc(hidden)]
    fn counted(models: &[&[Self]], counts: &[u32], out: &mut [Self]) -> Result<(), Error>;
    #[doc(hidden)]
    fn lerp(a: &[Self], b: &[Self], t: Self::Frac, out: &mut [Self]) -> Result<(), Error>;
    #[doc(hidden)]
    fn check_frac(t: Self::Frac) -> Result<(), Error>;
}

/// f32 weights: products `fl(w·x)` summed in a compensated pair, divided by
/// the compensated sum of weights. The weights are first scaled by a power
/// of two (exact) so that they sum to `[1, 2)`: no product can overflow.
///
/// **Bound**, per element, for `K ≤ 2²⁰` models:
/// `|out − ref| ≤ ε·(1.5·|ref| + M) + K·η·(M + 1)`.
impl Merge for f32 {
    type Weight = f32;
    type Frac = f32;

    fn check(values: &[f32]) -> Result<(), Error> {
        check_f32(values)
    }
    fn weighted(models: &[&[f32]], weights: &[f32], out: &mut [f32]) -> Result<(), Error> {
        check_weights_f32(weights)?;
        weighted_f32(models, weights.iter().copied(), out)
    }
    fn counted(models: &[&[f32]], counts: &[u32], out: &mut [f32]) -> Result<(), Error> {
        // Counts above 2^24 round to the nearest f32 (relative error ≤ ε/2).
        weighted_f32(models, counts.iter().map(|&c| c as f32), out)
    }
    fn lerp(a: &[f32], b: &[f32], t: f32, out: &mut [f32]) -> Result<(), Error> {
        Self::check_frac(t)?;
        k::lerp_f32(a, b, t, out);
        Ok(())
    }
    fn check_frac(t: f32) -> Result<(), Error> {
        if (0.0..=1.0).contains(&t) {
            Ok(())
        } else {
            Err(Error::InvalidCoefficient)
        }
    }
}

fn weighted_f32(
    models: &[&[f32]],
    weights: impl Iterator<Item = f32> + Clone,
    out: &mut [f32],
) -> Result<(), Error> {
    let total = weights.clone().fold(CompF32::ZERO, comp_add).value();
    if total == 0.0 {
        return Err(Error::ZeroTotalWeight);
    }
    if !total.is_finite() {
        return Err(Error::WeightOverflow);
    }
    // 2^-e with 2^e ≤ total < 2^(e+1), e clamped to the normal range.
    let e = ((total.to_bits() >> 23) as i32 - 127).max(-126);
    let scale = f32::from_bits(((127 - e) as u32) << 23);
    let scaled = weights.clone().map(|w| w * scale);
    let scaled_total = scaled.fold(CompF32::ZERO, comp_add).value();
    k::weighted_f32(models, weights, scale, scaled_total, out);
    Ok(())
}

/// Fixed-point weights are `u32` counts; the sum `Σ w·x` is exact in i64
/// and the quotient is rounded once.
///
/// **Bound**: `|out − ref| ≤ ½` LSB (correctly rounded, ties to even), the
/// same bits for any order of the models. The total weight must not
/// exceed 2³² − 1 ([`Error::WeightOverflow`]).
impl Merge for Q15 {
    type Weight = u32;
    type Frac = U1F31;

    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
    fn weighted(models: &[&[Q15]], weights: &[u32], out: &mut [Q15]) -> Result<(), Error> {
        Self::counted(models, weights, out)
    }
    fn counted(models: &[&[Q15]], counts: &[u32], out: &mut [Q15]) -> Result<(), Error> {
        let total = fixed_total(counts)?;
        k::weighted_fixed(
            models,
            counts,
            total,
            out,
            |x: Q15| i64::from(x.to_bits()),
            |v| Q15::from_bits(v as i16),
        );
        Ok(())
    }
    fn lerp(a: &[Q15], b: &[Q15], t: U1F31, out: &mut [Q15]) -> Result<(), Error> {
        let t = fixed_frac(t)?;
        k::lerp_fixed(
            a,
            b,
            t,
            out,
            |x: Q15| i64::from(x.to_bits()),
            |v| Q15::from_bits(v as i16),
        );
        Ok(())
    }
    fn check_frac(t: U1F31) -> Result<(), Error> {
        fixed_frac(t).map(|_| ())
    }
}

/// As for [`Q15`]: exact i64 sum, one rounding, ≤ ½ LSB, order-independent.
impl Merge for Q31 {
    type Weight = u32;
    type Frac = U1F31;

    fn check(_: &[Q31]) -> Result<(), Error> {
        Ok(())
    }
    fn weighted(models: &[&[Q31]], weights: &[u32], out: &mut [Q31]) -> Result<(), Error> {
        Self::counted(models, weights, out)
    }
    fn counted(models: &[&[Q31]], counts: &[u32], out: &mut [Q31]) -> Result<(), Error> {
        let total = fixed_total(counts)?;
        k::weighted_fixed(
            models,
            counts,
            total,
            out,
            |x: Q31| i64::from(x.to_bits()),
            |v| Q31::from_bits(v as i32),
        );
        Ok(())
    }
    fn lerp(a: &[Q31], b: &[Q31], t: U1F31, out: &mut [Q31]) -> Result<(), Error> {
        let t = fixed_frac(t)?;
        k::lerp_fixed(
            a,
            b,
            t,
            out,
            |x: Q31| i64::from(x.to_bits()),
            |v| Q31::from_bits(v as i32),
        );
        Ok(())
    }
    fn check_frac(t: U1F31) -> Result<(), Error> {
        fixed_frac(t).map(|_| ())
    }
}

fn fixed_total(counts: &[u32]) -> Result<NonZeroU64, Error> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    if total > u64::from(u32::MAX) {
        return Err(Error::WeightOverflow);
    }
    NonZeroU64::new(total).ok_or(Error::ZeroTotalWeight)
}

fn fixed_frac(t: U1F31) -> Result<i64, Error> {
    let t = i64::from(t.to_bits());
    if t > 1 << 31 {
        return Err(Error::InvalidCoefficient);
    }
    Ok(t)
}

fn check_models<T: Merge>(models: &[&[T]], n_weights: usize, out_len: usize) -> Result<(), Error> {
    if models.is_empty() {
        return Err(Error::Empty);
    }
    check_len(models.len(), n_weights)?;
    for m in models {
        check_len(out_len, m.len())?;
    }
    for m in models {
        T::check(m)?;
    }
    Ok(())
}

/// `out = Σ_k w_k·models[k] / Σ_k w_k`, element by element.
///
/// With f32 models the weights are `f32` (non-negative; uniform weights
/// give a model soup); with fixed-point models they are `u32` counts and
/// the result is exact up to one final rounding.
///
/// # Errors
/// [`Error::Empty`] for no models; [`Error::LengthMismatch`] if the
/// number of weights differs from the number of models, or a model's length
/// from `out`'s; [`Error::NonFinite`] / [`Error::OutOfRange`] for bad f32
/// values; [`Error::InvalidWeight`] for a negative or non-finite weight;
/// [`Error::ZeroTotalWeight`]; [`Error::WeightOverflow`]. `out` is
/// untouched on error.
///
/// ```
/// use polyak::{merge, Q15};
/// // a uniform soup of three fine-tuned models
/// let (a, b, c) = ([0.25f32, 1.0], [0.5f32, 1.0], [0.75f32, 4.0]);
/// let mut soup = [0.0f32; 2];
/// merge::weighted_average(&[&a, &b, &c], &[1.0, 1.0, 1.0], &mut soup)?;
/// assert_eq!(soup, [0.5, 2.0]);
/// // fixed point: exact sum, one rounding
/// let (p, q) = ([Q15::from_bits(1)], [Q15::from_bits(2)]);
/// let mut out = [Q15::ZERO];
/// merge::weighted_average(&[&p, &q], &[1, 2], &mut out)?; // 5/3 → 2
/// assert_eq!(out[0].to_bits(), 2);
/// # Ok::<(), polyak::Error>(())
/// ```
pub fn weighted_average<T: Merge>(
    models: &[&[T]],
    weights: &[T::Weight],
    out: &mut [T],
) -> Result<(), Error> {
    check_models(models, weights.len(), out.len())?;
    T::weighted(models, weights, out)
}

/// Federated averaging: the average of client models weighted by their
/// example counts. Exact (one rounding) in fixed point; for f32 the counts
/// are converted to f32 (exact up to 2²⁴) and the f32 bound applies.
///
/// # Errors
/// As [`weighted_average`].
///
/// ```
/// use polyak::{merge, Q31, Error};
/// let (a, b) = ([Q31::from_num(0.5)], [Q31::from_num(-0.25)]);
/// let mut out = [Q31::ZERO];
/// merge::fedavg(&[&a, &b], &[30, 10], &mut out)?;
/// assert_eq!(out, [Q31::from_num(0.3125)]);
/// assert_eq!(merge::fedavg(&[&a, &b], &[0, 0], &mut out), Err(Error::ZeroTotalWeight));
/// # Ok::<(), Error>(())
/// ```
pub fn fedavg<T: Merge>(models: &[&[T]], counts: &[u32], out: &mut [T]) -> Result<(), Error> {
    check_models(models, counts.len(), out.len())?;
    T::counted(models, counts, out)
}

/// Linear interpolation `out = a + t·(b − a)`, `t ∈ [0, 1]`: `t = 0` gives
/// `a` and `t = 1` gives `b` exactly (WiSE-FT: `a` the zero-shot model, `b`
/// the fine-tuned one).
///
/// **Bound**: f32, with `t' = min(t, 1 − t)`:
/// `|out − ref| ≤ ε·(½·|ref| + t'·|b − a|)·(1 + ε) + η`; fixed point
/// (`t` a [`U1F31`] ≤ 1): ≤ ½ LSB, nearest-even.
///
/// # Errors
/// [`Error::LengthMismatch`]; [`Error::InvalidCoefficient`] if `t` is NaN
/// or outside `[0, 1]`; [`Error::NonFinite`] / [`Error::OutOfRange`] for bad
/// f32 values. `out` is untouched on error.
///
/// ```
/// use polyak::{merge, Q15, U1F31};
/// let (zero_shot, fine_tuned) = ([Q15::from_num(-0.5)], [Q15::from_num(0.5)]);
/// let mut out = [Q15::ZERO];
/// merge::interpolate(&zero_shot, &fine_tuned, U1F31::from_num(0.75), &mut out)?;
/// assert_eq!(out, [Q15::from_num(0.25)]);
/// merge::interpolate(&zero_shot, &fine_tuned, U1F31::ONE, &mut out)?;
/// assert_eq!(out, fine_tuned);
/// # Ok::<(), polyak::Error>(())
/// ```
pub fn interpolate<T: Merge>(a: &[T], b: &[T], t: T::Frac, out: &mut [T]) -> Result<(), Error> {
    check_len(out.len(), a.len())?;
    check_len(out.len(), b.len())?;
    T::check(a)?;
    T::check(b)?;
    T::lerp(a, b, t, out)
}

/// Per-segment interpolation: segment `s` of `layout` gets
/// `a + t_s·(b − a)` (WiSE-FT with a coefficient per layer; layer-wise
/// averaging that leaves some layers at the base, `t_s = 0`, to limit the
/// alignment tax). Each segment is [`interpolate`] with its own `t`, with
/// the same bound.
///
/// # Errors
/// [`Error::LengthMismatch`] if the models, `out` and `layout` differ in
/// length or `ts` has another number of segments; otherwise as
/// [`interpolate`], checked for every segment before anything is written.
///
/// ```
/// use polyak::{layout::Layout, merge};
/// let mut layout: Layout<2> = Layout::new();
/// layout.push("encoder", 2)?;
/// layout.push("head", 1)?;
/// let (base, tuned) = ([0.0f32; 3], [1.0f32; 3]);
/// let mut out = [0.0f32; 3];
/// merge::interpolate_segments(&base, &tuned, &layout, &[0.25, 1.0], &mut out)?;
/// assert_eq!(out, [0.25, 0.25, 1.0]);
/// # Ok::<(), polyak::Error>(())
/// ```
pub fn interpolate_segments<T: Merge, const C: usize>(
    a: &[T],
    b: &[T],
    layout: &crate::layout::Layout<C>,
    ts: &[T::Frac],
    out: &mut [T],
) -> Result<(), Error> {
    check_len(out.len(), a.len())?;
    check_len(out.len(), b.len())?;
    check_len(out.len(), layout.len())?;
    check_len(layout.segments().len(), ts.len())?;
    T::check(a)?;
    T::check(b)?;
    for &t in ts {
        T::check_frac(t)?;
    }
    for (seg, &t) in layout.segments().iter().zip(ts) {
        let r = seg.range();
        if let (Some(a), Some(b), Some(o)) = (a.get(r.clone()), b.get(r.clone()), out.get_mut(r)) {
            T::lerp(a, b, t, o)?;
        }
    }
    Ok(())
}

/// Below this `1 − |cos θ|`, [`slerp`] interpolates linearly.
#[cfg(feature = "libm")]
pub const SLERP_LINEAR_BELOW: f64 = 1.0e-6;

/// Spherical linear interpolation of two f32 models, as model-merging
/// tools apply it: with `θ` the angle between the flattened models,
/// `out = sin((1 − t)·θ)/sin θ · a + sin(t·θ)/sin θ · b`. When the models
/// are nearly colinear (`1 − |cos θ| <` [`SLERP_LINEAR_BELOW`], including
/// opposite directions, where the arc is not unique) or one is zero, it
/// falls back to [`interpolate`]. Norms, the dot product and the
/// coefficients are computed in f64; each output element is rounded once.
/// Returns whether the spherical form was used.
///
/// **Bound** (spherical form), per element, against the formula evaluated
/// exactly: `|out − ref| ≤ ε/2·|ref| + 2⁻⁴⁹·n·(|a_i| + |b_i|)/sin²θ`, the
/// second term the f64 sums' rounding carried through the angle
/// (`n` parameters).
///
/// # Errors
/// As [`interpolate`].
///
/// ```
/// use polyak::merge;
/// let (a, b) = ([1.0f32, 0.0], [0.0f32, 1.0]);
/// let mut out = [0.0f32; 2];
/// assert!(merge::slerp(&a, &b, 0.5, &mut out)?);
/// let h = core::f32::consts::FRAC_1_SQRT_2;
/// assert!((out[0] - h).abs() < 1e-6 && (out[1] - h).abs() < 1e-6);
/// # Ok::<(), polyak::Error>(())
/// ```
#[cfg(feature = "libm")]
pub fn slerp(a: &[f32], b: &[f32], t: f32, out: &mut [f32]) -> Result<bool, Error> {
    check_len(out.len(), a.len())?;
    check_len(out.len(), b.len())?;
    check_f32(a)?;
    check_f32(b)?;
    f32::check_frac(t)?;
    let (mut aa, mut bb, mut ab) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        aa += x * x;
        bb += y * y;
        ab += x * y;
    }
    let denom = libm::sqrt(aa) * libm::sqrt(bb);
    let cos = if denom > 0.0 {
        (ab / denom).clamp(-1.0, 1.0)
    } else {
        1.0
    };
    if 1.0 - cos.abs() < SLERP_LINEAR_BELOW {
        k::lerp_f32(a, b, t, out);
        return Ok(false);
    }
    let theta = libm::acos(cos);
    let s = libm::sin(theta);
    let t = f64::from(t);
    let (wa, wb) = (libm::sin((1.0 - t) * theta) / s, libm::sin(t * theta) / s);
    for (o, (&x, &y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = (wa * f64::from(x) + wb * f64::from(y)) as f32;
    }
    Ok(true)
}
