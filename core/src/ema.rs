//! Exponential moving average of a parameter buffer.
//!
//! [`Ema`] keeps `s ← s + α·(x − s)` per element, with `α = 1 − β`, in a
//! shadow buffer the caller owns. The element type of the shadow picks the
//! arithmetic:
//!
//! | shadow `A` | parameters | arithmetic | error vs the f64 EMA (see each impl) |
//! |---|---|---|---|
//! | `f32` | `f32` | plain: `s += α·(x − s)` | stalls at `ε·M/(2α)`: fine for β ≤ 0.99 |
//! | [`CompF32`] | `f32` | compensated pair `hi + lo` | `ε·(2.51·M + (ε·M + m₀)/(2α))` for any β |
//! | [`I1F31`] (Q31) | [`Q15`] | wide shadow, nearest-even increment | `½ + 2⁻¹⁷/α` LSB |
//! | [`I2F62`] (Q62) | [`Q31`] | wide shadow, nearest-even increment | `½ + 2⁻³²/α` LSB |
//!
//! Here `M` is the largest `|x|` an element has seen, `ε = 2⁻²³`
//! (`f32::EPSILON`), `m₀ = 2⁻¹²⁶` (`f32::MIN_POSITIVE`, the underflow
//! threshold) and α the coefficient actually stored ([`Ema::alpha`]). The
//! reference is the f64 recurrence with the same α and the same inputs
//! (for fixed point: the quantised inputs and the quantised α).
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
//! once `|x − s| < 1/(2α)` LSB (500 LSB at β = 0.999). That is why the Q15
//! EMA keeps a Q31 shadow and the Q31 EMA a Q62 one.
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

use core::marker::PhantomData;
use core::num::NonZeroU64;

use crate::format::{CompF32, I1F15, I1F31, I2F62, U1F31, check_f32};
use crate::kernel::ema as k;
use crate::num::{div_round_i64, round_shift_i64};
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
    /// divide by `1 − βᵗ` to remove the bias towards zero (optax, Adam's
    /// moment estimates).
    ZeroDebiased,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for super::CompF32 {}
    impl Sealed for super::I1F31 {}
    impl Sealed for super::I2F62 {}
}

/// A shadow element type: it fixes the parameter format and the arithmetic
/// of an [`Ema`]. Implemented for `f32`, [`CompF32`], [`I1F31`] and
/// [`I2F62`]; sealed.
pub trait EmaShadow: Copy + sealed::Sealed {
    /// The parameter element type the shadow averages.
    type Param: Copy;
    /// The stored coefficient α = 1 − β.
    type Coef: Copy + PartialEq + core::fmt::Debug;
    /// The scalar that tracks `1 − βᵗ` in [`Init::ZeroDebiased`] mode.
    #[doc(hidden)]
    type Weight: Copy;
    /// The zero shadow value.
    const ZERO: Self;

    /// α = 1 − β in this format. Errors with [`Error::InvalidDecay`] unless
    /// `0 ≤ β < 1` and α is representable.
    fn alpha_from_beta(beta: f32) -> Result<Self::Coef, Error>;
    /// Checks a coefficient: α in `(0, 1]`.
    fn check_alpha(alpha: Self::Coef) -> Result<(), Error>;
    /// Checks the parameter values (f32: finite and within [`crate::F32_LIMIT`]).
    fn check(params: &[Self::Param]) -> Result<(), Error>;
    #[doc(hidden)]
    fn load(shadow: &mut [Self], params: &[Self::Param]);
    #[doc(hidden)]
    fn step(shadow: &mut [Self], params: &[Self::Param], alpha: Self::Coef);
    #[doc(hidden)]
    fn store(shadow: &[Self], out: &mut [Self::Param]);
    #[doc(hidden)]
    fn weight_zero() -> Self::Weight;
    #[doc(hidden)]
    fn weight_step(w: Self::Weight, alpha: Self::Coef) -> Self::Weight;
    #[doc(hidden)]
    fn store_debiased(shadow: &[Self], w: Self::Weight, out: &mut [Self::Param]);
}

fn check_beta(beta: f32) -> Result<(), Error> {
    // `!(a && b)` so that NaN is rejected too.
    if !(0.0..1.0).contains(&beta) {
        return Err(Error::InvalidDecay);
    }
    Ok(())
}

fn f32_alpha(beta: f32) -> Result<f32, Error> {
    check_beta(beta)?;
    // Exact for β ≥ 0.5 (Sterbenz); rounded to nearest below.
    Ok(1.0 - beta)
}

fn check_f32_alpha(alpha: f32) -> Result<(), Error> {
    if alpha > 0.0 && alpha <= 1.0 {
        Ok(())
    } else {
        Err(Error::InvalidDecay)
    }
}

/// α = round(2³¹·(1 − β)) as a Q31 fraction; errors if it rounds to 0.
fn q31_alpha(beta: f32) -> Result<U1F31, Error> {
    check_beta(beta)?;
    // 1 − β is exact in f64, and so is the scaling; add ½ and truncate to
    // round half up. The result is in [0, 2^31].
    let scaled = (1.0 - f64::from(beta)) * 2_147_483_648.0 + 0.5;
    let raw = scaled as u32;
    let alpha = U1F31::from_bits(raw);
    check_q31_alpha(alpha)?;
    Ok(alpha)
}

fn check_q31_alpha(alpha: U1F31) -> Result<(), Error> {
    if alpha.to_bits() == 0 || alpha.to_bits() > 1 << 31 {
        Err(Error::InvalidDecay)
    } else {
        Ok(())
    }
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

    fn alpha_from_beta(beta: f32) -> Result<f32, Error> {
        f32_alpha(beta)
    }
    fn check_alpha(alpha: f32) -> Result<(), Error> {
        check_f32_alpha(alpha)
    }
    fn check(params: &[f32]) -> Result<(), Error> {
        check_f32(params)
    }
    fn load(shadow: &mut [f32], params: &[f32]) {
        k::load(shadow, params, |x| x);
    }
    fn step(shadow: &mut [f32], params: &[f32], alpha: f32) {
        k::plain_f32(shadow, params, alpha);
    }
    fn store(shadow: &[f32], out: &mut [f32]) {
        k::store(shadow, out, |s| s);
    }
    fn weight_zero() -> f32 {
        0.0
    }
    fn weight_step(w: f32, alpha: f32) -> f32 {
        w + alpha * (1.0 - w)
    }
    fn store_debiased(shadow: &[f32], w: f32, out: &mut [f32]) {
        k::store(shadow, out, |s| s / w);
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

    fn alpha_from_beta(beta: f32) -> Result<f32, Error> {
        f32_alpha(beta)
    }
    fn check_alpha(alpha: f32) -> Result<(), Error> {
        check_f32_alpha(alpha)
    }
    fn check(params: &[f32]) -> Result<(), Error> {
        check_f32(params)
    }
    fn load(shadow: &mut [CompF32], params: &[f32]) {
        k::load(shadow, params, CompF32::new);
    }
    fn step(shadow: &mut [CompF32], params: &[f32], alpha: f32) {
        k::comp_f32(shadow, params, alpha);
    }
    fn store(shadow: &[CompF32], out: &mut [f32]) {
        k::store(shadow, out, CompF32::value);
    }
    fn weight_zero() -> CompF32 {
        CompF32::ZERO
    }
    fn weight_step(w: CompF32, alpha: f32) -> CompF32 {
        k::comp_step(w, 1.0, alpha)
    }
    fn store_debiased(shadow: &[CompF32], w: CompF32, out: &mut [f32]) {
        let w = w.value();
        k::store(shadow, out, |s| s.value() / w);
    }
}

/// Q15 parameters with a Q31 ([`I1F31`]) shadow: 16 more fractional bits,
/// so increments far below 1 LSB of Q15 still accumulate.
///
/// The step is `s ← s + round(α·(x·2¹⁶ − s))` in Q31 units, with α a Q31
/// coefficient ([`U1F31`]) and the product exact in i64.
///
/// **Rounding**: the increment to nearest-even in Q31; the read to
/// nearest-even in Q15. **Overflow**: none — every step lands between the
/// old shadow and the input, so the shadow stays in the range of the inputs.
///
/// **Bound** (copy-first): `|read − ref| ≤ ½ + 2⁻¹⁷/α` LSB of Q15 (the
/// shadow itself within `2⁻¹⁷/α` LSB): ≤ 0.51 LSB at β = 0.999, ≤ 0.58 LSB
/// at β = 0.9999.
///
/// **Bound** (zero-debiased): `|read − ref| ≤ ½ + 2⁻¹⁶/(α − 2⁻³²)` LSB
/// (the biased shadow within `2⁻¹⁷/α` LSB of the f64 biased sum).
impl EmaShadow for I1F31 {
    type Param = Q15;
    type Coef = U1F31;
    type Weight = i64;
    const ZERO: Self = I1F31::ZERO;

    fn alpha_from_beta(beta: f32) -> Result<U1F31, Error> {
        q31_alpha(beta)
    }
    fn check_alpha(alpha: U1F31) -> Result<(), Error> {
        check_q31_alpha(alpha)
    }
    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
    fn load(shadow: &mut [I1F31], params: &[Q15]) {
        k::load(shadow, params, |x: I1F15| {
            I1F31::from_bits(i32::from(x.to_bits()) << 16)
        });
    }
    fn step(shadow: &mut [I1F31], params: &[Q15], alpha: U1F31) {
        k::q15(shadow, params, i64::from(alpha.to_bits()));
    }
    fn store(shadow: &[I1F31], out: &mut [Q15]) {
        k::store(shadow, out, |s: I1F31| {
            narrow_i16(round_shift_i64::<16>(i64::from(s.to_bits())))
        });
    }
    fn weight_zero() -> i64 {
        1 << 31
    }
    // The weight is p = βᵗ in Q31 (2³¹ = 1); 1 − βᵗ = 2³¹ − p.
    fn weight_step(p: i64, alpha: U1F31) -> i64 {
        let beta = (1i64 << 31) - i64::from(alpha.to_bits());
        round_shift_i64::<31>(p * beta)
    }
    fn store_debiased(shadow: &[I1F31], p: i64, out: &mut [Q15]) {
        let Some(w) = NonZeroU64::new(((1i64 << 31) - p) as u64) else {
            return;
        };
        k::store(shadow, out, |s: I1F31| {
            narrow_i16(div_round_i64(i64::from(s.to_bits()) << 15, w))
        });
    }
}

/// Q31 parameters with a Q62 ([`I2F62`]) shadow: 31 more fractional bits.
///
/// The step is `s ← s + round(α·(x·2³¹ − s))` in Q62 units, the product
/// exact in i128.
///
/// **Rounding**: the increment to nearest-even in Q62; the read to
/// nearest-even in Q31. **Overflow**: none (as for Q15).
///
/// **Bound** (copy-first): `|read − ref| ≤ ½ + 2⁻³²/α` LSB of Q31 (the
/// shadow itself within `2⁻³²/α` LSB).
///
/// The zero-debiased mode is not offered for Q31 yet:
/// [`Ema::new_debiased`] does not accept this shadow type.
impl EmaShadow for I2F62 {
    type Param = Q31;
    type Coef = U1F31;
    type Weight = ();
    const ZERO: Self = I2F62::ZERO;

    fn alpha_from_beta(beta: f32) -> Result<U1F31, Error> {
        q31_alpha(beta)
    }
    fn check_alpha(alpha: U1F31) -> Result<(), Error> {
        check_q31_alpha(alpha)
    }
    fn check(_: &[Q31]) -> Result<(), Error> {
        Ok(())
    }
    fn load(shadow: &mut [I2F62], params: &[Q31]) {
        k::load(shadow, params, |x: I1F31| {
            I2F62::from_bits(i64::from(x.to_bits()) << 31)
        });
    }
    fn step(shadow: &mut [I2F62], params: &[Q31], alpha: U1F31) {
        k::q31(shadow, params, i64::from(alpha.to_bits()));
    }
    fn store(shadow: &[I2F62], out: &mut [Q31]) {
        k::store(shadow, out, |s: I2F62| {
            narrow_i32(round_shift_i64::<31>(s.to_bits()))
        });
    }
    fn weight_zero() {}
    fn weight_step((): (), _: U1F31) {}
    fn store_debiased(_: &[I2F62], (): (), _: &mut [Q31]) {}
}

/// Shadow types that support [`Init::ZeroDebiased`].
pub trait Debias: EmaShadow {}
impl Debias for f32 {}
impl Debias for CompF32 {}
impl Debias for I1F31 {}

fn narrow_i16(v: i64) -> Q15 {
    I1F15::from_bits(v.clamp(i64::from(i16::MIN), i64::from(i16::MAX)) as i16)
}

fn narrow_i32(v: i64) -> Q31 {
    I1F31::from_bits(v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32)
}

/// An exponential moving average of a parameter buffer, in a shadow the
/// caller owns.
///
/// `A` is the shadow element type (see the [module docs](self) for the
/// choices and their error bounds); `S` is any storage that derefs to a
/// slice of it: `[A; N]`, `&mut [A]`, `heapless::Vec<A, N>`. The number of
/// parameters is the length of the storage.
///
/// Every method that takes input checks all of it first; on error nothing
/// has changed.
#[derive(Debug, Clone)]
pub struct Ema<A: EmaShadow, S> {
    shadow: S,
    alpha: A::Coef,
    init: Init,
    steps: u64,
    weight: A::Weight,
    _elem: PhantomData<fn() -> A>,
}

impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>> Ema<A, S> {
    /// An EMA with decay `β ∈ [0, 1)` whose first update copies the
    /// parameters.
    ///
    /// α = 1 − β is formed in the shadow's format (exact in f32 for
    /// β ≥ 0.5; rounded to the nearest multiple of 2⁻³¹ for fixed point).
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] if β is NaN or outside `[0, 1)`, or (fixed
    /// point) so close to 1 that α rounds to zero.
    pub fn new(shadow: S, beta: f32) -> Result<Self, Error> {
        Self::build(shadow, A::alpha_from_beta(beta)?, Init::CopyFirst)
    }

    /// An EMA with an explicit coefficient α = 1 − β in the shadow's
    /// format (for fixed point, a [`U1F31`] fraction), whose first update
    /// copies the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] unless α is in `(0, 1]`.
    ///
    /// ```
    /// use polyak::{Ema, I1F31, Q15, U1F31};
    /// // α = 2⁻¹⁰ exactly: β = 1 − 2⁻¹⁰ ≈ 0.99902.
    /// let alpha = U1F31::from_bits(1 << 21);
    /// let mut ema = Ema::with_alpha([I1F31::ZERO; 4], alpha)?;
    /// ema.update(&[Q15::from_num(0.5); 4])?;
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn with_alpha(shadow: S, alpha: A::Coef) -> Result<Self, Error> {
        Self::build(shadow, alpha, Init::CopyFirst)
    }

    fn build(mut shadow: S, alpha: A::Coef, init: Init) -> Result<Self, Error> {
        A::check_alpha(alpha)?;
        if init == Init::ZeroDebiased {
            shadow.as_mut().fill(A::ZERO);
        }
        Ok(Self {
            shadow,
            alpha,
            init,
            steps: 0,
            weight: A::weight_zero(),
            _elem: PhantomData,
        })
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.shadow.as_ref().len()
    }

    /// Whether the buffer has no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored coefficient α = 1 − β.
    pub fn alpha(&self) -> A::Coef {
        self.alpha
    }

    /// How the shadow started.
    pub fn init(&self) -> Init {
        self.init
    }

    /// Updates since construction or the last [`reset`](Self::reset).
    ///
    /// ```
    /// let mut ema = polyak::Ema::new([0.0f32; 1], 0.9)?;
    /// ema.update(&[1.0])?;
    /// assert_eq!(ema.steps(), 1);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn steps(&self) -> u64 {
        self.steps
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

    /// Folds one step's parameters into the average.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `params` is not as long as the shadow;
    /// for f32, [`Error::NonFinite`] or [`Error::OutOfRange`] for the first
    /// bad element; [`Error::CountOverflow`] after 2⁶⁴ − 1 updates. The
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
        A::check(params)?;
        let steps = self.steps.checked_add(1).ok_or(Error::CountOverflow)?;
        let shadow = self.shadow.as_mut();
        match self.init {
            Init::CopyFirst if self.steps == 0 => A::load(shadow, params),
            Init::CopyFirst => A::step(shadow, params, self.alpha),
            Init::ZeroDebiased => {
                A::step(shadow, params, self.alpha);
                self.weight = A::weight_step(self.weight, self.alpha);
            }
        }
        self.steps = steps;
        Ok(())
    }

    /// Writes the current average into `out`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `out` has the wrong length;
    /// [`Error::Empty`] before the first update. `out` is untouched on error.
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
        if self.steps == 0 {
            return Err(Error::Empty);
        }
        match self.init {
            Init::CopyFirst => A::store(self.shadow.as_ref(), out),
            Init::ZeroDebiased => A::store_debiased(self.shadow.as_ref(), self.weight, out),
        }
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
    /// from zero in zero-debiased mode).
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
        self.steps = 0;
        self.weight = A::weight_zero();
        if self.init == Init::ZeroDebiased {
            self.shadow.as_mut().fill(A::ZERO);
        }
    }
}

impl<A: Debias, S: AsRef<[A]> + AsMut<[A]>> Ema<A, S> {
    /// An EMA with decay β whose shadow starts at zero and is divided by
    /// `1 − βᵗ` when read ([`Init::ZeroDebiased`]). Zero-fills the storage.
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
        Self::build(shadow, A::alpha_from_beta(beta)?, Init::ZeroDebiased)
    }

    /// As [`new_debiased`](Self::new_debiased) with an explicit α.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] unless α is in `(0, 1]`.
    pub fn with_alpha_debiased(shadow: S, alpha: A::Coef) -> Result<Self, Error> {
        Self::build(shadow, alpha, Init::ZeroDebiased)
    }
}

pub(crate) fn check_len(expected: usize, found: usize) -> Result<(), Error> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch { expected, found })
    }
}
