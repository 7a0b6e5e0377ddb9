//! `mixer report`: run the telemetry report of completed requests (one typed-JSON attribute
//! object per line) through a config, then flush every buffer and write the Prometheus
//! exposition of every prometheus handler. Log entries go where the config's stdio handler says.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use mixer_adapters::prometheus::{self, Format};
use mixer_core::{CompileOptions, Pipeline};
use mixer_host::EventLoop;

use crate::session::{self, Session};

/// Adapters another build provides, whose handlers `report` skips with a note when this build
/// lacks them (the Istio default config's attribute generator).
const SKIPPABLE_ADAPTERS: &[&str] = &["kubernetesenv"];

/// `mixer report --config FILE_OR_DIR... --requests FILE.jsonl [--prometheus-out FILE] [--openmetrics]`
#[derive(clap::Args, Debug)]
pub struct ReportCommand {
    /// Config files or directories (YAML, or `.pb` protobuf).
    #[arg(long = "config", required = true, num_args = 1..)]
    config: Vec<PathBuf>,
    /// Completed requests, one JSON object of typed attribute values per line, reported in order.
    #[arg(long)]
    requests: PathBuf,
    /// Write the Prometheus exposition here (default: standard output).
    #[arg(long = "prometheus-out")]
    prometheus_out: Option<PathBuf>,
    /// Write OpenMetrics instead of the Prometheus text format.
    #[arg(long)]
    openmetrics: bool,
}

/// Compiles `loaded`, skipping only the handlers of [`SKIPPABLE_ADAPTERS`] that this build lacks.
fn start(loaded: &mixer_config::LoadedConfig) -> anyhow::Result<Session> {
    let registry = mixer_adapters::registry();
    let skip = loaded
        .config
        .handlers
        .iter()
        .any(|h| registry.get(&h.adapter).is_none())
        && loaded
            .config
            .handlers
            .iter()
            .filter(|h| registry.get(&h.adapter).is_none())
            .all(|h| SKIPPABLE_ADAPTERS.contains(&h.adapter.as_str()));
    let options = CompileOptions {
        skip_unknown_adapters: skip,
        ..Default::default()
    };
    let event_loop = EventLoop::new();
    let platform = event_loop.platform();
    let snapshot = mixer_config::compile_loaded(loaded, &registry, &platform, None, &options)
        .map_err(|errors| {
            let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::anyhow!("config rejected:\n{}", shown.join("\n"))
        })?;
    let mut notes = loaded.notes.clone();
    notes.extend(snapshot.warnings.iter().cloned());
    let pipeline = Pipeline::new(snapshot, platform);
    let worker = pipeline.worker(Arc::new(event_loop.clone()));
    Ok(Session {
        event_loop,
        pipeline,
        worker,
        notes,
    })
}

pub fn run(cmd: ReportCommand) -> anyhow::Result<ExitCode> {
    let loaded = session::load(&cmd.config, None)?;
    let s = start(&loaded)?;
    for n in &s.notes {
        eprintln!("note: {n}");
    }
    let vocab = s.pipeline.snapshot().vocabulary.clone();
    let file = std::fs::File::open(&cmd.requests)
        .with_context(|| format!("opening {}", cmd.requests.display()))?;
    let (mut requests, mut instances, mut failed) = (0usize, 0usize, 0usize);
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let what = format!("{}:{}", cmd.requests.display(), n + 1);
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                failed += 1;
                eprintln!("{what}: cannot read: {e}");
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match session::bag_from_json(&vocab, &line, &what) {
            Ok(bag) => {
                requests += 1;
                let summary = s.worker.report(&bag);
                instances += summary.instances_sent;
                if summary.instance_errors > 0 {
                    failed += 1;
                    eprintln!(
                        "{what}: {} instance(s) could not be built (an attribute they need is missing or has the wrong type)",
                        summary.instance_errors
                    );
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("{e:#}");
            }
        }
        // Let timers and posted batch deliveries run as a proxy's loop would.
        s.event_loop.run_ready();
    }
    s.pipeline.flush();
    let format = if cmd.openmetrics {
        Format::OpenMetrics
    } else {
        Format::Text
    };
    let snapshot = s.pipeline.snapshot();
    let exposition = prometheus::render(&snapshot, format);
    match &cmd.prometheus_out {
        Some(path) => {
            std::fs::write(path, &exposition)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(exposition.as_bytes())?;
            out.flush()?;
        }
    }
    for h in &snapshot.handlers {
        let d = h.report_dispatch.stats();
        let get = mixer_core::dispatch::DispatchStats::get;
        if get(&d.dropped) > 0 || get(&d.sampled_out) > 0 {
            eprintln!(
                "handler {}: {} instances sampled out, {} dropped (queue full)",
                h.name,
                get(&d.sampled_out),
                get(&d.dropped)
            );
        }
    }
    for p in prometheus::handlers(&snapshot) {
        if p.errors() > 0 {
            eprintln!(
                "handler {}: {} metric values were not numbers and were not recorded",
                p.name(),
                p.errors()
            );
        }
    }
    eprintln!("reported {requests} requests ({instances} instances); {failed} lines with errors");
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
