//! The SWA schedule's learning rate against its f64 formula, and its
//! snapshot times.

use polyak::swalr::{Anneal, Rate, SwaSchedule};
use polyak_host::metrics::EPS;
use polyak_host::reference::swalr as refs;
use polyak_host::strategies::config;
use proptest::prelude::*;

fn rate() -> impl Strategy<Value = f32> {
    prop_oneof![1e-5f32..1.0, Just(0.0f32), 1e-3f32..10.0]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn anneal_rates_within_bound(
        start in 1u64..10_000, steps in prop_oneof![Just(0u32), 1u32..5000],
        lr_train in rate(), lr_avg in rate(), cosine in any::<bool>(), s in 0u64..20_000,
    ) {
        let shape = if cosine { Anneal::Cosine } else { Anneal::Linear };
        let sch = SwaSchedule { start, every: 1, lr_train, rate: Rate::Anneal { lr_avg, steps, shape } };
        sch.validate().unwrap();
        let t = start + s;
        let got = f64::from(sch.lr(t));
        let want = refs::anneal(s, steps, f64::from(lr_train), f64::from(lr_avg), cosine);
        let bound = f64::from(sch.lr_rel_error()) * EPS * f64::from(lr_train.max(lr_avg));
        prop_assert!((got - want).abs() <= bound, "t {t}: {got} vs {want}");
        // before the start: the training rate; after the anneal: exactly lr_avg
        prop_assert_eq!(sch.lr(start - 1), if start > 1 { lr_train } else { sch.lr(0) });
        prop_assert_eq!(sch.lr(start + u64::from(steps)), lr_avg);
    }

    #[test]
    fn cyclic_rates_within_bound(start in 1u64..1000, cycle in 1u32..500, high in rate(), low in rate(), s in 0u64..5000) {
        let sch = SwaSchedule { start, every: 1, lr_train: 0.5, rate: Rate::Cyclic { high, low, cycle } };
        sch.validate().unwrap();
        let got = f64::from(sch.lr(start + s));
        let want = refs::cyclic(s, cycle, f64::from(high), f64::from(low));
        prop_assert!((got - want).abs() <= 2.0 * EPS * f64::from(high.max(low)), "{got} vs {want}");
        // snapshots exactly at the ends of cycles, at the low rate
        let end = (s + 1) % u64::from(cycle) == 0;
        prop_assert_eq!(sch.snapshot(start + s), end);
        if end { prop_assert_eq!(sch.lr(start + s), low); }
    }

    #[test]
    fn anneal_snapshots_every_k(start in 1u64..1000, every in 1u32..100, t in 0u64..3000) {
        let sch = SwaSchedule { start, every, lr_train: 0.1, rate: Rate::Anneal { lr_avg: 0.05, steps: 10, shape: Anneal::Linear } };
        let want = t >= start && (t - start) % u64::from(every) == 0;
        prop_assert_eq!(sch.snapshot(t), want);
    }
}

#[test]
fn invalid_schedules_are_refused() {
    let ok = SwaSchedule {
        start: 10,
        every: 5,
        lr_train: 0.1,
        rate: Rate::Anneal {
            lr_avg: 0.05,
            steps: 0,
            shape: Anneal::Cosine,
        },
    };
    assert!(ok.validate().is_ok());
    assert_eq!(ok.lr(10), 0.05, "an anneal of length 0 switches at once");
    let bad = [
        SwaSchedule { start: 0, ..ok },
        SwaSchedule { every: 0, ..ok },
        SwaSchedule {
            lr_train: -0.1,
            ..ok
        },
        SwaSchedule {
            lr_train: f32::NAN,
            ..ok
        },
        SwaSchedule {
            rate: Rate::Anneal {
                lr_avg: f32::INFINITY,
                steps: 3,
                shape: Anneal::Linear,
            },
            ..ok
        },
        SwaSchedule {
            rate: Rate::Cyclic {
                high: 0.1,
                low: 0.01,
                cycle: 0,
            },
            ..ok
        },
    ];
    for b in bad {
        assert_eq!(
            b.validate(),
            Err(polyak::Error::InvalidCoefficient),
            "{b:?}"
        );
    }
}
