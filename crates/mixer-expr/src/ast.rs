//! The syntax tree of an expression, as parsed (before attribute resolution and type checking).
//!
//! `Display` prints an expression back as source, with parentheses only where precedence needs
//! them; parsing the printed text gives an equal tree (positions are not part of equality).

use std::fmt;

/// A 1-based source position (columns count characters).
///
/// Positions never take part in equality: two trees are equal when their shapes and contents
/// are, wherever they came from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl PartialEq for Pos {
    fn eq(&self, _: &Pos) -> bool {
        true
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A literal constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Int(i64),
    Double(f64),
    Bool(bool),
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    /// `!`
    Not,
    /// `-`
    Neg,
}

/// Binary operators, with Go's precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    LOr,
    LAnd,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    /// `|`: the first operand that is present.
    Or,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    /// Go's precedence (higher binds tighter).
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::LOr => 1,
            BinaryOp::LAnd => 2,
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => 3,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Or => 4,
            BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => 5,
        }
    }

    /// The operator's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::LOr => "||",
            BinaryOp::LAnd => "&&",
            BinaryOp::Eq => "==",
            BinaryOp::Ne => "!=",
            BinaryOp::Lt => "<",
            BinaryOp::Le => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::Ge => ">=",
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Or => "|",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Rem => "%",
        }
    }

    /// Mixer's name for the operator's function (used in messages).
    pub fn mixer_name(self) -> &'static str {
        match self {
            BinaryOp::LOr => "LOR",
            BinaryOp::LAnd => "LAND",
            BinaryOp::Eq => "EQ",
            BinaryOp::Ne => "NEQ",
            BinaryOp::Lt => "LT",
            BinaryOp::Le => "LEQ",
            BinaryOp::Gt => "GT",
            BinaryOp::Ge => "GEQ",
            BinaryOp::Add => "ADD",
            BinaryOp::Sub => "SUB",
            BinaryOp::Or => "OR",
            BinaryOp::Mul => "MUL",
            BinaryOp::Div => "QUO",
            BinaryOp::Rem => "REM",
        }
    }
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A literal.
    Lit { pos: Pos, value: Lit },
    /// An attribute reference: a dotted name, possibly starting with `$`.
    Ident { pos: Pos, name: String },
    /// `target[key]`.
    Index {
        pos: Pos,
        target: Box<Expr>,
        key: Box<Expr>,
    },
    /// `name(args)`.
    Call {
        pos: Pos,
        name: String,
        args: Vec<Expr>,
    },
    /// `target.name(args)`.
    Method {
        pos: Pos,
        target: Box<Expr>,
        name: String,
        args: Vec<Expr>,
    },
    /// `op operand`.
    Unary {
        pos: Pos,
        op: UnaryOp,
        operand: Box<Expr>,
    },
    /// `lhs op rhs`.
    Binary {
        pos: Pos,
        op: BinaryOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
}

impl Expr {
    /// Where the expression starts (for operators: where the operator is).
    pub fn pos(&self) -> Pos {
        match self {
            Expr::Lit { pos, .. }
            | Expr::Ident { pos, .. }
            | Expr::Index { pos, .. }
            | Expr::Call { pos, .. }
            | Expr::Method { pos, .. }
            | Expr::Unary { pos, .. }
            | Expr::Binary { pos, .. } => *pos,
        }
    }

    /// Precedence of the printed form: binary operators by Go's table, unary operators and
    /// negative literals 6, primaries (which take postfix `[..]` and `.m()`) 7.
    fn print_precedence(&self) -> u8 {
        match self {
            Expr::Binary { op, .. } => op.precedence(),
            Expr::Unary { .. } => 6,
            Expr::Lit {
                value: Lit::Int(i), ..
            } if *i < 0 => 6,
            Expr::Lit {
                value: Lit::Double(d),
                ..
            } if d.is_sign_negative() => 6,
            _ => 7,
        }
    }
}

/// Writes `s` as a double-quoted Go string literal.
pub(crate) fn write_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

fn write_double(f: &mut fmt::Formatter<'_>, d: f64) -> fmt::Result {
    // `{:?}` is the shortest text that parses back to the same value, always with a `.` or an
    // exponent (`1.0`, `1e100`, `1e-7`).
    write!(f, "{d:?}")
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Str(s) => write_quoted(f, s),
            Lit::Int(i) => write!(f, "{i}"),
            Lit::Double(d) => write_double(f, *d),
            Lit::Bool(b) => write!(f, "{b}"),
        }
    }
}

fn write_operand(f: &mut fmt::Formatter<'_>, e: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

fn write_args(f: &mut fmt::Formatter<'_>, args: &[Expr]) -> fmt::Result {
    f.write_str("(")?;
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{a}")?;
    }
    f.write_str(")")
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Lit { value, .. } => write!(f, "{value}"),
            Expr::Ident { name, .. } => f.write_str(name),
            Expr::Index { target, key, .. } => {
                write_operand(f, target, target.print_precedence() < 7)?;
                write!(f, "[{key}]")
            }
            Expr::Call { name, args, .. } => {
                f.write_str(name)?;
                write_args(f, args)
            }
            Expr::Method {
                target, name, args, ..
            } => {
                write_operand(f, target, target.print_precedence() < 7)?;
                write!(f, ".{name}")?;
                write_args(f, args)
            }
            Expr::Unary { op, operand, .. } => {
                f.write_str(match op {
                    UnaryOp::Not => "!",
                    UnaryOp::Neg => "-",
                })?;
                // `-(5)` stays a negation of a literal; `-5` would read back as the literal -5.
                let literal_number = matches!(
                    **operand,
                    Expr::Lit {
                        value: Lit::Int(_) | Lit::Double(_),
                        ..
                    }
                ) && operand.print_precedence() == 7;
                write_operand(f, operand, operand.print_precedence() < 6 || literal_number)
            }
            Expr::Binary { op, lhs, rhs, .. } => {
                let p = op.precedence();
                write_operand(f, lhs, lhs.print_precedence() < p)?;
                write!(f, " {} ", op.as_str())?;
                write_operand(f, rhs, rhs.print_precedence() <= p)
            }
        }
    }
}
