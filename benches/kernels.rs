//! Host benchmarks of the averaging kernels beside the memory-bandwidth
//! ceiling measured in the same run, at 4 Ki, 64 Ki, 1 Mi and 16 Mi
//! elements: the in-place update `s[i] += a * (x[i] - s[i])` and a
//! `copy_from_slice` of the same bytes, over 64-byte-aligned buffers.
//! At the end it prints each kernel as ns/element and as the ceiling's
//! share of its time (1.0 = at the ceiling).
//!
//! ```text
//! cargo bench --bench kernels            # everything (a few minutes)
//! cargo bench --bench kernels -- 4096    # one size
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use polyak::aggregate::WeightedAverage;
use polyak::chunk::Chunked;
use polyak::layout::Layout;
use polyak::{Checked, CompF32, Ema, EmaBank, I1F31, I2F62, I33F31, I49F15, Q15, Q31, Swa, merge};
use polyak_host::aligned::AlignedBuf;

const SIZES: [usize; 4] = [4 << 10, 64 << 10, 1 << 20, 16 << 20];
const GROUP: &str = "update";

/// The ceiling: the plain in-place EMA step, no checks, no state.
fn ceiling(s: &mut [f32], x: &[f32], a: f32) {
    for (s, &x) in s.iter_mut().zip(x) {
        *s += a * (x - *s);
    }
}

/// The running mean as users write it (PyTorch's `swa_utils` default):
/// `m += (x − m)/n`.
fn running_mean(m: &mut [f32], x: &[f32], n: f32) {
    for (m, &x) in m.iter_mut().zip(x) {
        *m += (x - *m) / n;
    }
}

fn kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group(GROUP);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_millis(1500));
    for n in SIZES {
        g.sample_size(if n >= 1 << 20 { 10 } else { 30 });
        g.throughput(Throughput::Elements(n as u64));
        let x: AlignedBuf<f32> =
            AlignedBuf::from_slice(&(0..n).map(|i| (i as f32 * 0.001).sin()).collect::<Vec<_>>());
        let q: AlignedBuf<Q15> = AlignedBuf::from_slice(
            &x.iter()
                .map(|&v| Q15::from_num(v * 0.5))
                .collect::<Vec<_>>(),
        );
        let q31: AlignedBuf<Q31> = AlignedBuf::from_slice(
            &x.iter()
                .map(|&v| Q31::from_num(v * 0.5))
                .collect::<Vec<_>>(),
        );
        let cx = Checked::new(&x).unwrap();

        let mut s = AlignedBuf::new(n, 0.0f32);
        g.bench_function(BenchmarkId::new("ceiling_inplace", n), |b| {
            b.iter(|| ceiling(black_box(&mut s), black_box(&x), 0.001))
        });
        let mut dst = AlignedBuf::new(n, 0.0f32);
        g.bench_function(BenchmarkId::new("copy", n), |b| {
            b.iter(|| black_box(&mut dst).copy_from_slice(black_box(&x)))
        });
        let mut ema = Ema::new(AlignedBuf::new(n, 0.0f32), 0.999).unwrap();
        g.bench_function(BenchmarkId::new("ema_f32", n), |b| {
            b.iter(|| ema.update(black_box(&x)).unwrap())
        });
        g.bench_function(BenchmarkId::new("ema_f32_checked", n), |b| {
            b.iter(|| ema.update_checked(black_box(cx)).unwrap())
        });
        g.bench_function(BenchmarkId::new("check_f32", n), |b| {
            b.iter(|| Checked::new(black_box(&x)).map(|c| c.as_slice().len()))
        });
        // the same EMA step given as 1 KiB pages (256 f32) in a scrambled
        // order, each page checked, coverage tracked
        let mut paged: Chunked<_, 2048> =
            Chunked::new(Ema::new(AlignedBuf::new(n, 0.0f32), 0.999).unwrap(), 256).unwrap();
        let pages = n / 256;
        g.bench_function(BenchmarkId::new("ema_f32_pages", n), |b| {
            b.iter(|| {
                paged.begin(()).unwrap();
                for k in 0..pages {
                    let p = (k * 389) % pages;
                    let r = p * 256..(p + 1) * 256;
                    paged.update_chunk(r.start, black_box(&x[r])).unwrap();
                }
                paged.finish().unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("ema_f32_pages_in_order", n), |b| {
            b.iter(|| {
                paged.begin(()).unwrap();
                for p in 0..pages {
                    let r = p * 256..(p + 1) * 256;
                    paged.update_chunk(r.start, black_box(&x[r])).unwrap();
                }
                paged.finish().unwrap()
            })
        });
        let mut comp = Ema::new(AlignedBuf::new(n, CompF32::ZERO), 0.999).unwrap();
        g.bench_function(BenchmarkId::new("ema_f32_compensated", n), |b| {
            b.iter(|| comp.update_checked(black_box(cx)).unwrap())
        });
        let mut e15 = Ema::new(AlignedBuf::new(n, I1F31::ZERO), 0.999).unwrap();
        g.bench_function(BenchmarkId::new("ema_q15", n), |b| {
            b.iter(|| e15.update(black_box(&q)).unwrap())
        });
        let mut e31 = Ema::new(AlignedBuf::new(n, I2F62::ZERO), 0.999).unwrap();
        g.bench_function(BenchmarkId::new("ema_q31", n), |b| {
            b.iter(|| e31.update(black_box(&q31)).unwrap())
        });
        let mut swa = Swa::new(AlignedBuf::new(n, CompF32::ZERO));
        g.bench_function(BenchmarkId::new("swa_f32_compensated", n), |b| {
            b.iter(|| {
                if swa.count() > 1 << 23 {
                    swa.reset();
                }
                swa.update_checked(black_box(cx)).unwrap()
            })
        });
        let mut m = AlignedBuf::new(n, 0.0f32);
        let mut count = 0.0f32;
        g.bench_function(BenchmarkId::new("running_mean", n), |b| {
            b.iter(|| {
                count += 1.0;
                running_mean(black_box(&mut m), black_box(&x), count)
            })
        });
        let mut s15 = Swa::new(AlignedBuf::new(n, I49F15::ZERO));
        g.bench_function(BenchmarkId::new("swa_q15", n), |b| {
            b.iter(|| s15.update(black_box(&q)).unwrap())
        });
        let mut s31 = Swa::new(AlignedBuf::new(n, I33F31::ZERO));
        g.bench_function(BenchmarkId::new("swa_q31", n), |b| {
            b.iter(|| s31.update(black_box(&q31)).unwrap())
        });
        let mut bank = EmaBank::new(AlignedBuf::new(n, [0.0f32; 3]), [0.9, 0.99, 0.999]).unwrap();
        g.bench_function(BenchmarkId::new("bank3_f32", n), |b| {
            b.iter(|| bank.update_checked(black_box(cx)).unwrap())
        });
        // a weighted merge folding 4 models (the same one, 4 times)
        let mut avg = WeightedAverage::new(AlignedBuf::new(n, CompF32::ZERO));
        let mut out = AlignedBuf::new(n, 0.0f32);
        g.bench_function(BenchmarkId::new("merge4_f32", n), |b| {
            b.iter(|| {
                avg.reset();
                for w in [1.0, 2.0, 3.0, 4.0] {
                    avg.fold(black_box(&x), w).unwrap();
                }
                avg.finish(black_box(&mut out)).unwrap()
            })
        });
        // one buffer, and the same buffer as a network of 100 layers
        let mut layout: Layout<100> = Layout::new();
        for k in 0..100 {
            let len = n / 100 + usize::from(k < n % 100);
            layout.push("layer", len).unwrap();
        }
        let ts = [0.3f32; 100];
        g.bench_function(BenchmarkId::new("interpolate", n), |b| {
            b.iter(|| {
                merge::interpolate(black_box(&x), black_box(&s), 0.3, black_box(&mut out)).unwrap()
            })
        });
        g.bench_function(BenchmarkId::new("interpolate_100_segments", n), |b| {
            b.iter(|| {
                merge::interpolate_segments(
                    black_box(&x),
                    black_box(&s),
                    &layout,
                    &ts,
                    black_box(&mut out),
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// The mean time per iteration of one benchmark, from criterion's
/// `estimates.json`, in ns.
fn estimate(name: &str, n: usize) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target
        .join("criterion")
        .join(GROUP)
        .join(name)
        .join(n.to_string())
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let mean = text.get(text.find("\"mean\"")?..)?;
    let v = mean.get(mean.find("\"point_estimate\":")? + 17..)?;
    let end = v.find([',', '}'])?;
    v.get(..end)?.trim().parse().ok()
}

/// The table: ns/element and the ceiling's share.
fn report() {
    let names = [
        "ceiling_inplace",
        "copy",
        "ema_f32",
        "ema_f32_checked",
        "ema_f32_pages",
        "ema_f32_pages_in_order",
        "check_f32",
        "ema_f32_compensated",
        "ema_q15",
        "ema_q31",
        "swa_f32_compensated",
        "running_mean",
        "swa_q15",
        "swa_q31",
        "bank3_f32",
        "merge4_f32",
        "interpolate",
        "interpolate_100_segments",
    ];
    println!("\nns/element (ceiling time / kernel time)");
    print!("{:<26}", "kernel");
    for n in SIZES {
        print!("{:>20}", format!("{} Ki", n >> 10));
    }
    println!();
    for name in names {
        print!("{name:<26}");
        for n in SIZES {
            match (estimate(name, n), estimate("ceiling_inplace", n)) {
                (Some(t), Some(c)) => {
                    print!("{:>20}", format!("{:.3} ({:.2})", t / n as f64, c / t))
                }
                _ => print!("{:>20}", "-"),
            }
        }
        println!();
    }
    for n in SIZES {
        if let (Some(swa), Some(rm)) = (
            estimate("swa_f32_compensated", n),
            estimate("running_mean", n),
        ) {
            println!(
                "{} Ki: compensated SWA / running mean = {:.2}",
                n >> 10,
                swa / rm
            );
        }
        if let (Some(pages), Some(ordered), Some(whole)) = (
            estimate("ema_f32_pages", n),
            estimate("ema_f32_pages_in_order", n),
            estimate("ema_f32", n),
        ) {
            println!(
                "{} Ki: f32 EMA in 1 KiB pages / whole buffer: in order {:.3}, scrambled {:.3}",
                n >> 10,
                ordered / whole,
                pages / whole
            );
        }
        if let (Some(seg), Some(one)) = (
            estimate("interpolate_100_segments", n),
            estimate("interpolate", n),
        ) {
            println!(
                "{} Ki: 100 segments / one buffer = {:.3}",
                n >> 10,
                seg / one
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    kernels(&mut c);
    c.final_summary();
    report();
}
