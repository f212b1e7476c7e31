//! The naive forms the kernels improve on, kept so tests can show what goes
//! wrong without the kernels' care.

use fixed::types::I1F15;

/// A Q15 EMA with a Q15 shadow: `s ← s + trunc(α·(x − s))`, α in Q15,
/// the product truncated toward −∞ (an arithmetic shift) — what a direct
/// port of `s += a*(x - s)` to Q15 does.
///
/// It stops moving once `α·|x − s| < 1` LSB, i.e. `|x − s| < 1/α` LSB
/// (1000 LSB at β = 0.999), and it lags one way because the shift rounds
/// down.
#[derive(Debug, Clone)]
pub struct Q15Ema {
    alpha: i32,
    s: Vec<i16>,
    started: bool,
}

impl Q15Ema {
    /// α = round(2¹⁵·(1 − β)).
    pub fn new(n: usize, beta: f64) -> Self {
        Self {
            alpha: ((1.0 - beta) * 32768.0).round() as i32,
            s: vec![0; n],
            started: false,
        }
    }

    /// One step.
    pub fn update(&mut self, x: &[I1F15]) {
        for (s, x) in self.s.iter_mut().zip(x) {
            if self.started {
                let d = i32::from(x.to_bits()) - i32::from(*s);
                *s = (i32::from(*s) + ((self.alpha * d) >> 15)) as i16;
            } else {
                *s = x.to_bits();
            }
        }
        self.started = true;
    }

    /// The shadow.
    pub fn value(&self) -> Vec<I1F15> {
        self.s.iter().map(|&s| I1F15::from_bits(s)).collect()
    }
}

/// The running-mean form of SWA in f32: `m ← m + (x − m)/n`, as
/// `torch.optim.swa_utils.AveragedModel` does.
#[derive(Debug, Clone)]
pub struct RunningMean {
    m: Vec<f32>,
    n: u32,
}

impl RunningMean {
    /// An empty mean over `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            m: vec![0.0; len],
            n: 0,
        }
    }

    /// Adds a snapshot.
    pub fn update(&mut self, x: &[f32]) {
        self.n += 1;
        let n = self.n as f32;
        for (m, &x) in self.m.iter_mut().zip(x) {
            *m += (x - *m) / n;
        }
    }

    /// The mean.
    pub fn value(&self) -> &[f32] {
        &self.m
    }
}

/// Per-element variance the textbook way in f32: `Σx²/n − (Σx/n)²` from
/// plain running sums. Cancels catastrophically when the mean is large
/// next to the spread.
#[derive(Debug, Clone)]
pub struct NaiveVariance {
    s1: Vec<f32>,
    s2: Vec<f32>,
    n: u32,
}

impl NaiveVariance {
    /// Nothing yet, for `len` elements.
    pub fn new(len: usize) -> Self {
        Self {
            s1: vec![0.0; len],
            s2: vec![0.0; len],
            n: 0,
        }
    }

    /// Adds a vector.
    pub fn update(&mut self, x: &[f32]) {
        for ((a, b), &v) in self.s1.iter_mut().zip(&mut self.s2).zip(x) {
            *a += v;
            *b += v * v;
        }
        self.n += 1;
    }

    /// The population variance, `E[x²] − E[x]²`.
    pub fn variance(&self) -> Vec<f32> {
        let n = self.n as f32;
        self.s1
            .iter()
            .zip(&self.s2)
            .map(|(a, b)| b / n - (a / n) * (a / n))
            .collect()
    }
}
