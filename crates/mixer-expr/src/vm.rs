//! The bytecode and its interpreter.
//!
//! A program is a flat array of [`Op`]s over a value stack. Types are checked at compile time, so
//! the VM only re-checks what a bag could get wrong (an attribute value of the wrong type) and
//! reports any inconsistency as [`EvalError::Internal`] instead of panicking. Strings stay
//! borrowed from the bag or the program (`Cow::Borrowed`); the stack lives in a fixed array for
//! programs that need at most [`INLINE_STACK`] slots, so the common evaluation allocates nothing.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::net::IpAddr;
use std::sync::Arc;

use mixer_attr::{AttrId, Bag, ReferenceRecorder, StringMapRef, Timestamp, Value, ValueType};
use regex::Regex;

use crate::builtins;
use crate::check::Builtin;
use crate::error::{EvalError, quote_short};

/// Stack slots kept on the machine stack; deeper programs use a heap buffer.
pub(crate) const INLINE_STACK: usize = 8;
/// Size limit of regular expressions (compiled program), at compile time and at run time.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

const NO_ORIGIN: u32 = u32::MAX;

/// One instruction. Jump targets are instruction indexes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Op {
    /// Push constant `i`.
    Const(u32),
    /// Push attribute; absent is an error.
    Attr(AttrId, ValueType),
    /// Push `attribute == constant` (`!=` when the flag is set); absent is an error.
    AttrEq(AttrId, ValueType, u32, bool),
    /// Push `map_attribute[constant key] == constant string` (`!=` with the flag); absent map is
    /// an error, a missing key reads `""`.
    EntryEq(AttrId, u32, u32, bool),
    /// Push attribute; absent jumps to the target.
    TryAttr(AttrId, ValueType, u32),
    /// Pop key, pop map, push the entry (`""` when missing, as Mixer's ANLOOKUP).
    Index,
    /// Pop key, pop map, push the entry; missing jumps to the target.
    TryIndex(u32),
    /// Push entry (constant key `k`) of map attribute; absent map is an error, missing key `""`.
    AttrIndexConst(AttrId, u32),
    /// As `AttrIndexConst`, but an absent map or missing key jumps to the target.
    TryAttrIndexConst(AttrId, u32, u32),
    /// Drop the stack to this depth (the landing point of failed `Try*` operands).
    SetDepth(u32),
    Jump(u32),
    /// `||`: top true -> jump (keeping it); else pop.
    OrElse(u32),
    /// `&&`: top false -> jump (keeping it); else pop.
    AndThen(u32),
    /// Pop a bool; false -> jump.
    JumpIfFalse(u32),
    Not,
    Neg,
    Eq,
    Ne,
    /// Compare the top with constant `i` (replacing it with the bool).
    EqConst(u32),
    NeConst(u32),
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    /// Built-in function over its arguments on the stack.
    Call(Builtin),
    /// `match(top, constant glob i)`.
    MatchConst(u32),
    /// `regex i` `.matches(top)`.
    RegexConst(u32),
}

/// A test of a string against a constant. Constant strings live in the instruction itself, so
/// a test reads no constant table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StrTest {
    Eq(Box<str>),
    Ne(Box<str>),
    /// `s.startsWith(c)`, or `match(s, "c*")`
    Prefix(Box<str>),
    /// `s.endsWith(c)`, or `match(s, "*c")`
    Suffix(Box<str>),
    /// `regex.matches(s)` (regex `i` of the program)
    Regex(u32),
}

impl StrTest {
    /// `match(s, glob)` with a constant glob, resolved once (Mixer's externMatch: a trailing `*`
    /// is a prefix test, else a leading `*` a suffix test, else equality).
    pub(crate) fn glob(pattern: &str) -> StrTest {
        if let Some(prefix) = pattern.strip_suffix('*') {
            StrTest::Prefix(prefix.into())
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            StrTest::Suffix(suffix.into())
        } else {
            StrTest::Eq(pattern.into())
        }
    }
}

/// A leaf test of a BOOL program.
#[derive(Clone, Debug, PartialEq)]
#[repr(u8)] // a plain tag byte: cheaper to dispatch on than a niche-encoded discriminant
pub(crate) enum BOp {
    /// INT64 `attribute == constant` (`!=` with the flag).
    IntEq(AttrId, i64, bool),
    /// `attribute == constant i` of another type (`!=` with the flag).
    AttrEq(AttrId, ValueType, u32, bool),
    /// A test of a STRING attribute (absent is an error).
    AttrStr(AttrId, StrTest),
    /// A test of `map_attribute[constant key]` (absent map is an error, a missing key reads
    /// `""`).
    EntryStr(AttrId, Box<str>, StrTest),
    /// A BOOL attribute.
    AttrBool(AttrId),
    /// A sub-expression evaluated by the general VM (`subs[i]`).
    Sub(u32),
}

/// Successor meaning "the expression is true".
pub(crate) const TRUE: u32 = u32::MAX;
/// Successor meaning "the expression is false".
pub(crate) const FALSE: u32 = u32::MAX - 1;

/// A node of a BOOL program's decision graph: a test and where to continue when it holds
/// (`then`) and when it does not (`otherwise`), a node index or [`TRUE`] / [`FALSE`].
/// `&&`, `||` and `!` become edges (no accumulator, no jump instructions), so evaluating
/// `a || b` runs exactly the tests it needs, in source order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Test {
    pub op: BOp,
    pub then: u32,
    pub otherwise: u32,
}

/// A BOOL program: decision-graph nodes and the first node (or [`TRUE`] / [`FALSE`]).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tests {
    pub nodes: Vec<Test>,
    pub entry: u32,
}

/// A compiled program.
#[derive(Clone, Debug)]
pub(crate) struct Program {
    pub code: Vec<Op>,
    pub consts: Vec<Value<'static>>,
    pub regexes: Vec<Regex>,
    pub names: Vec<(AttrId, Arc<str>)>,
    pub max_stack: usize,
    /// For BOOL programs: the test program (then `code` is empty) and its general sub-programs.
    pub tests: Option<Tests>,
    pub subs: Vec<Program>,
    /// `code` recognised as one of the common simple forms, run without the stack machine.
    pub shape: Shape,
}

/// Programs simple enough to run without the stack machine: most instance fields and
/// bindings are an attribute, a map entry or a constant, with a `|` default. Each form gives
/// exactly what the stack machine gives for its code (the same references recorded, the same
/// errors).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Shape {
    /// Anything else: run `code`.
    General,
    /// `constant`
    Const(u32),
    /// `attribute` (absent is an error)
    Attr(AttrId, ValueType),
    /// `attribute | constant`
    AttrOr(AttrId, ValueType, u32),
    /// `map[constant key] | constant`
    EntryOr(AttrId, u32, u32),
}

impl Shape {
    /// The form of `code`, if it is one of the simple ones.
    pub(crate) fn of(code: &[Op]) -> Shape {
        match *code {
            [Op::Const(c)] => Shape::Const(c),
            [Op::Attr(id, ty)] => Shape::Attr(id, ty),
            [Op::TryAttr(id, ty, 2), Op::Jump(3), Op::Const(c)] => Shape::AttrOr(id, ty, c),
            [Op::TryAttrIndexConst(id, k, 2), Op::Jump(3), Op::Const(c)] => {
                Shape::EntryOr(id, k, c)
            }
            _ => Shape::General,
        }
    }
}

/// A failure inside the test VM, kept small so results stay in registers.
enum Fault {
    Absent(AttrId),
    WrongType(AttrId, ValueType, ValueType),
    Error(Box<EvalError>),
}

#[cold]
fn internal(what: &'static str) -> Fault {
    Fault::Error(Box::new(EvalError::Internal(what)))
}

const EMPTY: Value<'static> = Value::Bool(false);

/// True for values that own heap memory (an owned string, a shared map).
#[inline(always)]
fn owns(v: &Value<'_>) -> bool {
    v.owns_memory()
}

/// `attribute | default` settled from what `bag` stores, as the interpreter would settle it: the
/// stored value when it has type `ty`, `default` when none is stored (both recorded in `refs`).
/// `None` when the bag stores nothing for `id` (it computes values on read) or a value of
/// another type: the caller's general path decides those.
#[inline(always)]
pub(crate) fn stored_or<'s, R: ReferenceRecorder>(
    bag: &'s dyn Bag,
    refs: &mut R,
    id: AttrId,
    ty: ValueType,
    default: &'s Value<'static>,
) -> Option<Value<'s>> {
    match bag.get_stored(id)? {
        Some(v) if v.value_type() == ty => {
            refs.attribute(id, true);
            Some(v.reborrow())
        }
        Some(_) => None,
        None => {
            refs.attribute(id, false);
            Some(default.reborrow())
        }
    }
}

/// Drops a value, calling the out-of-line destructor only when it owns memory.
#[inline(always)]
fn discard(v: Value<'_>) {
    if owns(&v) {
        drop(v);
    } else {
        std::mem::forget(v);
    }
}

/// Stores `v` in `slot`, discarding the old value.
#[inline(always)]
fn store<'s>(slot: &mut Value<'s>, v: Value<'s>) {
    discard(std::mem::replace(slot, v));
}

impl Program {
    /// Every attribute the program may read.
    pub(crate) fn attributes(&self, out: &mut Vec<AttrId>) {
        for op in &self.code {
            match op {
                Op::Attr(id, _)
                | Op::AttrEq(id, _, _, _)
                | Op::EntryEq(id, _, _, _)
                | Op::TryAttr(id, _, _)
                | Op::AttrIndexConst(id, _)
                | Op::TryAttrIndexConst(id, _, _) => out.push(*id),
                _ => {}
            }
        }
        for op in self.tests.iter().flat_map(|t| &t.nodes).map(|t| &t.op) {
            match op {
                BOp::IntEq(id, _, _)
                | BOp::AttrEq(id, _, _, _)
                | BOp::AttrBool(id)
                | BOp::AttrStr(id, _)
                | BOp::EntryStr(id, _, _) => out.push(*id),
                _ => {}
            }
        }
        for sub in &self.subs {
            sub.attributes(out);
        }
    }

    /// Instructions in the program and its sub-programs.
    pub(crate) fn instruction_count(&self) -> usize {
        self.code.len()
            + self.tests.as_ref().map_or(0, |t| t.nodes.len())
            + self
                .subs
                .iter()
                .map(Program::instruction_count)
                .sum::<usize>()
    }

    #[cold]
    fn name(&self, id: AttrId) -> Arc<str> {
        self.names
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| Arc::from(format!("#{}", id.0)))
    }

    #[cold]
    fn absent(&self, id: AttrId) -> EvalError {
        EvalError::AttributeAbsent(self.name(id))
    }

    #[cold]
    fn wrong_type(&self, id: AttrId, expected: ValueType, got: ValueType) -> EvalError {
        EvalError::AttributeType {
            name: self.name(id),
            expected,
            got,
        }
    }

    /// See [`crate::Expression::attribute_or`].
    #[inline]
    pub(crate) fn attribute_or(&self) -> Option<(AttrId, ValueType, &Value<'static>)> {
        match (self.shape, &self.tests) {
            (Shape::AttrOr(id, ty, c), None) => Some((id, ty, self.consts.get(c as usize)?)),
            _ => None,
        }
    }

    /// Evaluates to a value.
    #[inline]
    pub(crate) fn eval<'s, R: ReferenceRecorder>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut R,
    ) -> Result<Value<'s>, EvalError> {
        match &self.tests {
            Some(t) => self.run_tests(t, bag, refs).map(Value::Bool),
            None => self.run(bag, refs),
        }
    }

    /// Evaluates a BOOL program.
    #[inline]
    pub(crate) fn eval_bool<R: ReferenceRecorder>(
        &self,
        bag: &dyn Bag,
        refs: &mut R,
    ) -> Result<bool, EvalError> {
        match &self.tests {
            Some(t) => self.run_tests(t, bag, refs),
            None => match self.run(bag, refs)? {
                Value::Bool(b) => Ok(b),
                v => Err(EvalError::NotBool(v.value_type())),
            },
        }
    }

    #[inline(always)]
    fn run_tests<R: ReferenceRecorder>(
        &self,
        tests: &Tests,
        bag: &dyn Bag,
        refs: &mut R,
    ) -> Result<bool, EvalError> {
        self.exec_tests(tests, bag, refs).map_err(|f| self.fault(f))
    }

    #[cold]
    fn fault(&self, f: Fault) -> EvalError {
        match f {
            Fault::Absent(id) => self.absent(id),
            Fault::WrongType(id, want, got) => self.wrong_type(id, want, got),
            Fault::Error(e) => *e,
        }
    }

    /// The cold end of an attribute read that did not find the expected type: records the
    /// reference and builds the fault.
    #[cold]
    #[inline(never)]
    fn miss<R: ReferenceRecorder>(
        refs: &mut R,
        id: AttrId,
        ty: ValueType,
        found: Option<&Value<'_>>,
    ) -> Fault {
        match found {
            Some(v) => {
                refs.attribute(id, true);
                Fault::WrongType(id, ty, v.value_type())
            }
            None => {
                refs.attribute(id, false);
                Fault::Absent(id)
            }
        }
    }

    #[inline(always)]
    fn str_test(&self, s: &str, t: &StrTest) -> Result<bool, Fault> {
        Ok(match t {
            StrTest::Eq(c) => s == &**c,
            StrTest::Ne(c) => s != &**c,
            StrTest::Prefix(c) => s.starts_with(&**c),
            StrTest::Suffix(c) => s.ends_with(&**c),
            StrTest::Regex(i) => return self.regex_test(s, *i),
        })
    }

    #[inline(never)]
    fn regex_test(&self, s: &str, i: u32) -> Result<bool, Fault> {
        match self.regexes.get(i as usize) {
            Some(re) => Ok(re.is_match(s)),
            None => Err(internal("bad regex")),
        }
    }

    /// `attribute == constant` for the types without a specialised instruction.
    #[inline(never)]
    fn attr_eq<R: ReferenceRecorder>(
        &self,
        bag: &dyn Bag,
        refs: &mut R,
        id: AttrId,
        ty: ValueType,
        c: u32,
    ) -> Result<bool, Fault> {
        let fetched;
        let v = match attr!(bag, id, fetched) {
            Some(v) if v.value_type() == ty => {
                refs.attribute(id, true);
                v
            }
            other => return Err(Self::miss(refs, id, ty, other)),
        };
        let Some(k) = self.consts.get(c as usize) else {
            return Err(internal("bad constant"));
        };
        values_eq(v, k).map_err(|e| Fault::Error(Box::new(e)))
    }

    fn exec_tests<R: ReferenceRecorder>(
        &self,
        tests: &Tests,
        bag: &dyn Bag,
        refs: &mut R,
    ) -> Result<bool, Fault> {
        let mut at = tests.entry;
        while let Some(node) = tests.nodes.get(at as usize) {
            let fetched;
            let holds = match &node.op {
                BOp::IntEq(id, c, ne) => match attr!(bag, *id, fetched) {
                    Some(Value::Int64(x)) => {
                        refs.attribute(*id, true);
                        (x == c) != *ne
                    }
                    other => return Err(Self::miss(refs, *id, ValueType::Int64, other)),
                },
                BOp::EntryStr(id, key, t) => match attr!(bag, *id, fetched) {
                    Some(Value::StringMap(m)) => {
                        refs.attribute(*id, true);
                        let found = match m {
                            StringMapRef::Borrowed(view) => view.get(key),
                            StringMapRef::Shared(map) => map.get(&**key).map(String::as_str),
                        };
                        refs.map_key(*id, key, found.is_some());
                        self.str_test(found.unwrap_or(""), t)?
                    }
                    other => return Err(Self::miss(refs, *id, ValueType::StringMap, other)),
                },
                BOp::AttrStr(id, t) => match attr!(bag, *id, fetched) {
                    Some(Value::String(s)) => {
                        refs.attribute(*id, true);
                        self.str_test(s, t)?
                    }
                    other => return Err(Self::miss(refs, *id, ValueType::String, other)),
                },
                BOp::AttrEq(id, ty, c, ne) => self.attr_eq(bag, refs, *id, *ty, *c)? != *ne,
                BOp::AttrBool(id) => match attr!(bag, *id, fetched) {
                    Some(Value::Bool(b)) => {
                        refs.attribute(*id, true);
                        *b
                    }
                    other => return Err(Self::miss(refs, *id, ValueType::Bool, other)),
                },
                BOp::Sub(i) => match self.subs.get(*i as usize) {
                    Some(sub) => sub.run_sub(bag, refs)?,
                    None => return Err(internal("bad sub-program")),
                },
            };
            at = if holds { node.then } else { node.otherwise };
        }
        Ok(at == TRUE)
    }

    #[inline(never)]
    fn run_sub<R: ReferenceRecorder>(&self, bag: &dyn Bag, refs: &mut R) -> Result<bool, Fault> {
        match self.run(bag, refs) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(_) => Err(internal("sub-program is not BOOL")),
            Err(e) => Err(Fault::Error(Box::new(e))),
        }
    }

    /// Runs the general program.
    #[inline]
    pub(crate) fn run<'s, R: ReferenceRecorder>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut R,
    ) -> Result<Value<'s>, EvalError> {
        match self.shape {
            Shape::General => {}
            Shape::Const(c) => return self.constant(c),
            Shape::Attr(id, ty) => {
                return match self.load(bag, refs, id, ty)? {
                    Some(v) => Ok(v),
                    None => Err(self.absent(id)),
                };
            }
            Shape::AttrOr(id, ty, c) => {
                // The common case first: a stored value of the right type, or none stored.
                if let Some(default) = self.consts.get(c as usize)
                    && let Some(v) = stored_or(bag, refs, id, ty, default)
                {
                    return Ok(v);
                }
                return match self.load(bag, refs, id, ty)? {
                    Some(v) => Ok(v),
                    None => self.constant(c),
                };
            }
            Shape::EntryOr(id, k, c) => {
                let key = self.const_str(k)?;
                return match self.load_entry(bag, refs, id, key)? {
                    Some(Some(v)) => Ok(Value::String(v)),
                    _ => self.constant(c),
                };
            }
        }
        self.run_stack(bag, refs)
    }

    /// Runs `code` on the stack machine.
    #[inline]
    pub(crate) fn run_stack<'s, R: ReferenceRecorder>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut R,
    ) -> Result<Value<'s>, EvalError> {
        match self.max_stack {
            0..=2 => self.run_inline::<2, R>(bag, refs),
            3..=4 => self.run_inline::<4, R>(bag, refs),
            5..=INLINE_STACK => self.run_inline::<INLINE_STACK, R>(bag, refs),
            n => {
                let mut stack = vec![EMPTY; n];
                let mut origins = vec![NO_ORIGIN; n];
                self.exec(bag, refs, &mut stack, &mut origins)
            }
        }
    }

    #[inline(always)]
    fn run_inline<'s, const N: usize, R: ReferenceRecorder>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut R,
    ) -> Result<Value<'s>, EvalError> {
        // Slots hold borrowed or scalar values except where released below, so the array needs
        // no destructor call per slot.
        let mut stack = std::mem::ManuallyDrop::new([EMPTY; N]);
        let mut origins = [NO_ORIGIN; N];
        let r = self.exec(bag, refs, &mut stack[..], &mut origins);
        for slot in stack.iter_mut() {
            if owns(slot) {
                drop(std::mem::replace(slot, EMPTY));
            }
        }
        r
    }

    #[inline(always)]
    fn constant(&self, i: u32) -> Result<Value<'_>, EvalError> {
        // A `match`, not `ok_or`: the error is built (and dropped) only when it happens.
        match self.consts.get(i as usize) {
            Some(v) => Ok(v.reborrow()),
            None => Err(EvalError::Internal("bad constant")),
        }
    }

    #[inline(always)]
    fn const_ref(&self, i: u32) -> Result<&Value<'static>, EvalError> {
        match self.consts.get(i as usize) {
            Some(v) => Ok(v),
            None => Err(EvalError::Internal("bad constant")),
        }
    }

    #[inline(always)]
    fn const_str(&self, i: u32) -> Result<&str, EvalError> {
        match self.consts.get(i as usize).and_then(Value::as_str) {
            Some(s) => Ok(s),
            None => Err(EvalError::Internal("bad string constant")),
        }
    }

    #[inline(always)]
    fn load<'s, R: ReferenceRecorder>(
        &self,
        bag: &'s dyn Bag,
        refs: &mut R,
        id: AttrId,
        ty: ValueType,
    ) -> Result<Option<Value<'s>>, EvalError> {
        let v = match bag.get_stored(id) {
            Some(found) => found.map(Value::reborrow),
            None => fetch(bag, id),
        };
        match v {
            Some(v) => {
                refs.attribute(id, true);
                if v.value_type() != ty {
                    return Err(self.wrong_type(id, ty, v.value_type()));
                }
                Ok(Some(v))
            }
            None => {
                refs.attribute(id, false);
                Ok(None)
            }
        }
    }

    /// `map_attr[key]`: `Ok(None)` when the map is absent, `Ok(Some(None))` when the key is.
    #[inline(always)]
    #[allow(clippy::type_complexity)]
    fn load_entry<'s, R: ReferenceRecorder>(
        &self,
        bag: &'s dyn Bag,
        refs: &mut R,
        id: AttrId,
        key: &str,
    ) -> Result<Option<Option<Cow<'s, str>>>, EvalError> {
        match self.load(bag, refs, id, ValueType::StringMap)? {
            Some(Value::StringMap(m)) => {
                let found = map_get(m, key);
                refs.map_key(id, key, found.is_some());
                Ok(Some(found))
            }
            Some(_) => Err(EvalError::Internal("map attribute is not a map")),
            None => Ok(None),
        }
    }

    fn exec<'s, R: ReferenceRecorder>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut R,
        stack: &mut [Value<'s>],
        origins: &mut [u32],
    ) -> Result<Value<'s>, EvalError> {
        let code = &self.code[..];
        let mut pc = 0usize;
        let mut sp = 0usize;

        macro_rules! push {
            ($v:expr) => {{
                let v = $v;
                match stack.get_mut(sp) {
                    Some(slot) => store(slot, v),
                    None => return Err(EvalError::Internal("stack overflow")),
                }
                sp += 1;
            }};
        }
        macro_rules! set_origin {
            ($origin:expr) => {{
                if let Some(o) = origins.get_mut(sp.wrapping_sub(1)) {
                    *o = $origin;
                }
            }};
        }
        macro_rules! pop {
            () => {{
                if sp == 0 {
                    return Err(EvalError::Internal("stack underflow"));
                }
                sp -= 1;
                std::mem::replace(&mut stack[sp], EMPTY)
            }};
        }
        macro_rules! top {
            () => {{
                match sp.checked_sub(1).and_then(|i| stack.get_mut(i)) {
                    Some(s) => s,
                    None => return Err(EvalError::Internal("stack underflow")),
                }
            }};
        }
        macro_rules! pop_str {
            () => {{
                match pop!() {
                    Value::String(s)
                    | Value::EmailAddress(s)
                    | Value::Uri(s)
                    | Value::DnsName(s) => s,
                    _ => return Err(EvalError::Internal("expected a string operand")),
                }
            }};
        }
        macro_rules! top_bool {
            () => {{
                match top!() {
                    Value::Bool(b) => *b,
                    _ => return Err(EvalError::Internal("expected a bool operand")),
                }
            }};
        }

        while let Some(op) = code.get(pc) {
            pc += 1;
            match *op {
                Op::Const(i) => {
                    let v = self.constant(i)?;
                    let map = matches!(v, Value::StringMap(_));
                    push!(v);
                    if map {
                        set_origin!(NO_ORIGIN);
                    }
                }
                Op::Attr(id, ty) => match self.load(bag, refs, id, ty)? {
                    Some(v) => {
                        push!(v);
                        if ty == ValueType::StringMap {
                            set_origin!(id.0);
                        }
                    }
                    None => return Err(self.absent(id)),
                },
                Op::TryAttr(id, ty, target) => match self.load(bag, refs, id, ty)? {
                    Some(v) => {
                        push!(v);
                        if ty == ValueType::StringMap {
                            set_origin!(id.0);
                        }
                    }
                    None => pc = target as usize,
                },
                Op::AttrEq(id, ty, c, ne) => match self.load(bag, refs, id, ty)? {
                    Some(v) => {
                        let eq = values_eq(&v, self.const_ref(c)?)?;
                        discard(v);
                        push!(Value::Bool(eq != ne));
                    }
                    None => return Err(self.absent(id)),
                },
                Op::EntryEq(id, k, c, ne) => {
                    let key = self.const_str(k)?;
                    let want = self.const_str(c)?;
                    match self.load_entry(bag, refs, id, key)? {
                        Some(found) => {
                            let eq = found.as_deref().unwrap_or("") == want;
                            push!(Value::Bool(eq != ne));
                        }
                        None => return Err(self.absent(id)),
                    }
                }
                Op::Index | Op::TryIndex(_) => {
                    let key = pop_str!();
                    let origin = origins
                        .get(sp.wrapping_sub(1))
                        .copied()
                        .unwrap_or(NO_ORIGIN);
                    let Value::StringMap(m) = pop!() else {
                        return Err(EvalError::Internal("index of a non-map"));
                    };
                    let found = map_get(m, &key);
                    if origin != NO_ORIGIN {
                        refs.map_key(AttrId(origin), &key, found.is_some());
                    }
                    discard(Value::String(key));
                    match (found, *op) {
                        (Some(v), _) => push!(Value::String(v)),
                        (None, Op::TryIndex(target)) => pc = target as usize,
                        (None, _) => push!(Value::String(Cow::Borrowed(""))),
                    }
                }
                Op::AttrIndexConst(id, k) => {
                    let key = self.const_str(k)?;
                    match self.load_entry(bag, refs, id, key)? {
                        Some(found) => push!(Value::String(found.unwrap_or(Cow::Borrowed("")))),
                        None => return Err(self.absent(id)),
                    }
                }
                Op::TryAttrIndexConst(id, k, target) => {
                    let key = self.const_str(k)?;
                    match self.load_entry(bag, refs, id, key)? {
                        Some(Some(v)) => push!(Value::String(v)),
                        _ => pc = target as usize,
                    }
                }
                Op::SetDepth(d) => {
                    let d = d as usize;
                    if d > sp {
                        return Err(EvalError::Internal("bad stack depth"));
                    }
                    while sp > d {
                        sp -= 1;
                        store(&mut stack[sp], EMPTY);
                    }
                }
                Op::Jump(target) => pc = target as usize,
                Op::OrElse(target) => {
                    if top_bool!() {
                        pc = target as usize;
                    } else {
                        sp -= 1;
                    }
                }
                Op::AndThen(target) => {
                    if top_bool!() {
                        sp -= 1;
                    } else {
                        pc = target as usize;
                    }
                }
                Op::JumpIfFalse(target) => {
                    let c = top_bool!();
                    sp -= 1;
                    if !c {
                        pc = target as usize;
                    }
                }
                Op::Not => {
                    let t = top!();
                    match t {
                        Value::Bool(b) => *b = !*b,
                        _ => return Err(EvalError::Internal("! of a non-bool")),
                    }
                }
                Op::Neg => {
                    let t = top!();
                    match t {
                        Value::Int64(i) => *i = i.checked_neg().ok_or(EvalError::Overflow("-"))?,
                        Value::Double(d) => *d = -*d,
                        _ => return Err(EvalError::Internal("- of a non-number")),
                    }
                }
                Op::Eq | Op::Ne => {
                    let b = pop!();
                    let t = top!();
                    let eq = values_eq(t, &b)?;
                    discard(b);
                    store(t, Value::Bool(eq == (*op == Op::Eq)));
                }
                Op::EqConst(i) | Op::NeConst(i) => {
                    let c = self.const_ref(i)?;
                    let t = top!();
                    let eq = values_eq(t, c)?;
                    store(t, Value::Bool(eq == matches!(op, Op::EqConst(_))));
                }
                Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                    let b = pop!();
                    let t = top!();
                    let ord = values_cmp(t, &b)?;
                    discard(b);
                    let r = match (ord, *op) {
                        (None, _) => false,
                        (Some(o), Op::Lt) => o == Ordering::Less,
                        (Some(o), Op::Le) => o != Ordering::Greater,
                        (Some(o), Op::Gt) => o == Ordering::Greater,
                        (Some(o), _) => o != Ordering::Less,
                    };
                    store(t, Value::Bool(r));
                }
                Op::Add => {
                    let b = pop!();
                    let t = top!();
                    let a = std::mem::replace(t, EMPTY);
                    *t = match (a, b) {
                        (Value::Int64(x), Value::Int64(y)) => {
                            Value::Int64(x.checked_add(y).ok_or(EvalError::Overflow("+"))?)
                        }
                        (Value::Double(x), Value::Double(y)) => Value::Double(x + y),
                        (Value::String(x), Value::String(y)) => Value::String(concat(x, y)),
                        _ => return Err(EvalError::Internal("+ of mismatched operands")),
                    };
                }
                Op::Call(f) => {
                    let v = self.call(f, stack, &mut sp)?;
                    push!(v);
                }
                Op::MatchConst(i) => {
                    let pattern = self.const_str(i)?;
                    let t = top!();
                    let m = match t.as_str() {
                        Some(s) => builtins::glob_match(s, pattern),
                        None => return Err(EvalError::Internal("match of a non-string")),
                    };
                    store(t, Value::Bool(m));
                }
                Op::RegexConst(i) => {
                    let re = self
                        .regexes
                        .get(i as usize)
                        .ok_or(EvalError::Internal("bad regex"))?;
                    let t = top!();
                    let m = match t.as_str() {
                        Some(s) => re.is_match(s),
                        None => return Err(EvalError::Internal("regex match of a non-string")),
                    };
                    store(t, Value::Bool(m));
                }
            }
        }
        if sp != 1 {
            return Err(EvalError::Internal("unbalanced stack at the end"));
        }
        Ok(std::mem::replace(&mut stack[0], EMPTY))
    }

    fn call<'s>(
        &self,
        f: Builtin,
        stack: &mut [Value<'s>],
        sp: &mut usize,
    ) -> Result<Value<'s>, EvalError> {
        let mut pop_str = || -> Result<Cow<'s, str>, EvalError> {
            if *sp == 0 {
                return Err(EvalError::Internal("stack underflow"));
            }
            *sp -= 1;
            match std::mem::replace(&mut stack[*sp], EMPTY) {
                Value::String(s) | Value::EmailAddress(s) | Value::Uri(s) | Value::DnsName(s) => {
                    Ok(s)
                }
                _ => Err(EvalError::Internal("expected a string argument")),
            }
        };
        let conversion = |target, text: &str, reason: String| EvalError::Conversion {
            target,
            text: quote_short(text),
            reason,
        };
        Ok(match f {
            Builtin::Ip => {
                let s = pop_str()?;
                match s.parse::<IpAddr>() {
                    Ok(ip) => Value::IpAddress(ip),
                    Err(e) => return Err(conversion(ValueType::IpAddress, &s, e.to_string())),
                }
            }
            Builtin::Timestamp => {
                let s = pop_str()?;
                match Timestamp::parse_rfc3339(&s) {
                    Ok(t) => Value::Timestamp(t),
                    Err(_) => {
                        return Err(conversion(
                            ValueType::Timestamp,
                            &s,
                            "expected RFC 3339, e.g. 2006-01-02T15:04:05Z07:00".to_string(),
                        ));
                    }
                }
            }
            Builtin::Email => {
                let s = pop_str()?;
                builtins::check_email(&s)
                    .map_err(|r| conversion(ValueType::EmailAddress, &s, r))?;
                Value::EmailAddress(s)
            }
            Builtin::DnsName => {
                let s = pop_str()?;
                builtins::check_dns_name(&s).map_err(|r| conversion(ValueType::DnsName, &s, r))?;
                Value::DnsName(s)
            }
            Builtin::Uri => {
                let s = pop_str()?;
                builtins::check_uri(&s).map_err(|r| conversion(ValueType::Uri, &s, r))?;
                Value::Uri(s)
            }
            Builtin::Size => {
                let s = pop_str()?;
                Value::Int64(i64::try_from(s.len()).map_err(|_| EvalError::Overflow("size"))?)
            }
            Builtin::ToLower => {
                let s = pop_str()?;
                if s.chars().any(char::is_uppercase) {
                    Value::String(Cow::Owned(s.to_lowercase()))
                } else {
                    Value::String(s)
                }
            }
            Builtin::Match => {
                let pattern = pop_str()?;
                let s = pop_str()?;
                Value::Bool(builtins::glob_match(&s, &pattern))
            }
            Builtin::StartsWith => {
                let prefix = pop_str()?;
                let s = pop_str()?;
                Value::Bool(s.starts_with(&*prefix))
            }
            Builtin::EndsWith => {
                let suffix = pop_str()?;
                let s = pop_str()?;
                Value::Bool(s.ends_with(&*suffix))
            }
            Builtin::Matches => {
                let s = pop_str()?;
                let pattern = pop_str()?;
                let re = build_regex(&pattern).map_err(|reason| EvalError::Regex {
                    pattern: quote_short(&pattern),
                    reason,
                })?;
                Value::Bool(re.is_match(&s))
            }
        })
    }
}

/// Reads attribute `id`: in place where the bag stores its values ([`Bag::get_stored`]),
/// else into `$fetched` (a `let` of the caller) from [`Bag::get`]. Gives `Option<&Value>`.
macro_rules! attr {
    ($bag:expr, $id:expr, $fetched:ident) => {
        match $bag.get_stored($id) {
            Some(found) => found,
            None => {
                $fetched = fetch($bag, $id);
                $fetched.as_ref()
            }
        }
    };
}
use attr;

#[cold]
#[inline(never)]
fn fetch(bag: &dyn Bag, id: AttrId) -> Option<Value<'_>> {
    bag.get(id)
}

/// Compiles a regular expression within the size limits.
pub(crate) fn build_regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| e.to_string())
}

fn map_get<'s>(m: StringMapRef<'s>, key: &str) -> Option<Cow<'s, str>> {
    match m {
        StringMapRef::Borrowed(view) => view.get(key).map(Cow::Borrowed),
        StringMapRef::Shared(map) => map.get(key).map(|s| Cow::Owned(s.clone())),
    }
}

fn concat<'s>(x: Cow<'s, str>, y: Cow<'s, str>) -> Cow<'s, str> {
    if y.is_empty() {
        x
    } else if x.is_empty() {
        y
    } else {
        let mut s = String::with_capacity(x.len() + y.len());
        s.push_str(&x);
        s.push_str(&y);
        Cow::Owned(s)
    }
}

/// Equality with each type's semantics (DNS names case-insensitively, e-mail addresses and URIs
/// normalised, IPv4-mapped IPv6 equal to IPv4, maps by content).
pub(crate) fn values_eq(a: &Value<'_>, b: &Value<'_>) -> Result<bool, EvalError> {
    Ok(match (a, b) {
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Int64(x), Value::Int64(y)) => x == y,
        (Value::Double(x), Value::Double(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Timestamp(x), Value::Timestamp(y)) => x == y,
        (Value::Duration(x), Value::Duration(y)) => x == y,
        (Value::IpAddress(x), Value::IpAddress(y)) => builtins::ip_eq(x, y),
        (Value::DnsName(x), Value::DnsName(y)) => builtins::dns_eq(x, y),
        (Value::EmailAddress(x), Value::EmailAddress(y)) => builtins::email_eq(x, y),
        (Value::Uri(x), Value::Uri(y)) => builtins::uri_eq(x, y),
        (Value::StringMap(x), Value::StringMap(y)) => x == y,
        _ => return Err(EvalError::Internal("== of mismatched operands")),
    })
}

fn values_cmp(a: &Value<'_>, b: &Value<'_>) -> Result<Option<Ordering>, EvalError> {
    Ok(match (a, b) {
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Int64(x), Value::Int64(y)) => Some(x.cmp(y)),
        (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        _ => return Err(EvalError::Internal("ordering of unordered operands")),
    })
}
