// Mixer V2 C++ API: what the host (Envoy) implements. Hand-written; see mixer/mixer.h.
//
// The generated bridge header (mixer/bridge.rs.h) includes this file, so it declares only
// what the bridge refers to. No C++ exception may leave any of these methods: the bridge
// calls them through `noexcept` shims, so a throw terminates the process.
#pragma once

#include <cstdint>
#include <memory>

#include "rust/cxx.h"

namespace mixer {

// Defined in mixer/bridge.rs.h (generated).
struct Task;
struct HttpDone;
struct HttpRequest;
struct CheckResult;

// One worker thread's event loop and clients (Envoy: the worker's Event::Dispatcher, its
// cluster manager's Http::AsyncClient). The library owns the object once it is handed over
// (a rust::Box or the pipeline may keep it alive after the host's worker object is gone), may
// call `post` from any thread, and calls every other method on the dispatcher's own thread
// (or, for the main dispatcher given to create_pipeline, on the thread that creates or swaps
// the pipeline). All methods are const: keep mutable state behind pointers or `mutable`.
class HostDispatcher {
public:
  virtual ~HostDispatcher() = default;

  // Monotonic clock, nanoseconds from an arbitrary origin.
  virtual uint64_t monotonic_ns() const = 0;
  // The same clock as of the current event-loop iteration, for the request path's caches
  // (Envoy: Event::Dispatcher::approximateMonotonicTime(), no clock read). Same origin as
  // monotonic_ns(); the default reads monotonic_ns().
  virtual uint64_t approximate_monotonic_ns() const { return monotonic_ns(); }
  // Wall clock, nanoseconds since the Unix epoch.
  virtual int64_t wall_ns() const = 0;

  // Runs `task` with mixer::run_task on this thread after `delay_ns`; returns a timer id.
  virtual uint64_t schedule(uint64_t delay_ns, rust::Box<Task> task) const = 0;
  // Cancels a timer (drop its task without running it); unknown or fired ids are a no-op.
  virtual void cancel_timer(uint64_t id) const = 0;
  // Runs `task` with mixer::run_task on this dispatcher's thread soon. Callable from any thread.
  virtual void post(rust::Box<Task> task) const = 0;

  // Starts an HTTP callout; completes `done` on this thread with mixer::http_complete or
  // mixer::http_fail (exactly once, unless cancelled). Returns a callout id.
  virtual uint64_t http(const HttpRequest &request, rust::Box<HttpDone> done) const = 0;
  // Cancels a callout: its `done` is dropped without completing. Unknown ids are a no-op.
  virtual void cancel_http(uint64_t id) const = 0;
};

// Receives the decision of a check that went asynchronous. Called at most once, on the
// worker thread of the check; never called after mixer::cancel_check for the same check.
// The library owns (and deletes) the object: it may be deleted without being called.
class CheckCallback {
public:
  virtual ~CheckCallback() = default;
  virtual void on_check_complete(const CheckResult &result) = 0;
};

} // namespace mixer
