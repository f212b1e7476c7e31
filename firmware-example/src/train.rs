//! The training run: online SGD with a constant learning rate on a linear
//! regression model, keeping at the same time
//!
//! - an f32 EMA of the weights (compensated shadow, which does not stall
//!   at β near 1),
//! - a Q15 EMA with the Q31 wide shadow,
//! - an SWA over the second half of training (compensated f32 sum),
//! - a Switch EMA: a second SGD trajectory whose compensated EMA is copied
//!   back into its weights every `switch_every` steps,
//! - a sliding window (LAWA-style) over the last [`WINDOW`] Q15
//!   snapshots, taken every `window_every` steps, in a RAM ring, with an
//!   exact sum (its average is bit for bit the one recomputed from the
//!   snapshots).
//!
//! Every `eval_every` steps the excess risk `E[((w − w*)·x)²]` of each
//! weight vector is estimated on a held-out set (regenerated from its own
//! seed, so it needs no storage) and handed to a callback. The same pass
//! recomputes the statistics a normalisation layer after the window model
//! would need (the mean and unbiased variance of its output activation),
//! as `update_bn` does after averaging.

use embedded_hal::i2c::I2c;
use polyak::codec::{ByteSink, ByteSource, Decoder, Encoder, Header, Kind, Persist, nested_len};
use polyak::moments::MomentF32;
use polyak::window::RamRing;
use polyak::{Checked, CompF32, I1F31, I49F15, Q15};

use self::ops::{EmaComp, EmaQ15, Stats, Swa32, WinQ15};

use crate::fnv1a;
use crate::rng::Rng;
use crate::sensor::{Sensor, SensorError, q15_to_f32, round_to_i32};

/// Parameters of a run.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Seed of the sensor (true weights and noise) and of the held-out set.
    pub seed: u64,
    /// SGD steps (one sample each).
    pub steps: u32,
    /// Constant learning rate.
    pub lr: f32,
    /// EMA decay.
    pub beta: f32,
    /// Amplitude of the sensor's uniform noise.
    pub noise: f32,
    /// Steps between evaluations.
    pub eval_every: u32,
    /// Steps between Switch-EMA copies into the second model.
    pub switch_every: u32,
    /// Held-out samples per evaluation.
    pub holdout: u32,
    /// Steps between snapshots into the sliding window.
    pub window_every: u32,
}

/// Snapshots in the sliding window.
pub const WINDOW: usize = 8;

impl Config {
    /// The configuration the firmware runs, for a given seed.
    pub const fn new(seed: u64) -> Self {
        Self {
            seed,
            steps: 12_000,
            lr: 0.05,
            beta: 0.998,
            noise: 0.5,
            eval_every: 2_000,
            switch_every: 1_000,
            holdout: 128,
            window_every: 250,
        }
    }
}

/// Excess risk of each weight vector at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Step of the evaluation.
    pub step: u32,
    /// The last SGD iterate.
    pub last: f32,
    /// The f32 EMA.
    pub ema: f32,
    /// The Q15 EMA (wide shadow).
    pub ema_q15: f32,
    /// The SWA (NaN before averaging starts).
    pub swa: f32,
    /// The Switch-EMA model's average.
    pub switch: f32,
    /// The sliding window's average.
    pub window: f32,
    /// Mean of the window model's output over the held-out set.
    pub act_mean: f32,
    /// Unbiased variance of the window model's output over the held-out
    /// set.
    pub act_var: f32,
}

/// FNV-1a checksums of the raw bits of every buffer at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksums {
    /// Last iterate.
    pub last: u32,
    /// f32 EMA, as read.
    pub ema: u32,
    /// Q15 EMA, as read (the i16 bits).
    pub ema_q15: u32,
    /// Q15 EMA's Q31 shadow.
    pub ema_q15_shadow: u32,
    /// SWA mean, as read.
    pub swa: u32,
    /// Switch-EMA average, as read.
    pub switch: u32,
    /// Sliding-window average, as read.
    pub window: u32,
    /// The last evaluation's activation statistics (mean, variance).
    pub stats: u32,
}

impl Checksums {
    /// Every checksum with its name, as the firmware prints them.
    pub fn named(&self) -> [(&'static str, u32); 8] {
        [
            ("last", self.last),
            ("ema", self.ema),
            ("ema_q15", self.ema_q15),
            ("ema_q15_shadow", self.ema_q15_shadow),
            ("swa", self.swa),
            ("switch", self.switch),
            ("window", self.window),
            ("stats", self.stats),
        ]
    }
}

/// What a run ends with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The last evaluation.
    pub last_row: Row,
    /// Checksums of every buffer.
    pub checksums: Checksums,
    /// Weight updates that had to saturate when converted to Q15.
    pub q15_saturated: u32,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunError<E> {
    /// The sensor failed.
    Sensor(SensorError<E>),
    /// An averager refused an update or a read.
    Average(polyak::Error),
    /// A weight or a risk became NaN or infinite.
    NonFinite,
}

impl<E> From<polyak::Error> for RunError<E> {
    fn from(e: polyak::Error) -> Self {
        RunError::Average(e)
    }
}

/// Every buffer a run needs, in one place the caller allocates (a
/// `static` on the device): `D` weights each.
#[derive(Debug, Clone)]
pub struct Buffers<const D: usize> {
    w: [f32; D],
    w_switch: [f32; D],
    x: [f32; D],
    q: [Q15; D],
    read: [f32; D],
    ema: [CompF32; D],
    ema_q15: [I1F31; D],
    swa: [CompF32; D],
    switch_ema: [CompF32; D],
    window_sum: [I49F15; D],
    window_ring: [[Q15; D]; WINDOW + 1],
}

impl<const D: usize> Buffers<D> {
    /// Zeroed buffers.
    pub const fn new() -> Self {
        Self {
            w: [0.0; D],
            w_switch: [0.0; D],
            x: [0.0; D],
            q: [Q15::ZERO; D],
            read: [0.0; D],
            ema: [CompF32::ZERO; D],
            ema_q15: [I1F31::ZERO; D],
            swa: [CompF32::ZERO; D],
            switch_ema: [CompF32::ZERO; D],
            window_sum: [I49F15::ZERO; D],
            window_ring: [[Q15::ZERO; D]; WINDOW + 1],
        }
    }

    /// Bytes of RAM the buffers take.
    pub const fn bytes() -> usize {
        core::mem::size_of::<Self>()
    }
}

impl<const D: usize> Default for Buffers<D> {
    fn default() -> Self {
        Self::new()
    }
}

/// The averager operations the run uses, each behind an out-of-line entry
/// point: the kernels are inlined into these, so the release ELF has one
/// symbol per operation and `cargo xtask size` can report its `.text`.
pub mod ops {
    use polyak::moments::{MomentF32, Moments};
    use polyak::window::{RamRing, Window};
    use polyak::{Checked, CompF32, Ema, Error, I1F31, I49F15, Q15, Swa};

    /// Compensated f32 EMA over a borrowed buffer.
    pub type EmaComp<'a> = Ema<CompF32, &'a mut [CompF32]>;
    /// Q15 EMA with a Q31 shadow over a borrowed buffer.
    pub type EmaQ15<'a> = Ema<I1F31, &'a mut [I1F31]>;
    /// f32 SWA over a borrowed buffer.
    pub type Swa32<'a> = Swa<CompF32, &'a mut [CompF32]>;
    /// Q15 sliding window: exact sum and a RAM ring, both borrowed.
    pub type WinQ15<'a> = Window<I49F15, &'a mut [I49F15], RamRing<Q15, &'a mut [Q15]>>;
    /// Per-channel activation statistics of one channel.
    pub type Stats = Moments<MomentF32, [MomentF32; 1]>;

    /// `Ema<CompF32>::update_checked` (the step's weights are checked
    /// once, by [`Checked::new`], for every f32 averager).
    #[inline(never)]
    pub fn ema_comp_update(e: &mut EmaComp<'_>, w: Checked<'_, f32>) -> Result<(), Error> {
        e.update_checked(w)
    }
    /// `Ema<CompF32>::read_into` (also Switch EMA's `switch_into`).
    #[inline(never)]
    pub fn ema_comp_read(e: &EmaComp<'_>, out: &mut [f32]) -> Result<(), Error> {
        e.read_into(out)
    }
    /// `Ema<I1F31>::update` (Q15 with the wide shadow).
    #[inline(never)]
    pub fn ema_q15_update(e: &mut EmaQ15<'_>, q: &[Q15]) -> Result<(), Error> {
        e.update(q)
    }
    /// `Ema<I1F31>::read_into`.
    #[inline(never)]
    pub fn ema_q15_read(e: &EmaQ15<'_>, out: &mut [Q15]) -> Result<(), Error> {
        e.read_into(out)
    }
    /// `Swa<CompF32>::update_checked`.
    #[inline(never)]
    pub fn swa_update(s: &mut Swa32<'_>, w: Checked<'_, f32>) -> Result<(), Error> {
        s.update_checked(w)
    }
    /// `Swa<CompF32>::read_into`.
    #[inline(never)]
    pub fn swa_read(s: &Swa32<'_>, out: &mut [f32]) -> Result<(), Error> {
        s.read_into(out)
    }
    /// `Window<I49F15>::update` (Q15 over a RAM ring).
    #[inline(never)]
    pub fn window_update(w: &mut WinQ15<'_>, q: &[Q15]) -> Result<(), Error> {
        w.update(q)
    }
    /// `Window<I49F15>::read_into`.
    #[inline(never)]
    pub fn window_read(w: &mut WinQ15<'_>, out: &mut [Q15]) -> Result<(), Error> {
        w.read_into(out)
    }
    /// `Moments<MomentF32>::update`.
    #[inline(never)]
    pub fn stats_update(m: &mut Stats, x: &[f32]) -> Result<(), Error> {
        m.update(x)
    }
    /// `Moments<MomentF32>::write_into` (mean and unbiased variance).
    #[inline(never)]
    pub fn stats_write(m: &Stats, mean: &mut [f32], var: &mut [f32]) -> Result<(), Error> {
        m.write_into(mean, var)
    }
}

/// One SGD step on squared loss: `w ← w + lr·(y − w·x)·x`.
fn sgd(w: &mut [f32], x: &[f32], y: f32, lr: f32) {
    let pred = w.iter().zip(x).fold(0.0f32, |acc, (w, x)| acc + w * x);
    let g = lr * (y - pred);
    for (w, x) in w.iter_mut().zip(x) {
        *w += g * x;
    }
}

/// Rounds f32 weights to Q15 (nearest, ties away from zero), saturating;
/// returns how many saturated.
fn to_q15(w: &[f32], q: &mut [Q15]) -> u32 {
    let mut saturated = 0;
    for (q, &w) in q.iter_mut().zip(w) {
        let raw = round_to_i32(w * 32768.0);
        let clamped = raw.clamp(i32::from(i16::MIN), i32::from(i16::MAX));
        saturated += u32::from(clamped != raw);
        *q = Q15::from_bits(clamped as i16);
    }
    saturated
}

/// A training run that can be stepped, saved and resumed: the SGD
/// weights, the four averagers over borrowed buffers, and the counters.
pub struct Trainer<'b, const D: usize> {
    cfg: Config,
    step: u32,
    q15_saturated: u32,
    last_row: Option<Row>,
    w: &'b mut [f32; D],
    w_switch: &'b mut [f32; D],
    x: &'b mut [f32; D],
    q: &'b mut [Q15; D],
    read: &'b mut [f32; D],
    ema: EmaComp<'b>,
    ema_q15: EmaQ15<'b>,
    swa: Swa32<'b>,
    switch_ema: EmaComp<'b>,
    window: WinQ15<'b>,
}

impl<'b, const D: usize> Trainer<'b, D> {
    /// A fresh run over `bufs`.
    ///
    /// # Errors
    /// [`polyak::Error::InvalidDecay`] for a bad β in `cfg`;
    /// [`polyak::Error::InvalidWindow`] if `D` is 0.
    pub fn new(cfg: &Config, bufs: &'b mut Buffers<D>) -> Result<Self, polyak::Error> {
        let Buffers {
            w,
            w_switch,
            x,
            q,
            read,
            ema,
            ema_q15,
            swa,
            switch_ema,
            window_sum,
            window_ring,
        } = bufs;
        let ring = RamRing::new(window_ring.as_flattened_mut(), D)?;
        w.fill(0.0);
        w_switch.fill(0.0);
        Ok(Self {
            cfg: *cfg,
            step: 0,
            q15_saturated: 0,
            last_row: None,
            w,
            w_switch,
            x,
            q,
            read,
            ema: EmaComp::new(&mut ema[..], cfg.beta)?,
            ema_q15: EmaQ15::new(&mut ema_q15[..], cfg.beta)?,
            swa: Swa32::new(&mut swa[..]),
            switch_ema: EmaComp::new(&mut switch_ema[..], cfg.beta)?,
            window: WinQ15::new(&mut window_sum[..], ring, WINDOW)?,
        })
    }

    /// Steps taken.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// The SGD weights (what every averager of the step was given).
    pub fn weights(&self) -> &[f32; D] {
        self.w
    }

    /// The β of the averages.
    pub fn beta(&self) -> f32 {
        self.cfg.beta
    }

    /// Whether every step of the run is done.
    pub fn done(&self) -> bool {
        self.step >= self.cfg.steps
    }

    /// One SGD step and every averager's update; at evaluation steps the
    /// excess risks go to `on_row`.
    ///
    /// # Errors
    /// [`RunError`] if the sensor, an averager or the arithmetic fails.
    pub fn advance<I: I2c>(
        &mut self,
        sensor: &mut Sensor<I>,
        w_star: &[f32; D],
        mut on_row: impl FnMut(&Row),
    ) -> Result<(), RunError<I::Error>> {
        let cfg = self.cfg;
        let step = self.step + 1;
        let y = sensor.read_sample(self.x).map_err(RunError::Sensor)?;
        sgd(self.w, self.x, y, cfg.lr);
        sgd(self.w_switch, self.x, y, cfg.lr);
        // the step's weights, checked once for every f32 averager
        let w = Checked::new(&self.w[..])?;
        ops::ema_comp_update(&mut self.ema, w)?;
        self.q15_saturated += to_q15(self.w, self.q);
        ops::ema_q15_update(&mut self.ema_q15, self.q)?;
        if step > cfg.steps / 2 {
            ops::swa_update(&mut self.swa, w)?;
        }
        ops::ema_comp_update(&mut self.switch_ema, Checked::new(&self.w_switch[..])?)?;
        if step.checked_rem(cfg.window_every) == Some(0) {
            ops::window_update(&mut self.window, self.q)?;
        }
        if step.checked_rem(cfg.switch_every) == Some(0) {
            // Switch EMA: the model continues from its average.
            ops::ema_comp_read(&self.switch_ema, self.w_switch)?;
        }
        self.step = step;
        if step.checked_rem(cfg.eval_every) == Some(0) || step == cfg.steps {
            let row = self.evaluate(w_star)?;
            on_row(&row);
            self.last_row = Some(row);
        }
        Ok(())
    }

    fn evaluate<E>(&mut self, w_star: &[f32; D]) -> Result<Row, RunError<E>> {
        let mut ema_read = [0.0f32; D];
        let mut q15_read = [0.0f32; D];
        let mut swa_read = [f32::NAN; D];
        let mut window_read = [f32::NAN; D];
        ops::ema_comp_read(&self.ema, &mut ema_read)?;
        ops::ema_q15_read(&self.ema_q15, self.q)?;
        for (f, q) in q15_read.iter_mut().zip(self.q.iter()) {
            *f = q15_to_f32(q.to_bits());
        }
        let swa_ready = self.swa.count() > 0;
        if swa_ready {
            ops::swa_read(&self.swa, &mut swa_read)?;
        }
        let window_ready = self.window.count() > 0;
        if window_ready {
            ops::window_read(&mut self.window, self.q)?;
            for (f, q) in window_read.iter_mut().zip(self.q.iter()) {
                *f = q15_to_f32(q.to_bits());
            }
        }
        ops::ema_comp_read(&self.switch_ema, self.read)?;
        let sets: [&[f32]; SETS] = [
            self.w,
            &ema_read,
            &q15_read,
            &swa_read,
            self.read,
            &window_read,
        ];
        let mut risks = [0.0f32; SETS];
        let mut stats = Stats::new([MomentF32::ZERO]);
        excess_risks(&self.cfg, w_star, &sets, &mut risks, &mut stats)?;
        let (mut act_mean, mut act_var) = ([f32::NAN], [f32::NAN]);
        if window_ready {
            ops::stats_write(&stats, &mut act_mean, &mut act_var)?;
        } else {
            risks[5] = f32::NAN;
        }
        if !swa_ready {
            risks[3] = f32::NAN;
        }
        let [last, e, eq, s, sw, win] = risks;
        if [last, e, eq, sw].iter().any(|r| !r.is_finite()) {
            return Err(RunError::NonFinite);
        }
        Ok(Row {
            step: self.step,
            last,
            ema: e,
            ema_q15: eq,
            swa: s,
            switch: sw,
            window: win,
            act_mean: act_mean[0],
            act_var: act_var[0],
        })
    }

    /// Checksums of every buffer, and the last evaluation.
    ///
    /// # Errors
    /// [`RunError`] if no evaluation has happened or a read fails.
    pub fn summary<E>(&mut self) -> Result<Summary, RunError<E>> {
        let last_row = self.last_row.ok_or(RunError::NonFinite)?;
        let bits = |v: &[f32]| fnv1a(v.iter().map(|x| x.to_bits()));
        ops::ema_comp_read(&self.ema, self.read)?;
        let ema_sum = bits(self.read);
        ops::ema_q15_read(&self.ema_q15, self.q)?;
        let q15_sum = fnv1a(self.q.iter().map(|v| u32::from(v.to_bits() as u16)));
        let q15_shadow = fnv1a(self.ema_q15.shadow().iter().map(|v| v.to_bits() as u32));
        ops::swa_read(&self.swa, self.read)?;
        let swa_sum = bits(self.read);
        ops::ema_comp_read(&self.switch_ema, self.read)?;
        let switch_sum = bits(self.read);
        ops::window_read(&mut self.window, self.q)?;
        let window_sum = fnv1a(self.q.iter().map(|v| u32::from(v.to_bits() as u16)));
        Ok(Summary {
            last_row,
            checksums: Checksums {
                last: bits(self.w),
                ema: ema_sum,
                ema_q15: q15_sum,
                ema_q15_shadow: q15_shadow,
                swa: swa_sum,
                switch: switch_sum,
                window: window_sum,
                stats: bits(&[last_row.act_mean, last_row.act_var]),
            },
            q15_saturated: self.q15_saturated,
        })
    }
}

/// Everything needed to resume a run: the trainer (SGD weights, counters,
/// the five averagers) and the position of the sensor's sample stream,
/// saved as one record (so the store commits all of it or none of it).
pub struct Checkpoint<'t, 'b, const D: usize> {
    /// The run.
    pub trainer: &'t mut Trainer<'b, D>,
    /// The sensor stream's position.
    pub sensor: u64,
}

impl<const D: usize> Checkpoint<'_, '_, D> {
    fn nested(&self) -> usize {
        let t = &*self.trainer;
        nested_len(&t.ema)
            + nested_len(&t.ema_q15)
            + nested_len(&t.swa)
            + nested_len(&t.switch_ema)
            + nested_len(&t.window)
    }
}

/// A composite record (application kind 0x80): step, counters, sensor
/// position, the two SGD weight vectors, then the five averagers' own
/// records, each preceded by its length.
impl<const D: usize> Persist for Checkpoint<'_, '_, D> {
    fn header(&self) -> Header {
        let nested = self.nested();
        Header {
            kind: Kind::Application as u8,
            format: 0,
            len: D as u32,
            layout: 0,
            fields: (4 + 4 + 8 + 8 * D + nested) as u32,
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), polyak::Error> {
        let t = &*self.trainer;
        enc.u32(t.step)?;
        enc.u32(t.q15_saturated)?;
        enc.u64(self.sensor)?;
        for v in t.w.iter().chain(t.w_switch.iter()) {
            enc.f32(*v)?;
        }
        enc.nested(&t.ema)?;
        enc.nested(&t.ema_q15)?;
        enc.nested(&t.swa)?;
        enc.nested(&t.switch_ema)?;
        enc.nested(&t.window)
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), polyak::Error> {
        let step = dec.u32()?;
        let saturated = dec.u32()?;
        let sensor = dec.u64()?;
        let mut w = [0.0f32; D];
        let mut w_switch = [0.0f32; D];
        for v in w.iter_mut().chain(w_switch.iter_mut()) {
            *v = dec.elem::<f32>()?;
        }
        if step > self.trainer.cfg.steps {
            return Err(polyak::Error::InvalidState);
        }
        let t = &mut *self.trainer;
        dec.nested_into(&mut t.ema, apply)?;
        dec.nested_into(&mut t.ema_q15, apply)?;
        dec.nested_into(&mut t.swa, apply)?;
        dec.nested_into(&mut t.switch_ema, apply)?;
        dec.nested_into(&mut t.window, apply)?;
        if apply {
            t.step = step;
            t.q15_saturated = saturated;
            *t.w = w;
            *t.w_switch = w_switch;
            t.last_row = None;
            self.sensor = sensor;
        }
        Ok(())
    }
}

/// Runs the whole training loop against `sensor`, whose true weights are
/// `w_star`, calling `on_row` at every evaluation.
///
/// # Errors
/// [`RunError`] if the sensor, an averager or the arithmetic fails.
pub fn run<const D: usize, I: I2c>(
    cfg: &Config,
    sensor: &mut Sensor<I>,
    w_star: &[f32; D],
    bufs: &mut Buffers<D>,
    mut on_row: impl FnMut(&Row),
) -> Result<Summary, RunError<I::Error>> {
    let mut t = Trainer::new(cfg, bufs)?;
    while !t.done() {
        t.advance(sensor, w_star, &mut on_row)?;
    }
    t.summary()
}

/// Weight vectors evaluated: last, EMA, EMA Q15, SWA, Switch EMA, window.
const SETS: usize = 6;

/// `mean_j ((w − w*)·x_j)²` over the held-out set, for every `w` in `sets`;
/// the window model's outputs `w·x_j` (the last set) go into `stats` when
/// they are finite (once the window has a snapshot).
fn excess_risks<const D: usize>(
    cfg: &Config,
    w_star: &[f32; D],
    sets: &[&[f32]; SETS],
    out: &mut [f32; SETS],
    stats: &mut Stats,
) -> Result<(), polyak::Error> {
    let mut rng = Rng::new(cfg.seed ^ 0x5eed_0f4e_1d00_u64);
    let mut acc = [0.0f32; SETS];
    let mut x = [0.0f32; D];
    let dot = |a: &[f32], x: &[f32]| a.iter().zip(x).fold(0.0f32, |s, (a, x)| s + a * x);
    for _ in 0..cfg.holdout {
        for xi in x.iter_mut() {
            *xi = q15_to_f32(rng.next_i16());
        }
        for (a, w) in acc.iter_mut().zip(sets) {
            let d = w
                .iter()
                .zip(w_star)
                .zip(&x)
                .fold(0.0f32, |s, ((w, ws), x)| s + (w - ws) * x);
            *a += d * d;
        }
        let act = dot(sets[SETS - 1], &x);
        if act.is_finite() {
            ops::stats_update(stats, &[act])?;
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a / cfg.holdout as f32;
    }
    Ok(())
}
