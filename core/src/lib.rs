//! Streaming weight-averaging kernels for models that learn on the device.
//!
//! A microcontroller (or any `no_std` target) trains a model with SGD and
//! keeps averaged copies of its weights in buffers the caller allocated up
//! front:
//!
//! - [`Ema`]: exponential moving average, plain or compensated f32, or
//!   fixed point with a wide shadow; Switch EMA via [`Ema::switch_into`].
//! - [`Swa`]: stochastic weight averaging, an exact (fixed point) or
//!   compensated (f32) sum divided by the count when read.
//! - [`merge`]: weighted averages of whole models (FedAvg, soups) and
//!   interpolation (WiSE-FT); [`aggregate`]: the same and more, streamed
//!   one model at a time.
//! - [`chunk`]: any step of any of them in chunks (pages), in any order;
//!   [`paged`]: an EMA whose shadow lives in NOR flash; [`segment`]:
//!   per-segment policies (weights averaged, counters summed, statistics
//!   copied).
//!
//! Every operation states its rounding, its overflow behaviour and its error
//! bound against the exact (f64) result, and the host test suite asserts
//! each bound against plain f64 reference implementations.
//!
//! # Element formats
//!
//! | parameters | EMA shadow | SWA accumulator | merge weights |
//! |---|---|---|---|
//! | `f32` | `f32` (plain) or [`CompF32`] (compensated) | [`CompF32`] | `f32` |
//! | [`Q15`] (`I1F15`) | [`I1F31`] (Q31) | [`I49F15`] (exact i64) | `u32` counts |
//! | [`Q31`] (`I1F31`) | [`I2F62`] (Q62) | [`I33F31`] (exact i64) | `u32` counts |
//!
//! # Storage
//!
//! Averagers are generic over the storage of their shadow: `[A; N]`,
//! `&mut [A]`, `heapless::Vec<A, N>`, or anything `AsRef<[A]> + AsMut<[A]>`.
//! Nothing allocates.
//!
//! ```
//! use polyak::{Ema, Swa, CompF32, I1F31, I49F15, Q15};
//!
//! // A static buffer on a microcontroller, a borrowed slice here.
//! let mut shadow = [I1F31::ZERO; 4];
//! let mut ema = Ema::new(&mut shadow[..], 0.999)?;
//! let mut swa = Swa::new([I49F15::ZERO; 4]);
//!
//! let params = [Q15::from_num(0.25); 4];
//! ema.update(&params)?;
//! swa.update(&params)?;
//!
//! let mut out = [Q15::ZERO; 4];
//! ema.read_into(&mut out)?;
//! assert_eq!(out, params);
//! # Ok::<(), polyak::Error>(())
//! ```
//!
//! # Errors and bad input
//!
//! Every fallible call checks all of its input before writing anything: on
//! error the averager (or output buffer) is bit-for-bit unchanged. f32 input
//! must be finite and within [`F32_LIMIT`]; a NaN never reaches a shadow.
//! Nothing panics: no indexing, no unchecked division, no overflowing
//! arithmetic on any input.
//!
//! # Features
//!
//! - `defmt`: `defmt::Format` for [`Error`] and the configuration types.
//! - `libm` (default): the warmup, half-life and power-function
//!   [`schedule`]s and `posthoc` recording, with α_t from libm's f32
//!   functions. About 2.3 KiB of flash on a Cortex-M4F; firmware that
//!   averages with a constant β can turn it off.
#![no_std]
// `clamp` asserts `min <= max`, a panic path the release firmware's link
// check would refuse; the core writes `max(lo).min(hi)` instead.
#![allow(clippy::manual_clamp)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod aggregate;
pub mod bank;
pub mod chunk;
pub mod codec;
pub mod ema;
mod error;
mod exact;
mod format;
mod kernel;
/// Compares the Cortex-M4F assembly kernels with their safe twins (used by
/// the firmware example's benchmark mode).
#[cfg(polyak_m4f)]
#[doc(hidden)]
pub use kernel::arm::selftest as arm_selftest;
pub mod layout;
pub mod merge;
pub mod moments;
pub mod naswa;
mod num;
pub mod paged;
pub mod policy;
#[cfg(feature = "libm")]
pub mod posthoc;
pub mod schedule;
pub mod segment;
pub mod store;
pub mod swa;
pub mod swalr;
pub mod window;

pub use bank::EmaBank;
pub use ema::{Ema, EmaShadow, Init, Rounding};
pub use error::Error;
pub use format::{
    CompF32, F32_LIMIT, I1F15, I1F31, I2F62, I16F16, I33F31, I49F15, Q15, Q15Ef, Q31, U1F31,
};
pub use policy::{Checked, Input, InputPolicy, Reject, Skip};
pub use schedule::Schedule;
pub use swa::{Swa, SwaAccumulator};

/// The project README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
