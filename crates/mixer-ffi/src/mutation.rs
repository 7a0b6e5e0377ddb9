//! Mutation through the bridge: a message's body streamed chunk by chunk
//! (`mutation_stream` / `mutation_push` / `mutation_finish`, for Envoy's `decodeData` and
//! `encodeData`), and `mutate` over one whole request body.
//!
//! A stream is started when the message's headers are known; it buffers the body only when a
//! matched handler rewrites it, and then never more than the smallest handler limit (the chunk
//! that would pass it fails the stream with HTTP 413). See `mixer_core::mutation`.

use mixer_core::mutation::{Chunk, Direction, MutationError};

use crate::api::{
    HeaderMap, Worker, add_response_attributes, guard, header_ops, invalid_pipeline, ok,
    request_attributes, status,
};
use crate::bridge::ffi;

/// A message being mutated (`rust::Box<mixer::MutationStream>`): the core stream, or why it
/// could not start or failed.
pub struct MutationStream {
    state: Result<mixer_core::mutation::MutationStream, Failure>,
}

impl std::fmt::Debug for MutationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutationStream")
            .field("failed", &self.state.is_err())
            .finish_non_exhaustive()
    }
}

/// A failure as the host reports it.
#[derive(Clone)]
struct Failure {
    status: ffi::Status,
    http_status: u16,
}

impl From<&MutationError> for Failure {
    fn from(e: &MutationError) -> Self {
        let s = e.to_status();
        Failure {
            status: status(s.code.0, s.message),
            http_status: e.http_status(),
        }
    }
}

impl Failure {
    fn internal(status: ffi::Status) -> Self {
        Failure {
            status,
            http_status: 500,
        }
    }
}

fn failed_result(f: Failure) -> ffi::MutateResult {
    ffi::MutateResult {
        status: f.status,
        http_status: f.http_status,
        header_ops: Vec::new(),
        body_replaced: false,
        body: Vec::new(),
    }
}

fn message_result(m: mixer_core::adapter::MutationMessage) -> ffi::MutateResult {
    ffi::MutateResult {
        status: ok(),
        http_status: 0,
        header_ops: header_ops(&m.header_changes),
        body_replaced: m.body.is_some(),
        body: m.body.map(|b| b.to_vec()).unwrap_or_default(),
    }
}

/// Runs the mutation handlers over one whole request body.
pub fn mutate(worker: &Worker, request: &ffi::RequestInfo<'_>, body: &[u8]) -> ffi::MutateResult {
    guard(
        || {
            let Some(w) = worker.core() else {
                return failed_result(Failure::internal(invalid_pipeline()));
            };
            let headers = HeaderMap(request.headers);
            let bag = request_attributes(request, &headers, w.pipeline());
            match w.mutate_message(&bag, Direction::Request, body) {
                Ok(m) => message_result(m),
                Err(e) => failed_result(Failure::from(&e)),
            }
        },
        |s| failed_result(Failure::internal(s)),
    )
}

/// Starts mutating the `direction` message (see the module docs). `response` is read for a
/// response only.
pub fn mutation_stream(
    worker: &Worker,
    request: &ffi::RequestInfo<'_>,
    response: &ffi::ResponseInfo<'_>,
    direction: ffi::Direction,
) -> Box<MutationStream> {
    let state = guard(
        || {
            let Some(w) = worker.core() else {
                return Err(Failure::internal(invalid_pipeline()));
            };
            let headers = HeaderMap(request.headers);
            let response_headers = HeaderMap(response.headers);
            let mut bag = request_attributes(request, &headers, w.pipeline());
            let direction = match direction {
                ffi::Direction::Response => {
                    add_response_attributes(&mut bag, response, &response_headers, w.pipeline());
                    Direction::Response
                }
                _ => Direction::Request,
            };
            w.mutation_stream(&bag, direction)
                .map_err(|e| Failure::from(&e))
        },
        |s| Err(Failure::internal(s)),
    );
    Box::new(MutationStream { state })
}

/// Where the stream stands: whether it failed (and the HTTP status to answer), whether it
/// holds the body, its limit, and the header changes known before the body (all of them when
/// it does not hold the body).
pub fn mutation_state(stream: &MutationStream) -> ffi::MutationState {
    guard(
        || match &stream.state {
            Ok(s) => ffi::MutationState {
                status: ok(),
                http_status: 0,
                buffers_body: s.buffers_body(),
                body_limit: s.body_limit().map_or(0, |l| l as u64),
                header_ops: header_ops(s.header_changes()),
            },
            Err(f) => ffi::MutationState {
                status: f.status.clone(),
                http_status: f.http_status,
                buffers_body: false,
                body_limit: 0,
                header_ops: Vec::new(),
            },
        },
        |s| ffi::MutationState {
            status: s,
            http_status: 500,
            buffers_body: false,
            body_limit: 0,
            header_ops: Vec::new(),
        },
    )
}

/// Takes the next body chunk: `held` (the stream kept it: drop it from the proxy's buffer) or
/// forward it. Past the body limit the stream fails for good (HTTP 413).
pub fn mutation_push(stream: &mut MutationStream, chunk: &[u8]) -> ffi::MutationPush {
    let failure = |f: &Failure| ffi::MutationPush {
        status: f.status.clone(),
        http_status: f.http_status,
        held: false,
    };
    // A stream that failed stays failed.
    let live = match &mut stream.state {
        Ok(s) => s,
        Err(f) => return failure(f),
    };
    let pushed = guard(
        || live.push(chunk).map_err(|e| Failure::from(&e)),
        |s| Err(Failure::internal(s)),
    );
    match pushed {
        Ok(c) => ffi::MutationPush {
            status: ok(),
            http_status: 0,
            held: c == Chunk::Held,
        },
        Err(f) => {
            let r = failure(&f);
            stream.state = Err(f);
            r
        }
    }
}

/// Ends the message: the header changes and the new body (`body_replaced`; else forward the
/// body as it came).
pub fn mutation_finish(stream: Box<MutationStream>) -> ffi::MutateResult {
    guard(
        move || match stream.state {
            Ok(s) => match s.finish() {
                Ok(m) => message_result(m),
                Err(e) => failed_result(Failure::from(&e)),
            },
            Err(f) => failed_result(f),
        },
        |s| failed_result(Failure::internal(s)),
    )
}
