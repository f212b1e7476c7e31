//! The one error type of the crate.

use core::fmt;

/// Why an operation was refused.
///
/// Every fallible operation in `polyak` checks its whole input before it
/// writes anything, so when one of these is returned the averager (or the
/// output buffer) is bit-for-bit what it was before the call.
///
/// The enum is `#[non_exhaustive]`: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A buffer has the wrong number of elements.
    LengthMismatch {
        /// The length the operation needs (usually the shadow's length).
        expected: usize,
        /// The length it was given.
        found: usize,
    },
    /// An f32 input holds NaN or ±Inf at `index`.
    NonFinite {
        /// Position of the first offending element.
        index: usize,
    },
    /// An f32 input is finite but larger in magnitude than
    /// [`F32_LIMIT`](crate::F32_LIMIT), where differences and sums could
    /// overflow.
    OutOfRange {
        /// Position of the first offending element.
        index: usize,
    },
    /// A decay β outside `[0, 1)` (or NaN), or a fixed-point coefficient α
    /// outside `(0, 1]`.
    InvalidDecay,
    /// An interpolation coefficient outside `[0, 1]` (or NaN).
    InvalidCoefficient,
    /// A weight is negative, NaN or infinite.
    InvalidWeight {
        /// Position of the first offending weight.
        index: usize,
    },
    /// The weights sum to zero, so there is nothing to average.
    ZeroTotalWeight,
    /// The total weight is too large to be accumulated exactly.
    WeightOverflow,
    /// One more update would take a counter past the range in which the
    /// accumulator is exact.
    CountOverflow,
    /// A state handed to a `from_parts` constructor breaks an invariant
    /// (for example an accumulator larger than its count allows).
    InvalidState,
    /// The option is not available for this element format (for example
    /// stochastic rounding of an f32 shadow).
    Unsupported,
    /// An index (of a bank member, a segment, a slot) is out of range.
    InvalidIndex {
        /// The index given.
        index: usize,
    },
    /// A saved record does not start with the format's magic bytes.
    BadMagic,
    /// A saved record has a format version this build cannot read.
    UnsupportedVersion {
        /// The version found.
        found: u16,
    },
    /// A saved record holds another kind of state, element format or
    /// member count.
    FormatMismatch,
    /// A saved record was made for another layout of the parameters.
    LayoutMismatch,
    /// A saved record's checksum does not match its bytes.
    BadChecksum,
    /// A saved record ends early.
    Truncated,
    /// A saved record was made under another configuration (decay,
    /// schedule, start, rounding).
    ConfigMismatch,
    /// The output buffer is too small.
    BufferTooSmall,
    /// The storage device under a codec stream failed (the store reports
    /// the device's own error).
    Storage,
    /// A fixed capacity (segments of a layout, slots of a window, members
    /// of a bank) is exhausted.
    CapacityExceeded,
    /// A window of zero snapshots, or larger than its storage.
    InvalidWindow,
    /// Too few snapshots for the quantity asked (a variance needs two).
    TooFewSamples,
    /// There is nothing to read yet (no update since construction or reset),
    /// or no model was given.
    Empty,
    /// A model's sparsity pattern differs from the shared mask.
    MaskMismatch {
        /// Position of the first element that differs.
        index: usize,
    },
    /// A chunk covers elements already given in this step (or pass).
    ChunkOverlap {
        /// First element given twice.
        index: usize,
    },
    /// A chunk does not start (or end) on the tracker's granule.
    ChunkMisaligned {
        /// The offending chunk boundary.
        index: usize,
    },
    /// The step (or pass) cannot finish: elements are missing.
    StepIncomplete {
        /// First element not given yet.
        index: usize,
    },
    /// A chunked step is open: finish it first (or, before any chunk
    /// changed the state, abort it).
    StepInProgress,
    /// No chunked step is open.
    NoStep,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::LengthMismatch { expected, found } => {
                write!(
                    f,
                    "length mismatch: expected {expected} elements, found {found}"
                )
            }
            Error::NonFinite { index } => write!(f, "non-finite value at index {index}"),
            Error::OutOfRange { index } => {
                write!(
                    f,
                    "value at index {index} exceeds the f32 input limit 2^100"
                )
            }
            Error::InvalidDecay => f.write_str("decay outside its valid range"),
            Error::InvalidCoefficient => f.write_str("coefficient outside [0, 1]"),
            Error::InvalidWeight { index } => {
                write!(f, "weight at index {index} is negative or not finite")
            }
            Error::ZeroTotalWeight => f.write_str("total weight is zero"),
            Error::WeightOverflow => f.write_str("total weight exceeds the exact range"),
            Error::CountOverflow => f.write_str("counter would leave the exact range"),
            Error::InvalidState => f.write_str("state violates an invariant"),
            Error::Unsupported => f.write_str("not supported for this format"),
            Error::InvalidIndex { index } => write!(f, "index {index} out of range"),
            Error::BadMagic => f.write_str("not a polyak state record"),
            Error::UnsupportedVersion { found } => write!(f, "unsupported record version {found}"),
            Error::FormatMismatch => f.write_str("record holds another kind of state"),
            Error::LayoutMismatch => f.write_str("record was made for another layout"),
            Error::BadChecksum => f.write_str("record checksum mismatch"),
            Error::Truncated => f.write_str("record ends early"),
            Error::ConfigMismatch => f.write_str("record was made under another configuration"),
            Error::BufferTooSmall => f.write_str("buffer too small"),
            Error::Storage => f.write_str("storage device failed"),
            Error::CapacityExceeded => f.write_str("capacity exceeded"),
            Error::InvalidWindow => f.write_str("window empty or larger than its storage"),
            Error::TooFewSamples => f.write_str("too few samples"),
            Error::Empty => f.write_str("nothing to read yet"),
            Error::MaskMismatch { index } => {
                write!(f, "sparsity mask differs at index {index}")
            }
            Error::ChunkOverlap { index } => {
                write!(f, "element {index} already given in this step")
            }
            Error::ChunkMisaligned { index } => {
                write!(f, "chunk boundary {index} is not on the granule")
            }
            Error::StepIncomplete { index } => {
                write!(f, "step incomplete: element {index} not given")
            }
            Error::StepInProgress => f.write_str("a chunked step is in progress"),
            Error::NoStep => f.write_str("no chunked step is open"),
        }
    }
}

impl core::error::Error for Error {}
