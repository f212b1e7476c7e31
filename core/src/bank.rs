//! A bank of `K` EMAs of the same parameters, updated in one pass.
//!
//! [`EmaBank`] keeps `K` shadows per element side by side (`[A; K]` per
//! parameter), each with its own [`Schedule`], and updates all of them in
//! one pass over the parameters: each parameter is read once per step, not
//! `K` times. Reads give any single EMA, or a mixture `Σ c_k·EMA_k`
//! (AdEMAMix's two-EMA mixture), and [`switch_into`](EmaBank::switch_into)
//! copies any one of them back into the model (Switch EMA; alternating the
//! member per epoch gives the temporary teachers of "Dual Teacher").
//!
//! Each member has exactly the arithmetic, and so the error bound, of an
//! [`Ema`](crate::Ema) with the same shadow type and schedule: the bank
//! computes the same bits (a test compares them).
//!
//! ```
//! use polyak::{CompF32, EmaBank, Schedule};
//!
//! // a fast and a slow EMA of a 4-parameter model
//! let mut bank = EmaBank::with_schedules(
//!     [[CompF32::ZERO; 2]; 4],
//!     [Schedule::constant(0.9), Schedule::constant(0.999)],
//! )?;
//! bank.update(&[1.0; 4])?;
//! bank.update(&[2.0; 4])?;
//! let (mut fast, mut mix) = ([0.0f32; 4], [0.0f32; 4]);
//! bank.read_into(0, &mut fast)?;
//! assert_eq!(fast, [1.1; 4]);
//! // AdEMAMix-style mixture: fast + 5 · slow
//! bank.mixture_into(&[1.0, 5.0], &mut mix)?;
//! # Ok::<(), polyak::Error>(())
//! ```

use core::cell::Cell;
use core::slice;

use crate::codec::{ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist};
use crate::ema::{Coefs, EmaShadow, Init, Rounding, check_len, impute, len_u32, mode_bytes};
use crate::kernel::swa::comp_add;
use crate::num::round_shift_var_i128;
use crate::policy::{Checked, Input, InputPolicy, Reject, screen};
use crate::schedule::{Action, Schedule};
use crate::{CompF32, Error, Q15, Q31};

/// Elements read per chunk when a bank column is read out.
const CHUNK: usize = 32;

/// A parameter format a mixture can be formed in.
pub trait MixParam: Copy + sealed::Sealed {
    #[doc(hidden)]
    const ZERO: Self;
    /// Checks mixture coefficients.
    #[doc(hidden)]
    fn check_coeffs(c: &[f32]) -> Result<(), Error>;
    /// `Σ c_k·v_k`, and whether it saturated.
    #[doc(hidden)]
    fn mix(values: &[Self], coeffs: &[f32]) -> (Self, bool);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for crate::Q15 {}
    impl Sealed for crate::Q31 {}
}

fn check_coeffs(c: &[f32], limit: f32) -> Result<(), Error> {
    if c.iter().all(|c| c.abs() <= limit) {
        Ok(())
    } else {
        Err(Error::InvalidCoefficient)
    }
}

/// f32: products `fl(c·v)` summed in a compensated pair; coefficients of
/// magnitude at most 2²⁰.
impl MixParam for f32 {
    const ZERO: Self = 0.0;
    fn check_coeffs(c: &[f32]) -> Result<(), Error> {
        check_coeffs(c, 1_048_576.0)
    }
    fn mix(values: &[f32], coeffs: &[f32]) -> (f32, bool) {
        // |c| ≤ 2^20 and |v| ≤ 2^100: no overflow, nothing saturates
        let s = values
            .iter()
            .zip(coeffs)
            .fold(CompF32::ZERO, |a, (v, c)| comp_add(a, v * c));
        (s.value(), false)
    }
}

/// Fixed point: each coefficient rounded to Q16.16 (nearest), the sum
/// `Σ c_k·v_k` exact in i128, rounded once (nearest-even) and saturated
/// to the format's range. Coefficients of magnitude at most 2¹⁵.
fn mix_fixed(values: impl Iterator<Item = i64>, coeffs: &[f32], lo: i64, hi: i64) -> (i64, bool) {
    let sum: i128 = values
        .zip(coeffs)
        .map(|(v, &c)| i128::from(v) * i128::from(q16(c)))
        .sum();
    let r = round_shift_var_i128(sum, 16)
        .max(i128::from(lo))
        .min(i128::from(hi)) as i64;
    let exact = round_shift_var_i128(sum, 16);
    (r, exact != i128::from(r))
}

/// `round(c·2¹⁶)`, half away from zero, for |c| ≤ 2¹⁵.
fn q16(c: f32) -> i64 {
    let v = f64::from(c) * 65536.0;
    if v >= 0.0 {
        (v + 0.5) as i64
    } else {
        (v - 0.5) as i64
    }
}

impl MixParam for Q15 {
    const ZERO: Self = Q15::ZERO;
    fn check_coeffs(c: &[f32]) -> Result<(), Error> {
        check_coeffs(c, 32768.0)
    }
    fn mix(values: &[Q15], coeffs: &[f32]) -> (Q15, bool) {
        let (r, sat) = mix_fixed(
            values.iter().map(|v| i64::from(v.to_bits())),
            coeffs,
            i16::MIN.into(),
            i16::MAX.into(),
        );
        (Q15::from_bits(r as i16), sat)
    }
}

impl MixParam for Q31 {
    const ZERO: Self = Q31::ZERO;
    fn check_coeffs(c: &[f32]) -> Result<(), Error> {
        check_coeffs(c, 32768.0)
    }
    fn mix(values: &[Q31], coeffs: &[f32]) -> (Q31, bool) {
        let (r, sat) = mix_fixed(
            values.iter().map(|v| i64::from(v.to_bits())),
            coeffs,
            i32::MIN.into(),
            i32::MAX.into(),
        );
        (Q31::from_bits(r as i32), sat)
    }
}

/// One step of an [`EmaBank`], fixed at its start (see [`crate::chunk`]).
#[derive(Debug, Clone, Copy)]
pub struct BankPlan<C, const K: usize> {
    calls: u64,
    actions: [Action; K],
    coefs: [C; K],
    draws: u64,
    rng0: u32,
    rng_end: Option<u32>,
    bad: u64,
}

/// `K` EMAs of one parameter buffer, each with its own schedule, updated in
/// a single pass. The storage holds `[A; K]` per parameter.
#[derive(Debug, Clone)]
pub struct EmaBank<A: EmaShadow, S, const K: usize, P: InputPolicy = Reject> {
    shadow: S,
    schedules: [Schedule; K],
    coefs: [Coefs<A::Coef>; K],
    alphas: [A::Coef; K],
    init: Init,
    rounding: Rounding,
    rng: u32,
    calls: u64,
    t: [u64; K],
    filled: [bool; K],
    weights: [A::Weight; K],
    saturated: Cell<u32>,
    skipped: u64,
    _policy: core::marker::PhantomData<P>,
}

impl<A: EmaShadow, S: AsRef<[[A; K]]> + AsMut<[[A; K]]>, const K: usize> EmaBank<A, S, K> {
    /// A bank of constant-β EMAs (copy-first).
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] for a β outside `[0, 1)`.
    pub fn new(storage: S, betas: [f32; K]) -> Result<Self, Error> {
        Self::with_schedules(storage, betas.map(Schedule::constant))
    }

    /// A bank whose members follow `schedules` (copy-first).
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] if a schedule does not validate.
    pub fn with_schedules(storage: S, schedules: [Schedule; K]) -> Result<Self, Error> {
        Self::build(storage, schedules, Init::CopyFirst)
    }

    /// A bank of zero-initialised, debiased members.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] if a schedule does not validate.
    pub fn with_schedules_debiased(storage: S, schedules: [Schedule; K]) -> Result<Self, Error> {
        Self::build(storage, schedules, Init::ZeroDebiased)
    }

    fn build(mut storage: S, schedules: [Schedule; K], init: Init) -> Result<Self, Error> {
        for s in &schedules {
            s.validate()?;
        }
        let pairs = schedules.map(|s| Coefs::of::<A>(&s));
        if init == Init::ZeroDebiased {
            storage.as_mut().fill([A::ZERO; K]);
        }
        Ok(Self {
            shadow: storage,
            schedules,
            coefs: pairs.map(|p| p.0),
            alphas: pairs.map(|p| p.1),
            init,
            rounding: Rounding::NearestEven,
            rng: 0,
            calls: 0,
            t: [0; K],
            filled: [false; K],
            weights: [A::weight_zero(); K],
            saturated: Cell::new(0),
            skipped: 0,
            _policy: core::marker::PhantomData,
        })
    }
}

impl<A: EmaShadow, S: AsRef<[[A; K]]> + AsMut<[[A; K]]>, const K: usize, P: InputPolicy>
    EmaBank<A, S, K, P>
{
    /// Sets the fixed-point rounding of every member (one generator for
    /// the bank).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for stochastic rounding of f32 shadows.
    pub fn with_rounding(mut self, rounding: Rounding) -> Result<Self, Error> {
        match rounding {
            Rounding::Stochastic { seed } if A::FIXED => self.rng = seed,
            Rounding::Stochastic { .. } => return Err(Error::Unsupported),
            Rounding::NearestEven => {}
        }
        self.rounding = rounding;
        Ok(self)
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.shadow.as_ref().len()
    }

    /// Whether the buffer has no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The schedules of the members.
    pub fn schedules(&self) -> &[Schedule; K] {
        &self.schedules
    }

    /// α of each member's latest step.
    pub fn alphas(&self) -> [A::Coef; K] {
        self.alphas
    }

    /// Calls to `update` since construction or reset.
    pub fn steps(&self) -> u64 {
        self.calls
    }

    /// EMA steps of each member since its averaging started.
    pub fn ema_steps(&self) -> [u64; K] {
        self.t
    }

    /// Element reads that saturated (debiased fixed point, or mixtures
    /// beyond the format's range).
    pub fn saturated(&self) -> u32 {
        self.saturated.get()
    }

    /// The raw shadows, `[A; K]` per parameter.
    pub fn shadow(&self) -> &[[A; K]] {
        self.shadow.as_ref()
    }

    /// Gives the storage back.
    pub fn into_inner(self) -> S {
        self.shadow
    }

    /// What each member does on the next call, and the call's number.
    fn plan(&self) -> Result<(u64, [Action; K]), Error> {
        let calls = self.calls.checked_add(1).ok_or(Error::CountOverflow)?;
        let first = self.init == Init::CopyFirst && self.calls == 0;
        let mut actions = [Action::Skip; K];
        for (a, (s, t)) in actions.iter_mut().zip(self.schedules.iter().zip(&self.t)) {
            *a = if first {
                Action::Copy
            } else {
                s.action(calls, *t)
            };
        }
        Ok((calls, actions))
    }

    /// The coefficients of this call's steps (the last ones elsewhere).
    fn coefs_for(&self, actions: &[Action; K]) -> [A::Coef; K] {
        let mut coefs = self.alphas;
        for ((c, a), k) in coefs.iter_mut().zip(actions).zip(&self.coefs) {
            if let Action::Step { alpha, .. } = *a {
                *c = k.at::<A>(alpha);
            }
        }
        coefs
    }

    /// A step's plan: the actions, their coefficients, the generator.
    fn begin(&self) -> Result<BankPlan<A::Coef, K>, Error> {
        let (calls, actions) = self.plan()?;
        let coefs = self.coefs_for(&actions);
        let draws = actions
            .iter()
            .filter(|a| matches!(a, Action::Step { .. }))
            .count() as u64;
        let mut rng = self.rng;
        if let Rounding::Stochastic { .. } = self.rounding
            && rng == 0
        {
            rng = 0x9e37_79b9;
        }
        Ok(BankPlan {
            calls,
            actions,
            coefs,
            draws,
            rng0: rng,
            rng_end: None,
            bad: 0,
        })
    }

    /// Rows `offset..offset + params.len()` of a step over checked
    /// parameters: every member stepping and no bad element (the common
    /// case) in one tight loop, anything else element by element.
    fn piece(&mut self, plan: &mut BankPlan<A::Coef, K>, offset: usize, params: &[A::Param]) {
        let stochastic = matches!(self.rounding, Rounding::Stochastic { .. });
        let mut rng = if stochastic {
            crate::num::xorshift32_jump(plan.rng0, (offset as u64).wrapping_mul(plan.draws))
        } else {
            plan.rng0
        };
        let end = offset.saturating_add(params.len());
        let actions = plan.actions;
        let all_step = actions.iter().all(|a| matches!(a, Action::Step { .. }));
        if all_step && (!P::SKIP || params.iter().all(A::valid)) {
            if let Some(rows) = self.shadow.as_mut().get_mut(offset..end) {
                A::step_rows(rows, params, &plan.coefs, self.rounding, &mut rng);
            }
        } else {
            self.pass(offset, params.iter().copied(), plan, &mut rng);
        }
        if end == self.len() {
            plan.rng_end = Some(rng);
        }
    }

    /// Applies a plan's actions to the rows from `offset` on, one element
    /// of `params` per row.
    fn pass(
        &mut self,
        offset: usize,
        params: impl Iterator<Item = A::Param>,
        plan: &BankPlan<A::Coef, K>,
        rng: &mut u32,
    ) {
        let (actions, coefs) = (&plan.actions, &plan.coefs);
        let rounding = self.rounding;
        let debiased = self.init == Init::ZeroDebiased;
        let (weights, filled) = (self.weights, self.filled);
        let rows = self.shadow.as_mut().get_mut(offset..).unwrap_or(&mut []);
        for (row, x) in rows.iter_mut().zip(params) {
            let ok = !P::SKIP || A::valid(&x);
            for (k, ((s, a), &c)) in row.iter_mut().zip(actions).zip(coefs).enumerate() {
                let x = if ok {
                    x
                } else {
                    let w = weights.get(k).copied().unwrap_or(A::weight_one());
                    impute::<A>(&x, s, w, debiased, filled.get(k).copied().unwrap_or(false))
                };
                match a {
                    Action::Copy => A::load(slice::from_mut(s), slice::from_ref(&x)),
                    Action::Skip => {}
                    Action::Step { .. } => {
                        A::step(slice::from_mut(s), slice::from_ref(&x), c, rounding, rng)
                    }
                }
            }
        }
    }

    /// Ends a step: the members' bookkeeping, the generator, the counters.
    fn end(&mut self, plan: BankPlan<A::Coef, K>) {
        self.commit(&plan.actions, &plan.coefs);
        if matches!(self.rounding, Rounding::Stochastic { .. }) && plan.draws > 0 {
            self.rng = match plan.rng_end {
                Some(r) => r,
                None => crate::num::xorshift32_jump(
                    plan.rng0,
                    (self.len() as u64).wrapping_mul(plan.draws),
                ),
            };
        }
        self.calls = plan.calls;
        self.skipped = self.skipped.saturating_add(plan.bad);
    }

    /// The members' bookkeeping after a pass.
    fn commit(&mut self, actions: &[Action; K], coefs: &[A::Coef; K]) {
        let first_copy = self.init == Init::CopyFirst && self.calls == 0;
        for (k, a) in actions.iter().enumerate() {
            match *a {
                Action::Copy => {
                    self.weights[k] = A::weight_one();
                    self.filled[k] = true;
                    if first_copy && self.schedules[k].update_after_step == 0 {
                        self.t[k] = 1;
                    }
                }
                Action::Skip => {}
                Action::Step { t, .. } => {
                    self.weights[k] = A::weight_step(self.weights[k], coefs[k]);
                    self.alphas[k] = coefs[k];
                    self.t[k] = t;
                    self.filled[k] = true;
                }
            }
        }
    }

    /// Updates every member with one step's parameters, reading each
    /// parameter once.
    ///
    /// # Errors
    /// As [`Ema::update`](crate::Ema::update); the state is unchanged on
    /// error.
    pub fn update(&mut self, params: &[A::Param]) -> Result<(), Error> {
        check_len(self.len(), params.len())?;
        let bad = screen::<P, _>(params, A::valid, A::check)?;
        let mut plan = self.begin()?;
        plan.bad = bad;
        self.piece(&mut plan, 0, params);
        self.end(plan);
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
        let mut plan = self.begin()?;
        self.piece(&mut plan, 0, params);
        self.end(plan);
        Ok(())
    }

    /// Changes the input policy (default [`Reject`]); under
    /// [`Skip`](crate::Skip) each member of a bad element keeps its average,
    /// as for [`Ema`](crate::Ema).
    pub fn with_policy<Q: InputPolicy>(self) -> EmaBank<A, S, K, Q> {
        EmaBank {
            shadow: self.shadow,
            schedules: self.schedules,
            coefs: self.coefs,
            alphas: self.alphas,
            init: self.init,
            rounding: self.rounding,
            rng: self.rng,
            calls: self.calls,
            t: self.t,
            filled: self.filled,
            weights: self.weights,
            saturated: self.saturated,
            skipped: self.skipped,
            _policy: core::marker::PhantomData,
        }
    }

    /// Elements skipped under [`Skip`](crate::Skip) since construction.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Updates every member from an iterator of parameters (for example
    /// read page by page from flash), consuming it exactly once. Fixed-point
    /// formats only, whose values need no check.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for f32 shadows (their input is checked before
    /// anything is written, which an iterator does not allow);
    /// [`Error::LengthMismatch`] if the iterator's length differs; the
    /// state is unchanged on error. An iterator that yields fewer items than
    /// its `len()` promised leaves the remaining elements not updated.
    pub fn update_from_iter<I>(&mut self, params: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = A::Param>,
        I::IntoIter: ExactSizeIterator,
    {
        if !A::FIXED {
            return Err(Error::Unsupported);
        }
        let params = params.into_iter();
        check_len(self.len(), params.len())?;
        let plan = self.begin()?;
        let mut rng = plan.rng0;
        self.pass(0, params, &plan, &mut rng);
        let mut plan = plan;
        plan.rng_end = Some(rng);
        self.end(plan);
        Ok(())
    }

    /// The debiasing weight of member `k`, if it holds data.
    fn member_weight(&self, k: usize) -> Result<A::Weight, Error> {
        let (Some(&filled), Some(&w)) = (self.filled.get(k), self.weights.get(k)) else {
            return Err(Error::InvalidIndex { index: k });
        };
        if filled { Ok(w) } else { Err(Error::Empty) }
    }

    /// Reads member `k` of `rows` into `dst` (as long as `rows`, at most
    /// `CHUNK`); returns the saturation count.
    fn column_chunk(&self, rows: &[[A; K]], k: usize, w: A::Weight, dst: &mut [A::Param]) -> u32 {
        let mut buf = [A::ZERO; CHUNK];
        for (b, row) in buf.iter_mut().zip(rows) {
            *b = row.get(k).copied().unwrap_or(A::ZERO);
        }
        let src = buf.get(..rows.len().min(CHUNK)).unwrap_or(&[]);
        match self.init {
            Init::CopyFirst => A::store(src, dst),
            Init::ZeroDebiased => A::store_debiased(src, w, dst),
        }
    }

    fn count(&self, saturated: u32) {
        self.saturated
            .set(self.saturated.get().saturating_add(saturated));
    }

    /// Reads member `k` into `out`, chunk by chunk.
    fn read_column(&self, k: usize, out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        let w = self.member_weight(k)?;
        let mut saturated = 0u32;
        for (rows, out) in self
            .shadow
            .as_ref()
            .chunks(CHUNK)
            .zip(out.chunks_mut(CHUNK))
        {
            saturated += self.column_chunk(rows, k, w, out);
        }
        self.count(saturated);
        Ok(())
    }

    /// Hands member `k`'s average to `f` in chunks of at most 32 values,
    /// through a stack buffer (for writing it out without a RAM copy).
    ///
    /// # Errors
    /// [`Error::InvalidIndex`] if `k ≥ K`; [`Error::Empty`] before member
    /// `k` holds data.
    pub fn read_chunks(&self, k: usize, mut f: impl FnMut(&[A::Param])) -> Result<(), Error> {
        let w = self.member_weight(k)?;
        let mut tmp = [A::PARAM_ZERO; CHUNK];
        let mut saturated = 0u32;
        for rows in self.shadow.as_ref().chunks(CHUNK) {
            let dst = tmp.get_mut(..rows.len().min(CHUNK)).unwrap_or(&mut []);
            saturated += self.column_chunk(rows, k, w, dst);
            f(dst);
        }
        self.count(saturated);
        Ok(())
    }

    /// Writes member `k`'s average into `out`.
    ///
    /// # Errors
    /// [`Error::InvalidIndex`] if `k ≥ K`; [`Error::LengthMismatch`];
    /// [`Error::Empty`] before member `k` holds data. `out` is untouched on
    /// error.
    pub fn read_into(&self, k: usize, out: &mut [A::Param]) -> Result<(), Error> {
        self.read_column(k, out)
    }

    /// Switch EMA with member `k`: copies its average into the model.
    /// Alternating `k` per epoch (`epoch % K`) gives Dual Teacher's
    /// alternating temporary teachers.
    ///
    /// # Errors
    /// As [`read_into`](Self::read_into).
    pub fn switch_into(&self, k: usize, params: &mut [A::Param]) -> Result<(), Error> {
        self.read_column(k, params)
    }
}

impl<A, S, const K: usize, P: InputPolicy> EmaBank<A, S, K, P>
where
    A: EmaShadow,
    A::Param: MixParam,
    S: AsRef<[[A; K]]> + AsMut<[[A; K]]>,
{
    /// Writes the mixture `Σ_k c_k·EMA_k` into `out` (AdEMAMix mixes a fast
    /// and a slow EMA this way). Each member is read as by
    /// [`read_into`](Self::read_into), then mixed: in f32 with a
    /// compensated sum (error `ε·(½·|ref| + Σ|c_k·v_k|)` beyond the members'
    /// own), in fixed point exactly with coefficients rounded to Q16.16 and
    /// one final rounding (≤ ½ LSB plus `2⁻¹⁷·Σ|v_k|`), saturating.
    ///
    /// # Errors
    /// [`Error::InvalidCoefficient`] for a coefficient beyond ±2²⁰ (f32) or
    /// ±2¹⁵ (fixed point), or NaN; [`Error::LengthMismatch`];
    /// [`Error::Empty`] if any member holds no data yet.
    pub fn mixture_into(&self, coeffs: &[f32; K], out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.len(), out.len())?;
        A::Param::check_coeffs(coeffs)?;
        if self.filled.iter().any(|f| !f) {
            return Err(Error::Empty);
        }
        let mut saturated = 0u32;
        let mut cols = [[<A::Param as MixParam>::ZERO; CHUNK]; K];
        let mut vals = [<A::Param as MixParam>::ZERO; K];
        for (rows, out) in self
            .shadow
            .as_ref()
            .chunks(CHUNK)
            .zip(out.chunks_mut(CHUNK))
        {
            let n = rows.len().min(CHUNK);
            for (k, col) in cols.iter_mut().enumerate() {
                let w = self.weights.get(k).copied().unwrap_or(A::weight_one());
                let dst = col.get_mut(..n).unwrap_or(&mut []);
                saturated += self.column_chunk(rows, k, w, dst);
            }
            for (i, o) in out.iter_mut().enumerate() {
                for (v, col) in vals.iter_mut().zip(&cols) {
                    *v = col.get(i).copied().unwrap_or(<A::Param as MixParam>::ZERO);
                }
                let (m, sat) = A::Param::mix(&vals, coeffs);
                *o = m;
                saturated += u32::from(sat);
            }
        }
        self.count(saturated);
        Ok(())
    }
}

/// The bank's state: per member its schedule and coefficients (checked on
/// decode), α, step count, fill flag and weight; the shared call count,
/// rounding generator and saturation count; the shadows.
/// Chunked steps (see [`crate::chunk`]): bit-identical to
/// [`EmaBank::update`], stochastic rounding included.
impl<A: EmaShadow, S: AsRef<[[A; K]]> + AsMut<[[A; K]]>, const K: usize, P: InputPolicy>
    crate::chunk::Chunkable for EmaBank<A, S, K, P>
{
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = BankPlan<A::Coef, K>;

    fn step_len(&self) -> usize {
        self.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<Self::Plan, Error> {
        self.begin()
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
        self.end(plan);
        Ok(())
    }
}

impl<A: EmaShadow, S: AsRef<[[A; K]]> + AsMut<[[A; K]]>, const K: usize, P: InputPolicy> Persist
    for EmaBank<A, S, K, P>
{
    fn header(&self) -> Header {
        let config = 30 * K + 6 + 1;
        let state = K * (4 + 8 + 1 + A::Weight::SIZE) + 4 + 8 + 4 + 8;
        Header {
            kind: Kind::Bank as u8,
            format: A::FORMAT,
            len: len_u32(self.len()),
            layout: 0,
            fields: (config + state) as u32,
            members: K as u32,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        for (s, c) in self.schedules.iter().zip(&self.coefs) {
            enc.bytes(&s.to_bytes())?;
            enc.bytes(&c.to_bytes(A::coef_bits))?;
        }
        enc.bytes(&mode_bytes(self.init, self.rounding))?;
        enc.u8(u8::from(P::SKIP))?;
        for k in 0..K {
            enc.u32(self.alphas.get(k).map_or(0, |&a| A::coef_bits(a)))?;
            enc.u64(self.t.get(k).copied().unwrap_or(0))?;
            enc.u8(u8::from(self.filled.get(k).copied().unwrap_or(false)))?;
            enc.elem(&self.weights.get(k).copied().unwrap_or(A::weight_zero()))?;
        }
        enc.u32(self.rng)?;
        enc.u64(self.calls)?;
        enc.u32(self.saturated.get())?;
        enc.u64(self.skipped)?;
        for row in self.shadow.as_ref() {
            for e in row {
                enc.elem(e)?;
            }
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        for (s, c) in self.schedules.iter().zip(&self.coefs) {
            if dec.array::<25>()? != s.to_bytes() || dec.array::<5>()? != c.to_bytes(A::coef_bits) {
                return Err(Error::ConfigMismatch);
            }
        }
        if dec.array::<6>()? != mode_bytes(self.init, self.rounding)
            || dec.u8()? != u8::from(P::SKIP)
        {
            return Err(Error::ConfigMismatch);
        }
        let mut alphas = self.alphas;
        let mut t = [0u64; K];
        let mut filled = [false; K];
        let mut weights = self.weights;
        for k in 0..K {
            let a = A::coef_from_bits(dec.u32()?);
            let tk = dec.u64()?;
            let f = dec.u8()?;
            let w = dec.elem::<A::Weight>()?;
            if A::check_coef(a).is_err() || !A::weight_valid(&w) || f > 1 || (f == 0 && tk > 0) {
                return Err(Error::InvalidState);
            }
            if let (Some(ak), Some(tt), Some(ff), Some(ww)) = (
                alphas.get_mut(k),
                t.get_mut(k),
                filled.get_mut(k),
                weights.get_mut(k),
            ) {
                *ak = a;
                *tt = tk;
                *ff = f == 1;
                *ww = w;
            }
        }
        let rng = dec.u32()?;
        let calls = dec.u64()?;
        let saturated = dec.u32()?;
        let skipped = dec.u64()?;
        if t.iter().any(|&tk| tk > calls) {
            return Err(Error::InvalidState);
        }
        if apply {
            self.alphas = alphas;
            self.t = t;
            self.filled = filled;
            self.weights = weights;
            self.rng = rng;
            self.calls = calls;
            self.saturated.set(saturated);
            self.skipped = skipped;
        }
        for row in self.shadow.as_mut() {
            for slot in row.iter_mut() {
                let v = dec.elem::<A>()?;
                if apply {
                    *slot = v;
                }
            }
        }
        Ok(())
    }
}
