//! Attribute resolution and type checking: syntax tree -> typed tree.

use std::borrow::Cow;
use std::sync::Arc;

use mixer_attr::{AttrId, Duration, StringMapRef, Value, ValueType, Vocabulary};

use crate::ast::{BinaryOp, Expr, Lit, Pos, UnaryOp};
use crate::error::CompileError;

/// Built-in functions and methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// `match(str, glob)`
    Match,
    Ip,
    Timestamp,
    Email,
    DnsName,
    Uri,
    Size,
    ToLower,
    /// `s.startsWith(prefix)`: args `[s, prefix]`.
    StartsWith,
    /// `s.endsWith(suffix)`: args `[s, suffix]`.
    EndsWith,
    /// `pattern.matches(s)`: args `[pattern, s]` (Mixer: the receiver is the regex).
    Matches,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug)]
pub(crate) enum TKind {
    Const(Value<'static>),
    Attr(AttrId),
    Index(Box<TNode>, Box<TNode>),
    /// `a | b | c`: the first operand that is present.
    Or(Vec<TNode>),
    LAnd(Box<TNode>, Box<TNode>),
    LOr(Box<TNode>, Box<TNode>),
    Not(Box<TNode>),
    Neg(Box<TNode>),
    Cmp(CmpOp, Box<TNode>, Box<TNode>),
    Add(Box<TNode>, Box<TNode>),
    Call(Builtin, Vec<TNode>),
    Cond(Box<TNode>, Box<TNode>, Box<TNode>),
}

/// A typed node.
#[derive(Clone, Debug)]
pub(crate) struct TNode {
    pub ty: ValueType,
    pub pos: Pos,
    pub kind: TKind,
    /// A string literal straight from the source (may be read as a DURATION where one is
    /// expected, e.g. `response.duration | "10ms"`).
    pub literal_str: bool,
}

impl TNode {
    /// May be absent when evaluated as an operand of `|`: attributes, map entries, and `|`
    /// chains ending in one.
    pub(crate) fn nillable(&self) -> bool {
        match &self.kind {
            TKind::Attr(_) | TKind::Index(..) => true,
            TKind::Or(list) => list.last().is_some_and(TNode::nillable),
            _ => false,
        }
    }

    pub(crate) fn as_const(&self) -> Option<&Value<'static>> {
        match &self.kind {
            TKind::Const(v) => Some(v),
            _ => None,
        }
    }
}

/// Reads a string literal as a DURATION when it parses as one.
pub(crate) fn coerce_duration(n: &mut TNode) -> bool {
    if n.literal_str
        && let TKind::Const(Value::String(s)) = &n.kind
        && let Ok(d) = Duration::parse(s)
    {
        n.kind = TKind::Const(Value::Duration(d));
        n.ty = ValueType::Duration;
        n.literal_str = false;
        return true;
    }
    false
}

/// If any node is a DURATION, reads the string literals among them as durations.
fn unify(nodes: &mut [&mut TNode]) {
    if nodes.iter().any(|n| n.ty == ValueType::Duration) {
        for n in nodes.iter_mut() {
            coerce_duration(n);
        }
    }
}

pub(crate) struct Checker<'v> {
    vocab: &'v Vocabulary,
    /// Names of the attributes referenced (for error messages at evaluation time).
    pub names: Vec<(AttrId, Arc<str>)>,
}

fn args_text(args: &[&Expr]) -> String {
    args.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn type_error(
    pos: Pos,
    func: &str,
    args: &[&Expr],
    i: usize,
    got: ValueType,
    want: &str,
) -> CompileError {
    CompileError::new(
        pos,
        format!(
            "{func}({}) arg {} ({}) type error: got {got}, expected {want}",
            args_text(args),
            i + 1,
            args.get(i).map(|a| a.to_string()).unwrap_or_default(),
        ),
    )
}

impl<'v> Checker<'v> {
    pub(crate) fn new(vocab: &'v Vocabulary) -> Self {
        Checker {
            vocab,
            names: Vec::new(),
        }
    }

    pub(crate) fn check(&mut self, e: &Expr) -> Result<TNode, CompileError> {
        let pos = e.pos();
        let node = |ty, kind| TNode {
            ty,
            pos,
            kind,
            literal_str: false,
        };
        Ok(match e {
            Expr::Lit { value, .. } => match value {
                Lit::Str(s) => TNode {
                    ty: ValueType::String,
                    pos,
                    kind: TKind::Const(Value::String(Cow::Owned(s.clone()))),
                    literal_str: true,
                },
                Lit::Int(i) => node(ValueType::Int64, TKind::Const(Value::Int64(*i))),
                Lit::Double(d) => node(ValueType::Double, TKind::Const(Value::Double(*d))),
                Lit::Bool(b) => node(ValueType::Bool, TKind::Const(Value::Bool(*b))),
            },
            Expr::Ident { name, .. } => {
                let Some((id, ty)) = self.vocab.lookup_typed(name) else {
                    return Err(self.unknown_attribute(pos, name));
                };
                if !self.names.iter().any(|(i, _)| *i == id) {
                    self.names.push((id, Arc::from(name.as_str())));
                }
                node(ty, TKind::Attr(id))
            }
            Expr::Index { target, key, .. } => {
                let m = self.check(target)?;
                let k = self.check(key)?;
                let args = [&**target, &**key];
                if m.ty != ValueType::StringMap {
                    return Err(type_error(pos, "INDEX", &args, 0, m.ty, "STRING_MAP"));
                }
                if k.ty != ValueType::String {
                    return Err(type_error(pos, "INDEX", &args, 1, k.ty, "STRING"));
                }
                node(ValueType::String, TKind::Index(Box::new(m), Box::new(k)))
            }
            Expr::Call { name, args, .. } => self.call(pos, name, args)?,
            Expr::Method {
                target, name, args, ..
            } => {
                let f = match name.as_str() {
                    "startsWith" => Builtin::StartsWith,
                    "endsWith" => Builtin::EndsWith,
                    "matches" => Builtin::Matches,
                    _ => {
                        return Err(CompileError::new(
                            pos,
                            format!(
                                "unknown method `{name}` (methods: startsWith, endsWith, matches)"
                            ),
                        ));
                    }
                };
                let recv = self.check(target)?;
                let all: Vec<&Expr> = std::iter::once(&**target).chain(args.iter()).collect();
                let fname = format!("{target}:{name}");
                if recv.ty != ValueType::String {
                    return Err(CompileError::new(
                        pos,
                        format!(
                            "{fname}: the receiver has type {}, expected STRING",
                            recv.ty
                        ),
                    ));
                }
                if args.len() != 1 {
                    return Err(CompileError::new(
                        pos,
                        format!(
                            "{fname}({}) arity mismatch: got {} arg(s), expected 1",
                            args_text(&all[1..]),
                            args.len()
                        ),
                    ));
                }
                let a = self.check(&args[0])?;
                if a.ty != ValueType::String {
                    return Err(type_error(pos, &fname, &all[1..], 0, a.ty, "STRING"));
                }
                node(ValueType::Bool, TKind::Call(f, vec![recv, a]))
            }
            Expr::Unary { op, operand, .. } => {
                let a = self.check(operand)?;
                match op {
                    UnaryOp::Not => {
                        if a.ty != ValueType::Bool {
                            return Err(type_error(pos, "NOT", &[&**operand], 0, a.ty, "BOOL"));
                        }
                        node(ValueType::Bool, TKind::Not(Box::new(a)))
                    }
                    UnaryOp::Neg => {
                        if !matches!(a.ty, ValueType::Int64 | ValueType::Double) {
                            return Err(type_error(
                                pos,
                                "NEG",
                                &[&**operand],
                                0,
                                a.ty,
                                "INT64 or DOUBLE",
                            ));
                        }
                        node(a.ty, TKind::Neg(Box::new(a)))
                    }
                }
            }
            Expr::Binary {
                op: BinaryOp::Or, ..
            } => {
                // Flatten the left-associated chain `a | b | c`.
                let mut operands = Vec::new();
                let mut cur = e;
                while let Expr::Binary {
                    op: BinaryOp::Or,
                    lhs,
                    rhs,
                    ..
                } = cur
                {
                    operands.push(&**rhs);
                    cur = lhs;
                }
                operands.push(cur);
                operands.reverse();
                let mut typed = operands
                    .iter()
                    .map(|o| self.check(o))
                    .collect::<Result<Vec<_>, _>>()?;
                {
                    let mut refs: Vec<&mut TNode> = typed.iter_mut().collect();
                    unify(&mut refs);
                }
                let ty = typed[0].ty;
                for (i, t) in typed.iter().enumerate().skip(1) {
                    if t.ty != ty {
                        return Err(type_error(t.pos, "OR", &operands, i, t.ty, ty.as_str()));
                    }
                }
                node(ty, TKind::Or(typed))
            }
            Expr::Binary { op, lhs, rhs, .. } => {
                let mut a = self.check(lhs)?;
                let mut b = self.check(rhs)?;
                let args = [&**lhs, &**rhs];
                let name = op.mixer_name();
                match op {
                    BinaryOp::LOr | BinaryOp::LAnd => {
                        for (i, t) in [&a, &b].into_iter().enumerate() {
                            if t.ty != ValueType::Bool {
                                return Err(type_error(pos, name, &args, i, t.ty, "BOOL"));
                            }
                        }
                        let (a, b) = (Box::new(a), Box::new(b));
                        node(
                            ValueType::Bool,
                            if *op == BinaryOp::LOr {
                                TKind::LOr(a, b)
                            } else {
                                TKind::LAnd(a, b)
                            },
                        )
                    }
                    BinaryOp::Eq
                    | BinaryOp::Ne
                    | BinaryOp::Lt
                    | BinaryOp::Le
                    | BinaryOp::Gt
                    | BinaryOp::Ge => {
                        unify(&mut [&mut a, &mut b]);
                        if b.ty != a.ty {
                            return Err(type_error(pos, name, &args, 1, b.ty, a.ty.as_str()));
                        }
                        let cmp = match op {
                            BinaryOp::Eq => CmpOp::Eq,
                            BinaryOp::Ne => CmpOp::Ne,
                            BinaryOp::Lt => CmpOp::Lt,
                            BinaryOp::Le => CmpOp::Le,
                            BinaryOp::Gt => CmpOp::Gt,
                            _ => CmpOp::Ge,
                        };
                        if !matches!(cmp, CmpOp::Eq | CmpOp::Ne)
                            && !matches!(
                                a.ty,
                                ValueType::Int64
                                    | ValueType::Double
                                    | ValueType::String
                                    | ValueType::Timestamp
                                    | ValueType::Duration
                            )
                        {
                            return Err(CompileError::new(
                                pos,
                                format!(
                                    "{name}({}): values of type {} are not ordered",
                                    args_text(&args),
                                    a.ty
                                ),
                            ));
                        }
                        node(ValueType::Bool, TKind::Cmp(cmp, Box::new(a), Box::new(b)))
                    }
                    BinaryOp::Add => {
                        if b.ty != a.ty {
                            return Err(type_error(pos, name, &args, 1, b.ty, a.ty.as_str()));
                        }
                        if !matches!(
                            a.ty,
                            ValueType::Int64 | ValueType::Double | ValueType::String
                        ) {
                            return Err(CompileError::new(
                                pos,
                                format!("ADD({}) is not defined for {}", args_text(&args), a.ty),
                            ));
                        }
                        node(a.ty, TKind::Add(Box::new(a), Box::new(b)))
                    }
                    BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Rem => {
                        return Err(CompileError::new(
                            pos,
                            format!(
                                "unknown function: {name} (operator `{}` is not part of Mixer's expression language)",
                                op.as_str()
                            ),
                        ));
                    }
                    BinaryOp::Or => {
                        return Err(CompileError::new(pos, "internal: unflattened `|`"));
                    }
                }
            }
        })
    }

    fn unknown_attribute(&self, pos: Pos, name: &str) -> CompileError {
        // The longest dotted prefix that is an attribute, for a helpful message.
        let mut prefix = name;
        while let Some(i) = prefix.rfind('.') {
            prefix = &prefix[..i];
            if let Some((_, ty)) = self.vocab.lookup_typed(prefix) {
                return CompileError::new(
                    pos,
                    format!(
                        "unknown attribute `{name}` (`{prefix}` is an attribute of type {ty}; fields cannot be selected, use `{prefix}[\"{}\"]` for a map key)",
                        &name[prefix.len() + 1..]
                    ),
                );
            }
        }
        CompileError::new(pos, format!("unknown attribute `{name}`"))
    }

    fn call(&mut self, pos: Pos, name: &str, args: &[Expr]) -> Result<TNode, CompileError> {
        use ValueType as T;
        let (f, params, ret): (Option<Builtin>, &[T], T) = match name {
            "match" => (Some(Builtin::Match), &[T::String, T::String], T::Bool),
            "ip" => (Some(Builtin::Ip), &[T::String], T::IpAddress),
            "timestamp" => (Some(Builtin::Timestamp), &[T::String], T::Timestamp),
            "email" => (Some(Builtin::Email), &[T::String], T::EmailAddress),
            "dnsName" => (Some(Builtin::DnsName), &[T::String], T::DnsName),
            "uri" => (Some(Builtin::Uri), &[T::String], T::Uri),
            "size" => (Some(Builtin::Size), &[T::String], T::Int64),
            "toLower" => (Some(Builtin::ToLower), &[T::String], T::String),
            "emptyStringMap" => (None, &[], T::StringMap),
            "conditional" => return self.conditional(pos, args),
            "startsWith" | "endsWith" | "matches" => {
                return Err(CompileError::new(
                    pos,
                    format!("invoking instance method without an instance: {name}"),
                ));
            }
            _ => return Err(CompileError::new(pos, format!("unknown function: {name}"))),
        };
        let all: Vec<&Expr> = args.iter().collect();
        if args.len() != params.len() {
            return Err(CompileError::new(
                pos,
                format!(
                    "{name}({}) arity mismatch: got {} arg(s), expected {} arg(s)",
                    args_text(&all),
                    args.len(),
                    params.len()
                ),
            ));
        }
        let mut typed = Vec::with_capacity(args.len());
        for (i, (a, want)) in args.iter().zip(params).enumerate() {
            let t = self.check(a)?;
            if t.ty != *want {
                return Err(type_error(pos, name, &all, i, t.ty, want.as_str()));
            }
            typed.push(t);
        }
        let kind = match f {
            Some(f) => TKind::Call(f, typed),
            None => TKind::Const(Value::StringMap(StringMapRef::empty())),
        };
        Ok(TNode {
            ty: ret,
            pos,
            kind,
            literal_str: false,
        })
    }

    fn conditional(&mut self, pos: Pos, args: &[Expr]) -> Result<TNode, CompileError> {
        let all: Vec<&Expr> = args.iter().collect();
        let [c, a, b] = args else {
            return Err(CompileError::new(
                pos,
                format!(
                    "conditional({}) arity mismatch: got {} arg(s), expected 3 arg(s)",
                    args_text(&all),
                    args.len()
                ),
            ));
        };
        let c = self.check(c)?;
        if c.ty != ValueType::Bool {
            return Err(type_error(pos, "conditional", &all, 0, c.ty, "BOOL"));
        }
        let mut a = self.check(a)?;
        let mut b = self.check(b)?;
        unify(&mut [&mut a, &mut b]);
        if a.ty != b.ty {
            return Err(type_error(pos, "conditional", &all, 2, b.ty, a.ty.as_str()));
        }
        Ok(TNode {
            ty: a.ty,
            pos,
            kind: TKind::Cond(Box::new(c), Box::new(a), Box::new(b)),
            literal_str: false,
        })
    }
}
