//! Host-side companion of [`polyak`]: plain f64 reference implementations
//! of every kernel, error metrics (ulps for f32, LSBs for fixed point),
//! proptest strategies for inputs that stress the kernels, and the naive
//! forms the kernels improve on (kept so tests can show the difference).
//!
//! The references are written the textbook way — the recurrence or the
//! direct sum in f64 — and never call into `polyak`.

pub mod aligned;
pub mod bounds;
pub mod dd;
pub mod flash;
pub mod fuzz;
pub mod metrics;
pub mod naive;
pub mod posthoc;
pub mod reference;
pub mod strategies;
