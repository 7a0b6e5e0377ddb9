//! `mixer check`: run the precondition check (and quotas) of one request, or of a file of
//! requests in order, against a config, and print each decision as one JSON object.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::session::{self, Session};

/// `mixer check --config FILE_OR_DIR (--attrs FILE.json | --requests FILE.jsonl)`
#[derive(clap::Args, Debug)]
pub struct CheckCommand {
    /// Config files or directories (YAML, or `.pb` protobuf).
    #[arg(long = "config", required = true, num_args = 1..)]
    config: Vec<PathBuf>,
    /// One request: a JSON object of typed attribute values.
    #[arg(long, conflicts_with = "requests")]
    attrs: Option<PathBuf>,
    /// Requests, one JSON object per line, run in order in one process in real time (caches and
    /// quotas live across lines).
    #[arg(long)]
    requests: Option<PathBuf>,
}

pub fn run(cmd: CheckCommand) -> anyhow::Result<ExitCode> {
    let loaded = session::load(&cmd.config, None)?;
    let s = Session::start(&loaded, &session::registry())?;
    for n in &s.notes {
        eprintln!("note: {n}");
    }
    let vocab = s.pipeline.snapshot().vocabulary.clone();
    let mut out = std::io::stdout().lock();
    match (&cmd.attrs, &cmd.requests) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let bag = session::bag_from_json(&vocab, &text, &path.display().to_string())?;
            let answer = s.check(&bag)?;
            writeln!(out, "{}", session::decision_json(&answer, &vocab))?;
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(path)) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut failed = false;
            for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
                let line = line.with_context(|| format!("reading {}", path.display()))?;
                if line.trim().is_empty() {
                    continue;
                }
                let what = format!("{}:{}", path.display(), n + 1);
                match session::bag_from_json(&vocab, &line, &what).and_then(|bag| s.check(&bag)) {
                    Ok(answer) => writeln!(out, "{}", session::decision_json(&answer, &vocab))?,
                    Err(e) => {
                        failed = true;
                        writeln!(out, "{}", serde_json::json!({"error": format!("{e:#}")}))?;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        _ => anyhow::bail!("give --attrs FILE.json or --requests FILE.jsonl"),
    }
}
