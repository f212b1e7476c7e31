//! Named contiguous segments (layers) of the flat parameter buffer.
//!
//! A model's parameters live in one buffer; a [`Layout`] names its pieces
//! — `conv1.weight`, `bn1.running_mean`, … — in order, with a fixed
//! capacity (`C` segments, in a `heapless::Vec`, no heap). Rules that act
//! per layer (a norm filter per segment, per-segment coefficients) use it
//! without a second copy of the parameters.
//!
//! ```
//! use polyak::layout::Layout;
//!
//! let mut layout: Layout<4> = Layout::new();
//! layout.push("fc1.weight", 32)?;
//! layout.push("fc1.bias", 8)?;
//! assert_eq!(layout.len(), 40);
//! assert_eq!(layout.segment(1).map(|s| s.range()), Some(32..40));
//! # Ok::<(), polyak::Error>(())
//! ```

use core::ops::Range;

use crate::Error;

/// What an averager or aggregator does with a segment, through
/// [`Segmented`](crate::segment::Segmented).
///
/// A model is not only weights: normalisation layers keep running
/// statistics, and some layers count (batches tracked, examples seen).
/// Averaging those is wrong — an averaged model whose running statistics
/// lag its weights, or a counter divided by the number of clients.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Policy {
    /// Averaged by the method (the default; weights).
    #[default]
    Average = 0,
    /// The latest step's values (a time average) or the last model's (a
    /// merge): what must follow the live model — a counter of steps, or
    /// statistics that will be recomputed for the averaged weights. (Weights
    /// trained against running statistics that jitter from batch to batch
    /// are co-adapted with them: their average goes with the averaged
    /// statistics, `Average`.)
    CopyLatest = 1,
    /// The sum of every step's (or model's) values, exact for integers:
    /// counters (examples seen, batches tracked). Never averaged.
    Sum = 2,
    /// The element-wise maximum.
    Max = 3,
    /// Not averaged: the values of the first step (or model) stay (frozen
    /// or excluded layers).
    Skip = 4,
}

/// One segment: a name and a range of the flat buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Segment {
    /// The segment's name (for logs and the layout hash).
    pub name: &'static str,
    /// First element.
    pub start: usize,
    /// Number of elements.
    pub len: usize,
    /// What averaging does with it.
    pub policy: Policy,
}

impl Segment {
    /// The elements, as a range of the flat buffer.
    pub const fn range(&self) -> Range<usize> {
        self.start..self.start + self.len
    }
}

/// The part of `r` that a chunk of `n` elements at `offset` covers, if
/// any (as indices of the whole buffer).
pub(crate) fn overlap(r: Range<usize>, offset: usize, n: usize) -> Option<Range<usize>> {
    let (lo, hi) = (r.start.max(offset), r.end.min(offset.saturating_add(n)));
    (lo < hi).then_some(lo..hi)
}

/// Up to `C` named segments, laid end to end from index 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout<const C: usize> {
    segments: heapless::Vec<Segment, C>,
    total: usize,
}

impl<const C: usize> Default for Layout<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const C: usize> Layout<C> {
    /// An empty layout.
    pub const fn new() -> Self {
        Self {
            segments: heapless::Vec::new(),
            total: 0,
        }
    }

    /// A layout of one segment covering `len` elements.
    pub fn single(name: &'static str, len: usize) -> Result<Self, Error> {
        let mut l = Self::new();
        l.push(name, len)?;
        Ok(l)
    }

    /// Appends a segment of `len` elements after the last one.
    ///
    /// # Errors
    /// [`Error::CapacityExceeded`] when `C` segments are in, or the total
    /// would overflow `usize`.
    pub fn push(&mut self, name: &'static str, len: usize) -> Result<(), Error> {
        self.push_with(name, len, Policy::Average)
    }

    /// Appends a segment with a [`Policy`].
    ///
    /// # Errors
    /// As [`push`](Self::push).
    pub fn push_with(
        &mut self,
        name: &'static str,
        len: usize,
        policy: Policy,
    ) -> Result<(), Error> {
        let total = self.total.checked_add(len).ok_or(Error::CapacityExceeded)?;
        self.segments
            .push(Segment {
                name,
                start: self.total,
                len,
                policy,
            })
            .map_err(|_| Error::CapacityExceeded)?;
        self.total = total;
        Ok(())
    }

    /// Total elements covered.
    pub fn len(&self) -> usize {
        self.total
    }

    /// Whether no elements are covered.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The segments, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Segment `i`.
    pub fn segment(&self, i: usize) -> Option<&Segment> {
        self.segments.get(i)
    }

    /// The segment called `name`.
    pub fn find(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// Elements whose policy is not [`Policy::Average`] (the storage a
    /// [`Segmented`](crate::segment::Segmented) needs for them).
    pub fn kept_len(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.policy != Policy::Average)
            .map(|s| s.len)
            .sum()
    }

    /// A 32-bit FNV-1a hash of the names and lengths (and policies), for saved state: a
    /// record made for another layout is refused.
    pub fn hash(&self) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        let mut feed = |b: u8| {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        };
        for s in &self.segments {
            for b in s.name.bytes() {
                feed(b);
            }
            feed(0);
            for b in (s.len as u64).to_le_bytes() {
                feed(b);
            }
            if s.policy != Policy::Average {
                // (layouts without policies keep their old hashes)
                feed(0xA5);
                feed(s.policy as u8);
            }
        }
        h
    }
}
