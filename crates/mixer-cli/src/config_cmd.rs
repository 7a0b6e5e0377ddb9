//! `mixer config`: validate operator config and show what it compiles to.
//!
//! - `mixer config validate FILE_OR_DIR... [--skip-unknown-adapters]`: exit 0 when the config is
//!   valid, 1 when not, with one error per line on stdout
//!   (`file:line:col: kind/namespace/name: field `f`: message`); notes and warnings on stderr.
//! - `mixer config show FILE_OR_DIR... [--skip-unknown-adapters]`: the compiled rules (match,
//!   actions -> handler (adapter) and instances (template)), handlers and instances, and the
//!   attributes each reads.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use mixer_attr::AttrId;
use mixer_config::{LoadedConfig, compile_loaded, idle_platform, load_paths};
use mixer_core::snapshot::{CompiledAction, CompiledRule, HeaderOpKind};
use mixer_core::{CompileOptions, Snapshot};

/// `mixer config validate|show FILE_OR_DIR...`
#[derive(clap::Args, Debug)]
pub struct ConfigCommand {
    #[command(subcommand)]
    command: ConfigSub,
}

#[derive(clap::Args, Debug)]
struct Inputs {
    /// YAML files (multi-document), directories (their *.yaml / *.yml) or *.pb files (a
    /// serialized mixer.v2.Config).
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    paths: Vec<PathBuf>,
    /// Skip handlers whose adapter this build lacks (with a warning) instead of rejecting them.
    #[arg(long)]
    skip_unknown_adapters: bool,
}

#[derive(clap::Subcommand, Debug)]
enum ConfigSub {
    /// Check config; exit 0 when valid, 1 when not (one error per line on stdout).
    Validate(Inputs),
    /// Print what the config compiles to: rules, handlers, instances and the attributes they read.
    Show(Inputs),
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd.command {
        ConfigSub::Validate(inputs) => match load_and_compile(&inputs) {
            Ok((loaded, snapshot)) => {
                eprintln!(
                    "valid: {} handlers, {} instances, {} rules ({} handlers built)",
                    loaded.config.handlers.len(),
                    loaded.config.instances.len(),
                    loaded.config.rules.len(),
                    snapshot.handlers.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => Ok(code),
        },
        ConfigSub::Show(inputs) => match load_and_compile(&inputs) {
            Ok((_, snapshot)) => {
                print!("{}", show(&snapshot));
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => Ok(code),
        },
    }
}

/// Loads and compiles; on failure prints the errors (stdout) and returns exit code 1.
fn load_and_compile(inputs: &Inputs) -> Result<(LoadedConfig, Snapshot), ExitCode> {
    let loaded = match load_paths(&inputs.paths) {
        Ok(l) => l,
        Err(errors) => {
            for e in &errors.0 {
                println!("{e}");
            }
            return Err(ExitCode::from(1));
        }
    };
    for note in &loaded.notes {
        eprintln!("note: {note}");
    }
    let registry = crate::session::registry();
    let options = CompileOptions {
        skip_unknown_adapters: inputs.skip_unknown_adapters,
        ..Default::default()
    };
    match compile_loaded(&loaded, &registry, &idle_platform(), None, &options) {
        Ok(snapshot) => {
            for w in &snapshot.warnings {
                eprintln!("warning: {w}");
            }
            Ok((loaded, snapshot))
        }
        Err(errors) => {
            for e in &errors {
                println!("{e}");
            }
            Err(ExitCode::from(1))
        }
    }
}

fn names(snapshot: &Snapshot, ids: impl IntoIterator<Item = AttrId>) -> String {
    let mut v: Vec<&str> = ids
        .into_iter()
        .map(|id| snapshot.vocabulary.name(id))
        .collect();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

fn rule_reads(rule: &CompiledRule) -> Vec<AttrId> {
    let mut ids: Vec<AttrId> = rule
        .predicate
        .iter()
        .flat_map(|p| p.attributes().iter().copied())
        .collect();
    for op in rule
        .request_header_ops
        .iter()
        .chain(&rule.response_header_ops)
    {
        for v in &op.values {
            ids.extend(v.attributes().iter().copied());
        }
    }
    ids
}

fn action_line(out: &mut String, snapshot: &Snapshot, stage: &str, a: &CompiledAction) {
    let (handler, adapter) = snapshot
        .handlers
        .get(a.handler)
        .map(|h| (h.name.to_string(), h.adapter))
        .unwrap_or_else(|| ("?".to_string(), "?"));
    let instances: Vec<String> = a
        .instances
        .iter()
        .filter_map(|i| snapshot.instances.get(*i))
        .map(|i| format!("{} ({})", i.name, i.template.name))
        .collect();
    let name = a
        .name
        .as_deref()
        .map(|n| format!(" [{n}]"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "    {stage}{name} -> {handler} ({adapter}): {}",
        instances.join(", ")
    );
}

/// The text `mixer config show` prints.
pub fn show(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rules ({}):", snapshot.rules.len());
    for rule in &snapshot.rules {
        let _ = writeln!(
            out,
            "  {}{}",
            rule.name,
            if rule.experimental {
                " (experimental)"
            } else {
                ""
            }
        );
        let m = rule
            .predicate
            .as_ref()
            .map(|p| p.source().to_string())
            .unwrap_or_else(|| "(every request)".into());
        let _ = writeln!(out, "    match: {m}");
        if let Some(ns) = &rule.namespace_scope {
            let _ = writeln!(out, "    only for destination.namespace == {ns}");
        }
        for (stage, actions) in [
            ("check", &rule.check_actions),
            ("quota", &rule.quota_actions),
            ("report", &rule.report_actions),
            ("mutate", &rule.mutation_actions),
        ] {
            for a in actions {
                action_line(&mut out, snapshot, stage, a);
            }
        }
        for (which, ops) in [
            ("request", &rule.request_header_ops),
            ("response", &rule.response_header_ops),
        ] {
            for op in ops {
                let kind = match op.kind {
                    HeaderOpKind::Replace => "replace",
                    HeaderOpKind::Remove => "remove",
                    HeaderOpKind::Append => "append",
                };
                let values: Vec<&str> = op.values.iter().map(|v| v.source()).collect();
                let _ = writeln!(
                    out,
                    "    {which} header {kind} {}: {}",
                    op.name,
                    values.join(", ")
                );
            }
        }
        let _ = writeln!(out, "    reads: {}", names(snapshot, rule_reads(rule)));
    }
    let _ = writeln!(out, "handlers ({}):", snapshot.handlers.len());
    for h in &snapshot.handlers {
        let _ = writeln!(out, "  {} ({})", h.name, h.adapter);
    }
    let _ = writeln!(out, "instances ({}):", snapshot.instances.len());
    for i in &snapshot.instances {
        let _ = writeln!(out, "  {} ({})", i.name, i.template.name);
        let reads = i
            .fields
            .iter()
            .flat_map(|f| f.expr.attributes().iter().copied());
        let _ = writeln!(out, "    reads: {}", names(snapshot, reads));
    }
    out
}
