//! `apiattributes`: an attribute-producing adapter that maps a request's method and URL path to
//! API identity through URL path templates, like Istio's `HTTPAPISpec`.
//!
//! ```yaml
//! kind: handler                      # the adapter
//! metadata: {name: bookstore}
//! spec:
//!   compiledAdapter: apiattributes
//!   params:
//!     service: bookstore.example.com
//!     version: v1
//!     operations:
//!     - {name: listShelves, method: GET, template: /shelves}
//!     - {name: getShelf, method: GET, template: "/shelves/{shelf}"}
//!     - {name: getBook, method: GET, template: "/shelves/{shelf}/books/{book}"}
//!     - {name: getFile, method: "*", template: "/files/{path=**}"}
//! ---
//! kind: apiattributes                # the instance (template `apiattributes`)
//! metadata: {name: api}
//! spec:
//!   method: request.method | "GET"
//!   path: request.path | "/"         # with the query string
//!   attribute_bindings:
//!     api.service: $out.api_service | ""
//!     api.operation: $out.api_operation | "unknown"
//! ```
//!
//! A rule whose action sends the instance to the handler puts it in the attribute-producing
//! chain. Outputs: `api_service` and `api_version` (when configured), `api_protocol` (`http`
//! unless `protocol` says otherwise), and, when a template matched, `api_operation`,
//! `path_params` (the template's named variables) and `query_params`, all percent-decoded (`+`
//! is a space in the query). When nothing matches, the operation and both maps are absent, so a
//! binding's default applies. An instance without `method` matches only operations of method
//! `*`. Params are described in [`params`] (HTTPAPISpec `patterns` are accepted too), the
//! template syntax in [`template`], matching and precedence in [`trie`].
//!
//! A trailing `/` is ignored on both sides: `/shelves/` matches `/shelves` and a template
//! `/shelves/` is `/shelves`. Outputs are never cached by the pipeline: a match costs less than
//! a cache lookup.

mod decode;
mod output;
pub mod params;
pub mod template;
pub mod trie;

use std::fmt;
use std::sync::Arc;

use mixer_attr::Value;
use mixer_core::Status;
use mixer_core::adapter::{
    Adapter, AdapterError, ApaContext, ApaOutput, AttributeProducer, Handler, HandlerConfig,
    Produced,
};
use mixer_core::instance::{CompiledInstance, InstanceView, PerInstance};

pub use output::ParamMap;
use output::{Compiled, Output, Slot};
pub use template::{PathTemplate, Segment, TemplateError};
pub use trie::{Ambiguous, Capture, Matcher, Operation};

/// The adapter's name in config (`compiledAdapter: apiattributes`).
pub const ADAPTER_NAME: &str = "apiattributes";
/// The template its handlers accept.
pub const TEMPLATE_NAME: &str = "apiattributes";

/// The `apiattributes` adapter.
#[derive(Debug, Default, Clone, Copy)]
pub struct ApiAttributesAdapter;

impl Adapter for ApiAttributesAdapter {
    fn name(&self) -> &'static str {
        ADAPTER_NAME
    }

    fn templates(&self) -> &'static [&'static str] {
        &[TEMPLATE_NAME]
    }

    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        for instance in config.instances {
            if instance.position("path").is_none() {
                return Err(AdapterError::new(format!(
                    "instance `{}` gives no `path`: the adapter matches templates against it",
                    instance.name
                )));
            }
        }
        let mut handler = ApiAttributes::from_params(config.params)?;
        handler.instances = PerInstance::new(config.instances, Inputs::of);
        Ok(Arc::new(handler))
    }
}

/// Positions of the template's inputs in one instance.
#[derive(Clone, Copy, Debug)]
struct Inputs {
    method: Option<usize>,
    path: Option<usize>,
}

impl Inputs {
    fn of(instance: &CompiledInstance) -> Inputs {
        Inputs {
            method: instance.position("method"),
            path: instance.position("path"),
        }
    }
}

/// A configured `apiattributes` handler.
pub struct ApiAttributes {
    compiled: Arc<Compiled>,
    /// The outputs of every request that matches no template (built once).
    unmatched: Arc<dyn ApaOutput>,
    /// Per operation, the outputs of a match with no variables to capture and no query string
    /// (built once).
    plain: Vec<Arc<dyn ApaOutput>>,
    /// Input positions of the instances the handler was built for.
    instances: PerInstance<Inputs>,
}

impl fmt::Debug for ApiAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiAttributes")
            .field("service", &self.compiled.service)
            .field("version", &self.compiled.version)
            .field("operations", &self.compiled.matcher.len())
            .finish()
    }
}

/// The path and the query string of a request path (`/a?b=1#f` gives `/a` and `b=1`).
fn split_target(target: &str) -> (&str, &str) {
    let (path, query, _) = scan_target(target);
    (path, query)
}

/// `target`'s path and query string (without `?` and any `#fragment`), and whether the path
/// has an escape (`%`).
#[inline]
fn scan_target(target: &str) -> (&str, &str, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Non-zero when a byte of `v` is zero (exact as to whether, not as to which).
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & (ONES << 7);
    let bytes = target.as_bytes();
    let (mut at, mut escaped) = (0, false);
    // Eight bytes at a time up to the chunk holding the end of the path.
    while let Some(chunk) = bytes
        .get(at..at + 8)
        .and_then(|c| <[u8; 8]>::try_from(c).ok())
    {
        let w = u64::from_le_bytes(chunk);
        if has_zero(w ^ (ONES * u64::from(b'?'))) | has_zero(w ^ (ONES * u64::from(b'#'))) != 0 {
            break;
        }
        escaped |= has_zero(w ^ (ONES * u64::from(b'%'))) != 0;
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        match b {
            b'?' | b'#' => break,
            b'%' => escaped = true,
            _ => {}
        }
        at += 1;
    }
    let path = target.get(..at).unwrap_or_default();
    if bytes.get(at) != Some(&b'?') {
        return (path, "", escaped);
    }
    let rest = target.get(at + 1..).unwrap_or_default();
    let end = rest.bytes().position(|b| b == b'#').unwrap_or(rest.len());
    (path, rest.get(..end).unwrap_or_default(), escaped)
}

impl ApiAttributes {
    /// Builds a handler from params (see [`params`]).
    pub fn from_params(params: &serde_json::Value) -> Result<ApiAttributes, AdapterError> {
        let spec = params::parse(params)?;
        let template = mixer_core::template::template(TEMPLATE_NAME)
            .ok_or_else(|| AdapterError::new("this build has no `apiattributes` template"))?;
        let mut matcher = Matcher::new();
        for op in &spec.operations {
            let parsed = PathTemplate::parse(&op.template).map_err(|e| {
                AdapterError::field(&op.template_field, format!("`{}`: {e}", op.template))
            })?;
            matcher
                .insert(&op.name, op.method.as_deref(), &parsed, &op.template)
                .map_err(|e| AdapterError::field(&op.field, format!("`{}`: {e}", op.name)))?;
        }
        let compiled = Arc::new(Compiled {
            service: spec.service.map(String::into_boxed_str),
            version: spec.version.map(String::into_boxed_str),
            protocol: spec.protocol.into_boxed_str(),
            matcher,
            slots: Slot::of(template),
        });
        let unmatched: Arc<dyn ApaOutput> = Arc::new(Output::new(compiled.clone(), None, "", ""));
        let plain = (0..compiled.matcher.len() as u32)
            .map(|op| {
                Arc::new(Output::new(compiled.clone(), Some(op), "", "")) as Arc<dyn ApaOutput>
            })
            .collect();
        Ok(ApiAttributes {
            compiled,
            unmatched,
            plain,
            instances: PerInstance::new(&[], Inputs::of),
        })
    }

    /// The compiled templates.
    pub fn matcher(&self) -> &Matcher {
        &self.compiled.matcher
    }

    /// The name of the operation that `method` and `target` (a path, with any query string)
    /// match.
    pub fn operation(&self, method: &str, target: &str) -> Option<&str> {
        let (path, _) = split_target(target);
        let op = self.compiled.matcher.find(method, path)?;
        self.compiled.matcher.operation(op).map(|o| &*o.name)
    }

    /// The outputs for `method` and `target` (what `produce()` returns).
    pub fn outputs(&self, method: &str, target: &str) -> Arc<dyn ApaOutput> {
        let (path, query, escaped) = scan_target(target);
        let matcher = &self.compiled.matcher;
        let Some(op) = matcher.find_scanned(method, path, escaped) else {
            return self.unmatched.clone();
        };
        let captures = matcher
            .operation(op)
            .is_some_and(|o| !o.captures.is_empty());
        if !captures
            && query.is_empty()
            && let Some(plain) = self.plain.get(op as usize)
        {
            return plain.clone();
        }
        Arc::new(Output::new(self.compiled.clone(), Some(op), path, query))
    }

    #[inline]
    fn inputs_for(&self, instance: &CompiledInstance) -> Inputs {
        // A handler kept across config swaps may see instances compiled after it was built.
        self.instances.get(instance, Inputs::of)
    }
}

impl Handler for ApiAttributes {
    fn as_attribute_producer(&self) -> Option<&dyn AttributeProducer> {
        Some(self)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

fn input<'a>(view: &InstanceView<'a>, position: Option<usize>) -> Option<&'a str> {
    view.at(position?).and_then(Value::as_str)
}

impl AttributeProducer for ApiAttributes {
    fn produce(&self, view: &InstanceView<'_>, _: &ApaContext<'_>) -> Result<Produced, Status> {
        let inputs = self.inputs_for(view.instance);
        let Some(target) = input(view, inputs.path) else {
            return Ok(Produced::reusable(self.unmatched.clone()));
        };
        // Without a method only `*` operations match.
        let method = input(view, inputs.method).unwrap_or("");
        // The match depends on method and target only: the pipeline keeps each thread's last
        // one and reuses it for the same request line.
        Ok(Produced::reusable(self.outputs(method, target)))
    }
}

#[cfg(test)]
mod tests {
    use super::{scan_target, split_target};

    #[test]
    fn targets_split_into_path_and_query_without_the_fragment() {
        assert_eq!(split_target("/a?b=1#f"), ("/a", "b=1"));
        assert_eq!(split_target("/a#f?b=1"), ("/a", ""));
        assert_eq!(split_target("/a?b=1?c#f#g"), ("/a", "b=1?c"));
        assert_eq!(split_target("/a"), ("/a", ""));
        assert_eq!(split_target("/a?"), ("/a", ""));
        assert_eq!(split_target("/ä?ö=1"), ("/ä", "ö=1"));
        assert_eq!(split_target(""), ("", ""));
        // Past the first eight bytes, and escapes on either side of them.
        assert_eq!(split_target("/abcdefghijk?q#f"), ("/abcdefghijk", "q"));
        assert_eq!(split_target("/abcdefg#hijk?q"), ("/abcdefg", ""));
        for (t, escaped) in [
            ("/abcdefghijkl%20", true),
            ("/a%20", true),
            ("/abcdefghijkl?%20", false),
            ("/abcdefghijklmnop", false),
            ("/abcdefg%", true),
        ] {
            assert_eq!(scan_target(t).2, escaped, "{t}");
        }
    }
}
