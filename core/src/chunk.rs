//! Chunked steps: one step's input given in pieces, in any order.
//!
//! A model bigger than RAM lives in flash and only a page of it fits in a
//! RAM buffer. [`Chunked`] wraps any averager or aggregator that implements
//! [`Chunkable`] and takes one step (an EMA update, an SWA snapshot, one
//! model folded into a merge) as chunks `update_chunk(offset, &page)`,
//! in any order, each element exactly once:
//!
//! 1. [`begin`](Chunked::begin) fixes the step's scalars (α of this step,
//!    the model's weight, the rounding generator's start) without changing
//!    anything;
//! 2. [`update_chunk`](Chunked::update_chunk) checks a chunk (range,
//!    alignment, overlap with what this step already has, the values) and
//!    applies it to the elements it covers;
//! 3. [`finish`](Chunked::finish) refuses while elements are missing and
//!    otherwise advances the counters.
//!
//! The result is bit-identical to the whole-buffer call: every kernel
//! here is element-wise with the step's scalars fixed at the start, and
//! stochastic rounding jumps its generator to the chunk's first element.
//!
//! Methods that need a statistic of the whole model before they can touch
//! any element (a norm filter, a distance, a magnitude threshold) take
//! two passes: the chunks are given once to be measured and, after
//! `finish` answers [`Progress::ApplyPass`], once more to be applied.
//! Their statistics are summed exactly, so the order of the chunks does
//! not change them either.
//!
//! Which elements a step has seen is kept in a [`Coverage`] bitmap of
//! `32·W` bits, one per *granule* of elements: granule 1 allows any
//! chunking; a 1 MiB model of 262,144 f32 in 1 KiB pages needs granule 256
//! and 1024 bits (`W = 32`, 128 bytes).
//!
//! ```
//! use polyak::chunk::{Chunked, Progress};
//! use polyak::{CompF32, Ema};
//!
//! let mut whole = Ema::new([CompF32::ZERO; 6], 0.9)?;
//! let mut paged: Chunked<_, 1> = Chunked::new(Ema::new([CompF32::ZERO; 6], 0.9)?, 2)?;
//! let x = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
//! for _ in 0..3 {
//!     whole.update(&x)?;
//!     paged.begin(())?;
//!     paged.update_chunk(4, &x[4..])?; // pages in any order
//!     paged.update_chunk(0, &x[..2])?;
//!     assert_eq!(paged.finish(), Err(polyak::Error::StepIncomplete { index: 2 }));
//!     paged.update_chunk(2, &x[2..4])?;
//!     assert_eq!(paged.finish()?, Progress::Committed);
//! }
//! assert_eq!(paged.get()?.shadow(), whole.shadow());
//! # Ok::<(), polyak::Error>(())
//! ```

use core::num::NonZeroUsize;
use core::ops::Range;

use crate::Error;
use crate::policy::Input;

/// `⌈x / g⌉` without a panic path.
fn ceil_div(x: usize, g: NonZeroUsize) -> usize {
    x / g + usize::from(x % g != 0)
}

/// Which granules of a buffer a step has covered: `32·W` bits, one per
/// `granule` elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage<const W: usize> {
    bits: [u32; W],
    granule: NonZeroUsize,
    len: usize,
    covered: usize,
}

impl<const W: usize> Coverage<W> {
    /// A tracker for `len` elements in granules of `granule`.
    ///
    /// # Errors
    /// [`Error::InvalidWindow`] for a zero granule;
    /// [`Error::CapacityExceeded`] if `len / granule` (rounded up) exceeds
    /// `32·W`.
    pub fn new(len: usize, granule: usize) -> Result<Self, Error> {
        let granule = NonZeroUsize::new(granule).ok_or(Error::InvalidWindow)?;
        if ceil_div(len, granule) > W.saturating_mul(32) {
            return Err(Error::CapacityExceeded);
        }
        Ok(Self {
            bits: [0; W],
            granule,
            len,
            covered: 0,
        })
    }

    /// Elements tracked.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no elements are tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements per bit.
    pub fn granule(&self) -> usize {
        self.granule.get()
    }

    /// Elements covered so far.
    pub fn covered(&self) -> usize {
        self.covered
    }

    fn bit(&self, g: usize) -> bool {
        self.bits
            .get(g / 32)
            .is_some_and(|w| w >> (g % 32) & 1 != 0)
    }

    /// Checks that `offset..offset + n` is in range, on the granule (a
    /// chunk may end at the buffer's end) and not covered yet.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] past the end (`expected` is the room
    /// left), [`Error::ChunkMisaligned`], [`Error::ChunkOverlap`].
    pub fn check(&self, offset: usize, n: usize) -> Result<(), Error> {
        let end =
            offset
                .checked_add(n)
                .filter(|&e| e <= self.len)
                .ok_or(Error::LengthMismatch {
                    expected: self.len.saturating_sub(offset),
                    found: n,
                })?;
        if n == 0 {
            return Ok(());
        }
        if offset % self.granule != 0 {
            return Err(Error::ChunkMisaligned { index: offset });
        }
        if end % self.granule != 0 && end != self.len {
            return Err(Error::ChunkMisaligned { index: end });
        }
        for b in offset / self.granule..ceil_div(end, self.granule) {
            if self.bit(b) {
                return Err(Error::ChunkOverlap {
                    index: b.saturating_mul(self.granule.get()),
                });
            }
        }
        Ok(())
    }

    /// Marks `offset..offset + n` covered.
    ///
    /// # Errors
    /// As [`check`](Self::check); nothing is marked on error.
    pub fn mark(&mut self, offset: usize, n: usize) -> Result<(), Error> {
        self.check(offset, n)?;
        self.set(offset, n);
        Ok(())
    }

    /// Marks a range [`check`](Self::check) accepted.
    pub(crate) fn set(&mut self, offset: usize, n: usize) {
        if n == 0 {
            return;
        }
        for b in offset / self.granule..ceil_div(offset + n, self.granule) {
            if let Some(w) = self.bits.get_mut(b / 32) {
                *w |= 1 << (b % 32);
            }
        }
        self.covered += n;
    }

    /// The first element not covered yet, if any.
    pub fn missing(&self) -> Option<usize> {
        if self.covered == self.len {
            return None;
        }
        (0..ceil_div(self.len, self.granule))
            .find(|&b| !self.bit(b))
            .map(|b| b.saturating_mul(self.granule.get()))
    }

    /// Forgets every mark (clearing only the words its length uses).
    pub fn clear(&mut self) {
        let words = ceil_div(self.len, self.granule).div_ceil(32);
        for w in self.bits.iter_mut().take(words) {
            *w = 0;
        }
        self.covered = 0;
    }
}

/// A chunk of a step's input: one slice, or slices of equal length that
/// go together (a model and its base, a model and its Fisher diagonal).
pub trait ChunkInput: Copy {
    /// The values' type.
    type Elem: Copy;
    /// Elements in the chunk.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] if the slices differ in length.
    fn chunk_len(&self) -> Result<usize, Error>;
    /// Elements `r` of every slice (empty where out of range).
    fn part(&self, r: Range<usize>) -> Self;
    /// The model's values (the first slice): what a segment that is not
    /// averaged keeps, sums or compares.
    fn values(&self) -> &[Self::Elem];
    /// Checks every slice's values ([`Input::check`]).
    ///
    /// # Errors
    /// The first bad value's.
    fn check(&self) -> Result<(), Error>;
}

impl<T: Input> ChunkInput for &[T] {
    type Elem = T;
    fn chunk_len(&self) -> Result<usize, Error> {
        Ok(self.len())
    }
    fn part(&self, r: Range<usize>) -> Self {
        self.get(r).unwrap_or(&[])
    }
    fn values(&self) -> &[T] {
        self
    }
    fn check(&self) -> Result<(), Error> {
        T::check(self)
    }
}

impl<T: Input, U: Input> ChunkInput for (&[T], &[U]) {
    type Elem = T;
    fn chunk_len(&self) -> Result<usize, Error> {
        crate::ema::check_len(self.0.len(), self.1.len())?;
        Ok(self.0.len())
    }
    fn part(&self, r: Range<usize>) -> Self {
        (
            self.0.get(r.clone()).unwrap_or(&[]),
            self.1.get(r).unwrap_or(&[]),
        )
    }
    fn values(&self) -> &[T] {
        self.0
    }
    fn check(&self) -> Result<(), Error> {
        T::check(self.0)?;
        U::check(self.1)
    }
}

/// An averager or aggregator whose step can be given in chunks.
///
/// Implemented by every averager and streaming aggregator of the crate,
/// and by [`Segmented`](crate::segment::Segmented); driven by [`Chunked`].
/// The methods are the pieces of the whole-buffer call, which is built
/// from them. (The flash-backed EMA of [`crate::paged`] runs the EMA's
/// pieces over one RAM page of its shadow.)
pub trait Chunkable {
    /// One chunk of input.
    type Input<'a>: ChunkInput
    where
        Self: 'a;
    /// The step's arguments (`()`, a model's weight, …).
    type Args: Copy;
    /// What the step fixed at its start, plus tallies of its chunks.
    type Plan;
    /// Two for methods that measure the whole model before applying it.
    const PASSES: u8 = 1;

    /// Elements per step.
    fn step_len(&self) -> usize;

    /// Starts a step: checks `args` and the counters. Changes nothing the
    /// state means (a window may re-sum a stale sum from its store).
    ///
    /// # Errors
    /// As the whole-buffer call (a full counter, a bad weight).
    fn begin_step(&mut self, args: Self::Args) -> Result<Self::Plan, Error>;

    /// Measuring pass of a two-pass method (checks the chunk's values and
    /// adds its statistics to the plan).
    ///
    /// # Errors
    /// The chunk's values, as the whole-buffer call; the plan is unchanged
    /// on error.
    fn measure_chunk(
        &self,
        plan: &mut Self::Plan,
        offset: usize,
        x: Self::Input<'_>,
    ) -> Result<(), Error> {
        let _ = (plan, offset, x);
        Ok(())
    }

    /// Between the passes of a two-pass method: decide from the measured
    /// statistics.
    fn end_measure(&self, plan: &mut Self::Plan) {
        let _ = plan;
    }

    /// Applies a chunk to elements `offset..offset + len`.
    ///
    /// # Errors
    /// The chunk's values, as the whole-buffer call; nothing changes on
    /// error.
    fn apply_chunk(
        &mut self,
        plan: &mut Self::Plan,
        offset: usize,
        x: Self::Input<'_>,
    ) -> Result<(), Error>;

    /// Whether a failed chunk ended the step (a store that failed mid-way:
    /// the state repairs itself to before the step at its next use).
    fn step_broken(&self) -> bool {
        false
    }

    /// Ends the step: counters, tallies.
    ///
    /// # Errors
    /// A store that fails at the end of a window step; otherwise none.
    fn finish_step(&mut self, plan: Self::Plan) -> Result<(), Error>;
}

/// What [`Chunked::finish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Progress {
    /// The step is in the state.
    Committed,
    /// The measuring pass is complete: give every chunk again, to apply.
    ApplyPass,
}

/// An averager or aggregator taking its steps in chunks; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Chunked<A: Chunkable, const W: usize> {
    inner: A,
    cov: Coverage<W>,
    plan: Option<A::Plan>,
    pass: u8,
    applied: bool,
}

impl<A: Chunkable, const W: usize> Chunked<A, W> {
    /// Wraps `inner`, tracking coverage in granules of `granule` elements.
    ///
    /// # Errors
    /// As [`Coverage::new`].
    pub fn new(inner: A, granule: usize) -> Result<Self, Error> {
        let cov = Coverage::new(inner.step_len(), granule)?;
        Ok(Self {
            inner,
            cov,
            plan: None,
            pass: 0,
            applied: false,
        })
    }

    /// The wrapped state, between steps.
    ///
    /// # Errors
    /// [`Error::StepInProgress`] while a step is open (its elements are
    /// half updated).
    pub fn get(&self) -> Result<&A, Error> {
        match self.plan {
            Some(_) => Err(Error::StepInProgress),
            None => Ok(&self.inner),
        }
    }

    /// The wrapped state, between steps, for whole-buffer calls.
    ///
    /// # Errors
    /// [`Error::StepInProgress`] while a step is open.
    pub fn get_mut(&mut self) -> Result<&mut A, Error> {
        match self.plan {
            Some(_) => Err(Error::StepInProgress),
            None => Ok(&mut self.inner),
        }
    }

    /// Gives the wrapped state back (even mid-step: then half updated).
    pub fn into_inner(self) -> A {
        self.inner
    }

    /// Whether a step is open.
    pub fn in_step(&self) -> bool {
        self.plan.is_some()
    }

    /// Elements of the current pass given so far.
    pub fn covered(&self) -> usize {
        self.cov.covered()
    }

    /// The coverage of the current pass.
    pub fn coverage(&self) -> &Coverage<W> {
        &self.cov
    }

    /// Opens a step.
    ///
    /// # Errors
    /// [`Error::StepInProgress`] if one is open; otherwise as the
    /// whole-buffer call's checks of its arguments and counters.
    pub fn begin(&mut self, args: A::Args) -> Result<(), Error> {
        if self.plan.is_some() {
            return Err(Error::StepInProgress);
        }
        let plan = self.inner.begin_step(args)?;
        self.cov.clear();
        self.plan = Some(plan);
        self.pass = 0;
        self.applied = false;
        Ok(())
    }

    /// Gives elements `offset..offset + len` of the step's input.
    ///
    /// # Errors
    /// [`Error::NoStep`]; [`Error::LengthMismatch`],
    /// [`Error::ChunkMisaligned`], [`Error::ChunkOverlap`] (see
    /// [`Coverage::check`]); the values' errors (with `index` relative to
    /// the chunk). Nothing changes on error, and the chunk may be given
    /// again — except when a store fails in the middle of a window's
    /// chunk: that ends the step (see [`Chunkable::step_broken`]).
    pub fn update_chunk(&mut self, offset: usize, x: A::Input<'_>) -> Result<(), Error> {
        let Some(plan) = self.plan.as_mut() else {
            return Err(Error::NoStep);
        };
        let n = x.chunk_len()?;
        self.cov.check(offset, n)?;
        if self.pass + 1 < A::PASSES {
            self.inner.measure_chunk(plan, offset, x)?;
        } else {
            if let Err(e) = self.inner.apply_chunk(plan, offset, x) {
                if self.inner.step_broken() {
                    self.plan = None;
                    self.cov.clear();
                }
                return Err(e);
            }
            self.applied = true;
        }
        self.cov.set(offset, n);
        Ok(())
    }

    /// Ends the pass: commits the step, or (after a measuring pass) asks
    /// for the chunks again.
    ///
    /// # Errors
    /// [`Error::NoStep`]; [`Error::StepIncomplete`] with the first missing
    /// element (the step stays open); a store's error at the end of a
    /// window step.
    pub fn finish(&mut self) -> Result<Progress, Error> {
        let Some(plan) = self.plan.as_mut() else {
            return Err(Error::NoStep);
        };
        if let Some(index) = self.cov.missing() {
            return Err(Error::StepIncomplete { index });
        }
        if self.pass + 1 < A::PASSES {
            self.inner.end_measure(plan);
            self.pass += 1;
            self.cov.clear();
            return Ok(Progress::ApplyPass);
        }
        let Some(plan) = self.plan.take() else {
            return Err(Error::NoStep);
        };
        self.cov.clear();
        self.inner.finish_step(plan)?;
        Ok(Progress::Committed)
    }

    /// Drops the open step if no chunk has changed the state yet (before
    /// the first chunk, or during a measuring pass).
    ///
    /// # Errors
    /// [`Error::NoStep`]; [`Error::StepInProgress`] once chunks are
    /// applied (the RAM state cannot be rolled back: finish the step).
    pub fn abort(&mut self) -> Result<(), Error> {
        if self.plan.is_none() {
            return Err(Error::NoStep);
        }
        if self.applied {
            return Err(Error::StepInProgress);
        }
        self.plan = None;
        self.cov.clear();
        Ok(())
    }
}

/// Runs a whole-buffer step through the chunk interface: one chunk per
/// pass. Every whole-buffer update of a [`Chunkable`]
/// type is this, so the two can only agree.
pub(crate) fn whole_step<A: Chunkable>(
    a: &mut A,
    args: A::Args,
    x: A::Input<'_>,
) -> Result<(), Error> {
    crate::ema::check_len(a.step_len(), x.chunk_len()?)?;
    let mut plan = a.begin_step(args)?;
    for _ in 1..A::PASSES {
        a.measure_chunk(&mut plan, 0, x)?;
        a.end_measure(&mut plan);
    }
    a.apply_chunk(&mut plan, 0, x)?;
    a.finish_step(plan)
}
