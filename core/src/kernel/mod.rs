//! The hot loops, one module per operation family.
//!
//! Every function here takes plain slices, assumes the caller already checked
//! lengths and values (the loops `zip`, so a length mismatch can only shorten
//! the work, never index out of bounds), and contains nothing but arithmetic.
//! Bookkeeping (validation, counters, modes) lives in the averager types.

#[cfg(polyak_m4f)]
pub(crate) mod arm;
pub(crate) mod ema;
pub(crate) mod merge;
pub(crate) mod swa;
