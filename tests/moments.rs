//! Second moments: f32 shifted compensated sums within their bound (where
//! the naive E[x²] − E[x]² fails), exact fixed-point moments, the SWAG
//! sampler, and the error paths.

use polyak::moments::{MomentF32, MomentQ15, MomentQ31, Moments, Normal};
use polyak::{Error, Q15, Q31};
use polyak_host::dd::Dd;
use polyak_host::metrics::{EPS, ETA};
use polyak_host::naive::NaiveVariance;
use polyak_host::strategies::{config, q15_value, q31_value};
use proptest::prelude::*;

/// Two-pass reference in double-double precision: mean, variance (with
/// ddof), and Q, the mean square deviation from the first value.
fn reference(xs: &[f64], ddof: usize) -> (Dd, Dd, f64) {
    let n = Dd::from(xs.len() as f64);
    let mean = Dd::sum(xs.iter().copied()) / n;
    let sq = |c: Dd| {
        xs.iter().fold(Dd::ZERO, |s, &x| {
            let d = Dd::from(x) - c;
            s + d * d
        })
    };
    let var = sq(mean) / (n - Dd::from(ddof as f64));
    let q = sq(Dd::from(xs[0])) / n;
    (mean, var, q.to_f64())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn f32_moments_within_bound(
        offset in prop_oneof![Just(0.0f32), -1.0e4f32..1.0e4, Just(3.0f32)],
        spread in prop_oneof![Just(1.0f32), 1.0e-6f32..1.0e-2, 1.0f32..100.0],
        rows in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 3), 2..300),
        ddof in 0u64..=1,
    ) {
        let mut m = Moments::new(vec![MomentF32::ZERO; 3]);
        let data: Vec<Vec<f32>> = rows.iter().map(|r| r.iter().map(|v| offset + spread * v).collect()).collect();
        for r in &data { m.update(r).unwrap(); }
        let (mut mean, mut var) = (vec![0.0f32; 3], vec![0.0f32; 3]);
        m.mean_into(&mut mean).unwrap();
        m.variance_into(&mut var, ddof).unwrap();
        let n = data.len() as f64;
        for i in 0..3 {
            let col: Vec<f64> = data.iter().map(|r| f64::from(r[i])).collect();
            let (rm, rv, q) = reference(&col, ddof as usize);
            let bm = EPS * (rm.abs().to_f64() + q.sqrt()) / 2.0 + ETA;
            let em = (Dd::from(mean[i]) - rm).abs().to_f64();
            prop_assert!(em <= bm, "mean {} vs {rm:?}", mean[i]);
            let bv = 3.0 * EPS * q * n / (n - ddof as f64) + ETA;
            let ev = (Dd::from(var[i]) - rv).abs().to_f64();
            prop_assert!(ev <= bv, "var {} vs {rv:?} (Q {q})", var[i]);
        }
    }

    #[test]
    fn q15_moments_are_correctly_rounded(rows in prop::collection::vec(prop::collection::vec(q15_value(), 2), 2..200), ddof in 0u64..=1) {
        let mut m = Moments::new(vec![MomentQ15::ZERO; 2]);
        for r in &rows { m.update(r).unwrap(); }
        let (mut mean, mut var) = (vec![Q15::ZERO; 2], vec![Q31::ZERO; 2]);
        m.mean_into(&mut mean).unwrap();
        m.variance_into(&mut var, ddof).unwrap();
        let n = rows.len() as i128;
        for i in 0..2 {
            let s1: i128 = rows.iter().map(|r| i128::from(r[i].to_bits())).sum();
            let s2: i128 = rows.iter().map(|r| i128::from(r[i].to_bits()).pow(2)).sum();
            // mean in LSB15: s1/n
            prop_assert!(2 * (i128::from(mean[i].to_bits()) * n - s1).abs() <= n);
            // var in LSB31: 2·(n·s2 − s1²)/(n·(n − ddof)), clamped to Q31
            let (num, den) = (2 * (n * s2 - s1 * s1), n * (n - ddof as i128));
            let q = i128::from(var[i].to_bits());
            if num <= i128::from(i32::MAX) * den {
                prop_assert!(2 * (q * den - num).abs() <= den, "var {q} vs {num}/{den}");
            } else {
                prop_assert_eq!(q, i128::from(i32::MAX));
            }
        }
    }

    #[test]
    fn q31_moments_are_correctly_rounded(rows in prop::collection::vec(prop::collection::vec(q31_value(), 2), 2..100)) {
        let mut m = Moments::new(vec![MomentQ31::ZERO; 2]);
        for r in &rows { m.update(r).unwrap(); }
        let (mut mean, mut var) = (vec![Q31::ZERO; 2], vec![Q31::ZERO; 2]);
        m.mean_into(&mut mean).unwrap();
        m.variance_into(&mut var, 0).unwrap();
        let n = rows.len() as i128;
        for i in 0..2 {
            let s1: i128 = rows.iter().map(|r| i128::from(r[i].to_bits())).sum();
            let s2: i128 = rows.iter().map(|r| i128::from(r[i].to_bits()).pow(2)).sum();
            prop_assert!(2 * (i128::from(mean[i].to_bits()) * n - s1).abs() <= n);
            let (num, den) = (n * s2 - s1 * s1, n * n * (1i128 << 31));
            let q = i128::from(var[i].to_bits());
            if num <= i128::from(i32::MAX) * den {
                prop_assert!(2 * (q * den - num).abs() <= den);
            } else {
                prop_assert_eq!(q, i128::from(i32::MAX));
            }
        }
    }
}

#[test]
fn naive_variance_fails_where_shifted_sums_hold() {
    // activations with a mean of 1000 and a spread of 10⁻³
    let mut ours = Moments::new(vec![MomentF32::ZERO; 1]);
    let mut naive = NaiveVariance::new(1);
    let data: Vec<f32> = (0..10_000)
        .map(|i| 1000.0 + 0.001 * ((i * 7919 % 1000) as f32 / 500.0 - 1.0))
        .collect();
    for &x in &data {
        ours.update(&[x]).unwrap();
        naive.update(&[x]);
    }
    let col: Vec<f64> = data.iter().map(|&x| f64::from(x)).collect();
    let (_, rv, q) = reference(&col, 0);
    let rv = rv.to_f64();
    let mut v = [0.0f32];
    ours.variance_into(&mut v, 0).unwrap();
    let naive_v = naive.variance()[0];
    let ours_rel = (f64::from(v[0]) - rv).abs() / rv;
    let naive_rel = (f64::from(naive_v) - rv).abs() / rv;
    println!(
        "variance of 10⁴ values near 1000 with spread 10⁻³: reference {rv:.4e}, shifted sums {:.4e} (rel. error {ours_rel:.1e}), naive {naive_v:.4e} (rel. error {naive_rel:.1e})",
        v[0]
    );
    assert!((f64::from(v[0]) - rv).abs() <= 3.0 * EPS * q + ETA);
    assert!(
        naive_rel > 1.0,
        "the naive form should be off by more than 100 %"
    );
}

#[test]
fn batchnorm_buffers_and_batches() {
    let mut stats = Moments::new([MomentF32::ZERO; 2]);
    // a batch of three samples of two channels
    stats
        .update_batch(&[1.0, 10.0, 2.0, 20.0, 3.0, 30.0])
        .unwrap();
    let (mut mean, mut var) = ([0.0f32; 2], [0.0f32; 2]);
    stats.write_into(&mut mean, &mut var).unwrap();
    assert_eq!(mean, [2.0, 20.0]);
    assert_eq!(var, [1.0, 100.0]);
    assert_eq!(
        stats.update_batch(&[1.0, 2.0, 3.0]),
        Err(Error::LengthMismatch {
            expected: 2,
            found: 3
        })
    );
    stats.reset();
    assert_eq!(stats.count(), 0);
    assert_eq!(stats.mean_into(&mut mean), Err(Error::Empty));
}

#[test]
fn error_paths_leave_state_unchanged() {
    let mut m = Moments::new([MomentF32::ZERO; 2]);
    let mut v = [7.0f32; 2];
    m.update(&[1.0, 2.0]).unwrap();
    assert_eq!(m.variance_into(&mut v, 0), Err(Error::TooFewSamples));
    assert_eq!(v, [7.0; 2]);
    let before = format!("{m:?}");
    assert_eq!(
        m.update(&[f32::NAN, 1.0]),
        Err(Error::NonFinite { index: 0 })
    );
    assert_eq!(
        m.update(&[1.0]),
        Err(Error::LengthMismatch {
            expected: 2,
            found: 1
        })
    );
    let big = polyak::moments::MOMENT_F32_LIMIT;
    assert_eq!(
        m.update(&[1.0, big.next_up()]),
        Err(Error::OutOfRange { index: 1 })
    );
    assert_eq!(format!("{m:?}"), before);
    m.update(&[3.0, 2.0]).unwrap();
    assert_eq!(m.variance_into(&mut v, 2), Err(Error::InvalidCoefficient));
    let mut s = [0.0f32; 2];
    assert_eq!(
        m.sample_into(&mut Normal::new(1), -1.0, &mut s),
        Err(Error::InvalidCoefficient)
    );
}

#[test]
fn swag_sampler_draws_from_the_diagonal_gaussian() {
    // snapshots with mean (0.5, -2) and variance (0.01, 4)
    let mut m = Moments::new([MomentF32::ZERO; 2]);
    for k in 0..1000 {
        let s = if k % 2 == 0 { 1.0f32 } else { -1.0 };
        m.update(&[0.5 + 0.1 * s, -2.0 + 2.0 * s]).unwrap();
    }
    let mut rng = Normal::new(42);
    let n = 20_000;
    let (mut sum, mut sum2) = ([0.0f64; 2], [0.0f64; 2]);
    let mut draw = [0.0f32; 2];
    for _ in 0..n {
        m.sample_into(&mut rng, 1.0, &mut draw).unwrap();
        for i in 0..2 {
            sum[i] += f64::from(draw[i]);
            sum2[i] += f64::from(draw[i]).powi(2);
        }
    }
    for (i, (mu, var)) in [(0.5f64, 0.01f64), (-2.0, 4.0)].into_iter().enumerate() {
        let mean = sum[i] / n as f64;
        let v = sum2[i] / n as f64 - mean * mean;
        // 6 standard errors of the mean and of the variance
        assert!(
            (mean - mu).abs() <= 6.0 * (var / n as f64).sqrt(),
            "mean {mean} vs {mu}"
        );
        assert!(
            (v - var).abs() <= 6.0 * var * (2.0 / n as f64).sqrt(),
            "var {v} vs {var}"
        );
    }
    // the same seed draws the same weights
    let (mut a, mut b) = ([0.0f32; 2], [0.0f32; 2]);
    m.sample_into(&mut Normal::new(7), 0.5, &mut a).unwrap();
    m.sample_into(&mut Normal::new(7), 0.5, &mut b).unwrap();
    assert_eq!(a, b);
}

/// Values at the limit, alternating in sign for the largest deviations:
/// the squared sums stay finite and the variance is within its bound.
#[test]
fn values_at_the_limit_keep_finite_sums() {
    let big = polyak::moments::MOMENT_F32_LIMIT;
    let mut m = Moments::new([MomentF32::ZERO; 1]);
    let n = 4096;
    for i in 0..n {
        m.update(&[if i % 2 == 0 { big } else { -big }]).unwrap();
    }
    let mut var = [0.0f32];
    m.variance_into(&mut var, 0).unwrap();
    let want = f64::from(big).powi(2);
    let q = 0.5 * (2.0 * f64::from(big)).powi(2);
    let bound = 3.0 * EPS * q + ETA;
    assert!(var[0].is_finite());
    assert!(
        (f64::from(var[0]) - want).abs() <= bound,
        "{} vs {want}",
        var[0]
    );
}
