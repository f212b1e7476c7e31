//! Fuzz targets, as plain functions of a byte string.
//!
//! `host/fuzz/` wraps them for `cargo fuzz` (libFuzzer, nightly); the test
//! suite replays the committed seed corpus through them on stable, and
//! `cargo xtask test` runs each for a short smoke run. A target panics
//! when it finds a bug; any other outcome is a pass.
//!
//! - [`decode`]: the bytes are a saved state for several averager types.
//!   Decoding must either fail with the averager bit-for-bit unchanged, or
//!   succeed into a state that re-encodes to the same bytes and reads back
//!   finite values.
//! - [`ops`]: the bytes drive a sequence of operations (update, read,
//!   reset, bad input, save and restore) on f32 and Q15 averagers, checked
//!   after every step against f64 reference models and the documented
//!   bounds (a model-based test).

use polyak::aggregate::{
    DualAveraging, Fisher, FisherAcc, Participation, TaskArithmetic, Ties, TiesAcc, WeightedAverage,
};
use polyak::codec::Persist;
use polyak::layout::{Layout, Policy};
use polyak::moments::{MomentF32, MomentQ15, Moments};
use polyak::naswa::{Naswa, NormScope};
use polyak::posthoc::PostHoc;
use polyak::segment::Segmented;
use polyak::window::{RamRing, Window};
use polyak::{CompF32, Ema, EmaBank, I1F31, I49F15, Q15, Q31, Swa};

use crate::bounds;
use crate::metrics::LSB15;
use crate::reference;

fn state<T: core::fmt::Debug>(x: &T) -> String {
    format!("{x:?}")
}

/// Decodes `data` into `target`; checks the outcome is all or nothing.
fn decode_into<P: Persist + core::fmt::Debug>(target: &mut P, data: &[u8]) -> bool {
    let before = state(target);
    match target.decode(data) {
        Ok(()) => {
            let mut again = vec![0u8; target.encoded_len()];
            let n = target.encode(&mut again).expect("re-encode");
            assert_eq!(
                &again[..n],
                data,
                "an accepted record must re-encode to itself"
            );
            true
        }
        Err(_) => {
            assert_eq!(state(target), before, "a refused record changed the state");
            false
        }
    }
}

/// The decoder target: the bytes as they are, and again with the trailing
/// CRC recomputed, so that mutations also reach the field checks behind
/// the checksum.
pub fn decode(data: &[u8]) {
    decode_once(data);
    if data.len() >= 8 {
        let mut fixed = data.to_vec();
        let n = fixed.len();
        let c = polyak::codec::crc32(&fixed[..n - 4]);
        fixed[n - 4..].copy_from_slice(&c.to_le_bytes());
        decode_once(&fixed);
    }
}

fn decode_once(data: &[u8]) {
    let mut e = Ema::new([CompF32::ZERO; 4], 0.99).expect("valid");
    if decode_into(&mut e, data) {
        let mut out = [0.0f32; 4];
        if e.read_into(&mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
        // an accepted state keeps working
        let _ = e.update(&[0.5; 4]);
    }
    let mut q = Ema::new([I1F31::ZERO; 4], 0.9).expect("valid");
    if decode_into(&mut q, data) {
        let _ = q.update(&[Q15::from_bits(100); 4]);
    }
    let mut s = Swa::new([I49F15::ZERO; 4]);
    if decode_into(&mut s, data) {
        let mut out = [Q15::ZERO; 4];
        if s.read_into(&mut out).is_ok() {
            let _ = s.update(&out);
        }
    }
    let mut b = EmaBank::new([[CompF32::ZERO; 2]; 4], [0.9, 0.999]).expect("valid");
    if decode_into(&mut b, data) {
        let _ = b.update(&[1.0; 4]);
    }
    let mut w = window();
    if decode_into(&mut w, data) {
        let mut out = [Q15::ZERO; 4];
        for v in [Q15::MAX, Q15::MIN, Q15::MAX, Q15::MIN] {
            w.update(&[v; 4])
                .expect("an accepted window keeps updating");
            w.read_into(&mut out).expect("and reading");
        }
    }
    let mut m = Moments::new([MomentF32::ZERO; 4]);
    if decode_into(&mut m, data) {
        let (mut mean, mut var) = ([0.0f32; 4], [0.0f32; 4]);
        if m.update(&[1.0; 4]).is_ok() && m.write_into(&mut mean, &mut var).is_ok() {
            assert!(mean.iter().chain(&var).all(|v| v.is_finite()));
            assert!(var.iter().all(|&v| v >= 0.0));
        }
    }
    let mut na = naswa();
    if decode_into(&mut na, data) {
        let _ = na.update(&[0.5, -0.5, 1.0, 2.0]);
        let mut out = [0.0f32; 4];
        if na.read_into(&mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
    let mut sg = segmented();
    if decode_into(&mut sg, data) {
        let _ = sg.update((), &[1.0, 2.0, 3.0, 1.0]);
        let mut out = [0.0f32; 4];
        if sg.inner().read_into(&mut out).is_ok() && sg.fill_into(&mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
    let mut ph = posthoc();
    if decode_into(&mut ph, data) {
        let mut sink = crate::posthoc::MemorySink::default();
        let _ = ph.update(&[Q15::from_bits(-300); 4], &mut sink);
    }
    let mut wa = WeightedAverage::new([CompF32::ZERO; 4]);
    if decode_into(&mut wa, data) {
        let _ = wa.fold(&[1.0, -1.0, 0.5, 2.0], 3.0);
        let mut out = [0.0f32; 4];
        if wa.finish(&mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
    let mut wq = WeightedAverage::new([I49F15::ZERO; 4]);
    if decode_into(&mut wq, data) {
        let _ = wq.fold(&[Q15::MIN; 4], 1000);
        let _ = wq.finish(&mut [Q15::ZERO; 4]);
    }
    let mut ta = TaskArithmetic::new([CompF32::ZERO; 4]);
    if decode_into(&mut ta, data) {
        let _ = ta.fold(&[1.0; 4], &[0.0; 4], -2.0);
        let mut out = [0.0f32; 4];
        if ta.finish(&[0.0; 4], 1.0, &mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
    let mut da = DualAveraging::new([I49F15::ZERO; 4]);
    if decode_into(&mut da, data) {
        let _ = da.add(&[Q15::MAX; 4]);
        let _ = da.readout(polyak::I16F16::ONE, &mut [Q15::ZERO; 4]);
    }
    let mut fi = Fisher::new([FisherAcc::ZERO; 4], 1e-3).expect("valid");
    if decode_into(&mut fi, data) {
        let _ = fi.fold(&[1.0; 4], &[2.0; 4]);
        let mut out = [0.0f32; 4];
        if fi.finish(&mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
    let mut ti = Ties::new([TiesAcc::<CompF32>::default(); 4]);
    if decode_into(&mut ti, data) {
        let _ = ti.fold(&[1.0, -1.0, 0.5, 2.0], &[0.0; 4], 0.5);
        let mut out = [0.0f32; 4];
        if ti.finish(&[0.0; 4], 1.0, &mut out).is_ok() {
            assert!(out.iter().all(|v| v.is_finite()));
        }
    }
    let mut pa: Participation<4> = Participation::new(8).expect("valid");
    if decode_into(&mut pa, data) {
        let _ = pa.record_round(&[0, 3]);
        for c in 0..4 {
            let w = pa.weight(c).expect("a client");
            assert!(w.is_finite() && w >= 1.0);
        }
    }
    let mut mq = Moments::new([MomentQ15::ZERO; 4]);
    if decode_into(&mut mq, data) {
        let mut var = [Q31::ZERO; 4];
        match mq.update(&[Q15::MIN; 4]) {
            Ok(()) | Err(polyak::Error::CountOverflow) => {}
            Err(e) => panic!("an accepted state keeps updating: {e:?}"),
        }
        let _ = mq.variance_into(&mut var, 1);
        assert!(var.iter().all(|v| *v >= Q31::ZERO));
    }
}

/// The NASWA average the decoder target restores into: 4 values in two
/// segments.
fn naswa() -> Naswa<CompF32, [CompF32; 4], 2> {
    let mut layout = Layout::single("a", 2).expect("valid");
    layout.push("b", 2).expect("valid");
    Naswa::new([CompF32::ZERO; 4], layout, 0.25, NormScope::PerSegment).expect("valid")
}

/// The segmented EMA the decoder target restores into: two averaged
/// weights, a copied statistic and a summed counter.
fn segmented() -> Segmented<Ema<CompF32, [CompF32; 4]>, [f32; 2], 3> {
    let mut layout = Layout::new();
    layout.push("w", 2).expect("valid");
    layout
        .push_with("stat", 1, Policy::CopyLatest)
        .expect("valid");
    layout.push_with("count", 1, Policy::Sum).expect("valid");
    Segmented::new(
        Ema::new([CompF32::ZERO; 4], 0.9).expect("valid"),
        layout,
        [0.0; 2],
    )
    .expect("valid")
}

/// The post-hoc recorder the decoder target restores into.
fn posthoc() -> PostHoc<I1F31, [[I1F31; 2]; 4], 2> {
    PostHoc::new([[I1F31::ZERO; 2]; 4], [0.05, 0.1], 3).expect("valid")
}

/// The window the decoder target restores into: 4 Q15 values, k = 3.
fn window() -> Window<I49F15, [I49F15; 4], RamRing<Q15, [Q15; 16]>> {
    let ring = RamRing::new([Q15::ZERO; 16], 4).expect("valid");
    Window::new([I49F15::ZERO; 4], ring, 3).expect("valid")
}

/// Reads the op stream.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_le_bytes([self.u8()?, self.u8()?]))
    }
    fn f32(&mut self) -> Option<f32> {
        // values in [-4, 4) on a 2^-13 grid, so bounds relative to M stay
        // meaningful; specials come through the bad-input op
        Some(f32::from(self.i16()?) / 8192.0)
    }
}

const N: usize = 4;

/// The model-based target.
pub fn ops(data: &[u8]) {
    let mut bytes = Bytes(data);
    let Some(b0) = bytes.u8() else { return };
    // β from 0.5 to about 0.999
    let beta = 1.0 - 0.5 / f32::from(b0 / 4 + 1).powf(1.25);
    let mut ema = Ema::new([CompF32::ZERO; N], beta).expect("valid");
    let mut q15 = Ema::new([I1F31::ZERO; N], beta).expect("valid");
    let mut swa = Swa::new([CompF32::ZERO; N]);
    let alpha = f64::from(ema.alpha());
    let qalpha = q15.alpha().to_num::<f64>();
    let mut r = reference::Ema::new(N, alpha);
    let mut rq = reference::Ema::new(N, qalpha);
    let mut rs = reference::Mean::new(N);

    while let Some(op) = bytes.u8() {
        match op % 6 {
            // update with values from the stream
            0 | 1 => {
                let mut x = [0.0f32; N];
                for v in &mut x {
                    let Some(f) = bytes.f32() else { return };
                    *v = f;
                }
                let q = x.map(|v| Q15::saturating_from_num(v / 4.0));
                ema.update(&x).expect("valid input");
                q15.update(&q).expect("valid input");
                swa.update(&x).expect("valid input");
                let xd = x.map(f64::from);
                r.update(&xd);
                rq.update(&q.map(|v| v.to_num::<f64>()));
                rs.update(&xd);
            }
            // read and check every bound
            2 => {
                if r.steps() == 0 {
                    let mut out = [0.0f32; N];
                    assert!(ema.read_into(&mut out).is_err());
                    continue;
                }
                let mut out = [0.0f32; N];
                ema.read_into(&mut out).expect("read");
                for (i, (o, w)) in out.iter().zip(r.value()).enumerate() {
                    let b = bounds::ema_comp(r.max_abs()[i], alpha) + r.own_error(i);
                    assert!((f64::from(*o) - w).abs() <= b, "EMA {o} vs {w}");
                }
                let mut oq = [Q15::ZERO; N];
                q15.read_into(&mut oq).expect("read");
                for (i, (o, w)) in oq.iter().zip(rq.value()).enumerate() {
                    let b = bounds::ema_q15(qalpha) + rq.own_error(i) / LSB15;
                    assert!(
                        (o.to_num::<f64>() - w).abs() / LSB15 <= b,
                        "Q15 EMA {o} vs {w}"
                    );
                }
                swa.read_into(&mut out).expect("read");
                let (mean, mean_abs) = (rs.value(), rs.mean_abs());
                for i in 0..N {
                    let b = bounds::swa_f32(mean[i], mean_abs[i], rs.count()) + rs.own_error(i);
                    assert!((f64::from(out[i]) - mean[i]).abs() <= b, "SWA");
                }
            }
            // bad input: refused, nothing changes
            3 => {
                let Some(at) = bytes.u8() else { return };
                let mut x = [0.25f32; N];
                x[usize::from(at) % N] =
                    [f32::NAN, f32::INFINITY, f32::MAX][usize::from(at / 4) % 3];
                let (e0, s0) = (state(&ema), state(&swa));
                assert!(ema.update(&x).is_err());
                assert!(swa.update(&x).is_err());
                assert_eq!(state(&ema), e0);
                assert_eq!(state(&swa), s0);
            }
            // save and restore into fresh averagers, then carry on
            4 => {
                let mut buf = vec![0u8; ema.encoded_len()];
                ema.encode(&mut buf).expect("encode");
                let mut fresh = Ema::new([CompF32::ZERO; N], beta).expect("valid");
                fresh.decode(&buf).expect("own record decodes");
                assert_eq!(state(&fresh), state(&ema));
                ema = fresh;
                let mut buf = vec![0u8; swa.encoded_len()];
                swa.encode(&mut buf).expect("encode");
                let mut fresh = Swa::new([CompF32::ZERO; N]);
                fresh.decode(&buf).expect("own record decodes");
                swa = fresh;
            }
            // reset
            _ => {
                ema.reset();
                q15.reset();
                swa.reset();
                r = reference::Ema::new(N, alpha);
                rq = reference::Ema::new(N, qalpha);
                rs = reference::Mean::new(N);
            }
        }
    }
}

/// A seed corpus: a few valid records and op sequences (what
/// `host/fuzz/corpus` holds).
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut e = Ema::new([CompF32::ZERO; 4], 0.99).expect("valid");
    let _ = e.update(&[1.0, -2.0, 0.5, 3.0]);
    let mut buf = vec![0u8; e.encoded_len()];
    let _ = e.encode(&mut buf);
    out.push(("decode", buf));
    let mut q = Ema::new([I1F31::ZERO; 4], 0.9).expect("valid");
    let _ = q.update(&[Q15::from_bits(1234); 4]);
    let mut buf = vec![0u8; q.encoded_len()];
    let _ = q.encode(&mut buf);
    out.push(("decode", buf));
    let mut s = Swa::new([I49F15::ZERO; 4]);
    let _ = s.update(&[Q15::MAX, Q15::MIN, Q15::ZERO, Q15::from_bits(7)]);
    let mut buf = vec![0u8; s.encoded_len()];
    let _ = s.encode(&mut buf);
    out.push(("decode", buf));
    let mut b = EmaBank::new([[CompF32::ZERO; 2]; 4], [0.9, 0.999]).expect("valid");
    let _ = b.update(&[1.0; 4]);
    let mut buf = vec![0u8; b.encoded_len()];
    let _ = b.encode(&mut buf);
    out.push(("decode", buf));
    // ops: β byte, then updates, reads, a bad input, a save/restore, a reset
    let mut ops = vec![40u8];
    for k in 0..6u8 {
        ops.push(0);
        for v in 0..4u8 {
            ops.extend_from_slice(&(i16::from(k) * 1000 - i16::from(v) * 300).to_le_bytes());
        }
        ops.push(2);
    }
    ops.extend_from_slice(&[3, 5, 4, 2, 5, 0, 1, 0, 2, 0, 3, 0, 4, 0, 2]);
    out.push(("ops", ops));
    // a full window that has slid, and moments in f32 and Q15
    let mut w = window();
    for k in 0..5i16 {
        let _ = w.update(&[Q15::from_bits(k * 3000 - 7000); 4]);
    }
    let mut buf = vec![0u8; w.encoded_len()];
    let _ = w.encode(&mut buf);
    out.push(("decode", buf));
    let mut m = Moments::new([MomentF32::ZERO; 4]);
    let _ = m.update(&[1000.5, -2.0, 0.25, 3.0]);
    let _ = m.update(&[1000.25, 2.0, 0.5, -3.0]);
    let mut buf = vec![0u8; m.encoded_len()];
    let _ = m.encode(&mut buf);
    out.push(("decode", buf));
    let mut mq = Moments::new([MomentQ15::ZERO; 4]);
    let _ = mq.update(&[Q15::MAX, Q15::MIN, Q15::ZERO, Q15::from_bits(7)]);
    let mut buf = vec![0u8; mq.encoded_len()];
    let _ = mq.encode(&mut buf);
    out.push(("decode", buf));
    // NASWA with a rejection, and a post-hoc recorder after a snapshot
    let mut na = naswa();
    let _ = na.update(&[1.0, 1.0, 2.0, 2.0]);
    let _ = na.update(&[5.0, 5.0, 2.0, 2.0]);
    let mut buf = vec![0u8; na.encoded_len()];
    let _ = na.encode(&mut buf);
    out.push(("decode", buf));
    let mut ph = posthoc();
    let mut sink = crate::posthoc::MemorySink::default();
    for k in 0..4i16 {
        let _ = ph.update(&[Q15::from_bits(k * 1000); 4], &mut sink);
    }
    let mut buf = vec![0u8; ph.encoded_len()];
    let _ = ph.encode(&mut buf);
    out.push(("decode", buf));
    // aggregators mid-merge
    let mut wa = WeightedAverage::new([CompF32::ZERO; 4]);
    let _ = wa.fold(&[1.0, -1.0, 0.5, 2.0], 3.0);
    let mut buf = vec![0u8; wa.encoded_len()];
    let _ = wa.encode(&mut buf);
    out.push(("decode", buf));
    let mut fi = Fisher::new([FisherAcc::ZERO; 4], 1e-3).expect("valid");
    let _ = fi.fold(&[1.0, -1.0, 0.5, 2.0], &[1.0, 2.0, 0.0, 4.0]);
    let mut buf = vec![0u8; fi.encoded_len()];
    let _ = fi.encode(&mut buf);
    out.push(("decode", buf));
    // a segmented EMA after three steps
    let mut sg = segmented();
    for k in 0..3 {
        let _ = sg.update((), &[k as f32, -1.0, 0.5 * k as f32, 1.0]);
    }
    let mut buf = vec![0u8; sg.encoded_len()];
    let _ = sg.encode(&mut buf);
    out.push(("decode", buf));
    out
}
