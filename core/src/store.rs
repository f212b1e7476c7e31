//! Power-cut-safe persistence of averager state on NOR flash.
//!
//! A [`Store`] keeps two slots (A and B) in a flash region. Each
//! [`commit`](Store::commit) writes the state into the slot that does *not*
//! hold the newest valid state, in this order: erase the slot, write a
//! header (magic, sequence number, length, header CRC), write the record
//! (the [`codec`](crate::codec) encoding, with its own CRC), and last a
//! commit marker. A power cut at any point leaves the other slot untouched,
//! so [`restore`](Store::restore) always finds the newest complete state or
//! the one before it — never neither, and never a corrupt one: a slot
//! counts only if its header CRC, its commit marker and its record CRC all
//! check, and the record then decodes with every field validated.
//!
//! ```text
//! slot:  [magic "PSLT" | seq u32 | len u32 | crc u32] pad | record (len bytes) pad | "DONE" pad
//! ```
//!
//! Each part starts on a `WRITE_SIZE` boundary; padding is 0xFF (erased).
//! Slots must be whole erase sectors. Supported flash: `READ_SIZE` and
//! `WRITE_SIZE` up to 64 bytes.
//!
//! Sequence numbers are compared with wrap-around, so a store can take
//! 2³¹ commits between restarts and any number overall.

use embedded_storage::nor_flash::NorFlash;

use crate::Error;
use crate::codec::{ByteSink, ByteSource, Crc32, Persist};

const SLOT_MAGIC: [u8; 4] = *b"PSLT";
const COMMIT: [u8; 4] = *b"DONE";
const HEADER: usize = 16;
/// Largest supported `READ_SIZE` / `WRITE_SIZE`.
pub const MAX_WORD: usize = 64;

/// Why a store operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError<E> {
    /// The flash driver failed (a commit may be incomplete; the previous
    /// state is still there).
    Flash(E),
    /// The state could not be encoded or decoded.
    State(Error),
    /// The region is not aligned to erase sectors, too small for two
    /// slots, or the flash's word sizes exceed [`MAX_WORD`].
    BadRegion,
    /// The record does not fit in a slot.
    TooLarge,
}

/// Two slots of `slot_len` bytes at `base` in `flash`.
#[derive(Debug)]
pub struct Store<F> {
    flash: F,
    base: u32,
    slot_len: u32,
}

/// A slot that passed the header, marker and record-CRC checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Valid {
    slot: u32,
    seq: u32,
    len: u32,
}

const fn round_up(v: u32, to: u32) -> u32 {
    v.div_ceil(to) * to
}

/// `a` is newer than `b` with wrap-around.
fn newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl<F: NorFlash> Store<F> {
    /// A store over `[base, base + 2·slot_len)`.
    ///
    /// # Errors
    /// [`StoreError::BadRegion`] unless `base` and `slot_len` are multiples
    /// of `ERASE_SIZE`, the region fits the flash, and the word sizes are at
    /// most [`MAX_WORD`].
    pub fn new(flash: F, base: u32, slot_len: u32) -> Result<Self, StoreError<F::Error>> {
        let erase = u32::try_from(F::ERASE_SIZE).map_err(|_| StoreError::BadRegion)?;
        let end = slot_len.checked_mul(2).and_then(|l| l.checked_add(base));
        let ok = erase > 0
            && base.is_multiple_of(erase)
            && slot_len > 0
            && slot_len.is_multiple_of(erase)
            && end.is_some_and(|e| e as usize <= flash.capacity())
            && (1..=MAX_WORD).contains(&F::WRITE_SIZE)
            && (1..=MAX_WORD).contains(&F::READ_SIZE);
        if !ok {
            return Err(StoreError::BadRegion);
        }
        Ok(Self {
            flash,
            base,
            slot_len,
        })
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    fn word() -> u32 {
        F::WRITE_SIZE as u32
    }

    fn slot_base(&self, slot: u32) -> u32 {
        self.base + slot * self.slot_len
    }

    fn payload_at(&self, slot: u32) -> u32 {
        self.slot_base(slot) + round_up(HEADER as u32, Self::word())
    }

    fn marker_at(&self, slot: u32, len: u32) -> u32 {
        round_up(self.payload_at(slot) + len, Self::word())
    }

    /// Bytes of a slot a record of `len` bytes needs.
    fn needed(len: u32) -> Option<u32> {
        let w = Self::word();
        round_up(HEADER as u32, w)
            .checked_add(round_up(len, w))?
            .checked_add(round_up(COMMIT.len() as u32, w))
    }

    /// Reads `buf` at `offset` honouring `READ_SIZE`.
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), F::Error> {
        read_aligned(&mut self.flash, offset, buf)
    }

    /// Checks a slot; `None` if it holds no complete, intact record.
    fn check(&mut self, slot: u32) -> Result<Option<Valid>, F::Error> {
        let mut h = [0u8; HEADER];
        self.read(self.slot_base(slot), &mut h)?;
        let word = |i: usize| {
            let b: [u8; 4] = h
                .get(i..i + 4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]);
            u32::from_le_bytes(b)
        };
        let mut crc = Crc32::new();
        crc.update(&h[..12]);
        if h.get(..4) != Some(&SLOT_MAGIC[..]) || crc.finish() != word(12) {
            return Ok(None);
        }
        let (seq, len) = (word(4), word(8));
        match Self::needed(len) {
            Some(n) if n <= self.slot_len && len >= 4 => {}
            _ => return Ok(None),
        }
        let mut marker = [0u8; 4];
        self.read(self.marker_at(slot, len), &mut marker)?;
        if marker != COMMIT {
            return Ok(None);
        }
        // the record's own CRC, over its bytes before the last four
        let start = self.payload_at(slot);
        let mut crc = Crc32::new();
        let mut buf = [0u8; MAX_WORD];
        let mut pos = 0;
        while pos < len - 4 {
            let n = (len - 4 - pos).min(MAX_WORD as u32);
            let chunk = buf.get_mut(..n as usize).unwrap_or(&mut []);
            self.read(start + pos, chunk)?;
            crc.update(chunk);
            pos += n;
        }
        let mut stored = [0u8; 4];
        self.read(start + len - 4, &mut stored)?;
        Ok((crc.finish() == u32::from_le_bytes(stored)).then_some(Valid { slot, seq, len }))
    }

    /// The valid slots, newest first.
    fn valid(&mut self) -> Result<[Option<Valid>; 2], F::Error> {
        let a = self.check(0)?;
        let b = self.check(1)?;
        Ok(match (a, b) {
            (Some(a), Some(b)) if newer(b.seq, a.seq) => [Some(b), Some(a)],
            (Some(a), b) => [Some(a), b],
            (None, b) => [b, None],
        })
    }

    /// The sequence number of the newest valid state, if any.
    ///
    /// # Errors
    /// [`StoreError::Flash`].
    pub fn latest(&mut self) -> Result<Option<u32>, StoreError<F::Error>> {
        Ok(self.valid().map_err(StoreError::Flash)?[0].map(|v| v.seq))
    }

    /// Saves `state` as the newest; returns its sequence number.
    ///
    /// # Errors
    /// [`StoreError::TooLarge`] if it does not fit a slot (nothing is
    /// written); [`StoreError::Flash`] if the flash fails — the previous
    /// state stays restorable.
    pub fn commit<P: Persist>(&mut self, state: &P) -> Result<u32, StoreError<F::Error>> {
        let len = u32::try_from(state.encoded_len()).map_err(|_| StoreError::TooLarge)?;
        match Self::needed(len) {
            Some(n) if n <= self.slot_len => {}
            _ => return Err(StoreError::TooLarge),
        }
        let [newest, _] = self.valid().map_err(StoreError::Flash)?;
        let (slot, seq) = match newest {
            Some(v) => (1 - v.slot, v.seq.wrapping_add(1)),
            None => (0, 1),
        };
        let base = self.slot_base(slot);
        self.flash
            .erase(base, base + self.slot_len)
            .map_err(StoreError::Flash)?;

        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(&SLOT_MAGIC);
        h[4..8].copy_from_slice(&seq.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        let mut crc = Crc32::new();
        crc.update(&h[..12]);
        h[12..].copy_from_slice(&crc.finish().to_le_bytes());
        let mut w = WordWriter::new(&mut self.flash, base);
        w.push(&h)?;
        w.flush()?;

        let payload = self.payload_at(slot);
        let mut w = WordWriter::new(&mut self.flash, payload);
        let encoded = state.encode_to(&mut w);
        if let Some(e) = w.failed.take() {
            return Err(StoreError::Flash(e));
        }
        encoded.map_err(StoreError::State)?;
        w.flush()?;

        let marker = self.marker_at(slot, len);
        let mut w = WordWriter::new(&mut self.flash, marker);
        w.push(&COMMIT)?;
        w.flush()?;
        Ok(seq)
    }

    /// Restores the newest intact state into `state`; returns its sequence
    /// number, or `None` (and leaves `state` alone) if the store holds no
    /// intact record. A newest slot that fails to decode falls back to the
    /// other one.
    ///
    /// # Errors
    /// [`StoreError::Flash`]; [`StoreError::State`] if intact records exist
    /// but none decodes into `state` (for example another configuration).
    /// `state` is unchanged on error.
    pub fn restore<P: Persist>(
        &mut self,
        state: &mut P,
    ) -> Result<Option<u32>, StoreError<F::Error>> {
        let candidates = self.valid().map_err(StoreError::Flash)?;
        let mut last = None;
        for v in candidates.into_iter().flatten() {
            let start = self.payload_at(v.slot);
            let mut src = FlashSource {
                flash: &mut self.flash,
                start,
                len: v.len,
                failed: None,
            };
            match state.decode_from(&mut src) {
                Ok(()) => return Ok(Some(v.seq)),
                Err(e) => {
                    if let Some(f) = src.failed.take() {
                        return Err(StoreError::Flash(f));
                    }
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) => Err(StoreError::State(e)),
            None => Ok(None),
        }
    }
}

/// Reads `buf` at `offset`, widening to `READ_SIZE` boundaries through a
/// small buffer.
pub(crate) fn read_aligned<F: NorFlash>(
    flash: &mut F,
    offset: u32,
    buf: &mut [u8],
) -> Result<(), F::Error> {
    let r = F::READ_SIZE.max(1).min(MAX_WORD) as u32;
    if r == 1 {
        return flash.read(offset, buf);
    }
    let mut tmp = [0u8; MAX_WORD];
    let mut done = 0usize;
    while done < buf.len() {
        let at = offset + done as u32;
        let block = at - at % r;
        let skip = (at - block) as usize;
        let chunk = tmp.get_mut(..r as usize).unwrap_or(&mut []);
        flash.read(block, chunk)?;
        let n = (chunk.len() - skip).min(buf.len() - done);
        if let (Some(dst), Some(src)) = (buf.get_mut(done..done + n), chunk.get(skip..skip + n)) {
            dst.copy_from_slice(src);
        }
        done += n.max(1);
    }
    Ok(())
}

/// Writes a byte stream in whole `WRITE_SIZE` words, padding the last with
/// 0xFF.
struct WordWriter<'f, F: NorFlash> {
    flash: &'f mut F,
    at: u32,
    buf: [u8; MAX_WORD],
    fill: usize,
    failed: Option<F::Error>,
}

impl<'f, F: NorFlash> WordWriter<'f, F> {
    fn new(flash: &'f mut F, at: u32) -> Self {
        Self {
            flash,
            at,
            buf: [0xFF; MAX_WORD],
            fill: 0,
            failed: None,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) -> Result<(), StoreError<F::Error>> {
        let w = F::WRITE_SIZE.max(1).min(MAX_WORD);
        while !bytes.is_empty() {
            let n = (w - self.fill).min(bytes.len());
            if let (Some(dst), Some(src)) =
                (self.buf.get_mut(self.fill..self.fill + n), bytes.get(..n))
            {
                dst.copy_from_slice(src);
            }
            self.fill += n;
            bytes = bytes.get(n..).unwrap_or(&[]);
            if self.fill == w {
                self.write_word()?;
            }
        }
        Ok(())
    }

    fn write_word(&mut self) -> Result<(), StoreError<F::Error>> {
        let w = F::WRITE_SIZE.max(1).min(MAX_WORD);
        let word = self.buf.get(..w).unwrap_or(&[]);
        self.flash.write(self.at, word).map_err(StoreError::Flash)?;
        self.at += w as u32;
        self.fill = 0;
        self.buf = [0xFF; MAX_WORD];
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError<F::Error>> {
        if self.fill > 0 {
            self.write_word()?;
        }
        Ok(())
    }
}

impl<F: NorFlash> ByteSink for WordWriter<'_, F> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        match self.push(bytes) {
            Ok(()) => Ok(()),
            Err(StoreError::Flash(e)) => {
                self.failed = Some(e);
                Err(Error::Storage)
            }
            Err(_) => Err(Error::Storage),
        }
    }
}

/// A record in flash, read for decoding.
struct FlashSource<'f, F: NorFlash> {
    flash: &'f mut F,
    start: u32,
    len: u32,
    failed: Option<F::Error>,
}

impl<F: NorFlash> ByteSource for FlashSource<'_, F> {
    fn len(&self) -> usize {
        self.len as usize
    }

    fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset.checked_add(buf.len()).ok_or(Error::Truncated)?;
        if end > self.len as usize {
            return Err(Error::Truncated);
        }
        read_aligned(self.flash, self.start + offset as u32, buf).map_err(|e| {
            self.failed = Some(e);
            Error::Storage
        })
    }
}

#[cfg(test)]
mod tests {
    use super::newer;

    #[test]
    fn sequence_numbers_wrap() {
        assert!(newer(2, 1));
        assert!(!newer(1, 2));
        assert!(newer(0, u32::MAX));
        assert!(newer(5, u32::MAX - 5));
        assert!(!newer(7, 7));
    }
}
