//! Compiled instances: a template's fields bound to compiled expressions, and the per-request
//! view of their values that adapters receive.

use std::sync::Arc;

use mixer_attr::{Bag, ReferenceRecorder, Value};
use mixer_expr::{EvalError, Expression};

use smallvec::SmallVec;

use crate::template::TemplateInfo;

/// One field of an instance: a dotted path (`dimensions.response_code`) and its expression.
#[derive(Clone, Debug)]
pub struct CompiledField {
    pub path: Arc<str>,
    pub expr: Expression,
}

/// An instance compiled at config time.
#[derive(Debug)]
pub struct CompiledInstance {
    /// Mixer's fully qualified name: `requestcount.instance.istio-system`.
    pub name: Arc<str>,
    /// The name as written in `metadata.name`.
    pub short_name: Arc<str>,
    pub namespace: Arc<str>,
    pub template: &'static TemplateInfo,
    /// Fields sorted by path.
    pub fields: Vec<CompiledField>,
    /// For each of the template's fields (in [`TemplateInfo::fields`] order), its position in
    /// `fields`, or [`NO_SLOT`] when the instance does not set it (and for map fields, whose
    /// entries are separate fields).
    pub slots: Box<[u32]>,
}

/// A template field the instance does not set.
pub const NO_SLOT: u32 = u32::MAX;

/// An instance field could not be evaluated for this request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("instance `{instance}` field `{field}`: {error}")]
pub struct InstanceError {
    pub instance: String,
    pub field: String,
    pub error: EvalError,
}

impl CompiledInstance {
    /// Whether `reference` names this instance: `name`, `name.namespace`,
    /// `name.instance.namespace` or `name.<template>.namespace` (Istio 1.0 kinds).
    pub fn is_named(&self, reference: &str) -> bool {
        let Some(rest) = reference.strip_prefix(&*self.short_name) else {
            return false;
        };
        if rest.is_empty() {
            return true;
        }
        let Some(rest) = rest.strip_prefix('.') else {
            return false;
        };
        if rest == &*self.namespace {
            return true;
        }
        match rest.split_once('.') {
            Some((kind, ns)) => {
                ns == &*self.namespace && (kind == "instance" || kind == self.template.name)
            }
            None => false,
        }
    }

    /// The `slots` of `fields` (sorted by path) for `template`.
    pub fn slots_for(template: &TemplateInfo, fields: &[CompiledField]) -> Box<[u32]> {
        template
            .fields
            .iter()
            .map(|f| {
                fields
                    .binary_search_by(|x| (*x.path).cmp(f.path))
                    .ok()
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(NO_SLOT)
            })
            .collect()
    }

    /// Position of `path` in [`CompiledInstance::fields`] (adapters resolve positions once, at
    /// build time, and index by position per request).
    pub fn position(&self, path: &str) -> Option<usize> {
        self.fields.binary_search_by(|f| (*f.path).cmp(path)).ok()
    }

    /// Positions and map keys of every field under the map field `prefix` (`dimensions` gives
    /// `(i, "response_code")` for `dimensions.response_code`).
    pub fn map_fields<'s>(
        &'s self,
        prefix: &'s str,
    ) -> impl Iterator<Item = (usize, &'s str)> + 's {
        self.fields.iter().enumerate().filter_map(move |(i, f)| {
            f.path
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('.'))
                .map(|k| (i, k))
        })
    }

    /// Evaluates every field against `bag`, appending the values to `out` (cleared first).
    pub fn evaluate<'s>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut impl ReferenceRecorder,
        out: &mut Vec<Value<'s>>,
    ) -> Result<(), InstanceError> {
        out.clear();
        self.evaluate_into(bag, refs, out)
    }

    /// Appends the values of every field to `out`; on an error `out` is left as it was.
    fn evaluate_into<'s>(
        &'s self,
        bag: &'s dyn Bag,
        refs: &mut impl ReferenceRecorder,
        out: &mut impl ValueList<'s>,
    ) -> Result<(), InstanceError> {
        let start = out.len();
        out.reserve(self.fields.len());
        for field in &self.fields {
            match field.expr.eval(bag, refs) {
                Ok(v) => out.push(v),
                Err(error) => {
                    out.truncate(start);
                    return Err(InstanceError {
                        instance: self.name.to_string(),
                        field: field.path.to_string(),
                        error,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Instance values of one check kept on the stack before spilling to the heap.
const INLINE_VALUES: usize = 16;

/// Where instance values are appended: a `Vec`, or a list kept on the stack.
trait ValueList<'s> {
    fn len(&self) -> usize;
    fn reserve(&mut self, n: usize);
    fn push(&mut self, v: Value<'s>);
    fn truncate(&mut self, n: usize);
}

impl<'s> ValueList<'s> for Vec<Value<'s>> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn reserve(&mut self, n: usize) {
        Vec::reserve(self, n)
    }
    fn push(&mut self, v: Value<'s>) {
        Vec::push(self, v)
    }
    fn truncate(&mut self, n: usize) {
        Vec::truncate(self, n)
    }
}

impl<'s> ValueList<'s> for SmallVec<[Value<'s>; INLINE_VALUES]> {
    fn len(&self) -> usize {
        SmallVec::len(self)
    }
    fn reserve(&mut self, n: usize) {
        SmallVec::reserve(self, n)
    }
    fn push(&mut self, v: Value<'s>) {
        SmallVec::push(self, v)
    }
    fn truncate(&mut self, n: usize) {
        SmallVec::truncate(self, n)
    }
}

/// What an adapter sees of one instance for one request: the compiled instance and the values of
/// its fields, in field order.
#[derive(Clone, Copy, Debug)]
pub struct InstanceView<'a> {
    pub instance: &'a CompiledInstance,
    pub values: &'a [Value<'a>],
}

impl<'a> InstanceView<'a> {
    /// The value of the field at `path` (a linear search by name; adapters on the hot path use
    /// positions resolved at build time).
    pub fn get(&self, path: &str) -> Option<&'a Value<'a>> {
        self.instance
            .position(path)
            .and_then(|i| self.values.get(i))
    }

    /// The value of the template's field number `template_field` (its index in
    /// [`TemplateInfo::fields`], resolved once with [`TemplateInfo::field_index`]): no string
    /// comparison per request. `None` when the instance does not set it.
    #[inline]
    pub fn field(&self, template_field: usize) -> Option<&'a Value<'a>> {
        let position = *self.instance.slots.get(template_field)?;
        self.values.get(position as usize)
    }

    /// The value at a position resolved with [`CompiledInstance::position`].
    pub fn at(&self, position: usize) -> Option<&'a Value<'a>> {
        self.values.get(position)
    }

    /// The instance's name.
    pub fn name(&self) -> &'a str {
        &self.instance.name
    }

    /// `(key, value)` of every field under the map field `prefix`.
    pub fn map<'p>(&self, prefix: &'p str) -> impl Iterator<Item = (&'p str, &'a Value<'a>)> + 'p
    where
        'a: 'p,
    {
        let values = self.values;
        self.instance
            .map_fields(prefix)
            .filter_map(move |(i, k)| values.get(i).map(|v| (k, v)))
    }
}

/// One instance's evaluation: the range of its values, or why it failed.
type Evaluated = Result<(usize, usize), InstanceError>;

/// Instance values evaluated at most once per request: rules and actions naming the same
/// instance share one evaluation (its references are recorded once, which is all a recorder
/// keeps), and its error, if any, is reported to each of them.
pub(crate) struct EvaluatedInstances<'s> {
    /// Instance index -> its values' range in `values`, or its error.
    done: SmallVec<[(usize, Evaluated); 4]>,
    values: SmallVec<[Value<'s>; INLINE_VALUES]>,
}

impl<'s> EvaluatedInstances<'s> {
    /// Room for a typical check (a few instances of a few fields each) on the stack.
    pub(crate) fn new() -> Self {
        EvaluatedInstances {
            done: SmallVec::new(),
            values: SmallVec::new(),
        }
    }

    /// The values of instance `index` (`instance`), evaluated over `bag` the first time.
    pub(crate) fn get(
        &mut self,
        index: usize,
        instance: &'s CompiledInstance,
        bag: &'s dyn Bag,
        refs: &mut impl ReferenceRecorder,
    ) -> Result<&[Value<'s>], &InstanceError> {
        let at = match self.done.iter().position(|(i, _)| *i == index) {
            Some(at) => at,
            None => {
                let start = self.values.len();
                let r = instance
                    .evaluate_into(bag, refs, &mut self.values)
                    .map(|()| (start, self.values.len()));
                self.done.push((index, r));
                self.done.len() - 1
            }
        };
        match &self.done[at].1 {
            Ok((start, end)) => Ok(&self.values[*start..*end]),
            Err(e) => Err(e),
        }
    }
}

/// Something an adapter works out once per instance routed to its handler (field positions,
/// say), looked up per request by the instance's identity. The handler keeps the instances
/// alive, so identity cannot be reused; an instance it was not built with (a handler kept
/// across a config swap) gets its value computed on the spot.
#[derive(Debug)]
pub struct PerInstance<T> {
    entries: Vec<(Arc<CompiledInstance>, T)>,
}

impl<T: Copy> PerInstance<T> {
    /// `of(instance)` for each of `instances`.
    pub fn new(instances: &[Arc<CompiledInstance>], of: impl Fn(&CompiledInstance) -> T) -> Self {
        PerInstance {
            entries: instances.iter().map(|i| (i.clone(), of(i))).collect(),
        }
    }

    /// The value for `instance` (computed with `of` when it is not one of the handler's).
    #[inline]
    pub fn get(&self, instance: &CompiledInstance, of: impl Fn(&CompiledInstance) -> T) -> T {
        self.entries
            .iter()
            .find(|(i, _)| std::ptr::eq(&**i, instance))
            .map_or_else(|| of(instance), |(_, v)| *v)
    }
}
