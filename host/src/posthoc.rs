//! The host half of post-hoc EMA: reconstruct, after training, the
//! power-function EMA of any σ_rel from the snapshots a device recorded
//! with `polyak::posthoc::PostHoc` (EDM2, Karras et al. 2024).
//!
//! A power-function EMA with exponent γ taken at step `t` averages the
//! trajectory with the profile `p(τ) = (γ + 1)·τ^γ / t^(γ+1)` on `[0, t]`.
//! The inner product of two such profiles has a closed form,
//!
//! ```text
//! ⟨p_a, p_b⟩ = (γa + 1)(γb + 1) / (γa + γb + 1) · m^(γa+γb+1) / (ta^(γa+1)·tb^(γb+1)),  m = min(ta, tb)
//! ```
//!
//! so the weights `x` that make `Σ x_i·p_i` closest (in L²) to the target
//! profile solve the normal equations `A x = b` with `A_ij = ⟨p_i, p_j⟩`
//! and `b_i = ⟨p_i, p_target⟩`. The Gram matrix of nearby profiles is
//! close to singular, so the solve uses the eigendecomposition of `A`
//! (cyclic Jacobi) and drops eigenvalues below `rcond·λ_max`. The weights
//! are then normalised to sum to 1.
//!
//! The reconstruction is refused when it cannot be trusted:
//! [`PostHocError::PoorFit`] when the best combination still misses the
//! target profile by more than `max_residual` (relative L² error), and
//! [`PostHocError::IllConditioned`] when the weights amplify the snapshots
//! by more than `max_amplification` (`Σ|x_i|`; rounding errors in the
//! snapshots grow by that factor).
//!
//! Measured on the test trajectory (8 parameters, each a random walk plus
//! noise, 20 000 steps, f32 compensated EMAs at σ_rel = 0.05 and 0.10
//! snapshotted every 1000 steps), against the f64 power-function EMA of the
//! same trajectory computed directly: the two recorded widths come back
//! within 10⁻⁵ of the trajectory's standard deviation, widths from 0.05 to
//! 0.13 within 0.05 % (worst measured 0.033 %), 0.04 within 0.15 %
//! (0.11 %), and the extrapolations to 0.03 and 0.15 within 0.6 %
//! (0.48 %). `tests/posthoc.rs` asserts these
//! figures. The solution weights for σ_rel = 0.07 amplify the snapshots
//! only 1.45×; widths beyond about 0.25 or below 0.02 are refused.

use polyak::posthoc::{SnapshotMeta, SnapshotSink};

/// Keeps every snapshot in memory.
#[derive(Debug, Clone, Default)]
pub struct MemorySink<T> {
    /// What was recorded, in order.
    pub snapshots: Vec<Recorded<T>>,
}

/// One recorded snapshot.
#[derive(Debug, Clone)]
pub struct Recorded<T> {
    /// Its description.
    pub meta: SnapshotMeta,
    /// Its values.
    pub data: Vec<T>,
}

impl<T: Copy> SnapshotSink<T> for MemorySink<T> {
    type Error = std::convert::Infallible;
    fn begin(&mut self, meta: &SnapshotMeta) -> Result<(), Self::Error> {
        self.snapshots.push(Recorded {
            meta: *meta,
            data: Vec::with_capacity(meta.len as usize),
        });
        Ok(())
    }
    fn write(&mut self, chunk: &[T]) -> Result<(), Self::Error> {
        if let Some(s) = self.snapshots.last_mut() {
            s.data.extend_from_slice(chunk);
        }
        Ok(())
    }
    fn end(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// `⟨p_a, p_b⟩` of two power-function profiles (length `t`, exponent γ).
pub fn correlation(ta: f64, ga: f64, tb: f64, gb: f64) -> f64 {
    let (t_lo, t_hi, g_hi) = if ta <= tb { (ta, tb, gb) } else { (tb, ta, ga) };
    // (γa+1)(γb+1)/(γa+γb+1) · (t_lo/t_hi)^γ_hi / t_hi
    (ga + 1.0) * (gb + 1.0) / (ga + gb + 1.0) * (t_lo / t_hi).powf(g_hi) / t_hi
}

/// Why a reconstruction was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PostHocError {
    /// No snapshots to combine.
    NoSnapshots,
    /// The target σ_rel or step is not valid.
    InvalidTarget,
    /// The weights would amplify the snapshots by this factor (`Σ|x_i|`).
    IllConditioned {
        /// `Σ|x_i|` of the normalised weights.
        amplification: f64,
    },
    /// The best combination misses the target profile by this relative L²
    /// error.
    PoorFit {
        /// `‖Σ x_i·p_i − p‖ / ‖p‖`.
        residual: f64,
    },
}

impl std::fmt::Display for PostHocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PostHocError::NoSnapshots => f.write_str("no snapshots"),
            PostHocError::InvalidTarget => f.write_str("invalid target σ_rel or step"),
            PostHocError::IllConditioned { amplification } => {
                write!(
                    f,
                    "ill-conditioned: the weights amplify the snapshots {amplification:.3e}×"
                )
            }
            PostHocError::PoorFit { residual } => {
                write!(
                    f,
                    "the snapshots cannot represent the target (relative error {residual:.3})"
                )
            }
        }
    }
}

impl std::error::Error for PostHocError {}

/// Limits of the solve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolveOptions {
    /// Eigenvalues below `rcond·λ_max` are dropped.
    pub rcond: f64,
    /// Largest accepted `Σ|x_i|`.
    pub max_amplification: f64,
    /// Largest accepted relative L² error of the fitted profile.
    pub max_residual: f64,
}

impl Default for SolveOptions {
    fn default() -> Self {
        Self {
            rcond: 1e-12,
            max_amplification: 1e4,
            max_residual: 0.05,
        }
    }
}

/// The weights of a reconstruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    /// One weight per snapshot, in the order given; they sum to 1.
    pub weights: Vec<f64>,
    /// Relative L² error of the fitted profile.
    pub residual: f64,
    /// `Σ|x_i|`.
    pub amplification: f64,
}

/// Solves for the weights that reconstruct, from snapshots with profiles
/// `(t_i, γ_i)`, the power-function EMA with relative width `sigma_rel` at
/// step `t`.
///
/// # Errors
/// [`PostHocError`] as described in the module docs.
///
/// ```
/// use polyak_host::posthoc::{solve, SolveOptions};
/// use polyak::schedule::sigma_rel_to_gamma;
/// let (g5, g10) = (sigma_rel_to_gamma(0.05).unwrap(), sigma_rel_to_gamma(0.10).unwrap());
/// // snapshots of both widths every 100 steps up to step 1000
/// let profiles: Vec<(u64, f64)> =
///     (1..=10).flat_map(|i| [(100 * i, g5), (100 * i, g10)]).collect();
/// let sol = solve(&profiles, 1000, 0.07, SolveOptions::default()).unwrap();
/// assert!((sol.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
/// assert!(sol.residual < 0.05);
/// ```
pub fn solve(
    profiles: &[(u64, f64)],
    t: u64,
    sigma_rel: f64,
    opts: SolveOptions,
) -> Result<Solution, PostHocError> {
    if profiles.is_empty() {
        return Err(PostHocError::NoSnapshots);
    }
    let gamma =
        polyak::schedule::sigma_rel_to_gamma(sigma_rel).map_err(|_| PostHocError::InvalidTarget)?;
    if t == 0 {
        return Err(PostHocError::InvalidTarget);
    }
    let n = profiles.len();
    let tf = t as f64;
    let a: Vec<Vec<f64>> = profiles
        .iter()
        .map(|&(ti, gi)| {
            profiles
                .iter()
                .map(|&(tj, gj)| correlation(ti as f64, gi, tj as f64, gj))
                .collect()
        })
        .collect();
    let b: Vec<f64> = profiles
        .iter()
        .map(|&(ti, gi)| correlation(ti as f64, gi, tf, gamma))
        .collect();
    let c = correlation(tf, gamma, tf, gamma);

    let (vals, vecs) = jacobi_eigen(&a);
    let lmax = vals.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let mut x = vec![0.0; n];
    for (k, &lam) in vals.iter().enumerate() {
        if lam > opts.rcond * lmax {
            let proj: f64 = (0..n).map(|i| vecs[i][k] * b[i]).sum::<f64>() / lam;
            for i in 0..n {
                x[i] += proj * vecs[i][k];
            }
        }
    }
    let sum: f64 = x.iter().sum();
    if sum.is_nan() || sum.abs() <= 1e-12 {
        return Err(PostHocError::PoorFit { residual: 1.0 });
    }
    for v in &mut x {
        *v /= sum;
    }
    // ‖Σ x_i p_i − p‖² = xᵀAx − 2xᵀb + c
    let xax: f64 = (0..n)
        .map(|i| x[i] * (0..n).map(|j| a[i][j] * x[j]).sum::<f64>())
        .sum();
    let xb: f64 = (0..n).map(|i| x[i] * b[i]).sum();
    let residual = ((xax - 2.0 * xb + c).max(0.0) / c).sqrt();
    let amplification: f64 = x.iter().map(|v| v.abs()).sum();
    if residual > opts.max_residual {
        return Err(PostHocError::PoorFit { residual });
    }
    if amplification > opts.max_amplification {
        return Err(PostHocError::IllConditioned { amplification });
    }
    Ok(Solution {
        weights: x,
        residual,
        amplification,
    })
}

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix by cyclic
/// Jacobi rotations.
fn jacobi_eigen(a: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a.to_vec();
    let mut v: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        let diag: f64 = (0..n).map(|i| m[i][i] * m[i][i]).sum();
        if off <= 1e-30 * diag {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                if m[p][q] == 0.0 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in m.iter_mut() {
                    let (mkp, mkq) = (row[p], row[q]);
                    row[p] = c * mkp - s * mkq;
                    row[q] = s * mkp + c * mkq;
                }
                let (row_p, row_q) = (m[p].clone(), m[q].clone());
                for (k, (mpk, mqk)) in row_p.into_iter().zip(row_q).enumerate() {
                    m[p][k] = c * mpk - s * mqk;
                    m[q][k] = s * mpk + c * mqk;
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i][i]).collect(), v)
}

/// Accumulates a reconstruction one snapshot at a time, in the order the
/// weights were solved for.
#[derive(Debug, Clone)]
pub struct Reconstruction {
    weights: Vec<f64>,
    next: usize,
    sum: Vec<f64>,
}

impl Reconstruction {
    /// Starts a reconstruction of `len` parameters with `solution`'s weights.
    pub fn new(solution: &Solution, len: usize) -> Self {
        Self {
            weights: solution.weights.clone(),
            next: 0,
            sum: vec![0.0; len],
        }
    }

    /// Adds the next snapshot. Returns `false` (and ignores it) if all
    /// weights were used or the length differs.
    pub fn add(&mut self, data: impl IntoIterator<Item = f64>) -> bool {
        let Some(&w) = self.weights.get(self.next) else {
            return false;
        };
        let before = self.sum.len();
        let mut n = 0;
        for (s, v) in self.sum.iter_mut().zip(data) {
            *s += w * v;
            n += 1;
        }
        self.next += 1;
        n == before
    }

    /// The reconstructed EMA, once every snapshot was added.
    pub fn finish(self) -> Option<Vec<f64>> {
        (self.next == self.weights.len()).then_some(self.sum)
    }
}
