//! Per-element mean and variance of a stream of vectors: the diagonal of
//! SWAG (Maddox et al. 2019) over weight snapshots, and the running
//! statistics of a normalisation layer recomputed over a pass through data
//! (the device-side `update_bn`).
//!
//! [`Moments`] keeps, per element, sums from which both follow:
//!
//! | element | kept | mean | variance |
//! |---|---|---|---|
//! | [`MomentF32`] (20 bytes) | shift `K` (the first value), compensated `Σ(x − K)`, `Σ(x − K)²` | `K + Σd/n` | `(Σd² − (Σd)²/n)/(n − ddof)` |
//! | [`MomentQ15`] (16 bytes) | exact `Σx`, `Σx²` in i64 | correctly rounded Q15 | correctly rounded Q31 |
//! | [`MomentQ31`] (24 bytes) | exact `Σx` in i64, `Σx²` in i128 | correctly rounded Q31 | correctly rounded Q31 |
//!
//! The naive `E[x²] − E[x]²` cancels catastrophically when the mean is
//! large next to the spread (a weight near 3.0 moving by 10⁻³, an
//! activation channel with a large offset): in f32 it loses every digit and
//! can even come out negative. Sums of deviations from a shift near the
//! mean keep the cancellation small; in fixed point the sums are exact and
//! the variance is rounded once.
//!
//! **Bound** (f32, `tests/moments.rs`): with `Q = (1/n)·Σ(x − K)²` the mean
//! square deviation from the shift,
//! `|var − ref| ≤ 3·ε·Q·n/(n − ddof) + η` and
//! `|mean − ref| ≤ ε·(|ref| + √Q)/2 + η` (`ε = 2⁻²³`, `η = 2⁻¹⁴⁹`). When the
//! first value is near the mean, `Q` is about the variance, so the error
//! is a few ulps of the variance itself. Fixed point: ≤ ½ LSB.
//!
//! ```
//! use polyak::moments::{Moments, MomentF32};
//!
//! // per-channel statistics of activations with a large offset
//! let mut stats = Moments::new([MomentF32::ZERO; 2]);
//! for x in [1000.001f32, 1000.002, 1000.003] {
//!     stats.update(&[x, -x])?;
//! }
//! let (mut mean, mut var) = ([0.0f32; 2], [0.0f32; 2]);
//! stats.mean_into(&mut mean)?;
//! stats.variance_into(&mut var, 1)?; // unbiased, as BatchNorm's running_var
//! assert!((var[0] - 1.0e-6).abs() < 1.0e-7);
//! # Ok::<(), polyak::Error>(())
//! ```

use crate::codec::{ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist};
use crate::ema::{check_len, len_u32};
use crate::format::{CompF32, check_f32_within};
use crate::kernel::swa::comp_add;
use crate::num::div_round_i128;
use crate::{Error, Q15, Q31};

/// Largest `|x|` f32 moments accept (2⁴⁸): squared deviations of 2²⁴
/// such values sum to at most 2¹²², well inside f32. Larger values are
/// refused with [`Error::OutOfRange`].
pub const MOMENT_F32_LIMIT: f32 = f32::from_bits((127 + 48) << 23);

/// f32 moments of one element: a shift and compensated sums of deviations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub struct MomentF32 {
    shift: f32,
    s1: CompF32,
    s2: CompF32,
}

impl MomentF32 {
    /// Nothing yet.
    pub const ZERO: Self = Self {
        shift: 0.0,
        s1: CompF32::ZERO,
        s2: CompF32::ZERO,
    };
}

/// Exact moments of one Q15 element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MomentQ15 {
    s1: i64,
    s2: i64,
}

impl MomentQ15 {
    /// Nothing yet.
    pub const ZERO: Self = Self { s1: 0, s2: 0 };
}

/// Exact moments of one Q31 element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct MomentQ31 {
    s1: i64,
    s2: i128,
}

impl MomentQ31 {
    /// Nothing yet.
    pub const ZERO: Self = Self { s1: 0, s2: 0 };
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::MomentF32 {}
    impl Sealed for super::MomentQ15 {}
    impl Sealed for super::MomentQ31 {}
}

/// An element type of [`Moments`]. Sealed.
pub trait Moment: Copy + core::fmt::Debug + sealed::Sealed + Element {
    /// The value type of the stream.
    type Param: Copy + crate::policy::Input;
    /// The variance's type (f32, or Q31 for fixed point).
    type Var: Copy;
    /// Nothing yet.
    const ZERO: Self;
    /// Most values the sums stay exact (or the count exact in f32) for.
    const MAX_COUNT: u64;
    #[doc(hidden)]
    fn check(xs: &[Self::Param]) -> Result<(), Error>;
    #[doc(hidden)]
    fn add(&mut self, x: Self::Param, first: bool);
    #[doc(hidden)]
    fn mean(&self, n: u64) -> Self::Param;
    #[doc(hidden)]
    fn var(&self, n: u64, ddof: u64) -> Self::Var;
    /// Whether `count` values could have produced these sums (decoding
    /// refuses sums that later updates would overflow).
    #[doc(hidden)]
    fn valid_for(&self, count: u64) -> bool;
}

impl Moment for MomentF32 {
    type Param = f32;
    type Var = f32;
    const ZERO: Self = MomentF32::ZERO;
    const MAX_COUNT: u64 = 1 << 24;

    fn check(xs: &[f32]) -> Result<(), Error> {
        check_f32_within(xs, MOMENT_F32_LIMIT)
    }
    fn add(&mut self, x: f32, first: bool) {
        if first {
            self.shift = x;
        }
        let d = x - self.shift;
        self.s1 = comp_add(self.s1, d);
        self.s2 = comp_add(self.s2, d * d);
    }
    fn mean(&self, n: u64) -> f32 {
        (f64::from(self.shift) + self.s1.to_f64() / n as f64) as f32
    }
    fn var(&self, n: u64, ddof: u64) -> f32 {
        let (s1, s2, nf) = (self.s1.to_f64(), self.s2.to_f64(), n as f64);
        ((s2 - s1 * s1 / nf).max(0.0) / (n - ddof) as f64) as f32
    }
    // |d| ≤ 2⁴⁹ for every value, so |Σd| ≤ 2⁷³ and Σd² ≤ 2¹²² at any count
    fn valid_for(&self, count: u64) -> bool {
        let (s1, s2) = (self.s1.to_f64(), self.s2.to_f64());
        let empty_ok = count > 0 || (s1 == 0.0 && s2 == 0.0);
        empty_ok
            && self.shift.abs() <= MOMENT_F32_LIMIT
            && s1.abs() <= f64::from_bits((1023 + 73) << 52)
            && s2 <= f64::from_bits((1023 + 122) << 52)
    }
}

/// `round(num / den)` to nearest-even for `den > 0`, clamped to `[lo, hi]`.
fn ratio(num: i128, den: u128, lo: i128, hi: i128) -> i128 {
    match core::num::NonZeroU128::new(den) {
        Some(d) => div_round_i128(num, d).max(lo).min(hi),
        None => 0,
    }
}

impl Moment for MomentQ15 {
    type Param = Q15;
    type Var = Q31;
    const ZERO: Self = MomentQ15::ZERO;
    const MAX_COUNT: u64 = u32::MAX as u64;

    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
    fn add(&mut self, x: Q15, _: bool) {
        let v = i64::from(x.to_bits());
        self.s1 += v;
        self.s2 += v * v;
    }
    fn mean(&self, n: u64) -> Q15 {
        Q15::from_bits(ratio(i128::from(self.s1), u128::from(n), -32768, 32767) as i16)
    }
    // var in Q30 units is (n·s2 − s1²)/(n·(n − ddof)); in Q31, twice that.
    fn var(&self, n: u64, ddof: u64) -> Q31 {
        let num = (i128::from(n) * i128::from(self.s2) - i128::from(self.s1) * i128::from(self.s1))
            .max(0)
            * 2;
        let den = u128::from(n) * u128::from(n - ddof);
        Q31::from_bits(ratio(num, den, 0, i128::from(i32::MAX)) as i32)
    }
    fn valid_for(&self, count: u64) -> bool {
        let n = i128::from(count);
        i128::from(self.s1).abs() <= n << 15 && i128::from(self.s2) <= n << 30
    }
}

impl Moment for MomentQ31 {
    type Param = Q31;
    type Var = Q31;
    const ZERO: Self = MomentQ31::ZERO;
    const MAX_COUNT: u64 = u32::MAX as u64;

    fn check(_: &[Q31]) -> Result<(), Error> {
        Ok(())
    }
    fn add(&mut self, x: Q31, _: bool) {
        let v = i64::from(x.to_bits());
        self.s1 += v;
        self.s2 += i128::from(v) * i128::from(v);
    }
    fn mean(&self, n: u64) -> Q31 {
        Q31::from_bits(ratio(
            i128::from(self.s1),
            u128::from(n),
            i32::MIN.into(),
            i32::MAX.into(),
        ) as i32)
    }
    // var in Q62 units is (n·s2 − s1²)/(n·(n − ddof)); in Q31, / 2^31. The
    // numerator fits i128: n·s2 ≤ 2^32·2^94.
    fn var(&self, n: u64, ddof: u64) -> Q31 {
        let s1 = i128::from(self.s1);
        let num = (i128::from(n).saturating_mul(self.s2) - s1 * s1).max(0);
        let den = u128::from(n) * u128::from(n - ddof);
        // (num / den) / 2^31 = num / (den·2^31); den·2^31 ≤ 2^95
        Q31::from_bits(ratio(num, den << 31, 0, i128::from(i32::MAX)) as i32)
    }
    fn valid_for(&self, count: u64) -> bool {
        let n = i128::from(count);
        i128::from(self.s1).abs() <= n << 31 && self.s2 <= n << 62
    }
}

/// Per-element mean and variance of a stream of vectors, in caller
/// storage.
#[derive(Debug, Clone)]
pub struct Moments<A: Moment, S> {
    acc: S,
    count: u64,
    _elem: core::marker::PhantomData<fn() -> A>,
}

impl<A: Moment, S: AsRef<[A]> + AsMut<[A]>> Moments<A, S> {
    /// Empty moments over `storage` (zero-filled).
    pub fn new(mut storage: S) -> Self {
        storage.as_mut().fill(A::ZERO);
        Self {
            acc: storage,
            count: 0,
            _elem: core::marker::PhantomData,
        }
    }

    /// Vectors folded in so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.acc.as_ref().len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Folds in one vector (a weight snapshot, or one sample's activations).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; for f32 [`Error::NonFinite`] /
    /// [`Error::OutOfRange`] (beyond [`MOMENT_F32_LIMIT`]);
    /// [`Error::CountOverflow`] past
    /// [`Moment::MAX_COUNT`]. The state is unchanged on error.
    pub fn update(&mut self, xs: &[A::Param]) -> Result<(), Error> {
        check_len(self.len(), xs.len())?;
        if self.count >= A::MAX_COUNT {
            return Err(Error::CountOverflow);
        }
        A::check(xs)?;
        let first = self.count == 0;
        self.piece(first, 0, xs);
        self.count += 1;
        Ok(())
    }

    /// Folds checked values into elements `offset..offset + xs.len()`.
    fn piece(&mut self, first: bool, offset: usize, xs: &[A::Param]) {
        let acc = self.acc.as_mut().get_mut(offset..).unwrap_or(&mut []);
        for (a, &x) in acc.iter_mut().zip(xs) {
            a.add(x, first);
        }
    }

    /// Folds in a batch: `rows` holds whole vectors back to back.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `rows` is not a whole number of vectors
    /// (checked first); otherwise as [`update`](Self::update), and rows
    /// before a bad one stay folded in.
    pub fn update_batch(&mut self, rows: &[A::Param]) -> Result<(), Error> {
        let n = self.len();
        if n == 0 || !rows.len().is_multiple_of(n) {
            return Err(Error::LengthMismatch {
                expected: n,
                found: rows.len(),
            });
        }
        for row in rows.chunks_exact(n) {
            self.update(row)?;
        }
        Ok(())
    }

    /// Writes the per-element mean.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::Empty`] before the first vector.
    pub fn mean_into(&self, out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        if self.count == 0 {
            return Err(Error::Empty);
        }
        for (o, a) in out.iter_mut().zip(self.acc.as_ref()) {
            *o = a.mean(self.count);
        }
        Ok(())
    }

    /// Writes the per-element variance: population (`ddof = 0`, SWAG's
    /// diagonal) or unbiased (`ddof = 1`, BatchNorm's `running_var`).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::InvalidCoefficient`] for `ddof`
    /// above 1; [`Error::TooFewSamples`] unless more than `ddof` vectors
    /// (and at least two) are in.
    pub fn variance_into(&self, out: &mut [A::Var], ddof: u64) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        if ddof > 1 {
            return Err(Error::InvalidCoefficient);
        }
        if self.count < 2 {
            return Err(Error::TooFewSamples);
        }
        for (o, a) in out.iter_mut().zip(self.acc.as_ref()) {
            *o = a.var(self.count, ddof);
        }
        Ok(())
    }

    /// BatchNorm's buffers in one call: the mean into `running_mean`, the
    /// unbiased variance into `running_var`.
    ///
    /// # Errors
    /// As [`mean_into`](Self::mean_into) and
    /// [`variance_into`](Self::variance_into); nothing is written on error.
    pub fn write_into(
        &self,
        running_mean: &mut [A::Param],
        running_var: &mut [A::Var],
    ) -> Result<(), Error> {
        check_len(self.len(), running_mean.len())?;
        check_len(self.len(), running_var.len())?;
        if self.count < 2 {
            return Err(Error::TooFewSamples);
        }
        for ((m, v), a) in running_mean
            .iter_mut()
            .zip(running_var.iter_mut())
            .zip(self.acc.as_ref())
        {
            *m = a.mean(self.count);
            *v = a.var(self.count, 1);
        }
        Ok(())
    }

    /// Forgets everything (for the next pass through the data).
    pub fn reset(&mut self) {
        self.acc.as_mut().fill(A::ZERO);
        self.count = 0;
    }
}

/// Normal variates from a seeded generator (xorshift64* and Box–Muller),
/// the same sequence on every target.
#[cfg(feature = "libm")]
#[derive(Debug, Clone)]
pub struct Normal {
    state: u64,
    spare: Option<f32>,
}

#[cfg(feature = "libm")]
impl Normal {
    /// A generator from a seed (0 is replaced by a fixed non-zero value).
    pub const fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
            spare: None,
        }
    }

    fn uniform(&mut self) -> f32 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        // 24 bits, in (0, 1]
        ((r >> 40) + 1) as f32 * (1.0 / 16_777_216.0)
    }

    /// The next standard normal variate.
    pub fn sample(&mut self) -> f32 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = libm::sqrtf(-2.0 * libm::logf(u1));
        let a = 2.0 * core::f32::consts::PI * u2;
        self.spare = Some(r * libm::sinf(a));
        r * libm::cosf(a)
    }
}

#[cfg(feature = "libm")]
impl<S: AsRef<[MomentF32]> + AsMut<[MomentF32]>> Moments<MomentF32, S> {
    /// SWAG-diagonal: draws `θ = mean + scale·sqrt(var)·z`, `z ~ N(0, I)`,
    /// into `out` (population variance; SWAG's diagonal term uses
    /// `scale = 1/√2` when combined with its low-rank part, 1 alone).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::TooFewSamples`] before two
    /// snapshots; [`Error::InvalidCoefficient`] for a negative or
    /// non-finite scale.
    pub fn sample_into(&self, rng: &mut Normal, scale: f32, out: &mut [f32]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        if !(scale >= 0.0 && scale.is_finite()) {
            return Err(Error::InvalidCoefficient);
        }
        if self.count < 2 {
            return Err(Error::TooFewSamples);
        }
        for (o, a) in out.iter_mut().zip(self.acc.as_ref()) {
            let sd = libm::sqrtf(a.var(self.count, 0));
            *o = a.mean(self.count) + scale * sd * rng.sample();
        }
        Ok(())
    }
}

fn put_all(out: &mut [u8], parts: &[&[u8]]) {
    let mut at = 0;
    for p in parts {
        for (o, b) in out.iter_mut().skip(at).zip(p.iter()) {
            *o = *b;
        }
        at += p.len();
    }
}

fn le<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at + N)?.try_into().ok()
}

impl Element for MomentF32 {
    const FORMAT: u8 = 10;
    const SIZE: usize = 20;
    fn put(&self, out: &mut [u8]) {
        let mut s1 = [0u8; 8];
        let mut s2 = [0u8; 8];
        self.s1.put(&mut s1);
        self.s2.put(&mut s2);
        put_all(out, &[&self.shift.to_bits().to_le_bytes(), &s1, &s2]);
    }
    fn get(b: &[u8]) -> Option<Self> {
        let shift = f32::from_bits(u32::from_le_bytes(le(b, 0)?));
        let s1 = CompF32::get(b.get(4..12)?)?;
        let s2 = CompF32::get(b.get(12..20)?)?;
        (shift.is_finite() && s2.to_f64() >= 0.0).then_some(Self { shift, s1, s2 })
    }
}

impl Element for MomentQ15 {
    const FORMAT: u8 = 11;
    const SIZE: usize = 16;
    fn put(&self, out: &mut [u8]) {
        put_all(out, &[&self.s1.to_le_bytes(), &self.s2.to_le_bytes()]);
    }
    fn get(b: &[u8]) -> Option<Self> {
        let s = Self {
            s1: i64::from_le_bytes(le(b, 0)?),
            s2: i64::from_le_bytes(le(b, 8)?),
        };
        (s.s2 >= 0).then_some(s)
    }
}

impl Element for MomentQ31 {
    const FORMAT: u8 = 12;
    const SIZE: usize = 24;
    fn put(&self, out: &mut [u8]) {
        put_all(out, &[&self.s1.to_le_bytes(), &self.s2.to_le_bytes()]);
    }
    fn get(b: &[u8]) -> Option<Self> {
        let s = Self {
            s1: i64::from_le_bytes(le(b, 0)?),
            s2: i128::from_le_bytes(le(b, 8)?),
        };
        (s.s2 >= 0).then_some(s)
    }
}

/// The moments' state: the count and every element's sums. Decoding
/// refuses sums that `count` values could not give.
/// Chunked updates (see [`crate::chunk`]): bit-identical to
/// [`Moments::update`]. The plan is whether this is the first vector.
impl<A: Moment, S: AsRef<[A]> + AsMut<[A]>> crate::chunk::Chunkable for Moments<A, S> {
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = bool;

    fn step_len(&self) -> usize {
        self.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<bool, Error> {
        if self.count >= A::MAX_COUNT {
            return Err(Error::CountOverflow);
        }
        Ok(self.count == 0)
    }
    fn apply_chunk(
        &mut self,
        first: &mut bool,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        A::check(x)?;
        self.piece(*first, offset, x);
        Ok(())
    }
    fn finish_step(&mut self, _: bool) -> Result<(), Error> {
        self.count += 1;
        Ok(())
    }
}

impl<A: Moment, S: AsRef<[A]> + AsMut<[A]>> Persist for Moments<A, S> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::Moments as u8,
            format: A::FORMAT,
            len: len_u32(self.len()),
            layout: 0,
            fields: 8,
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.u64(self.count)?;
        for a in self.acc.as_ref() {
            enc.elem(a)?;
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        let count = dec.u64()?;
        if count > A::MAX_COUNT {
            return Err(Error::InvalidState);
        }
        for slot in self.acc.as_mut() {
            let v = dec.elem::<A>()?;
            if !v.valid_for(count) {
                return Err(Error::InvalidState);
            }
            if apply {
                *slot = v;
            }
        }
        if apply {
            self.count = count;
        }
        Ok(())
    }
}
