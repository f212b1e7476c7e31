//! Coordinate-wise median and trimmed mean of a few models (robust
//! aggregation against outlying or faulty clients).
//!
//! These are the exception to O(N) state: an element's result needs all
//! `K` values of that element at once, so they work over `K` model
//! buffers the caller holds (whole models, or the same segment of every
//! model, one segment at a time). `K` is at most [`MAX_MODELS`]; each
//! element's values are gathered on the stack.

use core::num::NonZeroU64;

use super::sealed::Sealed;
use crate::ema::check_len;
use crate::format::{CompF32, check_f32};
use crate::kernel::swa::comp_add;
use crate::num::div_round_i64;
use crate::{Error, Q15, Q31};

/// The most models [`median`] and [`trimmed_mean`] take.
pub const MAX_MODELS: usize = 64;

/// Element types of the robust statistics: f32, [`Q15`], [`Q31`]. Sealed.
pub trait Robust: Copy + core::fmt::Debug + Sealed {
    #[doc(hidden)]
    const ZERO: Self;
    #[doc(hidden)]
    fn check(values: &[Self]) -> Result<(), Error>;
    #[doc(hidden)]
    fn less(a: &Self, b: &Self) -> core::cmp::Ordering;
    /// The mean of `xs` (sorted, non-empty).
    #[doc(hidden)]
    fn mean(xs: &[Self]) -> Self;
}

impl Robust for f32 {
    const ZERO: Self = 0.0;
    fn check(values: &[f32]) -> Result<(), Error> {
        check_f32(values)
    }
    fn less(a: &f32, b: &f32) -> core::cmp::Ordering {
        a.total_cmp(b)
    }
    fn mean(xs: &[f32]) -> f32 {
        match xs {
            [a] => *a,
            // halves are exact (above the subnormal range): one rounding
            [a, b] => a * 0.5 + b * 0.5,
            _ => {
                let s = xs.iter().fold(CompF32::ZERO, |s, &x| comp_add(s, x));
                s.value() / xs.len() as f32
            }
        }
    }
}

macro_rules! fixed_robust {
    ($t:ty, $bits:ty) => {
        impl Robust for $t {
            const ZERO: Self = <$t>::ZERO;
            fn check(_: &[$t]) -> Result<(), Error> {
                Ok(())
            }
            fn less(a: &$t, b: &$t) -> core::cmp::Ordering {
                a.cmp(b)
            }
            fn mean(xs: &[$t]) -> $t {
                let s: i64 = xs.iter().map(|x| i64::from(x.to_bits())).sum();
                match NonZeroU64::new(xs.len() as u64) {
                    Some(n) => <$t>::from_bits(div_round_i64(s, n) as $bits),
                    None => <$t>::ZERO,
                }
            }
        }
    };
}

fixed_robust!(Q15, i16);
fixed_robust!(Q31, i32);

/// Sorts a short slice in place (at most [`MAX_MODELS`] values): no
/// allocation, and no panic path whatever the comparison does.
fn insertion_sort<T>(v: &mut [T], less: impl Fn(&T, &T) -> core::cmp::Ordering) {
    for i in 1..v.len() {
        let mut j = i;
        while j > 0 {
            match v.get_mut(j - 1..=j) {
                Some([a, b]) if less(b, a) == core::cmp::Ordering::Less => core::mem::swap(a, b),
                _ => break,
            }
            j -= 1;
        }
    }
}

/// Checks the models and applies `f` to each element's sorted values.
fn per_element<T: Robust>(
    models: &[&[T]],
    out: &mut [T],
    min_models: usize,
    f: impl Fn(&[T]) -> T,
) -> Result<(), Error> {
    if models.len() < min_models.max(1) {
        return Err(Error::Empty);
    }
    if models.len() > MAX_MODELS {
        return Err(Error::CapacityExceeded);
    }
    for m in models {
        check_len(out.len(), m.len())?;
    }
    for m in models {
        T::check(m)?;
    }
    let mut buf = [T::ZERO; MAX_MODELS];
    let vals = buf.get_mut(..models.len()).unwrap_or(&mut []);
    for (i, o) in out.iter_mut().enumerate() {
        for (v, m) in vals.iter_mut().zip(models) {
            *v = m.get(i).copied().unwrap_or(T::ZERO);
        }
        insertion_sort(vals, T::less);
        *o = f(vals);
    }
    Ok(())
}

/// Coordinate-wise median: the middle value of each element, or for an
/// even number of models the mean of the two middle ones.
///
/// **Bound**: exact for an odd `K`; for an even `K`, f32
/// `|out − ref| ≤ ε/2·|ref| + η` and fixed point ≤ ½ LSB (nearest-even).
///
/// # Errors
/// [`Error::Empty`] for no models; [`Error::CapacityExceeded`] for more
/// than [`MAX_MODELS`]; [`Error::LengthMismatch`]; for f32
/// [`Error::NonFinite`] / [`Error::OutOfRange`]. `out` is untouched on
/// error.
///
/// ```
/// use polyak::aggregate::median;
/// let (a, b, c) = ([1.0f32, 9.0], [2.0, -1.0], [100.0, 0.0]); // c is faulty
/// let mut out = [0.0f32; 2];
/// median(&[&a, &b, &c], &mut out)?;
/// assert_eq!(out, [2.0, 0.0]);
/// # Ok::<(), polyak::Error>(())
/// ```
pub fn median<T: Robust>(models: &[&[T]], out: &mut [T]) -> Result<(), Error> {
    per_element(models, out, 1, |v| {
        let k = v.len();
        let hi = v.get(k / 2).copied().unwrap_or(T::ZERO);
        if k % 2 == 1 {
            hi
        } else {
            let lo = v.get(k / 2 - 1).copied().unwrap_or(T::ZERO);
            T::mean(&[lo, hi])
        }
    })
}

/// Coordinate-wise trimmed mean: per element, the `trim` smallest and
/// `trim` largest values are dropped and the rest averaged.
///
/// **Bound**: f32, with `n = K − 2·trim` and `M` the largest kept
/// `|x|`: `|out − ref| ≤ ε·|ref| + n·ε²·M + η`; fixed point ≤ ½ LSB.
///
/// # Errors
/// [`Error::InvalidCoefficient`] unless `2·trim < K`; otherwise as
/// [`median`].
///
/// ```
/// use polyak::aggregate::trimmed_mean;
/// use polyak::Q15;
/// let models = [[Q15::from_num(0.25)], [Q15::from_num(0.5)], [Q15::from_num(0.75)], [Q15::MAX]];
/// let refs: Vec<&[Q15]> = models.iter().map(|m| &m[..]).collect();
/// let mut out = [Q15::ZERO];
/// trimmed_mean(&refs, 1, &mut out)?; // drops 0.25 and MAX
/// assert_eq!(out, [Q15::from_num(0.625)]);
/// # Ok::<(), polyak::Error>(())
/// ```
pub fn trimmed_mean<T: Robust>(models: &[&[T]], trim: usize, out: &mut [T]) -> Result<(), Error> {
    if !models.is_empty() && trim.saturating_mul(2) >= models.len() {
        return Err(Error::InvalidCoefficient);
    }
    per_element(models, out, 1, |v| {
        let kept = v.get(trim..v.len().saturating_sub(trim)).unwrap_or(&[]);
        T::mean(kept)
    })
}
