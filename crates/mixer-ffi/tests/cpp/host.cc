// A C++ host for libmixer_ffi.a: a single-threaded event loop per thread (timers, post), a
// HostDispatcher over it with an in-process "authz backend" answering HTTP callouts later, and
// an Envoy-shaped filter (decodeHeaders -> check -> continueDecoding()/sendLocalReply(), header
// operations, log -> report, onDestroy -> cancel). Driven by tests/cpp_host.rs.
//
// Usage: host [quick] [bench]   (quick: fewer iterations, for valgrind)

#include "mixer/mixer.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

std::atomic<int> g_failures{0};

#define EXPECT(c)                                                                                  \
  do {                                                                                             \
    if (!(c)) {                                                                                    \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #c);                                     \
      g_failures++;                                                                                \
    }                                                                                              \
  } while (0)

uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---------------------------------------------------------------------------------------------
// Event loop: timers and post on one thread (Envoy: Event::Dispatcher).

class EventLoop {
public:
  using Fn = std::function<void()>;

  // Loop thread only.
  uint64_t add_timer(uint64_t delay_ns, Fn fn) {
    std::lock_guard<std::mutex> l(mu_);
    uint64_t id = next_id_++;
    timers_.emplace(id, Timer{now_ns() + delay_ns, std::move(fn)});
    return id;
  }
  void cancel_timer(uint64_t id) {
    Fn dropped;
    {
      std::lock_guard<std::mutex> l(mu_);
      auto it = timers_.find(id);
      if (it == timers_.end()) return;
      dropped = std::move(it->second.fn);
      timers_.erase(it);
    }
    // `dropped` (and the Rust task it holds) is destroyed outside the lock.
  }
  // Any thread.
  void post(Fn fn) {
    {
      std::lock_guard<std::mutex> l(mu_);
      posted_.push_back(std::move(fn));
    }
    cv_.notify_one();
  }

  // Runs posted work and due timers until `done()` holds; false after `timeout_ms`.
  bool run_until(const std::function<bool()> &done, uint64_t timeout_ms = 5000) {
    uint64_t deadline = now_ns() + timeout_ms * 1000000ull;
    for (;;) {
      run_ready();
      if (done()) return true;
      if (now_ns() > deadline) return false;
      std::unique_lock<std::mutex> l(mu_);
      if (posted_.empty()) cv_.wait_for(l, std::chrono::microseconds(200));
    }
  }
  // Runs for `ms` milliseconds.
  void run_for(uint64_t ms) {
    uint64_t end = now_ns() + ms * 1000000ull;
    run_until([end] { return now_ns() >= end; }, ms + 1000);
  }
  size_t timers() {
    std::lock_guard<std::mutex> l(mu_);
    return timers_.size();
  }

private:
  struct Timer {
    uint64_t deadline;
    Fn fn;
  };
  void run_ready() {
    std::deque<Fn> batch;
    {
      std::lock_guard<std::mutex> l(mu_);
      batch.swap(posted_);
    }
    for (auto &f : batch) f();
    batch.clear();
    std::vector<Fn> due;
    {
      std::lock_guard<std::mutex> l(mu_);
      uint64_t now = now_ns();
      for (auto it = timers_.begin(); it != timers_.end();) {
        if (it->second.deadline <= now) {
          due.push_back(std::move(it->second.fn));
          it = timers_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto &f : due) f();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Fn> posted_;
  std::map<uint64_t, Timer> timers_;
  uint64_t next_id_ = 1;
};

std::atomic<uint64_t> g_http_calls{0};
std::atomic<uint64_t> g_approximate_reads{0};

// The PAL: forwards to the loop; HTTP callouts go to an in-process authz backend that answers
// 2 ms later: 200 for x-mixer-value "alice", 403 otherwise.
class TestDispatcher : public mixer::HostDispatcher {
public:
  explicit TestDispatcher(EventLoop *loop) : loop_(loop) {}
  uint64_t monotonic_ns() const override { return now_ns(); }
  // The request path's caches read this one (Envoy: approximateMonotonicTime()).
  uint64_t approximate_monotonic_ns() const override {
    g_approximate_reads++;
    return now_ns();
  }
  int64_t wall_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  uint64_t schedule(uint64_t delay_ns, rust::Box<mixer::Task> task) const override {
    auto t = std::make_shared<rust::Box<mixer::Task>>(std::move(task));
    return loop_->add_timer(delay_ns, [t] { check_run(mixer::run_task(std::move(*t))); });
  }
  void cancel_timer(uint64_t id) const override { loop_->cancel_timer(id); }
  void post(rust::Box<mixer::Task> task) const override {
    auto t = std::make_shared<rust::Box<mixer::Task>>(std::move(task));
    loop_->post([t] { check_run(mixer::run_task(std::move(*t))); });
  }
  uint64_t http(const mixer::HttpRequest &request, rust::Box<mixer::HttpDone> done) const override {
    g_http_calls++;
    std::string value;
    for (const auto &h : request.headers) {
      if (std::string(h.name) == "x-mixer-value") value = std::string(h.value);
    }
    auto d = std::make_shared<rust::Box<mixer::HttpDone>>(std::move(done));
    return loop_->add_timer(2000000, [d, value] {
      rust::Slice<const mixer::HeaderView> no_headers;
      if (value == "alice") {
        check_run(mixer::http_complete(std::move(*d), 200, no_headers, mixer::bytes("")));
      } else {
        check_run(mixer::http_complete(std::move(*d), 403, no_headers, mixer::bytes("not on the list")));
      }
    });
  }
  void cancel_http(uint64_t id) const override { loop_->cancel_timer(id); }

private:
  static void check_run(const mixer::Status &s) {
    if (!mixer::ok(s)) {
      std::printf("FAIL task: %s\n", mixer::to_string(s.message).c_str());
      g_failures++;
    }
  }
  EventLoop *loop_;
};

// ---------------------------------------------------------------------------------------------
// An Envoy-shaped HTTP filter (Http::StreamDecoderFilter + AccessLog::Instance).

enum class FilterHeadersStatus { Continue, StopIteration };

struct HeaderMap {
  std::vector<std::pair<std::string, std::string>> entries;
  const std::string *get(const std::string &name) const {
    for (auto &e : entries)
      if (e.first == name) return &e.second;
    return nullptr;
  }
  void set(const std::string &n, const std::string &v) {
    remove(n);
    entries.emplace_back(n, v);
  }
  void append(const std::string &n, const std::string &v) {
    for (auto &e : entries)
      if (e.first == n) {
        e.second += "," + v;
        return;
      }
    entries.emplace_back(n, v);
  }
  void remove(const std::string &n) {
    for (auto it = entries.begin(); it != entries.end();)
      it = it->first == n ? entries.erase(it) : it + 1;
  }
};

struct DecoderCallbacks {
  bool continued = false;
  int local_reply = 0;
  std::string local_body;
  void continueDecoding() { continued = true; }
  void sendLocalReply(int code, const std::string &body) {
    local_reply = code;
    local_body = body;
  }
};

class MixerFilter;

class FilterCheckCallback : public mixer::CheckCallback {
public:
  explicit FilterCheckCallback(MixerFilter *f) : filter_(f) {}
  void on_check_complete(const mixer::CheckResult &result) override;

private:
  MixerFilter *filter_;
};

class MixerFilter {
public:
  MixerFilter(const mixer::Worker &worker, DecoderCallbacks &callbacks)
      : worker_(worker), callbacks_(callbacks) {}

  FilterHeadersStatus decodeHeaders(HeaderMap &headers, bool /*end_stream*/) {
    headers_ = &headers;
    build_views();
    mixer::RequestInfo info = request_info();
    state_ = State::Calling;
    in_decode_headers_ = true;
    mixer::CheckStart start =
        mixer::check(worker_, info, std::make_unique<FilterCheckCallback>(this));
    in_decode_headers_ = false;
    switch (start.state) {
    case mixer::CheckState::Done:
      completeCheck(start.result);
      return allowed_ ? FilterHeadersStatus::Continue : FilterHeadersStatus::StopIteration;
    case mixer::CheckState::Pending:
      check_id_ = start.id;
      return FilterHeadersStatus::StopIteration;
    default:
      // Fail closed on an internal error.
      state_ = State::Complete;
      callbacks_.sendLocalReply(500, mixer::to_string(start.result.status.message));
      return FilterHeadersStatus::StopIteration;
    }
  }

  void onCheckComplete(const mixer::CheckResult &result) {
    completeCheck(result);
    if (allowed_ && !in_decode_headers_) callbacks_.continueDecoding();
  }

  // Body chunks: mutation (no mutation handler in the test config: the body passes unchanged).
  bool decodeData(const std::string &chunk) {
    build_views();
    mixer::MutateResult m = mixer::mutate(worker_, request_info(), mixer::bytes(chunk));
    return mixer::ok(m.status) && !m.body_replaced;
  }

  uint64_t log(int64_t response_code, int64_t response_size) {
    build_views();
    mixer::ResponseInfo response;
    response.code = response_code;
    response.request_total_size = 100;
    response.response_total_size = response_size;
    response.duration_ns = 1234567;
    mixer::ReportResult r = mixer::report(worker_, request_info(), response);
    if (!mixer::ok(r.status)) g_failures++;
    return r.instances_sent;
  }

  void onDestroy() {
    if (state_ == State::Calling && check_id_ != 0) mixer::cancel_check(worker_, check_id_);
    state_ = State::Destroyed;
  }

  bool allowed() const { return allowed_; }

private:
  enum class State { Idle, Calling, Complete, Destroyed };

  void completeCheck(const mixer::CheckResult &r) {
    state_ = State::Complete;
    allowed_ = r.allowed;
    if (!r.allowed) {
      callbacks_.sendLocalReply(r.http_code, mixer::to_string(r.body));
      return;
    }
    for (const auto &op : r.request_header_ops) {
      std::string n(op.name), v(op.value);
      if (op.kind == mixer::HeaderOpKind::Set) headers_->set(n, v);
      else if (op.kind == mixer::HeaderOpKind::Append) headers_->append(n, v);
      else headers_->remove(n);
    }
  }

  void build_views() {
    views_.clear();
    for (auto &e : headers_->entries) views_.push_back(mixer::header(e.first, e.second));
  }

  mixer::RequestInfo request_info() const {
    mixer::RequestInfo info;
    info.headers = rust::Slice<const mixer::HeaderView>(views_.data(), views_.size());
    info.source_ip = mixer::bytes("10.0.0.7");
    info.source_port = 43210;
    info.destination_ip = mixer::bytes("10.0.0.9");
    info.destination_port = 9080;
    info.source_principal = mixer::bytes("spiffe://cluster.local/ns/default/sa/client");
    info.destination_principal = mixer::bytes("spiffe://cluster.local/ns/default/sa/server");
    info.requested_server_name = mixer::bytes("");
    info.mtls = true;
    return info;
  }

  const mixer::Worker &worker_;
  DecoderCallbacks &callbacks_;
  HeaderMap *headers_ = nullptr;
  std::vector<mixer::HeaderView> views_;
  State state_ = State::Idle;
  uint64_t check_id_ = 0;
  bool allowed_ = false;
  bool in_decode_headers_ = false;
};

void FilterCheckCallback::on_check_complete(const mixer::CheckResult &result) {
  filter_->onCheckComplete(result);
}

// One request through the filter, driving the loop until it is decided.
struct Outcome {
  FilterHeadersStatus first;
  bool continued;
  int local_reply;
  std::string body;
  HeaderMap headers;
};

HeaderMap request(const std::string &path, const std::string &user = "") {
  HeaderMap h;
  h.entries = {{":method", "GET"}, {":path", path}, {":authority", "productpage:9080"},
               {":scheme", "http"}, {"user-agent", "cpp-host"}};
  if (!user.empty()) h.entries.emplace_back("x-user", user);
  return h;
}

Outcome run(EventLoop &loop, const mixer::Worker &w, HeaderMap h) {
  DecoderCallbacks cb;
  MixerFilter f(w, cb);
  FilterHeadersStatus first = f.decodeHeaders(h, true);
  if (first == FilterHeadersStatus::StopIteration) {
    bool decided = loop.run_until([&] { return cb.continued || cb.local_reply != 0; });
    EXPECT(decided);
  }
  f.log(cb.local_reply ? cb.local_reply : 200, 512);
  f.onDestroy();
  return Outcome{first, cb.continued, cb.local_reply, cb.local_body, h};
}

const char *kConfig = R"(apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: denyadmin, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: admin is off limits}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: denyadmin, namespace: istio-system}
spec:
  match: request.path == "/admin"
  actions:
  - {handler: denyadmin, instances: [nothing]}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: tag, namespace: istio-system}
spec:
  match: request.path == "/tag" && source.ip == ip("10.0.0.7") && connection.mtls
  requestHeaderOperations:
  - {name: x-mixer-tag, values: ['"tagged"']}
  - {name: x-principal, values: ['source.principal']}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: authz, namespace: istio-system}
spec:
  compiledAdapter: httpauthz
  params: {cluster: authz, path: /check, timeoutMs: 1000}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: user, namespace: istio-system}
spec:
  compiledTemplate: listentry
  params:
    value: request.headers["x-user"] | ""
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: authz, namespace: istio-system}
spec:
  match: request.path == "/async"
  actions:
  - {handler: authz, instances: [user]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: accesslog, namespace: istio-system}
spec:
  compiledAdapter: stdio
  params: {outputAsJson: true, logStream: STDERR}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: accesslog, namespace: istio-system}
spec:
  compiledTemplate: logentry
  params:
    severity: '"Info"'
    variables:
      path: request.path | ""
      method: request.method | ""
      responseCode: response.code | 0
      responseSize: response.total_size | 0
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: accesslog, namespace: istio-system}
spec:
  match: context.protocol == "http"
  actions:
  - {handler: accesslog, instances: [accesslog]}
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: rewrite, namespace: istio-system}
spec:
  compiledAdapter: rewrite
  params:
    max_body_bytes: 64
    request:
      headers: [{set: x-rewritten, value: "yes"}]
      json: [{set: /user, var: user}]
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: edit, namespace: istio-system}
spec:
  compiledTemplate: mutation
  params:
    variables: {user: 'request.headers["x-user"] | "anon"'}
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: rewrite, namespace: istio-system}
spec:
  match: request.path == "/json"
  actions:
  - {handler: rewrite, instances: [edit]}
)";

// After the swap: /async is denied in process instead of asking the backend.
const char *kConfig2 = R"(apiVersion: config.istio.io/v1alpha2
kind: handler
metadata: {name: closed, namespace: istio-system}
spec:
  compiledAdapter: denier
  params:
    status: {code: 7, message: async is closed}
---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata: {name: nothing, namespace: istio-system}
spec:
  compiledTemplate: checknothing
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata: {name: closed, namespace: istio-system}
spec:
  match: request.path == "/async"
  actions:
  - {handler: closed, instances: [nothing]}
)";

void ok(const char *name) { std::printf("ok %s\n", name); }

void scenarios(EventLoop &loop, const mixer::Pipeline &pipeline, const mixer::Worker &w) {
  {
    uint64_t reads = g_approximate_reads;
    Outcome o = run(loop, w, request("/productpage"));
    EXPECT(o.first == FilterHeadersStatus::Continue);
    EXPECT(o.local_reply == 0);
    // The check read the host's approximate clock.
    EXPECT(g_approximate_reads > reads);
    ok("allow");
  }
  {
    Outcome o = run(loop, w, request("/admin"));
    EXPECT(o.first == FilterHeadersStatus::StopIteration);
    EXPECT(o.local_reply == 403);
    EXPECT(o.body == "admin is off limits");
    ok("deny_local_reply");
  }
  {
    Outcome o = run(loop, w, request("/tag"));
    EXPECT(o.first == FilterHeadersStatus::Continue);
    const std::string *tag = o.headers.get("x-mixer-tag");
    const std::string *principal = o.headers.get("x-principal");
    EXPECT(tag && *tag == "tagged");
    EXPECT(principal && *principal == "spiffe://cluster.local/ns/default/sa/client");
    ok("header_operations");
  }
  {
    uint64_t calls = g_http_calls;
    Outcome o = run(loop, w, request("/async", "alice"));
    EXPECT(o.first == FilterHeadersStatus::StopIteration);
    EXPECT(o.continued);
    EXPECT(o.local_reply == 0);
    EXPECT(g_http_calls == calls + 1);
    Outcome d = run(loop, w, request("/async", "bob"));
    EXPECT(d.first == FilterHeadersStatus::StopIteration);
    EXPECT(!d.continued);
    EXPECT(d.local_reply == 403);
    EXPECT(d.body == "not on the list");
    EXPECT(mixer::pending_checks(w) == 0);
    ok("async_backend");
  }
  {
    // The stream goes away while the backend is still answering: the late answer is ignored.
    uint64_t calls = g_http_calls;
    auto cb = std::make_unique<DecoderCallbacks>();
    auto f = std::make_unique<MixerFilter>(w, *cb);
    HeaderMap h = request("/async", "alice");
    EXPECT(f->decodeHeaders(h, true) == FilterHeadersStatus::StopIteration);
    EXPECT(mixer::pending_checks(w) == 1);
    f->onDestroy();
    f.reset();
    cb.reset();
    EXPECT(mixer::pending_checks(w) == 0);
    loop.run_for(10); // the backend answers after 2 ms
    EXPECT(g_http_calls == calls + 1);
    ok("destroyed_before_completion");
  }
  {
    mixer::MutateResult m = mixer::mutate(w, mixer::RequestInfo{}, mixer::bytes("{\"a\":1}"));
    EXPECT(mixer::ok(m.status));
    EXPECT(!m.body_replaced && m.header_ops.empty());
    DecoderCallbacks cb;
    MixerFilter f(w, cb);
    HeaderMap h = request("/productpage");
    EXPECT(f.decodeHeaders(h, false) == FilterHeadersStatus::Continue);
    EXPECT(f.decodeData("chunk"));
    f.onDestroy();
    ok("mutation_surface");
  }
  {
    // A request body streamed in chunks: the rewrite handler (path /json) holds it and edits
    // the JSON when it ends.
    std::vector<mixer::HeaderView> hv = {mixer::header(":path", "/json"),
                                         mixer::header(":method", "POST"),
                                         mixer::header("x-user", "alice")};
    mixer::RequestInfo info;
    info.headers = rust::Slice<const mixer::HeaderView>(hv.data(), hv.size());
    mixer::ResponseInfo none{};
    rust::Box<mixer::MutationStream> s =
        mixer::mutation_stream(w, info, none, mixer::Direction::Request);
    mixer::MutationState st = mixer::mutation_state(*s);
    EXPECT(mixer::ok(st.status) && st.buffers_body && st.body_limit == 64);
    mixer::MutationPush p1 = mixer::mutation_push(*s, mixer::bytes("{\"a\":"));
    EXPECT(mixer::ok(p1.status) && p1.held);
    mixer::MutationPush p2 = mixer::mutation_push(*s, mixer::bytes("1}"));
    EXPECT(mixer::ok(p2.status) && p2.held);
    mixer::MutateResult m = mixer::mutation_finish(std::move(s));
    EXPECT(mixer::ok(m.status) && m.body_replaced);
    std::string body(m.body.begin(), m.body.end());
    EXPECT(body == "{\"a\":1,\"user\":\"alice\"}");
    bool rewritten = false;
    for (const auto &op : m.header_ops) rewritten |= mixer::to_string(op.name) == "x-rewritten";
    EXPECT(rewritten);
    // Past the 64-byte limit: 413 on the chunk that crosses it, and the stream stays failed.
    rust::Box<mixer::MutationStream> big =
        mixer::mutation_stream(w, info, none, mixer::Direction::Request);
    EXPECT(mixer::ok(mixer::mutation_push(*big, mixer::bytes(std::string(40, 'x'))).status));
    mixer::MutationPush over = mixer::mutation_push(*big, mixer::bytes(std::string(40, 'x')));
    EXPECT(!mixer::ok(over.status) && over.http_status == 413 && !over.held);
    mixer::MutateResult refused = mixer::mutation_finish(std::move(big));
    EXPECT(!mixer::ok(refused.status) && refused.http_status == 413);
    // The response has no mutation rule: nothing held, chunks forwarded.
    rust::Box<mixer::MutationStream> resp =
        mixer::mutation_stream(w, info, none, mixer::Direction::Response);
    st = mixer::mutation_state(*resp);
    EXPECT(mixer::ok(st.status) && !st.buffers_body && st.header_ops.empty());
    EXPECT(!mixer::mutation_push(*resp, mixer::bytes("anything")).held);
    EXPECT(mixer::ok(mixer::mutation_finish(std::move(resp)).status));
    ok("mutation_stream");
  }
  {
    DecoderCallbacks cb;
    MixerFilter f(w, cb);
    HeaderMap h = request("/productpage");
    f.decodeHeaders(h, true);
    uint64_t sent = f.log(201, 2048);
    EXPECT(sent == 1);
    f.onDestroy();
    EXPECT(mixer::ok(mixer::flush(pipeline)));
    ok("report");
  }
  {
    mixer::Status s = mixer::debug_panic_for_tests(mixer::bytes("boom on purpose"));
    std::string msg = mixer::to_string(s.message);
    EXPECT(s.code == 13);
    EXPECT(msg.find("boom on purpose") != std::string::npos);
    ok("panic_becomes_status");
  }
}

void config_swap(EventLoop &loop, const mixer::Pipeline &pipeline, const mixer::Worker &w) {
  // A check in flight on the old config...
  DecoderCallbacks cb;
  MixerFilter f(w, cb);
  HeaderMap h = request("/async", "alice");
  EXPECT(f.decodeHeaders(h, true) == FilterHeadersStatus::StopIteration);
  // ...a rejected config keeps the running one and returns every error...
  mixer::SwapResult bad = mixer::swap_config(pipeline, mixer::bytes(
      "apiVersion: config.istio.io/v1alpha2\nkind: rule\nmetadata: {name: r, namespace: "
      "istio-system}\nspec:\n  match: request.path ==\n  actions:\n  - {handler: nope, "
      "instances: [missing]}\n"));
  EXPECT(!mixer::ok(bad.status));
  EXPECT(!bad.errors.empty());
  if (!bad.errors.empty()) std::printf("rejected: %s\n", mixer::to_string(bad.errors[0]).c_str());
  Outcome still = run(loop, w, request("/admin"));
  EXPECT(still.local_reply == 403);
  // ...a good one goes live while the first check is still pending...
  mixer::SwapResult good = mixer::swap_config(pipeline, mixer::bytes(kConfig2));
  EXPECT(mixer::ok(good.status));
  EXPECT(mixer::pending_checks(w) == 1);
  // ...the in-flight check finishes on the config it started with...
  EXPECT(loop.run_until([&] { return cb.continued || cb.local_reply != 0; }));
  EXPECT(cb.continued);
  f.onDestroy();
  // ...and new checks see the new config.
  Outcome after = run(loop, w, request("/async", "alice"));
  EXPECT(after.first == FilterHeadersStatus::StopIteration);
  EXPECT(after.local_reply == 403);
  EXPECT(after.body == "async is closed");
  Outcome admin = run(loop, w, request("/admin"));
  EXPECT(admin.first == FilterHeadersStatus::Continue);
  ok("config_swap_in_flight");
}

void threads(const mixer::Pipeline &pipeline, int nthreads, int requests) {
  std::atomic<int> allowed{0}, denied{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < nthreads; t++) {
    ts.emplace_back([&pipeline, &allowed, &denied, requests] {
      EventLoop loop;
      rust::Box<mixer::Worker> w =
          mixer::create_worker(pipeline, std::make_unique<TestDispatcher>(&loop));
      for (int i = 0; i < requests; i++) {
        HeaderMap h;
        switch (i % 4) {
        case 0: h = request("/productpage"); break;
        case 1: h = request("/admin"); break;
        case 2: h = request("/async", "alice"); break;
        default: h = request("/async", "bob"); break;
        }
        Outcome o = run(loop, *w, h);
        bool want_allow = (i % 4 == 0) || (i % 4 == 2);
        EXPECT((o.local_reply == 0) == want_allow);
        (o.local_reply == 0 ? allowed : denied)++;
      }
      EXPECT(mixer::pending_checks(*w) == 0);
    });
  }
  for (auto &t : ts) t.join();
  EXPECT(allowed == nthreads * requests / 2);
  EXPECT(denied == nthreads * requests / 2);
  std::printf("threads=%d requests=%d allowed=%d denied=%d\n", nthreads, requests, allowed.load(),
              denied.load());
  ok("threads");
}

void bench(const mixer::Worker &w) {
  HeaderMap h = request("/productpage");
  std::vector<mixer::HeaderView> views;
  for (auto &e : h.entries) views.push_back(mixer::header(e.first, e.second));
  mixer::RequestInfo info;
  info.headers = rust::Slice<const mixer::HeaderView>(views.data(), views.size());
  const uint8_t source_ip[4] = {10, 0, 0, 7}; // raw octets, as Envoy's Ip::ipv4() holds them
  info.source_ip = rust::Slice<const uint8_t>(source_ip, 4);
  info.destination_port = 9080;
  const int n = 200000;
  int allowed = 0;
  // Thread CPU time as well as wall time: on a loaded machine the wall clock also counts the
  // time this thread waited for a core.
  auto cpu_ns = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
  };
  uint64_t start = now_ns(), cpu_start = cpu_ns();
  for (int i = 0; i < n; i++) {
    mixer::CheckStart s = mixer::check(w, info, nullptr);
    allowed += s.result.allowed;
  }
  uint64_t ns = now_ns() - start, cpu = cpu_ns() - cpu_start;
  EXPECT(allowed == n);
  std::printf("bench cxx_check_ns=%.1f cpu_ns=%.1f (n=%d)\n", double(ns) / n, double(cpu) / n, n);
}

} // namespace

int main(int argc, char **argv) {
  bool quick = false, do_bench = false;
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "quick") == 0) quick = true;
    if (std::strcmp(argv[i], "bench") == 0) do_bench = true;
  }
  EventLoop loop;
  {
    mixer::CreateResult bad =
        mixer::create_pipeline(mixer::bytes("kind: rule\nspec: [\n"), std::make_unique<TestDispatcher>(&loop));
    EXPECT(!mixer::ok(bad.status));
    mixer::SwapResult on_bad = mixer::swap_config(*bad.pipeline, mixer::bytes(kConfig));
    EXPECT(!mixer::ok(on_bad.status));
    ok("bad_config_is_a_status");
  }
  mixer::CreateResult created =
      mixer::create_pipeline(mixer::bytes(kConfig), std::make_unique<TestDispatcher>(&loop));
  if (!mixer::ok(created.status)) {
    std::printf("FAIL create: %s\n", mixer::to_string(created.status.message).c_str());
    for (const auto &e : created.errors) std::printf("  %s\n", mixer::to_string(e).c_str());
    return 1;
  }
  {
    rust::Box<mixer::Worker> w =
        mixer::create_worker(*created.pipeline, std::make_unique<TestDispatcher>(&loop));
    scenarios(loop, *created.pipeline, *w);
    if (do_bench) bench(*w);
    threads(*created.pipeline, quick ? 2 : 4, quick ? 8 : 200);
    config_swap(loop, *created.pipeline, *w);
  }
  loop.run_for(5);
  int failures = g_failures.load();
  std::printf("%s (%d failures)\n", failures == 0 ? "ALL OK" : "FAILED", failures);
  return failures == 0 ? 0 : 1;
}
