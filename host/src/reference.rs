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

/// The aggregators of `polyak::aggregate`, element by element, from their
/// formulas, in double-double precision (so the bounds can be asserted
/// with no allowance for the reference). `xs[k]` is model `k`'s value of
/// the element.
pub mod aggregate {
    use crate::dd::Dd;

    /// `Σ w·x / Σ w`.
    pub fn weighted(xs: &[f64], ws: &[f64]) -> Dd {
        let num = xs
            .iter()
            .zip(ws)
            .fold(Dd::ZERO, |s, (&x, &w)| s + Dd::from(w) * Dd::from(x));
        num / Dd::sum(ws.iter().copied())
    }

    /// Fisher merging: `Σ F'·θ / Σ F'` with `F' = max(F, floor)`.
    pub fn fisher(thetas: &[f64], fs: &[f64], floor: f64) -> Dd {
        let ws: Vec<f64> = fs.iter().map(|&f| f.max(floor)).collect();
        weighted(thetas, &ws)
    }

    /// Precision-weighted merging: `θ₀ + Σ H'·(θ − θ₀) / (H₀ + Σ H')`,
    /// `H' = max(H, floor)`.
    pub fn precision(base: f64, thetas: &[f64], hs: &[f64], h0: f64, floor: f64) -> Dd {
        let b = Dd::from(base);
        let (mut num, mut den) = (Dd::ZERO, Dd::from(h0));
        for (&t, &h) in thetas.iter().zip(hs) {
            let h = Dd::from(h.max(floor));
            num = num + h * (Dd::from(t) - b);
            den = den + h;
        }
        b + num / den
    }

    /// SplitMix64, from its published definition.
    pub fn splitmix64(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// DARE's documented mask: element `i` of model `model` is kept iff
    /// `splitmix64(seed + 2³²·model + i) >> 32 ≥ ⌊rate·2³²⌋`.
    pub fn dare_keeps(rate: f64, seed: u64, model: u32, i: usize) -> bool {
        let p = (rate * 4_294_967_296.0).floor() as u64;
        let h = splitmix64(
            seed.wrapping_add(u64::from(model) << 32)
                .wrapping_add(i as u64),
        );
        (h >> 32) >= p
    }

    /// Task arithmetic `θ₀ + λ·Σ w·(θ − θ₀)`; with `drop` (rate, seed),
    /// DARE's mask and the `1/(1 − rate)` rescale (model `k` has index
    /// `k`). Returns the result, `S = Σ w'·d` and `A = Σ |w'|·|d|`.
    pub fn task(
        base: f64,
        thetas: &[f64],
        ws: &[f64],
        lambda: f64,
        drop: Option<(f64, u64)>,
        i: usize,
    ) -> (Dd, Dd, f64) {
        let b = Dd::from(base);
        let (mut s, mut a) = (Dd::ZERO, 0.0f64);
        for (k, (&t, &w)) in thetas.iter().zip(ws).enumerate() {
            let (keep, scale) = match drop {
                None => (true, 1.0),
                Some((rate, seed)) => (dare_keeps(rate, seed, k as u32, i), 1.0 / (1.0 - rate)),
            };
            if keep {
                let d = Dd::from(t) - b;
                let w = Dd::from(w) * Dd::from(scale);
                s = s + w * d;
                a += (w.to_f64() * d.to_f64()).abs();
            }
        }
        (b + Dd::from(lambda) * s, s, a)
    }

    /// TIES on whole models: trim each task vector to the top
    /// `⌈density·n⌉` magnitudes (ties kept), elect the sign of the summed
    /// trimmed values, average the agreeing ones, scale by λ. Returns, per
    /// element, the result, the exact agreeing mean and how many agreed.
    pub fn ties(
        base: &[f64],
        models: &[Vec<f64>],
        density: f64,
        lambda: f64,
    ) -> Vec<(f64, f64, usize)> {
        let n = base.len();
        let trimmed: Vec<Vec<f64>> = models
            .iter()
            .map(|m| {
                let d: Vec<f64> = m.iter().zip(base).map(|(t, b)| t - b).collect();
                let mut mags: Vec<f64> = d.iter().map(|x| x.abs()).collect();
                mags.sort_by(|a, b| b.total_cmp(a));
                let k = ((density * n as f64).ceil() as usize).clamp(1, n.max(1));
                let threshold = mags.get(k - 1).copied().unwrap_or(0.0);
                d.iter()
                    .map(|&x| if x.abs() >= threshold { x } else { 0.0 })
                    .collect()
            })
            .collect();
        (0..n)
            .map(|i| {
                let col: Vec<f64> = trimmed.iter().map(|t| t[i]).collect();
                let mass = Dd::sum(col.iter().copied()).to_f64();
                let agree: Vec<f64> = col
                    .iter()
                    .copied()
                    .filter(|&x| (mass > 0.0 && x > 0.0) || (mass < 0.0 && x < 0.0))
                    .collect();
                if agree.is_empty() {
                    return (base[i], 0.0, 0);
                }
                let mean = (Dd::sum(agree.iter().copied()) / Dd::from(agree.len() as f64)).to_f64();
                (
                    (Dd::from(base[i]) + Dd::from(lambda) * Dd::from(mean)).to_f64(),
                    mean,
                    agree.len(),
                )
            })
            .collect()
    }

    /// The median (mean of the two middle values for an even count).
    pub fn median(xs: &[f64]) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let k = v.len();
        if k % 2 == 1 {
            v[k / 2]
        } else {
            (v[k / 2 - 1] + v[k / 2]) / 2.0
        }
    }

    /// The mean after dropping the `trim` smallest and largest values.
    pub fn trimmed_mean(xs: &[f64], trim: usize) -> Dd {
        let mut v = xs.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let kept = &v[trim..v.len() - trim];
        Dd::sum(kept.iter().copied()) / Dd::from(kept.len() as f64)
    }

    /// Spherical interpolation of two whole vectors (angle from
    /// double-double dot products); `None` where the documented linear
    /// fallback applies.
    pub fn slerp(a: &[f64], b: &[f64], t: f64, threshold: f64) -> Option<(Vec<f64>, f64)> {
        let dot = |x: &[f64], y: &[f64]| {
            x.iter()
                .zip(y)
                .fold(Dd::ZERO, |s, (&p, &q)| s + Dd::from(p) * Dd::from(q))
                .to_f64()
        };
        let (aa, bb, ab) = (dot(a, a), dot(b, b), dot(a, b));
        if aa == 0.0 || bb == 0.0 {
            return None;
        }
        let cos = (ab / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0);
        if 1.0 - cos.abs() < threshold {
            return None;
        }
        let theta = cos.acos();
        let s = theta.sin();
        let (wa, wb) = (((1.0 - t) * theta).sin() / s, (t * theta).sin() / s);
        Some((a.iter().zip(b).map(|(x, y)| wa * x + wb * y).collect(), s))
    }

    /// Mean and population variance in double-double.
    pub fn mean_var(xs: &[f64]) -> (Dd, Dd) {
        let n = Dd::from(xs.len() as f64);
        let m = Dd::sum(xs.iter().copied()) / n;
        let v = xs.iter().fold(Dd::ZERO, |s, &x| {
            let d = Dd::from(x) - m;
            s + d * d
        }) / n;
        (m, v)
    }

    /// The variance correction of one segment of an average `avg`, whose
    /// models had segment variances `vars`: `m + (a − m)·√(V/v)`. Returns
    /// the values, `m` and the scale.
    pub fn variance_corrected(avg: &[f64], vars: &[f64]) -> (Vec<f64>, f64, f64) {
        let (m, v) = mean_var(avg);
        let target = Dd::sum(vars.iter().copied()) / Dd::from(vars.len() as f64);
        if v.to_f64() <= 0.0 {
            return (avg.to_vec(), m.to_f64(), 1.0);
        }
        let s = (target / v).to_f64().sqrt();
        let out = avg
            .iter()
            .map(|&a| (m + (Dd::from(a) - m) * Dd::from(s)).to_f64())
            .collect();
        (out, m.to_f64(), s)
    }

    /// FedAU's estimate from a participation history (`rounds[r]` holds
    /// the participants of round `r`): the mean of the capped intervals
    /// between a client's participations (the first counted from the
    /// start), 1 before any.
    pub fn fedau_weight(rounds: &[Vec<usize>], client: usize, cutoff: u32) -> f64 {
        let mut last = 0usize;
        let mut intervals = Vec::new();
        for (r, who) in rounds.iter().enumerate() {
            if who.contains(&client) {
                let gap = r + 1 - last;
                intervals.push(gap.min(cutoff as usize) as f64);
                last = r + 1;
            }
        }
        if intervals.is_empty() {
            1.0
        } else {
            intervals.iter().sum::<f64>() / intervals.len() as f64
        }
    }
}
