//! NASWA's filter against the f64 definition, overall and per segment.

use polyak::layout::Layout;
use polyak::naswa::{Naswa, NormScope};
use polyak::{CompF32, Error, I49F15, Q15};
use polyak_host::strategies::config;
use proptest::prelude::*;

/// The definition: admitted iff (1 − τ)‖m_g‖ ≤ ‖x_g‖ ≤ (1 + τ)‖m_g‖ for
/// every group, m the mean of the admitted snapshots so far. `None` when
/// some group is within 1e-9 relative of a bound (either answer is right).
fn admit(
    sum: &[f64],
    n: usize,
    x: &[f64],
    groups: &[std::ops::Range<usize>],
    tau: f64,
) -> Option<bool> {
    if n == 0 {
        return Some(true);
    }
    let mut ok = true;
    for g in groups {
        let m: f64 = g
            .clone()
            .map(|i| (sum[i] / n as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let v: f64 = g.clone().map(|i| x[i] * x[i]).sum::<f64>().sqrt();
        if m == 0.0 {
            continue;
        }
        let (lo, hi) = ((1.0 - tau) * m, (1.0 + tau) * m);
        // the documented margin: decisions within 10⁻¹⁴ of a bound may differ
        if ((v - lo).abs() <= 1e-14 * m) || ((v - hi).abs() <= 1e-14 * m) {
            return None;
        }
        ok &= lo <= v && v <= hi;
    }
    Some(ok)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn f32_filter_matches_the_definition(
        tau in 0.01f32..0.5,
        per_segment in any::<bool>(),
        xs in prop::collection::vec((0.5f32..1.5, prop::collection::vec(-1.0f32..1.0, 6)), 1..60),
    ) {
        let mut layout: Layout<2> = Layout::new();
        layout.push("a", 2).unwrap();
        layout.push("b", 4).unwrap();
        let groups: Vec<std::ops::Range<usize>> = if per_segment { vec![0..2, 2..6] } else { std::iter::once(0..6).collect() };
        let scope = if per_segment { NormScope::PerSegment } else { NormScope::Overall };
        let mut n = Naswa::new(vec![CompF32::ZERO; 6], layout, tau, scope).unwrap();
        let mut sum = [0.0f64; 6];
        let (mut count, mut rejected) = (0usize, 0u32);
        for (scale, v) in &xs {
            let x: Vec<f32> = v.iter().map(|e| e * scale).collect();
            let xd: Vec<f64> = x.iter().map(|&e| f64::from(e)).collect();
            let want = admit(&sum, count, &xd, &groups, f64::from(tau));
            let got = n.update(&x).unwrap();
            if let Some(w) = want {
                prop_assert_eq!(got, w);
            }
            if got {
                for i in 0..6 { sum[i] += xd[i]; }
                count += 1;
            } else {
                rejected += 1;
            }
        }
        prop_assert_eq!(n.rejected(), rejected);
        prop_assert_eq!(n.swa().count() as usize, count);
    }
}

#[test]
fn fixed_point_and_errors() {
    let layout: Layout<1> = Layout::single("w", 2).unwrap();
    let mut n = Naswa::new([I49F15::ZERO; 2], layout.clone(), 0.2, NormScope::Overall).unwrap();
    let q = |a: f32, b: f32| [Q15::from_num(a), Q15::from_num(b)];
    assert!(n.update(&q(0.3, 0.4)).unwrap());
    assert!(n.update(&q(0.32, 0.41)).unwrap());
    assert!(!n.update(&q(0.6, 0.8)).unwrap());
    assert!(!n.update(&q(0.03, 0.04)).unwrap());
    assert_eq!(n.rejected(), 2);
    // bad input and bad configuration
    let mut f = Naswa::new([CompF32::ZERO; 2], layout.clone(), 0.2, NormScope::Overall).unwrap();
    f.update(&[1.0, 1.0]).unwrap();
    let before = format!("{f:?}");
    assert_eq!(
        f.update(&[1.0, f32::NAN]),
        Err(Error::NonFinite { index: 1 })
    );
    assert_eq!(
        f.update(&[1.0]),
        Err(Error::LengthMismatch {
            expected: 2,
            found: 1
        })
    );
    assert_eq!(format!("{f:?}"), before);
    assert!(matches!(
        Naswa::new([CompF32::ZERO; 2], layout.clone(), 0.0, NormScope::Overall),
        Err(Error::InvalidCoefficient)
    ));
    assert!(matches!(
        Naswa::new([CompF32::ZERO; 2], layout.clone(), 1.0, NormScope::Overall),
        Err(Error::InvalidCoefficient)
    ));
    assert!(matches!(
        Naswa::new([CompF32::ZERO; 3], layout, 0.1, NormScope::Overall),
        Err(Error::LengthMismatch { .. })
    ));
    // a full layout refuses another segment
    let mut l: Layout<1> = Layout::new();
    l.push("a", 1).unwrap();
    assert_eq!(l.push("b", 1), Err(Error::CapacityExceeded));
}
