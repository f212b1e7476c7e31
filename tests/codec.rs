//! The state codec: every state type round-trips bit for bit (and keeps
//! computing the same bits afterwards), every malformed record gets its
//! typed error with the averager unchanged, and no input panics.

use polyak::codec::{Persist, crc32};
use polyak::ema::Rounding;
use polyak::layout::Layout;
use polyak::moments::{Moment, MomentF32, MomentQ15, MomentQ31, Moments};
use polyak::naswa::{Naswa, NormScope};
use polyak::posthoc::PostHoc;
use polyak::window::{RamRing, Window};
use polyak::{
    CompF32, Ema, EmaBank, EmaShadow, Error, I1F15, I1F31, I2F62, I33F31, I49F15, Q15, Q15Ef, Q31,
    Schedule, Swa, SwaAccumulator,
};
use polyak_host::posthoc::MemorySink;
use polyak_host::strategies::{config, f32_value, q15_value, q31_value};
use proptest::prelude::*;

/// The whole state, private fields included, bit-exactly (`Debug` prints
/// every f32 so that it round-trips).
fn state<T: core::fmt::Debug>(x: &T) -> String {
    format!("{x:?}")
}

/// Recomputes the trailing CRC of a record after a deliberate edit.
fn fix_crc(rec: &mut [u8]) {
    let n = rec.len();
    let c = crc32(&rec[..n - 4]);
    rec[n - 4..].copy_from_slice(&c.to_le_bytes());
}

fn encode<P: Persist>(p: &P) -> Vec<u8> {
    let mut buf = vec![0u8; p.encoded_len()];
    assert_eq!(p.encode(&mut buf).unwrap(), buf.len());
    buf
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

fn schedule() -> impl Strategy<Value = Schedule> {
    prop_oneof![
        (0.0f32..0.9999).prop_map(Schedule::constant),
        (0.0f32..20.0).prop_map(Schedule::power),
        (0.1f32..4.0, 0.2f32..1.0).prop_map(|(g, p)| Schedule::warmup(g, p, 0.0, 0.999)),
        (1u8..12).prop_map(Schedule::shift),
    ]
    .prop_flat_map(|s| (0u32..4, 1u32..3).prop_map(move |(a, e)| s.after(a).every(e)))
}

/// Builds two EMAs with the same configuration, runs the first, saves it,
/// restores into the second, and checks the states are identical and stay
/// identical under further updates.
fn round_trip<A: EmaShadow>(
    s: Schedule,
    debiased: bool,
    rounding: Rounding,
    xs: &[Vec<A::Param>],
) -> Result<(), TestCaseError> {
    let n = xs[0].len();
    let make = || {
        let e = if debiased {
            Ema::with_schedule_debiased(vec![A::ZERO; n], s)
        } else {
            Ema::with_schedule(vec![A::ZERO; n], s)
        };
        e.unwrap().with_rounding(rounding)
    };
    let Ok(mut a) = make() else { return Ok(()) }; // stochastic f32: unsupported
    let mut b = make().unwrap();
    let half = xs.len() / 2;
    for x in &xs[..half] {
        a.update(x).unwrap();
    }
    let rec = encode(&a);
    b.decode(&rec).unwrap();
    prop_assert_eq!(state(&a), state(&b));
    for x in &xs[half..] {
        a.update(x).unwrap();
        b.update(x).unwrap();
    }
    prop_assert_eq!(state(&a), state(&b));
    Ok(())
}

fn rounding() -> impl Strategy<Value = Rounding> {
    prop_oneof![
        Just(Rounding::NearestEven),
        any::<u32>().prop_map(|seed| Rounding::Stochastic { seed })
    ]
}

fn f32_steps() -> impl Strategy<Value = Vec<Vec<f32>>> {
    (0usize..12, 1usize..40)
        .prop_flat_map(|(n, t)| prop::collection::vec(prop::collection::vec(f32_value(), n), t))
}

fn q15_steps() -> impl Strategy<Value = Vec<Vec<Q15>>> {
    (0usize..12, 1usize..40)
        .prop_flat_map(|(n, t)| prop::collection::vec(prop::collection::vec(q15_value(), n), t))
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn ema_states_round_trip(s in schedule(), debiased in any::<bool>(), r in rounding(), xf in f32_steps(), xq in q15_steps()) {
        round_trip::<f32>(s, debiased, r, &xf)?;
        round_trip::<CompF32>(s, debiased, r, &xf)?;
        round_trip::<I1F31>(s, debiased, r, &xq)?;
        round_trip::<Q15Ef>(s, debiased, r, &xq)?;
        round_trip::<I1F15>(s, debiased, r, &xq)?;
        let x31: Vec<Vec<Q31>> = xq.iter().map(|v| v.iter().map(|q| Q31::from_bits(i32::from(q.to_bits()) << 16)).collect()).collect();
        round_trip::<I2F62>(s, debiased, r, &x31)?;
    }

    #[test]
    fn swa_states_round_trip(xf in f32_steps(), xq in q15_steps(), x31 in (0usize..8, 1usize..30).prop_flat_map(|(n, t)| prop::collection::vec(prop::collection::vec(q31_value(), n), t))) {
        swa_round_trip::<CompF32>(&xf)?;
        swa_round_trip::<I49F15>(&xq)?;
        swa_round_trip::<I33F31>(&x31)?;
    }

    #[test]
    fn bank_states_round_trip(s in [schedule(), schedule(), schedule()], debiased in any::<bool>(), xq in q15_steps(), xf in f32_steps()) {
        let n = xq[0].len();
        let make = || if debiased { EmaBank::with_schedules_debiased(vec![[I1F31::ZERO; 3]; n], s) } else { EmaBank::with_schedules(vec![[I1F31::ZERO; 3]; n], s) }.unwrap();
        let (mut a, mut b) = (make(), make());
        for x in &xq { a.update(x).unwrap(); }
        b.decode(&encode(&a)).unwrap();
        prop_assert_eq!(state(&a), state(&b));
        let n = xf[0].len();
        let mut a = EmaBank::with_schedules(vec![[CompF32::ZERO; 3]; n], s).unwrap();
        let mut b = EmaBank::with_schedules(vec![[CompF32::ZERO; 3]; n], s).unwrap();
        for x in &xf { a.update(x).unwrap(); }
        b.decode(&encode(&a)).unwrap();
        prop_assert_eq!(state(&a), state(&b));
        for x in &xf { a.update(x).unwrap(); b.update(x).unwrap(); }
        prop_assert_eq!(state(&a), state(&b));
    }

    /// Arbitrary bytes: a typed error, never a panic, never a change.
    #[test]
    fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut e = Ema::new(vec![CompF32::ZERO; 4], 0.9).unwrap();
        e.update(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        let before = state(&e);
        prop_assert!(e.decode(&bytes).is_err());
        prop_assert_eq!(state(&e), before);
    }

    /// Valid records with bytes changed after the header and the CRC
    /// recomputed: the field checks catch what the checksum no longer does;
    /// whatever is accepted is a state the averager could have reached.
    #[test]
    fn mutated_records_decode_or_are_refused_whole(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        xf in f32_steps(),
    ) {
        let n = xf[0].len();
        let mut a = Ema::new(vec![CompF32::ZERO; n], 0.99).unwrap();
        for x in &xf { a.update(x).unwrap(); }
        let mut rec = encode(&a);
        let body = rec.len() - 4;
        for (i, v) in &edits {
            let at = 24 + i.index(body - 24);
            rec[at] = *v;
        }
        fix_crc(&mut rec);
        let mut b = Ema::new(vec![CompF32::ZERO; n], 0.99).unwrap();
        let before = state(&b);
        match b.decode(&rec) {
            Ok(()) => {
                // accepted: finite, renormalised, reads back finite
                prop_assert!(b.shadow().iter().all(|c| c.hi().is_finite() && c.lo().is_finite()));
                let mut out = vec![0.0f32; n];
                if b.read_into(&mut out).is_ok() {
                    prop_assert!(out.iter().all(|v| v.is_finite()));
                }
            }
            Err(_) => prop_assert_eq!(state(&b), before),
        }
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn window_states_round_trip(k in 1usize..6, xf in f32_steps(), xq in q15_steps()) {
        if xf[0].is_empty() || xq[0].is_empty() {
            return Ok(()); // a window of empty snapshots cannot be built
        }
        window_round_trip::<CompF32>(k, &xf)?;
        window_round_trip::<I49F15>(k, &xq)?;
        let x31: Vec<Vec<Q31>> = xq.iter().map(|v| v.iter().map(|q| Q31::from_bits(i32::from(q.to_bits()) << 16 | 0x1234)).collect()).collect();
        window_round_trip::<I33F31>(k, &x31)?;
    }

    #[test]
    fn moments_states_round_trip(xf in f32_steps(), xq in q15_steps()) {
        let lim = polyak::moments::MOMENT_F32_LIMIT;
        let xf: Vec<Vec<f32>> = xf.iter().map(|v| v.iter().map(|x| x.clamp(-lim, lim)).collect()).collect();
        moments_round_trip::<MomentF32>(&xf)?;
        moments_round_trip::<MomentQ15>(&xq)?;
        let x31: Vec<Vec<Q31>> = xq.iter().map(|v| v.iter().map(|q| Q31::from_bits(i32::from(q.to_bits()) << 16 | 0x1234)).collect()).collect();
        moments_round_trip::<MomentQ31>(&x31)?;
    }

    /// Window and moments records with bytes changed after the header (CRC
    /// recomputed): refused whole, or accepted as a state that keeps
    /// updating and reading without overflow.
    #[test]
    fn mutated_window_and_moments_records_decode_or_are_refused_whole(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        xq in q15_steps(),
    ) {
        let n = xq[0].len();
        if n == 0 {
            return Ok(()); // nothing to store
        }
        let new_window = || Window::new(vec![I49F15::ZERO; n], RamRing::new(vec![Q15::ZERO; 4 * n], n).unwrap(), 3).unwrap();
        let mut a = new_window();
        let mut m = Moments::new(vec![MomentQ15::ZERO; n]);
        for x in &xq { a.update(x).unwrap(); m.update(x).unwrap(); }
        let mutate = |mut rec: Vec<u8>| {
            let body = rec.len() - 4;
            for (i, v) in &edits {
                let at = 24 + i.index(body - 24);
                rec[at] = *v;
            }
            fix_crc(&mut rec);
            rec
        };
        let mut b = new_window();
        let before = state(&b);
        match b.decode(&mutate(encode(&a))) {
            Ok(()) => {
                let mut out = vec![Q15::ZERO; n];
                for x in &xq {
                    b.update(x).unwrap();
                    b.read_into(&mut out).unwrap();
                }
            }
            Err(_) => prop_assert_eq!(state(&b), before),
        }
        let mut c = Moments::new(vec![MomentQ15::ZERO; n]);
        let before = state(&c);
        match c.decode(&mutate(encode(&m))) {
            Ok(()) => {
                let mut var = vec![Q31::ZERO; n];
                for x in &xq {
                    c.update(x).unwrap();
                    c.variance_into(&mut var, 1).unwrap();
                }
            }
            Err(_) => prop_assert_eq!(state(&c), before),
        }
    }
}

/// A window restored from its record reads the same mean, re-encodes to
/// the same bytes, and keeps computing the same bits.
fn window_round_trip<A: SwaAccumulator>(k: usize, xs: &[Vec<A::Param>]) -> Result<(), TestCaseError>
where
    A::Param: polyak::codec::Element + PartialEq + core::fmt::Debug,
{
    let n = xs[0].len();
    let new = || {
        Window::new(
            vec![A::ZERO; n],
            RamRing::new(vec![A::PARAM_ZERO; (k + 2) * n], n).unwrap(),
            k,
        )
        .unwrap()
    };
    let (mut a, mut b) = (new(), new());
    // a ring of k + 2 slots also exercises a window not starting at slot 0
    for x in xs {
        a.update(x).unwrap();
    }
    let rec = encode(&a);
    b.decode(&rec).unwrap();
    prop_assert_eq!(&encode(&b), &rec);
    let (mut ma, mut mb) = (vec![A::PARAM_ZERO; n], vec![A::PARAM_ZERO; n]);
    for x in xs.iter().rev() {
        if n > 0 {
            a.read_into(&mut ma).unwrap();
            b.read_into(&mut mb).unwrap();
            prop_assert_eq!(&ma, &mb);
        }
        a.update(x).unwrap();
        b.update(x).unwrap();
        prop_assert_eq!(state(&a.sum()), state(&b.sum()));
    }
    // another k is another configuration
    if k > 1 {
        let mut c = Window::new(
            vec![A::ZERO; n],
            RamRing::new(vec![A::PARAM_ZERO; (k + 1) * n], n).unwrap(),
            k - 1,
        )
        .unwrap();
        let before = state(&c);
        prop_assert!(c.decode(&rec).is_err());
        prop_assert_eq!(state(&c), before);
    }
    Ok(())
}

fn moments_round_trip<A: Moment>(xs: &[Vec<A::Param>]) -> Result<(), TestCaseError> {
    let n = xs[0].len();
    let mut a = Moments::new(vec![A::ZERO; n]);
    let mut b = Moments::new(vec![A::ZERO; n]);
    for x in xs {
        a.update(x).unwrap();
    }
    b.decode(&encode(&a)).unwrap();
    prop_assert_eq!(state(&a), state(&b));
    for x in xs {
        a.update(x).unwrap();
        b.update(x).unwrap();
    }
    prop_assert_eq!(state(&a), state(&b));
    Ok(())
}

fn swa_round_trip<A: SwaAccumulator>(xs: &[Vec<A::Param>]) -> Result<(), TestCaseError> {
    let n = xs[0].len();
    let mut a = Swa::new(vec![A::ZERO; n]);
    let mut b = Swa::new(vec![A::ZERO; n]);
    for x in xs {
        a.update(x).unwrap();
    }
    b.decode(&encode(&a)).unwrap();
    prop_assert_eq!(state(&a), state(&b));
    for x in xs {
        a.update(x).unwrap();
        b.update(x).unwrap();
    }
    prop_assert_eq!(state(&a), state(&b));
    Ok(())
}

/// Checks `decode` fails with `want` and leaves the target unchanged.
fn refused<P: Persist + core::fmt::Debug>(target: &mut P, rec: &[u8], want: Error) {
    let before = state(target);
    assert_eq!(target.decode(rec), Err(want));
    assert_eq!(state(target), before, "state changed on {want:?}");
}

#[test]
fn every_error_path_leaves_state_unchanged() {
    let mut src = Ema::new(vec![CompF32::ZERO; 3], 0.9).unwrap();
    src.update(&[1.0, 2.0, 3.0]).unwrap();
    src.update(&[2.0, 2.0, 2.0]).unwrap();
    let rec = encode(&src);
    let mut dst = Ema::new(vec![CompF32::ZERO; 3], 0.9).unwrap();
    dst.update(&[9.0, 9.0, 9.0]).unwrap();

    // every truncation, and a trailing byte
    for cut in 0..rec.len() {
        refused(&mut dst, &rec[..cut], Error::Truncated);
    }
    let mut long = rec.clone();
    long.push(0);
    refused(
        &mut dst,
        &long,
        Error::LengthMismatch {
            expected: rec.len(),
            found: rec.len() + 1,
        },
    );

    let edit = |at: usize, v: u8, crc: bool| {
        let mut r = rec.clone();
        r[at] = v;
        if crc {
            fix_crc(&mut r);
        }
        r
    };
    refused(&mut dst, &edit(0, b'X', true), Error::BadMagic);
    refused(
        &mut dst,
        &edit(4, 2, true),
        Error::UnsupportedVersion { found: 2 },
    );
    refused(&mut dst, &edit(6, 2, true), Error::FormatMismatch); // kind: Swa
    refused(&mut dst, &edit(7, 1, true), Error::FormatMismatch); // format: plain f32
    refused(&mut dst, &edit(12, 7, true), Error::LayoutMismatch);
    refused(
        &mut dst,
        &edit(30, rec[30] ^ 0x10, false),
        Error::BadChecksum,
    );
    let last = rec.len() - 1;
    refused(
        &mut dst,
        &edit(last, rec[last] ^ 1, false),
        Error::BadChecksum,
    );

    // another parameter count
    let mut other = Ema::new(vec![CompF32::ZERO; 4], 0.9).unwrap();
    let want = Error::LengthMismatch {
        expected: 4,
        found: 3,
    };
    refused(&mut other, &rec, want);
    // another configuration: β, start, rounding
    refused(
        &mut Ema::new(vec![CompF32::ZERO; 3], 0.95).unwrap(),
        &rec,
        Error::ConfigMismatch,
    );
    refused(
        &mut Ema::new_debiased(vec![CompF32::ZERO; 3], 0.9).unwrap(),
        &rec,
        Error::ConfigMismatch,
    );
    let s = Ema::new(vec![I1F31::ZERO; 3], 0.9).unwrap();
    let srec = encode(&s);
    let mut sr = Ema::new(vec![I1F31::ZERO; 3], 0.9)
        .unwrap()
        .with_rounding(Rounding::Stochastic { seed: 1 })
        .unwrap();
    refused(&mut sr, &srec, Error::ConfigMismatch);
    // another kind
    refused(
        &mut Swa::new(vec![CompF32::ZERO; 3]),
        &rec,
        Error::FormatMismatch,
    );

    // invalid values behind a valid checksum: the state fields start after
    // the 24-byte header and the 37-byte configuration
    let state_at = 24 + 37;
    // t > calls (t is at +16, calls at +8)
    let mut r = rec.clone();
    r[state_at + 16..state_at + 24].copy_from_slice(&100u64.to_le_bytes());
    fix_crc(&mut r);
    refused(&mut dst, &r, Error::InvalidState);
    // filled flag not 0/1
    let mut r = rec.clone();
    r[state_at + 24] = 7;
    fix_crc(&mut r);
    refused(&mut dst, &r, Error::InvalidState);
    // a NaN in the shadow
    let elems = rec.len() - 4 - 3 * 8;
    let mut r = rec.clone();
    r[elems..elems + 4].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
    fix_crc(&mut r);
    refused(&mut dst, &r, Error::InvalidState);
    // a pair that is not renormalised (lo as large as hi)
    let mut r = rec.clone();
    r[elems + 4..elems + 8].copy_from_slice(&1.0f32.to_bits().to_le_bytes());
    fix_crc(&mut r);
    refused(&mut dst, &r, Error::InvalidState);

    // an exact SWA sum larger than its count allows
    let mut swa = Swa::new(vec![I49F15::ZERO; 2]);
    swa.update(&[Q15::MAX, Q15::MIN]).unwrap();
    let mut r = encode(&swa);
    let at = r.len() - 4 - 16;
    r[at..at + 8].copy_from_slice(&(40_000i64).to_le_bytes());
    fix_crc(&mut r);
    refused(
        &mut Swa::new(vec![I49F15::ZERO; 2]),
        &r,
        Error::InvalidState,
    );
    // a count beyond the exact range
    let mut f = Swa::new(vec![CompF32::ZERO; 1]);
    f.update(&[1.0]).unwrap();
    let mut r = encode(&f);
    r[25..29].copy_from_slice(&((1u32 << 24) + 1).to_le_bytes());
    fix_crc(&mut r);
    refused(
        &mut Swa::new(vec![CompF32::ZERO; 1]),
        &r,
        Error::InvalidState,
    );

    // encoding into a short buffer
    let mut small = vec![0u8; rec.len() - 1];
    assert_eq!(src.encode(&mut small), Err(Error::BufferTooSmall));
}

/// Sums no count of values could give are refused: a later update would
/// otherwise overflow them.
#[test]
fn impossible_moment_sums_are_refused() {
    let mut m = Moments::new(vec![MomentQ15::ZERO; 1]);
    m.update(&[Q15::from_bits(-32768)]).unwrap();
    let rec = encode(&m);
    let mut dst = Moments::new(vec![MomentQ15::ZERO; 1]);
    // header 24 bytes, count 8, then Σx (8) and Σx² (8)
    for (at, v) in [
        (32, (-32769i64).to_le_bytes()),
        (40, (1i64 << 30 | 1).to_le_bytes()),
    ] {
        let mut r = rec.clone();
        r[at..at + 8].copy_from_slice(&v);
        fix_crc(&mut r);
        refused(&mut dst, &r, Error::InvalidState);
    }
    let mut r = rec.clone();
    r[40..48].copy_from_slice(&(1i64 << 30).to_le_bytes());
    fix_crc(&mut r);
    dst.decode(&r).unwrap(); // the largest possible Σx² for one value
}

/// A window record whose counters contradict each other is refused.
#[test]
fn inconsistent_window_counters_are_refused() {
    let new = || {
        Window::new(
            vec![I49F15::ZERO; 1],
            RamRing::new(vec![Q15::ZERO; 4], 1).unwrap(),
            3,
        )
        .unwrap()
    };
    let mut w = new();
    w.update(&[Q15::from_num(0.5)]).unwrap();
    let rec = encode(&w);
    let mut dst = new();
    // header 24, k 4, count 4, slides 8, since_resum 8, stale 1
    let edits: [(usize, &[u8], Error); 5] = [
        (24, &[2, 0, 0, 0], Error::ConfigMismatch),
        (28, &[4, 0, 0, 0], Error::InvalidState),
        (32, &[1, 0, 0, 0, 0, 0, 0, 0], Error::InvalidState),
        (48, &[2], Error::InvalidState),
        (49, &[0, 0, 0, 0, 0, 0x40, 0, 0], Error::InvalidState),
    ];
    for (at, v, want) in edits {
        let mut r = rec.clone();
        r[at..at + v.len()].copy_from_slice(v);
        fix_crc(&mut r);
        refused(&mut dst, &r, want);
    }
}

/// Counters restored at their limits keep working: the slide count wraps
/// (it counts modulo 2⁶⁴) instead of overflowing.
#[test]
fn window_counters_at_their_limits_keep_working() {
    let new = || {
        Window::new(
            vec![I49F15::ZERO; 1],
            RamRing::new(vec![Q15::ZERO; 3], 1).unwrap(),
            2,
        )
        .unwrap()
    };
    let mut w = new();
    for v in [0.25, 0.5, 0.75] {
        w.update(&[Q15::from_num(v)]).unwrap();
    }
    let mut rec = encode(&w);
    // header 24, k 4, count 4, then slides and since_resum
    rec[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
    rec[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_crc(&mut rec);
    let mut dst = new();
    dst.decode(&rec).unwrap();
    dst.update(&[Q15::from_num(1.0 - 1.0 / 32768.0)]).unwrap();
    assert_eq!(dst.slides(), 0);
    let mut out = [Q15::ZERO];
    dst.read_into(&mut out).unwrap();
    // (24576 + 32767)/2 = 28671.5, a tie: to even
    assert_eq!(out[0], Q15::from_bits(28672));
}

proptest! {
    #![proptest_config(config(64))]

    /// NASWA and post-hoc recorders round-trip whole (the nested SWA or
    /// bank included) and keep computing the same bits.
    #[test]
    fn naswa_and_posthoc_states_round_trip(xf in f32_steps(), tau in 0.01f32..0.9) {
        let n = xf[0].len();
        if n == 0 {
            return Ok(()); // nothing to store
        }
        let new_naswa = || {
            let layout: Layout<2> = if n > 1 {
                let mut l = Layout::single("a", n / 2).unwrap();
                l.push("b", n - n / 2).unwrap();
                l
            } else {
                Layout::single("a", n).unwrap()
            };
            Naswa::new(vec![CompF32::ZERO; n], layout, tau, NormScope::PerSegment).unwrap()
        };
        let (mut a, mut b) = (new_naswa(), new_naswa());
        for x in &xf { a.update(x).unwrap(); }
        b.decode(&encode(&a)).unwrap();
        prop_assert_eq!(state(&a), state(&b));
        for x in &xf { prop_assert_eq!(a.update(x).unwrap(), b.update(x).unwrap()); }
        prop_assert_eq!(state(&a), state(&b));

        let new_posthoc = || PostHoc::new(vec![[CompF32::ZERO; 2]; n], [0.05, 0.1], 4).unwrap();
        let (mut p, mut q) = (new_posthoc(), new_posthoc());
        let mut sink = MemorySink::default();
        for x in &xf { p.update(x, &mut sink).unwrap(); }
        q.decode(&encode(&p)).unwrap();
        prop_assert_eq!(state(&p), state(&q));
        let (mut s1, mut s2) = (MemorySink::default(), MemorySink::default());
        for x in &xf {
            p.update(x, &mut s1).unwrap();
            q.update(x, &mut s2).unwrap();
        }
        prop_assert_eq!(state(&p), state(&q));
        prop_assert_eq!(format!("{:?}", s1.snapshots), format!("{:?}", s2.snapshots));
    }
}

/// Another threshold, scope, layout, interval or width is refused whole.
#[test]
fn naswa_and_posthoc_configurations_must_match() {
    let layout = |a: usize| {
        let mut l: Layout<2> = Layout::single("a", a).unwrap();
        l.push("b", 4 - a).unwrap();
        l
    };
    let mut src = Naswa::new(vec![CompF32::ZERO; 4], layout(2), 0.2, NormScope::Overall).unwrap();
    src.update(&[1.0, 2.0, 3.0, 4.0]).unwrap();
    src.update(&[9.0, 9.0, 9.0, 9.0]).unwrap(); // rejected
    let rec = encode(&src);
    let mut other = Naswa::new(vec![CompF32::ZERO; 4], layout(2), 0.3, NormScope::Overall).unwrap();
    refused(&mut other, &rec, Error::ConfigMismatch);
    let mut other = Naswa::new(
        vec![CompF32::ZERO; 4],
        layout(2),
        0.2,
        NormScope::PerSegment,
    )
    .unwrap();
    refused(&mut other, &rec, Error::ConfigMismatch);
    let mut other = Naswa::new(vec![CompF32::ZERO; 4], layout(1), 0.2, NormScope::Overall).unwrap();
    refused(&mut other, &rec, Error::LayoutMismatch);
    let mut same = Naswa::new(vec![CompF32::ZERO; 4], layout(2), 0.2, NormScope::Overall).unwrap();
    same.decode(&rec).unwrap();
    assert_eq!((same.swa().count(), same.rejected()), (1, 1));

    let mut sink = MemorySink::default();
    let mut p = PostHoc::new(vec![[CompF32::ZERO; 2]; 3], [0.05, 0.1], 4).unwrap();
    for _ in 0..5 {
        p.update(&[1.0, 2.0, 3.0], &mut sink).unwrap();
    }
    let rec = encode(&p);
    let mut other = PostHoc::new(vec![[CompF32::ZERO; 2]; 3], [0.05, 0.1], 5).unwrap();
    refused(&mut other, &rec, Error::ConfigMismatch);
    let mut other = PostHoc::new(vec![[CompF32::ZERO; 2]; 3], [0.05, 0.11], 4).unwrap();
    refused(&mut other, &rec, Error::ConfigMismatch);
    // a nested record that fails its own checksum fails the outer one first;
    // with the outer CRC fixed, the inner check still refuses it
    let mut bad = rec.clone();
    let at = rec.len() - 10; // inside the nested bank's body
    bad[at] ^= 0x40;
    fix_crc(&mut bad);
    let mut same = PostHoc::new(vec![[CompF32::ZERO; 2]; 3], [0.05, 0.1], 4).unwrap();
    refused(&mut same, &bad, Error::BadChecksum);
    same.decode(&rec).unwrap();
    assert_eq!(same.snapshots(), 1);
}

proptest! {
    #![proptest_config(config(64))]

    /// The aggregators' states round-trip and keep computing the same bits.
    #[test]
    fn aggregator_states_round_trip(xf in f32_steps(), xq in q15_steps(), ws in prop::collection::vec(0.0f32..4.0, 40)) {
        use polyak::aggregate::{DualAveraging, Fisher, FisherAcc, TaskArithmetic, WeightedAverage};
        let n = xf[0].len();
        let base = vec![0.5f32; n];
        let (mut a, mut b) = (WeightedAverage::new(vec![CompF32::ZERO; n]), WeightedAverage::new(vec![CompF32::ZERO; n]));
        let (mut t, mut u) = (TaskArithmetic::new(vec![CompF32::ZERO; n]), TaskArithmetic::new(vec![CompF32::ZERO; n]));
        let (mut d, mut e) = (DualAveraging::new(vec![CompF32::ZERO; n]), DualAveraging::new(vec![CompF32::ZERO; n]));
        let (mut f, mut g) = (Fisher::new(vec![FisherAcc::ZERO; n], 1e-3).unwrap(), Fisher::new(vec![FisherAcc::ZERO; n], 1e-3).unwrap());
        // moderate values: the guards of the products stay far off
        let xs: Vec<Vec<f32>> = xf.iter().map(|v| v.iter().map(|x| x.clamp(-1e6, 1e6)).collect()).collect();
        for (x, &w) in xs.iter().zip(&ws) {
            a.fold(x, w).unwrap();
            t.fold(x, &base, w - 2.0).unwrap();
            d.add(x).unwrap();
            f.fold(x, &vec![w; n]).unwrap();
        }
        b.decode(&encode(&a)).unwrap();
        u.decode(&encode(&t)).unwrap();
        e.decode(&encode(&d)).unwrap();
        g.decode(&encode(&f)).unwrap();
        prop_assert_eq!(state(&a), state(&b));
        prop_assert_eq!(state(&t), state(&u));
        prop_assert_eq!(state(&d), state(&e));
        prop_assert_eq!(state(&f), state(&g));
        for (x, &w) in xs.iter().zip(&ws) {
            a.fold(x, w).unwrap();
            b.fold(x, w).unwrap();
            f.fold(x, &vec![w; n]).unwrap();
            g.fold(x, &vec![w; n]).unwrap();
        }
        prop_assert_eq!(state(&a), state(&b));
        prop_assert_eq!(state(&f), state(&g));
        // fixed point
        let m = xq[0].len();
        let (mut p, mut q) = (WeightedAverage::new(vec![I49F15::ZERO; m]), WeightedAverage::new(vec![I49F15::ZERO; m]));
        let (mut r, mut s) = (TaskArithmetic::<i64, _>::new(vec![0i64; m]), TaskArithmetic::<i64, _>::new(vec![0i64; m]));
        for (k, x) in xq.iter().enumerate() {
            p.fold(x, k as u32 * 7).unwrap();
            r.fold(x, &vec![Q15::ZERO; m], polyak::I16F16::from_bits(k as i32 * 1000 - 5000)).unwrap();
        }
        q.decode(&encode(&p)).unwrap();
        s.decode(&encode(&r)).unwrap();
        prop_assert_eq!(state(&p), state(&q));
        prop_assert_eq!(state(&r), state(&s));
    }
}

/// Aggregator records that could not have been reached are refused.
#[test]
fn impossible_aggregator_states_are_refused() {
    use polyak::aggregate::{Fisher, FisherAcc, WeightedAverage};
    let mut a = WeightedAverage::new(vec![I49F15::ZERO; 1]);
    a.fold(&[Q15::MAX], 2).unwrap();
    let rec = encode(&a);
    // header 24, models 4, total 8, then the sum: 2·(2¹⁵ − 1) is possible,
    // 3·2¹⁵ is not
    let mut bad = rec.clone();
    bad[36..44].copy_from_slice(&(3i64 << 15).to_le_bytes());
    fix_crc(&mut bad);
    let mut dst = WeightedAverage::new(vec![I49F15::ZERO; 1]);
    refused(&mut dst, &bad, Error::InvalidState);
    let mut bad = rec.clone();
    bad[28..36].copy_from_slice(&(1u64 << 33).to_le_bytes());
    fix_crc(&mut bad);
    refused(&mut dst, &bad, Error::InvalidState);
    let mut f = Fisher::new(vec![FisherAcc::ZERO; 1], 1e-3).unwrap();
    f.fold(&[1.0], &[1.0]).unwrap();
    let mut other = Fisher::new(vec![FisherAcc::ZERO; 1], 1e-2).unwrap();
    refused(&mut other, &encode(&f), Error::ConfigMismatch);
}

/// TIES, sparse-soup, participation and variance-corrected states
/// round-trip and keep computing the same bits; impossible ones are refused.
#[test]
fn more_aggregator_states_round_trip() {
    use polyak::aggregate::{MaskedAverage, Participation, Ties, TiesAcc, VarianceCorrected};
    let base = [0.0f32; 3];
    let models = [[0.5f32, -0.25, 0.0], [1.0, -0.5, 0.0], [-0.25, 0.75, 0.0]];
    let (mut a, mut b) = (
        Ties::new(vec![TiesAcc::default(); 3]),
        Ties::new(vec![TiesAcc::default(); 3]),
    );
    let (mut m, mut n) = (
        MaskedAverage::new(vec![CompF32::ZERO; 3], vec![0u32; 1]).unwrap(),
        MaskedAverage::new(vec![CompF32::ZERO; 3], vec![0u32; 1]).unwrap(),
    );
    let layout = Layout::<1>::single("w", 3).unwrap();
    let (mut v, mut w) = (
        VarianceCorrected::new(vec![CompF32::ZERO; 3], layout.clone()).unwrap(),
        VarianceCorrected::new(vec![CompF32::ZERO; 3], layout.clone()).unwrap(),
    );
    for x in &models[..2] {
        a.fold(x, &base, 0.7).unwrap();
        m.fold(x, 2.0).unwrap();
        v.fold(x).unwrap();
    }
    b.decode(&encode(&a)).unwrap();
    n.decode(&encode(&m)).unwrap();
    w.decode(&encode(&v)).unwrap();
    assert_eq!(state(&a), state(&b));
    assert_eq!(state(&m), state(&n));
    assert_eq!(state(&v), state(&w));
    a.fold(&models[2], &base, 0.7).unwrap();
    b.fold(&models[2], &base, 0.7).unwrap();
    assert_eq!(state(&a), state(&b));
    // the third model has the same zeros: both take it, alike
    assert_eq!(m.fold(&models[2], 1.0), n.fold(&models[2], 1.0));
    assert_eq!(state(&m), state(&n));
    // a TIES count beyond the models is refused
    let rec = encode(&a);
    let mut bad = rec.clone();
    bad[24..28].copy_from_slice(&1u32.to_le_bytes()); // models = 1 < counts
    fix_crc(&mut bad);
    refused(
        &mut Ties::<f32, _>::new(vec![TiesAcc::default(); 3]),
        &bad,
        Error::InvalidState,
    );
    // a mask bit past the last element is refused
    let rec = encode(&m);
    let mut bad = rec.clone();
    let k = bad.len() - 8;
    bad[k..k + 4].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
    fix_crc(&mut bad);
    refused(
        &mut MaskedAverage::new(vec![CompF32::ZERO; 3], vec![0u32; 1]).unwrap(),
        &bad,
        Error::InvalidState,
    );

    let mut p: Participation<3> = Participation::new(8).unwrap();
    for who in [&[0usize, 2][..], &[1], &[0], &[0, 1, 2]] {
        p.record_round(who).unwrap();
    }
    let mut q: Participation<3> = Participation::new(8).unwrap();
    q.decode(&encode(&p)).unwrap();
    assert_eq!(state(&p), state(&q));
    refused(
        &mut Participation::<3>::new(9).unwrap(),
        &encode(&p),
        Error::ConfigMismatch,
    );
    let mut bad = encode(&p);
    // client 0's summed intervals (after cutoff 4, rounds 8, since 4) set past seen·cutoff
    bad[40..48].copy_from_slice(&1000u64.to_le_bytes());
    fix_crc(&mut bad);
    refused(
        &mut Participation::<3>::new(8).unwrap(),
        &bad,
        Error::InvalidState,
    );
}
