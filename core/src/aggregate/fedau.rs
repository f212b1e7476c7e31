//! Participation-adaptive aggregation weights (FedAU: Wang & Ji,
//! "A Lightweight Method for Tackling Unknown Participation Statistics in
//! Federated Averaging", 2024).

use crate::codec::{ByteSink, ByteSource, Decoder, Encoder, Header, Kind, Persist};
use crate::ema::len_u32;
use crate::{Error, I16F16};

/// Per-client online estimates of the participation interval, in fixed
/// capacity (`C` clients), giving FedAU's aggregation weights.
///
/// Every round the server calls [`record_round`](Self::record_round) with
/// the clients that took part. For each client it counts the rounds since
/// its last participation; when it takes part, that count, capped at
/// `cutoff`, is one observed interval. The client's weight `ω` is the
/// mean of its observed intervals (1 before the first): a client that
/// takes part in one round out of `r` gets `ω ≈ r`, which cancels its
/// lower participation in the aggregate `x ← x + (1/N)·Σ_{k∈S} ω_k·Δ_k`
/// ([`TaskArithmetic`](super::TaskArithmetic) with `λ = 1/N`).
///
/// ```
/// use polyak::aggregate::Participation;
///
/// let mut p: Participation<2> = Participation::new(100)?;
/// for round in 0..12 {
///     // client 0 every round, client 1 every third round
///     let who: &[usize] = if round % 3 == 2 { &[0, 1] } else { &[0] };
///     p.record_round(who)?;
/// }
/// assert_eq!(p.weight(0)?, 1.0);
/// assert_eq!(p.weight(1)?, 3.0);
/// # Ok::<(), polyak::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Participation<const C: usize> {
    since: [u32; C],
    sum: [u64; C],
    seen: [u32; C],
    cutoff: u32,
    rounds: u64,
}

impl<const C: usize> Participation<C> {
    /// No history; intervals are capped at `cutoff` rounds.
    ///
    /// # Errors
    /// [`Error::InvalidCoefficient`] for `cutoff = 0`.
    pub fn new(cutoff: u32) -> Result<Self, Error> {
        if cutoff == 0 {
            return Err(Error::InvalidCoefficient);
        }
        Ok(Self {
            since: [0; C],
            sum: [0; C],
            seen: [0; C],
            cutoff,
            rounds: 0,
        })
    }

    /// Rounds recorded.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Records one round in which `participants` (client indices) took
    /// part.
    ///
    /// # Errors
    /// [`Error::InvalidIndex`] for an index of `C` or more (nothing is
    /// recorded then).
    pub fn record_round(&mut self, participants: &[usize]) -> Result<(), Error> {
        if let Some(&index) = participants.iter().find(|&&i| i >= C) {
            return Err(Error::InvalidIndex { index });
        }
        for s in self.since.iter_mut() {
            *s = s.saturating_add(1);
        }
        for &i in participants {
            if let (Some(s), Some(sum), Some(seen)) = (
                self.since.get_mut(i),
                self.sum.get_mut(i),
                self.seen.get_mut(i),
            ) && *s > 0
            {
                // a client listed twice in one round counts once
                *sum = sum.saturating_add(u64::from((*s).min(self.cutoff)));
                *seen = seen.saturating_add(1);
                *s = 0;
            }
        }
        self.rounds += 1;
        Ok(())
    }

    /// Client `i`'s weight `ω`: the mean of its observed intervals, 1
    /// before its first participation.
    ///
    /// # Errors
    /// [`Error::InvalidIndex`] for `i ≥ C`.
    pub fn weight(&self, i: usize) -> Result<f32, Error> {
        let (sum, seen) = self.history(i)?;
        Ok(if seen == 0 {
            1.0
        } else {
            (sum as f64 / f64::from(seen)) as f32
        })
    }

    /// Client `i`'s weight as an [`I16F16`] (rounded to nearest, ties to
    /// even), for fixed-point aggregation.
    ///
    /// # Errors
    /// [`Error::InvalidIndex`] for `i ≥ C`.
    pub fn weight_fixed(&self, i: usize) -> Result<I16F16, Error> {
        let (sum, seen) = self.history(i)?;
        let Some(n) = core::num::NonZeroU128::new(u128::from(seen)) else {
            return Ok(I16F16::ONE);
        };
        // the mean interval is below `cutoff`; past I16F16's range (2¹⁵)
        // it saturates
        let v = crate::num::div_round_i128(i128::from(sum) << 16, n);
        Ok(I16F16::from_bits(v.min(i128::from(i32::MAX)) as i32))
    }

    fn history(&self, i: usize) -> Result<(u64, u32), Error> {
        match (self.sum.get(i), self.seen.get(i)) {
            (Some(&s), Some(&n)) => Ok((s, n)),
            _ => Err(Error::InvalidIndex { index: i }),
        }
    }

    /// Forgets every client's history.
    pub fn reset(&mut self) {
        *self = Self {
            since: [0; C],
            sum: [0; C],
            seen: [0; C],
            cutoff: self.cutoff,
            rounds: 0,
        };
    }
}

/// The participation history: per client the rounds since it last took
/// part, its summed intervals and how many it completed, and the round
/// count; the cutoff must match ([`Error::ConfigMismatch`]). Decoding
/// refuses a history no sequence of rounds could give.
impl<const C: usize> Persist for Participation<C> {
    fn header(&self) -> Header {
        Header {
            kind: Kind::Participation as u8,
            format: 0,
            len: len_u32(C),
            layout: 0,
            fields: len_u32(4 + 8 + 16 * C),
            members: 1,
        }
    }

    fn encode_body<W: ByteSink>(&self, enc: &mut Encoder<'_, W>) -> Result<(), Error> {
        enc.u32(self.cutoff)?;
        enc.u64(self.rounds)?;
        for ((since, sum), seen) in self.since.iter().zip(&self.sum).zip(&self.seen) {
            enc.u32(*since)?;
            enc.u64(*sum)?;
            enc.u32(*seen)?;
        }
        Ok(())
    }

    fn decode_body<R: ByteSource>(
        &mut self,
        dec: &mut Decoder<'_, R>,
        apply: bool,
    ) -> Result<(), Error> {
        if dec.u32()? != self.cutoff {
            return Err(Error::ConfigMismatch);
        }
        let rounds = dec.u64()?;
        for ((since, sum), seen) in self
            .since
            .iter_mut()
            .zip(self.sum.iter_mut())
            .zip(self.seen.iter_mut())
        {
            let (s, t, n) = (dec.u32()?, dec.u64()?, dec.u32()?);
            let possible = u64::from(s) <= rounds
                && u64::from(n) <= rounds
                && t <= u64::from(n).saturating_mul(u64::from(self.cutoff))
                && t >= u64::from(n);
            if !possible {
                return Err(Error::InvalidState);
            }
            if apply {
                (*since, *sum, *seen) = (s, t, n);
            }
        }
        if apply {
            self.rounds = rounds;
        }
        Ok(())
    }
}
