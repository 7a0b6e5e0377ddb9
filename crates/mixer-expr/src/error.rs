//! Compile-time and evaluation-time errors.

use std::sync::Arc;

use mixer_attr::ValueType;

use crate::ast::Pos;

/// An expression that could not be compiled: a syntax error, an unknown attribute or function, a
/// type mismatch, an invalid constant regular expression or an exceeded limit.
///
/// Displays as `line:column: message` (1-based; columns count characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct CompileError {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl CompileError {
    pub(crate) fn new(pos: Pos, message: impl Into<String>) -> CompileError {
        CompileError {
            line: pos.line,
            column: pos.column,
            message: message.into(),
        }
    }
}

/// An evaluation that failed for this request's attributes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A required attribute is absent (Mixer: `lookup failed`). Use `a | default` to tolerate it.
    #[error("lookup failed: attribute `{0}` is absent")]
    AttributeAbsent(Arc<str>),
    /// The bag holds a value whose type differs from the attribute's declared type.
    #[error("attribute `{name}` holds a {got} value but is declared as {expected}")]
    AttributeType {
        name: Arc<str>,
        expected: ValueType,
        got: ValueType,
    },
    /// `ip(...)`, `timestamp(...)`, `email(...)`, `dnsName(...)` or `uri(...)` got text it cannot
    /// convert.
    #[error("could not convert `{text}` to {target}: {reason}")]
    Conversion {
        target: ValueType,
        text: String,
        reason: String,
    },
    /// A regular expression computed at evaluation time does not compile (or is too big).
    #[error("invalid regular expression `{pattern}`: {reason}")]
    Regex { pattern: String, reason: String },
    /// INT64 arithmetic overflowed.
    #[error("integer overflow in `{0}`")]
    Overflow(&'static str),
    /// `eval_bool` on an expression whose value is not a BOOL.
    #[error("expression yields {0}, not BOOL")]
    NotBool(ValueType),
    /// A bug in the compiler or VM (an inconsistent program). Never expected; reported instead of
    /// panicking.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Shortens text quoted in an error message.
pub(crate) fn quote_short(s: &str) -> String {
    const MAX: usize = 96;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}
