//! Constant folding and code generation: typed tree -> [`Program`].

use std::sync::Arc;

use mixer_attr::{AttrId, Attributes, StringMapRef, Value, ValueType};

use crate::ast::Pos;
use crate::check::{Builtin, CmpOp, TKind, TNode};
use crate::error::CompileError;
use crate::vm::{BOp, FALSE, Op, Program, Shape, StrTest, TRUE, Test, Tests, build_regex};

/// Most instructions one expression may compile to.
pub const MAX_INSTRUCTIONS: usize = 8192;

/// Folds constant sub-expressions. Only evaluations that succeed are folded: an expression such
/// as `ip("10.1.12")` stays in the program and fails when evaluated, as it did in Mixer.
pub(crate) fn fold(mut n: TNode) -> TNode {
    let ty = n.ty;
    n.kind = match n.kind {
        TKind::Const(_) | TKind::Attr(_) => return n,
        TKind::Index(m, k) => TKind::Index(Box::new(fold(*m)), Box::new(fold(*k))),
        TKind::Or(list) => {
            let mut kept = Vec::with_capacity(list.len());
            for op in list {
                let op = fold(op);
                let stop = !op.nillable();
                kept.push(op);
                if stop {
                    // Operands after one that is always present are never evaluated.
                    break;
                }
            }
            if kept.len() == 1
                && let Some(only) = kept.pop()
            {
                return retype(only, ty);
            }
            TKind::Or(kept)
        }
        TKind::LOr(a, b) => {
            let a = fold(*a);
            match a.as_const() {
                Some(Value::Bool(true)) => return a,
                Some(Value::Bool(false)) => return fold(*b),
                _ => TKind::LOr(Box::new(a), Box::new(fold(*b))),
            }
        }
        TKind::LAnd(a, b) => {
            let a = fold(*a);
            match a.as_const() {
                Some(Value::Bool(false)) => return a,
                Some(Value::Bool(true)) => return fold(*b),
                _ => TKind::LAnd(Box::new(a), Box::new(fold(*b))),
            }
        }
        TKind::Cond(c, a, b) => {
            let c = fold(*c);
            match c.as_const() {
                Some(Value::Bool(true)) => return retype(fold(*a), ty),
                Some(Value::Bool(false)) => return retype(fold(*b), ty),
                _ => TKind::Cond(Box::new(c), Box::new(fold(*a)), Box::new(fold(*b))),
            }
        }
        TKind::Not(a) => TKind::Not(Box::new(fold(*a))),
        TKind::Neg(a) => TKind::Neg(Box::new(fold(*a))),
        TKind::Cmp(op, a, b) => TKind::Cmp(op, Box::new(fold(*a)), Box::new(fold(*b))),
        TKind::Add(a, b) => TKind::Add(Box::new(fold(*a)), Box::new(fold(*b))),
        TKind::Call(f, args) => TKind::Call(f, args.into_iter().map(fold).collect()),
    };
    let all_const = match &n.kind {
        TKind::Not(a) | TKind::Neg(a) => a.as_const().is_some(),
        TKind::Cmp(_, a, b) | TKind::Add(a, b) => a.as_const().is_some() && b.as_const().is_some(),
        TKind::Call(_, args) => args.iter().all(|a| a.as_const().is_some()),
        _ => false,
    };
    if all_const && let Some(v) = eval_const(&n) {
        n.kind = TKind::Const(v);
        n.literal_str = false;
    }
    n
}

fn retype(mut inner: TNode, ty: mixer_attr::ValueType) -> TNode {
    inner.ty = ty;
    inner
}

/// Evaluates a node made of constants with the VM itself (so folding has the VM's semantics).
fn eval_const(n: &TNode) -> Option<Value<'static>> {
    let prog = generate(n, Vec::new()).ok()?;
    let bag = Attributes::new();
    let v = prog.run(&bag, &mut ()).ok()?;
    Some(match v {
        Value::StringMap(m) if m.view().is_empty() => Value::StringMap(StringMapRef::empty()),
        v => v.into_owned(),
    })
}

/// Generates the program for a typed (folded) tree.
pub(crate) fn generate(n: &TNode, names: Vec<(AttrId, Arc<str>)>) -> Result<Program, CompileError> {
    let mut g = Gen::default();
    g.strict(n)?;
    if g.code.len() > MAX_INSTRUCTIONS {
        return Err(CompileError::new(
            Pos { line: 1, column: 1 },
            format!(
                "expression compiles to {} instructions (the limit is {MAX_INSTRUCTIONS})",
                g.code.len()
            ),
        ));
    }
    Ok(Program {
        shape: Shape::of(&g.code),
        code: g.code,
        consts: g.consts,
        regexes: g.regexes,
        names,
        max_stack: g.max_depth as usize,
        tests: None,
        subs: Vec::new(),
    })
}

/// Generates the program of a whole expression: BOOL expressions whose leaves are simple tests
/// become test programs (see [`BOp`]); everything else the general stack program.
pub(crate) fn generate_top(
    n: &TNode,
    names: Vec<(AttrId, Arc<str>)>,
) -> Result<Program, CompileError> {
    if n.ty != ValueType::Bool || n.as_const().is_some() {
        return generate(n, names);
    }
    let mut t = TestGen {
        nodes: Vec::new(),
        g: Gen::default(),
        subs: Vec::new(),
        names: &names,
    };
    let entry = t.emit_test(n, TRUE, FALSE)?;
    if let (
        [
            Test {
                op: BOp::Sub(0),
                then: TRUE,
                otherwise: FALSE,
            },
        ],
        1,
    ) = (t.nodes.as_slice(), t.subs.len())
    {
        return generate(n, names);
    }
    let prog = Program {
        code: Vec::new(),
        consts: t.g.consts,
        regexes: t.g.regexes,
        max_stack: 0,
        tests: Some(Tests {
            nodes: t.nodes,
            entry,
        }),
        subs: t.subs,
        names,
        shape: Shape::General,
    };
    if prog.instruction_count() > MAX_INSTRUCTIONS {
        return Err(CompileError::new(
            n.pos,
            format!("expression compiles to more than {MAX_INSTRUCTIONS} instructions"),
        ));
    }
    Ok(prog)
}

/// Builds a decision graph ([`Tests`]).
struct TestGen<'a> {
    nodes: Vec<Test>,
    g: Gen,
    subs: Vec<Program>,
    names: &'a Vec<(AttrId, Arc<str>)>,
}

/// Where a string test reads its string: a STRING attribute or a constant-key entry of a map
/// attribute.
enum StrSrc {
    Attr(AttrId),
    Entry(AttrId, Box<str>),
}

impl StrSrc {
    fn of(n: &TNode) -> Option<StrSrc> {
        match &n.kind {
            TKind::Attr(id) if n.ty == ValueType::String => Some(StrSrc::Attr(*id)),
            TKind::Index(m, k) => match (&m.kind, k.as_const().and_then(Value::as_str)) {
                (TKind::Attr(id), Some(key)) => Some(StrSrc::Entry(*id, key.into())),
                _ => None,
            },
            _ => None,
        }
    }

    fn test(self, t: StrTest) -> BOp {
        match self {
            StrSrc::Attr(id) => BOp::AttrStr(id, t),
            StrSrc::Entry(id, key) => BOp::EntryStr(id, key, t),
        }
    }
}

impl TestGen<'_> {
    /// Emits the graph of `n` continuing at `then` when it holds and at `otherwise` when not;
    /// returns its entry. The right operand of `&&`/`||` is emitted first (its entry is an
    /// edge of the left one), so nodes are never duplicated.
    fn emit_test(&mut self, n: &TNode, then: u32, otherwise: u32) -> Result<u32, CompileError> {
        if self.nodes.len() > MAX_INSTRUCTIONS {
            return Err(CompileError::new(
                n.pos,
                format!("expression compiles to more than {MAX_INSTRUCTIONS} instructions"),
            ));
        }
        let op = match &n.kind {
            TKind::Const(Value::Bool(b)) => return Ok(if *b { then } else { otherwise }),
            TKind::Attr(id) if n.ty == ValueType::Bool => BOp::AttrBool(*id),
            TKind::LOr(a, b) => {
                let right = self.emit_test(b, then, otherwise)?;
                return self.emit_test(a, then, right);
            }
            TKind::LAnd(a, b) => {
                let right = self.emit_test(b, then, otherwise)?;
                return self.emit_test(a, right, otherwise);
            }
            TKind::Not(a) => return self.emit_test(a, otherwise, then),
            TKind::Cmp(op @ (CmpOp::Eq | CmpOp::Ne), a, b) => {
                let ne = *op == CmpOp::Ne;
                let (x, c) = match (a.as_const(), b.as_const()) {
                    (None, Some(c)) => (&**a, c),
                    (Some(c), None) => (&**b, c),
                    _ => return self.sub_test(n, then, otherwise),
                };
                match (&x.kind, c) {
                    (TKind::Attr(id), Value::Int64(i)) if x.ty == ValueType::Int64 => {
                        BOp::IntEq(*id, *i, ne)
                    }
                    (TKind::Attr(id), _) if x.ty != ValueType::String => {
                        BOp::AttrEq(*id, x.ty, self.g.constant(c), ne)
                    }
                    _ => match (StrSrc::of(x), c) {
                        (Some(src), Value::String(s)) if x.ty == ValueType::String => {
                            let s: Box<str> = (**s).into();
                            src.test(if ne { StrTest::Ne(s) } else { StrTest::Eq(s) })
                        }
                        _ => BOp::Sub(self.sub(n)?),
                    },
                }
            }
            TKind::Call(f @ (Builtin::Match | Builtin::StartsWith | Builtin::EndsWith), args) => {
                match (args.as_slice(), args.get(1).and_then(TNode::as_const)) {
                    ([s, _], Some(Value::String(c))) => match StrSrc::of(s) {
                        Some(src) => src.test(match f {
                            Builtin::Match => StrTest::glob(c),
                            Builtin::StartsWith => StrTest::Prefix((**c).into()),
                            _ => StrTest::Suffix((**c).into()),
                        }),
                        None => BOp::Sub(self.sub(n)?),
                    },
                    _ => BOp::Sub(self.sub(n)?),
                }
            }
            TKind::Call(Builtin::Matches, args) => match args.as_slice() {
                [p, s] => match (p.as_const().and_then(Value::as_str), StrSrc::of(s)) {
                    (Some(pattern), Some(src)) => {
                        let re = build_regex(pattern).map_err(|e| {
                            CompileError::new(p.pos, format!("invalid regular expression: {e}"))
                        })?;
                        self.g.regexes.push(re);
                        src.test(StrTest::Regex((self.g.regexes.len() - 1) as u32))
                    }
                    _ => BOp::Sub(self.sub(n)?),
                },
                _ => BOp::Sub(self.sub(n)?),
            },
            _ => BOp::Sub(self.sub(n)?),
        };
        self.nodes.push(Test {
            op,
            then,
            otherwise,
        });
        Ok((self.nodes.len() - 1) as u32)
    }

    fn sub_test(&mut self, n: &TNode, then: u32, otherwise: u32) -> Result<u32, CompileError> {
        let op = BOp::Sub(self.sub(n)?);
        self.nodes.push(Test {
            op,
            then,
            otherwise,
        });
        Ok((self.nodes.len() - 1) as u32)
    }

    fn sub(&mut self, n: &TNode) -> Result<u32, CompileError> {
        self.subs.push(generate(n, self.names.clone())?);
        Ok((self.subs.len() - 1) as u32)
    }
}

#[derive(Default)]
struct Gen {
    code: Vec<Op>,
    consts: Vec<Value<'static>>,
    regexes: Vec<regex::Regex>,
    depth: u32,
    max_depth: u32,
}

/// A pending jump to a failure landing point, and the stack depth when it is taken.
type Fails = Vec<(usize, u32)>;

impl Gen {
    fn emit(&mut self, op: Op, effect: i32) -> usize {
        self.code.push(op);
        self.depth = self.depth.saturating_add_signed(effect);
        self.max_depth = self.max_depth.max(self.depth);
        self.code.len() - 1
    }

    fn here(&self) -> u32 {
        u32::try_from(self.code.len()).unwrap_or(u32::MAX)
    }

    fn patch(&mut self, at: usize) {
        let target = self.here();
        if let Some(
            Op::TryAttr(_, _, t)
            | Op::TryIndex(t)
            | Op::TryAttrIndexConst(_, _, t)
            | Op::Jump(t)
            | Op::OrElse(t)
            | Op::AndThen(t)
            | Op::JumpIfFalse(t),
        ) = self.code.get_mut(at)
        {
            *t = target;
        }
    }

    fn constant(&mut self, v: &Value<'static>) -> u32 {
        if let Some(i) = self
            .consts
            .iter()
            .position(|c| c == v && c.value_type() == v.value_type())
        {
            return i as u32;
        }
        self.consts.push(v.clone());
        (self.consts.len() - 1) as u32
    }

    fn guard(&self, pos: Pos) -> Result<(), CompileError> {
        if self.code.len() > MAX_INSTRUCTIONS {
            return Err(CompileError::new(
                pos,
                format!("expression compiles to more than {MAX_INSTRUCTIONS} instructions"),
            ));
        }
        Ok(())
    }

    /// Code that leaves the node's value on the stack or fails the evaluation.
    fn strict(&mut self, n: &TNode) -> Result<(), CompileError> {
        self.guard(n.pos)?;
        match &n.kind {
            TKind::Const(v) => {
                let i = self.constant(v);
                self.emit(Op::Const(i), 1);
            }
            TKind::Attr(id) => {
                self.emit(Op::Attr(*id, n.ty), 1);
            }
            TKind::Index(m, k) => match (&m.kind, k.as_const()) {
                (TKind::Attr(id), Some(key)) => {
                    let i = self.constant(key);
                    self.emit(Op::AttrIndexConst(*id, i), 1);
                }
                _ => {
                    self.strict(m)?;
                    self.strict(k)?;
                    self.emit(Op::Index, -1);
                }
            },
            TKind::Or(list) => self.or_chain(list, None)?,
            TKind::LOr(a, b) | TKind::LAnd(a, b) => {
                self.strict(a)?;
                let op = if matches!(n.kind, TKind::LOr(..)) {
                    Op::OrElse(0)
                } else {
                    Op::AndThen(0)
                };
                let j = self.emit(op, -1);
                self.strict(b)?;
                self.patch(j);
            }
            TKind::Not(a) => {
                self.strict(a)?;
                self.emit(Op::Not, 0);
            }
            TKind::Neg(a) => {
                self.strict(a)?;
                self.emit(Op::Neg, 0);
            }
            TKind::Cmp(op, a, b) => {
                let eq = matches!(op, CmpOp::Eq | CmpOp::Ne);
                let konst = match (a.as_const(), b.as_const()) {
                    (None, Some(c)) if eq => Some((a, c)),
                    (Some(c), None) if eq => Some((b, c)),
                    _ => None,
                };
                if let Some((operand, c)) = konst {
                    let ne = *op == CmpOp::Ne;
                    let i = self.constant(c);
                    match &operand.kind {
                        TKind::Attr(id) => {
                            self.emit(Op::AttrEq(*id, operand.ty, i, ne), 1);
                        }
                        TKind::Index(m, k)
                            if matches!(m.kind, TKind::Attr(_)) && k.as_const().is_some() =>
                        {
                            let id = match m.kind {
                                TKind::Attr(id) => id,
                                _ => return Err(CompileError::new(n.pos, "internal: index")),
                            };
                            let ki = k.as_const().map(|k| self.constant(k)).unwrap_or(0);
                            self.emit(Op::EntryEq(id, ki, i, ne), 1);
                        }
                        _ => {
                            self.strict(operand)?;
                            self.emit(if ne { Op::NeConst(i) } else { Op::EqConst(i) }, 0);
                        }
                    }
                } else {
                    self.strict(a)?;
                    self.strict(b)?;
                    let op = match op {
                        CmpOp::Eq => Op::Eq,
                        CmpOp::Ne => Op::Ne,
                        CmpOp::Lt => Op::Lt,
                        CmpOp::Le => Op::Le,
                        CmpOp::Gt => Op::Gt,
                        CmpOp::Ge => Op::Ge,
                    };
                    self.emit(op, -1);
                }
            }
            TKind::Add(a, b) => {
                self.strict(a)?;
                self.strict(b)?;
                self.emit(Op::Add, -1);
            }
            TKind::Call(f, args) => match (f, args.as_slice()) {
                (Builtin::Match, [s, p]) if p.as_const().is_some() => {
                    self.strict(s)?;
                    let i = p.as_const().map(|c| self.constant(c)).unwrap_or(0);
                    self.emit(Op::MatchConst(i), 0);
                }
                (Builtin::Matches, [p, s]) if p.as_const().is_some() => {
                    let pattern = p.as_const().and_then(Value::as_str).unwrap_or("");
                    let re = build_regex(pattern).map_err(|e| {
                        CompileError::new(p.pos, format!("invalid regular expression: {e}"))
                    })?;
                    self.strict(s)?;
                    self.regexes.push(re);
                    let i = (self.regexes.len() - 1) as u32;
                    self.emit(Op::RegexConst(i), 0);
                }
                _ => {
                    for a in args {
                        self.strict(a)?;
                    }
                    self.emit(Op::Call(*f), 1 - args.len() as i32);
                }
            },
            TKind::Cond(c, a, b) => {
                self.strict(c)?;
                let jf = self.emit(Op::JumpIfFalse(0), -1);
                let d0 = self.depth;
                self.strict(a)?;
                let j = self.emit(Op::Jump(0), 0);
                self.patch(jf);
                self.depth = d0;
                self.strict(b)?;
                self.patch(j);
            }
        }
        Ok(())
    }

    /// `a | b | c`. With `outer` (the chain is itself an operand of `|`), a missing last operand
    /// fails to the outer landing point instead of failing the evaluation.
    fn or_chain(
        &mut self,
        list: &[TNode],
        mut outer: Option<&mut Fails>,
    ) -> Result<(), CompileError> {
        let d0 = self.depth;
        let mut ends = Vec::new();
        for (i, op) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            if last || !op.nillable() {
                match outer.as_deref_mut() {
                    Some(fails) if op.nillable() => self.attempt(op, fails)?,
                    _ => self.strict(op)?,
                }
                break;
            }
            let mut fails = Fails::new();
            self.attempt(op, &mut fails)?;
            ends.push(self.emit(Op::Jump(0), 0));
            self.depth = d0;
            let reset = fails.iter().any(|(_, d)| *d != d0);
            for (at, _) in fails {
                self.patch(at);
            }
            if reset {
                self.emit(Op::SetDepth(d0), 0);
            }
        }
        for at in ends {
            self.patch(at);
        }
        self.depth = d0 + 1;
        self.max_depth = self.max_depth.max(self.depth);
        Ok(())
    }

    /// Code for an operand of `|`: leaves the value, or jumps to a failure landing point
    /// (recorded in `fails`) when an attribute or map entry is absent.
    fn attempt(&mut self, n: &TNode, fails: &mut Fails) -> Result<(), CompileError> {
        self.guard(n.pos)?;
        match &n.kind {
            TKind::Attr(id) => {
                let d = self.depth;
                let at = self.emit(Op::TryAttr(*id, n.ty, 0), 1);
                fails.push((at, d));
            }
            TKind::Index(m, k) => match (&m.kind, k.as_const()) {
                (TKind::Attr(id), Some(key)) => {
                    let i = self.constant(key);
                    let d = self.depth;
                    let at = self.emit(Op::TryAttrIndexConst(*id, i, 0), 1);
                    fails.push((at, d));
                }
                _ => {
                    for part in [m, k] {
                        if part.nillable() {
                            self.attempt(part, fails)?;
                        } else {
                            self.strict(part)?;
                        }
                    }
                    let at = self.emit(Op::TryIndex(0), -1);
                    fails.push((at, self.depth - 1));
                }
            },
            TKind::Or(list) => self.or_chain(list, Some(fails))?,
            _ => self.strict(n)?,
        }
        Ok(())
    }
}
