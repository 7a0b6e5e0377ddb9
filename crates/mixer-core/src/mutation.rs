//! Mutation streams: one request or response message rewritten by the matching mutation
//! handlers while its body arrives in chunks.
//!
//! [`Worker::mutation_stream`](crate::Worker::mutation_stream) matches rules and evaluates the
//! instances once, when the message's headers are known. When no matched handler reads bodies of
//! that [`Direction`], the header changes are final at once and every chunk is forwarded as is.
//! Otherwise the stream holds the body, never more than the smallest handler limit (checked as
//! each chunk arrives: the chunk that would pass it fails the stream with a 413-style
//! [`MutationError::BodyTooLarge`]), and [`MutationStream::finish`] runs the handlers in rule
//! order over the whole body.
//!
//! A handler's failure policy applies to its own failures: when a fail-open handler refuses
//! a message (or its instance cannot be evaluated), its changes are left out, the message goes
//! on with the other handlers' changes, and the failure is counted in the pipeline's
//! `handler_failures` (or `instance_errors`); a fail-close handler's failure stops the message.
//! The body limit is not subject to the policy: memory stays bounded either way.

use std::fmt;
use std::sync::Arc;

use mixer_attr::{Bag, Value};

use crate::adapter::{Handler, HeaderChange, MutationMessage};
use crate::instance::{CompiledInstance, InstanceError, InstanceView};
use crate::pipeline::PipelineStats;
use crate::status::{Code, Status};

/// Which message of an HTTP exchange is being rewritten (Envoy: `decodeData` sees the request,
/// `encodeData` the response).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    /// `request` / `response`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message could not be mutated. The host answers with [`MutationError::http_status`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MutationError {
    /// The body grew past the limit of a handler that must read it whole.
    #[error(
        "{direction} body is larger than {limit} bytes, the body limit of mutation handler \
         `{handler}`"
    )]
    BodyTooLarge {
        direction: Direction,
        limit: usize,
        handler: Arc<str>,
    },
    /// A handler refused the message (a body that is not valid JSON, a missing field).
    #[error("{direction} mutation by handler `{handler}` failed: {status}")]
    Handler {
        direction: Direction,
        handler: Arc<str>,
        status: Status,
    },
    /// An instance field could not be evaluated.
    #[error("{direction} mutation: {error}")]
    Instance {
        direction: Direction,
        error: InstanceError,
    },
}

impl MutationError {
    /// The HTTP status to answer with: 413 past a body limit; for a handler's
    /// `INVALID_ARGUMENT`, 400 on a request and 502 on a response (the upstream sent what could
    /// not be converted); otherwise the status code's usual mapping (500 for internal errors).
    pub fn http_status(&self) -> u16 {
        match self {
            MutationError::BodyTooLarge { .. } => 413,
            MutationError::Handler {
                direction, status, ..
            } => match (status.code, direction) {
                (Code::INVALID_ARGUMENT, Direction::Response) => 502,
                (code, _) => code.http_status(),
            },
            MutationError::Instance { .. } => 500,
        }
    }

    /// The error as a status (`RESOURCE_EXHAUSTED` past a body limit, as gRPC reports an
    /// oversized message).
    pub fn to_status(&self) -> Status {
        let code = match self {
            MutationError::BodyTooLarge { .. } => Code::RESOURCE_EXHAUSTED,
            MutationError::Handler { status, .. } => status.code,
            MutationError::Instance { .. } => Code::INTERNAL,
        };
        Status::new(code, self.to_string())
    }
}

/// What the host does with a chunk it pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Send the chunk on unchanged (no handler reads this body).
    Forward,
    /// The stream kept a copy; drop it from the host's buffer. The rewritten body comes from
    /// [`MutationStream::finish`].
    Held,
}

/// One matched handler and instance whose values are kept until the body is complete.
struct Step {
    handler: Arc<dyn Handler>,
    handler_name: Arc<str>,
    instance: Arc<CompiledInstance>,
    values: Vec<Value<'static>>,
    fail_open: bool,
}

/// Runs one handler on `message`. A fail-open handler works on a copy that replaces the
/// message only when it succeeds, so a refusal leaves no partial changes; its failure is
/// counted and the message goes on.
#[allow(clippy::too_many_arguments)]
fn run_step(
    handler: &dyn crate::adapter::MutationHandler,
    view: &InstanceView<'_>,
    direction: Direction,
    body: &[u8],
    message: &mut MutationMessage,
    name: &Arc<str>,
    fail_open: bool,
    stats: &PipelineStats,
) -> Result<(), MutationError> {
    let result = if fail_open {
        let mut trial = message.clone();
        let r = handler.mutate(view, direction, body, &mut trial);
        if r.is_ok() {
            *message = trial;
        }
        r
    } else {
        handler.mutate(view, direction, body, message)
    };
    match result {
        Ok(()) => Ok(()),
        Err(_) if fail_open => {
            PipelineStats::inc(&stats.handler_failures);
            Ok(())
        }
        Err(status) => {
            PipelineStats::inc(&stats.handler_failures);
            Err(MutationError::Handler {
                direction,
                handler: name.clone(),
                status,
            })
        }
    }
}

enum State {
    /// No handler reads the body: header changes are final.
    Forward(MutationMessage),
    /// Holding the body for `steps`.
    Buffer {
        steps: Vec<Step>,
        limit: usize,
        limit_handler: Arc<str>,
        body: Vec<u8>,
    },
    Failed(MutationError),
}

/// The mutation of one message whose body arrives in chunks. See the module docs.
pub struct MutationStream {
    direction: Direction,
    state: State,
    stats: Arc<PipelineStats>,
}

impl fmt::Debug for MutationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Forward(_) => "forward",
            State::Buffer { .. } => "buffer",
            State::Failed(_) => "failed",
        };
        f.debug_struct("MutationStream")
            .field("direction", &self.direction)
            .field("state", &state)
            .finish()
    }
}

impl MutationStream {
    /// The message this stream rewrites.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Whether the stream holds the body (the host then holds back the message's headers too,
    /// since body rewrites usually change them, and forwards what `finish` returns).
    pub fn buffers_body(&self) -> bool {
        matches!(self.state, State::Buffer { .. })
    }

    /// The largest body the stream accepts, when it buffers (a host can refuse a larger
    /// `content-length` before any chunk arrives).
    pub fn body_limit(&self) -> Option<usize> {
        match &self.state {
            State::Buffer { limit, .. } => Some(*limit),
            _ => None,
        }
    }

    /// Header changes known so far: all of them when the stream does not buffer (apply them
    /// with the headers and stream the body through); none while it buffers.
    pub fn header_changes(&self) -> &[HeaderChange] {
        match &self.state {
            State::Forward(m) => &m.header_changes,
            _ => &[],
        }
    }

    /// Takes the next body chunk. Past the body limit the stream fails (and stays failed)
    /// without keeping the chunk, so it never holds more than the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Chunk, MutationError> {
        match &mut self.state {
            State::Forward(_) => Ok(Chunk::Forward),
            State::Failed(e) => Err(e.clone()),
            State::Buffer {
                limit,
                limit_handler,
                body,
                ..
            } => {
                if chunk.len() > *limit - body.len() {
                    let e = MutationError::BodyTooLarge {
                        direction: self.direction,
                        limit: *limit,
                        handler: limit_handler.clone(),
                    };
                    self.state = State::Failed(e.clone());
                    return Err(e);
                }
                body.extend_from_slice(chunk);
                Ok(Chunk::Held)
            }
        }
    }

    /// Ends the message: runs the handlers over the whole body (when the stream buffers) and
    /// returns the header changes and the body. A stream that held the body always returns it
    /// (rewritten or, when no handler replaced it, as it came: the host dropped the chunks);
    /// one that did not returns `None` (the body went through as it came). When the body is
    /// replaced and no handler set `content-length`, a `content-length` for the new body is
    /// added.
    pub fn finish(self) -> Result<MutationMessage, MutationError> {
        let direction = self.direction;
        let stats = self.stats;
        let (steps, body) = match self.state {
            State::Forward(message) => return Ok(message),
            State::Failed(e) => return Err(e),
            State::Buffer { steps, body, .. } => (steps, body),
        };
        let mut message = MutationMessage::default();
        for step in &steps {
            let Some(handler) = step.handler.as_mutation() else {
                continue;
            };
            let view = InstanceView {
                instance: &step.instance,
                values: &step.values,
            };
            let current = message.body.clone();
            let input = match handler.body_limit(direction) {
                Some(_) => current.as_deref().unwrap_or(&body),
                None => &[],
            };
            run_step(
                handler,
                &view,
                direction,
                input,
                &mut message,
                &step.handler_name,
                step.fail_open,
                &stats,
            )?;
        }
        if message.body.is_none() {
            // The host dropped the chunks the stream held: hand the body back as it came.
            message.body = Some(body.into());
            return Ok(message);
        }
        if let Some(new_body) = &message.body {
            let named = |h: &HeaderChange| match h {
                HeaderChange::Set(n, _) | HeaderChange::Append(n, _) | HeaderChange::Remove(n) => {
                    n.eq_ignore_ascii_case("content-length")
                }
            };
            if !message.header_changes.iter().any(named) {
                message.header_changes.push(HeaderChange::Set(
                    "content-length".to_string(),
                    new_body.len().to_string(),
                ));
            }
        }
        Ok(message)
    }

    /// Pushes `body` as the only chunk and finishes.
    pub fn finish_with(mut self, body: &[u8]) -> Result<MutationMessage, MutationError> {
        self.push(body)?;
        self.finish()
    }
}

/// Evaluates a step's instance into `values`: `Ok(false)` when it fails and the handler is
/// fail-open (the step is left out), an error when it is fail-close.
fn evaluate<'s>(
    instance: &'s CompiledInstance,
    bag: &'s dyn Bag,
    direction: Direction,
    fail_open: bool,
    stats: &PipelineStats,
    values: &mut Vec<Value<'s>>,
) -> Result<bool, MutationError> {
    match instance.evaluate(bag, &mut (), values) {
        Ok(()) => Ok(true),
        Err(error) => {
            PipelineStats::inc(&stats.instance_errors);
            if fail_open {
                Ok(false)
            } else {
                Err(MutationError::Instance { direction, error })
            }
        }
    }
}

/// One matched (handler name, handler, instance, fail-open), borrowed from the snapshot.
type PlannedStep<'s> = (
    &'s Arc<str>,
    &'s Arc<dyn Handler>,
    &'s Arc<CompiledInstance>,
    bool,
);

/// Collects the matched handlers of a message, then starts its stream.
pub(crate) struct StreamPlan<'s> {
    direction: Direction,
    steps: Vec<PlannedStep<'s>>,
    /// The smallest body limit and its handler.
    limit: Option<(usize, &'s Arc<str>)>,
}

impl<'s> StreamPlan<'s> {
    pub(crate) fn new(direction: Direction) -> Self {
        StreamPlan {
            direction,
            steps: Vec::new(),
            limit: None,
        }
    }

    /// Adds one instance sent to a mutation handler (non-mutation handlers are skipped).
    pub(crate) fn add(
        &mut self,
        handler_name: &'s Arc<str>,
        handler: &'s Arc<dyn Handler>,
        instance: &'s Arc<CompiledInstance>,
        fail_open: bool,
    ) {
        let Some(m) = handler.as_mutation() else {
            return;
        };
        if let Some(limit) = m.body_limit(self.direction)
            && self.limit.is_none_or(|(l, _)| limit < l)
        {
            self.limit = Some((limit, handler_name));
        }
        self.steps
            .push((handler_name, handler, instance, fail_open));
    }

    /// Evaluates the instances over `bag` and starts the stream: header-only mutations run now.
    pub(crate) fn start(
        self,
        bag: &dyn Bag,
        stats: &Arc<PipelineStats>,
    ) -> Result<MutationStream, MutationError> {
        let direction = self.direction;
        let Some((limit, limit_handler)) = self.limit else {
            let mut message = MutationMessage::default();
            let mut values = Vec::new();
            for (name, handler, instance, fail_open) in self.steps {
                let Some(m) = handler.as_mutation() else {
                    continue;
                };
                if !evaluate(instance, bag, direction, fail_open, stats, &mut values)? {
                    continue;
                }
                let view = InstanceView {
                    instance,
                    values: &values,
                };
                run_step(
                    m,
                    &view,
                    direction,
                    &[],
                    &mut message,
                    name,
                    fail_open,
                    stats,
                )?;
            }
            return Ok(MutationStream {
                direction,
                state: State::Forward(message),
                stats: stats.clone(),
            });
        };
        let mut steps = Vec::with_capacity(self.steps.len());
        for (name, handler, instance, fail_open) in self.steps {
            let mut values = Vec::new();
            if !evaluate(instance, bag, direction, fail_open, stats, &mut values)? {
                continue;
            }
            steps.push(Step {
                handler: handler.clone(),
                handler_name: name.clone(),
                instance: instance.clone(),
                values: values.into_iter().map(Value::into_owned).collect(),
                fail_open,
            });
        }
        Ok(MutationStream {
            direction,
            state: State::Buffer {
                steps,
                limit,
                limit_handler: limit_handler.clone(),
                body: Vec::new(),
            },
            stats: stats.clone(),
        })
    }
}
