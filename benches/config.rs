//! Config front-end: loading the Istio 1.4 default Mixer config (YAML -> `mixer.v2.Config`),
//! loading + compiling it (unknown adapters skipped until this build has them all), and one
//! `Pipeline::swap` of a compiled snapshot.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use mixer_config::{compile_loaded, idle_platform, load_str};
use mixer_core::{CompileOptions, Pipeline};

fn bench(c: &mut Criterion) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/istio-configs/istio-1.4-default-mixer-config.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let registry = mixer_adapters::registry();
    let platform = idle_platform();
    let options = CompileOptions {
        skip_unknown_adapters: true,
        ..Default::default()
    };

    c.bench_function("config/load_istio_default", |b| {
        b.iter(|| black_box(load_str("istio.yaml", black_box(&text)).unwrap()))
    });
    c.bench_function("config/load_and_compile_istio_default", |b| {
        b.iter(|| {
            let loaded = load_str("istio.yaml", black_box(&text)).unwrap();
            black_box(compile_loaded(&loaded, &registry, &platform, None, &options).unwrap())
        })
    });

    let loaded = load_str("istio.yaml", &text).unwrap();
    let first = compile_loaded(&loaded, &registry, &platform, None, &options).unwrap();
    let pipeline = Pipeline::new(first, platform.clone());
    c.bench_function("config/compile_against_previous", |b| {
        b.iter(|| {
            let previous = pipeline.snapshot();
            black_box(
                compile_loaded(&loaded, &registry, &platform, Some(&previous), &options).unwrap(),
            )
        })
    });
    c.bench_function("config/pipeline_swap", |b| {
        b.iter_batched(
            || {
                let previous = pipeline.snapshot();
                compile_loaded(&loaded, &registry, &platform, Some(&previous), &options).unwrap()
            },
            |next| black_box(pipeline.swap(next)),
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
