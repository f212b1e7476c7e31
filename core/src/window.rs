//! The average of the last `k` snapshots (LAWA-style latest-weight
//! averaging: a window that slides along the trajectory).
//!
//! The snapshots live in caller storage reached through [`WindowStore`]: a
//! RAM ring ([`RamRing`]) for small models, flash pages for large ones. The
//! [`Window`] keeps a running sum: each update adds the newest snapshot and
//! subtracts the one leaving the window, read back from the store through
//! a 64-element stack buffer.
//!
//! The store has `k + 1` slots: a new snapshot is written to the spare slot
//! first, so a store that fails to write leaves the window as it was.
//!
//! | accumulator | sum | bound on the window mean |
//! |---|---|---|
//! | [`CompF32`](crate::CompF32) | compensated pair | `ε·|mean| + (s + k/2)·ε²·M + η` after `s` slides since the last exact re-sum |
//! | [`I49F15`](crate::I49F15), [`I33F31`](crate::I33F31) | exact i64 | ≤ ½ LSB: bit for bit the mean recomputed from scratch |
//!
//! (`M` the largest `|x|` in the window's history, `ε = 2⁻²³`,
//! `η = 2⁻¹⁴⁹`.) The f32 drift is tiny (10⁴ slides add 1.4·10⁻¹⁰·M), and
//! [`Window::with_resum_every`] bounds it anyway by re-summing the window
//! exactly from the store every so many slides.
//!
//! ```
//! use polyak::window::{RamRing, Window};
//! use polyak::{I49F15, Q15};
//!
//! // a window of the last 3 snapshots of 2 parameters: 4 slots
//! let mut w = Window::new([I49F15::ZERO; 2], RamRing::new([Q15::ZERO; 8], 2)?, 3)?;
//! for v in [0.1, 0.2, 0.3, 0.4] {
//!     w.update(&[Q15::from_num(v), Q15::from_num(-v)])?;
//! }
//! let mut mean = [Q15::ZERO; 2];
//! w.read_into(&mut mean)?; // (0.2 + 0.3 + 0.4) / 3
//! assert!((mean[0].to_num::<f32>() - 0.3).abs() < 1e-4);
//! # Ok::<(), polyak::Error>(())
//! ```

use core::num::{NonZeroU64, NonZeroUsize};

use crate::Error;
use crate::codec::{ByteSink, ByteSource, Decoder, Element, Encoder, Header, Kind, Persist};
use crate::ema::{CHUNK, check_len, len_u32};
use crate::swa::SwaAccumulator;

/// Storage for the snapshots of a window: `slots` snapshots of `len`
/// values each.
pub trait WindowStore<T> {
    /// Snapshots it holds (the window is one fewer).
    fn slots(&self) -> usize;
    /// Values per snapshot.
    fn snapshot_len(&self) -> usize;
    /// Stores `data` as values `offset..offset + data.len()` of `slot`.
    ///
    /// # Errors
    /// The store's ([`Error::Storage`], or an index error).
    fn write(&mut self, slot: usize, offset: usize, data: &[T]) -> Result<(), Error>;
    /// Reads `out.len()` values of `slot` starting at `offset`.
    ///
    /// # Errors
    /// The store's.
    fn read(&mut self, slot: usize, offset: usize, out: &mut [T]) -> Result<(), Error>;
}

/// Snapshots in RAM: `buf` holds `slots × len` values, slot-major.
#[derive(Debug, Clone)]
pub struct RamRing<T, S> {
    buf: S,
    len: usize,
    _elem: core::marker::PhantomData<T>,
}

impl<T: Copy, S: AsRef<[T]> + AsMut<[T]>> RamRing<T, S> {
    /// A ring over `buf` for snapshots of `len` values.
    ///
    /// # Errors
    /// [`Error::InvalidWindow`] if `len` is 0 or `buf` holds fewer than two
    /// snapshots.
    pub fn new(buf: S, len: usize) -> Result<Self, Error> {
        if len == 0 || buf.as_ref().len() / len < 2 {
            return Err(Error::InvalidWindow);
        }
        Ok(Self {
            buf,
            len,
            _elem: core::marker::PhantomData,
        })
    }
}

impl<T: Copy, S: AsRef<[T]>> RamRing<T, S> {
    fn value(&self, slot: usize, i: usize) -> Option<T> {
        self.buf
            .as_ref()
            .get(slot.checked_mul(self.len)?.checked_add(i)?)
            .copied()
    }
}

impl<T: Copy, S: AsRef<[T]> + AsMut<[T]>> WindowStore<T> for RamRing<T, S> {
    fn slots(&self) -> usize {
        self.buf.as_ref().len() / self.len
    }
    fn snapshot_len(&self) -> usize {
        self.len
    }
    fn write(&mut self, slot: usize, offset: usize, data: &[T]) -> Result<(), Error> {
        // within one slot, and the slot within the buffer
        let end = offset.wrapping_add(data.len());
        let dst = (end <= self.len && end >= offset)
            .then(|| slot.checked_mul(self.len))
            .flatten()
            .and_then(|s| {
                self.buf
                    .as_mut()
                    .get_mut(s.wrapping_add(offset)..s.wrapping_add(end))
            })
            .ok_or(Error::InvalidIndex { index: slot })?;
        for (d, s) in dst.iter_mut().zip(data) {
            *d = *s;
        }
        Ok(())
    }
    fn read(&mut self, slot: usize, offset: usize, out: &mut [T]) -> Result<(), Error> {
        let start = slot
            .checked_mul(self.len)
            .and_then(|s| s.checked_add(offset))
            .ok_or(Error::InvalidIndex { index: slot })?;
        let src = self
            .buf
            .as_ref()
            .get(start..start + out.len())
            .ok_or(Error::InvalidIndex { index: slot })?;
        for (o, s) in out.iter_mut().zip(src) {
            *o = *s;
        }
        Ok(())
    }
}

/// Adds (or subtracts) the snapshot in `slot`, from value `offset` on, to
/// `sum`, chunk by chunk through a stack buffer.
fn fold_slot<A: SwaAccumulator, W: WindowStore<A::Param>>(
    store: &mut W,
    slot: usize,
    offset: usize,
    sum: &mut [A],
    subtract: bool,
) -> Result<(), Error> {
    let mut buf = [A::PARAM_ZERO; CHUNK];
    let mut at = offset;
    for acc in sum.chunks_mut(CHUNK) {
        let chunk = buf.get_mut(..acc.len()).unwrap_or(&mut []);
        store.read(slot, at, chunk)?;
        if subtract {
            A::sub(acc, chunk);
        } else {
            A::add(acc, chunk);
        }
        at += acc.len();
    }
    Ok(())
}

/// One step of a [`Window`], fixed at its start (see [`crate::chunk`]).
#[derive(Debug, Clone, Copy)]
pub struct WindowPlan {
    spare: usize,
    full: bool,
    oldest: usize,
}

/// The mean of the last `k` snapshots.
#[derive(Debug, Clone)]
pub struct Window<A: SwaAccumulator, S, W> {
    sum: S,
    store: W,
    k: usize,
    /// `k + 1`, the slots in use.
    ring: NonZeroUsize,
    count: usize,
    oldest: usize,
    slides: u64,
    since_resum: u64,
    resum_every: Option<NonZeroU64>,
    stale: bool,
    _elem: core::marker::PhantomData<fn() -> A>,
}

impl<A: SwaAccumulator, S: AsRef<[A]> + AsMut<[A]>, W: WindowStore<A::Param>> Window<A, S, W> {
    /// A window of the last `k` snapshots; `sum` (zero-filled) holds the
    /// running sum, `store` the snapshots.
    ///
    /// # Errors
    /// [`Error::InvalidWindow`] if `k` is 0 or the store has fewer than
    /// `k + 1` slots; [`Error::LengthMismatch`] if the store's snapshots
    /// are not as long as `sum`.
    pub fn new(mut sum: S, store: W, k: usize) -> Result<Self, Error> {
        if k == 0 || store.slots() < k.saturating_add(1) || k > A::MAX_COUNT as usize {
            return Err(Error::InvalidWindow);
        }
        let ring = NonZeroUsize::new(k.wrapping_add(1)).ok_or(Error::InvalidWindow)?;
        check_len(sum.as_ref().len(), store.snapshot_len())?;
        sum.as_mut().fill(A::ZERO);
        Ok(Self {
            sum,
            store,
            k,
            ring,
            count: 0,
            oldest: 0,
            slides: 0,
            since_resum: 0,
            resum_every: None,
            stale: false,
            _elem: core::marker::PhantomData,
        })
    }

    /// Re-sums the window exactly from the store after every `n` slides
    /// (bounding the f32 drift; pointless but harmless for exact sums).
    pub fn with_resum_every(mut self, n: NonZeroU64) -> Self {
        self.resum_every = Some(n);
        self
    }

    /// Snapshots in the window (at most `k`).
    pub fn count(&self) -> usize {
        self.count
    }

    /// Snapshots that have left the window so far (modulo 2⁶⁴).
    pub fn slides(&self) -> u64 {
        self.slides
    }

    /// The running sum.
    pub fn sum(&self) -> &[A] {
        self.sum.as_ref()
    }

    /// The snapshot store.
    pub fn store(&self) -> &W {
        &self.store
    }

    /// The snapshot store, mutably (to service it; changing the slots the
    /// window uses changes its average).
    pub fn store_mut(&mut self) -> &mut W {
        &mut self.store
    }

    fn slot(&self, i: usize) -> usize {
        (self.oldest + i) % self.ring
    }

    /// Recomputes the sum from the snapshots in the store.
    ///
    /// # Errors
    /// The store's; the window is then marked stale and re-summed again
    /// before its next use.
    pub fn resum(&mut self) -> Result<(), Error> {
        self.sum.as_mut().fill(A::ZERO);
        self.stale = true;
        for i in 0..self.count {
            let slot = self.slot(i);
            fold_slot::<A, W>(&mut self.store, slot, 0, self.sum.as_mut(), false)?;
        }
        self.stale = false;
        self.since_resum = 0;
        Ok(())
    }

    /// Adds a snapshot; once `k` are in, the oldest leaves.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; for f32, [`Error::NonFinite`] or
    /// [`Error::OutOfRange`] (state unchanged); the store's error if it
    /// fails to write (state unchanged) or to read (the window is then
    /// re-summed from the store at its next use, which restores it to what
    /// it was before the failed update).
    pub fn update(&mut self, params: &[A::Param]) -> Result<(), Error> {
        check_len(self.sum.as_ref().len(), params.len())?;
        A::check(params)?;
        let plan = self.begin()?;
        self.piece(&plan, 0, params)?;
        self.end(&plan)
    }

    /// A step's slots; re-sums a stale window first.
    fn begin(&mut self) -> Result<WindowPlan, Error> {
        if self.stale {
            self.resum()?;
        }
        Ok(WindowPlan {
            spare: self.slot(self.count),
            full: self.count == self.k,
            oldest: self.oldest,
        })
    }

    /// Elements `offset..offset + params.len()` of a step: the snapshot
    /// goes to the spare slot, the oldest one leaves the sum (if the
    /// window is full), the new one joins it.
    ///
    /// A store that fails to write leaves everything as it was; one that
    /// fails to read marks the window stale: it is re-summed from the
    /// store at its next use, back to the state before the step (the
    /// spare slot is not in the window).
    fn piece(
        &mut self,
        plan: &WindowPlan,
        offset: usize,
        params: &[A::Param],
    ) -> Result<(), Error> {
        self.store.write(plan.spare, offset, params)?;
        let sum = self
            .sum
            .as_mut()
            .get_mut(offset..offset.wrapping_add(params.len()))
            .unwrap_or(&mut []);
        // the oldest snapshot leaves these elements' sums
        if plan.full
            && let Err(e) = fold_slot::<A, W>(&mut self.store, plan.oldest, offset, sum, true)
        {
            self.stale = true;
            return Err(e);
        }
        A::add(sum, params);
        Ok(())
    }

    /// Ends a step: the counters, and a re-sum when one is due.
    fn end(&mut self, plan: &WindowPlan) -> Result<(), Error> {
        if plan.full {
            self.oldest = (self.oldest + 1) % self.ring;
            // counters modulo 2⁶⁴ (a restored count at the limit wraps)
            self.slides = self.slides.wrapping_add(1);
            self.since_resum = self.since_resum.wrapping_add(1);
        } else {
            self.count += 1;
        }
        if self
            .resum_every
            .is_some_and(|n| self.since_resum >= n.get())
        {
            self.resum()?;
        }
        Ok(())
    }

    /// Writes the window's mean into `out`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::Empty`] before the first
    /// snapshot; [`Error::Storage`] if a stale window cannot be re-summed.
    pub fn read_into(&mut self, out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.sum.as_ref().len(), out.len())?;
        if self.stale {
            self.resum()?;
        }
        let n = NonZeroU64::new(self.count as u64).ok_or(Error::Empty)?;
        A::mean(self.sum.as_ref(), n, out);
        Ok(())
    }
}

/// A window over a [`RamRing`] persists whole: its counters, its running
/// sum and the snapshots in the window, oldest first (the record holds `k`
/// snapshots; unused ones are zero). Decoding checks the sums against the
/// count, every snapshot value and the zero padding, and puts the oldest
/// snapshot in slot 0.
/// A window over another store persists through that store.
/// Chunked snapshots (see [`crate::chunk`]): bit-identical to
/// [`Window::update`]. A store that fails to read mid-step ends the step
/// (the window re-sums from its store, back to before the step).
impl<A: SwaAccumulator, S: AsRef<[A]> + AsMut<[A]>, W: WindowStore<A::Param>>
    crate::chunk::Chunkable for Window<A, S, W>
{
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = WindowPlan;

    fn step_len(&self) -> usize {
        self.sum.as_ref().len()
    }
    fn begin_step(&mut self, (): ()) -> Result<WindowPlan, Error> {
        self.begin()
    }
    fn apply_chunk(
        &mut self,
        plan: &mut WindowPlan,
        offset: usize,
        x: &[A::Param],
    ) -> Result<(), Error> {
        A::check(x)?;
        self.piece(plan, offset, x)
    }
    fn step_broken(&self) -> bool {
        self.stale
    }
    fn finish_step(&mut self, plan: WindowPlan) -> Result<(), Error> {
        self.end(&plan)
    }
}

impl<A, S, B> Persist for Window<A, S, RamRing<A::Param, B>>
where
    A: SwaAccumulator,
    A::Param: Element,
    S: AsRef<[A]> + AsMut<[A]>,
    B: AsRef<[A::Param]> + AsMut<[A::Param]>,
{
    fn header(&self) -> Header {
        let snapshots = self
            .k
            .saturating_mul(self.sum.as_ref().len())
            .saturating_mul(<A::Param as Element>::SIZE);
        Header {
            kind: Kind::Window as u8,
            format: A::FORMAT,
            len: len_u32(self.sum.as_ref().len()),
            layout: 0,
            fields: len_u32(WINDOW_FIELDS.saturating_add(snapshots)),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.u32(len_u32(self.k))?;
        enc.u32(len_u32(self.count))?;
        enc.u64(self.slides)?;
        enc.u64(self.since_resum)?;
        enc.u8(u8::from(self.stale))?;
        for a in self.sum.as_ref() {
            enc.elem(a)?;
        }
        let len = self.sum.as_ref().len();
        for i in 0..self.k {
            let slot = self.slot(i);
            for j in 0..len {
                let v = match i < self.count {
                    true => self.store.value(slot, j).unwrap_or(A::PARAM_ZERO),
                    false => A::PARAM_ZERO,
                };
                enc.elem(&v)?;
            }
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        if dec.u32()? != len_u32(self.k) {
            return Err(Error::ConfigMismatch);
        }
        let count = dec.u32()? as usize;
        let slides = dec.u64()?;
        let since_resum = dec.u64()?;
        let stale = match dec.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Error::InvalidState),
        };
        if count > self.k || (count < self.k && slides != 0) || since_resum > slides {
            return Err(Error::InvalidState);
        }
        for slot in self.sum.as_mut() {
            let v = dec.elem::<A>()?;
            if !v.valid_for(count as u32) {
                return Err(Error::InvalidState);
            }
            if apply {
                *slot = v;
            }
        }
        let len = self.store.len;
        for i in 0..self.k {
            for j in 0..len {
                let v = dec.elem::<A::Param>()?;
                if !A::valid(&v) || (i >= count && !zero_bits(&v)) {
                    return Err(Error::InvalidState);
                }
                if let (true, Some(d)) = (
                    apply && i < count,
                    self.store.buf.as_mut().get_mut(i * len + j),
                ) {
                    *d = v;
                }
            }
        }
        if apply {
            self.count = count;
            self.oldest = 0;
            self.slides = slides;
            self.since_resum = since_resum;
            self.stale = stale;
        }
        Ok(())
    }
}

/// Whether `v` encodes to zero bytes (the padding after the snapshots).
#[inline(always)]
fn zero_bits<E: Element>(v: &E) -> bool {
    let mut b = [0u8; crate::codec::MAX_ELEMENT];
    let dst = b.get_mut(..E::SIZE).unwrap_or(&mut []);
    v.put(dst);
    dst.iter().all(|&x| x == 0)
}

/// Bytes of a window record's counters: k, count, slides, slides since
/// the last re-sum, the stale flag.
const WINDOW_FIELDS: usize = 4 + 4 + 8 + 8 + 1;
