//! The `rewrite` adapter: rewrites request and response messages (headers and bodies) from
//! config, for the pipeline's mutation function (e.g. REST -> SOAP -> REST).
//!
//! Handler params say what changes, per direction (`request`, `response`): header operations
//! (`set` / `append` / `remove`), JSON edits (`set` / `remove` / `move` / `rename`, by JSON
//! pointer or dotted path), a body `template` (see [`template`]), and `xml_to_json` field
//! extraction (see [`xml`]). Values come from constants, from the `mutation` instance's
//! `variables` (`vars.<name>`), and from regex `captures` over them. Bodies are read whole, up to
//! `max_body_bytes` (default 1 MiB), only by directions that need them; see
//! [`mixer_core::mutation`] for streaming.
//!
//! ```yaml
//! spec:
//!   compiledAdapter: rewrite
//!   params:
//!     max_body_bytes: 65536
//!     captures: [{var: path, regex: '^/shelves/(?P<shelf>[^/]+)/books$'}]
//!     request:
//!       headers: [{set: content-type, value: text/xml}, {set: soapaction, value: '"urn:AddBook"'}]
//!       body: {template: '<AddBook><Shelf>{{vars.shelf}}</Shelf></AddBook>', escape: xml}
//!     response:
//!       xml_to_json: {fields: [{path: 'Envelope/Body/AddBookResponse/Id', to: id, type: int}]}
//!       headers: [{set: content-type, value: application/json}]
//! ```

mod ops;
mod params;
pub mod path;
pub mod template;
pub mod xml;

use std::sync::Arc;

use mixer_core::adapter::{
    Adapter, AdapterError, Handler, HandlerConfig, MutationHandler, MutationMessage,
};
use mixer_core::instance::InstanceView;
use mixer_core::mutation::Direction;
use mixer_core::status::Status;

pub use params::DEFAULT_MAX_BODY_BYTES;

use crate::ops::{BodyOps, Capture, Vars};
use crate::template::Root;

/// The adapter (`compiledAdapter: rewrite`, template `mutation`). Register it with
/// `registry.register(Arc::new(mixer_mutation::Rewrite))`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rewrite;

/// The adapter's name in config.
pub const ADAPTER_NAME: &str = "rewrite";

impl Adapter for Rewrite {
    fn name(&self) -> &'static str {
        ADAPTER_NAME
    }

    fn templates(&self) -> &'static [&'static str] {
        &["mutation"]
    }

    fn build(&self, config: &HandlerConfig<'_>) -> Result<Arc<dyn Handler>, AdapterError> {
        Ok(Arc::new(RewriteHandler::new(config)?))
    }
}

/// A configured `rewrite` handler.
#[derive(Debug)]
pub struct RewriteHandler {
    request: BodyOps,
    response: BodyOps,
    captures: Vec<Capture>,
    max_body_bytes: usize,
    max_output_bytes: usize,
}

impl RewriteHandler {
    /// Builds a handler from its params; checks that every variable the params read is
    /// defined by each instance routed to it (or by a capture).
    pub fn new(config: &HandlerConfig<'_>) -> Result<RewriteHandler, AdapterError> {
        let p = params::parse(config.params)?;
        let captured: Vec<&str> = p
            .captures
            .iter()
            .flat_map(|c| c.names.iter().map(String::as_str))
            .collect();
        for (i, c) in p.captures.iter().enumerate() {
            check_var(config, &c.var, &format!("params.captures[{i}].var"), &[])?;
        }
        for (key, ops) in [("request", &p.request), ("response", &p.response)] {
            for r in ops.refs() {
                if let (Root::Vars, Some(name)) = (r.root, r.path.first()) {
                    let field = format!("params.{key}");
                    check_var(config, name, &field, &captured)?;
                }
            }
        }
        Ok(RewriteHandler {
            request: p.request,
            response: p.response,
            captures: p.captures,
            max_body_bytes: p.max_body_bytes,
            max_output_bytes: p.max_output_bytes,
        })
    }

    fn ops(&self, direction: Direction) -> &BodyOps {
        match direction {
            Direction::Request => &self.request,
            Direction::Response => &self.response,
        }
    }
}

fn check_var(
    config: &HandlerConfig<'_>,
    name: &str,
    field: &str,
    captured: &[&str],
) -> Result<(), AdapterError> {
    if captured.contains(&name) {
        return Ok(());
    }
    let path = format!("variables.{name}");
    match config
        .instances
        .iter()
        .find(|i| i.position(&path).is_none())
    {
        None => Ok(()),
        Some(i) => Err(AdapterError::field(
            field.trim_start_matches("params."),
            format!(
                "`vars.{name}` is read but instance `{}` has no `variables.{name}` (and no \
                 capture names it)",
                i.name
            ),
        )),
    }
}

impl Handler for RewriteHandler {
    fn as_mutation(&self) -> Option<&dyn MutationHandler> {
        Some(self)
    }
}

impl MutationHandler for RewriteHandler {
    fn body_limit(&self, direction: Direction) -> Option<usize> {
        self.ops(direction)
            .reads_body()
            .then_some(self.max_body_bytes)
    }

    fn mutate(
        &self,
        instance: &InstanceView<'_>,
        direction: Direction,
        body: &[u8],
        message: &mut MutationMessage,
    ) -> Result<(), Status> {
        let vars = Vars::new(instance, &self.captures);
        self.ops(direction)
            .apply(&vars, direction, body, self.max_output_bytes, message)
    }
}
