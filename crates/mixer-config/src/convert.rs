//! Kubernetes-style documents (`apiVersion`, `kind`, `metadata`, `spec`) to `mixer.v2` messages,
//! recording where every field was written.

use std::collections::HashMap;
use std::sync::Arc;

use mixer_core::ConfigError;
use mixer_core::snapshot::json_to_struct;
use mixer_core::template::TEMPLATES;
use mixer_proto::prost_types;
use mixer_proto::v2;

use crate::DEFAULT_NAMESPACE;
use crate::source_map::{FieldLoc, ObjectSource, SourceMap};
use crate::yaml::{Document, Node, Pos, Style, Value};

/// Istio 1.x adapters that had a kind of their own (`kind: memquota`); any adapter of the build's
/// registry is accepted as a kind too.
const ADAPTER_KINDS: &[&str] = &[
    "apigee",
    "bypass",
    "circonus",
    "cloudwatch",
    "denier",
    "dogstatsd",
    "fluentd",
    "kubernetesenv",
    "listchecker",
    "memquota",
    "noop",
    "opa",
    "prometheus",
    "rbac",
    "redisquota",
    "servicecontrol",
    "signalfx",
    "solarwinds",
    "stackdriver",
    "statsd",
    "stdio",
    "zipkin",
];

/// Istio 1.x templates that had a kind of their own but that this build does not know (they
/// load, and compiling reports the unknown template).
const EXTRA_TEMPLATE_KINDS: &[&str] = &["reportnothing", "servicecontrolreport"];

enum Kind {
    Handler,
    Instance,
    Rule,
    Manifest,
    QuotaSpec,
    QuotaSpecBinding,
    /// `kind: metric` and the like: an instance of that template, `spec` = params.
    OfTemplate(String),
    /// `kind: memquota` and the like: a handler of that adapter, `spec` = params.
    OfAdapter(String),
    /// `kind: template` / `kind: adapter`: out-of-process descriptors.
    Descriptor(&'static str),
}

fn classify(kind: &str, extra_adapters: &[&str]) -> Option<Kind> {
    Some(match kind {
        "handler" => Kind::Handler,
        "instance" => Kind::Instance,
        "rule" => Kind::Rule,
        "attributemanifest" => Kind::Manifest,
        "template" => Kind::Descriptor("template"),
        "adapter" => Kind::Descriptor("adapter"),
        k if k.eq_ignore_ascii_case("QuotaSpec") => Kind::QuotaSpec,
        k if k.eq_ignore_ascii_case("QuotaSpecBinding") => Kind::QuotaSpecBinding,
        k if TEMPLATES.iter().any(|t| t.name == k) || EXTRA_TEMPLATE_KINDS.contains(&k) => {
            Kind::OfTemplate(k.to_string())
        }
        k if ADAPTER_KINDS.contains(&k) || extra_adapters.contains(&k) => {
            Kind::OfAdapter(k.to_string())
        }
        _ => return None,
    })
}

/// Everything loaded so far.
#[derive(Debug, Default)]
pub(crate) struct Out {
    pub config: v2::Config,
    pub map: SourceMap,
    pub notes: Vec<String>,
    pub errors: Vec<ConfigError>,
    /// `kind/namespace/name` -> where it was first defined.
    seen: HashMap<String, String>,
}

impl Out {
    /// Registers an object; returns where it was defined before, if it was.
    pub(crate) fn claim(&mut self, object: &str, here: String) -> Option<String> {
        match self.seen.get(object) {
            Some(first) => Some(first.clone()),
            None => {
                self.seen.insert(object.to_string(), here);
                None
            }
        }
    }
}

/// `snake_case` -> `camelCase` (schema field names are accepted in both spellings).
fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' && !out.is_empty() {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A YAML subtree as JSON (plain scalars typed by the YAML 1.2 core schema).
pub(crate) fn to_json(node: &Node) -> serde_json::Value {
    match &node.value {
        Value::Scalar {
            text,
            style,
            forced_string,
        } => crate::yaml::scalar_to_json(text, *style, *forced_string),
        Value::Seq(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => serde_json::Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.as_scalar().unwrap_or_default().to_string(), to_json(v)))
                .collect(),
        ),
    }
}

/// Parses a Go-style duration (`1s`, `500ms`, `1m30s`, `1.5h`; `0` alone is zero).
pub(crate) fn parse_duration(text: &str) -> Result<prost_types::Duration, String> {
    let bad = || format!("`{text}` is not a duration (e.g. `500ms`, `1s`, `1m30s`)");
    let (neg, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(prost_types::Duration::default());
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    // Durations are bounded by protobuf's ±10,000 years.
    if !total.is_finite() || total > 315_576_000_000.0 {
        return Err(format!("`{text}` is too long a duration"));
    }
    let secs = total.trunc();
    let nanos = ((total - secs) * 1e9).round();
    let (mut seconds, mut nanos) = (secs as i64, nanos as i32);
    if nanos >= 1_000_000_000 {
        seconds += 1;
        nanos -= 1_000_000_000;
    }
    if neg {
        seconds = -seconds;
        nanos = -nanos;
    }
    Ok(prost_types::Duration { seconds, nanos })
}

/// Per-document conversion state.
struct Doc<'a> {
    file: &'a Arc<str>,
    lines: &'a [&'a str],
    object: String,
    errors: Vec<ConfigError>,
    fields: HashMap<String, FieldLoc>,
}

impl<'a> Doc<'a> {
    fn err(&mut self, pos: Pos, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            object: self.object.clone(),
            field: field.into(),
            message: message.into(),
            location: Some((self.file.to_string(), pos.line, pos.col)),
        });
    }

    /// Where the scalar's text starts when it appears verbatim on one line of the source.
    fn text_start(&self, node: &Node) -> Option<(u32, u32)> {
        let Value::Scalar { text, style, .. } = &node.value else {
            return None;
        };
        if text.contains('\n') || text.is_empty() {
            return None;
        }
        let skip = match style {
            Style::Plain => 0,
            Style::SingleQuoted | Style::DoubleQuoted => 1,
            Style::Block => return None,
        };
        let line = self
            .lines
            .get(usize::try_from(node.pos.line).ok()?.checked_sub(1)?)?;
        let start_col = usize::try_from(node.pos.col).ok()?.checked_sub(1)? + skip;
        let mut raw = line.chars().skip(start_col);
        let verbatim = text.chars().all(|c| raw.next() == Some(c));
        verbatim.then(|| {
            (
                node.pos.line,
                node.pos.col + u32::try_from(skip).unwrap_or(0),
            )
        })
    }

    fn record(&mut self, field: impl Into<String>, node: &Node) {
        let loc = FieldLoc {
            line: node.pos.line,
            col: node.pos.col,
            text_start: self.text_start(node),
        };
        self.fields.entry(field.into()).or_insert(loc);
    }

    /// Records `node` and everything below it (`a.b`, `a.list[0]`), keys as written.
    fn record_tree(&mut self, field: &str, node: &Node) {
        self.record(field, node);
        match &node.value {
            Value::Scalar { .. } => {}
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.record_tree(&format!("{field}[{i}]"), item);
                }
            }
            Value::Map(entries) => {
                for (k, v) in entries {
                    let key = k.as_scalar().unwrap_or_default();
                    self.record_tree(&join(field, key), v);
                }
            }
        }
    }

    /// The entries of a mapping field, by their camelCase name; unknown and repeated names are
    /// errors. `None` (after an error) when `node` is not a mapping; a null node is empty.
    fn fields<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: &[&str],
    ) -> Option<HashMap<String, &'n Node>> {
        let entries: &[(Node, Node)] = match &node.value {
            Value::Map(e) => e,
            _ if node.is_null() => &[],
            _ => {
                let what = if field.is_empty() {
                    "`spec`".to_string()
                } else {
                    format!("`{field}`")
                };
                self.err(
                    node.pos,
                    field,
                    format!("{what} must be a mapping, not {}", node.describe()),
                );
                return None;
            }
        };
        let mut out: HashMap<String, &'n Node> = HashMap::new();
        for (k, v) in entries {
            let written = k.as_scalar().unwrap_or_default();
            let name = camel(written);
            let path = join(field, &name);
            if !allowed.contains(&name.as_str()) {
                self.err(
                    k.pos,
                    path,
                    format!(
                        "unknown field `{written}` (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            if out.contains_key(&name) {
                self.err(
                    k.pos,
                    path,
                    format!("`{written}` is given twice (in two spellings)"),
                );
                continue;
            }
            out.insert(name, v);
        }
        Some(out)
    }

    /// A string field: a scalar's text (null is empty).
    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        self.record(field, node);
        match &node.value {
            _ if node.is_null() => Some(String::new()),
            Value::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.err(
                    node.pos,
                    field,
                    format!("`{field}` must be a string, not {}", node.describe()),
                );
                None
            }
        }
    }

    fn opt_string(&mut self, f: &HashMap<String, &Node>, key: &str, prefix: &str) -> String {
        match f.get(key) {
            Some(n) => self.string(n, &join(prefix, key)).unwrap_or_default(),
            None => String::new(),
        }
    }

    /// A list field (null is empty).
    fn list<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [Node]> {
        self.record(field, node);
        match &node.value {
            Value::Seq(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.err(
                    node.pos,
                    field,
                    format!("`{field}` must be a list, not {}", node.describe()),
                );
                None
            }
        }
    }

    /// A list of strings.
    fn strings(&mut self, node: &Node, field: &str) -> Vec<String> {
        let Some(items) = self.list(node, field) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            if let Some(s) = self.string(item, &format!("{field}[{i}]")) {
                out.push(s);
            }
        }
        out
    }

    /// A mapping of strings to strings.
    fn string_map(
        &mut self,
        node: &Node,
        field: &str,
    ) -> std::collections::BTreeMap<String, String> {
        self.record(field, node);
        let mut out = std::collections::BTreeMap::new();
        match &node.value {
            Value::Map(entries) => {
                for (k, v) in entries {
                    let key = k.as_scalar().unwrap_or_default().to_string();
                    if let Some(s) = self.string(v, &join(field, &key)) {
                        out.insert(key, s);
                    }
                }
            }
            _ if node.is_null() => {}
            _ => self.err(
                node.pos,
                field,
                format!("`{field}` must be a mapping, not {}", node.describe()),
            ),
        }
        out
    }

    fn plain_scalar<'n>(&mut self, node: &'n Node, field: &str, what: &str) -> Option<&'n str> {
        self.record(field, node);
        match &node.value {
            Value::Scalar {
                text,
                style: Style::Plain,
                forced_string: false,
            } => Some(text),
            _ => {
                self.err(
                    node.pos,
                    field,
                    format!("`{field}` must be {what}, not {}", node.describe()),
                );
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, field: &str) -> bool {
        match self.plain_scalar(node, field, "true or false") {
            Some("true" | "True" | "TRUE") => true,
            Some("false" | "False" | "FALSE" | "" | "~" | "null") | None => false,
            Some(other) => {
                self.err(
                    node.pos,
                    field,
                    format!("`{field}` must be true or false, not `{other}`"),
                );
                false
            }
        }
    }

    fn number(&mut self, node: &Node, field: &str) -> Option<f64> {
        let text = self.plain_scalar(node, field, "a number")?;
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Some(n),
            _ => {
                self.err(
                    node.pos,
                    field,
                    format!("`{field}` must be a number, not `{text}`"),
                );
                None
            }
        }
    }

    fn integer<T: TryFrom<i64>>(&mut self, node: &Node, field: &str) -> Option<T> {
        let text = self.plain_scalar(node, field, "an integer")?;
        match text.parse::<i64>().ok().and_then(|n| T::try_from(n).ok()) {
            Some(n) => Some(n),
            None => {
                self.err(
                    node.pos,
                    field,
                    format!("`{field}` must be an integer in range, not `{text}`"),
                );
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, field: &str) -> Option<prost_types::Duration> {
        let text = self.string(node, field)?;
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(m) => {
                self.err(node.pos, field, m);
                None
            }
        }
    }

    fn percentage(&mut self, node: &Node, field: &str) -> f64 {
        match self.number(node, field) {
            Some(p) if (0.0..=100.0).contains(&p) => p,
            Some(p) => {
                self.err(
                    node.pos,
                    field,
                    format!("a percentage must be within 0 and 100, not {p}"),
                );
                0.0
            }
            None => 0.0,
        }
    }

    /// Params: a mapping (null is empty), kept as JSON.
    fn params(&mut self, node: &Node, field: &str) -> Option<prost_types::Struct> {
        self.record_tree(field, node);
        match &node.value {
            Value::Map(_) => Some(json_to_struct(&to_json(node))),
            _ if node.is_null() => Some(prost_types::Struct::default()),
            _ => {
                self.err(
                    node.pos,
                    field,
                    format!("`{field}` must be a mapping, not {}", node.describe()),
                );
                None
            }
        }
    }

    // --- schema messages --------------------------------------------------------------------

    fn sampling(&mut self, node: &Node, field: &str) -> Option<v2::Sampling> {
        let f = self.fields(node, field, &["percentage", "random", "rateLimit"])?;
        let mut s = v2::Sampling::default();
        if let Some(n) = f.get("percentage") {
            s.percentage = self.percentage(n, &join(field, "percentage"));
        }
        if let Some(n) = f.get("random") {
            // Istio 1.x: random.percentSampled {numerator, denominator: HUNDRED|TEN_THOUSAND|MILLION}.
            let rf = join(field, "random");
            if let Some(r) = self.fields(n, &rf, &["percentSampled"])
                && let Some(ps) = r.get("percentSampled")
            {
                let pf = join(&rf, "percentSampled");
                if let Some(p) = self.fields(ps, &pf, &["numerator", "denominator"]) {
                    let num = p
                        .get("numerator")
                        .and_then(|n| self.integer::<u32>(n, &join(&pf, "numerator")));
                    let den = match p.get("denominator") {
                        None => Some(100.0),
                        Some(d) => match self.string(d, &join(&pf, "denominator")).as_deref() {
                            Some("HUNDRED" | "") => Some(100.0),
                            Some("TEN_THOUSAND") => Some(10_000.0),
                            Some("MILLION") => Some(1_000_000.0),
                            Some(other) => {
                                self.err(
                                    d.pos,
                                    join(&pf, "denominator"),
                                    format!("unknown denominator `{other}` (HUNDRED, TEN_THOUSAND or MILLION)"),
                                );
                                None
                            }
                            None => None,
                        },
                    };
                    if let (Some(num), Some(den)) = (num, den) {
                        s.percentage = (f64::from(num) * 100.0 / den).min(100.0);
                    }
                }
            }
        }
        if let Some(n) = f.get("rateLimit") {
            let rf = join(field, "rateLimit");
            if let Some(r) = self.fields(
                n,
                &rf,
                &["maxUnsampledEntries", "window", "samplingDuration"],
            ) {
                let mut rl = v2::RateLimit::default();
                if let Some(m) = r.get("maxUnsampledEntries") {
                    rl.max_unsampled_entries = self
                        .integer(m, &join(&rf, "maxUnsampledEntries"))
                        .unwrap_or(0);
                }
                if let Some(w) = r.get("window").or_else(|| r.get("samplingDuration")) {
                    rl.window = self.duration(w, &join(&rf, "window"));
                }
                s.rate_limit = Some(rl);
            }
        }
        Some(s)
    }

    fn dispatch(&mut self, node: &Node, field: &str) -> Option<v2::DispatchControls> {
        let f = self.fields(
            node,
            field,
            &["sampling", "buffering", "failurePolicy", "timeout", "retry"],
        )?;
        let mut d = v2::DispatchControls::default();
        if let Some(n) = f.get("sampling") {
            d.sampling = self.sampling(n, &join(field, "sampling"));
        }
        if let Some(n) = f.get("buffering") {
            let bf = join(field, "buffering");
            if let Some(b) =
                self.fields(n, &bf, &["maxBatchEntries", "maxDelay", "maxQueueEntries"])
            {
                let mut buf = v2::Buffering::default();
                if let Some(x) = b.get("maxBatchEntries") {
                    buf.max_batch_entries =
                        self.integer(x, &join(&bf, "maxBatchEntries")).unwrap_or(0);
                }
                if let Some(x) = b.get("maxDelay") {
                    buf.max_delay = self.duration(x, &join(&bf, "maxDelay"));
                }
                if let Some(x) = b.get("maxQueueEntries") {
                    buf.max_queue_entries =
                        self.integer(x, &join(&bf, "maxQueueEntries")).unwrap_or(0);
                }
                d.buffering = Some(buf);
            }
        }
        if let Some(n) = f.get("failurePolicy") {
            let ff = join(field, "failurePolicy");
            if let Some(text) = self.string(n, &ff) {
                match v2::dispatch_controls::FailurePolicy::from_str_name(&text) {
                    Some(p) => d.failure_policy = p as i32,
                    None => self.err(
                        n.pos,
                        ff,
                        format!("unknown failure policy `{text}` (FAIL_OPEN or FAIL_CLOSE)"),
                    ),
                }
            }
        }
        if let Some(n) = f.get("timeout") {
            d.timeout = self.duration(n, &join(field, "timeout"));
        }
        if let Some(n) = f.get("retry") {
            let rf = join(field, "retry");
            if let Some(r) = self.fields(n, &rf, &["maxAttempts", "initialBackoff", "maxBackoff"]) {
                let mut retry = v2::RetryPolicy::default();
                if let Some(x) = r.get("maxAttempts") {
                    retry.max_attempts = self.integer(x, &join(&rf, "maxAttempts")).unwrap_or(0);
                }
                if let Some(x) = r.get("initialBackoff") {
                    retry.initial_backoff = self.duration(x, &join(&rf, "initialBackoff"));
                }
                if let Some(x) = r.get("maxBackoff") {
                    retry.max_backoff = self.duration(x, &join(&rf, "maxBackoff"));
                }
                d.retry = Some(retry);
            }
        }
        Some(d)
    }

    fn handler(&mut self, spec: &Node, name: &str, namespace: &str) -> Option<v2::Handler> {
        let f = self.fields(
            spec,
            "",
            &[
                "compiledAdapter",
                "adapter",
                "params",
                "connection",
                "dispatch",
            ],
        )?;
        let compiled = f
            .get("compiledAdapter")
            .and_then(|n| self.string(n, "adapter").map(|s| (s, *n)));
        let plain = f
            .get("adapter")
            .and_then(|n| self.string(n, "adapter").map(|s| (s, *n)));
        let adapter = match (compiled, plain) {
            (Some((a, _)), Some((b, bn))) if a != b => {
                self.err(
                    bn.pos,
                    "adapter",
                    format!("`compiledAdapter: {a}` and `adapter: {b}` disagree"),
                );
                return None;
            }
            (Some((a, _)), _) | (None, Some((a, _))) if !a.is_empty() => a,
            (Some((_, n)), _) | (None, Some((_, n))) => {
                self.err(n.pos, "adapter", "the adapter name is empty");
                return None;
            }
            (None, None) => {
                self.err(
                    spec.pos,
                    "adapter",
                    "a handler needs `compiledAdapter` (or `adapter`)",
                );
                return None;
            }
        };
        let params = match f.get("params") {
            Some(n) => Some(self.params(n, "params")?),
            None => None,
        };
        let connection = match f.get("connection") {
            None => None,
            Some(n) => {
                let c = self.fields(n, "connection", &["address", "timeout"])?;
                self.record("connection", n);
                let address = self.opt_string(&c, "address", "connection");
                let timeout = c
                    .get("timeout")
                    .and_then(|t| self.duration(t, "connection.timeout"));
                Some(v2::Connection { address, timeout })
            }
        };
        let dispatch = match f.get("dispatch") {
            None => None,
            Some(n) => {
                self.record("dispatch", n);
                Some(self.dispatch(n, "dispatch")?)
            }
        };
        Some(v2::Handler {
            name: name.to_string(),
            namespace: namespace.to_string(),
            adapter,
            params,
            connection,
            dispatch,
        })
    }

    fn instance(&mut self, spec: &Node, name: &str, namespace: &str) -> Option<v2::Instance> {
        let f = self.fields(
            spec,
            "",
            &[
                "compiledTemplate",
                "template",
                "params",
                "attributeBindings",
            ],
        )?;
        let compiled = f
            .get("compiledTemplate")
            .and_then(|n| self.string(n, "template").map(|s| (s, *n)));
        let plain = f
            .get("template")
            .and_then(|n| self.string(n, "template").map(|s| (s, *n)));
        let template = match (compiled, plain) {
            (Some((a, _)), Some((b, bn))) if a != b => {
                self.err(
                    bn.pos,
                    "template",
                    format!("`compiledTemplate: {a}` and `template: {b}` disagree"),
                );
                return None;
            }
            (Some((a, _)), _) | (None, Some((a, _))) if !a.is_empty() => a,
            (Some((_, n)), _) | (None, Some((_, n))) => {
                self.err(n.pos, "template", "the template name is empty");
                return None;
            }
            (None, None) => {
                self.err(
                    spec.pos,
                    "template",
                    "an instance needs `compiledTemplate` (or `template`)",
                );
                return None;
            }
        };
        let params = match f.get("params") {
            Some(n) => Some(self.params(n, "params")?),
            None => None,
        };
        let attribute_bindings = match f.get("attributeBindings") {
            Some(n) => self.string_map(n, "attributeBindings"),
            None => Default::default(),
        };
        Some(v2::Instance {
            name: name.to_string(),
            namespace: namespace.to_string(),
            template,
            params,
            attribute_bindings,
        })
    }

    /// `kind: metric` and friends: `spec` is the params, except `attribute_bindings`.
    fn template_kind(
        &mut self,
        spec: &Node,
        template: &str,
        name: &str,
        namespace: &str,
    ) -> Option<v2::Instance> {
        let mut attribute_bindings = Default::default();
        let params = match &spec.value {
            Value::Map(entries) => {
                let mut rest = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    if camel(k.as_scalar().unwrap_or_default()) == "attributeBindings" {
                        attribute_bindings = self.string_map(v, "attributeBindings");
                    } else {
                        rest.push((k.clone(), v.clone()));
                    }
                }
                let params = Node {
                    value: Value::Map(rest),
                    ..spec.clone()
                };
                self.params(&params, "params")?
            }
            _ => self.params(spec, "params")?,
        };
        Some(v2::Instance {
            name: name.to_string(),
            namespace: namespace.to_string(),
            template: template.to_string(),
            params: Some(params),
            attribute_bindings,
        })
    }

    fn header_ops(&mut self, node: &Node, field: &str) -> Vec<v2::RuleHeaderOperation> {
        let Some(items) = self.list(node, field) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let of = format!("{field}[{i}]");
            self.record(&of, item);
            let Some(f) = self.fields(item, &of, &["name", "values", "operation"]) else {
                continue;
            };
            let name = self.opt_string(&f, "name", &of);
            let values = match f.get("values") {
                Some(v) => self.strings(v, &join(&of, "values")),
                None => Vec::new(),
            };
            let mut operation = v2::rule_header_operation::Operation::Replace;
            if let Some(n) = f.get("operation") {
                let opf = join(&of, "operation");
                if let Some(text) = self.string(n, &opf) {
                    match v2::rule_header_operation::Operation::from_str_name(
                        &text.to_ascii_uppercase(),
                    ) {
                        Some(op) => operation = op,
                        None => self.err(
                            n.pos,
                            opf,
                            format!(
                                "unknown header operation `{text}` (REPLACE, REMOVE or APPEND)"
                            ),
                        ),
                    }
                }
            }
            out.push(v2::RuleHeaderOperation {
                name,
                values,
                operation: operation as i32,
            });
        }
        out
    }

    fn rule(&mut self, spec: &Node, name: &str, namespace: &str) -> Option<v2::Rule> {
        let f = self.fields(
            spec,
            "",
            &[
                "match",
                "actions",
                "requestHeaderOperations",
                "responseHeaderOperations",
                "sampling",
                "experimental",
                "fault",
            ],
        )?;
        let r#match = self.opt_string(&f, "match", "");
        let mut actions = Vec::new();
        if let Some(n) = f.get("actions")
            && let Some(items) = self.list(n, "actions")
        {
            for (i, item) in items.iter().enumerate() {
                let af = format!("actions[{i}]");
                self.record(&af, item);
                let Some(a) = self.fields(item, &af, &["handler", "instances", "name"]) else {
                    continue;
                };
                let Some(handler_node) = a.get("handler") else {
                    self.err(
                        item.pos,
                        join(&af, "handler"),
                        "an action needs a `handler`",
                    );
                    continue;
                };
                let handler = self
                    .string(handler_node, &join(&af, "handler"))
                    .unwrap_or_default();
                let instances = match a.get("instances") {
                    Some(v) => self.strings(v, &join(&af, "instances")),
                    None => Vec::new(),
                };
                let name = self.opt_string(&a, "name", &af);
                actions.push(v2::Action {
                    handler,
                    instances,
                    name,
                });
            }
        }
        let request_header_operations = match f.get("requestHeaderOperations") {
            Some(n) => self.header_ops(n, "requestHeaderOperations"),
            None => Vec::new(),
        };
        let response_header_operations = match f.get("responseHeaderOperations") {
            Some(n) => self.header_ops(n, "responseHeaderOperations"),
            None => Vec::new(),
        };
        let sampling = f.get("sampling").and_then(|n| {
            self.record("sampling", n);
            self.sampling(n, "sampling")
        });
        let experimental = f
            .get("experimental")
            .is_some_and(|n| self.bool(n, "experimental"));
        let fault = match f.get("fault") {
            None => None,
            Some(n) => {
                self.record("fault", n);
                let ff = self.fields(
                    n,
                    "fault",
                    &["percentage", "errorCode", "errorMessage", "delay"],
                )?;
                let mut fault = v2::FaultInjection::default();
                if let Some(x) = ff.get("percentage") {
                    fault.percentage = self.percentage(x, "fault.percentage");
                }
                if let Some(x) = ff.get("errorCode") {
                    fault.error_code = self.integer(x, "fault.errorCode").unwrap_or(0);
                }
                fault.error_message = self.opt_string(&ff, "errorMessage", "fault");
                if let Some(x) = ff.get("delay") {
                    fault.delay = self.duration(x, "fault.delay");
                }
                Some(fault)
            }
        };
        Some(v2::Rule {
            name: name.to_string(),
            namespace: namespace.to_string(),
            r#match,
            actions,
            request_header_operations,
            response_header_operations,
            sampling,
            experimental,
            fault,
        })
    }

    fn manifest(
        &mut self,
        spec: &Node,
        name: &str,
        namespace: &str,
    ) -> Option<v2::AttributeManifest> {
        let f = self.fields(spec, "", &["name", "revision", "attributes"])?;
        let revision = self.opt_string(&f, "revision", "");
        let mut attributes = std::collections::BTreeMap::new();
        if let Some(n) = f.get("attributes") {
            self.record("attributes", n);
            match &n.value {
                Value::Map(entries) => {
                    for (k, v) in entries {
                        let attr = k.as_scalar().unwrap_or_default().to_string();
                        let af = join("attributes", &attr);
                        self.record(&af, k);
                        let Some(info) = self.fields(v, &af, &["valueType", "description"]) else {
                            continue;
                        };
                        let description = self.opt_string(&info, "description", &af);
                        let mut value_type = v2::ValueType::Unspecified as i32;
                        if let Some(t) = info.get("valueType") {
                            let tf = join(&af, "valueType");
                            if let Some(text) = self.string(t, &tf) {
                                match v2::ValueType::from_str_name(&text) {
                                    Some(v2::ValueType::Unspecified) | None => self.err(
                                        t.pos,
                                        tf,
                                        format!(
                                            "unknown value type `{text}` (one of: STRING, INT64, DOUBLE, BOOL, \
                                             TIMESTAMP, IP_ADDRESS, EMAIL_ADDRESS, URI, DNS_NAME, DURATION, \
                                             STRING_MAP)"
                                        ),
                                    ),
                                    Some(t) => value_type = t as i32,
                                }
                            }
                        }
                        attributes.insert(
                            attr,
                            v2::AttributeInfo {
                                description,
                                value_type,
                            },
                        );
                    }
                }
                _ if n.is_null() => {}
                _ => self.err(
                    n.pos,
                    "attributes",
                    format!("`attributes` must be a mapping, not {}", n.describe()),
                ),
            }
        }
        Some(v2::AttributeManifest {
            name: name.to_string(),
            namespace: namespace.to_string(),
            revision,
            attributes,
        })
    }

    fn quota_spec(&mut self, spec: &Node, name: &str, namespace: &str) -> Option<v2::QuotaSpec> {
        let f = self.fields(spec, "", &["rules"])?;
        let mut rules = Vec::new();
        if let Some(n) = f.get("rules")
            && let Some(items) = self.list(n, "rules")
        {
            for (i, item) in items.iter().enumerate() {
                let rf = format!("rules[{i}]");
                self.record(&rf, item);
                let Some(r) = self.fields(item, &rf, &["match", "quotas"]) else {
                    continue;
                };
                let mut rule = v2::QuotaRule::default();
                if let Some(m) = r.get("match")
                    && let Some(clauses) = self.list(m, &join(&rf, "match"))
                {
                    for (ci, c) in clauses.iter().enumerate() {
                        let cf = format!("{rf}.match[{ci}]");
                        let Some(cl) = self.fields(c, &cf, &["clause"]) else {
                            continue;
                        };
                        let mut clause = v2::AttributeMatchClause::default();
                        if let Some(cn) = cl.get("clause") {
                            let clf = join(&cf, "clause");
                            self.record(&clf, cn);
                            match &cn.value {
                                Value::Map(entries) => {
                                    for (k, v) in entries {
                                        let attr = k.as_scalar().unwrap_or_default().to_string();
                                        let af = join(&clf, &attr);
                                        let Some(sm) =
                                            self.fields(v, &af, &["exact", "prefix", "regex"])
                                        else {
                                            continue;
                                        };
                                        if sm.len() != 1 {
                                            self.err(v.pos, af, "a string match needs exactly one of `exact`, `prefix`, `regex`");
                                            continue;
                                        }
                                        use v2::string_match::MatchType;
                                        let (kind, node) =
                                            sm.iter().next().map(|(k, n)| (k.clone(), *n))?;
                                        let text = self
                                            .string(node, &join(&af, &kind))
                                            .unwrap_or_default();
                                        let mt = match kind.as_str() {
                                            "exact" => MatchType::Exact(text),
                                            "prefix" => MatchType::Prefix(text),
                                            _ => MatchType::Regex(text),
                                        };
                                        clause.clause.insert(
                                            attr,
                                            v2::StringMatch {
                                                match_type: Some(mt),
                                            },
                                        );
                                    }
                                }
                                _ if cn.is_null() => {}
                                _ => self.err(
                                    cn.pos,
                                    clf,
                                    format!("`clause` must be a mapping, not {}", cn.describe()),
                                ),
                            }
                        }
                        rule.r#match.push(clause);
                    }
                }
                if let Some(q) = r.get("quotas")
                    && let Some(quotas) = self.list(q, &join(&rf, "quotas"))
                {
                    for (qi, qn) in quotas.iter().enumerate() {
                        let qf = format!("{rf}.quotas[{qi}]");
                        let Some(qm) = self.fields(qn, &qf, &["quota", "charge"]) else {
                            continue;
                        };
                        let quota = self.opt_string(&qm, "quota", &qf);
                        if quota.is_empty() {
                            self.err(
                                qn.pos,
                                join(&qf, "quota"),
                                "a quota charge needs the `quota` name",
                            );
                        }
                        let charge = qm
                            .get("charge")
                            .and_then(|c| self.integer(c, &join(&qf, "charge")))
                            .unwrap_or(0);
                        rule.quotas.push(v2::Quota { quota, charge });
                    }
                }
                rules.push(rule);
            }
        }
        Some(v2::QuotaSpec {
            name: name.to_string(),
            namespace: namespace.to_string(),
            rules,
        })
    }

    fn quota_spec_binding(
        &mut self,
        spec: &Node,
        name: &str,
        namespace: &str,
    ) -> Option<v2::QuotaSpecBinding> {
        let f = self.fields(spec, "", &["services", "quotaSpecs"])?;
        let mut services = Vec::new();
        if let Some(n) = f.get("services")
            && let Some(items) = self.list(n, "services")
        {
            for (i, item) in items.iter().enumerate() {
                let sf = format!("services[{i}]");
                let Some(s) = self.fields(
                    item,
                    &sf,
                    &["name", "namespace", "domain", "service", "labels"],
                ) else {
                    continue;
                };
                services.push(v2::IstioService {
                    name: self.opt_string(&s, "name", &sf),
                    namespace: self.opt_string(&s, "namespace", &sf),
                    domain: self.opt_string(&s, "domain", &sf),
                    service: self.opt_string(&s, "service", &sf),
                });
            }
        }
        let mut quota_specs = Vec::new();
        if let Some(n) = f.get("quotaSpecs")
            && let Some(items) = self.list(n, "quotaSpecs")
        {
            for (i, item) in items.iter().enumerate() {
                let qf = format!("quotaSpecs[{i}]");
                let Some(q) = self.fields(item, &qf, &["name", "namespace"]) else {
                    continue;
                };
                let name = self.opt_string(&q, "name", &qf);
                if name.is_empty() {
                    self.err(
                        item.pos,
                        join(&qf, "name"),
                        "a quota spec reference needs a `name`",
                    );
                }
                quota_specs.push(v2::QuotaSpecReference {
                    name,
                    namespace: self.opt_string(&q, "namespace", &qf),
                });
            }
        }
        Some(v2::QuotaSpecBinding {
            name: name.to_string(),
            namespace: namespace.to_string(),
            services,
            quota_specs,
        })
    }
}

fn entry<'n>(entries: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    entries
        .iter()
        .find(|(k, _)| k.as_scalar() == Some(key))
        .map(|(_, v)| v)
}

/// Converts the documents of one file into `out`.
pub(crate) fn convert(
    file: &Arc<str>,
    text: &str,
    documents: &[Document],
    extra_adapters: &[&str],
    out: &mut Out,
) {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    for doc in documents {
        convert_document(file, &lines, doc, extra_adapters, out);
    }
}

fn convert_document(
    file: &Arc<str>,
    lines: &[&str],
    doc: &Document,
    extra_adapters: &[&str],
    out: &mut Out,
) {
    let Some(root) = doc.root.as_ref().filter(|r| !r.is_null()) else {
        return;
    };
    let mut d = Doc {
        file,
        lines,
        object: format!("document {}", doc.index),
        errors: Vec::new(),
        fields: HashMap::new(),
    };
    let here = |p: Pos| format!("{file}:{}:{}", p.line, p.col);
    let Value::Map(entries) = &root.value else {
        let shown = match &root.value {
            Value::Scalar { text, .. } => {
                format!(" `{}`", text.chars().take(80).collect::<String>())
            }
            _ => String::new(),
        };
        d.err(
            root.pos,
            "",
            format!(
                "a config document must be a mapping with `apiVersion`, `kind`, `metadata` and `spec`, not {}{shown}",
                root.describe()
            ),
        );
        out.errors.append(&mut d.errors);
        return;
    };
    let Some(kind_node) = entry(entries, "kind") else {
        d.err(root.pos, "kind", "missing `kind`");
        out.errors.append(&mut d.errors);
        return;
    };
    let Some(kind) = d.string(kind_node, "kind").filter(|k| !k.is_empty()) else {
        if d.errors.is_empty() {
            d.err(kind_node.pos, "kind", "`kind` is empty");
        }
        out.errors.append(&mut d.errors);
        return;
    };
    let api_version = entry(entries, "apiVersion")
        .and_then(Node::as_scalar)
        .unwrap_or_default();
    let metadata = entry(entries, "metadata");
    let meta = |key: &str| {
        metadata.and_then(|m| match &m.value {
            Value::Map(e) => entry(e, key),
            _ => None,
        })
    };
    let name_node = meta("name");
    let written_name = name_node.and_then(Node::as_scalar).unwrap_or_default();
    let written_ns = meta("namespace")
        .and_then(Node::as_scalar)
        .filter(|s| !s.is_empty());
    let namespace = written_ns.unwrap_or(DEFAULT_NAMESPACE).to_string();

    let istio = api_version.is_empty() || api_version.starts_with("config.istio.io/");
    let classified = if istio {
        classify(&kind, extra_adapters)
    } else {
        None
    };
    let kind = match classified {
        None => {
            let who = if written_name.is_empty() {
                String::new()
            } else {
                format!(" {namespace}/{written_name}")
            };
            let api = if api_version.is_empty() {
                String::new()
            } else {
                format!(" ({api_version})")
            };
            out.notes.push(format!(
                "{}: skipped {kind}{who}{api}: not Mixer config",
                here(root.pos)
            ));
            return;
        }
        Some(Kind::Descriptor(what)) => {
            out.notes.push(format!(
                "{}: {what} descriptor {namespace}/{written_name} accepted and skipped: out-of-process {what}s \
                 are not supported by this build (its templates and adapters are compiled in)",
                here(root.pos)
            ));
            return;
        }
        Some(k) => k,
    };
    let object_kind = match &kind {
        Kind::Handler | Kind::OfAdapter(_) => "handler",
        Kind::Instance | Kind::OfTemplate(_) => "instance",
        Kind::Rule => "rule",
        Kind::Manifest => "attributemanifest",
        Kind::QuotaSpec => "quotaspec",
        Kind::QuotaSpecBinding => "quotaspecbinding",
        Kind::Descriptor(_) => return,
    };

    // metadata
    match metadata {
        None => {
            d.err(
                root.pos,
                "metadata.name",
                format!("a `{object_kind}` needs `metadata.name`"),
            );
        }
        Some(m) if !matches!(m.value, Value::Map(_)) => {
            d.err(
                m.pos,
                "metadata",
                format!("`metadata` must be a mapping, not {}", m.describe()),
            );
        }
        Some(m) => match name_node {
            None => d.err(
                m.pos,
                "metadata.name",
                format!("a `{object_kind}` needs `metadata.name`"),
            ),
            Some(n) if n.as_scalar().is_none() => {
                d.err(
                    n.pos,
                    "metadata.name",
                    format!("`metadata.name` must be a string, not {}", n.describe()),
                );
            }
            Some(n) if written_name.is_empty() => {
                d.err(n.pos, "metadata.name", "`metadata.name` is empty")
            }
            Some(_) => {}
        },
    }
    if let Some(ns) = meta("namespace")
        && ns.as_scalar().is_none()
    {
        d.err(
            ns.pos,
            "metadata.namespace",
            format!(
                "`metadata.namespace` must be a string, not {}",
                ns.describe()
            ),
        );
    }
    if !d.errors.is_empty() {
        out.errors.append(&mut d.errors);
        return;
    }
    d.object = format!("{object_kind}/{namespace}/{written_name}");
    if let Some(n) = name_node {
        d.record("name", n);
        if let Some(first) = out.claim(&d.object, here(n.pos)) {
            d.err(
                n.pos,
                "name",
                format!("duplicate {object_kind} name (first defined at {first})"),
            );
            out.errors.append(&mut d.errors);
            return;
        }
    }

    let null_spec;
    let spec = match entry(entries, "spec") {
        Some(s) => s,
        None => {
            null_spec = Node {
                value: Value::Map(Vec::new()),
                ..root.clone()
            };
            &null_spec
        }
    };
    let (name, ns) = (written_name, namespace.as_str());
    match &kind {
        Kind::Handler => {
            if let Some(h) = d.handler(spec, name, ns) {
                out.config.handlers.push(h);
            }
        }
        Kind::OfAdapter(adapter) => {
            d.record("adapter", kind_node);
            if let Some(params) = d.params(spec, "params") {
                out.config.handlers.push(v2::Handler {
                    name: name.to_string(),
                    namespace: ns.to_string(),
                    adapter: adapter.clone(),
                    params: Some(params),
                    ..Default::default()
                });
            }
        }
        Kind::Instance => {
            if let Some(i) = d.instance(spec, name, ns) {
                out.config.instances.push(i);
            }
        }
        Kind::OfTemplate(template) => {
            d.record("template", kind_node);
            if let Some(i) = d.template_kind(spec, template, name, ns) {
                out.config.instances.push(i);
            }
        }
        Kind::Rule => {
            if let Some(r) = d.rule(spec, name, ns) {
                out.config.rules.push(r);
            }
        }
        Kind::Manifest => {
            if let Some(m) = d.manifest(spec, name, ns) {
                out.config.manifests.push(m);
            }
        }
        Kind::QuotaSpec => {
            if let Some(q) = d.quota_spec(spec, name, ns) {
                out.config.quota_specs.push(q);
            }
        }
        Kind::QuotaSpecBinding => {
            if let Some(q) = d.quota_spec_binding(spec, name, ns) {
                out.config.quota_spec_bindings.push(q);
            }
        }
        Kind::Descriptor(_) => {}
    }
    out.errors.append(&mut d.errors);
    out.map.add(
        d.object,
        ObjectSource {
            file: file.clone(),
            start: Some((root.pos.line, root.pos.col)),
            fields: d.fields,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camel_case_conversion() {
        assert_eq!(
            camel("request_header_operations"),
            "requestHeaderOperations"
        );
        assert_eq!(camel("attributeBindings"), "attributeBindings");
        assert_eq!(camel("_x"), "_x");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            parse_duration("1s"),
            Ok(prost_types::Duration {
                seconds: 1,
                nanos: 0
            })
        );
        assert_eq!(
            parse_duration("1m30s"),
            Ok(prost_types::Duration {
                seconds: 90,
                nanos: 0
            })
        );
        assert_eq!(
            parse_duration("500ms"),
            Ok(prost_types::Duration {
                seconds: 0,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            parse_duration("1.5h"),
            Ok(prost_types::Duration {
                seconds: 5400,
                nanos: 0
            })
        );
        assert_eq!(parse_duration("0"), Ok(prost_types::Duration::default()));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999h").is_err());
    }
}
