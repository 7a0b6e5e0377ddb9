//! Compiled instances: a template's fields bound to compiled expressions, and the per-request
//! view of their values that adapters receive.

use std::sync::Arc;

use mixer_attr::{Bag, ReferenceRecorder, Value};
use mixer_expr::{EvalError, Expression};

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
}

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
        for field in &self.fields {
            match field.expr.eval(bag, refs) {
                Ok(v) => out.push(v),
                Err(error) => {
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
