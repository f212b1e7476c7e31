//! f64 reference implementations, written from the formulas.
//!
//! Each also reports a bound on its own rounding error (f64 is not exact
//! either), which tests add to the bound of the kernel under test.

/// f64 unit roundoff, 2⁻⁵³.
pub const U64: f64 = 1.0 / 9_007_199_254_740_992.0;

/// EMA `s ← s + α·(x − s)` in f64, element-wise.
#[derive(Debug, Clone)]
pub struct Ema {
    alpha: f64,
    debiased: bool,
    /// the shadow was set by a copy: debiasing weight 1 from then on
    copied_weight: bool,
    /// Π(1 − α_t) over the steps (debiased mode with a schedule)
    decay_product: f64,
    /// α has changed between steps
    varying: bool,
    s: Vec<f64>,
    steps: u64,
    max_abs: Vec<f64>,
}

impl Ema {
    /// Copy-first EMA over `n` parameters with coefficient `alpha`.
    pub fn new(n: usize, alpha: f64) -> Self {
        Self {
            alpha,
            debiased: false,
            copied_weight: false,
            decay_product: 1.0,
            varying: false,
            s: vec![0.0; n],
            steps: 0,
            max_abs: vec![0.0; n],
        }
    }

    /// Zero-initialised EMA read as `s / (1 − (1 − α)ᵗ)`.
    pub fn new_debiased(n: usize, alpha: f64) -> Self {
        Self {
            debiased: true,
            ..Self::new(n, alpha)
        }
    }

    /// One step with an explicit coefficient (for schedules): copies on
    /// the first step in copy-first mode, as [`update`](Self::update).
    pub fn update_with_alpha(&mut self, x: &[f64], alpha: f64) {
        if self.steps > 0 && alpha != self.alpha {
            self.varying = true;
        }
        self.alpha = alpha;
        self.update(x);
    }

    /// A copy of `x` into the shadow (a schedule's copy phase): the
    /// average restarts from `x` with full weight.
    pub fn copy(&mut self, x: &[f64]) {
        for ((s, &x), m) in self.s.iter_mut().zip(x).zip(&mut self.max_abs) {
            *s = x;
            *m = m.max(x.abs());
        }
        self.copied_weight = true;
        // later steps blend into the copy rather than copying again
        self.steps = self.steps.max(1);
    }

    /// One step.
    pub fn update(&mut self, x: &[f64]) {
        assert_eq!(x.len(), self.s.len());
        for ((s, &x), m) in self.s.iter_mut().zip(x).zip(&mut self.max_abs) {
            if self.steps == 0 && !self.debiased {
                *s = x;
            } else {
                *s += self.alpha * (x - *s);
            }
            *m = m.max(x.abs());
        }
        self.decay_product *= 1.0 - self.alpha;
        self.steps += 1;
    }

    /// The average (debiased if so constructed).
    pub fn value(&self) -> Vec<f64> {
        if self.debiased && !self.copied_weight {
            // 1 − βᵗ for a constant β (closed form); 1 − Π(1 − α_t) for a
            // schedule
            let w = if self.varying {
                1.0 - self.decay_product
            } else {
                1.0 - (1.0 - self.alpha).powf(self.steps as f64)
            };
            self.s.iter().map(|s| s / w).collect()
        } else {
            self.s.clone()
        }
    }

    /// The raw shadow: the average (copy-first) or the biased sum
    /// (zero-initialised).
    pub fn raw(&self) -> &[f64] {
        &self.s
    }

    /// Largest |x| each element has seen.
    pub fn max_abs(&self) -> &[f64] {
        &self.max_abs
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Bound on this reference's own rounding error for element `i`:
    /// the f64 recurrence stalls at `u·M/α` like any plain EMA, plus `4u·M`.
    pub fn own_error(&self, i: usize) -> f64 {
        let m = self.max_abs[i];
        let t = (self.steps as f64).min(1.0 / self.alpha);
        if self.debiased {
            // the recurrence (u·M per step, relative to the weight) plus
            // 1 − βᵗ, whose cancellation costs u/α relative at t = 1.
            U64 * m * (2.0 * t + 2.0 / self.alpha + 10.0)
        } else {
            U64 * m / self.alpha + 4.0 * U64 * m
        }
    }
}

/// Mean of snapshots as `Σx / n`, element-wise, with `Σ|x|` kept for
/// bounds.
#[derive(Debug, Clone)]
pub struct Mean {
    sum: Vec<f64>,
    sum_abs: Vec<f64>,
    n: u64,
}

impl Mean {
    /// An empty mean over `len` parameters.
    pub fn new(len: usize) -> Self {
        Self {
            sum: vec![0.0; len],
            sum_abs: vec![0.0; len],
            n: 0,
        }
    }

    /// Adds a snapshot.
    pub fn update(&mut self, x: &[f64]) {
        for ((s, a), &x) in self.sum.iter_mut().zip(&mut self.sum_abs).zip(x) {
            *s += x;
            *a += x.abs();
        }
        self.n += 1;
    }

    /// `Σx / n`.
    pub fn value(&self) -> Vec<f64> {
        self.sum.iter().map(|s| s / self.n as f64).collect()
    }

    /// `Σ|x| / n` per element.
    pub fn mean_abs(&self) -> Vec<f64> {
        self.sum_abs.iter().map(|s| s / self.n as f64).collect()
    }

    /// The plain f64 sum's own error bound for element `i`: `n·u·mean|x|`
    /// (plus the division).
    pub fn own_error(&self, i: usize) -> f64 {
        (self.n as f64 + 1.0) * U64 * self.sum_abs[i] / self.n as f64
    }

    /// Snapshots so far.
    pub fn count(&self) -> u64 {
        self.n
    }
}

/// `Σ_k w_k·x_k / Σ_k w_k` for one element.
pub fn weighted_average(values: &[f64], weights: &[f64]) -> f64 {
    let num: f64 = values.iter().zip(weights).map(|(x, w)| w * x).sum();
    let den: f64 = weights.iter().sum();
    num / den
}

/// `a + t·(b − a)`.
pub fn interpolate(a: f64, b: f64, t: f64) -> f64 {
    a + t * (b - a)
}

/// α_t of the schedules, in f64, from their formulas (`t ≥ 1`).
pub mod schedule {
    /// `1 − β`.
    pub fn constant(beta: f64) -> f64 {
        1.0 - beta
    }

    /// `1 − clamp(1 − (1 + (t − 1)/γ)^(−p), β_min, β_max)`, i.e.
    /// `clamp((1 + (t − 1)/γ)^(−p), 1 − β_max, 1 − β_min)`.
    pub fn warmup(t: u64, inv_gamma: f64, power: f64, min_beta: f64, max_beta: f64) -> f64 {
        let e = (t.max(1) - 1) as f64;
        (1.0 + e / inv_gamma)
            .powf(-power)
            .clamp(1.0 - max_beta, 1.0 - min_beta)
    }

    /// `1 − 0.5^(Δ/h)`.
    pub fn half_life(half_life: f64, per_step: f64) -> f64 {
        -(-(2f64.ln()) * per_step / half_life).exp_m1()
    }

    /// `1 − (1 − 1/t)^(γ+1)`.
    pub fn power(t: u64, gamma: f64) -> f64 {
        if t <= 1 {
            1.0
        } else {
            -((gamma + 1.0) * (-1.0 / t as f64).ln_1p()).exp_m1()
        }
    }

    /// `σ_rel(γ) = sqrt((γ + 1) / ((γ + 2)²·(γ + 3)))`.
    pub fn sigma_rel(gamma: f64) -> f64 {
        ((gamma + 1.0) / ((gamma + 2.0).powi(2) * (gamma + 3.0))).sqrt()
    }
}

/// The SWA-phase learning rate from its formula, in f64.
pub mod swalr {
    /// Anneal from `lr_train` to `lr_avg` over `steps`: `a = min(1, s/A)`,
    /// weight `a` (linear) or `(1 − cos πa)/2` (cosine).
    pub fn anneal(s: u64, steps: u32, lr_train: f64, lr_avg: f64, cosine: bool) -> f64 {
        let a = if steps == 0 {
            1.0
        } else {
            (s as f64 / f64::from(steps)).min(1.0)
        };
        let w = if cosine {
            (1.0 - (std::f64::consts::PI * a).cos()) / 2.0
        } else {
            a
        };
        lr_avg * w + lr_train * (1.0 - w)
    }

    /// Cyclic: `τ = (s mod c + 1)/c`, `(1 − τ)·high + τ·low`.
    pub fn cyclic(s: u64, cycle: u32, high: f64, low: f64) -> f64 {
        let c = u64::from(cycle);
        let tau = (s % c + 1) as f64 / c as f64;
        (1.0 - tau) * high + tau * low
    }
}
