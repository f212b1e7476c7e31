//! The sliding window: exact sums give bit-for-bit the mean recomputed
//! from scratch after more than ten thousand slides; the f32 drift stays
//! within its bound; store failures and bad input leave it usable.

use std::collections::VecDeque;
use std::num::NonZeroU64;

use polyak::window::{RamRing, Window, WindowStore};
use polyak::{CompF32, Error, I33F31, I49F15, Q15, Q31};
use polyak_host::dd::Dd;
use polyak_host::metrics::{EPS, ETA};
use polyak_host::strategies::config;
use proptest::prelude::*;

fn q15_stream(seed: u64, n: usize) -> impl FnMut() -> Vec<Q15> {
    let mut s = seed | 1;
    move || {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                Q15::from_bits((s >> 48) as u16 as i16)
            })
            .collect()
    }
}

#[test]
fn exact_window_is_bit_identical_to_a_recompute_after_many_slides() {
    for k in [1usize, 7, 64] {
        let n = 5;
        let mut w = Window::new(
            vec![I49F15::ZERO; n],
            RamRing::new(vec![Q15::ZERO; (k + 1) * n], n).unwrap(),
            k,
        )
        .unwrap();
        let mut w31 = Window::new(
            vec![I33F31::ZERO; n],
            RamRing::new(vec![Q31::ZERO; (k + 1) * n], n).unwrap(),
            k,
        )
        .unwrap();
        let mut recent: VecDeque<Vec<Q15>> = VecDeque::new();
        let mut next = q15_stream(k as u64, n);
        let (mut out, mut out31) = (vec![Q15::ZERO; n], vec![Q31::ZERO; n]);
        for step in 0..(12_000 + k) {
            let x = next();
            let x31: Vec<Q31> = x
                .iter()
                .map(|q| Q31::from_bits(i32::from(q.to_bits()) << 16 | 0x5555))
                .collect();
            w.update(&x).unwrap();
            w31.update(&x31).unwrap();
            recent.push_back(x);
            if recent.len() > k {
                recent.pop_front();
            }
            if step % 97 == 0 || step >= 12_000 {
                // from scratch: the exact sum of the last k snapshots, rounded once
                let mut fresh = polyak::Swa::new(vec![I49F15::ZERO; n]);
                for r in &recent {
                    fresh.update(r).unwrap();
                }
                let mut want = vec![Q15::ZERO; n];
                fresh.read_into(&mut want).unwrap();
                w.read_into(&mut out).unwrap();
                assert_eq!(out, want, "k {k} step {step}");
                assert_eq!(w.sum(), fresh.accumulator());
                w31.read_into(&mut out31).unwrap();
            }
        }
        assert!(w.slides() >= 12_000);
        println!(
            "k = {k}: {} slides, window mean bit-identical to the recompute",
            w.slides()
        );
    }
}

/// The documented f32 bound: `ε·|mean| + (s + k/2)·ε²·M + η`.
fn bound(mean: f64, m: f64, s: u64, k: usize) -> f64 {
    EPS * mean.abs() + (s as f64 + k as f64 / 2.0) * EPS * EPS * m + ETA
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn f32_drift_within_bound(
        k in 1usize..40,
        resum in prop_oneof![Just(None), (1u64..500).prop_map(Some)],
        offset in prop_oneof![Just(0.0f32), -100.0f32..100.0],
        xs in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 3), 50..3000),
    ) {
        let n = 3;
        let mut w = Window::new(vec![CompF32::ZERO; n], RamRing::new(vec![0.0f32; (k + 1) * n], n).unwrap(), k).unwrap();
        if let Some(r) = resum {
            w = w.with_resum_every(NonZeroU64::new(r).unwrap());
        }
        let mut recent: VecDeque<Vec<f32>> = VecDeque::new();
        let mut m = 0.0f64;
        let mut since = 0u64;
        let mut out = vec![0.0f32; n];
        for x in &xs {
            let x: Vec<f32> = x.iter().map(|v| v + offset).collect();
            m = x.iter().fold(m, |a, v| a.max(f64::from(*v).abs()));
            w.update(&x).unwrap();
            recent.push_back(x);
            if recent.len() > k {
                recent.pop_front();
                since += 1;
            }
            if resum.is_some_and(|r| since >= r) { since = 0; }
            w.read_into(&mut out).unwrap();
            for i in 0..n {
                let mean = Dd::sum(recent.iter().map(|r| f64::from(r[i]))) / Dd::from(recent.len() as f64);
                let err = (Dd::from(out[i]) - mean).abs().to_f64();
                let b = bound(mean.to_f64(), m, since, k);
                prop_assert!(err <= b, "elem {i}: {} vs {mean:?}", out[i]);
            }
        }
    }
}

/// A store that fails on demand.
struct Flaky {
    inner: RamRing<f32, Vec<f32>>,
    fail_write: bool,
    fail_read: bool,
}

impl WindowStore<f32> for Flaky {
    fn slots(&self) -> usize {
        self.inner.slots()
    }
    fn snapshot_len(&self) -> usize {
        self.inner.snapshot_len()
    }
    fn write(&mut self, slot: usize, offset: usize, data: &[f32]) -> Result<(), Error> {
        if self.fail_write {
            Err(Error::Storage)
        } else {
            self.inner.write(slot, offset, data)
        }
    }
    fn read(&mut self, slot: usize, offset: usize, out: &mut [f32]) -> Result<(), Error> {
        if self.fail_read {
            Err(Error::Storage)
        } else {
            self.inner.read(slot, offset, out)
        }
    }
}

#[test]
fn failures_and_bad_input() {
    assert!(matches!(
        Window::new([CompF32::ZERO; 2], RamRing::new([0.0f32; 6], 2).unwrap(), 0),
        Err(Error::InvalidWindow)
    ));
    assert!(matches!(
        Window::new([CompF32::ZERO; 2], RamRing::new([0.0f32; 6], 2).unwrap(), 3),
        Err(Error::InvalidWindow)
    ));
    assert!(matches!(
        RamRing::new([0.0f32; 3], 2),
        Err(Error::InvalidWindow)
    ));
    assert!(matches!(
        Window::new([CompF32::ZERO; 3], RamRing::new([0.0f32; 6], 2).unwrap(), 2),
        Err(Error::LengthMismatch { .. })
    ));

    let store = Flaky {
        inner: RamRing::new(vec![0.0; 8], 2).unwrap(),
        fail_write: false,
        fail_read: false,
    };
    let mut w = Window::new([CompF32::ZERO; 2], store, 3).unwrap();
    let mut out = [0.0f32; 2];
    assert_eq!(w.read_into(&mut out), Err(Error::Empty));
    for v in [1.0f32, 2.0, 3.0] {
        w.update(&[v, -v]).unwrap();
    }
    let sum = format!("{:?}", w.sum());
    assert_eq!(
        w.update(&[1.0, f32::NAN]),
        Err(Error::NonFinite { index: 1 })
    );
    assert_eq!(
        w.update(&[1.0]),
        Err(Error::LengthMismatch {
            expected: 2,
            found: 1
        })
    );
    assert_eq!(format!("{:?}", w.sum()), sum);
    // a failed write changes nothing
    let count = w.count();
    w_store(&mut w).fail_write = true;
    assert_eq!(w.update(&[9.0, 9.0]), Err(Error::Storage));
    assert_eq!((format!("{:?}", w.sum()), w.count()), (sum.clone(), count));
    w_store(&mut w).fail_write = false;
    // a failed read marks the window stale; once the store reads again it
    // re-sums to the window as it was before the failed update (1, 2, 3)
    w_store(&mut w).fail_read = true;
    assert_eq!(w.update(&[4.0, -4.0]), Err(Error::Storage));
    assert_eq!(w.read_into(&mut out), Err(Error::Storage));
    w_store(&mut w).fail_read = false;
    w.read_into(&mut out).unwrap();
    assert_eq!(out, [2.0, -2.0]);
    assert_eq!(format!("{:?}", w.sum()), sum);
    // and carries on
    w.update(&[4.0, -4.0]).unwrap();
    w.read_into(&mut out).unwrap();
    assert_eq!(out, [3.0, -3.0]);
}

/// Test access to the store inside a window.
fn w_store(w: &mut Window<CompF32, [CompF32; 2], Flaky>) -> &mut Flaky {
    w.store_mut()
}

/// A store that fails its reads after a budget, or every write.
struct Budget {
    inner: RamRing<f32, Vec<f32>>,
    reads_left: Option<u32>,
    fail_write: bool,
}

impl WindowStore<f32> for Budget {
    fn slots(&self) -> usize {
        self.inner.slots()
    }
    fn snapshot_len(&self) -> usize {
        self.inner.snapshot_len()
    }
    fn write(&mut self, slot: usize, offset: usize, data: &[f32]) -> Result<(), Error> {
        if self.fail_write {
            return Err(Error::Storage);
        }
        self.inner.write(slot, offset, data)
    }
    fn read(&mut self, slot: usize, offset: usize, out: &mut [f32]) -> Result<(), Error> {
        match &mut self.reads_left {
            Some(0) => return Err(Error::Storage),
            Some(n) => *n -= 1,
            None => {}
        }
        self.inner.read(slot, offset, out)
    }
}

/// In a chunked step, a store that fails to write refuses the chunk and
/// keeps the step open; one that fails to read ends the step, and the
/// window re-sums from its store at the next use, back to before the step.
#[test]
fn a_store_failure_in_a_chunked_step() {
    use polyak::chunk::Chunked;
    let store = Budget {
        inner: RamRing::new(vec![0.0; 16], 4).unwrap(),
        reads_left: None,
        fail_write: false,
    };
    let mut w = Window::new([CompF32::ZERO; 4], store, 3).unwrap();
    for v in [1.0f32, 2.0, 3.0] {
        w.update(&[-v, -v, v, v]).unwrap();
    }
    let mut before = [0.0f32; 4];
    w.read_into(&mut before).unwrap();
    // one read left: the first chunk takes it, the second fails
    w.store_mut().reads_left = Some(1);
    let mut c: Chunked<_, 1> = Chunked::new(w, 2).unwrap();
    c.begin(()).unwrap();
    c.update_chunk(0, &[9.0, 9.0][..]).unwrap();
    assert_eq!(c.update_chunk(2, &[9.0, 9.0][..]), Err(Error::Storage));
    assert!(!c.in_step(), "a failed read ends the step");
    let mut w = c.into_inner();
    w.store_mut().reads_left = None;
    let mut after = [0.0f32; 4];
    w.read_into(&mut after).unwrap();
    assert_eq!(after, before, "re-summed to the state before the step");
    assert_eq!(w.count(), 3);
    // a failed write: the chunk is refused, the step stays open
    w.store_mut().fail_write = true;
    let mut c: Chunked<_, 1> = Chunked::new(w, 2).unwrap();
    c.begin(()).unwrap();
    assert_eq!(c.update_chunk(0, &[9.0, 9.0][..]), Err(Error::Storage));
    assert!(c.in_step());
    assert_eq!(c.abort(), Ok(()));
}
