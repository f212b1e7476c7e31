//! Exponential moving average of a parameter buffer.
//!
//! [`Ema`] keeps `s ← s + α·(x − s)` per element, with `α = 1 − β`, in a
//! shadow buffer the caller owns. The element type of the shadow picks the
//! arithmetic:
//!
//! | shadow `A` | parameters | bytes | arithmetic | error vs the f64 EMA (copy-first; see each impl) |
//! |---|---|---|---|---|
//! | `f32` | `f32` | 4 | plain: `s += α·(x − s)` | stalls at `ε·M/(2α)`: fine for β ≤ 0.99 |
//! | [`CompF32`] | `f32` | 8 | compensated pair `hi + lo` | `ε·(2.51·M + (ε·M + m₀)/(2α))` for any β |
//! | [`I1F31`] (Q31) | [`Q15`] | 4 | wide shadow | `½ + 2⁻¹⁷/α` LSB (nearest), `½ + 2⁻¹⁶/α` (stochastic) |
//! | [`Q15Ef`] | [`Q15`] | 4 | Q15 value + error-feedback residual | `½ + 2⁻¹⁷/α` LSB |
//! | [`I1F15`] (Q15) | [`Q15`] | 2 | narrow | `½/α` LSB (nearest: stalls); `< 1/α`, unbiased (stochastic) |
//! | [`I2F62`] (Q62) | [`Q31`] | 8 | wide shadow | `½ + 2⁻³²/α` LSB (nearest), `½ + 2⁻³¹/α` (stochastic) |
//!
//! Here `M` is the largest `|x|` an element has seen, `ε = 2⁻²³`
//! (`f32::EPSILON`), `m₀ = 2⁻¹²⁶` (`f32::MIN_POSITIVE`, the underflow
//! threshold) and α the coefficient actually stored ([`Ema::alpha`]). The
//! reference is the f64 recurrence with the same α and the same inputs
//! (for fixed point: the quantised inputs and the quantised α).
//!
//! # Schedules
//!
//! β may follow a [`Schedule`]: warmup, half-life, the power function of
//! EDM2, a shift, with `update_after_step` and `update_every`. Every
//! schedule here has a non-increasing α_t, and for those the bounds above
//! hold at every step with α the current α_t. Against the f64 formula for
//! α_t, add `c·ε·D` (f32) or `(2⁻³²/α_t + c·ε)·D` (fixed point, α_t
//! quantised to Q31), where `c` is the schedule's
//! [`alpha_rel_error`](crate::schedule::Decay::alpha_rel_error) and `D ≤ 2M`
//! the largest `|x − s|` seen.
//!
//! # Why not a plain f32 EMA at high β
//!
//! `s + α·(x − s)` rounds to `s` once `α·|x − s|` is below half an ulp of
//! `s`: the plain form stops moving a distance of about `ulp(s)/(2α)` short
//! of its input. At β = 0.99 that is 50 ulps (6·10⁻⁶ relative), usually
//! below the noise of SGD; at β = 0.9999 it is 5000 ulps (3·10⁻⁴ short of a
//! step to 1.0), and at β = 0.99999 ten times that. The compensated form
//! carries the rounding error in a second f32 and stays within a few ulps at
//! any β, for twice the memory and about 20 flops per element.
//!
//! The same happens, worse, in a Q15 shadow: `α·(x − s)` rounds to zero
//! once `|x − s| < 1/(2α)` LSB (500 LSB at β = 0.999). The cures are a
//! wider shadow ([`I1F31`]), a residual that feeds the rounding error back
//! ([`Q15Ef`]), or [`Rounding::Stochastic`], which keeps the narrow shadow
//! unbiased at the price of noise.
//!
//! # Example
//!
//! ```
//! use polyak::{CompF32, Ema};
//!
//! let mut ema = Ema::new([CompF32::ZERO; 3], 0.9)?;
//! ema.update(&[1.0, 2.0, 3.0])?; // the first update copies
//! ema.update(&[2.0, 2.0, 2.0])?;
//! let mut avg = [0.0f32; 3];
//! ema.read_into(&mut avg)?;
//! assert_eq!(avg, [1.1, 2.0, 2.9]);
//! # Ok::<(), polyak::Error>(())
//! ```

use core::cell::Cell;
use core::marker::PhantomData;
use core::num::{NonZeroU64, NonZeroU128};

use crate::codec::{ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist};
use crate::format::{CompF32, I1F15, I1F31, I2F62, Q15Ef, U1F31, check_f32, valid_f32};
use crate::kernel::ema as k;
use crate::num::{
    Nearest, Stochastic, div_round_i64, div_round_i128, round_shift_i64, round_shift_i128,
    xorshift32_jump,
};
use crate::policy::{Checked, Input, InputPolicy, Reject, screen};
use crate::schedule::{Action, Schedule};
use crate::{Error, Q15, Q31};

/// How the shadow starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Init {
    /// The first update copies the parameters into the shadow (timm,
    /// ema-pytorch, `torch.optim.swa_utils`). The default.
    #[default]
    CopyFirst,
    /// The shadow starts at zero and every update is an EMA step; reads
    /// divide by `1 − Π(1 − α_t)` to remove the bias towards zero (optax,
    /// Adam's moment estimates).
    ZeroDebiased,
}

/// How a fixed-point shadow rounds each increment `α·(x − s)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Rounding {
    /// To nearest, ties to even. The default.
    #[default]
    NearestEven,
    /// Up with probability equal to the fraction, from a xorshift32
    /// generator kept in the averager's state (seeded; the same seed gives
    /// the same bits on every target). Unbiased: increments below one LSB
    /// still move the shadow on average.
    Stochastic {
        /// The generator's seed (0 is replaced by a fixed non-zero value).
        seed: u32,
    },
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::CompF32 {}
    impl Sealed for super::I1F31 {}
    impl Sealed for super::I1F15 {}
    impl Sealed for super::Q15Ef {}
    impl Sealed for super::I2F62 {}
}

/// A shadow element type: it fixes the parameter format and the arithmetic
/// of an [`Ema`]. Implemented for `f32`, [`CompF32`], [`I1F31`], [`Q15Ef`],
/// [`I1F15`] and [`I2F62`]; sealed.
pub trait EmaShadow: Copy + core::fmt::Debug + sealed::Sealed + Element {
    /// The parameter element type the shadow averages.
    type Param: Copy + crate::policy::Input;
    /// The stored coefficient α = 1 − β: `f32`, or a [`U1F31`] fraction for
    /// fixed point.
    type Coef: Copy + PartialEq + core::fmt::Debug;
    /// The scalar that tracks the debiasing weight.
    #[doc(hidden)]
    type Weight: Copy + core::fmt::Debug + Element;
    /// The zero shadow value.
    const ZERO: Self;
    /// A zero parameter value.
    #[doc(hidden)]
    const PARAM_ZERO: Self::Param;
    /// Whether the format is fixed point (and so takes a [`Rounding`]).
    const FIXED: bool;

    /// The coefficient for α ∈ (0, 1] (fixed point: α·2³¹ rounded to
    /// nearest-even, at least 1).
    fn coef_from_alpha(alpha: f32) -> Self::Coef;
    /// The coefficient's exact value.
    fn coef_to_f64(coef: Self::Coef) -> f64;
    /// Checks a coefficient: α in `(0, 1]`.
    fn check_coef(coef: Self::Coef) -> Result<(), Error>;
    /// The coefficient's bits (f32 bits, or the raw Q31 value).
    #[doc(hidden)]
    fn coef_bits(coef: Self::Coef) -> u32;
    /// A coefficient from its bits.
    #[doc(hidden)]
    fn coef_from_bits(bits: u32) -> Self::Coef;
    /// Checks the parameter values (f32: finite and within [`crate::F32_LIMIT`]).
    fn check(params: &[Self::Param]) -> Result<(), Error>;
    /// Whether one value would pass [`check`](Self::check).
    #[doc(hidden)]
    fn valid(_x: &Self::Param) -> bool {
        true
    }
    /// The element's current average as a parameter value (debiased by
    /// `w` when `debiased`), for [`Skip`](crate::Skip).
    #[doc(hidden)]
    fn current(s: &Self, w: Self::Weight, debiased: bool) -> Self::Param {
        let mut out = [Self::PARAM_ZERO];
        let src = core::slice::from_ref(s);
        if debiased {
            Self::store_debiased(src, w, &mut out);
        } else {
            Self::store(src, &mut out);
        }
        out[0]
    }
    #[doc(hidden)]
    fn load(shadow: &mut [Self], params: &[Self::Param]);
    #[doc(hidden)]
    fn step(
        shadow: &mut [Self],
        params: &[Self::Param],
        alpha: Self::Coef,
        rounding: Rounding,
        rng: &mut u32,
    );
    /// One EMA step of every member of a bank (`K` shadows per
    /// parameter, member `k` with coefficient `alphas[k]`): the same bits
    /// as [`step`](Self::step) member by member, element by element.
    #[doc(hidden)]
    fn step_rows<const K: usize>(
        rows: &mut [[Self; K]],
        params: &[Self::Param],
        alphas: &[Self::Coef; K],
        rounding: Rounding,
        rng: &mut u32,
    ) {
        for (row, x) in rows.iter_mut().zip(params) {
            for (s, &a) in row.iter_mut().zip(alphas) {
                Self::step(
                    core::slice::from_mut(s),
                    core::slice::from_ref(x),
                    a,
                    rounding,
                    rng,
                );
            }
        }
    }
    /// Writes the shadow out; returns how many elements had to saturate.
    #[doc(hidden)]
    fn store(shadow: &[Self], out: &mut [Self::Param]) -> u32;
    #[doc(hidden)]
    fn weight_zero() -> Self::Weight;
    /// Whether a saved debiasing weight could have been reached (decoding
    /// refuses one that could not: it would overflow the next step).
    #[doc(hidden)]
    fn weight_valid(w: &Self::Weight) -> bool;
    #[doc(hidden)]
    fn weight_one() -> Self::Weight;
    #[doc(hidden)]
    fn weight_step(w: Self::Weight, alpha: Self::Coef) -> Self::Weight;
    /// Writes `shadow / weight`; returns how many elements saturated.
    #[doc(hidden)]
    fn store_debiased(shadow: &[Self], w: Self::Weight, out: &mut [Self::Param]) -> u32;
}

fn check_f32_alpha(alpha: f32) -> Result<(), Error> {
    if alpha > 0.0 && alpha <= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidDecay)
    }
}

/// round(α·2³¹) to nearest-even from the bits of α ∈ (0, 1], at least 1.
fn q31_coef(alpha: f32) -> U1F31 {
    let raw = if alpha.is_nan() || alpha <= 0.0 {
        1
    } else if alpha >= 1.0 {
        1u32 << 31
    } else {
        let bits = alpha.to_bits();
        let exp = (bits >> 23) & 0xff;
        // α = m·2^(exp − 150), so α·2^31 = m·2^(exp − 119); α < 1 means
        // exp ≤ 126, a left shift of at most 7 (m < 2^24: the result stays
        // below 2^31). Below 2^-32 (exp < 95, subnormals included) α·2^31
        // rounds to 0 and is raised to 1.
        let m = (bits & 0x7f_ffff) | 0x80_0000;
        let v = if exp >= 119 {
            m << (exp - 119)
        } else if exp >= 119 - 24 {
            let sh = 119 - exp;
            let q = m >> sh;
            let r = m & ((1 << sh) - 1);
            let half = 1 << (sh - 1);
            q + u32::from((r > half) | ((r == half) & (q & 1 != 0)))
        } else {
            0
        };
        v.clamp(1, 1 << 31)
    };
    U1F31::from_bits(raw)
}

fn check_q31_coef(alpha: U1F31) -> Result<(), Error> {
    if alpha.to_bits() == 0 || alpha.to_bits() > 1 << 31 {
        Err(Error::InvalidDecay)
    } else {
        Ok(())
    }
}

fn q31_coef_to_f64(coef: U1F31) -> f64 {
    f64::from(coef.to_bits()) / 2_147_483_648.0
}

/// If α = 2⁻ᵏ exactly (k ≥ 1), k.
fn shift_of(alpha: U1F31) -> Option<u32> {
    let a = alpha.to_bits();
    (a.is_power_of_two() && a < 1 << 31).then(|| 31 - a.trailing_zeros())
}

fn seeded(rng: &mut u32) -> &mut u32 {
    if *rng == 0 {
        *rng = 0x9e37_79b9;
    }
    rng
}

/// Q31-unit debiasing weight p = Π(1 − α_t) (2³¹ = 1) after one more step.
fn q31_weight_step(p: i64, alpha: U1F31) -> i64 {
    let beta = (1i64 << 31) - i64::from(alpha.to_bits());
    round_shift_i64::<31>(p * beta)
}

fn count_clamp(v: i64, lo: i64, hi: i64, saturated: &mut u32) -> i64 {
    let c = v.max(lo).min(hi);
    *saturated += u32::from(c != v);
    c
}

/// Reads `num / (2³¹ − p)` into Q15 with nearest-even rounding; `num` is
/// the shadow scaled so that the quotient is in Q15 units.
fn q15_debiased<A: Copy>(shadow: &[A], p: i64, out: &mut [Q15], num: impl Fn(A) -> i64) -> u32 {
    let Some(w) = NonZeroU64::new(((1i64 << 31) - p).max(0) as u64) else {
        return 0;
    };
    let mut saturated = 0;
    for (o, &s) in out.iter_mut().zip(shadow) {
        let q = div_round_i64(num(s), w);
        let q = count_clamp(q, i16::MIN.into(), i16::MAX.into(), &mut saturated);
        *o = I1F15::from_bits(q as i16);
    }
    saturated
}

/// Plain f32 shadow: one f32 per element, `s ← fl(s + fl(α·fl(x − s)))`.
///
/// **Rounding**: each operation rounds to nearest-even. **Overflow**: none,
/// inputs are limited to [`crate::F32_LIMIT`].
///
/// **Bound** (copy-first): after any number of updates, per element,
/// `|s − ref| ≤ ε·(0.51·(M + m₀)/α + 2.01·M)`.
/// The `M/(2α)` term is the stall radius: the shadow stops once
/// `α·|x − s| < ulp(s)/2`.
///
/// **Bound** (zero-debiased, read `fl(s/w)` after `t` updates, `T = min(t, 1/α)`):
/// `|read − ref| ≤ ε·((T + 5)·M + m₀·(1 + 1/α)/2) / (1 − ε·(T + 5)/2)`
/// whenever the denominator is positive. (The `m₀` term covers underflow:
/// products below 2⁻¹²⁶ and a subnormal quotient.)
impl EmaShadow for f32 {
    type Param = f32;
    type Coef = f32;
    type Weight = f32;
    const ZERO: Self = 0.0;
    const FIXED: bool = false;
    const PARAM_ZERO: f32 = 0.0;

    fn coef_from_alpha(alpha: f32) -> f32 {
        alpha
    }
    fn coef_to_f64(coef: f32) -> f64 {
        f64::from(coef)
    }
    fn check_coef(alpha: f32) -> Result<(), Error> {
        check_f32_alpha(alpha)
    }
    fn coef_bits(coef: f32) -> u32 {
        coef.to_bits()
    }
    fn coef_from_bits(bits: u32) -> f32 {
        f32::from_bits(bits)
    }
    fn check(params: &[f32]) -> Result<(), Error> {
        check_f32(params)
    }
    fn valid(x: &f32) -> bool {
        valid_f32(*x)
    }
    fn load(shadow: &mut [f32], params: &[f32]) {
        k::load(shadow, params, |x| x);
    }
    fn step(shadow: &mut [f32], params: &[f32], alpha: f32, _: Rounding, _: &mut u32) {
        k::plain_f32(shadow, params, alpha);
    }
    fn step_rows<const K: usize>(
        rows: &mut [[f32; K]],
        params: &[f32],
        alphas: &[f32; K],
        _: Rounding,
        _: &mut u32,
    ) {
        #[cfg(polyak_m4f)]
        let (rows, params) = {
            let done = match *alphas.as_slice() {
                [a] => crate::kernel::arm::ema_f32(rows.as_flattened_mut(), params, a),
                [a0, a1, a2] => {
                    crate::kernel::arm::bank3_f32(rows.as_flattened_mut(), params, [a0, a1, a2])
                }
                _ => 0,
            };
            (
                rows.get_mut(done..).unwrap_or(&mut []),
                params.get(done..).unwrap_or(&[]),
            )
        };
        for (row, &x) in rows.iter_mut().zip(params) {
            for (s, &a) in row.iter_mut().zip(alphas) {
                *s += a * (x - *s);
            }
        }
    }
    fn store(shadow: &[f32], out: &mut [f32]) -> u32 {
        k::store(shadow, out, |s| s);
        0
    }
    fn weight_zero() -> f32 {
        0.0
    }
    fn weight_valid(w: &f32) -> bool {
        (0.0..=1.0).contains(w)
    }
    fn weight_one() -> f32 {
        1.0
    }
    fn weight_step(w: f32, alpha: f32) -> f32 {
        w + alpha * (1.0 - w)
    }
    fn store_debiased(shadow: &[f32], w: f32, out: &mut [f32]) -> u32 {
        k::store(shadow, out, |s| s / w);
        0
    }
}

/// Compensated f32 shadow: a [`CompF32`] pair per element.
///
/// Each step forms `d = x − (hi + lo)` with an error-free difference, adds
/// `fl(α·d)` to the pair with an error-free sum and renormalises, so only
/// the rounding of `d` and of `α·d` (each relative to `α·|x − s|`, not to
/// `|s|`) reaches the result, and small updates are never lost.
///
/// **Rounding**: nearest-even throughout; the read is `fl(hi + lo)`.
/// **Overflow**: none, inputs are limited to [`crate::F32_LIMIT`].
///
/// **Bound** (copy-first): after any number of updates, per element,
/// `|read − ref| ≤ ε·(2.51·M + (ε·M + m₀)/(2α))`.
/// For β ≤ 0.99999 that is within 2.6·ε·M, about 2.6 ulps of `M`.
///
/// **Bound** (zero-debiased, after `t` updates, `T = min(t, 1/α)`):
/// `|read − ref| ≤ ε·((6 + ε·T)·M + m₀·(1 + 1/α)/2)`.
impl EmaShadow for CompF32 {
    type Param = f32;
    type Coef = f32;
    type Weight = CompF32;
    const ZERO: Self = CompF32::ZERO;
    const FIXED: bool = false;
    const PARAM_ZERO: f32 = 0.0;

    fn coef_from_alpha(alpha: f32) -> f32 {
        alpha
    }
    fn coef_to_f64(coef: f32) -> f64 {
        f64::from(coef)
    }
    fn check_coef(alpha: f32) -> Result<(), Error> {
        check_f32_alpha(alpha)
    }
    fn coef_bits(coef: f32) -> u32 {
        coef.to_bits()
    }
    fn coef_from_bits(bits: u32) -> f32 {
        f32::from_bits(bits)
    }
    fn check(params: &[f32]) -> Result<(), Error> {
        check_f32(params)
    }
    fn valid(x: &f32) -> bool {
        valid_f32(*x)
    }
    fn load(shadow: &mut [CompF32], params: &[f32]) {
        k::load(shadow, params, CompF32::new);
    }
    fn step_rows<const K: usize>(
        rows: &mut [[CompF32; K]],
        params: &[f32],
        alphas: &[f32; K],
        _: Rounding,
        _: &mut u32,
    ) {
        for (row, &x) in rows.iter_mut().zip(params) {
            for (s, &a) in row.iter_mut().zip(alphas) {
                *s = k::comp_step(*s, x, a);
            }
        }
    }
    #[inline(always)]
    fn step(shadow: &mut [CompF32], params: &[f32], alpha: f32, _: Rounding, _: &mut u32) {
        k::comp_f32(shadow, params, alpha);
    }
    fn store(shadow: &[CompF32], out: &mut [f32]) -> u32 {
        k::store(shadow, out, CompF32::value);
        0
    }
    fn weight_zero() -> CompF32 {
        CompF32::ZERO
    }
    fn weight_valid(w: &CompF32) -> bool {
        (0.0..=1.0).contains(&w.to_f64())
    }
    fn weight_one() -> CompF32 {
        CompF32::new(1.0)
    }
    #[inline(always)]
    fn weight_step(w: CompF32, alpha: f32) -> CompF32 {
        k::comp_step(w, 1.0, alpha)
    }
    fn store_debiased(shadow: &[CompF32], w: CompF32, out: &mut [f32]) -> u32 {
        let w = w.value();
        k::store(shadow, out, |s| s.value() / w);
        0
    }
}

/// Q15 parameters with a Q31 ([`I1F31`]) shadow: 16 more fractional bits,
/// so increments far below 1 LSB of Q15 still accumulate.
///
/// The step is `s ← s + round(α·(x·2¹⁶ − s))` in Q31 units, with α a Q31
/// coefficient ([`U1F31`]) and the product exact in i64 (one 32×32→64
/// multiply-accumulate on a Cortex-M4, so α = 2⁻ᵏ needs no shift path).
///
/// **Rounding**: the increment to nearest-even (or stochastically) in Q31;
/// the read to nearest-even in Q15. **Overflow**: none — every step lands
/// between the old shadow and the input.
///
/// **Bound** (copy-first, nearest-even): `|read − ref| ≤ ½ + 2⁻¹⁷/α` LSB of
/// Q15 (the shadow itself within `2⁻¹⁷/α` LSB): ≤ 0.51 LSB at β = 0.999,
/// ≤ 0.58 LSB at β = 0.9999. Stochastic: `½ + 2⁻¹⁶/α` LSB, unbiased.
///
/// **Bound** (zero-debiased, nearest-even): `|read − ref| ≤ ½ + 2⁻¹⁶/(α − 2⁻³²)`
/// LSB (the biased shadow within `2⁻¹⁷/α` LSB of the f64 biased sum).
impl EmaShadow for I1F31 {
    type Param = Q15;
    type Coef = U1F31;
    type Weight = i64;
    const ZERO: Self = I1F31::ZERO;
    const FIXED: bool = true;
    const PARAM_ZERO: Q15 = Q15::ZERO;

    fn coef_from_alpha(alpha: f32) -> U1F31 {
        q31_coef(alpha)
    }
    fn coef_to_f64(coef: U1F31) -> f64 {
        q31_coef_to_f64(coef)
    }
    fn check_coef(alpha: U1F31) -> Result<(), Error> {
        check_q31_coef(alpha)
    }
    fn coef_bits(coef: U1F31) -> u32 {
        coef.to_bits()
    }
    fn coef_from_bits(bits: u32) -> U1F31 {
        U1F31::from_bits(bits)
    }
    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
    fn load(shadow: &mut [I1F31], params: &[Q15]) {
        k::load(shadow, params, |x: I1F15| {
            I1F31::from_bits(i32::from(x.to_bits()) << 16)
        });
    }
    fn step_rows<const K: usize>(
        rows: &mut [[I1F31; K]],
        params: &[Q15],
        alphas: &[U1F31; K],
        rounding: Rounding,
        rng: &mut u32,
    ) {
        let a = alphas.map(|a| i64::from(a.to_bits()));
        match rounding {
            Rounding::NearestEven => {
                for (row, x) in rows.iter_mut().zip(params) {
                    for (s, &a) in row.iter_mut().zip(&a) {
                        *s = I1F31::from_bits(k::q15_wide_step(
                            s.to_bits(),
                            x.to_bits(),
                            a,
                            &mut Nearest,
                        ));
                    }
                }
            }
            Rounding::Stochastic { .. } => {
                let r = &mut Stochastic(seeded(rng));
                for (row, x) in rows.iter_mut().zip(params) {
                    for (s, &a) in row.iter_mut().zip(&a) {
                        *s = I1F31::from_bits(k::q15_wide_step(s.to_bits(), x.to_bits(), a, r));
                    }
                }
            }
        }
    }
    fn step(shadow: &mut [I1F31], params: &[Q15], alpha: U1F31, rounding: Rounding, rng: &mut u32) {
        let a = i64::from(alpha.to_bits());
        match rounding {
            Rounding::NearestEven => k::q15_wide_nearest(shadow, params, a),
            Rounding::Stochastic { .. } => {
                k::q15_wide(shadow, params, a, &mut Stochastic(seeded(rng)))
            }
        }
    }
    fn store(shadow: &[I1F31], out: &mut [Q15]) -> u32 {
        let mut saturated = 0;
        k::store(shadow, out, |s: I1F31| {
            let v = k::q31_units_to_q15(s.to_bits());
            let v = count_clamp(v, i16::MIN.into(), i16::MAX.into(), &mut saturated);
            I1F15::from_bits(v as i16)
        });
        saturated
    }
    fn weight_zero() -> i64 {
        1 << 31
    }
    fn weight_valid(p: &i64) -> bool {
        (0..=1 << 31).contains(p)
    }
    fn weight_one() -> i64 {
        0
    }
    fn weight_step(p: i64, alpha: U1F31) -> i64 {
        q31_weight_step(p, alpha)
    }
    fn store_debiased(shadow: &[I1F31], p: i64, out: &mut [Q15]) -> u32 {
        q15_debiased(shadow, p, out, |s: I1F31| i64::from(s.to_bits()) << 15)
    }
}

/// Q15 parameters with an error-feedback shadow ([`Q15Ef`]): a Q15 value
/// that is always a usable model, plus the residual its rounding dropped.
/// The arithmetic is that of the Q31 wide shadow on `value·2¹⁶ + residual`;
/// the read is `value` itself.
///
/// **Rounding**: the increment as for [`I1F31`]; `value` is the shadow
/// rounded to nearest (ties up). **Overflow**: none.
///
/// **Bound** (copy-first, nearest-even): `|value − ref| ≤ ½ + 2⁻¹⁷/α` LSB;
/// stochastic `½ + 2⁻¹⁶/α`. Zero-debiased as [`I1F31`].
impl EmaShadow for Q15Ef {
    type Param = Q15;
    type Coef = U1F31;
    type Weight = i64;
    const ZERO: Self = Q15Ef::ZERO;
    const FIXED: bool = true;
    const PARAM_ZERO: Q15 = Q15::ZERO;

    fn coef_from_alpha(alpha: f32) -> U1F31 {
        q31_coef(alpha)
    }
    fn coef_to_f64(coef: U1F31) -> f64 {
        q31_coef_to_f64(coef)
    }
    fn check_coef(alpha: U1F31) -> Result<(), Error> {
        check_q31_coef(alpha)
    }
    fn coef_bits(coef: U1F31) -> u32 {
        coef.to_bits()
    }
    fn coef_from_bits(bits: u32) -> U1F31 {
        U1F31::from_bits(bits)
    }
    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
    fn load(shadow: &mut [Q15Ef], params: &[Q15]) {
        k::load(shadow, params, |x: I1F15| {
            Q15Ef::from_wide(i32::from(x.to_bits()) << 16)
        });
    }
    fn step(shadow: &mut [Q15Ef], params: &[Q15], alpha: U1F31, rounding: Rounding, rng: &mut u32) {
        let a = i64::from(alpha.to_bits());
        match rounding {
            Rounding::NearestEven => k::q15_ef(shadow, params, a, &mut Nearest),
            Rounding::Stochastic { .. } => {
                k::q15_ef(shadow, params, a, &mut Stochastic(seeded(rng)))
            }
        }
    }
    fn store(shadow: &[Q15Ef], out: &mut [Q15]) -> u32 {
        k::store(shadow, out, Q15Ef::value);
        0
    }
    fn weight_zero() -> i64 {
        1 << 31
    }
    fn weight_valid(p: &i64) -> bool {
        (0..=1 << 31).contains(p)
    }
    fn weight_one() -> i64 {
        0
    }
    fn weight_step(p: i64, alpha: U1F31) -> i64 {
        q31_weight_step(p, alpha)
    }
    fn store_debiased(shadow: &[Q15Ef], p: i64, out: &mut [Q15]) -> u32 {
        q15_debiased(shadow, p, out, |s: Q15Ef| i64::from(s.wide()) << 15)
    }
}

/// Q15 parameters with a narrow Q15 ([`I1F15`]) shadow: half the memory of
/// the wide one, for when that matters more than accuracy.
///
/// **Rounding** [`Rounding::NearestEven`]: the increment rounds to zero once
/// `α·|x − s| < ½` LSB, so the shadow stalls up to `½/α` LSB from the
/// input (500 LSB at β = 0.999). [`Rounding::Stochastic`]: the shadow moves
/// by ±1 LSB with the right probability, so it is unbiased (the expected
/// error is 0 for the exact α) but noisy: its standard deviation is at most
/// `1/(2·sqrt(α·(2 − α)))` LSB (35 LSB at β = 0.9999). **Overflow**: none.
///
/// **Bound** (copy-first): nearest-even `|s − ref| ≤ ½/α` LSB; stochastic
/// `|s − ref| < 1/α` LSB always. The read is `s` itself.
impl EmaShadow for I1F15 {
    type Param = Q15;
    type Coef = U1F31;
    type Weight = i64;
    const ZERO: Self = I1F15::ZERO;
    const FIXED: bool = true;
    const PARAM_ZERO: Q15 = Q15::ZERO;

    fn coef_from_alpha(alpha: f32) -> U1F31 {
        q31_coef(alpha)
    }
    fn coef_to_f64(coef: U1F31) -> f64 {
        q31_coef_to_f64(coef)
    }
    fn check_coef(alpha: U1F31) -> Result<(), Error> {
        check_q31_coef(alpha)
    }
    fn coef_bits(coef: U1F31) -> u32 {
        coef.to_bits()
    }
    fn coef_from_bits(bits: u32) -> U1F31 {
        U1F31::from_bits(bits)
    }
    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
    fn load(shadow: &mut [I1F15], params: &[Q15]) {
        k::load(shadow, params, |x| x);
    }
    fn step(shadow: &mut [I1F15], params: &[Q15], alpha: U1F31, rounding: Rounding, rng: &mut u32) {
        let a = i64::from(alpha.to_bits());
        match rounding {
            Rounding::NearestEven => k::q15_narrow(shadow, params, a, &mut Nearest),
            Rounding::Stochastic { .. } => {
                k::q15_narrow(shadow, params, a, &mut Stochastic(seeded(rng)))
            }
        }
    }
    fn store(shadow: &[I1F15], out: &mut [Q15]) -> u32 {
        k::store(shadow, out, |s| s);
        0
    }
    fn weight_zero() -> i64 {
        1 << 31
    }
    fn weight_valid(p: &i64) -> bool {
        (0..=1 << 31).contains(p)
    }
    fn weight_one() -> i64 {
        0
    }
    fn weight_step(p: i64, alpha: U1F31) -> i64 {
        q31_weight_step(p, alpha)
    }
    fn store_debiased(shadow: &[I1F15], p: i64, out: &mut [Q15]) -> u32 {
        q15_debiased(shadow, p, out, |s: I1F15| i64::from(s.to_bits()) << 31)
    }
}

/// Q31 parameters with a Q62 ([`I2F62`]) shadow: 31 more fractional bits.
///
/// The step is `s ← s + round(α·(x·2³¹ − s))` in Q62 units, the product
/// exact in i128 (a shift when α = 2⁻ᵏ with nearest-even rounding).
///
/// **Rounding**: the increment to nearest-even (or stochastically) in Q62;
/// the read to nearest-even in Q31. **Overflow**: none (as for Q15).
///
/// **Bound** (copy-first, nearest-even): `|read − ref| ≤ ½ + 2⁻³²/α` LSB of
/// Q31 (the shadow itself within `2⁻³²/α` LSB); stochastic `½ + 2⁻³¹/α`.
///
/// **Bound** (zero-debiased, nearest-even): `|read − ref| ≤ ½ + 2⁻³¹/(α − 2⁻⁶³)`
/// LSB; the weight is tracked in Q62 and the quotient divided exactly.
impl EmaShadow for I2F62 {
    type Param = Q31;
    type Coef = U1F31;
    type Weight = i64;
    const ZERO: Self = I2F62::ZERO;
    const FIXED: bool = true;
    const PARAM_ZERO: Q31 = Q31::ZERO;

    fn coef_from_alpha(alpha: f32) -> U1F31 {
        q31_coef(alpha)
    }
    fn coef_to_f64(coef: U1F31) -> f64 {
        q31_coef_to_f64(coef)
    }
    fn check_coef(alpha: U1F31) -> Result<(), Error> {
        check_q31_coef(alpha)
    }
    fn coef_bits(coef: U1F31) -> u32 {
        coef.to_bits()
    }
    fn coef_from_bits(bits: u32) -> U1F31 {
        U1F31::from_bits(bits)
    }
    fn check(_: &[Q31]) -> Result<(), Error> {
        Ok(())
    }
    fn load(shadow: &mut [I2F62], params: &[Q31]) {
        k::load(shadow, params, |x: I1F31| {
            I2F62::from_bits(i64::from(x.to_bits()) << 31)
        });
    }
    fn step(shadow: &mut [I2F62], params: &[Q31], alpha: U1F31, rounding: Rounding, rng: &mut u32) {
        let a = i64::from(alpha.to_bits());
        match (rounding, shift_of(alpha)) {
            (Rounding::NearestEven, Some(sh)) => k::q31_wide_shift(shadow, params, sh),
            (Rounding::NearestEven, None) => k::q31_wide(shadow, params, a, &mut Nearest),
            (Rounding::Stochastic { .. }, _) => {
                k::q31_wide(shadow, params, a, &mut Stochastic(seeded(rng)))
            }
        }
    }
    fn store(shadow: &[I2F62], out: &mut [Q31]) -> u32 {
        let mut saturated = 0;
        k::store(shadow, out, |s: I2F62| {
            let v = round_shift_i64::<31>(s.to_bits());
            let v = count_clamp(v, i32::MIN.into(), i32::MAX.into(), &mut saturated);
            I1F31::from_bits(v as i32)
        });
        saturated
    }
    // The weight is p = Π(1 − α_t) in Q62 (2⁶² = 1).
    fn weight_zero() -> i64 {
        1 << 62
    }
    fn weight_valid(p: &i64) -> bool {
        (0..=1 << 62).contains(p)
    }
    fn weight_one() -> i64 {
        0
    }
    fn weight_step(p: i64, alpha: U1F31) -> i64 {
        let beta = (1i128 << 31) - i128::from(alpha.to_bits());
        round_shift_i128::<31>(i128::from(p) * beta) as i64
    }
    fn store_debiased(shadow: &[I2F62], p: i64, out: &mut [Q31]) -> u32 {
        let Some(w) = NonZeroU128::new(((1i64 << 62) - p).max(0) as u128) else {
            return 0;
        };
        let mut saturated = 0;
        k::store(shadow, out, |s: I2F62| {
            let q = div_round_i128(i128::from(s.to_bits()) << 31, w);
            let q = q.max(i128::from(i64::MIN)).min(i128::from(i64::MAX)) as i64;
            let q = count_clamp(q, i32::MIN.into(), i32::MAX.into(), &mut saturated);
            I1F31::from_bits(q as i32)
        });
        saturated
    }
}

/// How α is obtained at each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Coefs<C> {
    /// The same coefficient every step (constant β, half-life, shift, or
    /// an explicit α).
    Constant(C),
    /// Computed from the schedule at every step.
    Scheduled,
}

/// One step of an [`Ema`], fixed at its start (see [`crate::chunk`]).
#[derive(Debug, Clone, Copy)]
pub struct EmaPlan<C> {
    calls: u64,
    action: Action,
    step: Option<C>,
    rng0: u32,
    pub(crate) rng_end: Option<u32>,
    bad: u64,
}

/// An exponential moving average of a parameter buffer, in a shadow the
/// caller owns.
///
/// `A` is the shadow element type (see the [module docs](self) for the
/// choices and their error bounds); `S` is any storage that derefs to a
/// slice of it: `[A; N]`, `&mut [A]`, `heapless::Vec<A, N>`. The number of
/// parameters is the length of the storage.
///
/// Configuration (the [`Schedule`], the [`Init`], the [`Rounding`]) is set
/// at construction; the state is the shadow, the counters, the debiasing
/// weight and the rounding generator. Every method that takes input checks
/// all of it first; on error nothing has changed.
#[derive(Debug, Clone)]
pub struct Ema<A: EmaShadow, S, P: InputPolicy = Reject> {
    shadow: S,
    schedule: Schedule,
    coefs: Coefs<A::Coef>,
    alpha: A::Coef,
    init: Init,
    rounding: Rounding,
    rng: u32,
    calls: u64,
    t: u64,
    filled: bool,
    weight: A::Weight,
    saturated: Cell<u32>,
    skipped: u64,
    _elem: PhantomData<fn() -> (A, P)>,
}

impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>> Ema<A, S> {
    /// An EMA with constant decay `β ∈ [0, 1)` whose first update copies the
    /// parameters.
    ///
    /// α = 1 − β is formed in f32 (exact for β ≥ 0.5) and, for fixed point,
    /// rounded to the nearest multiple of 2⁻³¹.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] if β is NaN or outside `[0, 1)`.
    pub fn new(shadow: S, beta: f32) -> Result<Self, Error> {
        Self::with_schedule(shadow, Schedule::constant(beta))
    }

    /// An EMA whose β follows `schedule`; the first update copies.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] if the schedule does not
    /// [validate](Schedule::validate).
    ///
    /// ```
    /// use polyak::{Ema, I1F31, Q15, schedule::Schedule};
    /// // EDM2's power-function EMA with σ_rel = 0.10 on a Q15 model
    /// let mut ema = Ema::with_schedule([I1F31::ZERO; 8], Schedule::power_sigma_rel(0.10)?)?;
    /// ema.update(&[Q15::from_num(0.5); 8])?;
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn with_schedule(shadow: S, schedule: Schedule) -> Result<Self, Error> {
        Self::build(shadow, schedule, None, Init::CopyFirst)
    }

    /// An EMA with an explicit, constant coefficient α = 1 − β in the
    /// shadow's format (for fixed point, a [`U1F31`] fraction), whose first
    /// update copies the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] unless α is in `(0, 1]`.
    ///
    /// ```
    /// use polyak::{Ema, I1F31, Q15, U1F31};
    /// // α = 2⁻¹⁰ exactly: β = 1 − 2⁻¹⁰ ≈ 0.99902, and the update is a shift.
    /// let alpha = U1F31::from_bits(1 << 21);
    /// let mut ema = Ema::with_alpha([I1F31::ZERO; 4], alpha)?;
    /// ema.update(&[Q15::from_num(0.5); 4])?;
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn with_alpha(shadow: S, alpha: A::Coef) -> Result<Self, Error> {
        Self::build(
            shadow,
            Schedule::constant(0.0),
            Some(alpha),
            Init::CopyFirst,
        )
    }

    /// An EMA with constant decay β whose shadow starts at zero and is
    /// divided by `1 − βᵗ` when read ([`Init::ZeroDebiased`]). Zero-fills
    /// the storage.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// ```
    /// use polyak::Ema;
    /// let mut ema = Ema::new_debiased([0.0f32; 2], 0.5)?;
    /// ema.update(&[4.0, -2.0])?; // shadow 2.0, -1.0; weight 0.5
    /// let mut out = [0.0; 2];
    /// ema.read_into(&mut out)?;
    /// assert_eq!(out, [4.0, -2.0]);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn new_debiased(shadow: S, beta: f32) -> Result<Self, Error> {
        Self::with_schedule_debiased(shadow, Schedule::constant(beta))
    }

    /// As [`new_debiased`](Self::new_debiased) with a schedule.
    ///
    /// # Errors
    /// As [`with_schedule`](Self::with_schedule).
    pub fn with_schedule_debiased(shadow: S, schedule: Schedule) -> Result<Self, Error> {
        Self::build(shadow, schedule, None, Init::ZeroDebiased)
    }

    /// As [`new_debiased`](Self::new_debiased) with an explicit α.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] unless α is in `(0, 1]`.
    pub fn with_alpha_debiased(shadow: S, alpha: A::Coef) -> Result<Self, Error> {
        Self::build(
            shadow,
            Schedule::constant(0.0),
            Some(alpha),
            Init::ZeroDebiased,
        )
    }

    fn build(
        mut shadow: S,
        schedule: Schedule,
        alpha: Option<A::Coef>,
        init: Init,
    ) -> Result<Self, Error> {
        schedule.validate()?;
        let (coefs, first) = match alpha {
            Some(a) => {
                A::check_coef(a)?;
                (Coefs::Constant(a), a)
            }
            None => Coefs::of::<A>(&schedule),
        };
        if init == Init::ZeroDebiased {
            shadow.as_mut().fill(A::ZERO);
        }
        Ok(Self {
            shadow,
            schedule,
            coefs,
            alpha: first,
            init,
            rounding: Rounding::NearestEven,
            rng: 0,
            calls: 0,
            t: 0,
            filled: false,
            weight: A::weight_zero(),
            saturated: Cell::new(0),
            skipped: 0,
            _elem: PhantomData,
        })
    }
}

impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> Ema<A, S, P> {
    /// Sets how fixed-point increments are rounded.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for [`Rounding::Stochastic`] on an f32
    /// shadow (f32 arithmetic rounds to nearest).
    ///
    /// ```
    /// use polyak::{Ema, I1F15, Q15, ema::Rounding};
    /// // a narrow Q15 shadow kept unbiased by stochastic rounding
    /// let mut ema = Ema::new([I1F15::ZERO; 4], 0.999)?
    ///     .with_rounding(Rounding::Stochastic { seed: 7 })?;
    /// ema.update(&[Q15::ZERO; 4])?;
    /// ema.update(&[Q15::from_num(0.001); 4])?; // α·33 LSB = 0.033 LSB: moves with p = 0.033
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn with_rounding(mut self, rounding: Rounding) -> Result<Self, Error> {
        match rounding {
            Rounding::Stochastic { seed } if A::FIXED => self.rng = seed,
            Rounding::Stochastic { .. } => return Err(Error::Unsupported),
            Rounding::NearestEven => {}
        }
        self.rounding = rounding;
        Ok(self)
    }

    /// Changes the input policy (the default is [`Reject`]); see
    /// [`policy`](crate::policy).
    ///
    /// ```
    /// use polyak::{Ema, Skip};
    /// let mut ema = Ema::new([0.0f32; 2], 0.5)?.with_policy::<Skip>();
    /// ema.update(&[1.0, f32::INFINITY])?;
    /// assert_eq!(ema.skipped(), 1);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn with_policy<Q: InputPolicy>(self) -> Ema<A, S, Q> {
        Ema {
            shadow: self.shadow,
            schedule: self.schedule,
            coefs: self.coefs,
            alpha: self.alpha,
            init: self.init,
            rounding: self.rounding,
            rng: self.rng,
            calls: self.calls,
            t: self.t,
            filled: self.filled,
            weight: self.weight,
            saturated: self.saturated,
            skipped: self.skipped,
            _elem: PhantomData,
        }
    }

    /// Elements skipped under [`Skip`](crate::Skip) since construction or
    /// reset (always 0 under [`Reject`]).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.shadow.as_ref().len()
    }

    /// Whether the buffer has no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The coefficient α of the latest EMA step (before the first one:
    /// of the first one).
    pub fn alpha(&self) -> A::Coef {
        self.alpha
    }

    /// The schedule (for an explicit α: a constant placeholder).
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// How the shadow started.
    pub fn init(&self) -> Init {
        self.init
    }

    /// How fixed-point increments are rounded.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Calls to [`update`](Self::update) since construction or the last
    /// [`reset`](Self::reset) (copies and skipped calls included).
    ///
    /// ```
    /// let mut ema = polyak::Ema::new([0.0f32; 1], 0.9)?;
    /// ema.update(&[1.0])?;
    /// assert_eq!(ema.steps(), 1);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn steps(&self) -> u64 {
        self.calls
    }

    /// EMA steps taken since averaging started (`t` of the schedule; the
    /// copy-first update counts as the first).
    pub fn ema_steps(&self) -> u64 {
        self.t
    }

    /// How many element reads had to saturate to the format's range since
    /// construction or reset (only debiased fixed-point reads can: rounding
    /// can carry a quotient one LSB past ±1).
    pub fn saturated(&self) -> u32 {
        self.saturated.get()
    }

    /// The raw shadow (in copy-first mode, the average itself; in
    /// zero-debiased mode, the biased sum).
    pub fn shadow(&self) -> &[A] {
        self.shadow.as_ref()
    }

    /// Gives the storage back.
    pub fn into_inner(self) -> S {
        self.shadow
    }

    /// Folds one step's parameters into the average, as the schedule says:
    /// copy (before `update_after_step`, and on the first call in copy-first
    /// mode), skip (between `update_every` updates), or an EMA step.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `params` is not as long as the shadow;
    /// for f32, [`Error::NonFinite`] or [`Error::OutOfRange`] for the first
    /// bad element; [`Error::CountOverflow`] after 2⁶⁴ − 1 calls. The
    /// state is unchanged on error.
    ///
    /// ```
    /// use polyak::{Ema, Error};
    /// let mut ema = Ema::new([0.0f32; 2], 0.5)?;
    /// ema.update(&[2.0, 4.0])?;                      // copies
    /// ema.update(&[4.0, 0.0])?;                      // s += 0.5·(x − s)
    /// assert_eq!(ema.shadow(), &[3.0, 2.0]);
    /// // a NaN is refused and the average is untouched
    /// assert_eq!(ema.update(&[1.0, f32::NAN]), Err(Error::NonFinite { index: 1 }));
    /// assert_eq!(ema.shadow(), &[3.0, 2.0]);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn update(&mut self, params: &[A::Param]) -> Result<(), Error> {
        check_len(self.len(), params.len())?;
        let bad = screen::<P, _>(params, A::valid, A::check)?;
        self.apply(params, bad)
    }

    /// [`update`](Self::update) with parameters checked already (once for
    /// every averager of the step).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::CountOverflow`]. The state is
    /// unchanged on error.
    pub fn update_checked(&mut self, params: Checked<'_, A::Param>) -> Result<(), Error>
    where
        A::Param: Input,
    {
        let params = params.as_slice();
        check_len(self.len(), params.len())?;
        self.apply(params, 0)
    }

    /// One step over checked parameters, `bad` of them to skip.
    fn apply(&mut self, params: &[A::Param], bad: u64) -> Result<(), Error> {
        let mut plan = self.plan()?;
        plan.bad = bad;
        // one piece from 0 to the end leaves the generator where the step
        // ends (so the whole-buffer path needs no jump)
        plan.rng_end = Some(self.piece_in(&mut plan, 0, 0, params));
        self.commit(plan)
    }

    /// What a step does, fixed before any element is touched.
    #[inline(always)]
    pub(crate) fn plan(&self) -> Result<EmaPlan<A::Coef>, Error> {
        let calls = self.calls.checked_add(1).ok_or(Error::CountOverflow)?;
        let first = self.init == Init::CopyFirst && self.calls == 0;
        let action = if first {
            Action::Copy
        } else {
            self.schedule.action(calls, self.t)
        };
        let step = match action {
            Action::Step { alpha, .. } => Some(self.coefs.at::<A>(alpha)),
            _ => None,
        };
        let mut rng = self.rng;
        Ok(EmaPlan {
            calls,
            action,
            step,
            // (stochastic rounding exists only for fixed point)
            rng0: if A::FIXED { *seeded(&mut rng) } else { rng },
            rng_end: None,
            bad: 0,
        })
    }

    /// Applies a step to elements `offset..offset + params.len()` (checked
    /// parameters; under `Skip`, bad ones take the element's average).
    fn piece(&mut self, plan: &mut EmaPlan<A::Coef>, offset: usize, params: &[A::Param]) {
        let total = self.len();
        let rng = self.piece_in(plan, 0, offset, params);
        if A::FIXED && offset.saturating_add(params.len()) == total {
            plan.rng_end = Some(rng);
        }
    }

    /// [`piece`](Self::piece) for a shadow that holds the model's elements
    /// from `base` on (a page of a shadow in flash, or the whole shadow
    /// with `base` 0); returns the generator's state after the piece.
    #[inline(always)]
    pub(crate) fn piece_in(
        &mut self,
        plan: &mut EmaPlan<A::Coef>,
        base: usize,
        offset: usize,
        params: &[A::Param],
    ) -> u32 {
        let step = match plan.action {
            Action::Copy => None,
            Action::Skip => return plan.rng0,
            Action::Step { .. } => plan.step,
        };
        let at = offset.wrapping_sub(base);
        let Some(shadow) = self
            .shadow
            .as_mut()
            .get_mut(at..at.saturating_add(params.len()))
        else {
            return plan.rng0;
        };
        let debiased = self.init == Init::ZeroDebiased;
        let (filled, weight, rounding) = (self.filled, self.weight, self.rounding);
        // the generator as the whole pass would have it at `offset`
        let mut rng = match (step, rounding) {
            // (stochastic rounding exists only for fixed point)
            (Some(_), Rounding::Stochastic { .. }) if A::FIXED && offset != 0 => {
                xorshift32_jump(plan.rng0, offset as u64)
            }
            _ => plan.rng0,
        };
        if !P::SKIP || !params.iter().any(|x| !A::valid(x)) {
            // the whole piece in one pass (the kernels stream it)
            match step {
                None => A::load(shadow, params),
                Some(a) => A::step(shadow, params, a, rounding, &mut rng),
            }
        } else {
            // Bad elements under `Skip`: the input goes by in chunks, and a
            // chunk holding bad elements is copied with their averages
            // imputed.
            let mut tmp = [A::PARAM_ZERO; CHUNK];
            for (s, x) in shadow.chunks_mut(CHUNK).zip(params.chunks(CHUNK)) {
                let x = if x.iter().any(|v| !A::valid(v)) {
                    for ((t, v), s) in tmp.iter_mut().zip(x).zip(s.iter()) {
                        *t = impute::<A>(v, s, weight, debiased, filled);
                    }
                    tmp.get(..x.len()).unwrap_or(&[])
                } else {
                    x
                };
                match step {
                    None => A::load(s, x),
                    Some(a) => A::step(s, x, a, rounding, &mut rng),
                }
            }
        }
        rng
    }

    /// Ends a step: the debiasing weight, the generator, the counters.
    fn commit(&mut self, plan: EmaPlan<A::Coef>) -> Result<(), Error> {
        let total = self.len();
        self.commit_in(plan, total)
    }

    /// [`commit`](Self::commit) for a model of `total` elements.
    #[inline(always)]
    pub(crate) fn commit_in(&mut self, plan: EmaPlan<A::Coef>, total: usize) -> Result<(), Error> {
        if let Some(a) = plan.step {
            self.weight = A::weight_step(self.weight, a);
            self.alpha = a;
            if let (true, Rounding::Stochastic { .. }) = (A::FIXED, self.rounding) {
                self.rng = match plan.rng_end {
                    Some(r) => r,
                    None => xorshift32_jump(plan.rng0, total as u64),
                };
            }
        }
        self.finish(plan.calls, plan.bad, plan.action)
    }

    /// Bookkeeping after an update's pass.
    #[inline(always)]
    fn finish(&mut self, calls: u64, bad: u64, action: Action) -> Result<(), Error> {
        match action {
            Action::Copy => {
                self.weight = A::weight_one();
                self.filled = true;
                if self.calls == 0
                    && self.init == Init::CopyFirst
                    && self.schedule.update_after_step == 0
                {
                    // the copy-first update is the first EMA step (α₁ = 1)
                    self.t = 1;
                }
            }
            Action::Skip => {}
            Action::Step { t, .. } => {
                self.t = t;
                self.filled = true;
            }
        }
        self.calls = calls;
        self.skipped = self.skipped.saturating_add(bad);
        Ok(())
    }

    /// Writes the current average into `out`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out` has the wrong length;
    /// [`Error::Empty`] before the shadow holds any data. `out` is untouched
    /// on error.
    ///
    /// ```
    /// use polyak::{Ema, I1F31, Q15};
    /// let mut ema = Ema::new([I1F31::ZERO; 1], 0.75)?;
    /// ema.update(&[Q15::from_num(0.5)])?;
    /// ema.update(&[Q15::from_num(-0.5)])?;
    /// let mut out = [Q15::ZERO];
    /// ema.read_into(&mut out)?;  // 0.5 + 0.25·(−1) = 0.25, exactly
    /// assert_eq!(out, [Q15::from_num(0.25)]);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn read_into(&self, out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        if !self.filled {
            return Err(Error::Empty);
        }
        let saturated = match self.init {
            Init::CopyFirst => A::store(self.shadow.as_ref(), out),
            Init::ZeroDebiased => A::store_debiased(self.shadow.as_ref(), self.weight, out),
        };
        self.saturated
            .set(self.saturated.get().saturating_add(saturated));
        Ok(())
    }

    /// Switch EMA: copies the average back into the model's parameters, so
    /// training continues from the averaged point (Li et al., "Switch EMA",
    /// 2024: typically once per epoch). The average itself is unchanged.
    ///
    /// Same checks and errors as [`read_into`](Self::read_into).
    ///
    /// ```
    /// use polyak::{CompF32, Ema};
    /// let mut ema = Ema::new([CompF32::ZERO; 2], 0.5)?;
    /// let mut model = [1.0f32, 1.0];
    /// ema.update(&model)?;
    /// model = [3.0, -1.0]; // an SGD step
    /// ema.update(&model)?;
    /// ema.switch_into(&mut model)?; // end of epoch: continue from the EMA
    /// assert_eq!(model, [2.0, 0.0]);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn switch_into(&self, params: &mut [A::Param]) -> Result<(), Error> {
        self.read_into(params)
    }

    /// Forgets everything: the next update starts afresh (copies, or starts
    /// from zero in zero-debiased mode). The rounding generator restarts
    /// from its seed.
    ///
    /// ```
    /// let mut ema = polyak::Ema::new([0.0f32; 1], 0.9)?;
    /// ema.update(&[1.0])?;
    /// ema.reset();
    /// ema.update(&[7.0])?; // copies again
    /// assert_eq!(ema.shadow(), &[7.0]);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn reset(&mut self) {
        self.calls = 0;
        self.t = 0;
        self.filled = false;
        self.weight = A::weight_zero();
        self.saturated.set(0);
        self.skipped = 0;
        if let Rounding::Stochastic { seed } = self.rounding {
            self.rng = seed;
        }
        if let Coefs::Scheduled = self.coefs {
            self.alpha = A::coef_from_alpha(self.schedule.alpha(1));
        }
        if self.init == Init::ZeroDebiased {
            self.shadow.as_mut().fill(A::ZERO);
        }
    }
}

/// Chunked steps (see [`crate::chunk`]): bit-identical to
/// [`Ema::update`], stochastic rounding included.
impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> crate::chunk::Chunkable
    for Ema<A, S, P>
{
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = EmaPlan<A::Coef>;

    fn step_len(&self) -> usize {
        self.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<Self::Plan, Error> {
        self.plan()
    }
    fn apply_chunk(
        &mut self,
        plan: &mut Self::Plan,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        plan.bad += screen::<P, _>(x, A::valid, A::check)?;
        self.piece(plan, offset, x);
        Ok(())
    }
    fn finish_step(&mut self, plan: Self::Plan) -> Result<(), Error> {
        self.commit(plan)
    }
}

impl<C: Copy> Coefs<C> {
    /// Five bytes for the codec: tag (0 constant, 1 scheduled) and bits.
    pub(crate) fn to_bytes(self, bits: impl Fn(C) -> u32) -> [u8; 5] {
        let (tag, b) = match self {
            Coefs::Constant(c) => (0u8, bits(c)),
            Coefs::Scheduled => (1, 0),
        };
        let b = b.to_le_bytes();
        [tag, b[0], b[1], b[2], b[3]]
    }

    /// The coefficients of a validated schedule: constant when α never
    /// changes; and α of the first step.
    pub(crate) fn of<A: EmaShadow<Coef = C>>(schedule: &Schedule) -> (Self, C) {
        let first = A::coef_from_alpha(schedule.alpha(1));
        if schedule.is_constant() {
            (Coefs::Constant(first), first)
        } else {
            (Coefs::Scheduled, first)
        }
    }

    /// α for a step the schedule asked for with f32 coefficient `alpha`.
    pub(crate) fn at<A: EmaShadow<Coef = C>>(&self, alpha: f32) -> C {
        match *self {
            Coefs::Constant(a) => a,
            Coefs::Scheduled => A::coef_from_alpha(alpha),
        }
    }
}

/// Elements per chunk of an update's pass (a stack buffer of this many
/// parameters holds a chunk with imputed values under `Skip`).
pub(crate) const CHUNK: usize = 64;

/// The value an update uses for one element: the input if valid, else the
/// element's current average (or 0 before it has one).
pub(crate) fn impute<A: EmaShadow>(
    x: &A::Param,
    s: &A,
    w: A::Weight,
    debiased: bool,
    filled: bool,
) -> A::Param {
    if A::valid(x) {
        *x
    } else if filled {
        A::current(s, w, debiased)
    } else {
        A::PARAM_ZERO
    }
}

/// Six bytes for the codec: start, rounding mode and seed.
pub(crate) fn mode_bytes(init: Init, rounding: Rounding) -> [u8; 6] {
    let (tag, seed) = match rounding {
        Rounding::NearestEven => (0u8, 0u32),
        Rounding::Stochastic { seed } => (1, seed),
    };
    let s = seed.to_le_bytes();
    [init as u8, tag, s[0], s[1], s[2], s[3]]
}

/// The header field for a parameter count (saturating: a count beyond
/// u32 cannot match any record).
pub(crate) fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Configuration bytes of an Ema: schedule, coefficients, start, rounding,
/// non-finite policy.
const EMA_CONFIG: usize = 25 + 5 + 6 + 1;

impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> Ema<A, S, P> {
    fn config_bytes(&self) -> [u8; EMA_CONFIG] {
        let mut b = [0u8; EMA_CONFIG];
        b[..25].copy_from_slice(&self.schedule.to_bytes());
        b[25..30].copy_from_slice(&self.coefs.to_bytes(A::coef_bits));
        b[30..36].copy_from_slice(&mode_bytes(self.init, self.rounding));
        b[36] = u8::from(P::SKIP);
        b
    }
}

/// The EMA's state: its configuration (checked on decode), α of the last
/// step, the rounding generator, the counters, the debiasing weight, the
/// saturation count and the shadow.
impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> Ema<A, S, P> {
    /// Bytes of [`encode_scalars`](Self::encode_scalars).
    pub(crate) const SCALARS: usize = EMA_CONFIG + 4 + 4 + 8 + 8 + 1 + A::Weight::SIZE + 4 + 8;

    /// The configuration and every scalar of the state (not the shadow).
    pub(crate) fn encode_scalars<W: ByteSink>(
        &self,
        enc: &mut Encoder<'_, W>,
    ) -> Result<(), Error> {
        enc.bytes(&self.config_bytes())?;
        enc.u32(A::coef_bits(self.alpha))?;
        enc.u32(self.rng)?;
        enc.u64(self.calls)?;
        enc.u64(self.t)?;
        enc.u8(u8::from(self.filled))?;
        enc.elem(&self.weight)?;
        enc.u32(self.saturated.get())?;
        enc.u64(self.skipped)
    }

    /// Reads what [`encode_scalars`](Self::encode_scalars) wrote, checking
    /// it; applies it only if `apply`.
    pub(crate) fn decode_scalars<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        if dec.array::<EMA_CONFIG>()? != self.config_bytes() {
            return Err(Error::ConfigMismatch);
        }
        let alpha = A::coef_from_bits(dec.u32()?);
        let rng = dec.u32()?;
        let calls = dec.u64()?;
        let t = dec.u64()?;
        let filled = dec.u8()?;
        let weight = dec.elem::<A::Weight>()?;
        let saturated = dec.u32()?;
        let skipped = dec.u64()?;
        let bad = A::check_coef(alpha).is_err() || !A::weight_valid(&weight);
        if bad || filled > 1 || t > calls || (filled == 0 && t > 0) {
            return Err(Error::InvalidState);
        }
        if apply {
            self.alpha = alpha;
            self.rng = rng;
            self.calls = calls;
            self.t = t;
            self.filled = filled == 1;
            self.weight = weight;
            self.saturated.set(saturated);
            self.skipped = skipped;
        }
        Ok(())
    }

    /// The shadow, mutably (a flash-backed EMA's RAM page).
    pub(crate) fn shadow_mut(&mut self) -> &mut [A] {
        self.shadow.as_mut()
    }

    /// Reads the first `out.len()` elements of the average.
    pub(crate) fn read_prefix(&self, out: &mut [A::Param]) -> Result<(), Error> {
        if !self.filled {
            return Err(Error::Empty);
        }
        let shadow = self
            .shadow
            .as_ref()
            .get(..out.len())
            .ok_or(Error::LengthMismatch {
                expected: self.len(),
                found: out.len(),
            })?;
        let saturated = match self.init {
            Init::CopyFirst => A::store(shadow, out),
            Init::ZeroDebiased => A::store_debiased(shadow, self.weight, out),
        };
        self.saturated
            .set(self.saturated.get().saturating_add(saturated));
        Ok(())
    }

    /// The scalars, to put back with [`set_scalars`](Self::set_scalars).
    pub(crate) fn scalars(&self) -> EmaScalars<A> {
        EmaScalars {
            alpha: self.alpha,
            rng: self.rng,
            calls: self.calls,
            t: self.t,
            filled: self.filled,
            weight: self.weight,
            skipped: self.skipped,
        }
    }

    /// Puts scalars back.
    pub(crate) fn set_scalars(&mut self, v: EmaScalars<A>) {
        self.alpha = v.alpha;
        self.rng = v.rng;
        self.calls = v.calls;
        self.t = v.t;
        self.filled = v.filled;
        self.weight = v.weight;
        self.skipped = v.skipped;
    }
}

/// An [`Ema`]'s scalars (a rollback point for a flash step).
#[derive(Debug, Clone, Copy)]
pub(crate) struct EmaScalars<A: EmaShadow> {
    alpha: A::Coef,
    rng: u32,
    calls: u64,
    t: u64,
    filled: bool,
    weight: A::Weight,
    skipped: u64,
}

impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> Persist for Ema<A, S, P> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::Ema as u8,
            format: A::FORMAT,
            len: len_u32(self.len()),
            layout: 0,
            fields: Self::SCALARS as u32,
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        self.encode_scalars(enc)?;
        for e in self.shadow.as_ref() {
            enc.elem(e)?;
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        self.decode_scalars(dec, apply)?;
        for slot in self.shadow.as_mut() {
            let v = dec.elem::<A>()?;
            if apply {
                *slot = v;
            }
        }
        Ok(())
    }
}

pub(crate) fn check_len(expected: usize, found: usize) -> Result<(), Error> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch { expected, found })
    }
}
