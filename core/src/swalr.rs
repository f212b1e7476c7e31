//! When to take SWA snapshots, and what learning rate to train with
//! meanwhile (what PyTorch's `SWALR` does next to `AveragedModel`).
//!
//! An [`SwaSchedule`] is a small `Copy` value the training loop asks, at
//! each step `t` (1-based), [`lr`](SwaSchedule::lr) — the rate to use —
//! and [`snapshot`](SwaSchedule::snapshot) — whether to fold the weights
//! into the average after the step.
//!
//! Before `start` the rate is the training rate `lr_train` and nothing is
//! averaged. From `start` on:
//!
//! - [`Rate::Anneal`]: with `s = t − start` and `a = min(1, s/A)` (`a = 1`
//!   at once if the anneal length `A` is 0), the rate is
//!   `lr_avg·w + lr_train·(1 − w)` with `w = a` ([`Anneal::Linear`]) or
//!   `w = (1 − cos(π·a))/2` (`Anneal::Cosine`, feature `libm`). A
//!   snapshot is taken every `every` steps from `start`.
//! - [`Rate::Cyclic`] (Izmailov et al. 2018): in each cycle of `c` steps
//!   the rate falls linearly from `high` to `low`, `τ = (s mod c + 1)/c`,
//!   `lr = (1 − τ)·high + τ·low`; a snapshot is taken at the end of each
//!   cycle, where the rate is lowest.
//!
//! **Bound** (`tests/swalr.rs`): against the f64 formula,
//! `|lr − ref| ≤ 2·ε·max(|lr_train|, |lr_avg|)` for linear anneals and
//! cyclic rates and `4·ε·max(…)` for cosine anneals (`ε = 2⁻²³`); the
//! ends of an anneal are exact.
//!
//! ```
//! use polyak::swalr::{Anneal, Rate, SwaSchedule};
//! // SGD at 0.1; from step 1000 anneal over 200 steps to 0.02, snapshot
//! // every 50 steps
//! let s = SwaSchedule {
//!     start: 1000,
//!     every: 50,
//!     lr_train: 0.1,
//!     rate: Rate::Anneal { lr_avg: 0.02, steps: 200, shape: Anneal::Linear },
//! };
//! s.validate()?;
//! assert_eq!(s.lr(999), 0.1);
//! assert!((s.lr(1100) - 0.06).abs() < 1e-7);
//! assert_eq!(s.lr(1200), 0.02);
//! assert!(s.snapshot(1050) && !s.snapshot(1051) && !s.snapshot(950));
//! # Ok::<(), polyak::Error>(())
//! ```

use crate::Error;

/// The shape of an anneal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Anneal {
    /// Straight from one rate to the other.
    Linear,
    /// Half a cosine period (`SWALR`'s default `anneal_strategy="cos"`).
    #[cfg(feature = "libm")]
    Cosine,
}

/// The learning rate from `start` on.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Rate {
    /// From the training rate to `lr_avg` over `steps` steps, then
    /// constant.
    Anneal {
        /// The averaging-phase rate.
        lr_avg: f32,
        /// Anneal length (0: switch at once).
        steps: u32,
        /// Its shape.
        shape: Anneal,
    },
    /// Cyclical: from `high` down to `low` in every cycle of `cycle` steps.
    Cyclic {
        /// Rate at the start of a cycle.
        high: f32,
        /// Rate at its end.
        low: f32,
        /// Steps per cycle (≥ 1).
        cycle: u32,
    },
}

/// When to snapshot and at what rate to train.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SwaSchedule {
    /// First step of the averaging phase (1-based).
    pub start: u64,
    /// Steps between snapshots with [`Rate::Anneal`] (≥ 1; ignored by
    /// [`Rate::Cyclic`], which snapshots once per cycle).
    pub every: u32,
    /// The rate before `start`.
    pub lr_train: f32,
    /// The rate from `start` on.
    pub rate: Rate,
}

impl SwaSchedule {
    /// Checks the schedule.
    ///
    /// # Errors
    /// [`Error::InvalidCoefficient`] for a negative or non-finite rate, a
    /// zero `every` or cycle length, or `start = 0`.
    pub fn validate(&self) -> Result<(), Error> {
        let rate_ok = |v: f32| v.is_finite() && v >= 0.0;
        let ok = self.start >= 1
            && rate_ok(self.lr_train)
            && match self.rate {
                Rate::Anneal { lr_avg, .. } => rate_ok(lr_avg) && self.every >= 1,
                Rate::Cyclic { high, low, cycle } => rate_ok(high) && rate_ok(low) && cycle >= 1,
            };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidCoefficient)
        }
    }

    /// The learning rate for step `t` (1-based).
    pub fn lr(&self, t: u64) -> f32 {
        if t < self.start {
            return self.lr_train;
        }
        let s = t - self.start;
        match self.rate {
            Rate::Anneal {
                lr_avg,
                steps,
                shape,
            } => {
                if steps == 0 || s >= u64::from(steps) {
                    return lr_avg;
                }
                let a = s as f32 / steps as f32;
                let w = match shape {
                    Anneal::Linear => a,
                    #[cfg(feature = "libm")]
                    Anneal::Cosine => (1.0 - libm::cosf(core::f32::consts::PI * a)) * 0.5,
                };
                lr_avg * w + self.lr_train * (1.0 - w)
            }
            Rate::Cyclic { high, low, cycle } => {
                let c = u64::from(cycle.max(1));
                let pos = s % c + 1;
                if pos == c {
                    return low;
                }
                let tau = pos as f32 / c as f32;
                high * (1.0 - tau) + low * tau
            }
        }
    }

    /// Whether to snapshot the weights after step `t`.
    pub fn snapshot(&self, t: u64) -> bool {
        if t < self.start {
            return false;
        }
        let s = t - self.start;
        match self.rate {
            Rate::Anneal { .. } => s.is_multiple_of(u64::from(self.every.max(1))),
            Rate::Cyclic { cycle, .. } => (s + 1).is_multiple_of(u64::from(cycle.max(1))),
        }
    }

    /// The documented bound on `|lr − ref|`, in units of
    /// `ε·max(|lr_train|, |lr_avg|)` (or of the cyclic rates).
    pub fn lr_rel_error(&self) -> f32 {
        match self.rate {
            #[cfg(feature = "libm")]
            Rate::Anneal {
                shape: Anneal::Cosine,
                ..
            } => 4.0,
            _ => 2.0,
        }
    }
}
