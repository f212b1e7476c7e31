//! The multi-rate bank: each member computes the same bits as a separate
//! `Ema`, the parameters are read once per step whatever `K`, and the
//! mixture is within its documented bound.

use core::cell::Cell;

use polyak::{CompF32, Ema, EmaBank, EmaShadow, Error, I1F31, I2F62, Q15, Q31, Schedule};
use polyak_host::metrics::EPS;
use polyak_host::strategies::{config, q15_value};
use proptest::prelude::*;

fn schedule() -> impl Strategy<Value = Schedule> {
    prop_oneof![
        (0.0f32..0.9999).prop_map(Schedule::constant),
        (0.0f32..20.0).prop_map(Schedule::power),
        (0.1f32..4.0, 0.2f32..1.0).prop_map(|(g, p)| Schedule::warmup(g, p, 0.0, 0.999)),
        (1u8..12).prop_map(Schedule::shift),
    ]
    .prop_flat_map(|s| (0u32..5, 1u32..3).prop_map(move |(a, e)| s.after(a).every(e)))
}

/// Runs a bank and `K` separate EMAs on the same inputs and compares the
/// shadows bit for bit after every step.
fn same_bits<A, const K: usize>(schedules: [Schedule; K], debiased: bool, xs: &[Vec<A::Param>])
where
    A: EmaShadow + PartialEq + core::fmt::Debug,
{
    let n = xs[0].len();
    let mut bank = if debiased {
        EmaBank::with_schedules_debiased(vec![[A::ZERO; K]; n], schedules)
    } else {
        EmaBank::with_schedules(vec![[A::ZERO; K]; n], schedules)
    }
    .unwrap();
    let mut emas: Vec<Ema<A, Vec<A>>> = schedules
        .iter()
        .map(|&s| {
            if debiased {
                Ema::with_schedule_debiased(vec![A::ZERO; n], s)
            } else {
                Ema::with_schedule(vec![A::ZERO; n], s)
            }
            .unwrap()
        })
        .collect();
    for x in xs {
        bank.update(x).unwrap();
        for e in &mut emas {
            e.update(x).unwrap();
        }
        for (k, e) in emas.iter().enumerate() {
            let col: Vec<A> = bank.shadow().iter().map(|row| row[k]).collect();
            assert_eq!(col.as_slice(), e.shadow(), "member {k}");
            assert_eq!(bank.ema_steps()[k], e.ema_steps());
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn members_match_separate_emas_f32(
        s in [schedule(), schedule(), schedule()],
        debiased in any::<bool>(),
        xs in (1usize..20).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(-4.0f32..4.0, n), 1..60)),
    ) {
        same_bits::<f32, 3>(s, debiased, &xs);
        same_bits::<CompF32, 3>(s, debiased, &xs);
    }

    #[test]
    fn members_match_separate_emas_fixed(
        s in [schedule(), schedule()],
        debiased in any::<bool>(),
        xs in (1usize..20).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(q15_value(), n), 1..60)),
    ) {
        same_bits::<I1F31, 2>(s, debiased, &xs);
        let x31: Vec<Vec<Q31>> = xs.iter().map(|v| v.iter().map(|q| Q31::from_bits(i32::from(q.to_bits()) << 16 | 0x1234)).collect()).collect();
        same_bits::<I2F62, 2>(s, debiased, &x31);
    }

    /// The mixture against the f64 sum of the members' own reads:
    /// `ε·(½·|ref| + Σ|c_k·v_k|)` in f32.
    #[test]
    fn f32_mixture_within_bound(
        c in [-8.0f32..8.0, -8.0f32..8.0],
        xs in (1usize..20).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(-4.0f32..4.0, n), 1..40)),
    ) {
        let n = xs[0].len();
        let mut bank = EmaBank::new(vec![[CompF32::ZERO; 2]; n], [0.9, 0.999]).unwrap();
        for x in &xs { bank.update(x).unwrap(); }
        let (mut a, mut b, mut m) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        bank.read_into(0, &mut a).unwrap();
        bank.read_into(1, &mut b).unwrap();
        bank.mixture_into(&c, &mut m).unwrap();
        for i in 0..n {
            let (va, vb) = (f64::from(a[i]), f64::from(b[i]));
            let want = f64::from(c[0]) * va + f64::from(c[1]) * vb;
            let bound = EPS * (0.5 * want.abs() + (f64::from(c[0]) * va).abs() + (f64::from(c[1]) * vb).abs());
            prop_assert!((f64::from(m[i]) - want).abs() <= bound, "{} vs {want}", m[i]);
        }
    }

    /// Fixed-point mixture: exact in the Q16.16 coefficients, one rounding.
    #[test]
    fn q15_mixture_is_correctly_rounded(
        c in [-4.0f32..4.0, -4.0f32..4.0],
        xs in (1usize..20).prop_flat_map(|n| prop::collection::vec(prop::collection::vec(q15_value(), n), 1..40)),
    ) {
        let n = xs[0].len();
        let mut bank = EmaBank::new(vec![[I1F31::ZERO; 2]; n], [0.9, 0.99]).unwrap();
        for x in &xs { bank.update(x).unwrap(); }
        let (mut a, mut b, mut m) = (vec![Q15::ZERO; n], vec![Q15::ZERO; n], vec![Q15::ZERO; n]);
        bank.read_into(0, &mut a).unwrap();
        bank.read_into(1, &mut b).unwrap();
        let before = bank.saturated();
        bank.mixture_into(&c, &mut m).unwrap();
        let q = |c: f32| (f64::from(c) * 65536.0).round() as i128;
        let mut sat = 0;
        for i in 0..n {
            // exact: Σ round(c·2¹⁶)·v / 2¹⁶, rounded to nearest-even, saturated
            let num = q(c[0]) * i128::from(a[i].to_bits()) + q(c[1]) * i128::from(b[i].to_bits());
            let exact = num as f64 / 65536.0;
            let got = i128::from(m[i].to_bits());
            // saturated iff the nearest-even rounding leaves the range
            if !(-32768.0..=32767.0).contains(&exact.round_ties_even()) {
                sat += 1;
                prop_assert_eq!(got, if exact > 0.0 { 32767 } else { -32768 });
            } else {
                prop_assert!((got as f64 - exact).abs() <= 0.5, "{got} vs {exact}");
            }
        }
        prop_assert_eq!(bank.saturated() - before, sat);
    }
}

/// A parameter source that counts how often it is read.
struct Counting<'a> {
    data: &'a [Q15],
    pos: usize,
    reads: &'a Cell<usize>,
}

impl Iterator for Counting<'_> {
    type Item = Q15;
    fn next(&mut self) -> Option<Q15> {
        let v = self.data.get(self.pos).copied()?;
        self.pos += 1;
        self.reads.set(self.reads.get() + 1);
        Some(v)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = self.data.len() - self.pos;
        (r, Some(r))
    }
}
impl ExactSizeIterator for Counting<'_> {}

#[test]
fn parameters_are_read_once_per_step_whatever_k() {
    let n = 1000;
    let data: Vec<Q15> = (0..n)
        .map(|i| Q15::from_bits((i * 37 % 20000) as i16))
        .collect();
    let reads = Cell::new(0);
    let mut b1 = EmaBank::new(vec![[I1F31::ZERO; 1]; n], [0.9]).unwrap();
    let mut b4 = EmaBank::new(vec![[I1F31::ZERO; 4]; n], [0.9, 0.99, 0.999, 0.9999]).unwrap();
    let mut separate: Vec<_> = [0.9f32, 0.99, 0.999, 0.9999]
        .iter()
        .map(|&b| Ema::new(vec![I1F31::ZERO; n], b).unwrap())
        .collect();
    for step in 1..=10 {
        reads.set(0);
        b1.update_from_iter(Counting {
            data: &data,
            pos: 0,
            reads: &reads,
        })
        .unwrap();
        assert_eq!(reads.get(), n, "K = 1 reads each parameter once");
        reads.set(0);
        b4.update_from_iter(Counting {
            data: &data,
            pos: 0,
            reads: &reads,
        })
        .unwrap();
        assert_eq!(
            reads.get(),
            n,
            "K = 4 reads each parameter once, not four times"
        );
        for e in &mut separate {
            e.update(&data).unwrap();
        }
        for (k, e) in separate.iter().enumerate() {
            assert!(
                b4.shadow()
                    .iter()
                    .zip(e.shadow())
                    .all(|(row, s)| row[k] == *s),
                "step {step} member {k}"
            );
        }
    }
    // f32 input is checked before anything is written, which an iterator
    // cannot offer
    let mut f = EmaBank::new(vec![[0.0f32; 2]; 3], [0.9, 0.99]).unwrap();
    assert_eq!(f.update_from_iter([1.0f32; 3]), Err(Error::Unsupported));
    assert_eq!(f.steps(), 0);
    assert_eq!(
        b4.update_from_iter(data[..5].iter().copied()),
        Err(Error::LengthMismatch {
            expected: n,
            found: 5
        })
    );
}

#[test]
fn bank_errors_leave_state_unchanged() {
    let mut bank = EmaBank::new([[CompF32::ZERO; 2]; 3], [0.5, 0.9]).unwrap();
    let mut out = [7.0f32; 3];
    assert_eq!(bank.read_into(0, &mut out), Err(Error::Empty));
    assert_eq!(bank.mixture_into(&[1.0, 1.0], &mut out), Err(Error::Empty));
    bank.update(&[1.0, 2.0, 3.0]).unwrap();
    let before = format!("{bank:?}");
    assert_eq!(
        bank.update(&[1.0, f32::NAN, 3.0]),
        Err(Error::NonFinite { index: 1 })
    );
    assert_eq!(
        bank.update(&[1.0]),
        Err(Error::LengthMismatch {
            expected: 3,
            found: 1
        })
    );
    assert_eq!(
        bank.read_into(2, &mut out),
        Err(Error::InvalidIndex { index: 2 })
    );
    assert_eq!(
        bank.mixture_into(&[f32::NAN, 1.0], &mut out),
        Err(Error::InvalidCoefficient)
    );
    assert_eq!(
        bank.mixture_into(&[1e30, 1.0], &mut out),
        Err(Error::InvalidCoefficient)
    );
    assert_eq!(format!("{bank:?}"), before);
    assert_eq!(out, [7.0; 3]);
    // Dual Teacher: alternate the member copied back each epoch
    let mut model = [0.0f32; 3];
    for epoch in 0..4usize {
        bank.update(&[epoch as f32; 3]).unwrap();
        bank.switch_into(epoch % 2, &mut model).unwrap();
        let mut want = [0.0f32; 3];
        bank.read_into(epoch % 2, &mut want).unwrap();
        assert_eq!(model, want);
    }
    assert!(EmaBank::new([[0.0f32; 2]; 1], [0.5, 1.5]).is_err());
}
