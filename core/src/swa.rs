//! Stochastic weight averaging: the equal-weight mean of snapshots.
//!
//! [`Swa`] keeps a running *sum* of the snapshots and divides by the count
//! only when read. The running-mean form `m += (x − m)/n` that most
//! frameworks use rounds at every step and drifts; a sum in the right format
//! does not:
//!
//! | accumulator `A` | snapshots | sum | most snapshots | error of the read mean |
//! |---|---|---|---|---|
//! | [`CompF32`] | `f32` | compensated pair, renormalised each add | 2²⁴ | `ε·|mean| + n·ε²·mean|x| + η` |
//! | [`I49F15`] | [`Q15`] | exact i64 | 2³² − 1 | ≤ ½ LSB, nearest-even |
//! | [`I33F31`] | [`Q31`] | exact i64 | 2³² − 1 | ≤ ½ LSB, nearest-even |
//!
//! (`ε = 2⁻²³`, `η = 2⁻¹⁴⁹` the smallest subnormal, `n` the count.) At
//! n = 10⁶ the f32 bound is `ε·|mean| + 0.12·ε·mean|x|`, about one ulp.
//! The fixed-point means are correctly rounded and, because the sum is
//! exact, independent of the order the snapshots arrive in.
//!
//! ```
//! use polyak::{Swa, CompF32};
//!
//! let mut swa = Swa::new([CompF32::ZERO; 2]);
//! swa.update(&[1.0, 10.0])?;
//! swa.update(&[2.0, 20.0])?;
//! let mut mean = [0.0f32; 2];
//! swa.read_into(&mut mean)?;
//! assert_eq!(mean, [1.5, 15.0]);
//! assert_eq!(swa.count(), 2);
//! # Ok::<(), polyak::Error>(())
//! ```

use core::num::NonZeroU64;

use crate::codec::{ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist};
use crate::ema::CHUNK;
use crate::ema::{check_len, len_u32};
use crate::format::{CompF32, F32_LIMIT, I33F31, I49F15, check_f32, valid_f32};
use crate::kernel::swa as k;
use crate::policy::{Checked, Input, InputPolicy, Reject, screen};
use crate::{Error, Q15, Q31};

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::CompF32 {}
    impl Sealed for super::I49F15 {}
    impl Sealed for super::I33F31 {}
}

/// An accumulator element type: it fixes the snapshot format and the sum's
/// arithmetic of a [`Swa`]. Implemented for [`CompF32`], [`I49F15`] and
/// [`I33F31`]; sealed.
pub trait SwaAccumulator: Copy + core::fmt::Debug + sealed::Sealed + Element {
    /// The snapshot element type.
    type Param: Copy + crate::policy::Input;
    /// The zero accumulator.
    const ZERO: Self;
    /// The largest count for which the sum stays exact (fixed point) or
    /// the count stays exact in f32 (2²⁴).
    const MAX_COUNT: u32;
    /// Checks snapshot values (f32: finite and within [`F32_LIMIT`]).
    fn check(params: &[Self::Param]) -> Result<(), Error>;
    /// Whether one value would pass [`check`](Self::check).
    #[doc(hidden)]
    fn valid(_x: &Self::Param) -> bool {
        true
    }
    /// A zero snapshot value.
    #[doc(hidden)]
    const PARAM_ZERO: Self::Param;
    /// Whether one sum could come from `count` valid snapshots.
    fn valid_for(&self, count: u32) -> bool;
    /// Checks that `acc` could be the sum of `count` valid snapshots.
    fn check_state(acc: &[Self], count: u32) -> Result<(), Error> {
        if acc.iter().all(|a| a.valid_for(count)) {
            Ok(())
        } else {
            Err(Error::InvalidState)
        }
    }
    #[doc(hidden)]
    fn add(acc: &mut [Self], params: &[Self::Param]);
    /// `acc[i] −= x[i]` (exact for fixed point, compensated for f32).
    #[doc(hidden)]
    fn sub(acc: &mut [Self], params: &[Self::Param]);
    #[doc(hidden)]
    fn mean(acc: &[Self], count: NonZeroU64, out: &mut [Self::Param]);
}

/// f32 snapshots summed in a [`CompF32`] pair: `(h, e) = TwoSum(hi, x)`,
/// then `(hi, lo) = TwoSum(h, lo + e)`.
///
/// **Rounding**: the only roundings are `lo + e` (second order), `fl(hi +
/// lo)` and the division, all nearest-even. **Overflow**: none, inputs are
/// limited to [`F32_LIMIT`] and the count to 2²⁴.
///
/// **Bound**: after `n` snapshots, per element,
/// `|read − mean| ≤ ε·|mean| + n·ε²·mean|x| + η`.
impl SwaAccumulator for CompF32 {
    type Param = f32;
    const ZERO: Self = CompF32::ZERO;
    const MAX_COUNT: u32 = 1 << 24;

    fn check(params: &[f32]) -> Result<(), Error> {
        check_f32(params)
    }
    fn valid(x: &f32) -> bool {
        valid_f32(*x)
    }
    const PARAM_ZERO: f32 = 0.0;
    fn valid_for(&self, count: u32) -> bool {
        // n·2^100 ≤ 2^124 is exact in f32.
        let bound = F32_LIMIT * count as f32;
        self.hi().abs() <= bound && self.lo().is_finite() && self.hi() + self.lo() == self.hi()
    }
    fn add(acc: &mut [CompF32], params: &[f32]) {
        k::add_comp(acc, params);
    }
    fn sub(acc: &mut [CompF32], params: &[f32]) {
        for (a, &x) in acc.iter_mut().zip(params) {
            *a = k::comp_add(*a, -x);
        }
    }
    fn mean(acc: &[CompF32], count: NonZeroU64, out: &mut [f32]) {
        // count ≤ 2^24, exact in f32.
        k::mean_comp(acc, count.get() as f32, out);
    }
}

/// Q15 snapshots summed exactly in an i64 with 15 fractional bits.
///
/// **Rounding**: the sum is exact; the mean is rounded once, to nearest,
/// ties to even. **Overflow**: impossible below [`Self::MAX_COUNT`]
/// snapshots (`|sum| ≤ 2⁴⁷`).
///
/// **Bound**: `|read − mean| ≤ ½` LSB, and the result does not depend on
/// the order of the snapshots.
impl SwaAccumulator for I49F15 {
    type Param = Q15;
    const ZERO: Self = I49F15::ZERO;
    const MAX_COUNT: u32 = u32::MAX;

    fn check(_: &[Q15]) -> Result<(), Error> {
        Ok(())
    }
    const PARAM_ZERO: Q15 = Q15::ZERO;
    fn valid_for(&self, count: u32) -> bool {
        fixed_sum_valid(self.to_bits(), count, 15)
    }
    fn add(acc: &mut [I49F15], params: &[Q15]) {
        k::add_q15(acc, params);
    }
    fn sub(acc: &mut [I49F15], params: &[Q15]) {
        for (a, x) in acc.iter_mut().zip(params) {
            *a = I49F15::from_bits(a.to_bits() - i64::from(x.to_bits()));
        }
    }
    fn mean(acc: &[I49F15], count: NonZeroU64, out: &mut [Q15]) {
        k::mean_q15(acc, count, out);
    }
}

/// Q31 snapshots summed exactly in an i64 with 31 fractional bits.
///
/// **Rounding**: the sum is exact; the mean is rounded once, to nearest,
/// ties to even. **Overflow**: impossible below [`Self::MAX_COUNT`]
/// snapshots (`|sum| ≤ (2³² − 1)·2³¹ < 2⁶³`).
///
/// **Bound**: `|read − mean| ≤ ½` LSB, independent of snapshot order.
impl SwaAccumulator for I33F31 {
    type Param = Q31;
    const ZERO: Self = I33F31::ZERO;
    const MAX_COUNT: u32 = u32::MAX;

    fn check(_: &[Q31]) -> Result<(), Error> {
        Ok(())
    }
    const PARAM_ZERO: Q31 = Q31::ZERO;
    fn valid_for(&self, count: u32) -> bool {
        fixed_sum_valid(self.to_bits(), count, 31)
    }
    fn add(acc: &mut [I33F31], params: &[Q31]) {
        k::add_q31(acc, params);
    }
    fn sub(acc: &mut [I33F31], params: &[Q31]) {
        for (a, x) in acc.iter_mut().zip(params) {
            *a = I33F31::from_bits(a.to_bits() - i64::from(x.to_bits()));
        }
    }
    fn mean(acc: &[I33F31], count: NonZeroU64, out: &mut [Q31]) {
        k::mean_q31(acc, count, out);
    }
}

/// A sum of `count` values in `[−2^frac, 2^frac − 1]` lies in
/// `[−count·2^frac, count·(2^frac − 1)]`.
fn fixed_sum_valid(sum: i64, count: u32, frac: u32) -> bool {
    let n = i64::from(count);
    (-(n << frac)..=n * ((1i64 << frac) - 1)).contains(&sum)
}

/// The equal-weight average of every snapshot since construction or reset,
/// kept as an exact (fixed point) or compensated (f32) sum in caller
/// storage.
///
/// `A` is the accumulator element type (see the [module docs](self));
/// `S` is `[A; N]`, `&mut [A]`, `heapless::Vec<A, N>` or any storage with
/// `AsRef<[A]> + AsMut<[A]>`.
#[derive(Debug, Clone)]
pub struct Swa<A: SwaAccumulator, S, P: InputPolicy = Reject> {
    acc: S,
    count: u32,
    skipped: u64,
    _elem: core::marker::PhantomData<fn() -> (A, P)>,
}

impl<A: SwaAccumulator, S: AsRef<[A]> + AsMut<[A]>> Swa<A, S> {
    /// An empty average over `storage`, which is zero-filled.
    pub fn new(mut storage: S) -> Self {
        storage.as_mut().fill(A::ZERO);
        Self {
            acc: storage,
            count: 0,
            skipped: 0,
            _elem: core::marker::PhantomData,
        }
    }

    /// Resumes from a saved sum and count (for example restored from
    /// flash).
    ///
    /// # Errors
    /// [`Error::InvalidState`] if `count` exceeds [`SwaAccumulator::MAX_COUNT`]
    /// or the sums could not come from `count` valid snapshots.
    ///
    /// ```
    /// use polyak::{I49F15, Q15, Swa};
    /// // three snapshots of 0.5 summed earlier, restored
    /// let mut swa = Swa::from_parts([I49F15::from_num(1.5)], 3)?;
    /// swa.update(&[Q15::from_num(-0.5)])?;
    /// let mut out = [Q15::ZERO];
    /// swa.read_into(&mut out)?;
    /// assert_eq!(out, [Q15::from_num(0.25)]);
    /// assert!(Swa::from_parts([I49F15::from_num(2)], 1).is_err()); // 2 > one Q15 value
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn from_parts(storage: S, count: u32) -> Result<Self, Error> {
        if count > A::MAX_COUNT {
            return Err(Error::InvalidState);
        }
        A::check_state(storage.as_ref(), count)?;
        Ok(Self {
            acc: storage,
            count,
            skipped: 0,
            _elem: core::marker::PhantomData,
        })
    }
}

impl<A: SwaAccumulator, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> Swa<A, S, P> {
    /// Changes the input policy (default [`Reject`]). Under
    /// [`Skip`](crate::Skip) a bad element adds its current mean instead
    /// (its mean does not move; before the first snapshot, 0), and is
    /// counted in [`skipped`](Self::skipped).
    pub fn with_policy<Q: InputPolicy>(self) -> Swa<A, S, Q> {
        Swa {
            acc: self.acc,
            count: self.count,
            skipped: self.skipped,
            _elem: core::marker::PhantomData,
        }
    }

    /// Elements skipped under [`Skip`](crate::Skip) since construction or
    /// reset.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.acc.as_ref().len()
    }

    /// Whether the buffer has no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Snapshots averaged so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The running sums.
    pub fn accumulator(&self) -> &[A] {
        self.acc.as_ref()
    }

    /// Gives the storage back.
    pub fn into_inner(self) -> S {
        self.acc
    }

    /// Adds one snapshot.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; for f32, [`Error::NonFinite`] or
    /// [`Error::OutOfRange`]; [`Error::CountOverflow`] once
    /// [`SwaAccumulator::MAX_COUNT`] snapshots are in. The state is
    /// unchanged on error.
    ///
    /// ```
    /// use polyak::{CompF32, Error, Swa};
    /// let mut swa = Swa::new([CompF32::ZERO; 2]);
    /// swa.update(&[1.0, 2.0])?;
    /// assert_eq!(swa.update(&[1.0]), Err(Error::LengthMismatch { expected: 2, found: 1 }));
    /// assert_eq!(swa.count(), 1);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn update(&mut self, params: &[A::Param]) -> Result<(), Error> {
        check_len(self.len(), params.len())?;
        if self.count >= A::MAX_COUNT {
            return Err(Error::CountOverflow);
        }
        let bad = screen::<P, _>(params, A::valid, A::check)?;
        self.apply(params, bad);
        Ok(())
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
        if self.count >= A::MAX_COUNT {
            return Err(Error::CountOverflow);
        }
        self.apply(params, 0);
        Ok(())
    }

    /// Adds checked parameters, `bad` of them to impute.
    fn apply(&mut self, params: &[A::Param], bad: u64) {
        self.piece(0, params);
        self.end(bad);
    }

    /// Adds checked parameters to elements `offset..offset + params.len()`
    /// (under `Skip`, a bad element adds its current mean).
    fn piece(&mut self, offset: usize, params: &[A::Param]) {
        let n = NonZeroU64::new(u64::from(self.count));
        let Some(acc) = self
            .acc
            .as_mut()
            .get_mut(offset..offset.saturating_add(params.len()))
        else {
            return;
        };
        if !P::SKIP || params.iter().all(A::valid) {
            A::add(acc, params);
            return;
        }
        // Bad elements under `Skip`: a chunk holding them is copied with
        // the elements' current means imputed.
        let mut tmp = [A::PARAM_ZERO; CHUNK];
        for (a, x) in acc.chunks_mut(CHUNK).zip(params.chunks(CHUNK)) {
            let x = if x.iter().any(|v| !A::valid(v)) {
                for ((t, v), a) in tmp.iter_mut().zip(x).zip(a.iter()) {
                    *t = match (A::valid(v), n) {
                        (true, _) => *v,
                        (false, Some(n)) => {
                            let mut m = [A::PARAM_ZERO];
                            A::mean(core::slice::from_ref(a), n, &mut m);
                            m[0]
                        }
                        (false, None) => A::PARAM_ZERO,
                    };
                }
                tmp.get(..x.len()).unwrap_or(&[])
            } else {
                x
            };
            A::add(a, x);
        }
    }

    /// Ends a snapshot: the count, the skipped tally.
    fn end(&mut self, bad: u64) {
        self.count += 1;
        self.skipped = self.skipped.saturating_add(bad);
    }

    /// Writes the mean of the snapshots into `out`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::Empty`] before the first
    /// snapshot. `out` is untouched on error.
    ///
    /// ```
    /// use polyak::{I33F31, Q31, Swa};
    /// let mut swa = Swa::new([I33F31::ZERO; 1]);
    /// for raw in [1, 2, 2, 2] {
    ///     swa.update(&[Q31::from_bits(raw)])?;
    /// }
    /// let mut out = [Q31::ZERO];
    /// swa.read_into(&mut out)?; // 7/4 = 1.75 LSB rounds to 2
    /// assert_eq!(out[0].to_bits(), 2);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn read_into(&self, out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        let n = NonZeroU64::new(u64::from(self.count)).ok_or(Error::Empty)?;
        A::mean(self.acc.as_ref(), n, out);
        Ok(())
    }

    /// Forgets every snapshot.
    pub fn reset(&mut self) {
        self.acc.as_mut().fill(A::ZERO);
        self.count = 0;
        self.skipped = 0;
    }
}

/// Chunked snapshots (see [`crate::chunk`]): bit-identical to
/// [`Swa::update`]. The plan is the count of elements skipped.
impl<A: SwaAccumulator, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> crate::chunk::Chunkable
    for Swa<A, S, P>
{
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = u64;

    fn step_len(&self) -> usize {
        self.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<u64, Error> {
        if self.count >= A::MAX_COUNT {
            return Err(Error::CountOverflow);
        }
        Ok(0)
    }
    fn apply_chunk(&mut self, bad: &mut u64, offset: usize, x: &[A::Param]) -> Result<(), Error> {
        *bad += screen::<P, _>(x, A::valid, A::check)?;
        self.piece(offset, x);
        Ok(())
    }
    fn finish_step(&mut self, bad: u64) -> Result<(), Error> {
        self.end(bad);
        Ok(())
    }
}

/// The SWA's state: the count and the sums (each checked against the
/// count on decode).
impl<A: SwaAccumulator, S: AsRef<[A]> + AsMut<[A]>, P: InputPolicy> Persist for Swa<A, S, P> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::Swa as u8,
            format: A::FORMAT,
            len: len_u32(self.len()),
            layout: 0,
            fields: 1 + 4 + 8,
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.u8(u8::from(P::SKIP))?;
        enc.u32(self.count)?;
        enc.u64(self.skipped)?;
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
        if dec.u8()? != u8::from(P::SKIP) {
            return Err(Error::ConfigMismatch);
        }
        let count = dec.u32()?;
        let skipped = dec.u64()?;
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
            self.skipped = skipped;
        }
        Ok(())
    }
}
