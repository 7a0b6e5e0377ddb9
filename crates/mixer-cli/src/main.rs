//! The `mixer` command line: the operator's and proxy builder's window onto the library.
//!
//! Subcommands: `expr` (evaluate expressions, batch-grade the expression table), `demo` (the
//! scripted end-to-end run of the README), `check` and `config` (policy debugging), `report` (telemetry: metrics and access logs).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check_cmd;
mod config_cmd;
mod demo;
mod expr_cmd;
mod report_cmd;
mod session;

#[derive(Parser, Debug)]
#[command(
    name = "mixer",
    version,
    about = "Mixer V2: in-proxy policy and telemetry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Evaluate attribute expressions.
    Expr(expr_cmd::ExprCommand),
    /// Validate operator config (YAML or protobuf) and show what it compiles to.
    Config(config_cmd::ConfigCommand),
    /// Run the precondition check (and quotas) of requests against a config.
    Check(check_cmd::CheckCommand),
    /// Run the telemetry report of completed requests and write the Prometheus exposition.
    Report(report_cmd::ReportCommand),
    /// Run scripted Bookinfo-shaped traffic through the embedded config and print the results.
    Demo(demo::DemoCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Expr(cmd) => expr_cmd::run(cmd),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Check(cmd) => check_cmd::run(cmd),
        Command::Report(cmd) => report_cmd::run(cmd),
        Command::Demo(cmd) => demo::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mixer: {e:#}");
            ExitCode::from(2)
        }
    }
}
