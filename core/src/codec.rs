//! A versioned, checksummed byte format for averager state.
//!
//! Every averager implements [`Persist`]: its whole state (shadow,
//! counters, schedule position, debiasing weight, rounding-generator state)
//! encodes to little-endian bytes, and decodes back bit for bit. A record
//! is
//!
//! ```text
//! offset  size  field
//!      0     4  magic "PLYK"
//!      4     2  format version (1)
//!      6     1  kind: 1 Ema, 2 Swa, 3 EmaBank, 0x80+ application
//!      7     1  element format (see `Element::FORMAT`)
//!      8     4  number of parameters
//!     12     4  layout hash (0: a single flat buffer)
//!     16     4  bytes of kind-specific fields that follow the header
//!     20     4  members per parameter (1, or K for a bank)
//!     24     …  kind-specific fields: configuration, then counters
//!      …     …  elements, `size` bytes each, parameter-major
//!    end−4   4  CRC-32 (IEEE 802.3) of every byte before it
//! ```
//!
//! Decoding checks, in order: the length, the magic, the version, the kind,
//! the element format, the counts, the layout hash, the CRC, the
//! configuration (it must equal the averager's: a state saved under another
//! β is refused, not mixed in), and every field and element for validity
//! (finite f32, renormalised pairs, exact sums within their count). Only
//! then does it write. Any failure returns a typed [`Error`] and leaves the
//! averager bit for bit unchanged; no input makes it panic.
//!
//! ```
//! use polyak::codec::Persist;
//! use polyak::{CompF32, Ema};
//!
//! let mut ema = Ema::new([CompF32::ZERO; 4], 0.99)?;
//! ema.update(&[1.0, 2.0, 3.0, 4.0])?;
//! let mut buf = [0u8; 256];
//! let n = ema.encode(&mut buf)?;
//! assert_eq!(n, ema.encoded_len());
//!
//! // after a reset: a fresh averager with the same configuration
//! let mut back = Ema::new([CompF32::ZERO; 4], 0.99)?;
//! back.decode(&buf[..n])?;
//! assert_eq!(back.shadow(), ema.shadow());
//! buf[40] ^= 1; // one flipped bit
//! assert_eq!(back.decode(&buf[..n]), Err(polyak::Error::BadChecksum));
//! # Ok::<(), polyak::Error>(())
//! ```

use crate::Error;
use crate::format::{CompF32, F32_LIMIT, I1F15, I1F31, I2F62, I33F31, I49F15, Q15Ef};

/// The record magic.
pub const MAGIC: [u8; 4] = *b"PLYK";
/// The format version this crate writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 24;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An [`Ema`](crate::Ema).
    Ema = 1,
    /// A [`Swa`](crate::Swa).
    Swa = 2,
    /// An [`EmaBank`](crate::EmaBank).
    Bank = 3,
    /// A [`Window`](crate::window::Window).
    Window = 4,
    /// [`Moments`](crate::moments::Moments).
    Moments = 5,
    /// A `posthoc::PostHoc` recorder (its bank nested; feature `libm`).
    PostHoc = 6,
    /// A [`Naswa`](crate::naswa::Naswa) average (its SWA nested).
    Naswa = 7,
    /// A [`WeightedAverage`](crate::aggregate::WeightedAverage).
    WeightedAverage = 8,
    /// A [`TaskArithmetic`](crate::aggregate::TaskArithmetic) sum.
    TaskArithmetic = 9,
    /// A [`DualAveraging`](crate::aggregate::DualAveraging) sum.
    DualAveraging = 10,
    /// A [`Fisher`](crate::aggregate::Fisher) merge.
    Fisher = 11,
    /// A [`Ties`](crate::aggregate::Ties) merge.
    Ties = 12,
    /// A [`MaskedAverage`](crate::aggregate::MaskedAverage) (its average
    /// nested, then the mask).
    MaskedAverage = 13,
    /// A [`Participation`](crate::aggregate::Participation) history.
    Participation = 14,
    /// A `VarianceCorrected` average (its average nested; feature `libm`).
    VarianceCorrected = 15,
    /// The journal record of a [`FlashEma`](crate::paged::FlashEma).
    FlashEma = 16,
    /// A [`Segmented`](crate::segment::Segmented) averager (the wrapped
    /// method's record nested, then the step count and the kept values).
    Segmented = 17,
    /// Kinds from 0x80 up are free for applications (a composite state of
    /// several averagers, say); the element format is then 0 and the
    /// body's length is all in `fields`.
    Application = 0x80,
}

// ---- CRC-32 ------------------------------------------------------------

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), four bits at a
/// time from a 16-entry table.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

const CRC_TABLE: [u32; 16] = {
    let mut t = [0u32; 16];
    let mut i = 0;
    while i < 16 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 4 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

impl Crc32 {
    /// A fresh checksum.
    pub const fn new() -> Self {
        Self(0xFFFF_FFFF)
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c ^= u32::from(b);
            c = (c >> 4) ^ CRC_TABLE[(c & 0xF) as usize];
            c = (c >> 4) ^ CRC_TABLE[(c & 0xF) as usize];
        }
        self.0 = c;
    }

    /// The checksum of everything fed.
    pub const fn finish(self) -> u32 {
        !self.0
    }
}

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

/// CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

// ---- byte streams ----------------------------------------------------------

/// Where encoded bytes go.
pub trait ByteSink {
    /// Appends bytes.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] when full, or the sink's own failure.
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error>;
}

/// A sink over a byte slice.
#[derive(Debug)]
pub struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceSink<'a> {
    /// A sink writing from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written.
    pub fn written(&self) -> usize {
        self.pos
    }
}

impl ByteSink for SliceSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let end = self
            .pos
            .checked_add(bytes.len())
            .ok_or(Error::BufferTooSmall)?;
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(Error::BufferTooSmall)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }
}

/// Random-access bytes to decode from (a slice, or a flash region).
pub trait ByteSource {
    /// Total bytes available.
    fn len(&self) -> usize;
    /// Whether there are no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`.
    ///
    /// # Errors
    /// [`Error::Truncated`] past the end, or the source's own failure.
    fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Error>;
}

impl ByteSource for &[u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset.checked_add(buf.len()).ok_or(Error::Truncated)?;
        let src = self.get(offset..end).ok_or(Error::Truncated)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Writes little-endian fields into a sink and keeps the CRC.
pub struct Encoder<'s, W: ByteSink> {
    sink: &'s mut W,
    crc: Crc32,
}

impl<'s, W: ByteSink> Encoder<'s, W> {
    fn new(sink: &'s mut W) -> Self {
        Self {
            sink,
            crc: Crc32::new(),
        }
    }
    /// Raw bytes.
    ///
    /// # Errors
    /// The sink's.
    pub fn bytes(&mut self, b: &[u8]) -> Result<(), Error> {
        self.crc.update(b);
        self.sink.write(b)
    }
    /// A `u8`.
    ///
    /// # Errors
    /// The sink's.
    pub fn u8(&mut self, v: u8) -> Result<(), Error> {
        self.bytes(&[v])
    }
    /// A `u16`.
    ///
    /// # Errors
    /// The sink's.
    pub fn u16(&mut self, v: u16) -> Result<(), Error> {
        self.bytes(&v.to_le_bytes())
    }
    /// A `u32`.
    ///
    /// # Errors
    /// The sink's.
    pub fn u32(&mut self, v: u32) -> Result<(), Error> {
        self.bytes(&v.to_le_bytes())
    }
    /// A `u64`.
    ///
    /// # Errors
    /// The sink's.
    pub fn u64(&mut self, v: u64) -> Result<(), Error> {
        self.bytes(&v.to_le_bytes())
    }
    /// An `f32`, by its bits.
    ///
    /// # Errors
    /// The sink's.
    pub fn f32(&mut self, v: f32) -> Result<(), Error> {
        self.u32(v.to_bits())
    }
    /// Writes `part`'s record, preceded by its length, nested in this one
    /// (read back with [`Decoder::nested_into`]); it takes
    /// [`nested_len`] bytes.
    ///
    /// # Errors
    /// The sink's.
    pub fn nested<P: Persist>(&mut self, part: &P) -> Result<(), Error> {
        self.u32(u32::try_from(part.encoded_len()).unwrap_or(u32::MAX))?;
        part.encode_to(self)
    }

    /// An element.
    ///
    /// # Errors
    /// The sink's.
    pub fn elem<E: Element>(&mut self, e: &E) -> Result<(), Error> {
        let mut b = [0u8; MAX_ELEMENT];
        let dst = b.get_mut(..E::SIZE).unwrap_or(&mut []);
        e.put(dst);
        self.bytes(dst)
    }
    fn finish(self) -> Result<(), Error> {
        let c = self.crc.finish();
        self.sink.write(&c.to_le_bytes())
    }
}

/// An encoder is itself a sink: a composite state writes the records of
/// its parts into its own body with [`Persist::encode_to`].
impl<W: ByteSink> ByteSink for Encoder<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.bytes(bytes)
    }
}

/// Reads little-endian fields from a source in order.
pub struct Decoder<'s, R: ByteSource> {
    src: &'s mut R,
    pos: usize,
}

impl<R: ByteSource> Decoder<'_, R> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut b = [0u8; N];
        self.src.read_at(self.pos, &mut b)?;
        self.pos += N;
        Ok(b)
    }
    /// A `u8`.
    ///
    /// # Errors
    /// [`Error::Truncated`].
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take::<1>()?[0])
    }
    /// A `u16`.
    ///
    /// # Errors
    /// [`Error::Truncated`].
    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    /// A `u32`.
    ///
    /// # Errors
    /// [`Error::Truncated`].
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    /// A `u64`.
    ///
    /// # Errors
    /// [`Error::Truncated`].
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    /// An `f32` by its bits.
    ///
    /// # Errors
    /// [`Error::Truncated`].
    pub fn f32(&mut self) -> Result<f32, Error> {
        Ok(f32::from_bits(self.u32()?))
    }
    /// A nested record written by [`Encoder::nested`]: its length must be
    /// `part`'s, then it is checked, or restored into `part` when `apply`.
    ///
    /// # Errors
    /// [`Error::InvalidState`] for another length; otherwise the nested
    /// record's own.
    pub fn nested_into<P: Persist>(&mut self, part: &mut P, apply: bool) -> Result<(), Error> {
        let len = part.encoded_len();
        if self.u32()? as usize != len {
            return Err(Error::InvalidState);
        }
        let mut nested = self.nested(len)?;
        if apply {
            part.decode_from(&mut nested)
        } else {
            part.check_from(&mut nested)
        }
    }

    /// An element, checked.
    ///
    /// # Errors
    /// [`Error::Truncated`]; [`Error::InvalidState`] for an invalid value.
    pub fn elem<E: Element>(&mut self) -> Result<E, Error> {
        let mut b = [0u8; MAX_ELEMENT];
        let dst = b.get_mut(..E::SIZE).unwrap_or(&mut []);
        self.src.read_at(self.pos, dst)?;
        self.pos += E::SIZE;
        E::get(dst).ok_or(Error::InvalidState)
    }

    /// `N` raw bytes.
    ///
    /// # Errors
    /// [`Error::Truncated`].
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take()
    }

    /// The next `len` bytes as a source of their own (a nested record),
    /// and skips past them.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer bytes remain.
    pub fn nested(&mut self, len: usize) -> Result<Nested<'_, R>, Error> {
        let start = self.pos;
        let end = start.checked_add(len).ok_or(Error::Truncated)?;
        if end > self.src.len() {
            return Err(Error::Truncated);
        }
        self.pos = end;
        Ok(Nested {
            src: &mut *self.src,
            start,
            len,
        })
    }
}

/// A window of a source: a record nested in another.
pub struct Nested<'s, R: ByteSource> {
    src: &'s mut R,
    start: usize,
    len: usize,
}

impl<R: ByteSource> ByteSource for Nested<'_, R> {
    fn len(&self) -> usize {
        self.len
    }
    fn read_at(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), Error> {
        let end = offset.checked_add(buf.len()).ok_or(Error::Truncated)?;
        if end > self.len {
            return Err(Error::Truncated);
        }
        self.src.read_at(self.start + offset, buf)
    }
}

/// Bytes [`Encoder::nested`] takes for `part`.
pub fn nested_len<P: Persist>(part: &P) -> usize {
    4 + part.encoded_len()
}

/// Largest element, in bytes.
pub const MAX_ELEMENT: usize = 24;

/// An element type the codec can store: shadows, accumulators, weights.
pub trait Element: Sized + Copy {
    /// Its format code in the header.
    const FORMAT: u8;
    /// Bytes per element (at most [`MAX_ELEMENT`]).
    const SIZE: usize;
    /// Writes `SIZE` bytes.
    fn put(&self, out: &mut [u8]);
    /// Reads `SIZE` bytes, refusing values that cannot occur.
    fn get(bytes: &[u8]) -> Option<Self>;
}

fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.get(..N)?.try_into().ok()
}

fn finite_f32(v: f32) -> Option<f32> {
    (v.is_finite() && v.abs() <= F32_LIMIT * 16_777_216.0).then_some(v)
}

impl Element for f32 {
    const FORMAT: u8 = 1;
    const SIZE: usize = 4;
    fn put(&self, out: &mut [u8]) {
        for (o, b) in out.iter_mut().zip(self.to_bits().to_le_bytes()) {
            *o = b;
        }
    }
    fn get(b: &[u8]) -> Option<Self> {
        finite_f32(f32::from_bits(u32::from_le_bytes(arr(b)?)))
    }
}

impl Element for CompF32 {
    const FORMAT: u8 = 2;
    const SIZE: usize = 8;
    fn put(&self, out: &mut [u8]) {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&self.hi().to_bits().to_le_bytes());
        b[4..].copy_from_slice(&self.lo().to_bits().to_le_bytes());
        for (o, b) in out.iter_mut().zip(b) {
            *o = b;
        }
    }
    fn get(b: &[u8]) -> Option<Self> {
        let hi = finite_f32(f32::from_bits(u32::from_le_bytes(arr(b)?)))?;
        let lo = finite_f32(f32::from_bits(u32::from_le_bytes(arr(b.get(4..)?)?)))?;
        // renormalised: the low part is below half an ulp of the high part
        (hi + lo == hi).then_some(CompF32::from_parts_unchecked(hi, lo))
    }
}

macro_rules! int_element {
    ($t:ty, $bits:ty, $fmt:expr, $size:expr) => {
        impl Element for $t {
            const FORMAT: u8 = $fmt;
            const SIZE: usize = $size;
            fn put(&self, out: &mut [u8]) {
                for (o, b) in out.iter_mut().zip(self.to_bits().to_le_bytes()) {
                    *o = b;
                }
            }
            fn get(b: &[u8]) -> Option<Self> {
                Some(<$t>::from_bits(<$bits>::from_le_bytes(arr(b)?)))
            }
        }
    };
}

int_element!(I1F31, i32, 3, 4);
int_element!(I1F15, i16, 5, 2);

impl Element for i128 {
    const FORMAT: u8 = 16;
    const SIZE: usize = 16;
    fn put(&self, out: &mut [u8]) {
        for (o, b) in out.iter_mut().zip(self.to_le_bytes()) {
            *o = b;
        }
    }
    fn get(b: &[u8]) -> Option<Self> {
        Some(i128::from_le_bytes(arr(b)?))
    }
}

/// The Q62 shadow of Q31 input stays in `[−2⁶², (2³¹ − 1)·2³¹]`; a value
/// outside could overflow the next step's difference.
impl Element for I2F62 {
    const FORMAT: u8 = 6;
    const SIZE: usize = 8;
    fn put(&self, out: &mut [u8]) {
        for (o, b) in out.iter_mut().zip(self.to_bits().to_le_bytes()) {
            *o = b;
        }
    }
    fn get(b: &[u8]) -> Option<Self> {
        let v = i64::from_le_bytes(arr(b)?);
        (-(1i64 << 62)..=(i64::from(i32::MAX) << 31))
            .contains(&v)
            .then_some(I2F62::from_bits(v))
    }
}
int_element!(I49F15, i64, 7, 8);
int_element!(I33F31, i64, 8, 8);

impl Element for Q15Ef {
    const FORMAT: u8 = 4;
    const SIZE: usize = 4;
    fn put(&self, out: &mut [u8]) {
        for (o, b) in out.iter_mut().zip(self.wide().to_le_bytes()) {
            *o = b;
        }
    }
    fn get(b: &[u8]) -> Option<Self> {
        let w = i32::from_le_bytes(arr(b)?);
        // the value part of a valid shadow never exceeds the Q15 range
        (w <= (i32::from(i16::MAX) << 16)).then(|| Q15Ef::from_wide(w))
    }
}

impl Element for i64 {
    const FORMAT: u8 = 9;
    const SIZE: usize = 8;
    fn put(&self, out: &mut [u8]) {
        for (o, b) in out.iter_mut().zip(self.to_le_bytes()) {
            *o = b;
        }
    }
    fn get(b: &[u8]) -> Option<Self> {
        Some(i64::from_le_bytes(arr(b)?))
    }
}

// ---- the record --------------------------------------------------------------

/// The header of a record, as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Record kind.
    pub kind: u8,
    /// Element format.
    pub format: u8,
    /// Parameters.
    pub len: u32,
    /// Layout hash.
    pub layout: u32,
    /// Bytes of kind-specific fields.
    pub fields: u32,
    /// Members per parameter.
    pub members: u32,
}

/// Reads and checks a record's header against what the averager expects.
///
/// # Errors
/// [`Error::Truncated`], [`Error::BadMagic`], [`Error::UnsupportedVersion`],
/// [`Error::FormatMismatch`], [`Error::LengthMismatch`],
/// [`Error::LayoutMismatch`].
pub fn read_header<R: ByteSource>(src: &mut R, want: &Header) -> Result<(), Error> {
    let mut h = [0u8; HEADER_LEN];
    src.read_at(0, &mut h)?;
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    if h[0..4] != MAGIC {
        return Err(Error::BadMagic);
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if version != VERSION {
        return Err(Error::UnsupportedVersion { found: version });
    }
    if h[6] != want.kind
        || h[7] != want.format
        || u32_at(16) != want.fields
        || u32_at(20) != want.members
    {
        return Err(Error::FormatMismatch);
    }
    if u32_at(8) != want.len {
        return Err(Error::LengthMismatch {
            expected: want.len as usize,
            found: u32_at(8) as usize,
        });
    }
    if u32_at(12) != want.layout {
        return Err(Error::LayoutMismatch);
    }
    Ok(())
}

/// A state the codec can save and restore. Implemented by the averagers.
pub trait Persist {
    /// The header this averager writes (and expects).
    #[doc(hidden)]
    fn header(&self) -> Header;
    /// Writes the kind-specific fields and the elements.
    #[doc(hidden)]
    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error>;
    /// Reads the kind-specific fields and the elements; writes them into
    /// `self` only when `apply`. Without `apply` it only checks.
    #[doc(hidden)]
    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error>;

    /// Bytes of the encoded state.
    fn encoded_len(&self) -> usize {
        let h = self.header();
        let elem = elem_size(h.format);
        HEADER_LEN + h.fields as usize + h.len as usize * h.members as usize * elem + 4
    }

    /// Encodes the state into `sink`.
    ///
    /// # Errors
    /// The sink's ([`Error::BufferTooSmall`] for a slice).
    fn encode_to<W: ByteSink>(&self, sink: &mut W) -> Result<(), Error> {
        let h = self.header();
        let mut enc = Encoder::new(sink);
        enc.bytes(&MAGIC)?;
        enc.u16(VERSION)?;
        enc.u8(h.kind)?;
        enc.u8(h.format)?;
        enc.u32(h.len)?;
        enc.u32(h.layout)?;
        enc.u32(h.fields)?;
        enc.u32(h.members)?;
        self.encode_body(&mut enc)?;
        enc.finish()
    }

    /// Encodes the state into `buf`; returns the bytes written.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] (nothing useful is written then).
    fn encode(&self, buf: &mut [u8]) -> Result<usize, Error> {
        if buf.len() < self.encoded_len() {
            return Err(Error::BufferTooSmall);
        }
        let mut sink = SliceSink::new(buf);
        self.encode_to(&mut sink)?;
        Ok(sink.written())
    }

    /// Restores the state from a record: checks everything first, then
    /// writes. On error `self` is unchanged.
    ///
    /// # Errors
    /// [`Error::Truncated`] for a short record, [`Error::LengthMismatch`]
    /// for a long one or another parameter count, [`Error::BadMagic`],
    /// [`Error::UnsupportedVersion`], [`Error::FormatMismatch`] (another
    /// kind, element format or member count), [`Error::LayoutMismatch`],
    /// [`Error::BadChecksum`], [`Error::ConfigMismatch`] (saved under
    /// another configuration), [`Error::InvalidState`] (a value that cannot
    /// occur).
    fn decode_from<R: ByteSource>(&mut self, src: &mut R) -> Result<(), Error> {
        self.check_from(src)?;
        let mut dec = Decoder {
            src,
            pos: HEADER_LEN,
        };
        self.decode_body(&mut dec, true)
    }

    /// Checks a record as [`decode_from`](Self::decode_from) does, without
    /// writing anything: `Ok` means `decode_from` would succeed.
    ///
    /// # Errors
    /// As [`decode_from`](Self::decode_from).
    fn check_from<R: ByteSource>(&mut self, src: &mut R) -> Result<(), Error> {
        let want = self.header();
        let total = self.encoded_len();
        if src.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        read_header(src, &want)?;
        if src.len() < total {
            return Err(Error::Truncated);
        }
        if src.len() > total {
            return Err(Error::LengthMismatch {
                expected: total,
                found: src.len(),
            });
        }
        // CRC over everything before the last four bytes
        let mut crc = Crc32::new();
        let mut buf = [0u8; 64];
        let mut pos = 0;
        let body = total - 4;
        while pos < body {
            let n = (body - pos).min(buf.len());
            let chunk = buf.get_mut(..n).unwrap_or(&mut []);
            src.read_at(pos, chunk)?;
            crc.update(chunk);
            pos += n;
        }
        let mut stored = [0u8; 4];
        src.read_at(body, &mut stored)?;
        if crc.finish() != u32::from_le_bytes(stored) {
            return Err(Error::BadChecksum);
        }
        let mut dec = Decoder {
            src,
            pos: HEADER_LEN,
        };
        self.decode_body(&mut dec, false)
    }

    /// Restores the state from bytes; see [`decode_from`](Self::decode_from).
    ///
    /// # Errors
    /// As [`decode_from`](Self::decode_from).
    fn decode(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let mut src = bytes;
        self.decode_from(&mut src)
    }
}

fn elem_size(format: u8) -> usize {
    match format {
        1 | 3 | 4 => 4,
        2 | 6 | 7 | 8 | 9 => 8,
        5 => 2,
        10 => 20,
        11 | 13 | 16 => 16,
        12 | 14 | 15 => 24,
        _ => 0,
    }
}
