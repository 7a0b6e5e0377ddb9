//! `mixer expr`: evaluate one expression, or a batch of cases in the shared test-table format.

use std::process::ExitCode;

/// `mixer expr eval 'EXPR' --attrs FILE.json [--manifest FILE.json]` / `mixer expr --batch CASES.jsonl`
#[derive(clap::Args, Debug)]
pub struct ExprCommand {}

pub fn run(_cmd: ExprCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("mixer expr is not built yet")
}
