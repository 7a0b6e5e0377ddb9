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

/// Where a string test reads its string.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum StrSrc {
    /// A STRING attribute (absent is an error).
    Attr(AttrId, ValueType),
    /// `map_attribute[constant key]` (absent map is an error, a missing key reads `""`).
    Entry(AttrId, u32),
}

/// A test of a string against a constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum StrTest {
    Eq(u32),
    Ne(u32),
    /// `match(s, glob)`
    Glob(u32),
    /// `s.startsWith(c)`
    Prefix(u32),
    /// `s.endsWith(c)`
    Suffix(u32),
    /// `regex.matches(s)`
    Regex(u32),
}

/// An instruction of a BOOL program: tests set an accumulator, jumps short-circuit `&&`/`||`.
/// BOOL expressions (rule matches) compile to these where their leaves are simple tests, which
/// skips the value stack altogether.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum BOp {
    /// `attribute == constant` (`!=` with the flag).
    AttrEq(AttrId, ValueType, u32, bool),
    Str(StrSrc, StrTest),
    /// A BOOL attribute.
    AttrBool(AttrId),
    Const(bool),
    /// A sub-expression evaluated by the general VM (`subs[i]`).
    Sub(u32),
    Not,
    /// Jump when the accumulator equals the flag.
    JumpIf(bool, u32),
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
    pub tests: Option<Vec<BOp>>,
    pub subs: Vec<Program>,
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
    matches!(
        v,
        Value::String(Cow::Owned(_))
            | Value::EmailAddress(Cow::Owned(_))
            | Value::Uri(Cow::Owned(_))
            | Value::DnsName(Cow::Owned(_))
            | Value::StringMap(StringMapRef::Shared(_))
    )
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
        for op in self.tests.iter().flatten() {
            match op {
                BOp::AttrEq(id, _, _, _)
                | BOp::AttrBool(id)
                | BOp::Str(StrSrc::Attr(id, _) | StrSrc::Entry(id, _), _) => out.push(*id),
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
            + self.tests.as_ref().map_or(0, Vec::len)
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
        tests: &[BOp],
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

    #[inline(always)]
    fn cstr(&self, i: u32) -> Result<&str, Fault> {
        match self.consts.get(i as usize).and_then(Value::as_str) {
            Some(s) => Ok(s),
            None => Err(internal("bad string constant")),
        }
    }

    #[inline(always)]
    fn fetch<'s, R: ReferenceRecorder>(
        bag: &'s dyn Bag,
        refs: &mut R,
        id: AttrId,
        ty: ValueType,
    ) -> Result<Value<'s>, Fault> {
        match bag.get(id) {
            Some(v) => {
                refs.attribute(id, true);
                if v.value_type() != ty {
                    return Err(Fault::WrongType(id, ty, v.value_type()));
                }
                Ok(v)
            }
            None => {
                refs.attribute(id, false);
                Err(Fault::Absent(id))
            }
        }
    }

    #[inline(always)]
    fn str_test(&self, s: &str, t: StrTest) -> Result<bool, Fault> {
        Ok(match t {
            StrTest::Eq(c) => s == self.cstr(c)?,
            StrTest::Ne(c) => s != self.cstr(c)?,
            StrTest::Glob(c) => builtins::glob_match(s, self.cstr(c)?),
            StrTest::Prefix(c) => s.starts_with(self.cstr(c)?),
            StrTest::Suffix(c) => s.ends_with(self.cstr(c)?),
            StrTest::Regex(i) => match self.regexes.get(i as usize) {
                Some(re) => re.is_match(s),
                None => return Err(internal("bad regex")),
            },
        })
    }

    fn exec_tests<R: ReferenceRecorder>(
        &self,
        tests: &[BOp],
        bag: &dyn Bag,
        refs: &mut R,
    ) -> Result<bool, Fault> {
        let mut acc = false;
        let mut pc = 0usize;
        while let Some(op) = tests.get(pc) {
            pc += 1;
            match *op {
                BOp::AttrEq(id, ty, c, ne) => {
                    let v = Self::fetch(bag, refs, id, ty)?;
                    let Some(k) = self.consts.get(c as usize) else {
                        return Err(internal("bad constant"));
                    };
                    let eq = match (&v, k) {
                        (Value::Int64(x), Value::Int64(y)) => x == y,
                        (Value::String(x), Value::String(y)) => x == y,
                        (Value::Bool(x), Value::Bool(y)) => x == y,
                        _ => match values_eq(&v, k) {
                            Ok(eq) => eq,
                            Err(e) => return Err(Fault::Error(Box::new(e))),
                        },
                    };
                    discard(v);
                    acc = eq != ne;
                }
                BOp::Str(StrSrc::Attr(id, ty), t) => {
                    let v = Self::fetch(bag, refs, id, ty)?;
                    acc = match v.as_str() {
                        Some(s) => self.str_test(s, t)?,
                        None => return Err(internal("string test of a non-string")),
                    };
                }
                BOp::Str(StrSrc::Entry(id, k), t) => {
                    let key = self.cstr(k)?;
                    let Value::StringMap(m) = Self::fetch(bag, refs, id, ValueType::StringMap)?
                    else {
                        return Err(internal("map attribute is not a map"));
                    };
                    let found = map_get(m, key);
                    refs.map_key(id, key, found.is_some());
                    acc = self.str_test(found.as_deref().unwrap_or(""), t)?;
                }
                BOp::AttrBool(id) => match Self::fetch(bag, refs, id, ValueType::Bool)? {
                    Value::Bool(b) => acc = b,
                    _ => return Err(internal("bool attribute is not a bool")),
                },
                BOp::Const(b) => acc = b,
                BOp::Sub(i) => {
                    let Some(sub) = self.subs.get(i as usize) else {
                        return Err(internal("bad sub-program"));
                    };
                    acc = sub.run_sub(bag, refs)?;
                }
                BOp::Not => acc = !acc,
                BOp::JumpIf(when, target) => {
                    if acc == when {
                        pc = target as usize;
                    }
                }
            }
        }
        Ok(acc)
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
        self.consts
            .get(i as usize)
            .map(Value::reborrow)
            .ok_or(EvalError::Internal("bad constant"))
    }

    #[inline(always)]
    fn const_ref(&self, i: u32) -> Result<&Value<'static>, EvalError> {
        self.consts
            .get(i as usize)
            .ok_or(EvalError::Internal("bad constant"))
    }

    #[inline(always)]
    fn const_str(&self, i: u32) -> Result<&str, EvalError> {
        self.consts
            .get(i as usize)
            .and_then(Value::as_str)
            .ok_or(EvalError::Internal("bad string constant"))
    }

    #[inline(always)]
    fn load<'s, R: ReferenceRecorder>(
        &self,
        bag: &'s dyn Bag,
        refs: &mut R,
        id: AttrId,
        ty: ValueType,
    ) -> Result<Option<Value<'s>>, EvalError> {
        match bag.get(id) {
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
