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

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Reject {}
    impl Sealed for super::Skip {}
}

/// An input policy: [`Reject`] or [`Skip`].
pub trait InputPolicy: Copy + Default + core::fmt::Debug + sealed::Sealed {
    /// Whether bad elements are skipped (rather than the update refused).
    const SKIP: bool;
}

/// Refuse the whole update with [`Error::NonFinite`](crate::Error::NonFinite)
/// or [`Error::OutOfRange`](crate::Error::OutOfRange); the state is
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
