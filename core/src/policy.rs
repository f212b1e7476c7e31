//! What an update does with bad f32 input: NaN, ±Inf, or a magnitude
//! beyond [`F32_LIMIT`](crate::F32_LIMIT). Fixed-point input is always
//! valid, so the policy changes nothing there.
//!
//! The policy is a type parameter of the averagers ([`Reject`] by default),
//! so an averager that rejects carries no code for skipping:
//!
//! ```
//! use polyak::{Ema, Skip};
//! let mut ema = Ema::new([0.0f32; 3], 0.5)?.with_policy::<Skip>();
//! ema.update(&[2.0, 2.0, 2.0])?;
//! ema.update(&[4.0, f32::NAN, 4.0])?; // the NaN element keeps its average
//! assert_eq!(ema.shadow(), &[3.0, 2.0, 3.0]);
//! assert_eq!(ema.skipped(), 1);
//! # Ok::<(), polyak::Error>(())
//! ```

use crate::format::check_f32;
use crate::{Error, Q15, Q31};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Reject {}
    impl Sealed for super::Skip {}
    impl Sealed for f32 {}
    impl Sealed for crate::Q15 {}
    impl Sealed for crate::Q31 {}
}

/// A parameter type: `f32` (checked: finite, within
/// [`F32_LIMIT`](crate::F32_LIMIT)), [`Q15`] or [`Q31`] (always valid).
/// Sealed.
pub trait Input: Copy + sealed::Sealed {
    /// Checks values; the first bad one is reported by index.
    ///
    /// # Errors
    /// [`Error::NonFinite`] or [`Error::OutOfRange`].
    fn check(xs: &[Self]) -> Result<(), Error>;
}

impl Input for f32 {
    fn check(xs: &[f32]) -> Result<(), Error> {
        check_f32(xs)
    }
}

impl Input for Q15 {
    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
}

impl Input for Q31 {
    fn check(_: &[Q31]) -> Result<(), Error> {
        Ok(())
    }
}

/// Parameters that passed the input check. One step's parameters usually
/// go to several averagers (an EMA, an SWA, a bank); checking them once
/// and handing each the `Checked` slice (`update_checked`) saves a pass
/// over the data per averager. On the host the f32 check costs about as
/// much as half an in-cache EMA update.
///
/// ```
/// use polyak::{Checked, CompF32, Ema, Swa};
/// let w = [0.5f32, -1.0];
/// let checked = Checked::new(&w)?; // one pass over the parameters
/// let mut ema = Ema::new([0.0f32; 2], 0.9)?;
/// let mut swa = Swa::new([CompF32::ZERO; 2]);
/// ema.update_checked(checked)?;
/// swa.update_checked(checked)?;
/// assert!(Checked::new(&[f32::NAN]).is_err());
/// # Ok::<(), polyak::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a, T>(&'a [T]);

impl<'a, T: Input> Checked<'a, T> {
    /// Checks `xs`.
    ///
    /// # Errors
    /// As [`Input::check`].
    pub fn new(xs: &'a [T]) -> Result<Self, Error> {
        T::check(xs)?;
        Ok(Self(xs))
    }

    /// The values.
    pub fn as_slice(&self) -> &'a [T] {
        self.0
    }
}

/// An input policy: [`Reject`] or [`Skip`].
pub trait InputPolicy: Copy + Default + core::fmt::Debug + sealed::Sealed {
    /// Whether bad elements are skipped (rather than the update refused).
    const SKIP: bool;
}

/// Refuse the whole update with [`Error::NonFinite`]
/// or [`Error::OutOfRange`]; the state is
/// unchanged. The default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reject;

/// Update every valid element; treat each bad one as if its input equalled
/// its current average, so that average does not move (before the element
/// has an average: as if the input were 0). Each skipped element is
/// counted (`skipped()` on the averager).
///
/// **Bound**: the imputed input is the element's average rounded to f32,
/// so each skip of an element can add up to `ε·M` to its error bound
/// (`2·ε·M` for an SWA mean).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Skip;

impl InputPolicy for Reject {
    const SKIP: bool = false;
}

impl InputPolicy for Skip {
    const SKIP: bool = true;
}

/// The screening of a step's input (or a chunk of it) under policy `P`:
/// under [`Skip`], how many values are bad; under [`Reject`], `check`
/// them (and none is bad).
#[inline(always)]
pub(crate) fn screen<P: InputPolicy, T>(
    xs: &[T],
    valid: impl Fn(&T) -> bool,
    check: impl FnOnce(&[T]) -> Result<(), Error>,
) -> Result<u64, Error> {
    if P::SKIP {
        Ok(xs.iter().filter(|x| !valid(x)).count() as u64)
    } else {
        check(xs).map(|()| 0)
    }
}
