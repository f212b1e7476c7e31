//! Dual averaging (Nesterov 2009; Xiao 2010) with delayed feedback: the
//! running sum of gradients `z = Σ g` and the readout `x = −z/β_t`.

use core::num::NonZeroU64;

use super::sealed::Sealed;
use crate::codec::{ByteSink, ByteSource, Decoder, Encoder, Header, Kind, Persist};
use crate::ema::{check_len, len_u32};
use crate::format::CompF32;
use crate::num::div_round_i128;
use crate::swa::SwaAccumulator;
use crate::{Error, I16F16, I33F31, I49F15, Q15, Q31};

/// An accumulator element of [`DualAveraging`]: the [`Swa`](crate::Swa)
/// sums ([`CompF32`], or the exact [`I49F15`] / [`I33F31`]) with the
/// dual-averaging readout. Sealed.
pub trait DualAcc: SwaAccumulator + Sealed {
    /// `β`: f32, or [`I16F16`] for fixed point.
    type Beta: Copy + core::fmt::Debug;
    #[doc(hidden)]
    fn check_beta(beta: Self::Beta) -> Result<(), Error>;
    /// Writes `center − z/β` (`center` 0 when `None`); returns how many
    /// elements saturated.
    #[doc(hidden)]
    fn readout(
        z: &[Self],
        beta: Self::Beta,
        center: Option<&[Self::Param]>,
        out: &mut [Self::Param],
    ) -> u32;
}

/// `x = fl(−fl(hi + lo)/β)`, or `fl(x₀ + that)` around a center.
///
/// **Bound**: `|x − ref| ≤ ε·|ref| + n·ε²·Σ|g|/β + η` after `n` gradients
/// (the [`Swa`](crate::Swa) sum's bound, divided by β); around a center,
/// `ε·(½·|ref| + |z/β|) + n·ε²·Σ|g|/β + η`.
impl DualAcc for CompF32 {
    type Beta = f32;
    fn check_beta(beta: f32) -> Result<(), Error> {
        if beta > 0.0 && beta.is_finite() {
            Ok(())
        } else {
            Err(Error::InvalidCoefficient)
        }
    }
    fn readout(z: &[CompF32], beta: f32, center: Option<&[f32]>, out: &mut [f32]) -> u32 {
        for (i, (o, z)) in out.iter_mut().zip(z).enumerate() {
            let step = -z.value() / beta;
            *o = match center.and_then(|c| c.get(i)) {
                Some(&c) => c + step,
                None => step,
            };
        }
        0
    }
}

macro_rules! fixed_dual {
    ($acc:ty, $param:ty, $bits:ty) => {
        /// `x = x₀ + round(−z·2¹⁶/β)` (β an [`I16F16`], `x₀` the center or
        /// 0), saturated (counted).
        ///
        /// **Bound**: `|x − ref| ≤ ½` LSB before saturation; the sum is
        /// exact, so the result is the same bits in any arrival order.
        impl DualAcc for $acc {
            type Beta = I16F16;
            fn check_beta(beta: I16F16) -> Result<(), Error> {
                if beta.to_bits() > 0 {
                    Ok(())
                } else {
                    Err(Error::InvalidCoefficient)
                }
            }
            fn readout(
                z: &[$acc],
                beta: I16F16,
                center: Option<&[$param]>,
                out: &mut [$param],
            ) -> u32 {
                let mut saturated = 0;
                let Some(b) = core::num::NonZeroU128::new(beta.to_bits().unsigned_abs().into())
                else {
                    return 0;
                };
                for (i, (o, z)) in out.iter_mut().zip(z).enumerate() {
                    let c = center.and_then(|c| c.get(i)).map_or(0, |c| c.to_bits());
                    let v = i128::from(c) + div_round_i128(-(i128::from(z.to_bits()) << 16), b);
                    let c = v.clamp(<$bits>::MIN.into(), <$bits>::MAX.into());
                    saturated += u32::from(c != v);
                    *o = <$param>::from_bits(c as $bits);
                }
                saturated
            }
        }
    };
}

fixed_dual!(I49F15, Q15, i16);
fixed_dual!(I33F31, Q31, i32);

/// The dual-averaging accumulator: gradients (or any feedback vectors)
/// are added as they arrive, late or out of order, from one agent or
/// several; the point is read as `x = −z/β_t` for the caller's `β_t`
/// (`γ·√t`, say).
///
/// In fixed point the sum is exact, so the same set of gradients gives
/// the same bits whatever order they arrive in — delayed feedback from
/// several agents cannot make two devices disagree.
///
/// ```
/// use polyak::aggregate::DualAveraging;
/// use polyak::{I16F16, I49F15, Q15};
///
/// let mut da = DualAveraging::new([I49F15::ZERO; 2]);
/// // gradients arriving out of order from two agents
/// da.add(&[Q15::from_num(0.25), Q15::from_num(-0.5)])?;
/// da.add(&[Q15::from_num(0.25), Q15::from_num(0.125)])?;
/// let mut x = [Q15::ZERO; 2];
/// da.readout(I16F16::from_num(2), &mut x)?; // x = −z/2
/// assert_eq!(x, [Q15::from_num(-0.25), Q15::from_num(0.1875)]);
/// # Ok::<(), polyak::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DualAveraging<A: DualAcc, S> {
    z: S,
    count: u32,
    _elem: core::marker::PhantomData<fn() -> A>,
}

impl<A: DualAcc, S: AsRef<[A]> + AsMut<[A]>> DualAveraging<A, S> {
    /// An empty sum over `storage` (zero-filled).
    pub fn new(mut storage: S) -> Self {
        storage.as_mut().fill(A::ZERO);
        Self {
            z: storage,
            count: 0,
            _elem: core::marker::PhantomData,
        }
    }

    /// Gradients added so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The sum `z`.
    pub fn sum(&self) -> &[A] {
        self.z.as_ref()
    }

    /// Adds one gradient.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; for f32 [`Error::NonFinite`] /
    /// [`Error::OutOfRange`]; [`Error::CountOverflow`] past
    /// [`SwaAccumulator::MAX_COUNT`]. The state is unchanged on error.
    pub fn add(&mut self, g: &[A::Param]) -> Result<(), Error> {
        check_len(self.z.as_ref().len(), g.len())?;
        if self.count >= A::MAX_COUNT {
            return Err(Error::CountOverflow);
        }
        A::check(g)?;
        A::add(self.z.as_mut(), g);
        self.count += 1;
        Ok(())
    }

    /// Adds checked values to elements `offset..`.
    fn add_at(&mut self, offset: usize, g: &[A::Param]) {
        let z = self.z.as_mut().get_mut(offset..).unwrap_or(&mut []);
        A::add(z.get_mut(..g.len()).unwrap_or(&mut []), g);
    }

    /// Writes `x = −z/β` into `out`; returns how many fixed-point elements
    /// saturated.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::InvalidCoefficient`] unless
    /// `β > 0` (and finite).
    pub fn readout(&self, beta: A::Beta, out: &mut [A::Param]) -> Result<u32, Error> {
        check_len(self.z.as_ref().len(), out.len())?;
        A::check_beta(beta)?;
        Ok(A::readout(self.z.as_ref(), beta, None, out))
    }

    /// Writes `x = x₀ − z/β` into `out`: the readout around a center `x₀`
    /// (the prox-center of dual averaging with `½‖x − x₀‖²`, e.g. the
    /// model the gradients were taken at).
    ///
    /// # Errors
    /// As [`readout`](Self::readout); for f32 [`Error::NonFinite`] /
    /// [`Error::OutOfRange`] for a bad center.
    pub fn readout_around(
        &self,
        center: &[A::Param],
        beta: A::Beta,
        out: &mut [A::Param],
    ) -> Result<u32, Error> {
        check_len(self.z.as_ref().len(), out.len())?;
        check_len(self.z.as_ref().len(), center.len())?;
        A::check(center)?;
        A::check_beta(beta)?;
        Ok(A::readout(self.z.as_ref(), beta, Some(center), out))
    }

    /// The average gradient `z/n` (the SWA of the feedback).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`]; [`Error::Empty`] before the first
    /// gradient.
    pub fn mean_into(&self, out: &mut [A::Param]) -> Result<(), Error> {
        check_len(self.z.as_ref().len(), out.len())?;
        let n = NonZeroU64::new(u64::from(self.count)).ok_or(Error::Empty)?;
        A::mean(self.z.as_ref(), n, out);
        Ok(())
    }

    /// Forgets every gradient.
    pub fn reset(&mut self) {
        self.z.as_mut().fill(A::ZERO);
        self.count = 0;
    }
}

/// The dual-averaging sum and its count (each sum checked against the
/// count on decode).
/// Chunked gradients (see [`crate::chunk`]): bit-identical to
/// [`DualAveraging::add`].
impl<A: DualAcc, S: AsRef<[A]> + AsMut<[A]>> crate::chunk::Chunkable for DualAveraging<A, S> {
    type Input<'a>
        = &'a [A::Param]
    where
        Self: 'a;
    type Args = ();
    type Plan = ();

    fn step_len(&self) -> usize {
        self.z.as_ref().len()
    }
    fn begin_step(&mut self, (): ()) -> Result<(), Error> {
        if self.count >= A::MAX_COUNT {
            return Err(Error::CountOverflow);
        }
        Ok(())
    }
    fn apply_chunk(&mut self, (): &mut (), offset: usize, g: &[A::Param]) -> Result<(), Error> {
        A::check(g)?;
        self.add_at(offset, g);
        Ok(())
    }
    fn finish_step(&mut self, (): ()) -> Result<(), Error> {
        self.count += 1;
        Ok(())
    }
}

impl<A: DualAcc, S: AsRef<[A]> + AsMut<[A]>> Persist for DualAveraging<A, S> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::DualAveraging as u8,
            format: A::FORMAT,
            len: len_u32(self.z.as_ref().len()),
            layout: 0,
            fields: 4,
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.u32(self.count)?;
        for a in self.z.as_ref() {
            enc.elem(a)?;
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        let count = dec.u32()?;
        if count > A::MAX_COUNT {
            return Err(Error::InvalidState);
        }
        for slot in self.z.as_mut() {
            let v = dec.elem::<A>()?;
            if !v.valid_for(count) {
                return Err(Error::InvalidState);
            }
            if apply {
                *slot = v;
            }
        }
        if apply {
            self.count = count;
        }
        Ok(())
    }
}
