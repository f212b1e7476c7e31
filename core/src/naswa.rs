//! Aggressive and norm-filtered SWA (Madhyastha & Jain, "On Model
//! Stability as a Function of Random Seed", 2019).
//!
//! ASWA is SWA at every step: a [`Swa`] updated after each training step
//! (with an [`SwaSchedule`](crate::swalr::SwaSchedule) whose `every` is 1).
//!
//! NASWA admits a snapshot only if its norm stays close to the running
//! average's. Precisely, with `m` the current average (before the
//! snapshot) and `τ` the threshold, snapshot `x` is admitted iff for every
//! checked group `g` of elements
//!
//! ```text
//! (1 − τ)·‖m_g‖ ≤ ‖x_g‖ ≤ (1 + τ)·‖m_g‖        (Euclidean norms)
//! ```
//!
//! i.e. the relative change of the norm is at most τ. The groups are the
//! whole buffer ([`NormScope::Overall`]) or each segment of a
//! [`Layout`] ([`NormScope::PerSegment`]). The first snapshot, and any
//! group whose average is zero, are always admitted. Rejected snapshots are
//! counted.
//!
//! The test compares squared norms, `(1 − τ)²‖m‖² ≤ ‖x‖² ≤ (1 + τ)²‖m‖²`,
//! each the exact sum of the squares (each square formed in f64; for f32
//! means, from the compensated sum divided by the count) rounded once, so
//! a decision can differ from one made in exact arithmetic only when `‖x‖`
//! is within 10⁻¹⁴ relative of a bound, and it does not depend on
//! the order in which chunks of the snapshot arrive.
//!
//! ```
//! use polyak::naswa::{Naswa, NormScope};
//! use polyak::{CompF32, layout::Layout};
//!
//! let layout: Layout<1> = Layout::single("all", 2)?;
//! let mut n = Naswa::new([CompF32::ZERO; 2], layout, 0.1, NormScope::Overall)?;
//! assert!(n.update(&[3.0, 4.0])?);     // the first is always admitted
//! assert!(n.update(&[3.2, 4.1])?);     // norm 5.2: 4 % off, admitted
//! assert!(!n.update(&[6.0, 8.0])?);    // norm 10: rejected
//! assert_eq!((n.swa().count(), n.rejected()), (2, 1));
//! # Ok::<(), polyak::Error>(())
//! ```

use core::ops::Range;

use crate::chunk::Chunkable;
use crate::codec::{ByteSink, ByteSource, Decoder, Encoder, Header, Kind, Persist, nested_len};
use crate::ema::len_u32;
use crate::exact::ExactSum;
use crate::layout::{Layout, overlap};
use crate::swa::{Swa, SwaAccumulator};
use crate::{CompF32, Error, I33F31, I49F15};

/// Which elements one norm covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum NormScope {
    /// One norm over the whole buffer.
    Overall,
    /// One norm per segment of the layout; every segment must pass.
    PerSegment,
}

/// An accumulator whose values give a norm in f64.
pub trait NormAcc: SwaAccumulator {
    /// `x²` in f64.
    #[doc(hidden)]
    fn sq(x: Self::Param) -> f64;
    /// `(acc / n)²` in f64.
    #[doc(hidden)]
    fn sq_mean(acc: Self, n: u32) -> f64;
}

impl NormAcc for CompF32 {
    fn sq(x: f32) -> f64 {
        f64::from(x) * f64::from(x)
    }
    fn sq_mean(acc: CompF32, n: u32) -> f64 {
        let m = acc.to_f64() / f64::from(n);
        m * m
    }
}

impl NormAcc for I49F15 {
    fn sq(x: crate::Q15) -> f64 {
        let v = f64::from(x.to_bits()) / 32768.0;
        v * v
    }
    fn sq_mean(acc: I49F15, n: u32) -> f64 {
        let m = acc.to_bits() as f64 / (f64::from(n) * 32768.0);
        m * m
    }
}

impl NormAcc for I33F31 {
    fn sq(x: crate::Q31) -> f64 {
        let v = f64::from(x.to_bits()) / 2_147_483_648.0;
        v * v
    }
    fn sq_mean(acc: I33F31, n: u32) -> f64 {
        let m = acc.to_bits() as f64 / (f64::from(n) * 2_147_483_648.0);
        m * m
    }
}

/// One snapshot offered to a chunked [`Naswa`]: the exact squared norms
/// of the snapshot and of the average, per checked group, and the
/// decision.
#[derive(Debug, Clone, Copy)]
pub struct NormPlan<const C: usize> {
    x2: [ExactSum; C],
    m2: [ExactSum; C],
    admit: bool,
}

/// An SWA that admits only snapshots whose norm stays within `τ` of the
/// running average's.
#[derive(Debug, Clone)]
pub struct Naswa<A: NormAcc, S, const C: usize> {
    swa: Swa<A, S>,
    layout: Layout<C>,
    tau: f32,
    scope: NormScope,
    rejected: u32,
}

impl<A: NormAcc, S: AsRef<[A]> + AsMut<[A]>, const C: usize> Naswa<A, S, C> {
    /// A norm-filtered average over `storage` (zero-filled), for a buffer
    /// laid out as `layout`, with threshold `tau ∈ (0, 1)`.
    ///
    /// # Errors
    /// [`Error::InvalidCoefficient`] unless `0 < τ < 1`;
    /// [`Error::LengthMismatch`] if the layout does not cover the storage.
    pub fn new(storage: S, layout: Layout<C>, tau: f32, scope: NormScope) -> Result<Self, Error> {
        if !(tau > 0.0 && tau < 1.0) {
            return Err(Error::InvalidCoefficient);
        }
        let swa = Swa::new(storage);
        crate::ema::check_len(swa.len(), layout.len())?;
        Ok(Self {
            swa,
            layout,
            tau,
            scope,
            rejected: 0,
        })
    }

    /// The average of the admitted snapshots.
    pub fn swa(&self) -> &Swa<A, S> {
        &self.swa
    }

    /// Snapshots refused so far.
    pub fn rejected(&self) -> u32 {
        self.rejected
    }

    /// The threshold τ.
    pub fn tau(&self) -> f32 {
        self.tau
    }

    /// Offers a snapshot: admits it (and returns `true`) if it passes the
    /// norm filter, else counts it as rejected and returns `false`.
    ///
    /// # Errors
    /// As [`Swa::update`]; the state is unchanged on error.
    pub fn update(&mut self, params: &[A::Param]) -> Result<bool, Error> {
        crate::ema::check_len(self.swa.len(), params.len())?;
        let mut plan = self.begin_step(())?;
        self.measure_chunk(&mut plan, 0, params)?;
        self.end_measure(&mut plan);
        self.apply_chunk(&mut plan, 0, params)?;
        let admitted = plan.admit;
        self.finish_step(plan)?;
        Ok(admitted)
    }

    /// The group of element `i`: 0 overall, else its segment.
    fn groups(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        let overall = (self.scope == NormScope::Overall).then_some(0..self.swa.len());
        let segs = self
            .layout
            .segments()
            .iter()
            .filter(move |_| self.scope == NormScope::PerSegment)
            .map(|s| s.range());
        overall.into_iter().chain(segs)
    }

    /// Writes the average of the admitted snapshots into `out`.
    ///
    /// # Errors
    /// As [`Swa::read_into`].
    pub fn read_into(&self, out: &mut [A::Param]) -> Result<(), Error> {
        self.swa.read_into(out)
    }

    /// Forgets every snapshot and the rejection count.
    pub fn reset(&mut self) {
        self.swa.reset();
        self.rejected = 0;
    }
}

/// Chunked snapshots, two passes: the norms (exact sums, so any order of
/// the chunks gives the same decision), then the snapshot joins the
/// average if it passed. [`Naswa::update`] is the same two passes over one
/// chunk.
impl<A: NormAcc, S: AsRef<[A]> + AsMut<[A]>, const C: usize> crate::chunk::Chunkable
    for Naswa<A, S, C>
{
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = NormPlan<C>;
    const PASSES: u8 = 2;

    fn step_len(&self) -> usize {
        self.swa.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<NormPlan<C>, Error> {
        Ok(NormPlan {
            x2: [ExactSum::new(); C],
            m2: [ExactSum::new(); C],
            admit: true,
        })
    }
    fn measure_chunk(
        &self,
        plan: &mut NormPlan<C>,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        A::check(x)?;
        let n = self.swa.count();
        let acc = self.swa.accumulator();
        for (g, r) in self.groups().enumerate() {
            let Some(o) = overlap(r, offset, x.len()) else {
                continue;
            };
            let (Some(xs), Some(ms), Some(x2), Some(m2)) = (
                x.get(o.start - offset..o.end - offset),
                acc.get(o),
                plan.x2.get_mut(g),
                plan.m2.get_mut(g),
            ) else {
                continue;
            };
            for &v in xs {
                x2.add(A::sq(v));
            }
            if n > 0 {
                for &a in ms {
                    m2.add(A::sq_mean(a, n));
                }
            }
        }
        Ok(())
    }
    fn end_measure(&self, plan: &mut NormPlan<C>) {
        let (lo, hi) = (f64::from(1.0 - self.tau), f64::from(1.0 + self.tau));
        let groups = self.groups().count();
        plan.admit = self.swa.count() == 0
            || plan.x2.iter().zip(&plan.m2).take(groups).all(|(x2, m2)| {
                let (x2, m2) = (x2.value(), m2.value());
                m2 == 0.0 || (lo * lo * m2 <= x2 && x2 <= hi * hi * m2)
            });
    }
    fn apply_chunk(
        &mut self,
        plan: &mut NormPlan<C>,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        A::check(x)?;
        if plan.admit {
            if self.swa.count() >= A::MAX_COUNT {
                return Err(Error::CountOverflow);
            }
            let mut bad = 0;
            self.swa.apply_chunk(&mut bad, offset, x)?;
        }
        Ok(())
    }
    fn finish_step(&mut self, plan: NormPlan<C>) -> Result<(), Error> {
        if plan.admit {
            self.swa.finish_step(0)
        } else {
            self.rejected = self.rejected.saturating_add(1);
            Ok(())
        }
    }
}

/// The average's state (its [`Swa`] record, nested) and the rejection
/// count. The threshold, the scope and the layout's hash are part of the
/// record: decoding under another configuration is
/// [`Error::ConfigMismatch`] (or [`Error::LayoutMismatch`]).
impl<A: NormAcc, S: AsRef<[A]> + AsMut<[A]>, const C: usize> Persist for Naswa<A, S, C> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::Naswa as u8,
            format: 0,
            len: len_u32(self.swa.len()),
            layout: self.layout.hash(),
            fields: len_u32(4 + 1 + 4 + nested_len(&self.swa)),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.f32(self.tau)?;
        enc.u8(self.scope as u8)?;
        enc.u32(self.rejected)?;
        enc.nested(&self.swa)
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        let tau = dec.f32()?;
        let scope = dec.u8()?;
        if tau.to_bits() != self.tau.to_bits() || scope != self.scope as u8 {
            return Err(Error::ConfigMismatch);
        }
        let rejected = dec.u32()?;
        dec.nested_into(&mut self.swa, apply)?;
        if apply {
            self.rejected = rejected;
        }
        Ok(())
    }
}
