//! Fisher-weighted and precision-weighted merging (Matena & Raffel 2022;
//! the diagonal Laplace / uncertainty-weighted form).

use super::weighted::{F32_MASS_LIMIT, max_abs};
use crate::codec::{ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist};
use crate::ema::{check_len, len_u32};
use crate::format::{CompF32, check_f32};
use crate::kernel::swa::comp_add;
use crate::{Error, F32_LIMIT};

/// One element of a [`Fisher`] merge: the compensated sums `Σ F·θ` (or
/// `Σ H·(θ − θ₀)`) and `Σ F`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[repr(C)]
pub struct FisherAcc {
    num: CompF32,
    den: CompF32,
}

impl FisherAcc {
    /// Nothing folded in.
    pub const ZERO: Self = Self {
        num: CompF32::ZERO,
        den: CompF32::ZERO,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    Empty = 0,
    Fisher = 1,
    Precision = 2,
}

/// Per-element weighted merging with a weight for every parameter of every
/// model, f32.
///
/// - **Fisher merging** ([`fold`](Self::fold), [`finish`](Self::finish)):
///   `out = Σ_k F_k·θ_k / Σ_k F_k`, each Fisher value raised to at least
///   `floor` (so an element no model is confident about still averages,
///   and the denominator is never zero).
/// - **Precision-weighted merging** ([`fold_delta`](Self::fold_delta),
///   [`finish_delta`](Self::finish_delta)): with a base model `θ₀` and
///   prior precision `H₀`, `out = θ₀ + (H₀ + Σ_k H_k)⁻¹·Σ_k H_k·(θ_k − θ₀)`
///   (diagonal `H`, each raised to `floor`). Summing differences from the
///   base keeps the precision of small updates.
///
/// One merge uses one form; mixing them is [`Error::ConfigMismatch`].
///
/// **Bounds**, per element, `K` models, `M = max_k |θ_k|`,
/// `D = max_k |θ_k − θ₀|`, `Δ = ref − θ₀`, `W` the denominator (`Σ F'`,
/// or `H₀ + Σ H'`):
/// Fisher `|out − ref| ≤ ε·(1.5·|ref| + M) + (K/W + 1)·η`;
/// precision `|out − ref| ≤ ε·(0.5·|ref| + 1.5·|Δ| + D) + (K/W + 1)·η`
/// (the `η` terms: products that underflow, divided by `W`, and a
/// quotient in the subnormal range).
///
/// Weights must be finite, non-negative and at most [`F32_LIMIT`]; a model
/// is refused ([`Error::WeightOverflow`]) once `Σ max F·max|θ|` would pass
/// 2¹²⁶. Merging is unchanged by a common scale of all weights, so
/// normalise large ones.
///
/// ```
/// use polyak::aggregate::{Fisher, FisherAcc};
///
/// let mut m = Fisher::new([FisherAcc::ZERO; 2], 1e-6)?;
/// // model a is sure of its first weight, model b of its second
/// m.fold(&[1.0, 5.0], &[3.0, 0.0])?;
/// m.fold(&[2.0, 3.0], &[1.0, 1.0])?;
/// let mut out = [0.0f32; 2];
/// m.finish(&mut out)?;
/// assert_eq!(out[0], 1.25);
/// assert!((out[1] - 3.0).abs() < 1e-5);
/// # Ok::<(), polyak::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Fisher<S> {
    acc: S,
    floor: f32,
    models: u32,
    mass: f64,
    mode: Mode,
}

/// A chunk of a [`Fisher`] fold: a model and its Fisher values, or (for
/// precision weighting) a model, the base and the precisions.
#[derive(Debug, Clone, Copy)]
pub enum FisherInput<'a> {
    /// As [`Fisher::fold`].
    Fisher {
        /// The model's values.
        theta: &'a [f32],
        /// Their Fisher values.
        fisher: &'a [f32],
    },
    /// As [`Fisher::fold_delta`].
    Delta {
        /// The model's values.
        theta: &'a [f32],
        /// The base's.
        base: &'a [f32],
        /// The precisions.
        h: &'a [f32],
    },
}

impl crate::chunk::ChunkInput for FisherInput<'_> {
    type Elem = f32;
    fn part(&self, r: core::ops::Range<usize>) -> Self {
        fn g<'s>(s: &'s [f32], r: &core::ops::Range<usize>) -> &'s [f32] {
            s.get(r.clone()).unwrap_or(&[])
        }
        let r = &r;
        match *self {
            FisherInput::Fisher { theta, fisher } => FisherInput::Fisher {
                theta: g(theta, r),
                fisher: g(fisher, r),
            },
            FisherInput::Delta { theta, base, h } => FisherInput::Delta {
                theta: g(theta, r),
                base: g(base, r),
                h: g(h, r),
            },
        }
    }
    fn values(&self) -> &[f32] {
        match *self {
            FisherInput::Fisher { theta, .. } | FisherInput::Delta { theta, .. } => theta,
        }
    }
    fn check(&self) -> Result<(), Error> {
        match *self {
            FisherInput::Fisher { theta, fisher } => {
                check_f32(theta)?;
                check_weights(fisher).map(|_| ())
            }
            FisherInput::Delta { theta, base, h } => {
                check_f32(theta)?;
                check_f32(base)?;
                check_weights(h).map(|_| ())
            }
        }
    }
    fn chunk_len(&self) -> Result<usize, Error> {
        match *self {
            FisherInput::Fisher { theta, fisher } => {
                check_len(theta.len(), fisher.len())?;
                Ok(theta.len())
            }
            FisherInput::Delta { theta, base, h } => {
                check_len(theta.len(), base.len())?;
                check_len(theta.len(), h.len())?;
                Ok(theta.len())
            }
        }
    }
}

/// A model of a chunked [`Fisher`] fold: its mode (set by its first
/// chunk) and the largest weight and value so far.
#[derive(Debug, Clone, Copy)]
pub struct FisherPlan {
    mode: Mode,
    wmax: f32,
    vmax: f32,
}

/// Chunked folds (see [`crate::chunk`]); every chunk of a model must be of
/// one kind ([`Error::ConfigMismatch`] otherwise). [`Fisher::fold`] and
/// [`Fisher::fold_delta`] are one chunk of this.
impl<S: AsRef<[FisherAcc]> + AsMut<[FisherAcc]>> crate::chunk::Chunkable for Fisher<S> {
    type Input<'a>
        = FisherInput<'a>
    where
        Self: 'a;
    type Args = ();
    type Plan = FisherPlan;

    fn step_len(&self) -> usize {
        self.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<FisherPlan, Error> {
        if self.models == u32::MAX {
            return Err(Error::CountOverflow);
        }
        Ok(FisherPlan {
            mode: Mode::Empty,
            wmax: 0.0,
            vmax: 0.0,
        })
    }
    fn apply_chunk(
        &mut self,
        plan: &mut FisherPlan,
        offset: usize,
        x: FisherInput<'_>,
    ) -> Result<(), Error> {
        self.chunk(plan, offset, x)
    }
    fn finish_step(&mut self, plan: FisherPlan) -> Result<(), Error> {
        self.end(&plan);
        Ok(())
    }
}

/// Checks weights: finite, `0 ≤ w ≤ F32_LIMIT`; returns the largest.
fn check_weights(ws: &[f32]) -> Result<f32, Error> {
    for (index, w) in ws.iter().enumerate() {
        if !(0.0..=F32_LIMIT).contains(w) {
            return Err(Error::InvalidWeight { index });
        }
    }
    Ok(ws.iter().fold(0.0f32, |m, &w| m.max(w)))
}

impl<S: AsRef<[FisherAcc]> + AsMut<[FisherAcc]>> Fisher<S> {
    /// An empty merge over `storage` (zero-filled); every weight is raised
    /// to at least `floor`.
    ///
    /// # Errors
    /// [`Error::InvalidCoefficient`] unless `floor` is positive and at most
    /// 1.
    pub fn new(mut storage: S, floor: f32) -> Result<Self, Error> {
        if !(floor > 0.0 && floor <= 1.0) {
            return Err(Error::InvalidCoefficient);
        }
        storage.as_mut().fill(FisherAcc::ZERO);
        Ok(Self {
            acc: storage,
            floor,
            models: 0,
            mass: 0.0,
            mode: Mode::Empty,
        })
    }

    /// Parameters per model.
    pub fn len(&self) -> usize {
        self.acc.as_ref().len()
    }

    /// Whether the models have no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Models folded in.
    pub fn models(&self) -> u32 {
        self.models
    }

    /// Checks and folds a chunk at `offset` (nothing changes on error).
    fn chunk(
        &mut self,
        plan: &mut FisherPlan,
        offset: usize,
        x: FisherInput<'_>,
    ) -> Result<(), Error> {
        use crate::chunk::ChunkInput;
        x.chunk_len()?;
        let mode = match x {
            FisherInput::Fisher { .. } => Mode::Fisher,
            FisherInput::Delta { .. } => Mode::Precision,
        };
        let (values_max, weights) = match x {
            FisherInput::Fisher { theta, fisher } => {
                check_f32(theta)?;
                (max_abs(theta), fisher)
            }
            FisherInput::Delta { theta, base, h } => {
                check_f32(theta)?;
                check_f32(base)?;
                // the differences are formed chunk by chunk on the stack,
                // checked for range
                let mut delta = [0.0f32; crate::ema::CHUNK];
                for (i, (t, b)) in theta
                    .chunks(crate::ema::CHUNK)
                    .zip(base.chunks(crate::ema::CHUNK))
                    .enumerate()
                {
                    let d = delta.get_mut(..t.len()).unwrap_or(&mut []);
                    for ((d, &t), &b) in d.iter_mut().zip(t).zip(b) {
                        *d = t - b;
                    }
                    check_f32(d).map_err(|e| shift_index(e, i * crate::ema::CHUNK))?;
                }
                let dmax = theta
                    .iter()
                    .zip(base)
                    .fold(0.0f32, |m, (&t, &b)| m.max((t - b).abs()));
                (dmax, h)
            }
        };
        if (self.mode != Mode::Empty && self.mode != mode)
            || (plan.mode != Mode::Empty && plan.mode != mode)
        {
            return Err(Error::ConfigMismatch);
        }
        let wmax = plan.wmax.max(check_weights(weights)?.max(self.floor));
        let vmax = plan.vmax.max(values_max.max(1.0));
        if self.mass + f64::from(wmax) * f64::from(vmax) > F32_MASS_LIMIT {
            return Err(Error::WeightOverflow);
        }
        let floor = self.floor;
        let acc = self.acc.as_mut().get_mut(offset..).unwrap_or(&mut []);
        match x {
            FisherInput::Fisher { theta, fisher } => {
                for ((a, &x), &w) in acc.iter_mut().zip(theta).zip(fisher) {
                    let w = w.max(floor);
                    a.num = comp_add(a.num, w * x);
                    a.den = comp_add(a.den, w);
                }
            }
            FisherInput::Delta { theta, base, h } => {
                for (((a, &t), &b), &w) in acc.iter_mut().zip(theta).zip(base).zip(h) {
                    let w = w.max(floor);
                    a.num = comp_add(a.num, w * (t - b));
                    a.den = comp_add(a.den, w);
                }
            }
        }
        *plan = FisherPlan { mode, wmax, vmax };
        Ok(())
    }

    /// Ends a chunked fold: the guard, the count, the mode.
    fn end(&mut self, plan: &FisherPlan) {
        if plan.mode == Mode::Empty {
            // an empty model: nothing was folded
            return;
        }
        self.mass += f64::from(plan.wmax) * f64::from(plan.vmax);
        self.models += 1;
        self.mode = plan.mode;
    }

    /// Fisher merging: folds in model `theta` with per-element Fisher
    /// values `fisher`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::NonFinite`] /
    /// [`Error::OutOfRange`]; [`Error::InvalidWeight`] for a negative or
    /// non-finite Fisher value; [`Error::WeightOverflow`];
    /// [`Error::ConfigMismatch`] after [`fold_delta`](Self::fold_delta).
    /// The state is unchanged on error.
    pub fn fold(&mut self, theta: &[f32], fisher: &[f32]) -> Result<(), Error> {
        check_len(self.len(), theta.len())?;
        crate::chunk::whole_step(self, (), FisherInput::Fisher { theta, fisher })
    }

    /// Writes `Σ F·θ / Σ F` into `out`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::Empty`] before the first model;
    /// [`Error::ConfigMismatch`] for a precision-weighted merge.
    pub fn finish(&self, out: &mut [f32]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        match self.mode {
            Mode::Empty => return Err(Error::Empty),
            Mode::Precision => return Err(Error::ConfigMismatch),
            Mode::Fisher => {}
        }
        for (o, a) in out.iter_mut().zip(self.acc.as_ref()) {
            *o = a.num.value() / a.den.value();
        }
        Ok(())
    }

    /// Precision-weighted merging: folds in model `theta`, relative to the
    /// base `base`, with per-element precisions `h`.
    ///
    /// # Errors
    /// As [`fold`](Self::fold) (also for a bad base); the differences
    /// `θ − θ₀` must stay within [`F32_LIMIT`].
    pub fn fold_delta(&mut self, theta: &[f32], base: &[f32], h: &[f32]) -> Result<(), Error> {
        check_len(self.len(), theta.len())?;
        crate::chunk::whole_step(self, (), FisherInput::Delta { theta, base, h })
    }

    /// Writes `θ₀ + Σ H·(θ − θ₀) / (H₀ + Σ H)` into `out`, with the prior
    /// precisions `h0` (each at least 0).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::InvalidWeight`] for a bad `h0`;
    /// [`Error::NonFinite`] / [`Error::OutOfRange`] for a bad base;
    /// [`Error::Empty`] before the first model; [`Error::ConfigMismatch`]
    /// for a Fisher merge.
    pub fn finish_delta(&self, base: &[f32], h0: &[f32], out: &mut [f32]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        check_len(self.len(), base.len())?;
        check_len(self.len(), h0.len())?;
        check_f32(base)?;
        check_weights(h0)?;
        match self.mode {
            Mode::Empty => return Err(Error::Empty),
            Mode::Fisher => return Err(Error::ConfigMismatch),
            Mode::Precision => {}
        }
        for (((o, a), &b), &p) in out.iter_mut().zip(self.acc.as_ref()).zip(base).zip(h0) {
            *o = b + a.num.value() / comp_add(a.den, p).value();
        }
        Ok(())
    }

    /// Forgets every model.
    pub fn reset(&mut self) {
        self.acc.as_mut().fill(FisherAcc::ZERO);
        self.models = 0;
        self.mass = 0.0;
        self.mode = Mode::Empty;
    }
}

/// Moves an element index reported for a chunk to the whole buffer.
fn shift_index(e: Error, by: usize) -> Error {
    match e {
        Error::NonFinite { index } => Error::NonFinite { index: index + by },
        Error::OutOfRange { index } => Error::OutOfRange { index: index + by },
        other => other,
    }
}

impl Element for FisherAcc {
    const FORMAT: u8 = 13;
    const SIZE: usize = 16;
    fn put(&self, out: &mut [u8]) {
        let (lo, hi) = out.split_at_mut(8.min(out.len()));
        self.num.put(lo);
        self.den.put(hi);
    }
    fn get(b: &[u8]) -> Option<Self> {
        let num = CompF32::get(b.get(..8)?)?;
        let den = CompF32::get(b.get(8..16)?)?;
        (den.hi() >= 0.0).then_some(Self { num, den })
    }
}

/// A Fisher merge's state: the sums, the form (Fisher or precision), the
/// overflow guard and the model count; the floor must match
/// ([`Error::ConfigMismatch`]). Decoding refuses sums the guard excludes.
impl<S: AsRef<[FisherAcc]> + AsMut<[FisherAcc]>> Persist for Fisher<S> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::Fisher as u8,
            format: FisherAcc::FORMAT,
            len: len_u32(self.len()),
            layout: 0,
            fields: 4 + 1 + 4 + 8,
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.f32(self.floor)?;
        enc.u8(self.mode as u8)?;
        enc.u32(self.models)?;
        enc.u64(self.mass.to_bits())?;
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
        if dec.f32()?.to_bits() != self.floor.to_bits() {
            return Err(Error::ConfigMismatch);
        }
        let mode = match dec.u8()? {
            0 => Mode::Empty,
            1 => Mode::Fisher,
            2 => Mode::Precision,
            _ => return Err(Error::InvalidState),
        };
        let models = dec.u32()?;
        let mass = f64::from_bits(dec.u64()?);
        if !(0.0..=F32_MASS_LIMIT).contains(&mass) || (models == 0) != (mode == Mode::Empty) {
            return Err(Error::InvalidState);
        }
        for slot in self.acc.as_mut() {
            let v = dec.elem::<FisherAcc>()?;
            let bound = mass * (1.0 + 1e-6) + 1e-30;
            if f64::from(v.num.value().abs()) > bound || f64::from(v.den.value()) > bound {
                return Err(Error::InvalidState);
            }
            if apply {
                *slot = v;
            }
        }
        if apply {
            self.mode = mode;
            self.models = models;
            self.mass = mass;
        }
        Ok(())
    }
}
