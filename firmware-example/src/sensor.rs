//! A simulated I2C sensor and its driver.
//!
//! The device model ([`SimSensor`]) answers on address [`ADDRESS`] like a
//! register-mapped sensor: register [`REG_WHO_AM_I`] reads [`WHO_AM_I`], and
//! each read of [`REG_DATA`] returns the next sample frame — `D` features as
//! little-endian `i16` (Q15) followed by the target as a little-endian `i32`
//! with 16 fractional bits. The target is `y = w*·x + noise` with `w*` and
//! the noise drawn from a seeded generator, so the stream is deterministic.
//!
//! The driver ([`Sensor`]) only knows `embedded_hal::i2c::I2c`: on a board
//! it runs unchanged against a real bus.

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

use crate::rng::Rng;

/// 7-bit bus address of the sensor.
pub const ADDRESS: u8 = 0x48;
/// Identification register.
pub const REG_WHO_AM_I: u8 = 0x0F;
/// Data register: each read returns a fresh sample frame.
pub const REG_DATA: u8 = 0x10;
/// Value of the identification register.
pub const WHO_AM_I: u8 = 0x5A;
/// Most features a frame can carry.
pub const MAX_FEATURES: usize = 64;

/// Bytes in a frame of `d` features.
pub const fn frame_len(d: usize) -> usize {
    2 * d + 4
}

/// The device model: a register-mapped sensor producing `y = w*·x + noise`.
#[derive(Debug, Clone)]
pub struct SimSensor<const D: usize> {
    rng: Rng,
    w_star: [f32; D],
    noise: f32,
    pointer: u8,
}

impl<const D: usize> SimSensor<D> {
    const FITS: () = assert!(D > 0 && D <= MAX_FEATURES);

    /// A sensor whose true weights (each in `[-0.5, 0.5)`) and noise stream
    /// come from `seed`; `noise` is the amplitude of the uniform noise.
    pub fn new(seed: u64, noise: f32) -> Self {
        let () = Self::FITS;
        let mut rng = Rng::new(seed);
        let w_star = core::array::from_fn(|_| 0.5 * rng.uniform());
        Self {
            rng,
            w_star,
            noise,
            pointer: 0,
        }
    }

    /// The position of the simulated sample stream (to save it).
    pub fn stream_state(&self) -> u64 {
        self.rng.state()
    }

    /// Moves the sample stream to a saved position.
    pub fn set_stream_state(&mut self, state: u64) {
        self.rng = Rng::new(state);
    }

    /// The true weights (known to the simulation, not to the learner).
    pub fn w_star(&self) -> &[f32; D] {
        &self.w_star
    }

    fn fill_frame(&mut self, buf: &mut [u8]) {
        let Some((xs, y_dst)) = buf.split_last_chunk_mut::<4>() else {
            return;
        };
        let mut y = 0.0f32;
        for (w, dst) in self.w_star.iter().zip(xs.as_chunks_mut::<2>().0) {
            let raw = self.rng.next_i16();
            y += w * q15_to_f32(raw);
            *dst = raw.to_le_bytes();
        }
        y += self.noise * self.rng.uniform();
        *y_dst = round_to_i32(y * 65536.0).to_le_bytes();
    }
}

/// `raw / 2^15`, exact.
pub fn q15_to_f32(raw: i16) -> f32 {
    f32::from(raw) * (1.0 / 32768.0)
}

/// Rounds half away from zero; saturates (and maps NaN to 0) as `as` does.
pub fn round_to_i32(v: f32) -> i32 {
    if v >= 0.0 {
        (v + 0.5) as i32
    } else {
        (v - 0.5) as i32
    }
}

impl<const D: usize> ErrorType for SimSensor<D> {
    type Error = ErrorKind;
}

impl<const D: usize> I2c for SimSensor<D> {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), ErrorKind> {
        if address != ADDRESS {
            return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => {
                    let [reg, ..] = bytes else {
                        return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data));
                    };
                    self.pointer = *reg;
                }
                Operation::Read(buf) => match self.pointer {
                    REG_WHO_AM_I => buf.fill(WHO_AM_I),
                    REG_DATA if buf.len() == frame_len(D) => self.fill_frame(buf),
                    _ => return Err(ErrorKind::Overrun),
                },
            }
        }
        Ok(())
    }
}

/// Driver for the sensor over any `I2c` bus.
#[derive(Debug)]
pub struct Sensor<I> {
    i2c: I,
}

/// A sensor error: the bus failed, or the device is not the expected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorError<E> {
    /// The bus reported an error.
    Bus(E),
    /// `WHO_AM_I` returned something else.
    WrongDevice(u8),
}

impl<I: I2c> Sensor<I> {
    /// Probes the device and returns the driver.
    ///
    /// # Errors
    /// [`SensorError::Bus`] if the bus fails, [`SensorError::WrongDevice`]
    /// if the identification register does not match.
    pub fn new(mut i2c: I) -> Result<Self, SensorError<I::Error>> {
        let mut id = [0u8];
        i2c.write_read(ADDRESS, &[REG_WHO_AM_I], &mut id)
            .map_err(SensorError::Bus)?;
        if id[0] != WHO_AM_I {
            return Err(SensorError::WrongDevice(id[0]));
        }
        Ok(Self { i2c })
    }

    /// The bus (for a simulated device: the device model).
    pub fn bus(&self) -> &I {
        &self.i2c
    }

    /// The bus, mutably.
    pub fn bus_mut(&mut self) -> &mut I {
        &mut self.i2c
    }

    /// Reads one sample: fills `x` (whose length is the feature count) and
    /// returns the target.
    ///
    /// # Errors
    /// [`SensorError::Bus`] if the transfer fails.
    pub fn read_sample(&mut self, x: &mut [f32]) -> Result<f32, SensorError<I::Error>> {
        let mut frame = [0u8; frame_len(MAX_FEATURES)];
        let len = frame_len(x.len().min(MAX_FEATURES));
        let buf = frame.get_mut(..len).unwrap_or(&mut []);
        self.i2c
            .write_read(ADDRESS, &[REG_DATA], buf)
            .map_err(SensorError::Bus)?;
        let Some((xs, y)) = buf.split_last_chunk::<4>() else {
            return Ok(0.0);
        };
        for (xi, b) in x.iter_mut().zip(xs.as_chunks::<2>().0) {
            *xi = q15_to_f32(i16::from_le_bytes(*b));
        }
        let y = i32::from_le_bytes(*y);
        Ok(y as f32 * (1.0 / 65536.0))
    }
}
