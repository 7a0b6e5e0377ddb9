//! Mixer's attribute expression language (CEXL), compiled to bytecode at config time and
//! interpreted per request.
//!
//! ```
//! use mixer_attr::{Attributes, ReferencedAttributes, Value, ValueType, Vocabulary};
//!
//! let mut vocab = Vocabulary::empty();
//! let code = vocab.declare("response.code", ValueType::Int64).unwrap();
//! vocab.declare("request.headers", ValueType::StringMap).unwrap();
//! let e = mixer_expr::compile(r#"response.code == 200 || request.headers["x"] == "y""#, &vocab).unwrap();
//! let bag = Attributes::new().with(code, Value::Int64(200));
//! let mut refs = ReferencedAttributes::new();
//! assert!(e.eval_bool(&bag, &mut refs).unwrap());
//! assert_eq!(refs.to_strings(&vocab), ["response.code"]);
//! ```
//!
//! The pipeline: [`parse`] (source -> [`ast::Expr`], positions on every error, bounded depth),
//! type checking against a [`Vocabulary`], constant folding, code generation to a compact
//! instruction array, and a VM that evaluates it against a [`Bag`] without allocating in the
//! common case while recording exactly which attributes and map keys it looked at.
#![forbid(unsafe_code)]

pub mod ast;
mod builtins;
mod check;
mod compile;
mod error;
mod lexer;
mod parser;
#[cfg(test)]
mod shape_tests;
mod vm;

use std::sync::Arc;

use mixer_attr::{AttrId, Bag, ReferenceRecorder, Value, ValueType, Vocabulary};

pub use compile::MAX_INSTRUCTIONS;
pub use error::{CompileError, EvalError};
pub use parser::{MAX_DEPTH, MAX_NESTING, MAX_SOURCE_LEN, parse};

/// A compiled expression: cheap to clone, `Send + Sync`, evaluated per request.
#[derive(Clone, Debug)]
pub struct Expression {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: Box<str>,
    ty: ValueType,
    program: vm::Program,
    attributes: Vec<AttrId>,
    constant: bool,
}

/// Compiles `source` against `vocab`.
pub fn compile(source: &str, vocab: &Vocabulary) -> Result<Expression, CompileError> {
    compile_inner(source, vocab, None)
}

/// Compiles `source` and requires its type to be `expected`. A string literal that is a valid
/// duration is accepted where a DURATION is expected (`"10ms"`).
pub fn compile_expecting(
    source: &str,
    vocab: &Vocabulary,
    expected: ValueType,
) -> Result<Expression, CompileError> {
    compile_inner(source, vocab, Some(expected))
}

fn compile_inner(
    source: &str,
    vocab: &Vocabulary,
    expected: Option<ValueType>,
) -> Result<Expression, CompileError> {
    let ast = parse(source)?;
    let mut checker = check::Checker::new(vocab);
    let mut typed = checker.check(&ast)?;
    if let Some(want) = expected {
        if want == ValueType::Duration {
            check::coerce_duration(&mut typed);
        }
        if typed.ty != want {
            return Err(CompileError::new(
                ast.pos(),
                format!("expression has type {}, expected {want}", typed.ty),
            ));
        }
    }
    let ty = typed.ty;
    let folded = compile::fold(typed);
    let constant = folded.as_const().is_some();
    let program = compile::generate_top(&folded, checker.names)?;
    let mut attributes = Vec::new();
    program.attributes(&mut attributes);
    attributes.sort();
    attributes.dedup();
    Ok(Expression {
        inner: Arc::new(Inner {
            source: source.into(),
            ty,
            program,
            attributes,
            constant,
        }),
    })
}

impl Expression {
    /// The type of the expression's value.
    pub fn result_type(&self) -> ValueType {
        self.inner.ty
    }

    /// The source text it was compiled from.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Evaluates against `bag`, recording every attribute and map key looked at in `refs`.
    /// Strings in the result borrow from the bag or the expression where possible.
    pub fn eval<'s>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut impl ReferenceRecorder,
    ) -> Result<Value<'s>, EvalError> {
        self.inner.program.eval(bag, refs)
    }

    /// [`Expression::eval`], with `attribute | constant` read in place when the bag stores a
    /// value of the attribute's type or none (no call into the interpreter): for callers that
    /// evaluate many such fields per request.
    #[inline(always)]
    pub fn eval_inline<'s>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut impl ReferenceRecorder,
    ) -> Result<Value<'s>, EvalError> {
        if let Some((id, ty, default)) = self.attribute_or()
            && let Some(v) = vm::stored_or(bag, refs, id, ty, default)
        {
            return Ok(v);
        }
        self.eval(bag, refs)
    }

    /// `(attribute, its type, the constant default)` when the expression is `attribute |
    /// constant`: a caller can read the attribute itself and skip the interpreter when the bag
    /// stores a value of that type, or stores none (the default applies). Anything else, such
    /// as a value of another type, must go through [`Expression::eval`].
    #[inline]
    pub fn attribute_or(&self) -> Option<(AttrId, ValueType, &Value<'static>)> {
        self.inner.program.attribute_or()
    }

    /// Evaluates a BOOL expression (a rule's `match`).
    pub fn eval_bool(
        &self,
        bag: &dyn Bag,
        refs: &mut impl ReferenceRecorder,
    ) -> Result<bool, EvalError> {
        self.inner.program.eval_bool(bag, refs)
    }

    /// Every attribute the expression may read (after constant folding), sorted by id.
    pub fn attributes(&self) -> &[AttrId] {
        &self.inner.attributes
    }

    /// True when the expression was folded to a constant (it reads no attribute).
    pub fn is_constant(&self) -> bool {
        self.inner.constant
    }

    /// Number of instructions of the compiled program (for `config show` and tests).
    pub fn instruction_count(&self) -> usize {
        self.inner.program.instruction_count()
    }
}

/// The manifest the fuzz target and corpus replay use: the test table's attribute names.
#[doc(hidden)]
pub fn fuzz_vocabulary() -> Vocabulary {
    let mut v = Vocabulary::empty();
    for (name, ty) in FUZZ_MANIFEST {
        let _ = v.declare(name, *ty);
    }
    v
}

#[doc(hidden)]
pub const FUZZ_MANIFEST: &[(&str, ValueType)] = &[
    ("ab", ValueType::Bool),
    ("ad", ValueType::Double),
    ("adns", ValueType::DnsName),
    ("adur", ValueType::Duration),
    ("ai", ValueType::Int64),
    ("aip", ValueType::IpAddress),
    ("amail", ValueType::EmailAddress),
    ("ar", ValueType::StringMap),
    ("as", ValueType::String),
    ("at", ValueType::Timestamp),
    ("auri", ValueType::Uri),
    ("bb", ValueType::Bool),
    ("bd", ValueType::Double),
    ("bi", ValueType::Int64),
    ("br", ValueType::StringMap),
    ("bs", ValueType::String),
    ("request.headers", ValueType::StringMap),
    ("request.time", ValueType::Timestamp),
    ("source.ip", ValueType::IpAddress),
    ("source.name", ValueType::String),
    ("response.code", ValueType::Int64),
    ("$out.labels", ValueType::StringMap),
];

/// The fuzz harness: parse, print and re-parse, compile, and evaluate arbitrary bytes against
/// [`fuzz_vocabulary`] and a fixed bag. Panics only when an invariant breaks (that is the bug the
/// fuzzer reports); `tests/fuzz_corpus.rs` replays the corpus through it.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    use mixer_attr::{Attributes, ReferencedAttributes, StringMap, Timestamp};
    use std::borrow::Cow;

    let source = match std::str::from_utf8(data) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(data),
    };
    if let Ok(tree) = parse(&source) {
        let printed = tree.to_string();
        if let Ok(again) = parse(&printed) {
            assert!(
                again == tree,
                "print/parse changed the tree: {source:?} -> {printed:?}"
            );
        }
    }
    let vocab = fuzz_vocabulary();
    let Ok(expr) = compile(&source, &vocab) else {
        return;
    };
    let id = |n: &str| vocab.lookup(n).unwrap_or(AttrId(u32::MAX));
    let map: StringMap = [("a", "1"), ("b", "x"), ("", "empty")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let full = Attributes::new()
        .with(id("ab"), Value::Bool(true))
        .with(id("ad"), Value::Double(1.5))
        .with(id("adns"), Value::DnsName(Cow::Borrowed("a.example.com")))
        .with(
            id("adur"),
            Value::Duration(mixer_attr::Duration::from_millis(20)),
        )
        .with(id("ai"), Value::Int64(i64::MAX))
        .with(
            id("aip"),
            Value::IpAddress(std::net::IpAddr::from([10, 0, 0, 1])),
        )
        .with(id("amail"), Value::EmailAddress(Cow::Borrowed("a@b.c")))
        .with(id("ar"), Value::string_map(map))
        .with(id("as"), Value::str(".*"))
        .with(id("at"), Value::Timestamp(Timestamp::EPOCH))
        .with(id("auri"), Value::Uri(Cow::Borrowed("http://x/y")))
        .with(id("bs"), Value::str("["))
        .with(id("source.name"), Value::Int64(3)); // wrong type on purpose
    let empty = Attributes::new();
    for bag in [&full, &empty] {
        let mut refs = ReferencedAttributes::new();
        if let Ok(v) = expr.eval(bag, &mut refs) {
            assert!(
                v.value_type() == expr.result_type(),
                "{source:?}: value of type {} from an expression of type {}",
                v.value_type(),
                expr.result_type()
            );
        }
        for r in refs.iter() {
            assert!(
                expr.attributes().contains(&r.attr),
                "{source:?} referenced an attribute outside attributes()"
            );
        }
        let _ = expr.eval_bool(bag, &mut ());
    }
}
