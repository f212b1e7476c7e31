//! Calls every public entry point of `polyak` with inputs the optimiser
//! cannot see through (`black_box`), in a release build for Cortex-M4F that
//! links `panic-never`: its panic handler refers to a symbol that does not
//! exist, so any panic path that survives optimisation makes the link
//! fail. `cargo xtask test` builds this; it is never run.
#![no_std]
#![no_main]
#![allow(unused)]

use core::fmt::Write;
use core::hint::black_box;

use cortex_m_rt::entry;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use panic_never as _;
use polyak::aggregate::FisherInput;
use polyak::aggregate::{
    Drop, DualAcc, DualAveraging, Fisher, FisherAcc, MaskedAverage, Participation, Robust, TaskAcc,
    TaskArithmetic, Ties, TiesAcc, TiesElem, VarianceCorrected, WeightedAcc, WeightedAverage,
    median, trimmed_mean,
};
use polyak::chunk::{Chunkable, Chunked};
use polyak::codec::{Element, Persist, crc32};
use polyak::layout::Layout;
use polyak::layout::Policy;
use polyak::moments::{Moment, MomentF32, MomentQ15, MomentQ31, Moments, Normal};
use polyak::naswa::{Naswa, NormAcc, NormScope};
use polyak::paged::FlashEma;
use polyak::posthoc::{PostHoc, SnapshotMeta, SnapshotSink};
use polyak::schedule::{Decay, Schedule, gamma_to_sigma_rel, sigma_rel_to_gamma};
use polyak::segment::Segmented;
use polyak::store::Store;
use polyak::swalr::{Anneal, Rate, SwaSchedule};
use polyak::window::{RamRing, Window};
use polyak::{
    CompF32, Ema, EmaBank, EmaShadow, I1F15, I1F31, I2F62, I16F16, I33F31, I49F15, InputPolicy,
    Q15, Q15Ef, Q31, Rounding, Skip, Swa, SwaAccumulator, U1F31, merge,
};

const N: usize = 16;

/// Gives `x` to `c` as one step in two chunks, second first (and an
/// overlapping, a misaligned and a missing chunk on the way).
#[cfg(feature = "chunk")]
fn two_chunks<A, T>(c: &mut Chunked<A, 1>, args: A::Args, x: &[T])
where
    A: 'static + for<'a> Chunkable<Input<'a> = &'a [T]>,
{
    let half = black_box(x.len() / 2);
    let _ = black_box(c.begin(args));
    for _ in 0..A::PASSES {
        let _ = black_box(c.update_chunk(half, x.get(half..).unwrap_or(&[])));
        let _ = black_box(c.update_chunk(black_box(1), x));
        let _ = black_box(c.finish());
        let _ = black_box(c.update_chunk(0, x.get(..half).unwrap_or(&[])));
        let _ = black_box(c.finish());
    }
    let _ = black_box(c.abort());
    black_box((c.covered(), c.in_step(), c.coverage().missing()));
    let _ = black_box(c.get().map(|_| ()));
}

/// Chunked steps, per-segment policies and the flash-backed EMA.
#[cfg(feature = "chunk")]
fn chunked(pf: &[f32; N], p15: &[Q15; N], of: &mut [f32; N], bytes: &mut [u8]) {
    let granule = black_box(4);
    if let Ok(e) =
        Ema::new([I1F31::ZERO; N], black_box(0.9)).and_then(|e| e.with_rounding(rounding()))
        && let Ok(mut c) = Chunked::<_, 1>::new(e, granule)
    {
        two_chunks(&mut c, (), p15);
    }
    if let Ok(mut c) =
        Chunked::<_, 1>::new(Swa::new([CompF32::ZERO; N]).with_policy::<Skip>(), granule)
    {
        two_chunks(&mut c, (), pf);
    }
    if let Ok(layout) = Layout::<2>::single("w", black_box(N))
        && let Ok(n) = Naswa::new(
            [CompF32::ZERO; N],
            layout,
            black_box(0.2),
            NormScope::Overall,
        )
        && let Ok(mut c) = Chunked::<_, 1>::new(n, granule)
    {
        two_chunks(&mut c, (), pf);
    }
    let w = WeightedAverage::new([I49F15::ZERO; N]);
    if let Ok(mut c) = Chunked::<_, 1>::new(w.clone(), granule) {
        two_chunks(&mut c, black_box(3u32), p15);
    }
    let t = Ties::<f32, _>::new([TiesAcc::default(); N]);
    if let Ok(mut c) = Chunked::<_, 1>::new(t, granule) {
        let _ = black_box(c.begin(black_box(0.5)));
        for _ in 0..5 {
            let _ = black_box(c.update_chunk(0, (&pf[..], &pf[..])));
            let _ = black_box(c.finish());
        }
    }
    if let Ok(f) = Fisher::new([FisherAcc::ZERO; N], black_box(0.01))
        && let Ok(mut c) = Chunked::<_, 1>::new(f, granule)
    {
        let _ = black_box(c.begin(()));
        let _ = black_box(c.update_chunk(
            0,
            FisherInput::Fisher {
                theta: &pf[..],
                fisher: &pf[..],
            },
        ));
        let _ = black_box(c.finish());
    }
    // per-segment policies
    let mut layout: Layout<3> = Layout::new();
    let _ = layout.push("w", black_box(N - 2));
    let _ = layout.push_with("stats", 1, Policy::CopyLatest);
    let _ = layout.push_with("count", 1, Policy::Sum);
    if let Ok(e) = Ema::new([CompF32::ZERO; N], black_box(0.9))
        && let Ok(mut s) = Segmented::new(e, layout.clone(), [0.0f32; 2])
    {
        let _ = black_box(s.update((), pf));
        let _ = black_box(s.fill_into(&mut *of));
        black_box((s.kept().len(), s.steps(), s.layout().kept_len()));
        let _ = black_box(s.encode(black_box(&mut *bytes)));
        let _ = black_box(s.decode(black_box(&*bytes)));
    }
    if let Ok(mut s) = Segmented::new(w, layout, [Q15::ZERO; 2]) {
        let _ = black_box(s.update(black_box(2u32), p15));
        if let Ok(mut c) = Chunked::<_, 1>::new(s, granule) {
            two_chunks(&mut c, black_box(1u32), p15);
        }
    }
    // the flash-backed EMA over a RAM flash (256-byte sectors)
    if let Ok(page) = Ema::new([0.0f32; 64], black_box(0.9)) {
        let flash = RamFlash([0xFF; 4096]);
        let opened: Result<FlashEma<f32, RamFlash, [f32; 64], 1, [u8; 256]>, _> =
            FlashEma::open(page, flash, 0, 512, 1024, black_box(100), [0u8; 256]);
        if let Ok(mut e) = opened {
            let x = [black_box(0.5f32); 64];
            let _ = black_box(e.begin());
            let _ = black_box(e.update_page(black_box(64), x.get(..36).unwrap_or(&[])));
            let _ = black_box(e.update_page(0, &x));
            let _ = black_box(e.finish());
            let mut out = [0.0f32; 64];
            let _ = black_box(e.read_page(black_box(64), out.get_mut(..36).unwrap_or(&mut [])));
            let _ = black_box(e.verify());
            let _ = black_box(e.abort());
            black_box((
                e.steps(),
                e.page_len(),
                e.len(),
                e.in_step(),
                e.ema().alpha(),
            ));
        }
    }
    let _ = black_box(bytes.len());
}

/// A schedule the optimiser cannot predict.
fn schedule() -> Schedule {
    let decay = match black_box(0u8) {
        0 => Decay::Constant {
            beta: black_box(0.9),
        },
        1 => Decay::Warmup {
            inv_gamma: black_box(1.0),
            power: black_box(0.7),
            min_beta: black_box(0.0),
            max_beta: black_box(0.999),
        },
        2 => Decay::HalfLife {
            half_life: black_box(100.0),
            per_step: black_box(1.0),
        },
        3 => Decay::Power {
            gamma: black_box(7.0),
        },
        _ => Decay::Shift { k: black_box(6) },
    };
    Schedule::from_decay(decay)
        .after(black_box(3))
        .every(black_box(2))
}

fn rounding() -> Rounding {
    if black_box(false) {
        Rounding::Stochastic { seed: black_box(5) }
    } else {
        Rounding::NearestEven
    }
}

/// Every Ema entry point for one shadow type, under both input policies.
fn ema<A: EmaShadow>(params: &[A::Param], out: &mut [A::Param], alpha: A::Coef, bytes: &mut [u8]) {
    let mut storage = [A::ZERO; N];
    let mut other = [A::ZERO; N];
    let made = [
        Ema::new(&mut storage[..], black_box(0.99)).map(|_| ()),
        Ema::with_alpha(&mut other[..], alpha).map(|_| ()),
    ];
    let _ = black_box(made);
    let mut storage = [A::ZERO; N];
    let built = match black_box(0u8) {
        0 => Ema::with_schedule(&mut storage[..], schedule()),
        1 => Ema::with_schedule_debiased(&mut storage[..], schedule()),
        2 => Ema::new_debiased(&mut storage[..], black_box(0.9)),
        _ => Ema::with_alpha_debiased(&mut storage[..], alpha),
    };
    let Ok(e) = built else { return };
    let Ok(e) = e.with_rounding(rounding()) else {
        return;
    };
    if black_box(true) {
        ema_ops(e, params, out, alpha, bytes);
    } else {
        ema_ops(e.with_policy::<Skip>(), params, out, alpha, bytes);
    }
}

fn ema_ops<A: EmaShadow, P: InputPolicy>(
    mut e: Ema<A, &mut [A], P>,
    params: &[A::Param],
    out: &mut [A::Param],
    alpha: A::Coef,
    bytes: &mut [u8],
) {
    let _ = black_box(e.update(black_box(params)));
    let _ = black_box(e.read_into(black_box(&mut *out)));
    let _ = black_box(e.switch_into(black_box(&mut *out)));
    black_box((
        e.steps(),
        e.ema_steps(),
        e.saturated(),
        e.skipped(),
        e.len(),
        e.is_empty(),
        e.alpha(),
    ));
    black_box((e.schedule(), e.init(), e.rounding(), e.shadow().len()));
    black_box(A::coef_to_f64(alpha));
    let _ = black_box(e.encode(black_box(&mut *bytes)));
    black_box(e.encoded_len());
    let _ = black_box(e.decode(black_box(&*bytes)));
    e.reset();
    black_box(e.into_inner());
}

fn swa<A: SwaAccumulator>(params: &[A::Param], out: &mut [A::Param], bytes: &mut [u8]) {
    let mut storage = [A::ZERO; N];
    let s = Swa::new(&mut storage[..]);
    let acc = if black_box(true) {
        swa_ops(s, params, out, bytes)
    } else {
        swa_ops(s.with_policy::<Skip>(), params, out, bytes)
    };
    let _ = black_box(Swa::from_parts(acc, black_box(3)).map(|s| s.count()));
}

fn swa_ops<'a, A: SwaAccumulator, P: InputPolicy>(
    mut s: Swa<A, &'a mut [A], P>,
    params: &[A::Param],
    out: &mut [A::Param],
    bytes: &mut [u8],
) -> &'a mut [A] {
    let _ = black_box(s.update(black_box(params)));
    let _ = black_box(s.read_into(black_box(&mut *out)));
    black_box((
        s.count(),
        s.skipped(),
        s.len(),
        s.is_empty(),
        s.accumulator().len(),
    ));
    let _ = black_box(s.encode(black_box(&mut *bytes)));
    let _ = black_box(s.decode(black_box(&*bytes)));
    s.reset();
    s.into_inner()
}

fn bank<A: EmaShadow>(params: &[A::Param], out: &mut [A::Param], bytes: &mut [u8])
where
    A::Param: polyak::bank::MixParam,
{
    let mut storage = [[A::ZERO; 2]; N];
    let built = match black_box(0u8) {
        0 => EmaBank::with_schedules(&mut storage[..], [schedule(), schedule()]),
        1 => EmaBank::with_schedules_debiased(&mut storage[..], [schedule(), schedule()]),
        _ => EmaBank::new(&mut storage[..], [black_box(0.9), black_box(0.99)]),
    };
    let Ok(b) = built else { return };
    let Ok(b) = b.with_rounding(rounding()) else {
        return;
    };
    if black_box(true) {
        bank_ops(b, params, out, bytes);
    } else {
        bank_ops(b.with_policy::<Skip>(), params, out, bytes);
    }
}

fn bank_ops<A: EmaShadow, P: InputPolicy>(
    mut b: EmaBank<A, &mut [[A; 2]], 2, P>,
    params: &[A::Param],
    out: &mut [A::Param],
    bytes: &mut [u8],
) where
    A::Param: polyak::bank::MixParam,
{
    let _ = black_box(b.update(black_box(params)));
    let _ = black_box(b.update_from_iter(black_box(params).iter().copied()));
    let _ = black_box(b.read_into(black_box(1), black_box(&mut *out)));
    let _ = black_box(b.switch_into(black_box(0), black_box(&mut *out)));
    let _ = black_box(b.mixture_into(black_box(&[1.0, 0.5]), black_box(&mut *out)));
    let _ = black_box(b.read_chunks(black_box(1), |c| {
        black_box(c);
    }));
    black_box((
        b.steps(),
        b.ema_steps(),
        b.alphas(),
        b.saturated(),
        b.skipped(),
        b.len(),
        b.schedules(),
    ));
    let _ = black_box(b.encode(black_box(&mut *bytes)));
    let _ = black_box(b.decode(black_box(&*bytes)));
    black_box(b.into_inner());
}

/// A sink that discards.
struct Null;
impl<T> SnapshotSink<T> for Null {
    type Error = ();
    fn begin(&mut self, meta: &SnapshotMeta) -> Result<(), ()> {
        black_box(meta);
        Ok(())
    }
    fn write(&mut self, chunk: &[T]) -> Result<(), ()> {
        black_box(chunk.len());
        Ok(())
    }
    fn end(&mut self) -> Result<(), ()> {
        Ok(())
    }
}

/// A RAM-backed NOR flash for the store, written without panic paths.
struct RamFlash([u8; 4096]);

#[derive(Debug)]
struct FlashError;
impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        NorFlashErrorKind::Other
    }
}
impl ErrorType for RamFlash {
    type Error = FlashError;
}
impl ReadNorFlash for RamFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let start = offset as usize;
        let src = self
            .0
            .get(start..start.saturating_add(bytes.len()))
            .ok_or(FlashError)?;
        for (d, s) in bytes.iter_mut().zip(src) {
            *d = *s;
        }
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.0.len()
    }
}
impl NorFlash for RamFlash {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = 256;
    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        self.0
            .get_mut(from as usize..to as usize)
            .ok_or(FlashError)?
            .fill(0xFF);
        Ok(())
    }
    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let start = offset as usize;
        let dst = self
            .0
            .get_mut(start..start.saturating_add(bytes.len()))
            .ok_or(FlashError)?;
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d &= s;
        }
        Ok(())
    }
}

struct NullWrite;
impl Write for NullWrite {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        black_box(s);
        Ok(())
    }
}

fn window<A: SwaAccumulator>(params: &[A::Param], out: &mut [A::Param], bytes: &mut [u8])
where
    A::Param: Element,
{
    let mut sum = [A::ZERO; N];
    let mut ring = [A::PARAM_ZERO; 4 * N];
    let Ok(store) = RamRing::new(&mut ring[..], black_box(N)) else {
        return;
    };
    if let Ok(w) = Window::new(&mut sum[..], store, black_box(3)) {
        let mut w = w.with_resum_every(core::num::NonZeroU64::MIN);
        let _ = black_box(w.update(black_box(params)));
        let _ = black_box(w.read_into(black_box(&mut *out)));
        let _ = black_box(w.resum());
        black_box((w.count(), w.slides(), w.sum().len()));
        let _ = black_box(w.encode(black_box(&mut *bytes)));
        let _ = black_box(w.decode(black_box(&*bytes)));
    }
}

fn moments<A: Moment>(
    params: &[A::Param],
    out: &mut [A::Param],
    var: &mut [A::Var],
    bytes: &mut [u8],
) {
    let mut m = Moments::new([A::ZERO; N]);
    let _ = black_box(m.update(black_box(params)));
    let _ = black_box(m.update_batch(black_box(params)));
    let _ = black_box(m.mean_into(black_box(&mut *out)));
    let _ = black_box(m.variance_into(black_box(&mut *var), black_box(1)));
    let _ = black_box(m.write_into(black_box(&mut *out), black_box(&mut *var)));
    black_box((m.count(), m.len(), m.is_empty()));
    let _ = black_box(m.encode(black_box(&mut *bytes)));
    let _ = black_box(m.decode(black_box(&*bytes)));
    m.reset();
}

fn naswa<A: NormAcc>(params: &[A::Param], out: &mut [A::Param]) {
    let mut storage = [A::ZERO; N];
    let Ok(mut layout) = Layout::<2>::single("a", black_box(N / 2)) else {
        return;
    };
    let _ = layout.push("b", black_box(N / 2));
    let scope = if black_box(true) {
        NormScope::PerSegment
    } else {
        NormScope::Overall
    };
    if let Ok(mut n) = Naswa::new(&mut storage[..], layout, black_box(0.1), scope) {
        let _ = black_box(n.update(black_box(params)));
        let _ = black_box(n.read_into(black_box(&mut *out)));
        black_box((n.rejected(), n.tau(), n.swa().count()));
        let mut bytes = [0u8; 512];
        let _ = black_box(n.encode(black_box(&mut bytes[..])));
        let _ = black_box(n.decode(black_box(&bytes[..])));
        n.reset();
    }
}

fn weighted<A: WeightedAcc + Element>(params: &[A::Param], out: &mut [A::Param], w: A::Weight) {
    let mut avg = WeightedAverage::new([A::ZERO; N]);
    let _ = black_box(avg.fold(black_box(params), w));
    let _ = black_box(avg.fold_uniform(black_box(params)));
    let _ = black_box(avg.finish(black_box(&mut *out)));
    if let Ok(mut layout) = Layout::<2>::single("a", black_box(N / 2)) {
        let _ = layout.push("b", black_box(N / 2));
        let _ = black_box(avg.finish_segments(&mut *out, &layout, black_box(&[true, false])));
    }
    black_box((avg.models(), avg.total(), avg.len()));
    let mut bytes = [0u8; 1024];
    let _ = black_box(avg.encode(black_box(&mut bytes[..])));
    let _ = black_box(avg.decode(black_box(&bytes[..])));
    if let Ok(mut m) = MaskedAverage::new([A::ZERO; N], [0u32; 1]) {
        let _ = black_box(m.fold(black_box(params), w));
        let _ = black_box(m.fold(black_box(params), w));
        let _ = black_box(m.finish(black_box(&mut *out)));
        black_box(m.in_mask(black_box(3)));
        let mut bytes = [0u8; 1024];
        let _ = black_box(m.encode(black_box(&mut bytes[..])));
        let _ = black_box(m.decode(black_box(&bytes[..])));
        m.reset();
    }
    avg.reset();
}

fn task<A: TaskAcc + Element>(params: &[A::Param], out: &mut [A::Param], w: A::Weight) {
    let mut t = TaskArithmetic::new([A::ZERO; N]);
    let _ = black_box(t.fold(black_box(params), black_box(params), w));
    let drop = Drop {
        rate: black_box(0.3),
        seed: black_box(7),
        model: black_box(1),
    };
    let _ = black_box(t.fold_dare(black_box(params), black_box(params), w, drop));
    let _ = black_box(t.finish(black_box(params), w, black_box(&mut *out)));
    let mut bytes = [0u8; 1024];
    let _ = black_box(t.encode(black_box(&mut bytes[..])));
    let _ = black_box(t.decode(black_box(&bytes[..])));
    t.reset();
}

fn ties<T: TiesElem>(params: &[T], out: &mut [T], lambda: T::Lambda)
where
    TiesAcc<T::Sum>: Element,
{
    let mut t = Ties::new([TiesAcc::<T::Sum>::default(); N]);
    let _ = black_box(t.fold(black_box(params), black_box(params), black_box(0.3)));
    let _ = black_box(t.finish(black_box(params), lambda, black_box(&mut *out)));
    let mut bytes = [0u8; 1024];
    let _ = black_box(t.encode(black_box(&mut bytes[..])));
    let _ = black_box(t.decode(black_box(&bytes[..])));
    t.reset();
}

fn robust<T: Robust>(params: &[T], out: &mut [T]) {
    let models = [params, params, params];
    let _ = black_box(median(black_box(&models[..]), black_box(&mut *out)));
    let _ = black_box(trimmed_mean(
        black_box(&models[..]),
        black_box(1),
        black_box(&mut *out),
    ));
}

fn dual<A: DualAcc>(params: &[A::Param], out: &mut [A::Param], beta: A::Beta) {
    let mut d = DualAveraging::new([A::ZERO; N]);
    let _ = black_box(d.add(black_box(params)));
    let _ = black_box(d.readout(beta, black_box(&mut *out)));
    let _ = black_box(d.mean_into(black_box(&mut *out)));
    black_box((d.count(), d.sum().len()));
    let mut bytes = [0u8; 1024];
    let _ = black_box(d.encode(black_box(&mut bytes[..])));
    let _ = black_box(d.decode(black_box(&bytes[..])));
    d.reset();
}

#[entry]
fn main() -> ! {
    let mut bytes = [0u8; 1024];
    let pf: [f32; N] = black_box([0.5; N]);
    let p15: [Q15; N] = black_box([Q15::ZERO; N]);
    let p31: [Q31; N] = black_box([Q31::ZERO; N]);
    let (mut of, mut o15, mut o31) = ([0.0f32; N], [Q15::ZERO; N], [Q31::ZERO; N]);
    let a31 = U1F31::from_bits(black_box(1 << 20));

    #[cfg(feature = "ema")]
    {
        ema::<f32>(&pf, &mut of, black_box(0.01), &mut bytes);
        ema::<CompF32>(&pf, &mut of, black_box(0.01), &mut bytes);
        ema::<I1F31>(&p15, &mut o15, a31, &mut bytes);
        ema::<Q15Ef>(&p15, &mut o15, a31, &mut bytes);
        ema::<I1F15>(&p15, &mut o15, a31, &mut bytes);
        ema::<I2F62>(&p31, &mut o31, a31, &mut bytes);
    }

    #[cfg(feature = "swa")]
    {
        swa::<CompF32>(&pf, &mut of, &mut bytes);
        swa::<I49F15>(&p15, &mut o15, &mut bytes);
        swa::<I33F31>(&p31, &mut o31, &mut bytes);
    }

    #[cfg(feature = "bank")]
    {
        bank::<f32>(&pf, &mut of, &mut bytes);
        bank::<CompF32>(&pf, &mut of, &mut bytes);
        bank::<I1F31>(&p15, &mut o15, &mut bytes);
        bank::<I2F62>(&p31, &mut o31, &mut bytes);
    }

    // merging
    #[cfg(feature = "merge")]
    {
        let (mf, m15, m31) = (black_box(&pf[..]), black_box(&p15[..]), black_box(&p31[..]));
        let _ = black_box(merge::weighted_average(
            &[mf, mf],
            black_box(&[1.0, 2.0]),
            &mut of,
        ));
        let _ = black_box(merge::fedavg(&[mf, mf], black_box(&[1, 2]), &mut of));
        let _ = black_box(merge::interpolate(mf, mf, black_box(0.3), &mut of));
        let _ = black_box(merge::weighted_average(
            &[m15, m15],
            black_box(&[1, 2]),
            &mut o15,
        ));
        let _ = black_box(merge::fedavg(&[m15, m15], black_box(&[1, 2]), &mut o15));
        let _ = black_box(merge::interpolate(m15, m15, a31, &mut o15));
        let _ = black_box(merge::weighted_average(
            &[m31, m31],
            black_box(&[1, 2]),
            &mut o31,
        ));
        let _ = black_box(merge::interpolate(m31, m31, a31, &mut o31));
    }

    // schedules
    #[cfg(feature = "schedule")]
    {
        let s = schedule();
        let _ = black_box(s.validate());
        black_box((
            s.alpha(black_box(7)),
            s.action(black_box(9), black_box(4)),
            s.is_constant(),
            s.to_bytes(),
        ));
        black_box(s.decay.alpha_rel_error());
        let _ = black_box(Schedule::power_sigma_rel(black_box(0.05)));
        let _ = black_box(sigma_rel_to_gamma(black_box(0.1)));
        black_box(gamma_to_sigma_rel(black_box(7.0)));
    }

    // post-hoc recording
    #[cfg(feature = "posthoc")]
    {
        let mut storage = [[CompF32::ZERO; 2]; N];
        if let Ok(mut ph) = PostHoc::new(
            &mut storage[..],
            [black_box(0.05), black_box(0.1)],
            black_box(4),
        ) {
            let _ = black_box(ph.update(&pf, &mut Null));
            let _ = black_box(ph.snapshot(&mut Null));
            black_box((ph.gammas(), ph.snapshots(), ph.bank().len()));
            let _ = black_box(ph.encode(black_box(&mut bytes[..])));
            let _ = black_box(ph.decode(black_box(&bytes[..])));
        }
    }

    // codec and store
    #[cfg(feature = "store")]
    {
        black_box(crc32(black_box(&bytes[..16])));
        let mut flash = RamFlash([0xFF; 4096]);
        if let Ok(mut store) = Store::new(&mut flash, black_box(0), black_box(1024)) {
            let mut storage = [CompF32::ZERO; N];
            if let Ok(mut e) = Ema::new(&mut storage[..], black_box(0.9)) {
                let _ = black_box(e.update(&pf));
                let _ = black_box(store.commit(&e));
                let _ = black_box(store.restore(&mut e));
                let _ = black_box(store.latest());
            }
        }
    }

    #[cfg(feature = "swalr")]
    {
        let shape = if black_box(true) {
            Anneal::Cosine
        } else {
            Anneal::Linear
        };
        let rate = if black_box(true) {
            Rate::Anneal {
                lr_avg: black_box(0.01),
                steps: black_box(10),
                shape,
            }
        } else {
            Rate::Cyclic {
                high: black_box(0.1),
                low: black_box(0.01),
                cycle: black_box(7),
            }
        };
        let s = SwaSchedule {
            start: black_box(100),
            every: black_box(5),
            lr_train: black_box(0.1),
            rate,
        };
        let _ = black_box(s.validate());
        black_box((
            s.lr(black_box(123)),
            s.snapshot(black_box(130)),
            s.lr_rel_error(),
        ));
    }

    #[cfg(feature = "naswa")]
    {
        naswa::<CompF32>(&pf, &mut of);
        naswa::<I49F15>(&p15, &mut o15);
        naswa::<I33F31>(&p31, &mut o31);
    }

    #[cfg(feature = "window")]
    {
        window::<CompF32>(&pf, &mut of, &mut bytes);
        window::<I49F15>(&p15, &mut o15, &mut bytes);
        window::<I33F31>(&p31, &mut o31, &mut bytes);
    }

    #[cfg(feature = "moments")]
    {
        let mut vf = [0.0f32; N];
        let mut v31 = [Q31::ZERO; N];
        moments::<MomentF32>(&pf, &mut of, &mut vf, &mut bytes);
        moments::<MomentQ15>(&p15, &mut o15, &mut v31, &mut bytes);
        moments::<MomentQ31>(&p31, &mut o31, &mut v31, &mut bytes);
        let mut rng = Normal::new(black_box(7));
        black_box(rng.sample());
        let m = Moments::new([MomentF32::ZERO; N]);
        let _ = black_box(m.sample_into(&mut rng, black_box(1.0), &mut of));
    }

    #[cfg(feature = "aggregate")]
    {
        let (i16_, q) = (I16F16::from_bits(black_box(1 << 15)), black_box(3u32));
        weighted::<CompF32>(&pf, &mut of, black_box(0.5));
        weighted::<I49F15>(&p15, &mut o15, q);
        weighted::<I33F31>(&p31, &mut o31, q);
        task::<CompF32>(&pf, &mut of, black_box(0.5));
        task::<i64>(&p15, &mut o15, i16_);
        task::<i128>(&p31, &mut o31, i16_);
        ties::<f32>(&pf, &mut of, black_box(0.5));
        ties::<Q15>(&p15, &mut o15, i16_);
        robust::<f32>(&pf, &mut of);
        robust::<Q15>(&p15, &mut o15);
        robust::<Q31>(&p31, &mut o31);
        dual::<CompF32>(&pf, &mut of, black_box(2.0));
        dual::<I49F15>(&p15, &mut o15, i16_);
        dual::<I33F31>(&p31, &mut o31, i16_);
        let mut ida = WeightedAverage::new([CompF32::ZERO; N]);
        let _ = black_box(ida.fold_inverse_distance(&pf, &pf, black_box(0.1)));
        if let Ok(layout) = Layout::<1>::single("w", black_box(N)) {
            if let Ok(mut vc) = VarianceCorrected::new([CompF32::ZERO; N], layout.clone()) {
                let _ = black_box(vc.fold(&pf));
                let _ = black_box(vc.finish(&mut of));
                let _ = black_box(vc.encode(black_box(&mut bytes[..])));
                let _ = black_box(vc.decode(black_box(&bytes[..])));
                vc.reset();
            }
            let _ = black_box(merge::interpolate_segments(
                &pf,
                &pf,
                &layout,
                &[black_box(0.3)],
                &mut of,
            ));
            let _ = black_box(merge::interpolate_segments(
                &p15,
                &p15,
                &layout,
                &[a31],
                &mut o15,
            ));
        }
        let _ = black_box(merge::slerp(&pf, black_box(&pf), black_box(0.4), &mut of));
        if let Ok(mut f) = Fisher::new([FisherAcc::ZERO; N], black_box(1e-6)) {
            let _ = black_box(f.fold(&pf, black_box(&pf)));
            let _ = black_box(f.finish(&mut of));
            f.reset();
            let _ = black_box(f.fold_delta(&pf, black_box(&pf), black_box(&pf)));
            let _ = black_box(f.finish_delta(&pf, black_box(&pf), &mut of));
            let _ = black_box(f.encode(black_box(&mut bytes[..])));
            let _ = black_box(f.decode(black_box(&bytes[..])));
        }
        if let Ok(mut p) = Participation::<4>::new(black_box(8)) {
            let _ = black_box(p.record_round(black_box(&[0, 2])));
            let _ = black_box(p.weight(black_box(2)));
            let _ = black_box(p.weight_fixed(black_box(2)));
            black_box(p.rounds());
            let _ = black_box(p.encode(black_box(&mut bytes[..])));
            let _ = black_box(p.decode(black_box(&bytes[..])));
            p.reset();
        }
    }

    #[cfg(feature = "chunk")]
    chunked(&pf, &p15, &mut of, &mut bytes);

    // errors render without panicking
    #[cfg(feature = "errors")]
    let _ = write!(
        NullWrite,
        "{}",
        black_box(polyak::Error::LengthMismatch {
            expected: 3,
            found: 4
        })
    );

    loop {
        cortex_m_rt::heap_start();
    }
}
