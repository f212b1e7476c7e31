//! The flash-backed EMA: the same bits as the RAM EMA in any page order,
//! a power cut at every flash operation of a step recovers the state
//! before or after the step, and corruption and bad chunks are refused.

use fixed::types::I1F15;
use polyak::paged::FlashEma;
use polyak::store::StoreError;
use polyak::{CompF32, Ema, EmaShadow, Error, I1F31, Q15, Rounding};
use polyak_host::flash::{MockError, MockFlash};
use polyak_host::strategies::{chunking, config, f32_value, q15_value};
use proptest::prelude::*;

/// 4-byte words, 256-byte sectors.
type Flash = MockFlash<4, 256>;
const SLOT: u32 = 512;
const BANKS: u32 = 1024;
/// Coverage words: up to 64 pages.
const W: usize = 2;

fn flash_for(len: usize, size: usize) -> Flash {
    let pages = (len * size).div_ceil(256);
    Flash::new(BANKS as usize + 2 * pages * 256)
}

type F32Flash<'f, A, const P: usize> = FlashEma<A, &'f mut Flash, [A; P], W, [u8; 256]>;

fn open<'f, A: EmaShadow, const P: usize>(
    page: Ema<A, [A; P]>,
    flash: &'f mut Flash,
    len: usize,
) -> Result<F32Flash<'f, A, P>, StoreError<MockError>> {
    FlashEma::open(page, flash, 0, SLOT, BANKS, len, [0u8; 256])
}

/// One step: the pages in the order `seed` gives.
fn step<A: EmaShadow, const P: usize>(
    e: &mut F32Flash<'_, A, P>,
    x: &[A::Param],
    seed: u64,
) -> Result<(), StoreError<MockError>> {
    e.begin()?;
    let pages: Vec<usize> = chunking(x.len().div_ceil(P), seed)
        .into_iter()
        .flatten()
        .collect();
    for p in pages {
        let r = p * P..((p + 1) * P).min(x.len());
        e.update_page(r.start, &x[r])?;
    }
    e.finish()
}

/// Every page's average.
fn read_all<A: EmaShadow, const P: usize>(e: &mut F32Flash<'_, A, P>) -> Vec<A::Param> {
    let n = e.len();
    let mut out = vec![A::PARAM_ZERO; n];
    for start in (0..n).step_by(P) {
        let end = (start + P).min(n);
        e.read_page(start, &mut out[start..end]).unwrap();
    }
    out
}

fn ram_read<A: EmaShadow>(e: &Ema<A, Vec<A>>) -> Vec<A::Param> {
    let mut out = vec![A::PARAM_ZERO; e.len()];
    e.read_into(&mut out).unwrap();
    out
}

fn same_as_ram<A: EmaShadow + PartialEq, const P: usize>(
    make: impl Fn(usize) -> (Ema<A, [A; P]>, Ema<A, Vec<A>>),
    xs: &[Vec<A::Param>],
    seed: u64,
) -> Result<(), TestCaseError>
where
    A::Param: PartialEq + std::fmt::Debug,
{
    let n = xs[0].len();
    let mut flash = flash_for(n, A::SIZE_BYTES);
    let (page, mut ram) = make(n);
    let mut e = open(page, &mut flash, n).unwrap();
    for (t, x) in xs.iter().enumerate() {
        ram.update(x).unwrap();
        step(&mut e, x, seed ^ t as u64).unwrap();
        prop_assert_eq!(read_all(&mut e), ram_read(&ram), "step {}", t);
        prop_assert_eq!(e.steps(), ram.steps());
    }
    e.verify().unwrap();
    // the state survives a restart
    let before = read_all(&mut e);
    let _ = e.into_inner();
    let (page, _) = make(n);
    let mut e = open(page, &mut flash, n).unwrap();
    prop_assert_eq!(read_all(&mut e), before);
    prop_assert_eq!(e.steps(), ram.steps());
    Ok(())
}

/// Bytes per shadow element, for sizing the flash.
trait SizeBytes {
    const SIZE_BYTES: usize;
}
impl<A: polyak::codec::Element> SizeBytes for A {
    const SIZE_BYTES: usize = A::SIZE;
}

fn steps_of<S: Strategy + 'static>(value: fn() -> S) -> impl Strategy<Value = Vec<Vec<S::Value>>> {
    (1usize..300)
        .prop_flat_map(move |n| prop::collection::vec(prop::collection::vec(value(), n), 1..6))
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn flash_ema_is_the_ram_ema(xf in steps_of(f32_value), xq in steps_of(q15_value), seed in any::<u64>(), beta in 0.5f32..0.999, rs in any::<u32>()) {
        same_as_ram::<f32, 64>(|n| (Ema::new([0.0f32; 64], beta).unwrap(), Ema::new(vec![0.0f32; n], beta).unwrap()), &xf, seed)?;
        same_as_ram::<CompF32, 32>(|n| (Ema::new_debiased([CompF32::ZERO; 32], beta).unwrap(), Ema::new_debiased(vec![CompF32::ZERO; n], beta).unwrap()), &xf, seed)?;
        let r = Rounding::Stochastic { seed: rs };
        same_as_ram::<I1F31, 64>(|n| (
            Ema::new([I1F31::ZERO; 64], beta).unwrap().with_rounding(r).unwrap(),
            Ema::new(vec![I1F31::ZERO; n], beta).unwrap().with_rounding(r).unwrap(),
        ), &xq, seed)?;
    }
}

fn params(step: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((step * 31 + i * 17) % 97) as f32 / 48.0 - 1.0)
        .collect()
}

/// Cuts the power at every flash operation (sector erased, byte written)
/// of every step, reboots, re-opens, and checks the state is exactly the
/// one before the step or the one after it. Returns the cut points.
fn power_cut_everywhere(n: usize, steps: usize) -> usize {
    let mut flash = flash_for(n, 8);
    let page = || Ema::new_debiased([CompF32::ZERO; 32], 0.9).unwrap();
    let state = |f: &mut Flash| -> (u64, Vec<f32>) {
        let mut e = open(page(), f, n).unwrap();
        e.verify().unwrap();
        let v = if e.steps() == 0 {
            Vec::new()
        } else {
            read_all(&mut e)
        };
        (e.steps(), v)
    };
    let mut cut_points = 0;
    for t in 0..steps {
        let x = params(t, n);
        let old = state(&mut flash);
        // how many operations does this step take?
        let mut probe = flash.clone();
        let before = probe.steps();
        step(&mut open(page(), &mut probe, n).unwrap(), &x, t as u64).unwrap();
        let ops = probe.steps() - before;
        let new = state(&mut probe);
        assert_ne!(old, new, "step {t} changed nothing");
        for cut in 0..ops {
            let mut f = flash.clone();
            f.cut_after(cut);
            let r = step(&mut open(page(), &mut f, n).unwrap(), &x, t as u64);
            assert_eq!(
                r,
                Err(StoreError::Flash(MockError::PowerCut)),
                "step {t} cut {cut}"
            );
            f.reboot();
            let got = state(&mut f);
            assert!(
                got == old || got == new,
                "step {t} cut {cut}: neither the state before nor after"
            );
            // and the next step goes through from there
            let mut e = open(page(), &mut f, n).unwrap();
            step(&mut e, &x, t as u64 + 1).unwrap();
            cut_points += 1;
        }
        flash = probe;
    }
    cut_points
}

#[test]
fn power_cut_at_every_flash_operation_of_a_step() {
    let a = power_cut_everywhere(100, 6); // 4 pages of 32 CompF32, the last partial
    let b = power_cut_everywhere(32, 4); // one page
    println!(
        "power cut at {a} + {b} points across 10 flash-backed steps; every one recovered the state before or after its step"
    );
    assert!(a > 1000 && b > 100);
}

#[test]
fn bad_chunks_and_corruption_are_refused() {
    let n = 150;
    let mut flash = flash_for(n, 4);
    let mut e = open(Ema::new([0.0f32; 64], 0.5).unwrap(), &mut flash, n).unwrap();
    let x = params(0, n);
    assert_eq!(
        e.update_page(0, &x[..64]),
        Err(StoreError::State(Error::NoStep))
    );
    e.begin().unwrap();
    assert_eq!(e.begin(), Err(StoreError::State(Error::StepInProgress)));
    assert_eq!(
        e.update_page(0, &x[..63]),
        Err(StoreError::State(Error::LengthMismatch {
            expected: 64,
            found: 63
        }))
    );
    assert_eq!(
        e.update_page(32, &x[32..96]),
        Err(StoreError::State(Error::ChunkMisaligned { index: 32 }))
    );
    let mut bad = x[..64].to_vec();
    bad[5] = f32::NAN;
    assert_eq!(
        e.update_page(0, &bad),
        Err(StoreError::State(Error::NonFinite { index: 5 }))
    );
    e.update_page(128, &x[128..]).unwrap();
    assert_eq!(
        e.update_page(128, &x[128..]),
        Err(StoreError::State(Error::ChunkOverlap { index: 128 }))
    );
    assert_eq!(
        e.finish(),
        Err(StoreError::State(Error::StepIncomplete { index: 0 }))
    );
    e.update_page(0, &x[..64]).unwrap();
    e.update_page(64, &x[64..128]).unwrap();
    e.finish().unwrap();
    assert_eq!(e.steps(), 1);
    let first = read_all(&mut e);
    // an aborted step leaves nothing behind
    e.begin().unwrap();
    e.update_page(64, &params(1, n)[64..128]).unwrap();
    e.abort().unwrap();
    assert_eq!(read_all(&mut e), first);
    let _ = e.into_inner();
    // a flipped bit in the current bank: found by verify and by the next step
    let bank0 = BANKS as usize + 3 * 256; // bank 1 is current after one step
    let mut f2 = flash.clone();
    f2.flip(bank0 + 10, 3);
    let mut e = open(Ema::new([0.0f32; 64], 0.5).unwrap(), &mut f2, n).unwrap();
    assert_eq!(e.verify(), Err(StoreError::State(Error::BadChecksum)));
    assert_eq!(
        step(&mut e, &params(1, n), 3),
        Err(StoreError::State(Error::BadChecksum))
    );
    assert_eq!(e.steps(), 1);
    // another configuration cannot open this journal
    let r = open(Ema::new([0.0f32; 64], 0.25).unwrap(), &mut flash, n);
    assert!(matches!(r, Err(StoreError::State(Error::ConfigMismatch))));
    let r = open(Ema::new([0.0f32; 64], 0.5).unwrap(), &mut flash, n + 1);
    assert!(matches!(
        r,
        Err(StoreError::State(Error::LayoutMismatch)) | Err(StoreError::BadRegion)
    ));
    let _ = (I1F15::ZERO, Q15::ZERO);
}

/// A 1 MiB model (262,144 f32 parameters) averaged through 1 KiB pages:
/// three steps in a scrambled page order, bit-identical to the RAM EMA,
/// and the RAM the flash-backed EMA takes.
#[test]
fn one_mebibyte_model_through_one_kibibyte_pages() {
    const N: usize = 262_144;
    const PAGE: usize = 256;
    type Big = MockFlash<4, 1024>;
    type Paged<'f> = FlashEma<f32, &'f mut Big, [f32; PAGE], 32, [u8; 1024]>;
    let mut flash = Big::new(2048 + 2 * N * 4);
    let page = Ema::new([0.0f32; PAGE], 0.99).unwrap();
    let mut e: Paged<'_> = FlashEma::open(page, &mut flash, 0, 1024, 2048, N, [0u8; 1024]).unwrap();
    let mut ram = Ema::new(vec![0.0f32; N], 0.99).unwrap();
    let pages = N / PAGE;
    for t in 0..3 {
        let x = params(t, N);
        ram.update(&x).unwrap();
        e.begin().unwrap();
        for k in 0..pages {
            let p = (k * 389 + t * 7) % pages; // 389 is prime to 1024: a permutation
            e.update_page(p * PAGE, &x[p * PAGE..(p + 1) * PAGE])
                .unwrap();
        }
        e.finish().unwrap();
    }
    let want = ram_read(&ram);
    let mut got = vec![0.0f32; PAGE];
    for p in 0..pages {
        e.read_page(p * PAGE, &mut got).unwrap();
        assert_eq!(got[..], want[p * PAGE..(p + 1) * PAGE], "page {p}");
    }
    e.verify().unwrap();
    let bytes = std::mem::size_of::<Paged<'_>>();
    println!(
        "1 MiB model ({N} f32 parameters, {pages} pages of 1 KiB): the flash-backed EMA keeps {bytes} B in RAM (a 1 KiB page of the shadow, 1 KiB of page bytes, a 128 B page bitmap, the EMA's scalars), plus the caller's 1 KiB window on the parameters; flash: 2 × 1 MiB banks and a 2 × 1 KiB journal"
    );
    assert!(bytes < 2 * 1024 + 512, "{bytes} B");
}
