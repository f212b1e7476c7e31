//! The A/B store on a mock NOR flash: power cut at every write and erase
//! step of more than a hundred commits, torn words, flipped bits, and the
//! error paths.

use polyak::codec::Persist;
use polyak::store::{Store, StoreError};
use polyak::{CompF32, Ema, Error, I1F31, I49F15, Q15, Swa};
use polyak_host::flash::{MockError, MockFlash};

/// The bytes of a state, to compare states exactly.
fn bytes<P: Persist>(p: &P) -> Vec<u8> {
    let mut b = vec![0u8; p.encoded_len()];
    p.encode(&mut b).unwrap();
    b
}

fn params(step: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((step * 31 + i * 17) % 97) as f32 / 48.0 - 1.0)
        .collect()
}

/// Commits a sequence of states; before each commit, for every step count
/// the commit takes, cuts the power there, reboots, restores, and checks
/// the restored state is exactly the old or the new one.
fn power_cut_everywhere<const W: usize, const E: usize>(slot_len: u32, commits: usize) -> usize {
    const N: usize = 24;
    let mut flash = MockFlash::<W, E>::new(4 * slot_len as usize);
    let mut ema = Ema::new([CompF32::ZERO; N], 0.99).unwrap();
    let mut old: Option<Vec<u8>> = None;
    let mut cut_points = 0;
    for c in 0..commits {
        ema.update(&params(c, N)).unwrap();
        let new = bytes(&ema);
        // how many steps does this commit take?
        let mut probe = flash.clone();
        let before = probe.steps();
        Store::new(&mut probe, slot_len, slot_len)
            .unwrap()
            .commit(&ema)
            .unwrap();
        let steps = probe.steps() - before;
        for cut in 0..steps {
            let mut f = flash.clone();
            f.cut_after(cut);
            let r = Store::new(&mut f, slot_len, slot_len).unwrap().commit(&ema);
            assert_eq!(
                r,
                Err(StoreError::Flash(MockError::PowerCut)),
                "commit {c} cut {cut}"
            );
            f.reboot();
            let mut back = Ema::new([CompF32::ZERO; N], 0.99).unwrap();
            let seq = Store::new(&mut f, slot_len, slot_len)
                .unwrap()
                .restore(&mut back)
                .unwrap();
            let got = bytes(&back);
            match &old {
                Some(o) => {
                    assert!(
                        got == *o || got == new,
                        "commit {c} cut {cut}: neither old nor new"
                    );
                    assert_eq!(seq, Some(if got == new { c as u32 + 1 } else { c as u32 }));
                }
                // the very first commit: the blank store, or the new state
                None => assert!(seq.is_none() || got == new, "first commit, cut {cut}"),
            }
            cut_points += 1;
        }
        let seq = Store::new(&mut flash, slot_len, slot_len)
            .unwrap()
            .commit(&ema)
            .unwrap();
        assert_eq!(seq, c as u32 + 1);
        old = Some(new);
    }
    cut_points
}

#[test]
fn power_cut_at_every_step_of_every_commit() {
    let a = power_cut_everywhere::<4, 256>(512, 110);
    let b = power_cut_everywhere::<1, 128>(384, 20);
    let c = power_cut_everywhere::<16, 1024>(1024, 20);
    println!(
        "power cut at {a} points across 110 commits (4-byte words, 256-byte sectors), {b} (1, 128), {c} (16, 1024); every one recovered the old or the new state"
    );
    assert!(a > 110 * 300, "each commit writes about 300 bytes: {a}");
}

#[test]
fn blank_store_restores_nothing_and_first_commit_works() {
    let mut flash = MockFlash::<4, 256>::new(2048);
    let mut swa = Swa::new([I49F15::ZERO; 8]);
    let before = format!("{swa:?}");
    let mut store = Store::new(&mut flash, 0, 512).unwrap();
    assert_eq!(store.restore(&mut swa), Ok(None));
    assert_eq!(format!("{swa:?}"), before);
    assert_eq!(store.latest(), Ok(None));
    swa.update(&[Q15::from_num(0.25); 8]).unwrap();
    assert_eq!(store.commit(&swa), Ok(1));
    swa.update(&[Q15::from_num(-0.25); 8]).unwrap();
    assert_eq!(store.commit(&swa), Ok(2));
    assert_eq!(store.latest(), Ok(Some(2)));
    let mut back = Swa::new([I49F15::ZERO; 8]);
    assert_eq!(store.restore(&mut back), Ok(Some(2)));
    assert_eq!(bytes(&back), bytes(&swa));
}

#[test]
fn a_flipped_bit_falls_back_to_the_previous_state() {
    let slot = 512u32;
    let mut ema = Ema::new([I1F31::ZERO; 16], 0.9).unwrap();
    let mut flash = MockFlash::<4, 256>::new(2048);
    let mut states = Vec::new();
    for c in 0..6 {
        ema.update(&[Q15::from_bits(c * 1000); 16]).unwrap();
        Store::new(&mut flash, 0, slot)
            .unwrap()
            .commit(&ema)
            .unwrap();
        states.push(bytes(&ema));
    }
    // seq 6 is in slot B (odd commits go to A: 1, 3, 5), seq 5 in slot A
    let newest_slot = slot as usize;
    let len = ema.encoded_len();
    // flip bits of the newest slot's meaningful bytes in turn: the header,
    // the record and the commit marker (not the 0xFF padding between them)
    let marker = 16 + len.div_ceil(4) * 4;
    let meaningful = (0..16 + len).chain(marker..marker + 4);
    let mut checked = 0;
    for byte in meaningful.step_by(3) {
        for bit in [0u8, 5] {
            let mut f = flash.clone();
            f.flip(newest_slot + byte, bit);
            let mut back = Ema::new([I1F31::ZERO; 16], 0.9).unwrap();
            let seq = Store::new(&mut f, 0, slot)
                .unwrap()
                .restore(&mut back)
                .unwrap();
            assert_eq!(seq, Some(5), "flip at {byte}.{bit}");
            assert_eq!(bytes(&back), states[4]);
            checked += 1;
        }
    }
    // a flipped bit in both slots: nothing intact, the target untouched
    let mut f = flash.clone();
    f.flip(newest_slot + 40, 1);
    f.flip(40, 1);
    let mut back = Ema::new([I1F31::ZERO; 16], 0.9).unwrap();
    let before = bytes(&back);
    assert_eq!(
        Store::new(&mut f, 0, slot).unwrap().restore(&mut back),
        Ok(None)
    );
    assert_eq!(bytes(&back), before);
    println!("{checked} single-bit flips in the newest slot: each fell back to the previous state");
}

#[test]
fn store_error_paths() {
    let mut flash = MockFlash::<4, 256>::new(2048);
    // misaligned region, slot not a sector multiple, region past the end
    assert!(matches!(
        Store::new(&mut flash, 100, 512),
        Err(StoreError::BadRegion)
    ));
    assert!(matches!(
        Store::new(&mut flash, 0, 300),
        Err(StoreError::BadRegion)
    ));
    assert!(matches!(
        Store::new(&mut flash, 1024, 768),
        Err(StoreError::BadRegion)
    ));
    assert!(matches!(
        Store::new(&mut flash, 0, 0),
        Err(StoreError::BadRegion)
    ));
    // a state that does not fit a slot: nothing is written
    let mut store = Store::new(&mut flash, 0, 256).unwrap();
    let big = Swa::new([I49F15::ZERO; 64]);
    assert_eq!(store.commit(&big), Err(StoreError::TooLarge));
    assert_eq!(store.latest(), Ok(None));
    // intact records made under another configuration: refused, unchanged
    let mut a = Ema::new([CompF32::ZERO; 4], 0.9).unwrap();
    a.update(&[1.0; 4]).unwrap();
    store.commit(&a).unwrap();
    store.commit(&a).unwrap();
    let mut other = Ema::new([CompF32::ZERO; 4], 0.5).unwrap();
    let before = bytes(&other);
    assert_eq!(
        store.restore(&mut other),
        Err(StoreError::State(Error::ConfigMismatch))
    );
    assert_eq!(bytes(&other), before);
    // a power cut during restore's reads is reported, the target untouched
    let _ = store.into_inner();
    flash.cut_after(0);
    let mut f = flash.clone();
    // reads do not consume the budget; kill the device outright
    let _ = embedded_storage::nor_flash::NorFlash::write(&mut f, 2044, &[0; 4]);
    let mut back = Ema::new([CompF32::ZERO; 4], 0.9).unwrap();
    let before = bytes(&back);
    assert_eq!(
        Store::new(&mut f, 0, 256).unwrap().restore(&mut back),
        Err(StoreError::Flash(MockError::PowerCut))
    );
    assert_eq!(bytes(&back), before);
}
