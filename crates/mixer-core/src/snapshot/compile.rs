//! The config compiler: protobuf config messages to a [`Snapshot`].

use std::collections::HashMap;
use std::sync::Arc;

use mixer_attr::{ValueType, Vocabulary};
use mixer_proto::v2;

use super::params::{flatten, struct_to_json};
use super::{
    CompiledAction, CompiledHeaderOp, CompiledRule, Config, ConfigError, ConfigErrors,
    FailurePolicy, HandlerEntry, HeaderOpKind, Snapshot,
};
use crate::adapter::{Adapter, AdapterRegistry, HandlerConfig};
use crate::instance::{CompiledField, CompiledInstance};
use crate::pal::Platform;
use crate::template::{self, FieldType, Variety};

/// Options of [`compile`].
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Skip handlers whose adapter this build lacks, with a warning, instead of rejecting the
    /// config (rules' actions that use them are dropped).
    pub skip_unknown_adapters: bool,
    /// The namespace whose rules apply to every request (Mixer's default config namespace).
    pub root_namespace: String,
    /// Index rules by their guard attributes (off only to compare results in tests).
    pub index_rules: bool,
    /// Seed of the report sampling generators (same seed, same reports: same decisions).
    pub report_seed: u64,
    /// Where report dispatch logs drops (standard error by default).
    pub dispatch_log: crate::dispatch::LogSink,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            skip_unknown_adapters: false,
            root_namespace: "istio-system".to_string(),
            index_rules: true,
            report_seed: 0x4d49_5845_5232,
            dispatch_log: crate::dispatch::LogSink::default(),
        }
    }
}

/// Resolves the ways config refers to an object (`name`, `name.namespace`, `name.kind`,
/// `name.kind.namespace`) to an index.
#[derive(Default)]
struct Names {
    aliases: HashMap<String, usize>,
    known: Vec<String>,
}

impl Names {
    fn add(&mut self, name: &str, namespace: &str, kinds: &[&str], index: usize) {
        self.known.push(format!("{name}.{namespace}"));
        self.aliases.insert(format!("{name}.{namespace}"), index);
        for kind in kinds {
            self.aliases
                .insert(format!("{name}.{kind}.{namespace}"), index);
        }
    }

    fn resolve(&self, reference: &str, namespace: &str) -> Option<usize> {
        self.aliases
            .get(&format!("{reference}.{namespace}"))
            .or_else(|| self.aliases.get(reference))
            .copied()
    }

    fn hint(&self) -> String {
        let mut k = self.known.clone();
        k.sort();
        k.truncate(8);
        if k.is_empty() {
            "none are defined".to_string()
        } else {
            format!("known: {}", k.join(", "))
        }
    }
}

fn object(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

fn value_type(v: i32) -> Option<ValueType> {
    v2::ValueType::try_from(v)
        .ok()
        .and_then(|t| t.as_str_name().parse().ok())
}

fn type_fits(field: ValueType, expr: ValueType) -> bool {
    field == expr || (field == ValueType::String && expr.is_string_like())
}

struct PendingHandler<'c> {
    msg: &'c v2::Handler,
    adapter: Option<Arc<dyn Adapter>>,
    instances: Vec<usize>,
    referenced: bool,
}

/// Compiles `config` into a snapshot. Handlers whose adapter, params and instances are unchanged
/// from `previous` are kept (with their state) rather than rebuilt. On failure, returns every
/// error found.
pub fn compile(
    config: &Config,
    registry: &AdapterRegistry,
    platform: &Platform,
    previous: Option<&Snapshot>,
    options: &CompileOptions,
) -> Result<Snapshot, ConfigErrors> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    // 1. Vocabulary: Istio's built-in attributes plus every manifest.
    let mut vocabulary = Vocabulary::istio();
    for m in &config.manifests {
        let obj = object("attributemanifest", &m.namespace, &m.name);
        for (name, info) in &m.attributes {
            match value_type(info.value_type) {
                None => errors.push(ConfigError::new(
                    &obj,
                    format!("attributes.{name}.valueType"),
                    "missing or unknown value type",
                )),
                Some(ty) => {
                    if let Err(e) = vocabulary.declare(name, ty) {
                        errors.push(ConfigError::new(
                            &obj,
                            format!("attributes.{name}"),
                            e.to_string(),
                        ));
                    }
                }
            }
        }
    }

    // 2. Instances.
    let mut instance_names = Names::default();
    // Instances rejected for their template: references to them are not reported again.
    let mut failed_instances = Names::default();
    let mut instances: Vec<Arc<CompiledInstance>> = Vec::new();
    let mut instance_ok: Vec<bool> = Vec::new();
    let mut instance_bindings: Vec<&std::collections::BTreeMap<String, String>> = Vec::new();
    for msg in &config.instances {
        let obj = object("instance", &msg.namespace, &msg.name);
        let index = instances.len();
        if instance_names.resolve(&msg.name, &msg.namespace).is_some() {
            errors.push(ConfigError::new(&obj, "name", "duplicate instance name"));
        }
        let Some(tmpl) = template::template(&msg.template) else {
            let known: Vec<_> = template::TEMPLATES.iter().map(|t| t.name).collect();
            errors.push(ConfigError::new(
                &obj,
                "template",
                format!(
                    "unknown template `{}` (known: {})",
                    msg.template,
                    known.join(", ")
                ),
            ));
            failed_instances.add(
                &msg.name,
                &msg.namespace,
                &["instance", msg.template.as_str()],
                0,
            );
            continue;
        };
        instance_names.add(&msg.name, &msg.namespace, &["instance", tmpl.name], index);
        let params = msg
            .params
            .as_ref()
            .map(struct_to_json)
            .unwrap_or(serde_json::Value::Null);
        let mut flat = Vec::new();
        if let Err(path) = flatten(&params, "", &mut flat) {
            errors.push(ConfigError::new(
                &obj,
                format!("params.{path}"),
                "lists are not valid instance params",
            ));
        }
        let mut fields = Vec::new();
        let mut ok = true;
        for (path, source) in flat {
            let field_name = format!("params.{path}");
            let Some(field) = tmpl.field(&path) else {
                errors.push(ConfigError::new(
                    &obj,
                    field_name,
                    format!("template `{}` has no field `{path}`", tmpl.name),
                ));
                ok = false;
                continue;
            };
            match mixer_expr::compile(&source, &vocabulary) {
                Err(e) => {
                    errors.push(ConfigError::new(
                        &obj,
                        field_name,
                        format!("expression `{source}`: {e}"),
                    ));
                    ok = false;
                }
                Ok(expr) => {
                    let want = match field.ty {
                        FieldType::Value(t) | FieldType::MapOf(t) => Some(t),
                        FieldType::Any | FieldType::MapOfAny => None,
                    };
                    if let Some(want) = want.filter(|w| !type_fits(*w, expr.result_type())) {
                        errors.push(ConfigError::new(
                            &obj,
                            field_name,
                            format!(
                                "expression `{source}` is {} but the field is {want}",
                                expr.result_type()
                            ),
                        ));
                        ok = false;
                    }
                    fields.push(CompiledField {
                        path: path.into(),
                        expr,
                    });
                }
            }
        }
        fields.sort_by(|a, b| a.path.cmp(&b.path));
        instances.push(Arc::new(CompiledInstance {
            name: format!("{}.instance.{}", msg.name, msg.namespace).into(),
            short_name: msg.name.as_str().into(),
            namespace: msg.namespace.as_str().into(),
            template: tmpl,
            slots: CompiledInstance::slots_for(tmpl, &fields),
            fields,
        }));
        instance_ok.push(ok);
        instance_bindings.push(&msg.attribute_bindings);
    }

    // 3. Handlers (built after rules say which instances each one receives).
    let mut handler_names = Names::default();
    let mut pending: Vec<PendingHandler<'_>> = Vec::new();
    for msg in &config.handlers {
        let obj = object("handler", &msg.namespace, &msg.name);
        if handler_names.resolve(&msg.name, &msg.namespace).is_some() {
            errors.push(ConfigError::new(&obj, "name", "duplicate handler name"));
        }
        let adapter = registry.get(&msg.adapter).cloned();
        if adapter.is_none() {
            if options.skip_unknown_adapters {
                warnings.push(format!(
                    "{obj}: adapter `{}` is not in this build; handler skipped",
                    msg.adapter
                ));
            } else {
                errors.push(ConfigError::new(
                    &obj,
                    "adapter",
                    format!(
                        "adapter `{}` is not in this build (available: {})",
                        msg.adapter,
                        registry.names().join(", ")
                    ),
                ));
            }
        }
        handler_names.add(
            &msg.name,
            &msg.namespace,
            &["handler", msg.adapter.as_str()],
            pending.len(),
        );
        pending.push(PendingHandler {
            msg,
            adapter,
            instances: Vec::new(),
            referenced: false,
        });
    }

    // 4. Rules.
    struct RawAction {
        name: Option<Arc<str>>,
        handler: usize,
        instances: Vec<usize>,
        variety: Variety,
    }
    let mut raw_rules = Vec::new();
    // Attribute-producing stages: `apaChain` entries first, then rules' generator actions.
    let mut raw_apa: Vec<super::apa::RawApa> = Vec::new();
    let mut rule_apa: Vec<super::apa::RawApa> = Vec::new();
    for (ei, entry) in config.apa_chain.iter().enumerate() {
        let obj = format!("apaChain[{ei}]");
        let Some(h) = handler_names.resolve(&entry.handler, &options.root_namespace) else {
            errors.push(ConfigError::new(
                &obj,
                "handler",
                format!("no handler `{}` ({})", entry.handler, handler_names.hint()),
            ));
            continue;
        };
        if entry.instances.is_empty() {
            errors.push(ConfigError::new(
                &obj,
                "instances",
                "an APA stage needs an instance",
            ));
        }
        for (ii, iname) in entry.instances.iter().enumerate() {
            let field = format!("instances[{ii}]");
            let Some(i) = instance_names.resolve(iname, &options.root_namespace) else {
                if failed_instances
                    .resolve(iname, &options.root_namespace)
                    .is_none()
                {
                    errors.push(ConfigError::new(
                        &obj,
                        field,
                        format!("no instance `{iname}` ({})", instance_names.hint()),
                    ));
                }
                continue;
            };
            let tmpl = instances[i].template;
            let accepts = pending[h]
                .adapter
                .as_ref()
                .is_none_or(|a| a.templates().contains(&tmpl.name));
            if tmpl.variety != Variety::AttributeGenerator || !accepts {
                errors.push(ConfigError::new(
                    &obj,
                    field,
                    format!(
                        "instance `{iname}` (template `{}`) is not an attribute-generator input of handler `{}`",
                        tmpl.name, entry.handler
                    ),
                ));
                continue;
            }
            if !pending[h].instances.contains(&i) {
                pending[h].instances.push(i);
            }
            pending[h].referenced = true;
            raw_apa.push(super::apa::RawApa {
                object: obj.clone(),
                handler: h,
                instance: i,
                predicates: None,
                extra_bindings: entry.output_bindings.clone(),
            });
        }
    }
    for msg in &config.rules {
        let obj = object("rule", &msg.namespace, &msg.name);
        let predicate = if msg.r#match.trim().is_empty() {
            None
        } else {
            match mixer_expr::compile(&msg.r#match, &vocabulary) {
                Err(e) => {
                    errors.push(ConfigError::new(
                        &obj,
                        "match",
                        format!("expression `{}`: {e}", msg.r#match),
                    ));
                    None
                }
                Ok(expr) if expr.result_type() != ValueType::Bool => {
                    errors.push(ConfigError::new(
                        &obj,
                        "match",
                        format!(
                            "expression `{}` is {}, not BOOL",
                            msg.r#match,
                            expr.result_type()
                        ),
                    ));
                    None
                }
                Ok(expr) => Some(expr),
            }
        };
        let mut actions = Vec::new();
        for (ai, action) in msg.actions.iter().enumerate() {
            let Some(h) = handler_names.resolve(&action.handler, &msg.namespace) else {
                errors.push(ConfigError::new(
                    &obj,
                    format!("actions[{ai}].handler"),
                    format!("no handler `{}` ({})", action.handler, handler_names.hint()),
                ));
                continue;
            };
            let adapter = pending[h].adapter.clone();
            if action.instances.is_empty() {
                errors.push(ConfigError::new(
                    &obj,
                    format!("actions[{ai}].instances"),
                    "an action needs at least one instance",
                ));
            }
            let mut by_variety: Vec<(Variety, Vec<usize>)> = Vec::new();
            for (ii, iname) in action.instances.iter().enumerate() {
                let field = format!("actions[{ai}].instances[{ii}]");
                let Some(i) = instance_names.resolve(iname, &msg.namespace) else {
                    if failed_instances.resolve(iname, &msg.namespace).is_none() {
                        errors.push(ConfigError::new(
                            &obj,
                            field,
                            format!("no instance `{iname}` ({})", instance_names.hint()),
                        ));
                    }
                    continue;
                };
                let Some(adapter) = &adapter else { continue };
                let tmpl = instances[i].template;
                if !adapter.templates().contains(&tmpl.name) {
                    errors.push(ConfigError::new(
                        &obj,
                        field,
                        format!(
                            "adapter `{}` of handler `{}` does not accept template `{}` (it accepts: {})",
                            adapter.name(),
                            action.handler,
                            tmpl.name,
                            adapter.templates().join(", ")
                        ),
                    ));
                    continue;
                }
                match by_variety.iter_mut().find(|(v, _)| *v == tmpl.variety) {
                    Some((_, list)) => list.push(i),
                    None => by_variety.push((tmpl.variety, vec![i])),
                }
                if !pending[h].instances.contains(&i) {
                    pending[h].instances.push(i);
                }
            }
            if adapter.is_none() {
                warnings.push(format!(
                    "{obj}: action {ai} dropped: handler `{}` was skipped",
                    action.handler
                ));
                continue;
            }
            pending[h].referenced = true;
            let name = (!action.name.is_empty()).then(|| Arc::from(action.name.as_str()));
            for (variety, list) in by_variety {
                if variety == Variety::AttributeGenerator {
                    for &i in &list {
                        rule_apa.push(super::apa::RawApa {
                            object: obj.clone(),
                            handler: h,
                            instance: i,
                            predicates: predicate.clone().map(|p| vec![p]),
                            extra_bindings: Default::default(),
                        });
                    }
                    continue;
                }
                actions.push(RawAction {
                    name: name.clone(),
                    handler: h,
                    instances: list,
                    variety,
                });
            }
        }
        let mut header_ops =
            |ops: &[v2::RuleHeaderOperation], which: &str| -> Vec<CompiledHeaderOp> {
                let mut out = Vec::new();
                for (oi, op) in ops.iter().enumerate() {
                    let kind = match v2::rule_header_operation::Operation::try_from(op.operation) {
                        Ok(v2::rule_header_operation::Operation::Replace) => HeaderOpKind::Replace,
                        Ok(v2::rule_header_operation::Operation::Remove) => HeaderOpKind::Remove,
                        Ok(v2::rule_header_operation::Operation::Append) => HeaderOpKind::Append,
                        Err(_) => {
                            errors.push(ConfigError::new(
                                &obj,
                                format!("{which}[{oi}].operation"),
                                "unknown operation",
                            ));
                            continue;
                        }
                    };
                    if op.name.is_empty() {
                        errors.push(ConfigError::new(
                            &obj,
                            format!("{which}[{oi}].name"),
                            "a header operation needs a header name",
                        ));
                    }
                    let mut values = Vec::new();
                    for (vi, src) in op.values.iter().enumerate() {
                        match mixer_expr::compile(src, &vocabulary) {
                            Ok(e) => values.push(e),
                            Err(e) => errors.push(ConfigError::new(
                                &obj,
                                format!("{which}[{oi}].values[{vi}]"),
                                format!("expression `{src}`: {e}"),
                            )),
                        }
                    }
                    out.push(CompiledHeaderOp {
                        name: op.name.to_ascii_lowercase().into(),
                        values,
                        kind,
                    });
                }
                out
            };
        let request_header_ops =
            header_ops(&msg.request_header_operations, "requestHeaderOperations");
        let response_header_ops =
            header_ops(&msg.response_header_operations, "responseHeaderOperations");
        let namespace_scope = (!msg.namespace.is_empty()
            && msg.namespace != options.root_namespace)
            .then(|| Arc::from(msg.namespace.as_str()));
        let fault = msg.fault.as_ref().and_then(|f| {
            if !(0.0..=100.0).contains(&f.percentage) || f.percentage.is_nan() {
                errors.push(ConfigError::new(
                    &obj,
                    "fault.percentage",
                    "must be between 0 and 100",
                ));
                return None;
            }
            if !(0..=16).contains(&f.error_code) {
                errors.push(ConfigError::new(
                    &obj,
                    "fault.errorCode",
                    "must be a google.rpc code (0-16)",
                ));
                return None;
            }
            let delay = f
                .delay
                .and_then(|d| std::time::Duration::try_from(d).ok())
                .filter(|d| !d.is_zero());
            let status = (f.error_code != 0).then(|| {
                let message = if f.error_message.is_empty() {
                    "fault injected".to_string()
                } else {
                    f.error_message.clone()
                };
                crate::status::Status::new(crate::status::Code(f.error_code), message)
            });
            (f.percentage > 0.0 && (status.is_some() || delay.is_some())).then_some(super::Fault {
                fraction: f.percentage / 100.0,
                status,
                delay,
            })
        });
        raw_rules.push((
            obj,
            predicate,
            namespace_scope,
            actions,
            request_header_ops,
            response_header_ops,
            msg.experimental,
            fault,
        ));
    }

    // 5. Build the handlers rules refer to (or keep unchanged ones from the previous snapshot).
    let mut handler_index: HashMap<usize, usize> = HashMap::new();
    let mut handlers = Vec::new();
    for (pi, p) in pending.iter().enumerate() {
        let (Some(adapter), true) = (&p.adapter, p.referenced) else {
            continue;
        };
        if p.instances
            .iter()
            .any(|i| !instance_ok.get(*i).copied().unwrap_or(false))
        {
            continue; // errors already reported on the instance
        }
        let obj = object("handler", &p.msg.namespace, &p.msg.name);
        let name: Arc<str> = format!("{}.{}", p.msg.name, p.msg.namespace).into();
        let params = p
            .msg
            .params
            .as_ref()
            .map(struct_to_json)
            .unwrap_or(serde_json::Value::Object(Default::default()));
        let handler_instances: Vec<Arc<CompiledInstance>> =
            p.instances.iter().map(|i| instances[*i].clone()).collect();
        let fingerprint = fingerprint(adapter.name(), &params, &handler_instances);
        let failure_policy = match p.msg.dispatch.as_ref().map(|d| d.failure_policy) {
            Some(x) if x == v2::dispatch_controls::FailurePolicy::FailOpen as i32 => {
                FailurePolicy::FailOpen
            }
            _ => FailurePolicy::FailClose,
        };
        let kept = previous
            .and_then(|prev| prev.handler(&name))
            .filter(|old| old.fingerprint == fingerprint)
            .map(|old| old.handler.clone());
        let handler = match kept {
            Some(h) => h,
            None => {
                let cfg = HandlerConfig {
                    name: &name,
                    params: &params,
                    instances: &handler_instances,
                    platform,
                };
                match adapter.build(&cfg) {
                    Ok(h) => h,
                    Err(e) => {
                        let field = e
                            .field
                            .map(|f| format!("params.{f}"))
                            .unwrap_or_else(|| "params".to_string());
                        errors.push(ConfigError::new(&obj, field, e.message));
                        continue;
                    }
                }
            }
        };
        handler_index.insert(pi, handlers.len());
        let dispatch = p.msg.dispatch.unwrap_or_default();
        let timeout = dispatch
            .timeout
            .or_else(|| p.msg.connection.as_ref().and_then(|c| c.timeout))
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(super::DEFAULT_HANDLER_TIMEOUT);
        let settings = crate::dispatch::DispatchSettings {
            seed: options.report_seed,
            log: &options.dispatch_log,
        };
        let report_dispatch = match crate::dispatch::ReportDispatch::new(
            name.clone(),
            handler.clone(),
            &handler_instances,
            &dispatch,
            platform,
            settings,
        ) {
            Ok(d) => d,
            Err(e) => {
                errors.push(ConfigError::new(
                    &obj,
                    format!("dispatch.{}", e.field),
                    e.message,
                ));
                continue;
            }
        };
        handlers.push(HandlerEntry {
            report_dispatch,
            name,
            adapter: adapter.name(),
            params,
            handler,
            failure_policy,
            timeout,
            retry: crate::retry::RetryPolicy::from_config(dispatch.retry.as_ref()),
            dispatch,
            fingerprint,
        });
    }
    for (pi, p) in pending.iter().enumerate() {
        if p.adapter.is_some() && !p.referenced {
            let _ = pi;
            warnings.push(format!(
                "{}: no rule uses this handler",
                object("handler", &p.msg.namespace, &p.msg.name)
            ));
        }
    }

    let quota_specs = super::QuotaSpecs::compile(config, &vocabulary, &mut errors);
    raw_apa.extend(rule_apa);
    let apa = super::apa::compile_chain(
        raw_apa,
        &instances,
        &instance_bindings,
        &handler_index,
        &handlers,
        &vocabulary,
        &mut errors,
        &mut warnings,
    );

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }

    let mut rules = Vec::new();
    let mut guards = Vec::new();
    for (
        name,
        predicate,
        namespace_scope,
        actions,
        request_header_ops,
        response_header_ops,
        experimental,
        fault,
    ) in raw_rules
    {
        guards.push(
            predicate
                .as_ref()
                .filter(|_| options.index_rules)
                .and_then(|p| super::index::guard_of(p.source(), &vocabulary)),
        );
        let mut rule = CompiledRule {
            name: name.into(),
            predicate,
            namespace_scope,
            check_actions: Vec::new(),
            quota_actions: Vec::new(),
            report_actions: Vec::new(),
            mutation_actions: Vec::new(),
            request_header_ops,
            response_header_ops,
            experimental,
            fault,
        };
        for a in actions {
            let Some(&handler) = handler_index.get(&a.handler) else {
                continue;
            };
            let compiled = CompiledAction {
                name: a.name,
                handler,
                instances: a.instances,
            };
            match a.variety {
                Variety::Check => rule.check_actions.push(compiled),
                Variety::Quota => rule.quota_actions.push(compiled),
                Variety::Report => rule.report_actions.push(compiled),
                Variety::Mutation => rule.mutation_actions.push(compiled),
                Variety::AttributeGenerator => {}
            }
        }
        rules.push(rule);
    }
    let destination_namespace = vocabulary.lookup("destination.namespace");
    let rule_index = super::index::RuleIndex::build(&guards);
    Ok(Snapshot {
        vocabulary,
        handlers,
        instances,
        rules,
        apa,
        quota_specs,
        rule_index,
        warnings,
        destination_namespace,
    })
}

fn fingerprint(
    adapter: &str,
    params: &serde_json::Value,
    instances: &[Arc<CompiledInstance>],
) -> String {
    let mut s = format!("{adapter}\n{params}\n");
    let mut names: Vec<String> = instances
        .iter()
        .map(|i| {
            let fields: Vec<String> = i
                .fields
                .iter()
                .map(|f| format!("{}={}", f.path, f.expr.source()))
                .collect();
            format!("{}:{}:{}", i.name, i.template.name, fields.join(";"))
        })
        .collect();
    names.sort();
    s.push_str(&names.join("\n"));
    s
}
