//! The device half of post-hoc EMA (Karras et al., "Analyzing and
//! Improving the Training Dynamics of Diffusion Models", 2024).
//!
//! During training the device keeps `K` power-function EMAs (typically
//! σ_rel = 0.05 and 0.10) in one [`EmaBank`] pass and, every
//! `snapshot_every` updates, writes each of them to a [`SnapshotSink`] (a
//! trait the firmware implements over flash; `polyak-host` implements it in
//! memory). After training, the host solves a small least-squares problem
//! over the snapshots' power-function profiles and reconstructs the EMA for
//! any σ_rel it wants (`polyak_host::posthoc`), streaming the snapshots one
//! at a time.
//!
//! A snapshot is written through a 32-element stack buffer: no RAM beyond
//! the bank itself.
//!
//! ```
//! use polyak::posthoc::{PostHoc, SnapshotMeta, SnapshotSink};
//! use polyak::CompF32;
//!
//! /// Counts what would go to flash.
//! #[derive(Default)]
//! struct Count { snapshots: u32, values: usize }
//! impl SnapshotSink<f32> for Count {
//!     type Error = ();
//!     fn begin(&mut self, _: &SnapshotMeta) -> Result<(), ()> { self.snapshots += 1; Ok(()) }
//!     fn write(&mut self, chunk: &[f32]) -> Result<(), ()> { self.values += chunk.len(); Ok(()) }
//!     fn end(&mut self) -> Result<(), ()> { Ok(()) }
//! }
//!
//! let mut ph = PostHoc::new([[CompF32::ZERO; 2]; 100], [0.05, 0.10], 10)?;
//! let mut sink = Count::default();
//! for step in 0..50 {
//!     ph.update(&[step as f32; 100], &mut sink).map_err(|_| polyak::Error::Empty)?;
//! }
//! assert_eq!(sink.snapshots, 10); // 5 snapshot times × 2 EMAs
//! assert_eq!(sink.values, 1000);
//! # Ok::<(), polyak::Error>(())
//! ```

use crate::Error;
use crate::bank::EmaBank;
use crate::codec::{ByteSink, ByteSource, Decoder, Encoder, Header, Kind, Persist, nested_len};
use crate::ema::{EmaShadow, len_u32};
use crate::schedule::{Schedule, sigma_rel_to_gamma};

/// What describes one snapshot of one EMA.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SnapshotMeta {
    /// Running number of the snapshot time (0, 1, …); all members of one
    /// time share it.
    pub index: u32,
    /// Which EMA of the bank.
    pub member: u8,
    /// The EMA step `t` the snapshot was taken at (the profile's length).
    pub t: u64,
    /// The EMA's exponent γ.
    pub gamma: f32,
    /// Number of values that follow.
    pub len: u32,
}

/// Where snapshots go: `begin`, then `write` in chunks, then `end`.
pub trait SnapshotSink<T> {
    /// The sink's error.
    type Error;
    /// A snapshot starts.
    ///
    /// # Errors
    /// The sink's own.
    fn begin(&mut self, meta: &SnapshotMeta) -> Result<(), Self::Error>;
    /// The next values of the snapshot.
    ///
    /// # Errors
    /// The sink's own.
    fn write(&mut self, chunk: &[T]) -> Result<(), Self::Error>;
    /// The snapshot is complete.
    ///
    /// # Errors
    /// The sink's own.
    fn end(&mut self) -> Result<(), Self::Error>;
}

/// A post-hoc recording step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotError<E> {
    /// The averager refused (bad input); nothing changed.
    Average(Error),
    /// The sink failed; the EMAs were updated, the snapshot is incomplete.
    Sink(E),
}

/// `K` power-function EMAs that snapshot themselves periodically.
#[derive(Debug, Clone)]
pub struct PostHoc<A: EmaShadow, S, const K: usize> {
    bank: EmaBank<A, S, K>,
    gammas: [f32; K],
    every: u32,
    index: u32,
}

impl<A: EmaShadow, S: AsRef<[[A; K]]> + AsMut<[[A; K]]>, const K: usize> PostHoc<A, S, K> {
    /// Power-function EMAs with relative widths `sigma_rels`, snapshotted
    /// every `snapshot_every` updates.
    ///
    /// # Errors
    /// [`Error::InvalidDecay`] for a σ_rel outside `(0, 0.2887)` or
    /// `snapshot_every = 0`.
    pub fn new(storage: S, sigma_rels: [f32; K], snapshot_every: u32) -> Result<Self, Error> {
        if snapshot_every == 0 {
            return Err(Error::InvalidDecay);
        }
        let mut gammas = [0.0f32; K];
        for (g, &s) in gammas.iter_mut().zip(&sigma_rels) {
            *g = sigma_rel_to_gamma(f64::from(s))? as f32;
        }
        let bank = EmaBank::with_schedules(storage, gammas.map(Schedule::power))?;
        Ok(Self {
            bank,
            gammas,
            every: snapshot_every,
            index: 0,
        })
    }

    /// The exponents γ of the members.
    pub fn gammas(&self) -> [f32; K] {
        self.gammas
    }

    /// The bank of EMAs.
    pub fn bank(&self) -> &EmaBank<A, S, K> {
        &self.bank
    }

    /// Snapshots written so far (snapshot times, not member snapshots;
    /// modulo 2³²).
    pub fn snapshots(&self) -> u32 {
        self.index
    }

    /// Updates every EMA and, when due, writes a snapshot of each; returns
    /// whether it did.
    ///
    /// # Errors
    /// [`SnapshotError::Average`] for bad input (state unchanged);
    /// [`SnapshotError::Sink`] if the sink fails.
    pub fn update<W>(
        &mut self,
        params: &[A::Param],
        sink: &mut W,
    ) -> Result<bool, SnapshotError<W::Error>>
    where
        W: SnapshotSink<A::Param>,
    {
        self.bank.update(params).map_err(SnapshotError::Average)?;
        if self.snapshot_due() {
            self.snapshot(sink)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Whether the last update asked for a snapshot (after a chunked step,
    /// call [`snapshot`](Self::snapshot) when this is true).
    pub fn snapshot_due(&self) -> bool {
        self.bank.steps() > 0 && self.bank.steps().is_multiple_of(u64::from(self.every))
    }

    /// Writes a snapshot of every EMA now.
    ///
    /// # Errors
    /// [`SnapshotError::Average`] before the first update;
    /// [`SnapshotError::Sink`] if the sink fails.
    pub fn snapshot<W>(&mut self, sink: &mut W) -> Result<(), SnapshotError<W::Error>>
    where
        W: SnapshotSink<A::Param>,
    {
        let n = self.bank.len();
        let ts = self.bank.ema_steps();
        for (k, (&gamma, &t)) in self.gammas.iter().zip(&ts).enumerate() {
            let meta = SnapshotMeta {
                index: self.index,
                member: k as u8,
                t,
                gamma,
                len: n as u32,
            };
            sink.begin(&meta).map_err(SnapshotError::Sink)?;
            let mut result = Ok(());
            self.bank
                .read_chunks(k, |chunk| {
                    if result.is_ok() {
                        result = sink.write(chunk);
                    }
                })
                .map_err(SnapshotError::Average)?;
            result.map_err(SnapshotError::Sink)?;
            sink.end().map_err(SnapshotError::Sink)?;
        }
        self.index = self.index.wrapping_add(1);
        Ok(())
    }
}

/// Chunked updates (see [`crate::chunk`]): the bank's; after the step,
/// [`PostHoc::snapshot_due`] says whether to write a snapshot.
impl<A: EmaShadow, S: AsRef<[[A; K]]> + AsMut<[[A; K]]>, const K: usize> crate::chunk::Chunkable
    for PostHoc<A, S, K>
{
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = crate::bank::BankPlan<A::Coef, K>;

    fn step_len(&self) -> usize {
        self.bank.len()
    }
    fn begin_step(&mut self, (): ()) -> Result<Self::Plan, Error> {
        self.bank.begin_step(())
    }
    fn apply_chunk(
        &mut self,
        plan: &mut Self::Plan,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        self.bank.apply_chunk(plan, offset, x)
    }
    fn finish_step(&mut self, plan: Self::Plan) -> Result<(), Error> {
        self.bank.finish_step(plan)
    }
}

/// The recorder's state: its bank (nested, with its schedules, so other
/// widths are [`Error::ConfigMismatch`]), the snapshot interval (which
/// must match) and the snapshots written so far.
impl<A: EmaShadow, S: AsRef<[[A; K]]> + AsMut<[[A; K]]>, const K: usize> Persist
    for PostHoc<A, S, K>
{
    fn header(&self) -> Header {
        Header {
            kind: Kind::PostHoc as u8,
            format: 0,
            len: len_u32(self.bank.len()),
            layout: 0,
            fields: len_u32(4 + 4 + nested_len(&self.bank)),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.u32(self.every)?;
        enc.u32(self.index)?;
        enc.nested(&self.bank)
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        if dec.u32()? != self.every {
            return Err(Error::ConfigMismatch);
        }
        let index = dec.u32()?;
        dec.nested_into(&mut self.bank, apply)?;
        if apply {
            self.index = index;
        }
        Ok(())
    }
}
