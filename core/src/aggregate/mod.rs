//! Streaming aggregators: models arrive one at a time (over a radio, from
//! flash pages), each is folded into O(N) state for N parameters, and the
//! result is read at the end. No aggregator holds more than one incoming
//! model, except the robust statistics, which need every value of an
//! element at once.
//!
//! | method | type | f32 | Q15 / Q31 |
//! |---|---|---|---|
//! | weighted average, FedAvg (example counts), uniform soup; per-segment exclusion (layer-wise averaging) | [`WeightedAverage`] | compensated sums | exact, any order |
//! | mask-preserving average (sparse soups) | [`MaskedAverage`] | ✓ | ✓ |
//! | inverse-distance weights (IDA) | `WeightedAverage::fold_inverse_distance` (feature `libm`) | ✓ | – |
//! | variance-corrected average | `VarianceCorrected` (feature `libm`) | ✓ | – |
//! | per-segment interpolation (WiSE-FT, layer-wise) | [`merge::interpolate_segments`](crate::merge::interpolate_segments) | ✓ | ✓ |
//! | spherical interpolation | `merge::slerp` (feature `libm`) | ✓ | – |
//! | Fisher-weighted and precision-weighted merging | [`Fisher`] | ✓ | – |
//! | task arithmetic, DARE | [`TaskArithmetic`] | ✓ | exact, any order |
//! | TIES | [`Ties`] | ✓ | exact, any order |
//! | coordinate-wise median, trimmed mean | [`median`], [`trimmed_mean`] | ✓ | ✓ |
//! | participation-adaptive FedAvg weights (FedAU) | [`Participation`] | ✓ | ✓ |
//! | dual averaging of delayed gradients | [`DualAveraging`] | compensated | exact, any order |
//!
//! Every aggregator checks its input before changing anything: a bad model
//! or weight returns a typed error and leaves the state as it was.

mod dual;
mod fedau;
mod fisher;
mod robust;
mod task;
mod weighted;

pub use dual::{DualAcc, DualAveraging};
pub use fedau::Participation;
pub use fisher::{Fisher, FisherAcc, FisherInput, FisherPlan};
pub use robust::{MAX_MODELS, Robust, median, trimmed_mean};
pub use task::{Drop, TaskAcc, TaskArithmetic, TaskPlan, Ties, TiesAcc, TiesElem, TiesPlan};
#[cfg(feature = "libm")]
pub use weighted::{DistancePlan, InverseDistance, SpreadPlan, VarianceCorrected};
pub use weighted::{MaskedAverage, WeightedAcc, WeightedAverage, WeightedPlan};

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::CompF32 {}
    impl Sealed for crate::I49F15 {}
    impl Sealed for crate::I33F31 {}
    impl Sealed for f32 {}
    impl Sealed for crate::Q15 {}
    impl Sealed for crate::Q31 {}
    impl Sealed for super::fisher::FisherAcc {}
    impl Sealed for super::task::TiesAcc<crate::CompF32> {}
    impl Sealed for super::task::TiesAcc<i64> {}
    impl Sealed for i64 {}
    impl Sealed for i128 {}
}
