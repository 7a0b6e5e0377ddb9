//! `mixer expr`: evaluate one expression, or a batch of cases in the shared test-table format.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use mixer_attr::json::{value_from_json, value_to_json};
use mixer_attr::{AttrId, Attributes, ReferencedAttributes, ValueType, Vocabulary};
use serde_json::{Value as Json, json};

/// `mixer expr eval 'EXPR' --attrs FILE.json [--manifest FILE.json]` / `mixer expr --batch CASES.jsonl`
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ExprCommand {
    /// Evaluate every case of a JSON-lines file (the shared test-table format: `id`, `expr`,
    /// `manifest`, `attrs`) and print one result per line, as `grade.py` reads them.
    #[arg(long, value_name = "CASES.jsonl")]
    batch: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<ExprSub>,
}

#[derive(clap::Subcommand, Debug)]
enum ExprSub {
    /// Evaluate one expression and print `{"type", "value", "referenced"}`.
    Eval {
        /// The expression.
        expr: String,
        /// A JSON object of attribute values (typed JSON); none when omitted.
        #[arg(long, value_name = "FILE.json")]
        attrs: Option<PathBuf>,
        /// A JSON object `{name: TYPE}` declaring the attributes; Istio's vocabulary when omitted.
        #[arg(long, value_name = "FILE.json")]
        manifest: Option<PathBuf>,
    },
}

pub fn run(cmd: ExprCommand) -> anyhow::Result<ExitCode> {
    match (cmd.batch, cmd.command) {
        (Some(path), None) => batch(&path),
        (
            None,
            Some(ExprSub::Eval {
                expr,
                attrs,
                manifest,
            }),
        ) => eval_one(&expr, attrs.as_deref(), manifest.as_deref()),
        _ => anyhow::bail!(
            "use `mixer expr eval EXPR [--attrs FILE] [--manifest FILE]` or `mixer expr --batch CASES.jsonl`"
        ),
    }
}

fn read_json(path: &Path) -> anyhow::Result<Json> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A vocabulary from a manifest object `{name: TYPE}`.
fn vocabulary_from_manifest(manifest: &Json) -> anyhow::Result<Vocabulary> {
    let obj = manifest
        .as_object()
        .context("the manifest must be a JSON object {name: TYPE}")?;
    let mut vocab = Vocabulary::empty();
    for (name, ty) in obj {
        let ty: ValueType = ty
            .as_str()
            .with_context(|| format!("manifest entry `{name}`: the type must be a string"))?
            .parse()
            .with_context(|| format!("manifest entry `{name}`"))?;
        vocab
            .declare(name, ty)
            .with_context(|| format!("manifest entry `{name}`"))?;
    }
    Ok(vocab)
}

enum Outcome {
    Value(Json),
    Compile(String),
    Eval(String),
}

/// Builds a bag from typed JSON. Values that do not fit their attribute's type are left out and
/// returned with their error: they fail the evaluation only if the expression reads them (Mixer's
/// table has cases whose unread attributes hold values of the wrong type). Names that are not in
/// the vocabulary cannot be read by any expression compiled against it; they are left out and
/// listed in the third element.
type JsonBag = (Attributes<'static>, Vec<(AttrId, String)>, Vec<String>);

fn bag_from_json(vocab: &Vocabulary, attrs: &Json) -> Result<JsonBag, String> {
    let obj = attrs
        .as_object()
        .ok_or_else(|| format!("attrs must be a JSON object, got {attrs}"))?;
    let mut bag = Attributes::with_capacity(obj.len());
    let (mut bad, mut unknown) = (Vec::new(), Vec::new());
    for (name, v) in obj {
        let Some((id, ty)) = vocab.lookup_typed(name) else {
            unknown.push(name.clone());
            continue;
        };
        match value_from_json(name, ty, v) {
            Ok(v) => bag.set(id, v),
            Err(e) => bad.push((id, e.to_string())),
        }
    }
    Ok((bag, bad, unknown))
}

/// Compiles and evaluates; the result object without `id`.
fn evaluate(expr: &str, vocab: &Vocabulary, attrs: &Json, warn: bool) -> Outcome {
    let compiled = match mixer_expr::compile(expr, vocab) {
        Ok(e) => e,
        Err(e) => return Outcome::Compile(e.to_string()),
    };
    let (bag, bad, unknown) = match bag_from_json(vocab, attrs) {
        Ok(b) => b,
        Err(e) => return Outcome::Eval(format!("bad attributes: {e}")),
    };
    if warn {
        for name in unknown {
            eprintln!("warning: attribute `{name}` is not in the vocabulary; ignored");
        }
    }
    let mut refs = ReferencedAttributes::new();
    let result = compiled.eval(&bag, &mut refs);
    if let Some((_, e)) = bad
        .iter()
        .find(|(id, _)| refs.iter().any(|r| r.attr == *id))
    {
        return Outcome::Eval(format!("bad attribute value: {e}"));
    }
    match result {
        Ok(v) => Outcome::Value(json!({
            "type": v.value_type().as_str(),
            "value": value_to_json(&v),
            "referenced": refs.to_strings(vocab),
        })),
        Err(e) => Outcome::Eval(e.to_string()),
    }
}

fn eval_one(expr: &str, attrs: Option<&Path>, manifest: Option<&Path>) -> anyhow::Result<ExitCode> {
    let vocab = match manifest {
        Some(p) => vocabulary_from_manifest(&read_json(p)?)
            .with_context(|| format!("in {}", p.display()))?,
        None => Vocabulary::istio(),
    };
    let attrs = match attrs {
        Some(p) => read_json(p)?,
        None => json!({}),
    };
    match evaluate(expr, &vocab, &attrs, true) {
        Outcome::Value(v) => {
            println!("{v}");
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Compile(m) => {
            eprintln!("compile error: {m}");
            Ok(ExitCode::from(1))
        }
        Outcome::Eval(m) => {
            eprintln!("evaluation error: {m}");
            Ok(ExitCode::from(1))
        }
    }
}

fn error_line(id: &Json, kind: &str, message: &str) -> Json {
    json!({"id": id, "error": {"kind": kind, "message": message}})
}

/// One case line -> one result line (errors in the case become error results).
fn batch_case(line: &str) -> Result<Json, String> {
    let case: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Some(id) = case.get("id").cloned() else {
        return Err("case has no `id`".to_string());
    };
    let Some(expr) = case.get("expr").and_then(Json::as_str) else {
        return Ok(error_line(&id, "compile", "case has no string `expr`"));
    };
    let vocab = match case.get("manifest") {
        Some(m) => match vocabulary_from_manifest(m) {
            Ok(v) => v,
            Err(e) => return Ok(error_line(&id, "compile", &format!("bad manifest: {e:#}"))),
        },
        None => Vocabulary::istio(),
    };
    let attrs = case.get("attrs").cloned().unwrap_or_else(|| json!({}));
    Ok(match evaluate(expr, &vocab, &attrs, false) {
        Outcome::Value(mut v) => {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("id".to_string(), id);
            }
            v
        }
        Outcome::Compile(m) => error_line(&id, "compile", &m),
        Outcome::Eval(m) => error_line(&id, "eval", &m),
    })
}

fn batch(path: &Path) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = std::io::BufReader::new(file);
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut bad = 0usize;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        match batch_case(&line) {
            Ok(result) => writeln!(out, "{result}")?,
            Err(e) => {
                bad += 1;
                eprintln!("{}:{}: skipped: {e}", path.display(), n + 1);
            }
        }
    }
    out.flush()?;
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
