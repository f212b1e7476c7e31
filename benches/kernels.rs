//! Host benchmarks of the averaging kernels beside the memory-bandwidth
//! ceiling measured in the same run: the in-place update
//! `s[i] += a * (x[i] - s[i])` over the same number of elements.
//!
//! ```text
//! cargo bench --bench kernels
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use polyak::{CompF32, Ema, I1F31, I49F15, Q15, Swa};
use std::hint::black_box;

const SIZES: [usize; 2] = [4 << 10, 64 << 10];

fn ceiling(s: &mut [f32], x: &[f32], a: f32) {
    for (s, &x) in s.iter_mut().zip(x) {
        *s += a * (x - *s);
    }
}

fn kernels(c: &mut Criterion) {
    let mut g = c.benchmark_group("update");
    for n in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.001).sin()).collect();
        let q: Vec<Q15> = x.iter().map(|&v| Q15::from_num(v * 0.5)).collect();

        let mut s = vec![0.0f32; n];
        g.bench_function(BenchmarkId::new("ceiling_inplace", n), |b| {
            b.iter(|| ceiling(black_box(&mut s), black_box(&x), 0.001))
        });
        let mut ema = Ema::new(vec![0.0f32; n], 0.999).unwrap();
        g.bench_function(BenchmarkId::new("ema_f32", n), |b| {
            b.iter(|| ema.update(black_box(&x)))
        });
        let mut comp = Ema::new(vec![CompF32::ZERO; n], 0.999).unwrap();
        g.bench_function(BenchmarkId::new("ema_f32_compensated", n), |b| {
            b.iter(|| comp.update(black_box(&x)))
        });
        let mut eq = Ema::new(vec![I1F31::ZERO; n], 0.999).unwrap();
        g.bench_function(BenchmarkId::new("ema_q15", n), |b| {
            b.iter(|| eq.update(black_box(&q)))
        });
        g.bench_function(BenchmarkId::new("swa_f32", n), |b| {
            b.iter_batched_ref(
                || Swa::new(vec![CompF32::ZERO; n]),
                |swa| swa.update(black_box(&x)),
                criterion::BatchSize::LargeInput,
            )
        });
        let mut sq = Swa::new(vec![I49F15::ZERO; n]);
        g.bench_function(BenchmarkId::new("swa_q15", n), |b| {
            b.iter(|| sq.update(black_box(&q)))
        });
    }
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
