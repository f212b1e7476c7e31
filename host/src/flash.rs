//! A mock NOR flash that follows the rules of real parts and can lose
//! power at any byte.
//!
//! Rules modelled: reads and writes aligned to `READ_SIZE` / `WRITE_SIZE`,
//! erases to whole `ERASE_SIZE` sectors; a write can only clear bits
//! (the stored value becomes `old & new`), and a word may be written once
//! between erases (as on parts with ECC per word, where a second write is
//! an error).
//!
//! Power cuts: [`MockFlash::cut_after`] sets a budget of steps — one per
//! byte written, one per sector erased. When it runs out mid-operation the
//! operation stops there (a write leaves the bytes before the cut written:
//! a torn word; an erase leaves its sector half erased) and returns
//! [`MockError::PowerCut`]; every later operation fails the same way until
//! [`MockFlash::reboot`].

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// What the mock refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockError {
    /// Offset or length not aligned to the operation's unit.
    NotAligned,
    /// Beyond the capacity.
    OutOfBounds,
    /// A word written twice without an erase.
    NotErased,
    /// The power was cut.
    PowerCut,
}

impl NorFlashError for MockError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            MockError::NotAligned => NorFlashErrorKind::NotAligned,
            MockError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            _ => NorFlashErrorKind::Other,
        }
    }
}

/// A NOR flash of `capacity` bytes with `WRITE`-byte words and
/// `ERASE`-byte sectors.
#[derive(Debug, Clone)]
pub struct MockFlash<const WRITE: usize, const ERASE: usize> {
    data: Vec<u8>,
    written: Vec<bool>,
    budget: Option<u64>,
    dead: bool,
    steps: u64,
}

impl<const WRITE: usize, const ERASE: usize> MockFlash<WRITE, ERASE> {
    /// An erased flash (all bytes 0xFF).
    pub fn new(capacity: usize) -> Self {
        Self {
            data: vec![0xFF; capacity],
            written: vec![false; capacity / WRITE],
            budget: None,
            dead: false,
            steps: 0,
        }
    }

    /// Cuts the power after `steps` more steps (bytes written or sectors
    /// erased).
    pub fn cut_after(&mut self, steps: u64) {
        self.budget = Some(steps);
    }

    /// Power comes back: operations work again, with no cut pending.
    pub fn reboot(&mut self) {
        self.dead = false;
        self.budget = None;
    }

    /// Steps taken since creation.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The raw bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Flips one bit (a cosmic ray, a worn cell).
    pub fn flip(&mut self, byte: usize, bit: u8) {
        if let Some(b) = self.data.get_mut(byte) {
            *b ^= 1 << (bit % 8);
        }
    }

    /// Takes one step; false if the power goes now.
    fn step(&mut self) -> bool {
        if let Some(b) = &mut self.budget {
            if *b == 0 {
                self.dead = true;
                return false;
            }
            *b -= 1;
        }
        self.steps += 1;
        true
    }

    fn alive(&self) -> Result<(), MockError> {
        if self.dead {
            Err(MockError::PowerCut)
        } else {
            Ok(())
        }
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for MockFlash<WRITE, ERASE> {
    type Error = MockError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for MockFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), MockError> {
        self.alive()?;
        let start = offset as usize;
        let src = self
            .data
            .get(start..start + bytes.len())
            .ok_or(MockError::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for MockFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), MockError> {
        self.alive()?;
        let (from, to) = (from as usize, to as usize);
        if !from.is_multiple_of(ERASE) || !to.is_multiple_of(ERASE) || from > to {
            return Err(MockError::NotAligned);
        }
        if to > self.data.len() {
            return Err(MockError::OutOfBounds);
        }
        for sector in (from..to).step_by(ERASE) {
            if !self.step() {
                // cut mid-erase: half the sector erased, the rest as it was
                self.data[sector..sector + ERASE / 2].fill(0xFF);
                for w in (sector..sector + ERASE / 2).step_by(WRITE) {
                    self.written[w / WRITE] = false;
                }
                return Err(MockError::PowerCut);
            }
            self.data[sector..sector + ERASE].fill(0xFF);
            for w in (sector..sector + ERASE).step_by(WRITE) {
                self.written[w / WRITE] = false;
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), MockError> {
        self.alive()?;
        let start = offset as usize;
        if !start.is_multiple_of(WRITE) || !bytes.len().is_multiple_of(WRITE) {
            return Err(MockError::NotAligned);
        }
        if start + bytes.len() > self.data.len() {
            return Err(MockError::OutOfBounds);
        }
        if (start..start + bytes.len())
            .step_by(WRITE)
            .any(|w| self.written[w / WRITE])
        {
            return Err(MockError::NotErased);
        }
        for (i, &b) in bytes.iter().enumerate() {
            if !self.step() {
                return Err(MockError::PowerCut);
            }
            let at = start + i;
            self.data[at] &= b;
            self.written[at / WRITE] = true;
        }
        Ok(())
    }
}
