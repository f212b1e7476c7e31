//! Per-segment policies: weights averaged, statistics following the live
//! model, counters summed — by construction.
//!
//! [`Segmented`] wraps any averager or aggregator (any [`Chunkable`]) and
//! a [`Layout`] whose segments carry a [`Policy`]. Segments marked
//! [`Policy::Average`] go to the wrapped method; the others are kept in a
//! small buffer of their own (`layout.kept_len()` values), in the model's
//! element type:
//!
//! | policy | after steps (or models) `x₁ … x_t` | typical segment |
//! |---|---|---|
//! | `Average` | the method's average | weights |
//! | `CopyLatest` | `x_t` | a step counter, statistics recomputed for the average |
//! | `Sum` | `x₁ + … + x_t`, exact for integers | batches tracked, examples seen |
//! | `Max` | `max(x₁, …, x_t)` | a high-water mark |
//! | `Skip` | `x₁` | frozen or excluded layers |
//!
//! For f32, `Sum` is exact while the sums are integers below 2²⁴ (and is
//! refused, [`Error::OutOfRange`], past [`F32_LIMIT`]);
//! for Q15 and Q31 it adds the raw integers (a counter stored in the
//! parameter buffer as an integer) and refuses to wrap. The average's read
//! (`read_into`, `finish`, …) fills every element; then
//! [`fill_into`](Segmented::fill_into) writes the kept segments over it.
//!
//! Steps may be chunked like any other ([`Segmented`] is itself
//! [`Chunkable`]); a chunk's values are all checked before any of it is
//! applied.
//!
//! ```
//! use polyak::layout::{Layout, Policy};
//! use polyak::segment::Segmented;
//! use polyak::{CompF32, Ema};
//!
//! let mut layout: Layout<3> = Layout::new();
//! layout.push("fc.weight", 2)?;
//! layout.push_with("bn.running_mean", 1, Policy::CopyLatest)?;
//! layout.push_with("bn.num_batches_tracked", 1, Policy::Sum)?;
//! let mut ema = Segmented::new(Ema::new([CompF32::ZERO; 4], 0.5)?, layout, [0.0f32; 2])?;
//! ema.update((), &[1.0, 1.0, 0.25, 1.0])?;
//! ema.update((), &[3.0, 3.0, 0.75, 1.0])?;
//! let mut out = [0.0f32; 4];
//! ema.inner().read_into(&mut out)?;
//! ema.fill_into(&mut out)?;
//! assert_eq!(out, [2.0, 2.0, 0.75, 2.0]); // averaged, latest, summed
//! # Ok::<(), polyak::Error>(())
//! ```

use crate::chunk::{ChunkInput, Chunkable, whole_step};
use crate::codec::{
    ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist, nested_len,
};
use crate::layout::{Layout, Policy, overlap};
use crate::{Error, F32_LIMIT, Q15, Q31};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for crate::Q15 {}
    impl Sealed for crate::Q31 {}
}

/// A value a segment that is not averaged can keep: f32, Q15, Q31.
/// Sealed.
pub trait Kept: Copy + sealed::Sealed {
    /// `a + x`, or `None` where the format cannot hold it.
    #[doc(hidden)]
    fn add(a: Self, x: Self) -> Option<Self>;
    /// The larger.
    #[doc(hidden)]
    fn max(a: Self, x: Self) -> Self;
}

impl Kept for f32 {
    fn add(a: f32, x: f32) -> Option<f32> {
        let r = a + x;
        (r.abs() <= F32_LIMIT).then_some(r)
    }
    fn max(a: f32, x: f32) -> f32 {
        if x > a { x } else { a }
    }
}

impl Kept for Q15 {
    fn add(a: Q15, x: Q15) -> Option<Q15> {
        a.to_bits().checked_add(x.to_bits()).map(Q15::from_bits)
    }
    fn max(a: Q15, x: Q15) -> Q15 {
        if x > a { x } else { a }
    }
}

impl Kept for Q31 {
    fn add(a: Q31, x: Q31) -> Option<Q31> {
        a.to_bits().checked_add(x.to_bits()).map(Q31::from_bits)
    }
    fn max(a: Q31, x: Q31) -> Q31 {
        if x > a { x } else { a }
    }
}

/// An averager or aggregator with per-segment policies; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Segmented<A, V, const C: usize> {
    inner: A,
    layout: Layout<C>,
    kept: V,
    steps: u64,
}

/// A step of a [`Segmented`]: the wrapped method's plan, and whether this
/// is the first step (which seeds the kept segments).
#[derive(Debug, Clone)]
pub struct SegmentPlan<P> {
    inner: P,
    first: bool,
}

impl<A: Chunkable, T: Kept, V: AsRef<[T]> + AsMut<[T]>, const C: usize> Segmented<A, V, C>
where
    for<'a> A::Input<'a>: ChunkInput<Elem = T>,
{
    /// Wraps `inner` (its steps as long as `layout`), keeping the
    /// segments that are not averaged in `kept` (`layout.kept_len()`
    /// values).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the layout does not cover the method's
    /// steps or `kept` has another length.
    pub fn new(inner: A, layout: Layout<C>, kept: V) -> Result<Self, Error> {
        crate::ema::check_len(inner.step_len(), layout.len())?;
        crate::ema::check_len(layout.kept_len(), kept.as_ref().len())?;
        Ok(Self {
            inner,
            layout,
            kept,
            steps: 0,
        })
    }

    /// One whole step (the wrapped method's arguments and input).
    ///
    /// # Errors
    /// The input's and the method's; the state is unchanged on error.
    pub fn update<'a>(&mut self, args: A::Args, x: A::Input<'a>) -> Result<(), Error>
    where
        Self: 'a,
    {
        whole_step(self, args, x)
    }

    /// The wrapped method (read its average with its own calls).
    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// The layout.
    pub fn layout(&self) -> &Layout<C> {
        &self.layout
    }

    /// The kept values, segment after segment.
    pub fn kept(&self) -> &[T] {
        self.kept.as_ref()
    }

    /// Steps (or models) taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Gives the parts back.
    pub fn into_parts(self) -> (A, Layout<C>, V) {
        (self.inner, self.layout, self.kept)
    }

    /// Writes the kept segments into `out` (the whole model's buffer),
    /// leaving the averaged ones as they are.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::Empty`] before the first step.
    pub fn fill_into(&self, out: &mut [T]) -> Result<(), Error> {
        crate::ema::check_len(self.layout.len(), out.len())?;
        if self.steps == 0 {
            return Err(Error::Empty);
        }
        let mut k = 0;
        for seg in self.layout.segments() {
            if seg.policy == Policy::Average {
                continue;
            }
            if let (Some(dst), Some(src)) = (
                out.get_mut(seg.range()),
                self.kept.as_ref().get(k..k + seg.len),
            ) {
                dst.copy_from_slice(src);
            }
            k += seg.len;
        }
        Ok(())
    }

    /// Calls `f(segment policy, first element, kept index, local range)`
    /// for every segment overlapping `offset..offset + n`.
    fn overlaps(
        &self,
        offset: usize,
        n: usize,
        mut f: impl FnMut(Policy, usize, usize, core::ops::Range<usize>),
    ) {
        let mut k = 0;
        for seg in self.layout.segments() {
            if let Some(o) = overlap(seg.range(), offset, n) {
                let kept_at = k + (o.start - seg.start);
                f(
                    seg.policy,
                    o.start,
                    kept_at,
                    o.start - offset..o.end - offset,
                );
            }
            if seg.policy != Policy::Average {
                k += seg.len;
            }
        }
    }
}

/// Chunked steps: the averaged segments go to the wrapped method (in both
/// passes of a two-pass one), the others to the kept buffer.
impl<A: Chunkable, T: Kept, V: AsRef<[T]> + AsMut<[T]>, const C: usize> Chunkable
    for Segmented<A, V, C>
where
    for<'a> A::Input<'a>: ChunkInput<Elem = T>,
{
    type Input<'a>
        = A::Input<'a>
    where
        Self: 'a;
    type Args = A::Args;
    type Plan = SegmentPlan<A::Plan>;
    const PASSES: u8 = A::PASSES;

    fn step_len(&self) -> usize {
        self.layout.len()
    }
    fn begin_step(&mut self, args: A::Args) -> Result<Self::Plan, Error> {
        Ok(SegmentPlan {
            inner: self.inner.begin_step(args)?,
            first: self.steps == 0,
        })
    }
    fn measure_chunk(
        &self,
        plan: &mut Self::Plan,
        offset: usize,
        x: A::Input<'_>,
    ) -> Result<(), Error> {
        x.check()?;
        let mut result = Ok(());
        let n = x.chunk_len()?;
        self.overlaps(offset, n, |policy, lo, _, local| {
            if policy == Policy::Average && result.is_ok() {
                result = self.inner.measure_chunk(&mut plan.inner, lo, x.part(local));
            }
        });
        result
    }
    fn end_measure(&self, plan: &mut Self::Plan) {
        self.inner.end_measure(&mut plan.inner);
    }
    fn apply_chunk(
        &mut self,
        plan: &mut Self::Plan,
        offset: usize,
        x: A::Input<'_>,
    ) -> Result<(), Error> {
        x.check()?;
        let n = x.chunk_len()?;
        // a sum that would leave the format is refused before anything
        let mut bad = None;
        if !plan.first {
            let kept = self.kept.as_ref();
            self.overlaps(offset, n, |policy, lo, k, local| {
                if policy != Policy::Sum || bad.is_some() {
                    return;
                }
                let vals = x.values().get(local).unwrap_or(&[]);
                let sums = kept.get(k..).unwrap_or(&[]);
                if let Some(i) = vals
                    .iter()
                    .zip(sums)
                    .position(|(&v, &s)| T::add(s, v).is_none())
                {
                    bad = Some(lo + i - offset);
                }
            });
        }
        if let Some(index) = bad {
            return Err(Error::OutOfRange { index });
        }
        let first = plan.first;
        let (mut segs, mut result) = (heapless::Vec::<_, C>::new(), Ok(()));
        self.overlaps(offset, n, |policy, lo, k, local| {
            let _ = segs.push((policy, lo, k, local));
        });
        for (policy, lo, k, local) in segs {
            let part = x.part(local);
            if policy == Policy::Average {
                result = self.inner.apply_chunk(&mut plan.inner, lo, part);
                if result.is_err() {
                    break;
                }
                continue;
            }
            let kept = self.kept.as_mut().get_mut(k..).unwrap_or(&mut []);
            for (s, &v) in kept.iter_mut().zip(part.values()) {
                *s = match policy {
                    _ if first => v,
                    Policy::CopyLatest => v,
                    Policy::Sum => T::add(*s, v).unwrap_or(*s),
                    Policy::Max => T::max(*s, v),
                    Policy::Skip | Policy::Average => *s,
                };
            }
        }
        result
    }
    fn step_broken(&self) -> bool {
        self.inner.step_broken()
    }
    fn finish_step(&mut self, plan: Self::Plan) -> Result<(), Error> {
        self.inner.finish_step(plan.inner)?;
        self.steps = self.steps.saturating_add(1);
        Ok(())
    }
}

/// The wrapped method's state (nested), the steps taken and the kept
/// values; the layout's hash (policies included) is in the header, so a
/// record made under other policies is refused.
impl<A, T, V, const C: usize> Persist for Segmented<A, V, C>
where
    A: Chunkable + Persist,
    T: Kept + Element,
    V: AsRef<[T]> + AsMut<[T]>,
    for<'a> A::Input<'a>: ChunkInput<Elem = T>,
{
    fn header(&self) -> Header {
        Header {
            kind: Kind::Segmented as u8,
            format: T::FORMAT,
            // the elements are the kept values; the average is nested
            len: crate::ema::len_u32(self.kept.as_ref().len()),
            layout: self.layout.hash(),
            fields: crate::ema::len_u32(nested_len(&self.inner) + 8),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.nested(&self.inner)?;
        enc.u64(self.steps)?;
        for k in self.kept.as_ref() {
            enc.elem(k)?;
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        dec.nested_into(&mut self.inner, apply)?;
        let steps = dec.u64()?;
        for slot in self.kept.as_mut() {
            let v = dec.elem::<T>()?;
            if apply {
                *slot = v;
            }
        }
        if apply {
            self.steps = steps;
        }
        Ok(())
    }
}
