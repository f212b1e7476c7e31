//! The kernels the on-target benchmark times, each on [`N`] elements, over
//! buffers the caller allocates (a `static` on the device).
//!
//! `cargo xtask bench` runs the firmware's `bench` mode under QEMU with
//! `-icount shift=0`, where every instruction advances the clock by 1 ns
//! and SysTick (25 MHz) ticks once per 40 instructions, deterministically:
//! the ticks an update takes, times 40, over its element count, are its
//! instructions per element (±40 instructions in all, ±0.01 per element at
//! this size, so no sub-tick interpolation is needed).
//!
//! Each kernel builds its averager and does a first update (which copies
//! its input) outside the timed region, then times one update through a
//! [`Timer`]; the timer's own cost is measured with an empty closure and
//! subtracted by the caller.

use polyak::aggregate::WeightedAverage;
use polyak::{Checked, CompF32, Ema, EmaBank, I1F31, I2F62, I33F31, I49F15, Q15, Q31, Swa};

/// Elements per kernel run.
pub const N: usize = 4096;

/// Times closures.
pub trait Timer {
    /// Runs `f` and returns the instructions it took.
    fn time(&mut self, f: &mut dyn FnMut() -> bool) -> Option<u32>;
}

/// Every buffer the benchmark needs.
pub struct BenchBuffers {
    x: [f32; N],
    q: [Q15; N],
    q31: [Q31; N],
    s: [f32; N],
    comp: [CompF32; N],
    w31: [I1F31; N],
    w62: [I2F62; N],
    a15: [I49F15; N],
    a31: [I33F31; N],
    bank1: [[f32; 1]; N],
    bank3: [[f32; 3]; N],
}

impl BenchBuffers {
    /// Zeroed buffers; [`fill`](Self::fill) sets the inputs.
    pub const fn new() -> Self {
        Self {
            x: [0.0; N],
            q: [Q15::ZERO; N],
            q31: [Q31::ZERO; N],
            s: [0.0; N],
            comp: [CompF32::ZERO; N],
            w31: [I1F31::ZERO; N],
            w62: [I2F62::ZERO; N],
            a15: [I49F15::ZERO; N],
            a31: [I33F31::ZERO; N],
            bank1: [[0.0; 1]; N],
            bank3: [[0.0; 3]; N],
        }
    }

    /// Seeded inputs with a spread of values.
    pub fn fill(&mut self) {
        let mut r = crate::rng::Rng::new(5);
        for ((x, q), q31) in self
            .x
            .iter_mut()
            .zip(self.q.iter_mut())
            .zip(self.q31.iter_mut())
        {
            *x = r.uniform();
            *q = Q15::from_bits(r.next_i16());
            *q31 = Q31::from_bits((r.next_u64() >> 32) as i32);
        }
    }
}

impl Default for BenchBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// One timed kernel.
pub struct Kernel {
    /// Name, as `cargo xtask bench` prints it.
    pub name: &'static str,
    /// Element-updates per timed run (models × elements for a merge).
    pub units: u32,
    /// Builds, warms up and times one update; the instructions, or `None`
    /// if the averager refused.
    pub run: fn(&mut BenchBuffers, &mut dyn Timer) -> Option<u32>,
}

fn ema_f32(b: &mut BenchBuffers, t: &mut dyn Timer, checked: bool) -> Option<u32> {
    let mut e = Ema::new(&mut b.s[..], 0.999).ok()?;
    e.update(&b.x).ok()?;
    let x = &b.x[..];
    let cx = Checked::new(x).ok()?;
    if checked {
        t.time(&mut || e.update_checked(cx).is_ok())
    } else {
        t.time(&mut || e.update(x).is_ok())
    }
}

fn ema_comp(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut e = Ema::new(&mut b.comp[..], 0.999).ok()?;
    e.update(&b.x).ok()?;
    let cx = Checked::new(&b.x[..]).ok()?;
    t.time(&mut || e.update_checked(cx).is_ok())
}

fn ema_q15(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut e = Ema::new(&mut b.w31[..], 0.999).ok()?;
    e.update(&b.q).ok()?;
    let q = &b.q[..];
    t.time(&mut || e.update(q).is_ok())
}

fn ema_q31(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut e = Ema::new(&mut b.w62[..], 0.999).ok()?;
    e.update(&b.q31).ok()?;
    let q = &b.q31[..];
    t.time(&mut || e.update(q).is_ok())
}

fn swa_q15(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut s = Swa::new(&mut b.a15[..]);
    s.update(&b.q).ok()?;
    let q = &b.q[..];
    t.time(&mut || s.update(q).is_ok())
}

fn swa_q31(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut s = Swa::new(&mut b.a31[..]);
    s.update(&b.q31).ok()?;
    let q = &b.q31[..];
    t.time(&mut || s.update(q).is_ok())
}

fn merge_q31(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut m = WeightedAverage::new(&mut b.a31[..]);
    let q = &b.q31[..];
    t.time(&mut || [3u32, 1, 4, 1].iter().all(|&w| m.fold(q, w).is_ok()))
}

fn bank1(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut bank = EmaBank::new(&mut b.bank1[..], [0.99]).ok()?;
    bank.update(&b.x).ok()?;
    let cx = Checked::new(&b.x[..]).ok()?;
    t.time(&mut || bank.update_checked(cx).is_ok())
}

fn bank3(b: &mut BenchBuffers, t: &mut dyn Timer) -> Option<u32> {
    let mut bank = EmaBank::new(&mut b.bank3[..], [0.9, 0.99, 0.999]).ok()?;
    bank.update(&b.x).ok()?;
    let cx = Checked::new(&b.x[..]).ok()?;
    t.time(&mut || bank.update_checked(cx).is_ok())
}

/// The kernels, in the order `cargo xtask bench` prints them.
pub fn kernels() -> [Kernel; 10] {
    let n = N as u32;
    [
        Kernel {
            name: "ema_f32",
            units: n,
            run: |b, t| ema_f32(b, t, false),
        },
        Kernel {
            name: "ema_f32_checked",
            units: n,
            run: |b, t| ema_f32(b, t, true),
        },
        Kernel {
            name: "ema_f32_compensated",
            units: n,
            run: ema_comp,
        },
        Kernel {
            name: "ema_q15_wide",
            units: n,
            run: ema_q15,
        },
        Kernel {
            name: "ema_q31_wide",
            units: n,
            run: ema_q31,
        },
        Kernel {
            name: "swa_q15",
            units: n,
            run: swa_q15,
        },
        Kernel {
            name: "swa_q31",
            units: n,
            run: swa_q31,
        },
        Kernel {
            name: "merge_q31_4",
            units: 4 * n,
            run: merge_q31,
        },
        Kernel {
            name: "bank_f32_1",
            units: n,
            run: bank1,
        },
        Kernel {
            name: "bank_f32_3",
            units: n,
            run: bank3,
        },
    ]
}
