//! The `mixer` command line: the operator's and proxy builder's window onto the library.
//!
//! Subcommands: `expr` (evaluate expressions, batch-grade the expression table), `demo` (the
//! scripted end-to-end run of the README), `check` and `config` (policy debugging).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod expr_cmd;

#[derive(Parser, Debug)]
#[command(name = "mixer", version, about = "Mixer V2: in-proxy policy and telemetry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Evaluate attribute expressions.
    Expr(expr_cmd::ExprCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Expr(cmd) => expr_cmd::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mixer: {e:#}");
            ExitCode::from(2)
        }
    }
}
