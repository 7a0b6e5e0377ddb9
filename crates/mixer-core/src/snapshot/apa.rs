//! The attribute-producing (APA) chain as compiled from config.
//!
//! Two config forms produce stages: `apaChain` entries (in their order) and, as in Istio, rules
//! whose actions send an attribute-generator instance (`kind: kubernetes`) to a handler (in rule
//! order; the same handler and instance named by several rules is one stage that runs when any
//! of their `match` expressions holds). Each stage binds template outputs (`$out.*`) to
//! attributes; two stages never bind the same attribute.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mixer_attr::{AttrId, Attributes, Value, ValueType, Vocabulary};
use mixer_expr::{Expression, ast};

use super::{ConfigError, HandlerEntry};
use crate::apa::{ApaCache, KeyForm};
use crate::instance::CompiledInstance;

/// One attribute bound from an APA's outputs.
#[derive(Clone, Debug)]
pub struct ApaBinding {
    /// The attribute written (in the snapshot's vocabulary).
    pub target: AttrId,
    /// Over the request's attributes and `$out.*` (ids from [`ApaChain::out_base`]).
    pub expr: Expression,
    /// Set when `expr` is `$out.x` or `$out.x | <constant>` (Istio's bindings): read straight
    /// from the outputs, the interpreter only for what it alone decides (a wrong type, an
    /// absent output without a default).
    pub(crate) direct: Option<OutRead>,
}

/// A binding that reads one output, with a constant default.
#[derive(Clone, Debug)]
pub(crate) struct OutRead {
    /// Output position.
    pub position: usize,
    /// The output's declared type (what the interpreter would check).
    pub ty: ValueType,
    /// The value when the output is absent (`None`: no default, the binding fails).
    pub default: Option<Value<'static>>,
}

impl OutRead {
    /// The plan for `expr` (compiled from `source`), if it reads one output with a constant
    /// default. `outputs` are the declared `$out.*` types by position from `out_base`.
    fn of(source: &str, expr: &Expression, out_base: u32, outputs: &[ValueType]) -> Option<Self> {
        let out = |e: &ast::Expr| match e {
            ast::Expr::Ident { name, .. } => name.strip_prefix("$out.").map(|_| ()),
            _ => None,
        };
        let ast = mixer_expr::parse(source).ok()?;
        let has_default = match &ast {
            ast::Expr::Binary {
                op: ast::BinaryOp::Or,
                lhs,
                ..
            } => {
                out(lhs)?;
                true
            }
            e => {
                out(e)?;
                false
            }
        };
        // It reads exactly one attribute: that output (so the default reads none).
        let [id] = expr.attributes() else {
            return None;
        };
        let position = id.0.checked_sub(out_base)? as usize;
        let ty = *outputs.get(position)?;
        let default = if has_default {
            // Over no attributes at all, the expression is its default.
            Some(expr.eval(&Attributes::new(), &mut ()).ok()?.into_owned())
        } else {
            None
        };
        Some(OutRead {
            position,
            ty,
            default,
        })
    }
}

/// One stage of the chain: a handler, the instance it receives, and the bindings of its
/// outputs.
#[derive(Debug)]
pub struct ApaStage {
    /// `handler.namespace/instance` for messages and counters.
    pub name: Arc<str>,
    /// Index into [`super::Snapshot::handlers`].
    pub handler: usize,
    /// Index into [`super::Snapshot::instances`].
    pub instance: usize,
    /// The stage runs when any of these holds; `None` runs it for every request.
    pub predicates: Option<Vec<Expression>>,
    pub bindings: Vec<ApaBinding>,
    /// Whether its instance or predicates read an attribute an earlier stage binds (if not,
    /// they are evaluated over the ingested attributes directly).
    pub(crate) reads_bound: bool,
    /// Outputs reused per instance values, for adapters that allow it.
    pub cache: ApaCache,
}

/// The compiled chain.
#[derive(Debug, Default)]
pub struct ApaChain {
    pub stages: Vec<ApaStage>,
    /// The id of `$out.<first output>` in binding expressions: output `n` is `out_base + n`.
    pub out_base: u32,
    /// For each attribute id: the binding that produces it, as (stage, binding) numbered
    /// across the chain (`NOT_BOUND` when no stage binds it).
    pub(crate) bound: Vec<u32>,
    /// Flat binding number -> (stage, index in the stage's bindings).
    pub(crate) bindings: Vec<(u32, u32)>,
}

/// Marks an attribute no stage binds.
pub(crate) const NOT_BOUND: u32 = u32::MAX;

impl ApaChain {
    /// True when no stage runs.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The flat number of the binding producing `id`, if any.
    #[inline]
    pub(crate) fn binding_of(&self, id: AttrId) -> Option<usize> {
        match self.bound.get(id.index()) {
            Some(&b) if b != NOT_BOUND => Some(b as usize),
            _ => None,
        }
    }
}

/// One stage as found in config, before handlers are built.
pub(crate) struct RawApa {
    /// The config object it comes from (for errors).
    pub object: String,
    /// Index into the pending handlers.
    pub handler: usize,
    pub instance: usize,
    /// The stage runs when any holds; `None`: every request.
    pub predicates: Option<Vec<Expression>>,
    /// Bindings from an `apaChain` entry (they add to and override the instance's).
    pub extra_bindings: BTreeMap<String, String>,
}

/// Builds the chain. `bindings_of[i]` are instance `i`'s `attributeBindings`; `handler_index`
/// maps pending handlers to built ones (a handler that failed to build has already been
/// reported).
#[allow(clippy::too_many_arguments)] // the compile pass's tables, passed through once
pub(crate) fn compile_chain(
    raw: Vec<RawApa>,
    instances: &[Arc<CompiledInstance>],
    bindings_of: &[&BTreeMap<String, String>],
    handler_index: &HashMap<usize, usize>,
    handlers: &[HandlerEntry],
    vocabulary: &Vocabulary,
    errors: &mut Vec<ConfigError>,
    warnings: &mut Vec<String>,
) -> ApaChain {
    let out_base = vocabulary.len() as u32;
    // Merge stages naming the same handler and instance.
    let mut merged: Vec<RawApa> = Vec::new();
    for r in raw {
        match merged
            .iter_mut()
            .find(|m| m.handler == r.handler && m.instance == r.instance)
        {
            Some(m) => {
                // Either predicate absent: the stage runs always.
                m.predicates = match (m.predicates.take(), r.predicates) {
                    (Some(mut a), Some(b)) => {
                        a.extend(b);
                        Some(a)
                    }
                    _ => None,
                };
                m.extra_bindings.extend(r.extra_bindings);
            }
            None => merged.push(r),
        }
    }
    let mut owner: HashMap<AttrId, Arc<str>> = HashMap::new();
    let mut stages = Vec::new();
    for r in merged {
        let Some(&handler) = handler_index.get(&r.handler) else {
            continue;
        };
        let entry = &handlers[handler];
        let instance = &instances[r.instance];
        let name: Arc<str> = format!("{}/{}", entry.name, instance.short_name).into();
        let Some(producer) = entry.handler.as_attribute_producer() else {
            errors.push(ConfigError::new(
                &r.object,
                "handler",
                format!("handler `{}` does not produce attributes", entry.name),
            ));
            continue;
        };
        if !producer.active() {
            warnings.push(format!(
                "{}: handler `{}` has no source to look attributes up in; its stage is left out of the attribute-producing chain",
                r.object, entry.name
            ));
            continue;
        }
        // `$out.<field>` for the template's outputs, after the snapshot's own attributes.
        let mut out_vocab = vocabulary.clone();
        let mut out_types = Vec::with_capacity(instance.template.outputs.len());
        for (pos, field) in instance.template.outputs.iter().enumerate() {
            let ty = match field.ty {
                crate::template::FieldType::Value(t) | crate::template::FieldType::MapOf(t) => t,
                _ => ValueType::String,
            };
            out_types.push(ty);
            match out_vocab.declare(&format!("$out.{}", field.path), ty) {
                Ok(id) if id.0 == out_base + pos as u32 => {}
                _ => {
                    errors.push(ConfigError::new(
                        &r.object,
                        "attributeBindings",
                        format!(
                            "output `$out.{}` clashes with a declared attribute",
                            field.path
                        ),
                    ));
                }
            }
        }
        let mut sources: BTreeMap<String, String> = bindings_of
            .get(r.instance)
            .map(|m| (*m).clone())
            .unwrap_or_default();
        sources.extend(r.extra_bindings);
        let reads = |e: &Expression| e.attributes().iter().any(|a| owner.contains_key(a));
        let reads_bound = instance.fields.iter().any(|f| reads(&f.expr))
            || r.predicates.iter().flatten().any(reads);
        let mut bindings = Vec::new();
        for (attr, source) in &sources {
            let field = format!("attributeBindings.{attr}");
            let Some((target, target_ty)) = vocabulary.lookup_typed(attr) else {
                errors.push(ConfigError::new(
                    &r.object,
                    field,
                    format!(
                        "`{attr}` is not a declared attribute (declare it in an attribute manifest)"
                    ),
                ));
                continue;
            };
            let expr = match mixer_expr::compile(source, &out_vocab) {
                Ok(e) => e,
                Err(e) => {
                    errors.push(ConfigError::new(
                        &r.object,
                        field,
                        format!("expression `{source}`: {e}"),
                    ));
                    continue;
                }
            };
            if expr.result_type() != target_ty {
                errors.push(ConfigError::new(
                    &r.object,
                    field,
                    format!(
                        "expression `{source}` is {} but `{attr}` is {target_ty}",
                        expr.result_type()
                    ),
                ));
                continue;
            }
            if let Some(other) = owner.get(&target) {
                errors.push(ConfigError::new(
                    &r.object,
                    field,
                    format!(
                        "`{attr}` is already produced by `{other}`: APA outputs may not overlap"
                    ),
                ));
                continue;
            }
            owner.insert(target, name.clone());
            let direct = OutRead::of(source, &expr, out_base, &out_types);
            bindings.push(ApaBinding {
                target,
                expr,
                direct,
            });
        }
        // A single STRING field (a token) is its own cache key; anything else is encoded.
        let form = match &instance.fields[..] {
            [only] if only.expr.result_type() == ValueType::String => KeyForm::Raw,
            _ => KeyForm::Encoded,
        };
        stages.push(ApaStage {
            name,
            handler,
            instance: r.instance,
            predicates: r.predicates,
            bindings,
            reads_bound,
            cache: ApaCache::new(form),
        });
    }
    let mut bound = vec![NOT_BOUND; vocabulary.len()];
    let mut flat = Vec::new();
    for (si, stage) in stages.iter().enumerate() {
        for (bi, b) in stage.bindings.iter().enumerate() {
            if let Some(slot) = bound.get_mut(b.target.index()) {
                *slot = flat.len() as u32;
                flat.push((si as u32, bi as u32));
            }
        }
    }
    ApaChain {
        stages,
        out_base,
        bound,
        bindings: flat,
    }
}
