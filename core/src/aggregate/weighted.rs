//! Weighted averages folded one model at a time: FedAvg, soups, sparse
//! soups, inverse-distance weights, variance correction.

use core::num::NonZeroU64;

use super::sealed::Sealed;
use crate::codec::{
    ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist, nested_len,
};
use crate::ema::{check_len, len_u32};
use crate::format::{CompF32, check_f32};
use crate::kernel::swa::comp_add;
use crate::layout::Layout;
use crate::num::div_round_i64;
use crate::{Error, I33F31, I49F15, Q15, Q31};

/// The largest `Σ_k |w_k|·max_i |x_k,i|` an f32 aggregator accepts (2¹²⁶):
/// below it no weighted sum can overflow. A model that would pass it is
/// refused with [`Error::WeightOverflow`].
pub(crate) const F32_MASS_LIMIT: f64 = 8.507_059_173_023_462e37; // 2^126

/// `max |x|` of checked f32 values.
pub(crate) fn max_abs(xs: &[f32]) -> f32 {
    xs.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// An accumulator element of a [`WeightedAverage`]: `CompF32` for f32
/// models with f32 weights, [`I49F15`] / [`I33F31`] (the exact sums
/// `Σ w·x`) for Q15 / Q31 models with `u32` weights (example counts).
/// Sealed.
pub trait WeightedAcc: Copy + core::fmt::Debug + Sealed {
    /// The model's element type.
    type Param: Copy + core::fmt::Debug + crate::policy::Input;
    /// A model's weight.
    type Weight: Copy + core::fmt::Debug;
    /// The running total of the weights (and, for f32, the overflow guard).
    type Total: Copy + core::fmt::Debug + PartialEq;
    /// The zero sum.
    const ZERO: Self;
    /// No weight yet.
    const NO_TOTAL: Self::Total;
    /// Weight 1 (a uniform soup).
    const ONE: Self::Weight;
    /// Checks a model's values.
    #[doc(hidden)]
    fn check(model: &[Self::Param]) -> Result<(), Error>;
    /// The largest magnitude of a model's values (what the f32 overflow
    /// guard needs; 0 for fixed point). A maximum: the same over any
    /// chunking.
    #[doc(hidden)]
    fn peak(model: &[Self::Param]) -> f32;
    /// Checks the weight and returns the total after adding a model whose
    /// values peak at `peak`; nothing is changed.
    #[doc(hidden)]
    fn admit(total: Self::Total, peak: f32, w: Self::Weight) -> Result<Self::Total, Error>;
    #[doc(hidden)]
    fn fold(acc: &mut [Self], model: &[Self::Param], w: Self::Weight);
    #[doc(hidden)]
    fn finish(acc: &[Self], total: Self::Total, out: &mut [Self::Param]) -> Result<(), Error>;
    /// Whether a value is zero (for masks).
    #[doc(hidden)]
    fn is_zero(x: &Self::Param) -> bool;
    /// Bytes of a saved total.
    #[doc(hidden)]
    const TOTAL_SIZE: usize;
    #[doc(hidden)]
    fn put_total<W: ByteSink>(t: Self::Total, enc: &mut Encoder<'_, W>) -> Result<(), Error>;
    /// Reads a total back, refusing one no sequence of models could give.
    #[doc(hidden)]
    fn get_total<R: ByteSource>(dec: &mut Decoder<'_, R>) -> Result<Self::Total, Error>;
    /// Whether a saved sum is possible under `total`.
    #[doc(hidden)]
    fn sum_valid(&self, total: Self::Total) -> bool;
}

/// The f32 total: the weights' compensated sum and the mass
/// `Σ w·max|x|` that bounds every sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F32Total {
    weight: CompF32,
    mass: f64,
}

/// f32 models, f32 weights `w ∈ [0, F32_LIMIT]`: products `fl(w·x)` summed
/// in a compensated pair, divided at the end by the compensated sum of the
/// weights.
///
/// **Bound**, per element, `K` models: `|out − ref| ≤ ε·(1.5·|ref| + M) +
/// (K/W + 1)·η` with `M = max_k |x_k|` and `W = Σ w` (the `η` terms:
/// products that underflow, divided by the total weight, and a quotient
/// in the subnormal range; the batch
/// [`merge::weighted_average`](crate::merge::weighted_average) scales the
/// weights to a total near 1 first, which a stream cannot).
/// **Overflow**: a model is refused ([`Error::WeightOverflow`]) once
/// `Σ w·max|x|` would pass 2¹²⁶.
impl WeightedAcc for CompF32 {
    type Param = f32;
    type Weight = f32;
    type Total = F32Total;
    const ZERO: Self = CompF32::ZERO;
    const NO_TOTAL: F32Total = F32Total {
        weight: CompF32::ZERO,
        mass: 0.0,
    };
    const ONE: f32 = 1.0;

    fn check(model: &[f32]) -> Result<(), Error> {
        check_f32(model)
    }
    fn peak(model: &[f32]) -> f32 {
        max_abs(model)
    }
    fn admit(total: F32Total, peak: f32, w: f32) -> Result<F32Total, Error> {
        // `!(w >= 0)` is true for NaN too; -0.0 is accepted as zero.
        if !(0.0..=crate::F32_LIMIT).contains(&w) {
            return Err(Error::InvalidWeight { index: 0 });
        }
        let mass = total.mass + f64::from(w) * f64::from(peak);
        let weight = comp_add(total.weight, w);
        if mass > F32_MASS_LIMIT || f64::from(weight.value()) > F32_MASS_LIMIT {
            return Err(Error::WeightOverflow);
        }
        Ok(F32Total { weight, mass })
    }
    fn fold(acc: &mut [CompF32], model: &[f32], w: f32) {
        for (a, &x) in acc.iter_mut().zip(model) {
            *a = comp_add(*a, w * x);
        }
    }
    fn finish(acc: &[CompF32], total: F32Total, out: &mut [f32]) -> Result<(), Error> {
        let t = total.weight.value();
        if t == 0.0 {
            return Err(Error::ZeroTotalWeight);
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = a.value() / t;
        }
        Ok(())
    }
    fn is_zero(x: &f32) -> bool {
        *x == 0.0
    }
    const TOTAL_SIZE: usize = 16;
    fn put_total<W: ByteSink>(t: F32Total, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.elem(&t.weight)?;
        enc.u64(t.mass.to_bits())
    }
    fn get_total<R: ByteSource>(dec: &mut Decoder<'_, R>) -> Result<F32Total, Error> {
        let weight = dec.elem::<CompF32>()?;
        let mass = f64::from_bits(dec.u64()?);
        let ok = weight.hi() >= 0.0 && (0.0..=F32_MASS_LIMIT).contains(&mass);
        ok.then_some(F32Total { weight, mass })
            .ok_or(Error::InvalidState)
    }
    // |Σ w·x| ≤ Σ w·max|x| = mass (with room for the rounding of the sums)
    fn sum_valid(&self, total: F32Total) -> bool {
        f64::from(self.value().abs()) <= total.mass * (1.0 + 1e-6) + 1e-30
    }
}

/// The assembly multiply-accumulates (weights the instructions take).
#[cfg(polyak_m4f)]
fn mac15(acc: &mut [I49F15], x: &[Q15], w: u32) -> usize {
    u16::try_from(w).map_or(0, |w| crate::kernel::arm::mac_q15(acc, x, w))
}
#[cfg(polyak_m4f)]
fn mac31(acc: &mut [I33F31], x: &[Q31], w: u32) -> usize {
    crate::kernel::arm::mac_q31(acc, x, w)
}

macro_rules! fixed_weighted {
    ($acc:ty, $param:ty, $bits:ty, $mac:ident) => {
        /// Fixed-point models, `u32` weights (example counts): `Σ w·x` is
        /// exact in i64 and the quotient is rounded once.
        ///
        /// **Bound**: `|out − ref| ≤ ½` LSB, nearest-even, the same bits
        /// in any arrival order. The weights may total at most 2³² − 1
        /// ([`Error::WeightOverflow`]).
        impl WeightedAcc for $acc {
            type Param = $param;
            type Weight = u32;
            type Total = u64;
            const ZERO: Self = <$acc>::ZERO;
            const NO_TOTAL: u64 = 0;
            const ONE: u32 = 1;

            fn check(_: &[$param]) -> Result<(), Error> {
                Ok(())
            }
            fn peak(_: &[$param]) -> f32 {
                0.0
            }
            fn admit(total: u64, _: f32, w: u32) -> Result<u64, Error> {
                let t = total + u64::from(w);
                if t > u64::from(u32::MAX) {
                    return Err(Error::WeightOverflow);
                }
                Ok(t)
            }
            fn fold(acc: &mut [$acc], model: &[$param], w: u32) {
                #[cfg(polyak_m4f)]
                let (acc, model) = {
                    let done = $mac(acc, model, w);
                    (
                        acc.get_mut(done..).unwrap_or(&mut []),
                        model.get(done..).unwrap_or(&[]),
                    )
                };
                let w = i64::from(w);
                for (a, x) in acc.iter_mut().zip(model) {
                    *a = <$acc>::from_bits(a.to_bits() + w * i64::from(x.to_bits()));
                }
            }
            fn finish(acc: &[$acc], total: u64, out: &mut [$param]) -> Result<(), Error> {
                let t = NonZeroU64::new(total).ok_or(Error::ZeroTotalWeight)?;
                for (o, a) in out.iter_mut().zip(acc) {
                    // |Σw·x / Σw| ≤ max|x|: the quotient fits the format
                    *o = <$param>::from_bits(div_round_i64(a.to_bits(), t) as $bits);
                }
                Ok(())
            }
            fn is_zero(x: &$param) -> bool {
                x.to_bits() == 0
            }
            const TOTAL_SIZE: usize = 8;
            fn put_total<W: ByteSink>(t: u64, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
                enc.u64(t)
            }
            fn get_total<R: ByteSource>(dec: &mut Decoder<'_, R>) -> Result<u64, Error> {
                let t = dec.u64()?;
                (t <= u64::from(u32::MAX))
                    .then_some(t)
                    .ok_or(Error::InvalidState)
            }
            // |Σ w·x| ≤ Σ w · 2^frac
            fn sum_valid(&self, total: u64) -> bool {
                let bound = i128::from(total) << (8 * size_of::<$bits>() - 1);
                i128::from(self.to_bits()).abs() <= bound
            }
        }
    };
}

fixed_weighted!(I49F15, Q15, i16, mac15);
fixed_weighted!(I33F31, Q31, i32, mac31);

/// One model of a chunked [`WeightedAverage`] fold (see [`crate::chunk`]):
/// its weight and the largest magnitude seen so far.
#[derive(Debug, Clone, Copy)]
pub struct WeightedPlan<W> {
    w: W,
    peak: f32,
}

/// A weighted average of models folded in one at a time, in caller
/// storage: FedAvg (weights = example counts), a uniform soup
/// ([`fold_uniform`](Self::fold_uniform)), any non-negative weights.
///
/// ```
/// use polyak::aggregate::WeightedAverage;
/// use polyak::{I49F15, Q15};
///
/// // FedAvg over two clients that saw 100 and 300 examples
/// let mut avg = WeightedAverage::new([I49F15::ZERO; 2]);
/// avg.fold(&[Q15::from_num(0.5), Q15::from_num(-0.25)], 100)?;
/// avg.fold(&[Q15::from_num(0.25), Q15::from_num(0.75)], 300)?;
/// let mut global = [Q15::ZERO; 2];
/// avg.finish(&mut global)?;
/// assert_eq!(global, [Q15::from_num(0.3125), Q15::from_num(0.5)]);
/// # Ok::<(), polyak::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct WeightedAverage<A: WeightedAcc, S> {
    acc: S,
    total: A::Total,
    models: u32,
}

impl<A: WeightedAcc, S: AsRef<[A]> + AsMut<[A]>> WeightedAverage<A, S> {
    /// An empty average over `storage` (zero-filled).
    pub fn new(mut storage: S) -> Self {
        storage.as_mut().fill(A::ZERO);
        Self {
            acc: storage,
            total: A::NO_TOTAL,
            models: 0,
        }
    }

    /// Parameters per model.
    pub fn len(&self) -> usize {
        self.acc.as_ref().len()
    }

    /// Whether the models have no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Models folded in so far.
    pub fn models(&self) -> u32 {
        self.models
    }

    /// The running total of the weights.
    pub fn total(&self) -> A::Total {
        self.total
    }

    /// The weighted sums.
    pub fn sums(&self) -> &[A] {
        self.acc.as_ref()
    }

    /// Checks a model and its weight; the total after it.
    pub(crate) fn admit(&self, model: &[A::Param], w: A::Weight) -> Result<A::Total, Error> {
        check_len(self.len(), model.len())?;
        if self.models == u32::MAX {
            return Err(Error::CountOverflow);
        }
        A::check(model)?;
        A::admit(self.total, A::peak(model), w)
    }

    /// Folds an admitted model in.
    pub(crate) fn commit(&mut self, model: &[A::Param], w: A::Weight, total: A::Total) {
        A::fold(self.acc.as_mut(), model, w);
        self.total = total;
        self.models += 1;
    }

    /// Starts a chunked fold with weight `w`.
    fn begin(&self, w: A::Weight) -> Result<WeightedPlan<A::Weight>, Error> {
        if self.models == u32::MAX {
            return Err(Error::CountOverflow);
        }
        A::admit(self.total, 0.0, w)?;
        Ok(WeightedPlan { w, peak: 0.0 })
    }

    /// Checks a chunk of a model (its values, and the overflow guard with
    /// the peak so far); returns the new peak. Nothing changes.
    fn admit_chunk(&self, plan: &WeightedPlan<A::Weight>, x: &[A::Param]) -> Result<f32, Error> {
        A::check(x)?;
        let peak = plan.peak.max(A::peak(x));
        A::admit(self.total, peak, plan.w)?;
        Ok(peak)
    }

    /// Checks a chunk and folds it into elements `offset..`, raising the
    /// plan's peak; nothing changes on error.
    fn chunk(
        &mut self,
        plan: &mut WeightedPlan<A::Weight>,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        let peak = self.admit_chunk(plan, x)?;
        self.fold_at(offset, x, plan.w);
        plan.peak = peak;
        Ok(())
    }

    /// Folds an admitted chunk into elements `offset..`.
    fn fold_at(&mut self, offset: usize, x: &[A::Param], w: A::Weight) {
        let acc = self.acc.as_mut().get_mut(offset..).unwrap_or(&mut []);
        A::fold(acc.get_mut(..x.len()).unwrap_or(&mut []), x, w);
    }

    /// Ends a chunked fold: the total, the count.
    fn end(&mut self, plan: &WeightedPlan<A::Weight>) -> Result<(), Error> {
        self.total = A::admit(self.total, plan.peak, plan.w)?;
        self.models += 1;
        Ok(())
    }

    /// Folds in one model with weight `w`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; for f32, [`Error::NonFinite`] /
    /// [`Error::OutOfRange`] for a bad value and [`Error::InvalidWeight`]
    /// for a negative, NaN or too large weight; [`Error::WeightOverflow`];
    /// [`Error::CountOverflow`] after 2³² − 1 models. The state is
    /// unchanged on error.
    pub fn fold(&mut self, model: &[A::Param], w: A::Weight) -> Result<(), Error> {
        let total = self.admit(model, w)?;
        self.commit(model, w, total);
        Ok(())
    }

    /// Folds in one model with weight 1 (a uniform soup).
    ///
    /// # Errors
    /// As [`fold`](Self::fold).
    pub fn fold_uniform(&mut self, model: &[A::Param]) -> Result<(), Error> {
        self.fold(model, A::ONE)
    }

    /// Writes the weighted average into `out`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::ZeroTotalWeight`] before any
    /// weight (no models, or all weights zero). `out` is untouched on
    /// error.
    pub fn finish(&self, out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        A::finish(self.acc.as_ref(), self.total, out)
    }

    /// Writes the average into the segments of `layout` whose `include`
    /// flag is set, and leaves the others as they are (layer-wise
    /// averaging: the local model keeps its own copy of the excluded
    /// layers).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `layout` does not cover the model or
    /// `include` has another number of segments; otherwise as
    /// [`finish`](Self::finish).
    ///
    /// ```
    /// use polyak::aggregate::WeightedAverage;
    /// use polyak::layout::Layout;
    ///
    /// let mut layout: Layout<2> = Layout::new();
    /// layout.push("body", 2)?;
    /// layout.push("head", 1)?;
    /// let mut avg = WeightedAverage::new([polyak::CompF32::ZERO; 3]);
    /// avg.fold_uniform(&[1.0, 1.0, 1.0])?;
    /// avg.fold_uniform(&[3.0, 3.0, 3.0])?;
    /// let mut local = [9.0f32; 3];
    /// avg.finish_segments(&mut local, &layout, &[true, false])?; // keep the head
    /// assert_eq!(local, [2.0, 2.0, 9.0]);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    pub fn finish_segments<const C: usize>(
        &self,
        out: &mut [A::Param],
        layout: &Layout<C>,
        include: &[bool],
    ) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        check_len(self.len(), layout.len())?;
        check_len(layout.segments().len(), include.len())?;
        if self.total == A::NO_TOTAL {
            return Err(Error::ZeroTotalWeight);
        }
        for (seg, _) in layout
            .segments()
            .iter()
            .zip(include)
            .filter(|(_, inc)| **inc)
        {
            let r = seg.range();
            if let (Some(a), Some(o)) = (self.acc.as_ref().get(r.clone()), out.get_mut(r)) {
                A::finish(a, self.total, o)?;
            }
        }
        Ok(())
    }

    /// Forgets every model.
    pub fn reset(&mut self) {
        self.acc.as_mut().fill(A::ZERO);
        self.total = A::NO_TOTAL;
        self.models = 0;
    }
}

impl<S: AsRef<[CompF32]> + AsMut<[CompF32]>> WeightedAverage<CompF32, S> {
    /// Inverse-distance weighting (IDA): folds `model` with weight
    /// `floor / max(‖model − reference‖, floor)`, so models close to the
    /// reference count most. Returns the weight used.
    ///
    /// This is the snapshot-of-reference formulation: the reference (the
    /// current global model, say) is fixed before the round, and each
    /// model's weight needs only that model and the reference, so models
    /// still stream in one at a time. The weights are proportional to
    /// `1/‖θ_k − θ_ref‖`, scaled by `floor` so that they lie in `(0, 1]`;
    /// a model within `floor` of the reference gets weight 1. The distance
    /// is summed in f64.
    ///
    /// # Errors
    /// [`Error::InvalidCoefficient`] unless `floor` is positive and
    /// finite; otherwise as [`fold`](Self::fold) (also for bad reference
    /// values).
    ///
    /// ```
    /// use polyak::aggregate::WeightedAverage;
    ///
    /// let reference = [0.0f32, 0.0];
    /// let mut avg = WeightedAverage::new([polyak::CompF32::ZERO; 2]);
    /// assert_eq!(avg.fold_inverse_distance(&[3.0, 4.0], &reference, 1.0)?, 0.2);
    /// assert_eq!(avg.fold_inverse_distance(&[0.6, 0.8], &reference, 1.0)?, 1.0);
    /// # Ok::<(), polyak::Error>(())
    /// ```
    #[cfg(feature = "libm")]
    pub fn fold_inverse_distance(
        &mut self,
        model: &[f32],
        reference: &[f32],
        floor: f32,
    ) -> Result<f32, Error> {
        check_len(self.len(), reference.len())?;
        check_len(self.len(), model.len())?;
        let mut plan = ida_begin(self, floor)?;
        ida_measure(&mut plan, model, reference)?;
        let w = ida_weight(&plan, floor);
        self.fold(model, w)?;
        Ok(w)
    }
}

/// A distance measured for [`InverseDistance`]: the exact sum of squared
/// differences, then the weight.
#[cfg(feature = "libm")]
#[derive(Debug, Clone, Copy)]
pub struct DistancePlan {
    floor: f32,
    d2: crate::exact::ExactSum,
    fold: WeightedPlan<f32>,
}

#[cfg(feature = "libm")]
fn ida_begin<S: AsRef<[CompF32]> + AsMut<[CompF32]>>(
    avg: &WeightedAverage<CompF32, S>,
    floor: f32,
) -> Result<DistancePlan, Error> {
    if !(floor > 0.0 && floor.is_finite()) {
        return Err(Error::InvalidCoefficient);
    }
    Ok(DistancePlan {
        floor,
        d2: crate::exact::ExactSum::new(),
        fold: avg.begin(1.0)?,
    })
}

/// Adds a chunk's squared distances (values checked first).
#[cfg(feature = "libm")]
fn ida_measure(plan: &mut DistancePlan, model: &[f32], reference: &[f32]) -> Result<(), Error> {
    check_f32(reference)?;
    check_f32(model)?;
    for (&x, &r) in model.iter().zip(reference) {
        let d = f64::from(x) - f64::from(r);
        plan.d2.add(d * d);
    }
    Ok(())
}

/// `floor / max(‖model − reference‖, floor)`.
#[cfg(feature = "libm")]
fn ida_weight(plan: &DistancePlan, floor: f32) -> f32 {
    let d = libm::sqrt(plan.d2.value());
    if d <= f64::from(floor) {
        1.0
    } else {
        (f64::from(floor) / d) as f32
    }
}

/// Inverse-distance weighting in chunks: a [`WeightedAverage`] whose
/// chunked steps are [`fold_inverse_distance`](WeightedAverage::fold_inverse_distance)
/// (two passes: the distance, then the fold). The step's argument is the
/// floor; each chunk is `(model, reference)`.
#[cfg(feature = "libm")]
#[derive(Debug, Clone)]
pub struct InverseDistance<S> {
    avg: WeightedAverage<CompF32, S>,
    last: f32,
}

#[cfg(feature = "libm")]
impl<S: AsRef<[CompF32]> + AsMut<[CompF32]>> InverseDistance<S> {
    /// Wraps an average.
    pub fn new(avg: WeightedAverage<CompF32, S>) -> Self {
        Self { avg, last: 0.0 }
    }
    /// The average.
    pub fn average(&self) -> &WeightedAverage<CompF32, S> {
        &self.avg
    }
    /// The weight of the last model folded in (0 before the first).
    pub fn last_weight(&self) -> f32 {
        self.last
    }
    /// Gives the average back.
    pub fn into_inner(self) -> WeightedAverage<CompF32, S> {
        self.avg
    }
}

#[cfg(feature = "libm")]
impl<S: AsRef<[CompF32]> + AsMut<[CompF32]>> crate::chunk::Chunkable for InverseDistance<S> {
    type Input<'a>
        = (&'a [f32], &'a [f32])
    where
        Self: 'a;
    type Args = f32;
    type Plan = DistancePlan;
    const PASSES: u8 = 2;

    fn step_len(&self) -> usize {
        self.avg.len()
    }
    fn begin_step(&mut self, floor: f32) -> Result<DistancePlan, Error> {
        ida_begin(&self.avg, floor)
    }
    fn measure_chunk(
        &self,
        plan: &mut DistancePlan,
        _: usize,
        (x, r): (&[f32], &[f32]),
    ) -> Result<(), Error> {
        ida_measure(plan, x, r)
    }
    fn end_measure(&self, plan: &mut DistancePlan) {
        plan.fold.w = ida_weight(plan, plan.floor);
    }
    fn apply_chunk(
        &mut self,
        plan: &mut DistancePlan,
        offset: usize,
        (x, r): (&[f32], &[f32]),
    ) -> Result<(), Error> {
        check_f32(r)?;
        self.avg.chunk(&mut plan.fold, offset, x)
    }
    fn finish_step(&mut self, plan: DistancePlan) -> Result<(), Error> {
        self.avg.end(&plan.fold)?;
        self.last = plan.fold.w;
        Ok(())
    }
}

/// A weighted average that preserves a shared sparsity mask (Sparse Model
/// Soups): the first model fixes the mask (its non-zero elements); every
/// later model must be zero exactly where the mask is, and non-zero where
/// it is not, or it is refused with [`Error::MaskMismatch`] (the index of
/// the first differing element) and nothing changes. Elements outside the
/// mask are exactly zero in the result.
///
/// The mask lives in caller storage `M` (`[u32]` words, one bit per
/// parameter, at least `⌈N/32⌉` words).
///
/// ```
/// use polyak::aggregate::MaskedAverage;
/// use polyak::Error;
///
/// let mut soup = MaskedAverage::new([polyak::CompF32::ZERO; 3], [0u32; 1])?;
/// soup.fold(&[0.5, 0.0, -1.0], 1.0)?;
/// soup.fold(&[1.5, 0.0, -3.0], 1.0)?;
/// assert_eq!(soup.fold(&[1.0, 2.0, -1.0], 1.0), Err(Error::MaskMismatch { index: 1 }));
/// let mut out = [0.0f32; 3];
/// soup.finish(&mut out)?;
/// assert_eq!(out, [1.0, 0.0, -2.0]);
/// # Ok::<(), polyak::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MaskedAverage<A: WeightedAcc, S, M> {
    avg: WeightedAverage<A, S>,
    mask: M,
}

impl<A: WeightedAcc, S: AsRef<[A]> + AsMut<[A]>, M: AsRef<[u32]> + AsMut<[u32]>>
    MaskedAverage<A, S, M>
{
    /// An empty average over `storage`, with `mask` (zero-filled) for the
    /// mask bits.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if `mask` has fewer than `⌈N/32⌉` words.
    pub fn new(storage: S, mut mask: M) -> Result<Self, Error> {
        let avg = WeightedAverage::new(storage);
        let words = avg.len().div_ceil(32);
        if mask.as_ref().len() < words {
            return Err(Error::LengthMismatch {
                expected: words,
                found: mask.as_ref().len(),
            });
        }
        mask.as_mut().fill(0);
        Ok(Self { avg, mask })
    }

    /// The average underneath.
    pub fn average(&self) -> &WeightedAverage<A, S> {
        &self.avg
    }

    /// Whether element `i` is in the mask (non-zero in the first model).
    pub fn in_mask(&self, i: usize) -> bool {
        self.mask
            .as_ref()
            .get(i / 32)
            .is_some_and(|w| w & (1 << (i % 32)) != 0)
    }

    /// Folds in one model with weight `w`.
    ///
    /// # Errors
    /// [`Error::MaskMismatch`] for a model whose zeros differ from the
    /// mask; otherwise as [`WeightedAverage::fold`]. The state is
    /// unchanged on error.
    pub fn fold(&mut self, model: &[A::Param], w: A::Weight) -> Result<(), Error> {
        let total = self.avg.admit(model, w)?;
        self.mask_chunk(0, model)?;
        self.avg.commit(model, w, total);
        Ok(())
    }

    /// The first model sets the mask bits of elements `offset..`; a later
    /// one must match them (nothing changes on a mismatch).
    fn mask_chunk(&mut self, offset: usize, x: &[A::Param]) -> Result<(), Error> {
        if self.avg.models() == 0 {
            let mask = self.mask.as_mut();
            for (i, x) in (offset..).zip(x) {
                if let Some(word) = mask.get_mut(i / 32) {
                    let bit = 1 << (i % 32);
                    if A::is_zero(x) {
                        *word &= !bit;
                    } else {
                        *word |= bit;
                    }
                }
            }
        } else if let Some(index) = (offset..)
            .zip(x)
            .find(|(i, x)| A::is_zero(x) == self.in_mask(*i))
            .map(|(i, _)| i)
        {
            return Err(Error::MaskMismatch { index });
        }
        Ok(())
    }

    /// Writes the average into `out` (exactly zero outside the mask).
    ///
    /// # Errors
    /// As [`WeightedAverage::finish`].
    pub fn finish(&self, out: &mut [A::Param]) -> Result<(), Error> {
        self.avg.finish(out)
    }

    /// Forgets every model and the mask.
    pub fn reset(&mut self) {
        self.avg.reset();
        self.mask.as_mut().fill(0);
    }
}

/// A uniform average of `K` models that restores, per segment, the spread
/// the averaging removed ("Vanishing Variance", Jordan et al. 2023, in its
/// layer-wise form): averaging uncorrelated models shrinks each layer's
/// deviations from their mean by about `√K`, which this undoes.
///
/// **What is preserved**, per segment `s` of the layout: with `a` the
/// plain average, `m_s` the mean of `a` over the segment, `v_s` its
/// population variance there, and `V_s` the mean over the models of each
/// model's population variance over the segment, the result is
///
/// ```text
/// out_i = m_s + (a_i − m_s)·√(V_s / v_s)          (v_s > 0; else out = a)
/// ```
///
/// so each segment keeps the average's mean and gets the models' mean
/// variance. Segment statistics and the rescaling are computed in f64 from
/// the f32 average.
///
/// **Bound**, per element, against the formula evaluated exactly on the
/// f32 average `a`: `|out − ref| ≤ ε/2·|ref| + 2⁻⁴⁰·(|m_s| + s·max|a − m_s|)`
/// with `s = √(V_s / v_s)` (the f64 statistics' rounding); `a` itself is
/// within the [`WeightedAverage`] bound of the exact average. The outputs
/// are finite (`|out − m_s| ≤ √(n·V_s)`), though they may exceed
/// [`F32_LIMIT`](crate::F32_LIMIT).
///
/// ```
/// use polyak::aggregate::VarianceCorrected;
/// use polyak::layout::Layout;
///
/// let layout: Layout<1> = Layout::single("w", 2)?;
/// let mut vc = VarianceCorrected::new([polyak::CompF32::ZERO; 2], layout)?;
/// vc.fold(&[1.0, -1.0])?; // spread 1 around 0
/// vc.fold(&[-1.0, 1.0])?; // uncorrelated: the plain average is all 0…
/// vc.fold(&[1.0, 0.0])?;
/// let mut out = [0.0f32; 2];
/// vc.finish(&mut out)?;
/// // …the corrected one keeps the mean (1/6) and the models' mean variance
/// let (m, v) = ((out[0] + out[1]) / 2.0, ((out[0] - out[1]) / 2.0).powi(2));
/// assert!((m - 1.0 / 6.0).abs() < 1e-6);
/// assert!((v - (1.0 + 1.0 + 0.25) / 3.0).abs() < 1e-6);
/// # Ok::<(), polyak::Error>(())
/// ```
#[cfg(feature = "libm")]
#[derive(Debug, Clone)]
pub struct VarianceCorrected<S, const C: usize> {
    avg: WeightedAverage<CompF32, S>,
    layout: Layout<C>,
    variance: [f64; C],
}

/// One model of a chunked [`VarianceCorrected`] fold: the segments'
/// exact sums (of the values, then of the squared deviations) and means.
#[cfg(feature = "libm")]
#[derive(Debug, Clone, Copy)]
pub struct SpreadPlan<const C: usize> {
    fold: WeightedPlan<f32>,
    sums: [crate::exact::ExactSum; C],
    means: [f64; C],
}

/// Mean and population variance of `xs`, two-pass in f64.
#[cfg(feature = "libm")]
fn mean_var(xs: &[f32]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let m = xs.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let v = xs
        .iter()
        .map(|&x| {
            let d = f64::from(x) - m;
            d * d
        })
        .sum::<f64>()
        / n;
    (m, v)
}

#[cfg(feature = "libm")]
impl<S: AsRef<[CompF32]> + AsMut<[CompF32]>, const C: usize> VarianceCorrected<S, C> {
    /// An empty average over `storage` for models laid out as `layout`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the layout does not cover the storage.
    pub fn new(storage: S, layout: Layout<C>) -> Result<Self, Error> {
        let avg = WeightedAverage::new(storage);
        check_len(avg.len(), layout.len())?;
        Ok(Self {
            avg,
            layout,
            variance: [0.0; C],
        })
    }

    /// Folds in one model (weight 1).
    ///
    /// # Errors
    /// As [`WeightedAverage::fold`].
    pub fn fold(&mut self, model: &[f32]) -> Result<(), Error> {
        check_len(self.avg.len(), model.len())?;
        crate::chunk::whole_step(self, (), model)
    }

    /// Adds `f(x)` of the chunk's elements to their segments' sums.
    fn segment_sums(
        &self,
        sums: &mut [crate::exact::ExactSum; C],
        offset: usize,
        x: &[f32],
        f: impl Fn(usize, f32) -> f64,
    ) {
        for (k, seg) in self.layout.segments().iter().enumerate() {
            let Some(o) = crate::layout::overlap(seg.range(), offset, x.len()) else {
                continue;
            };
            if let (Some(xs), Some(sum)) =
                (x.get(o.start - offset..o.end - offset), sums.get_mut(k))
            {
                for &v in xs {
                    sum.add(f(k, v));
                }
            }
        }
    }

    /// The plain average underneath.
    pub fn average(&self) -> &WeightedAverage<CompF32, S> {
        &self.avg
    }

    /// Writes the variance-corrected average into `out`.
    ///
    /// # Errors
    /// As [`WeightedAverage::finish`].
    pub fn finish(&self, out: &mut [f32]) -> Result<(), Error> {
        self.avg.finish(out)?;
        let k = f64::from(self.avg.models().max(1));
        for (v, seg) in self.variance.iter().zip(self.layout.segments()) {
            let Some(o) = out.get_mut(seg.range()) else {
                continue;
            };
            let (m, va) = mean_var(o);
            if va > 0.0 {
                let s = libm::sqrt((v / k) / va);
                for x in o.iter_mut() {
                    *x = (m + (f64::from(*x) - m) * s) as f32;
                }
            }
        }
        Ok(())
    }

    /// Forgets every model.
    pub fn reset(&mut self) {
        self.avg.reset();
        self.variance = [0.0; C];
    }
}

/// Chunked folds (see [`crate::chunk`]): the step's argument is the
/// model's weight; bit-identical to [`WeightedAverage::fold`]. A chunk
/// that would push the f32 overflow guard past its limit is refused
/// ([`Error::WeightOverflow`]), so the step cannot finish.
impl<A: WeightedAcc, S: AsRef<[A]> + AsMut<[A]>> crate::chunk::Chunkable for WeightedAverage<A, S> {
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = A::Weight;
    type Plan = WeightedPlan<A::Weight>;

    fn step_len(&self) -> usize {
        self.len()
    }
    fn begin_step(&mut self, w: A::Weight) -> Result<Self::Plan, Error> {
        self.begin(w)
    }
    fn apply_chunk(
        &mut self,
        plan: &mut Self::Plan,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        self.chunk(plan, offset, x)
    }
    fn finish_step(&mut self, plan: Self::Plan) -> Result<(), Error> {
        self.end(&plan)
    }
}

/// Chunked folds of a sparse soup: the first model's chunks set the mask
/// bits they cover; later chunks must match the mask
/// ([`Error::MaskMismatch`] with the model's index).
impl<A: WeightedAcc, S: AsRef<[A]> + AsMut<[A]>, M: AsRef<[u32]> + AsMut<[u32]>>
    crate::chunk::Chunkable for MaskedAverage<A, S, M>
{
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = A::Weight;
    type Plan = WeightedPlan<A::Weight>;

    fn step_len(&self) -> usize {
        self.avg.len()
    }
    fn begin_step(&mut self, w: A::Weight) -> Result<Self::Plan, Error> {
        self.avg.begin(w)
    }
    fn apply_chunk(
        &mut self,
        plan: &mut Self::Plan,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        let peak = self.avg.admit_chunk(plan, x)?;
        self.mask_chunk(offset, x)?;
        self.avg.fold_at(offset, x, plan.w);
        plan.peak = peak;
        Ok(())
    }
    fn finish_step(&mut self, plan: Self::Plan) -> Result<(), Error> {
        self.avg.end(&plan)
    }
}

/// Chunked folds, two passes: the segments' means (exact sums), then the
/// squared deviations (exact sums) with the fold. [`VarianceCorrected::fold`]
/// is the same two passes over one chunk.
#[cfg(feature = "libm")]
impl<S: AsRef<[CompF32]> + AsMut<[CompF32]>, const C: usize> crate::chunk::Chunkable
    for VarianceCorrected<S, C>
{
    type Input<'a>
        = &'a [f32]
    where
        Self: 'a;
    type Args = ();
    type Plan = SpreadPlan<C>;
    const PASSES: u8 = 2;

    fn step_len(&self) -> usize {
        self.avg.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<SpreadPlan<C>, Error> {
        Ok(SpreadPlan {
            fold: self.avg.begin(1.0)?,
            sums: [crate::exact::ExactSum::new(); C],
            means: [0.0; C],
        })
    }
    fn measure_chunk(
        &self,
        plan: &mut SpreadPlan<C>,
        offset: usize,
        x: &[f32],
    ) -> Result<(), Error> {
        check_f32(x)?;
        self.segment_sums(&mut plan.sums, offset, x, |_, v| f64::from(v));
        Ok(())
    }
    fn end_measure(&self, plan: &mut SpreadPlan<C>) {
        for ((m, sum), seg) in plan
            .means
            .iter_mut()
            .zip(&mut plan.sums)
            .zip(self.layout.segments())
        {
            *m = sum.value() / seg.len.max(1) as f64;
            *sum = crate::exact::ExactSum::new();
        }
    }
    fn apply_chunk(
        &mut self,
        plan: &mut SpreadPlan<C>,
        offset: usize,
        x: &[f32],
    ) -> Result<(), Error> {
        self.avg.chunk(&mut plan.fold, offset, x)?;
        let means = plan.means;
        self.segment_sums(&mut plan.sums, offset, x, |k, v| {
            let d = f64::from(v) - means.get(k).copied().unwrap_or(0.0);
            d * d
        });
        Ok(())
    }
    fn finish_step(&mut self, plan: SpreadPlan<C>) -> Result<(), Error> {
        self.avg.end(&plan.fold)?;
        for ((v, sum), seg) in self
            .variance
            .iter_mut()
            .zip(&plan.sums)
            .zip(self.layout.segments())
        {
            *v += sum.value() / seg.len.max(1) as f64;
        }
        Ok(())
    }
}

/// A weighted average's state: the sums, the total (and, for f32, the
/// overflow guard) and the model count. Decoding refuses sums the total
/// could not give.
impl<A, S> Persist for WeightedAverage<A, S>
where
    A: WeightedAcc + Element,
    S: AsRef<[A]> + AsMut<[A]>,
{
    fn header(&self) -> Header {
        Header {
            kind: Kind::WeightedAverage as u8,
            format: A::FORMAT,
            len: len_u32(self.len()),
            layout: 0,
            fields: len_u32(4 + A::TOTAL_SIZE),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.u32(self.models)?;
        A::put_total(self.total, enc)?;
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
        let models = dec.u32()?;
        let total = A::get_total(dec)?;
        for slot in self.acc.as_mut() {
            let v = dec.elem::<A>()?;
            if !v.sum_valid(total) {
                return Err(Error::InvalidState);
            }
            if apply {
                *slot = v;
            }
        }
        if apply {
            self.models = models;
            self.total = total;
        }
        Ok(())
    }
}

/// A sparse soup's state: its average (nested) and the mask words, which
/// may only have bits for existing elements.
impl<A, S, M> Persist for MaskedAverage<A, S, M>
where
    A: WeightedAcc + Element,
    S: AsRef<[A]> + AsMut<[A]>,
    M: AsRef<[u32]> + AsMut<[u32]>,
{
    fn header(&self) -> Header {
        let words = self.mask.as_ref().len();
        Header {
            kind: Kind::MaskedAverage as u8,
            format: 0,
            len: len_u32(self.avg.len()),
            layout: 0,
            fields: len_u32(nested_len(&self.avg) + 4 * words),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.nested(&self.avg)?;
        for &w in self.mask.as_ref() {
            enc.u32(w)?;
        }
        Ok(())
    }

    // `decode_from` checks the whole record (apply = false) before it
    // applies anything, so the order of the parts does not matter here
    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        let n = self.avg.len();
        dec.nested_into(&mut self.avg, apply)?;
        for (k, slot) in self.mask.as_mut().iter_mut().enumerate() {
            let w = dec.u32()?;
            // bits past the last element must be clear
            let valid = match n.saturating_sub(32 * k) {
                0 => 0,
                m if m >= 32 => u32::MAX,
                m => (1u32 << m) - 1,
            };
            if w & !valid != 0 {
                return Err(Error::InvalidState);
            }
            if apply {
                *slot = w;
            }
        }
        Ok(())
    }
}

/// The variance-corrected average's state: its average (nested) and the
/// models' summed segment variances (finite, not negative); the layout's
/// hash must match.
#[cfg(feature = "libm")]
impl<S: AsRef<[CompF32]> + AsMut<[CompF32]>, const C: usize> Persist for VarianceCorrected<S, C> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::VarianceCorrected as u8,
            format: 0,
            len: len_u32(self.avg.len()),
            layout: self.layout.hash(),
            fields: len_u32(nested_len(&self.avg) + 8 * C),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.nested(&self.avg)?;
        for v in &self.variance {
            enc.u64(v.to_bits())?;
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        dec.nested_into(&mut self.avg, apply)?;
        for slot in self.variance.iter_mut() {
            let v = f64::from_bits(dec.u64()?);
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::InvalidState);
            }
            if apply {
                *slot = v;
            }
        }
        Ok(())
    }
}
