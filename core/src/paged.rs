//! An EMA whose shadow lives in NOR flash, updated page by page.
//!
//! A model too big for RAM keeps its averaged copy in flash. [`FlashEma`]
//! holds in RAM only one page of the shadow (the storage of the [`Ema`]
//! it is built from, which also carries the schedule and the counters), a
//! page of bytes, and a bitmap of the pages the current step has done. The
//! flash holds two banks of the shadow and a two-slot [`Store`] journal:
//!
//! ```text
//! journal: [slot A][slot B]      banks: [bank 0: page 0 … page P−1][bank 1: …]
//! ```
//!
//! A step reads each page of the shadow from the current bank, applies the
//! EMA to it in RAM and writes it to the same page of the other bank (in
//! any page order, each page once). [`finish`](FlashEma::finish) then
//! commits a journal record — the counters, the debiasing weight, the
//! rounding generator, which bank is current, and a digest of its pages —
//! through the store's power-cut-safe commit. Until that record is
//! complete the journal still names the old bank, which no step writes:
//! a power cut anywhere in a step leaves the state before the step or,
//! once the record is in, the state after it. Never a mix.
//!
//! The digest is the XOR of a CRC-32 per page (of its index and bytes), so
//! it does not depend on the page order; a step checks that the pages it
//! read match the digest of the current bank before committing, and
//! [`verify`](FlashEma::verify) checks a whole bank.
//!
//! RAM for a model of `N` parameters with `E`-byte erase sectors: the page
//! of the shadow (`E` bytes), the page of bytes (`E`), the coverage bitmap
//! (`⌈N·size/E⌉` bits) and about 150 bytes of scalars — plus the caller's
//! window on the parameters, one page of them at a time.
//!
//! ```
//! use polyak::paged::FlashEma;
//! use polyak::Ema;
//! # use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash, NorFlashErrorKind};
//! # struct Ram([u8; 4096]);
//! # impl ErrorType for Ram { type Error = NorFlashErrorKind; }
//! # impl ReadNorFlash for Ram {
//! #     const READ_SIZE: usize = 1;
//! #     fn read(&mut self, o: u32, b: &mut [u8]) -> Result<(), Self::Error> {
//! #         b.copy_from_slice(&self.0[o as usize..o as usize + b.len()]); Ok(())
//! #     }
//! #     fn capacity(&self) -> usize { 4096 }
//! # }
//! # impl NorFlash for Ram {
//! #     const WRITE_SIZE: usize = 4;
//! #     const ERASE_SIZE: usize = 256;
//! #     fn erase(&mut self, f: u32, t: u32) -> Result<(), Self::Error> {
//! #         self.0[f as usize..t as usize].fill(0xff); Ok(())
//! #     }
//! #     fn write(&mut self, o: u32, b: &[u8]) -> Result<(), Self::Error> {
//! #         self.0[o as usize..o as usize + b.len()].copy_from_slice(b); Ok(())
//! #     }
//! # }
//! // a 200-weight model; a page is 256 bytes = 64 f32
//! let flash = Ram([0xff; 4096]);
//! let page = Ema::new([0.0f32; 64], 0.9)?;
//! let mut ema: FlashEma<_, _, _, 1, _> =
//!     FlashEma::open(page, flash, 0, 512, 1024, 200, [0u8; 256]).map_err(|_| polyak::Error::Storage)?;
//! let weights = [0.5f32; 200];
//! for _ in 0..3 {
//!     ema.begin().map_err(|_| polyak::Error::Storage)?;
//!     for offset in [128, 0, 192, 64] {
//!         let end = (offset + 64).min(200);
//!         ema.update_page(offset, &weights[offset..end]).map_err(|_| polyak::Error::Storage)?;
//!     }
//!     ema.finish().map_err(|_| polyak::Error::Storage)?;
//! }
//! let mut out = [0.0f32; 64];
//! ema.read_page(128, &mut out[..64]).map_err(|_| polyak::Error::Storage)?;
//! assert_eq!(out[0], 0.5);
//! # Ok::<(), polyak::Error>(())
//! ```

use embedded_storage::nor_flash::NorFlash;

use crate::Error;
use crate::chunk::Coverage;
use crate::codec::{ByteSink, ByteSource, Crc32, Decoder, Element, Encoder, Header, Kind, Persist};
use crate::ema::{Ema, EmaPlan, EmaScalars, EmaShadow};
use crate::store::{Store, StoreError};

/// What the journal holds: the EMA's scalars, the current bank, whether
/// any step is in, and the current bank's digest.
struct Journal<'e, A: EmaShadow, S> {
    ema: &'e mut Ema<A, S>,
    total: u64,
    page_len: u32,
    bank: u8,
    fresh: bool,
    digest: u32,
}

impl<A: EmaShadow, S: AsRef<[A]> + AsMut<[A]>> Persist for Journal<'_, A, S> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::FlashEma as u8,
            format: A::FORMAT,
            len: 0,
            layout: 0,
            fields: (Ema::<A, S>::SCALARS + 8 + 4 + 1 + 1 + 4) as u32,
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        self.ema.encode_scalars(enc)?;
        enc.u64(self.total)?;
        enc.u32(self.page_len)?;
        enc.u8(self.bank)?;
        enc.u8(u8::from(self.fresh))?;
        enc.u32(self.digest)
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        self.ema.decode_scalars(dec, apply)?;
        let (total, page_len) = (dec.u64()?, dec.u32()?);
        let (bank, fresh, digest) = (dec.u8()?, dec.u8()?, dec.u32()?);
        if total != self.total || page_len != self.page_len {
            return Err(Error::LayoutMismatch);
        }
        if bank > 1 || fresh > 1 {
            return Err(Error::InvalidState);
        }
        if apply {
            self.bank = bank;
            self.fresh = fresh == 1;
            self.digest = digest;
        }
        Ok(())
    }
}

/// An open step: the plan, the pages done, the digests so far.
#[derive(Debug, Clone, Copy)]
struct Open<C> {
    plan: EmaPlan<C>,
    read: u32,
    written: u32,
}

/// An EMA with its shadow in two banks of NOR flash and its counters in a
/// power-cut-safe journal; see the [module docs](self).
///
/// `S` is the RAM page (the storage of the [`Ema`] passed in, `E / size`
/// elements for `E`-byte erase sectors), `B` the page of bytes (`E`
/// bytes), `W` the coverage bitmap's words (`32·W` pages at most).
pub struct FlashEma<A: EmaShadow, F, S, const W: usize, B> {
    ema: Ema<A, S>,
    flash: F,
    journal: u32,
    slot_len: u32,
    banks: u32,
    total: usize,
    bank: u8,
    fresh: bool,
    digest: u32,
    bytes: B,
    cov: Coverage<W>,
    open: Option<Open<A::Coef>>,
}

impl<A, F, S, const W: usize, B> FlashEma<A, F, S, W, B>
where
    A: EmaShadow + Element,
    F: NorFlash,
    S: AsRef<[A]> + AsMut<[A]>,
    B: AsRef<[u8]> + AsMut<[u8]>,
{
    /// Opens (or, on blank flash, starts) an EMA of `len` parameters: the
    /// journal's two slots of `slot_len` bytes at `journal`, the two banks
    /// of the shadow from `banks` on. `ema` sets the schedule, the start
    /// and the rounding; its storage is the RAM page and must hold exactly
    /// one erase sector of shadow elements; `bytes` must be one erase
    /// sector long. A journal record is restored if there is one.
    ///
    /// # Errors
    /// [`StoreError::BadRegion`] for a geometry that does not fit (page
    /// sizes, alignment, capacity, too many pages for `W`);
    /// [`StoreError::State`] for a journal written under another
    /// configuration or layout; [`StoreError::Flash`].
    pub fn open(
        ema: Ema<A, S>,
        flash: F,
        journal: u32,
        slot_len: u32,
        banks: u32,
        len: usize,
        bytes: B,
    ) -> Result<Self, StoreError<F::Error>> {
        let page_bytes = F::ERASE_SIZE;
        let page_len = ema.len();
        let pages = len.div_ceil(page_len.max(1));
        let bank_bytes = pages.checked_mul(page_bytes).ok_or(StoreError::BadRegion)?;
        let fits = page_len > 0
            && page_len.checked_mul(A::SIZE) == Some(page_bytes)
            && bytes.as_ref().len() == page_bytes
            && page_bytes.is_multiple_of(F::WRITE_SIZE.max(1))
            && (banks as usize).is_multiple_of(page_bytes)
            && (banks as usize)
                .checked_add(2 * bank_bytes)
                .is_some_and(|end| end <= flash.capacity());
        if !fits {
            return Err(StoreError::BadRegion);
        }
        let cov = Coverage::new(len, page_len).map_err(|_| StoreError::BadRegion)?;
        let mut this = Self {
            ema,
            flash,
            journal,
            slot_len,
            banks,
            total: len,
            bank: 0,
            fresh: true,
            digest: 0,
            bytes,
            cov,
            open: None,
        };
        // the journal must not overlap the banks
        let jend = u64::from(journal) + 2 * u64::from(slot_len);
        let bend = u64::from(banks) + 2 * bank_bytes as u64;
        if jend > u64::from(banks) && bend > u64::from(journal) {
            return Err(StoreError::BadRegion);
        }
        this.restore()?;
        Ok(this)
    }

    fn restore(&mut self) -> Result<(), StoreError<F::Error>> {
        let (total, page_len) = (self.total as u64, self.ema.len() as u32);
        let mut store = Store::new(&mut self.flash, self.journal, self.slot_len)?;
        let mut j = Journal {
            ema: &mut self.ema,
            total,
            page_len,
            bank: 0,
            fresh: true,
            digest: 0,
        };
        if store.restore(&mut j)?.is_some() {
            let (bank, fresh, digest) = (j.bank, j.fresh, j.digest);
            self.bank = bank;
            self.fresh = fresh;
            self.digest = digest;
        }
        Ok(())
    }

    /// Parameters of the model.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether the model is empty.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Elements per page.
    pub fn page_len(&self) -> usize {
        self.ema.len()
    }

    /// The EMA's counters and configuration (its storage is the RAM page:
    /// read the average with [`read_page`](Self::read_page)).
    pub fn ema(&self) -> &Ema<A, S> {
        &self.ema
    }

    /// Updates committed so far.
    pub fn steps(&self) -> u64 {
        self.ema.steps()
    }

    /// Whether a step is open.
    pub fn in_step(&self) -> bool {
        self.open.is_some()
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    fn bank_base(&self, bank: u8) -> u32 {
        let pages = self.total.div_ceil(self.page_len().max(1));
        self.banks + u32::from(bank) * (pages * F::ERASE_SIZE) as u32
    }

    /// Bytes of page `p` that hold elements.
    fn page_bytes(&self, p: usize) -> usize {
        let n = self.page_len();
        self.total.saturating_sub(p * n).min(n) * A::SIZE
    }

    /// Reads page `p` of `bank` into the RAM page; returns its digest term.
    fn load(&mut self, bank: u8, p: usize) -> Result<u32, StoreError<F::Error>> {
        let n = self.page_bytes(p);
        let at = self.bank_base(bank) + (p * F::ERASE_SIZE) as u32;
        let buf = self.bytes.as_mut().get_mut(..n).unwrap_or(&mut []);
        crate::store::read_aligned(&mut self.flash, at, buf).map_err(StoreError::Flash)?;
        for (e, b) in self.ema.shadow_mut().iter_mut().zip(buf.chunks(A::SIZE)) {
            *e = A::get(b).ok_or(StoreError::State(Error::InvalidState))?;
        }
        Ok(page_digest(p, buf))
    }

    /// Writes the RAM page as page `p` of `bank`; returns its digest term.
    fn store(&mut self, bank: u8, p: usize) -> Result<u32, StoreError<F::Error>> {
        let n = self.page_bytes(p);
        let at = self.bank_base(bank) + (p * F::ERASE_SIZE) as u32;
        let bytes = self.bytes.as_mut();
        bytes.fill(0xff);
        for (e, b) in self.ema.shadow().iter().zip(bytes.chunks_mut(A::SIZE)) {
            e.put(b);
        }
        let word = F::WRITE_SIZE.max(1);
        let padded = n.div_ceil(word) * word;
        self.flash
            .erase(at, at + F::ERASE_SIZE as u32)
            .map_err(StoreError::Flash)?;
        let data = self.bytes.as_ref().get(..padded).unwrap_or(&[]);
        self.flash.write(at, data).map_err(StoreError::Flash)?;
        Ok(page_digest(p, self.bytes.as_ref().get(..n).unwrap_or(&[])))
    }

    /// Opens a step.
    ///
    /// # Errors
    /// [`Error::StepInProgress`]; [`Error::CountOverflow`] (as
    /// [`StoreError::State`]).
    pub fn begin(&mut self) -> Result<(), StoreError<F::Error>> {
        if self.open.is_some() {
            return Err(StoreError::State(Error::StepInProgress));
        }
        let plan = self.ema.plan().map_err(StoreError::State)?;
        self.cov.clear();
        self.open = Some(Open {
            plan,
            read: 0,
            written: 0,
        });
        Ok(())
    }

    /// Applies the parameters of the page that starts at `offset` (a
    /// multiple of [`page_len`](Self::page_len); a whole page, or the rest
    /// of the model for the last one).
    ///
    /// # Errors
    /// [`Error::NoStep`]; [`Error::ChunkMisaligned`] /
    /// [`Error::ChunkOverlap`] / [`Error::LengthMismatch`] (not one whole
    /// page); the values' errors; [`StoreError::Flash`] (the page may be
    /// given again, or the step aborted). Nothing the journal names
    /// changes.
    pub fn update_page(
        &mut self,
        offset: usize,
        params: &[A::Param],
    ) -> Result<(), StoreError<F::Error>> {
        let Some(open) = self.open else {
            return Err(StoreError::State(Error::NoStep));
        };
        let n = self.page_len();
        let p = offset / n.max(1);
        let want = self.total.saturating_sub(offset).min(n);
        if params.len() != want {
            return Err(StoreError::State(Error::LengthMismatch {
                expected: want,
                found: params.len(),
            }));
        }
        self.cov
            .check(offset, params.len())
            .map_err(StoreError::State)?;
        A::check(params).map_err(StoreError::State)?;
        let read = if self.fresh {
            self.ema.shadow_mut().fill(A::ZERO);
            0
        } else {
            self.load(self.bank, p)?
        };
        let mut plan = open.plan;
        let rng = self.ema.piece_in(&mut plan, offset, offset, params);
        if offset.saturating_add(params.len()) == self.total {
            plan.rng_end = Some(rng);
        }
        let written = self.store(1 - self.bank, p)?;
        self.cov.set(offset, params.len());
        self.open = Some(Open {
            plan,
            read: open.read ^ read,
            written: open.written ^ written,
        });
        Ok(())
    }

    /// Commits the step: checks the pages read against the current bank's
    /// digest, then writes the journal record naming the new bank.
    ///
    /// # Errors
    /// [`Error::NoStep`]; [`Error::StepIncomplete`] (the step stays open);
    /// [`Error::BadChecksum`] if the pages read do not match the digest
    /// (the step is dropped, the state is the one before it);
    /// [`StoreError::Flash`] while committing (the state is the one before
    /// the step, or after it if the record got in: re-open to know).
    pub fn finish(&mut self) -> Result<(), StoreError<F::Error>> {
        let Some(open) = self.open else {
            return Err(StoreError::State(Error::NoStep));
        };
        if let Some(index) = self.cov.missing() {
            return Err(StoreError::State(Error::StepIncomplete { index }));
        }
        if !self.fresh && open.read != self.digest {
            self.open = None;
            return Err(StoreError::State(Error::BadChecksum));
        }
        let before: EmaScalars<A> = self.ema.scalars();
        self.ema
            .commit_in(open.plan, self.total)
            .map_err(StoreError::State)?;
        let (total, page_len) = (self.total as u64, self.page_len() as u32);
        let bank = 1 - self.bank;
        let mut store = Store::new(&mut self.flash, self.journal, self.slot_len)?;
        let j = Journal {
            ema: &mut self.ema,
            total,
            page_len,
            bank,
            fresh: false,
            digest: open.written,
        };
        match store.commit(&j) {
            Ok(_) => {
                self.bank = bank;
                self.fresh = false;
                self.digest = open.written;
                self.open = None;
                Ok(())
            }
            Err(e) => {
                self.ema.set_scalars(before);
                self.open = None;
                Err(e)
            }
        }
    }

    /// Drops the open step; the flash still holds the state before it.
    ///
    /// # Errors
    /// [`Error::NoStep`].
    pub fn abort(&mut self) -> Result<(), Error> {
        self.open.take().map(|_| ()).ok_or(Error::NoStep)
    }

    /// Writes the average of the page that starts at `offset` into `out`
    /// (as long as that page).
    ///
    /// # Errors
    /// [`Error::StepInProgress`]; [`Error::Empty`] before the first step;
    /// [`Error::ChunkMisaligned`] / [`Error::LengthMismatch`];
    /// [`StoreError::Flash`].
    pub fn read_page(
        &mut self,
        offset: usize,
        out: &mut [A::Param],
    ) -> Result<(), StoreError<F::Error>> {
        if self.open.is_some() {
            return Err(StoreError::State(Error::StepInProgress));
        }
        let n = self.page_len();
        if !offset.is_multiple_of(n.max(1)) {
            return Err(StoreError::State(Error::ChunkMisaligned { index: offset }));
        }
        let want = self.total.saturating_sub(offset).min(n);
        if out.len() != want || offset >= self.total {
            return Err(StoreError::State(Error::LengthMismatch {
                expected: want,
                found: out.len(),
            }));
        }
        if self.fresh {
            return Err(StoreError::State(Error::Empty));
        }
        self.load(self.bank, offset / n)?;
        self.ema.read_prefix(out).map_err(StoreError::State)
    }

    /// Reads every page of the current bank and checks the digest.
    ///
    /// # Errors
    /// [`Error::BadChecksum`]; [`Error::InvalidState`] for a value that
    /// cannot occur; [`StoreError::Flash`].
    pub fn verify(&mut self) -> Result<(), StoreError<F::Error>> {
        if self.fresh {
            return Ok(());
        }
        let mut d = 0;
        for p in 0..self.total.div_ceil(self.page_len().max(1)) {
            d ^= self.load(self.bank, p)?;
        }
        if d == self.digest {
            Ok(())
        } else {
            Err(StoreError::State(Error::BadChecksum))
        }
    }
}

/// A page's digest term: CRC-32 of its index and bytes.
fn page_digest(p: usize, bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(&(p as u64).to_le_bytes());
    c.update(bytes);
    c.finish()
}
