//! The cxx bridge: every type and function the C++ side sees (`include/mixer/bridge.rs.h`).
//!
//! No signature returns `Result` (cxx would turn it into a C++ exception): failures come back
//! as [`ffi::Status`] values, and every entry point catches panics (see `crate::api::guard`).
//! Byte strings cross as `&[u8]` rather than `&str` (`rust::Str` throws on invalid UTF-8).

#[allow(clippy::needless_lifetimes, missing_debug_implementations)]
#[cxx::bridge(namespace = "mixer")]
pub mod ffi {
    /// A gRPC-style status: `code` 0 is OK.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Status {
        code: i32,
        message: String,
    }

    /// A header (or attribute) borrowed from the host for the duration of one call.
    #[derive(Debug, Clone, Copy)]
    struct HeaderView<'a> {
        name: &'a [u8],
        value: &'a [u8],
    }

    /// The request as the host sees it: headers and connection facts, borrowed for the call.
    /// Empty slices and zero ports mean "unknown" (the attribute is left out of the bag).
    #[derive(Debug, Clone, Copy)]
    struct RequestInfo<'a> {
        /// Request headers including the pseudo-headers (`:path`, `:method`, `:authority`).
        headers: &'a [HeaderView<'a>],
        /// Addresses as 4 or 16 raw octets in network order (Envoy's `Ip::ipv4()->address()`,
        /// `ipv6()->address()`), or as text (`10.0.0.7`).
        source_ip: &'a [u8],
        source_port: i64,
        destination_ip: &'a [u8],
        destination_port: i64,
        /// Peer identity from mTLS (`spiffe://...`).
        source_principal: &'a [u8],
        destination_principal: &'a [u8],
        requested_server_name: &'a [u8],
        mtls: bool,
        /// Further string attributes by name (`destination.service.host`, ...); names the
        /// running config does not know, or that are not of string type, are skipped.
        attributes: &'a [HeaderView<'a>],
    }

    /// The response side of a finished stream, for [`report`].
    #[derive(Debug, Clone, Copy)]
    struct ResponseInfo<'a> {
        code: i64,
        headers: &'a [HeaderView<'a>],
        request_total_size: i64,
        response_total_size: i64,
        duration_ns: i64,
    }

    /// How to change a header.
    #[derive(Debug)]
    enum HeaderOpKind {
        Set,
        Append,
        Remove,
    }

    #[derive(Debug, Clone)]
    struct HeaderOp {
        kind: HeaderOpKind,
        name: String,
        value: String,
    }

    /// A check's decision, flattened for C++.
    #[derive(Debug, Clone, Default)]
    struct CheckResult {
        status: Status,
        allowed: bool,
        /// HTTP status of the local reply when denied (a direct response's, else mapped from
        /// the status code).
        http_code: u16,
        /// Body of the local reply (a direct response's, else the status message).
        body: String,
        request_header_ops: Vec<HeaderOp>,
        response_header_ops: Vec<HeaderOp>,
        cache_hit: bool,
    }

    #[derive(Debug)]
    enum CheckState {
        /// Answered now: `result` is the decision; the callback will not be called.
        Done,
        /// A backend is being asked: the callback runs later on this worker's thread; `id`
        /// cancels it (cancel_check).
        Pending,
        /// The check could not start (`result.status` says why); the callback will not be called.
        Error,
    }

    #[derive(Debug)]
    struct CheckStart {
        state: CheckState,
        result: CheckResult,
        id: u64,
    }

    #[derive(Debug)]
    struct CreateResult {
        /// OK, or why the pipeline could not be created (then `pipeline` refuses every call).
        status: Status,
        /// Every config error, one per line item (`file:line:col: object: message`).
        errors: Vec<String>,
        pipeline: Box<Pipeline>,
    }

    #[derive(Debug)]
    struct SwapResult {
        /// OK when the new config is live; otherwise the running config stays in force.
        status: Status,
        errors: Vec<String>,
    }

    #[derive(Debug)]
    struct ReportResult {
        status: Status,
        instances_sent: u64,
    }

    #[derive(Debug)]
    struct MutateResult {
        status: Status,
        /// When `status` is not OK: the HTTP status to answer with (413 past a body limit, 400
        /// for a request a handler refused, 502 for such a response, 500 otherwise).
        http_status: u16,
        header_ops: Vec<HeaderOp>,
        body_replaced: bool,
        body: Vec<u8>,
    }

    /// Which message a mutation stream rewrites (Envoy: `decodeData` sees the request,
    /// `encodeData` the response).
    #[derive(Debug)]
    enum Direction {
        Request,
        Response,
    }

    /// Where a mutation stream stands (mixer::mutation_state).
    #[derive(Debug, Clone)]
    struct MutationState {
        /// Not OK: the stream failed (answer `http_status`).
        status: Status,
        http_status: u16,
        /// True: hold the message's headers and push the body (the stream keeps it, up to
        /// `body_limit` bytes); false: apply `header_ops` now and let the body through.
        buffers_body: bool,
        body_limit: u64,
        /// The header changes, final when the stream does not buffer the body.
        header_ops: Vec<HeaderOp>,
    }

    /// What pushing one body chunk did (mixer::mutation_push).
    #[derive(Debug, Clone)]
    struct MutationPush {
        /// Not OK: the stream failed for good (answer `http_status`: 413 past the limit).
        status: Status,
        http_status: u16,
        /// True: the stream kept the chunk (drop it from the proxy's buffer); false: forward it.
        held: bool,
    }

    #[derive(Debug)]
    struct HttpHeader {
        name: String,
        value: String,
    }

    /// An HTTP callout the library asks the host to make.
    #[derive(Debug)]
    struct HttpRequest {
        /// Envoy: the cluster name; other hosts: `host:port`.
        authority: String,
        method: String,
        path: String,
        headers: Vec<HttpHeader>,
        body: Vec<u8>,
        timeout_ms: u64,
    }

    /// Why a callout failed (mixer::http_fail).
    #[derive(Debug)]
    enum CalloutFailure {
        Timeout,
        Connection,
        Cancelled,
    }

    extern "Rust" {
        /// A pipeline: the live config (shared read-only by every worker) and the platform.
        type Pipeline;
        /// One worker thread's handle on a pipeline.
        type Worker;
        /// A unit of work the host runs on a worker thread with `run_task`.
        type Task;
        /// One message being mutated while its body arrives in chunks.
        type MutationStream;
        /// The completion of an HTTP callout.
        type HttpDone;

        /// Loads and compiles `config_yaml` (Istio-style YAML documents) against the built-in
        /// adapters. `main` is the host's main-thread dispatcher (list refreshes, flushes).
        fn create_pipeline(config_yaml: &[u8], main: UniquePtr<HostDispatcher>) -> CreateResult;
        /// Replaces the live config; on any error the running config stays in force.
        /// Checks in flight finish on the config they started with.
        fn swap_config(pipeline: &Pipeline, config_yaml: &[u8]) -> SwapResult;
        /// Delivers buffered reports and flushes every handler.
        fn flush(pipeline: &Pipeline) -> Status;
        /// A handle for one worker thread, with that thread's dispatcher.
        fn create_worker(pipeline: &Pipeline, dispatcher: UniquePtr<HostDispatcher>)
        -> Box<Worker>;

        /// Starts a check. `callback` is called only when the result is `Pending`. With a null
        /// `callback`, a check that would go asynchronous is cancelled and returns `Error`.
        fn check(
            worker: &Worker,
            request: &RequestInfo,
            callback: UniquePtr<CheckCallback>,
        ) -> CheckStart;
        /// Cancels a pending check (Envoy: onDestroy); its callback is deleted without being
        /// called. Unknown or finished ids are a no-op. Call on the worker's thread.
        fn cancel_check(worker: &Worker, id: u64);
        /// Sends the finished request to the report handlers.
        fn report(worker: &Worker, request: &RequestInfo, response: &ResponseInfo) -> ReportResult;
        /// Runs the mutation handlers over one whole request (headers in `request`, `body`).
        fn mutate(worker: &Worker, request: &RequestInfo, body: &[u8]) -> MutateResult;
        /// Starts mutating the `direction` message when its headers are known: matches the
        /// rules and evaluates their instances now. `response` is read for a response only.
        /// Then `mutation_state`, `mutation_push` per body chunk, and `mutation_finish`.
        fn mutation_stream(
            worker: &Worker,
            request: &RequestInfo,
            response: &ResponseInfo,
            direction: Direction,
        ) -> Box<MutationStream>;
        /// Whether the stream failed, holds the body, and its header changes so far.
        fn mutation_state(stream: &MutationStream) -> MutationState;
        /// Takes the next body chunk. Past the body limit the stream fails (HTTP 413) without
        /// keeping the chunk.
        fn mutation_push(stream: &mut MutationStream, chunk: &[u8]) -> MutationPush;
        /// Ends the message: header changes and the new body (`body_replaced`).
        fn mutation_finish(stream: Box<MutationStream>) -> MutateResult;
        /// Number of pending checks this worker holds (for tests and stats).
        fn pending_checks(worker: &Worker) -> u64;

        /// Runs a task given to HostDispatcher::schedule or ::post.
        fn run_task(task: Box<Task>) -> Status;
        /// Completes an HTTP callout with the backend's response.
        fn http_complete(
            done: Box<HttpDone>,
            status: u16,
            headers: &[HeaderView],
            body: &[u8],
        ) -> Status;
        /// Fails an HTTP callout.
        fn http_fail(done: Box<HttpDone>, failure: CalloutFailure, message: &[u8]) -> Status;

        /// Test-only: panics inside the panic boundary; returns the INTERNAL status it becomes.
        fn debug_panic_for_tests(message: &[u8]) -> Status;
    }

    unsafe extern "C++" {
        include!("mixer/host.h");

        type HostDispatcher;
        fn monotonic_ns(self: &HostDispatcher) -> u64;
        fn approximate_monotonic_ns(self: &HostDispatcher) -> u64;
        fn wall_ns(self: &HostDispatcher) -> i64;
        fn schedule(self: &HostDispatcher, delay_ns: u64, task: Box<Task>) -> u64;
        fn cancel_timer(self: &HostDispatcher, id: u64);
        fn post(self: &HostDispatcher, task: Box<Task>);
        fn http(self: &HostDispatcher, request: &HttpRequest, done: Box<HttpDone>) -> u64;
        fn cancel_http(self: &HostDispatcher, id: u64);

        type CheckCallback;
        fn on_check_complete(self: Pin<&mut CheckCallback>, result: &CheckResult);
    }
}

pub use ffi::*;

pub use crate::api::{Pipeline, Worker};
use crate::api::{
    cancel_check, check, create_pipeline, create_worker, debug_panic_for_tests, flush,
    http_complete, http_fail, pending_checks, report, run_task, swap_config,
};
pub use crate::host::{HttpDone, Task};
pub use crate::mutation::MutationStream;
use crate::mutation::{mutate, mutation_finish, mutation_push, mutation_state, mutation_stream};
