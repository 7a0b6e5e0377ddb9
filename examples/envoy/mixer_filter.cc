#include "examples/envoy/mixer_filter.h"

#include <chrono>

#include "envoy/http/codes.h"

#include "source/common/buffer/buffer_impl.h"
#include "source/common/http/message_impl.h"
#include "source/common/http/utility.h"

namespace Envoy {
namespace Extensions {
namespace HttpFilters {
namespace Mixer {

namespace {

rust::Slice<const uint8_t> bytes(absl::string_view s) {
  return rust::Slice<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

absl::string_view view(const rust::String& s) { return absl::string_view(s.data(), s.size()); }

// Owns the filter pointer only while the check is pending: onDestroy() cancels the check, and
// the library then deletes this object without calling it.
class FilterCheckCallback : public mixer::CheckCallback {
public:
  explicit FilterCheckCallback(MixerFilter* filter) : filter_(filter) {}
  void on_check_complete(const mixer::CheckResult& result) override {
    filter_->onCheckComplete(result);
  }

private:
  MixerFilter* filter_;
};

void applyHeaderOps(const rust::Vec<mixer::HeaderOp>& ops, Http::HeaderMap& headers) {
  for (const auto& op : ops) {
    const Http::LowerCaseString name(std::string(view(op.name)));
    switch (op.kind) {
    case mixer::HeaderOpKind::Set:
      headers.setCopy(name, view(op.value));
      break;
    case mixer::HeaderOpKind::Append:
      headers.appendCopy(name, view(op.value));
      break;
    default:
      headers.remove(name);
      break;
    }
  }
}

} // namespace

// ---------------------------------------------------------------------------------------------
// PAL

// One HTTP callout through the cluster's async client.
class EnvoyHostDispatcher::Callout : public Http::AsyncClient::Callbacks {
public:
  Callout(std::weak_ptr<State> state, uint64_t id, rust::Box<mixer::HttpDone> done)
      : state_(std::move(state)), id_(id), done_(std::move(done)) {}

  void onSuccess(const Http::AsyncClient::Request&, Http::ResponseMessagePtr&& response) override {
    std::vector<std::pair<std::string, std::string>> copies;
    response->headers().iterate([&copies](const Http::HeaderEntry& e) {
      copies.emplace_back(std::string(e.key().getStringView()),
                          std::string(e.value().getStringView()));
      return Http::HeaderMap::Iterate::Continue;
    });
    std::vector<mixer::HeaderView> views;
    for (const auto& c : copies) views.push_back(mixer::HeaderView{bytes(c.first), bytes(c.second)});
    const std::string body = response->bodyAsString();
    const uint64_t status = Http::Utility::getResponseStatus(response->headers());
    auto self = release();
    if (self == nullptr) return;
    mixer::http_complete(std::move(self->done_), static_cast<uint16_t>(status),
                         rust::Slice<const mixer::HeaderView>(views.data(), views.size()),
                         bytes(body));
  }

  void onFailure(const Http::AsyncClient::Request&,
                 Http::AsyncClient::FailureReason reason) override {
    auto self = release();
    if (self == nullptr) return;
    mixer::http_fail(std::move(self->done_),
                     reason == Http::AsyncClient::FailureReason::Reset
                         ? mixer::CalloutFailure::Connection
                         : mixer::CalloutFailure::Timeout,
                     bytes("upstream reset"));
  }

  void onBeforeFinalizeUpstreamSpan(Tracing::Span&, const Http::ResponseHeaderMap*) override {}

  Http::AsyncClient::Request* request_{};

private:
  // Takes this callout out of the state's table (it is deleted when the returned pointer goes).
  std::unique_ptr<Callout> release() {
    std::unique_ptr<Callout> self;
    if (auto state = state_.lock()) {
      auto it = state->callouts.find(id_);
      if (it != state->callouts.end()) {
        self = std::move(it->second);
        state->callouts.erase(it);
      }
    }
    return self;
  }

  std::weak_ptr<State> state_;
  uint64_t id_;
  rust::Box<mixer::HttpDone> done_;
};

uint64_t EnvoyHostDispatcher::monotonic_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             state_->dispatcher.timeSource().monotonicTime().time_since_epoch())
      .count();
}

// The time of the current event-loop iteration: no clock read on the request path.
uint64_t EnvoyHostDispatcher::approximate_monotonic_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             state_->dispatcher.approximateMonotonicTime().time_since_epoch())
      .count();
}

int64_t EnvoyHostDispatcher::wall_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             state_->dispatcher.timeSource().systemTime().time_since_epoch())
      .count();
}

uint64_t EnvoyHostDispatcher::schedule(uint64_t delay_ns, rust::Box<mixer::Task> task) const {
  const uint64_t id = state_->next_id++;
  auto shared = std::make_shared<rust::Box<mixer::Task>>(std::move(task));
  std::weak_ptr<State> weak = state_;
  Event::TimerPtr timer = state_->dispatcher.createTimer([weak, id, shared]() {
    if (auto state = weak.lock()) {
      // Erase first: the task may schedule again.
      auto node = state->timers.extract(id);
      mixer::run_task(std::move(*shared));
    }
  });
  timer->enableHRTimer(std::chrono::microseconds(delay_ns / 1000));
  state_->timers.emplace(id, std::move(timer));
  return id;
}

void EnvoyHostDispatcher::cancel_timer(uint64_t id) const {
  // Destroying the Event::Timer disables it; its callback (and the task) goes with it.
  state_->timers.erase(id);
}

void EnvoyHostDispatcher::post(rust::Box<mixer::Task> task) const {
  auto shared = std::make_shared<rust::Box<mixer::Task>>(std::move(task));
  state_->dispatcher.post([shared]() { mixer::run_task(std::move(*shared)); });
}

uint64_t EnvoyHostDispatcher::http(const mixer::HttpRequest& request,
                                   rust::Box<mixer::HttpDone> done) const {
  const uint64_t id = state_->next_id++;
  Upstream::ThreadLocalCluster* cluster =
      state_->cm.getThreadLocalCluster(std::string(view(request.authority)));
  if (cluster == nullptr) {
    mixer::http_fail(std::move(done), mixer::CalloutFailure::Connection,
                     bytes("no such cluster"));
    return id;
  }
  auto message = std::make_unique<Http::RequestMessageImpl>();
  message->headers().setMethod(view(request.method));
  message->headers().setPath(view(request.path));
  message->headers().setHost(view(request.authority));
  for (const auto& h : request.headers) {
    message->headers().addCopy(Http::LowerCaseString(std::string(view(h.name))), view(h.value));
  }
  if (!request.body.empty()) {
    message->body().add(request.body.data(), request.body.size());
  }
  auto callout = std::make_unique<Callout>(state_, id, std::move(done));
  Callout* raw = callout.get();
  state_->callouts.emplace(id, std::move(callout));
  Http::AsyncClient::Request* sent = cluster->httpAsyncClient().send(
      std::move(message), *raw,
      Http::AsyncClient::RequestOptions().setTimeout(std::chrono::milliseconds(request.timeout_ms)));
  // send() may have failed inline: onFailure already ran and deleted the callout.
  if (auto it = state_->callouts.find(id); it != state_->callouts.end()) {
    it->second->request_ = sent;
  }
  return id;
}

void EnvoyHostDispatcher::cancel_http(uint64_t id) const {
  auto it = state_->callouts.find(id);
  if (it == state_->callouts.end()) return;
  if (it->second->request_ != nullptr) it->second->request_->cancel();
  state_->callouts.erase(it); // drops the HttpDone uncalled
}

// ---------------------------------------------------------------------------------------------
// Config: pipeline on the main thread, one mixer::Worker per worker thread.

MixerFilterConfig::MixerFilterConfig(const mixer::envoy::v2::FilterConfig& proto,
                                     Server::Configuration::ServerFactoryContext& context)
    : fail_closed_(proto.fail_closed()) {
  mixer::CreateResult created = mixer::create_pipeline(
      bytes(proto.config_yaml()),
      std::make_unique<EnvoyHostDispatcher>(context.mainThreadDispatcher(),
                                            context.clusterManager()));
  if (!mixer::ok(created.status)) {
    for (const auto& e : created.errors) {
      ENVOY_LOG_MISC(error, "mixer config: {}", view(e));
    }
    throw EnvoyException(absl::StrCat("mixer: ", view(created.status.message)));
  }
  valid_ = true;
  pipeline_ = std::make_unique<rust::Box<mixer::Pipeline>>(std::move(created.pipeline));
  tls_ = ThreadLocal::TypedSlot<ThreadLocalMixer>::makeUnique(context.threadLocal());
  const mixer::Pipeline* pipeline = &**pipeline_;
  Upstream::ClusterManager* cm = &context.clusterManager();
  tls_->set([pipeline, cm](Event::Dispatcher& dispatcher) {
    return std::make_shared<ThreadLocalMixer>(
        mixer::create_worker(*pipeline, std::make_unique<EnvoyHostDispatcher>(dispatcher, *cm)));
  });
}

// ---------------------------------------------------------------------------------------------
// Filter

void MixerFilter::buildRequestInfo(const Http::RequestHeaderMap& headers) {
  header_copies_.clear();
  views_.clear();
  // HeaderEntry values may not be contiguous across calls; the views only live for one call.
  headers.iterate([this](const Http::HeaderEntry& e) {
    header_copies_.emplace_back(std::string(e.key().getStringView()),
                                std::string(e.value().getStringView()));
    return Http::HeaderMap::Iterate::Continue;
  });
  for (const auto& c : header_copies_) {
    views_.push_back(mixer::HeaderView{bytes(c.first), bytes(c.second)});
  }
  request_info_ = mixer::RequestInfo{};
  request_info_.headers = rust::Slice<const mixer::HeaderView>(views_.data(), views_.size());
  auto connection = decoder_callbacks_->connection();
  if (connection.has_value()) {
    const auto& provider = connection->connectionInfoProvider();
    if (auto ip = provider.remoteAddress()->ip(); ip != nullptr) {
      source_ip_ = ip->addressAsString();
      request_info_.source_port = ip->port();
    }
    if (auto ip = provider.localAddress()->ip(); ip != nullptr) {
      destination_ip_ = ip->addressAsString();
      request_info_.destination_port = ip->port();
    }
    sni_ = std::string(provider.requestedServerName());
    if (auto ssl = connection->ssl(); ssl != nullptr) {
      request_info_.mtls = ssl->peerCertificatePresented();
      auto peer = ssl->uriSanPeerCertificate();
      source_principal_ = peer.empty() ? "" : peer.front();
      auto local = ssl->uriSanLocalCertificate();
      destination_principal_ = local.empty() ? "" : local.front();
    }
  }
  request_info_.source_ip = bytes(source_ip_);
  request_info_.destination_ip = bytes(destination_ip_);
  request_info_.source_principal = bytes(source_principal_);
  request_info_.destination_principal = bytes(destination_principal_);
  request_info_.requested_server_name = bytes(sni_);
}

Http::FilterHeadersStatus MixerFilter::decodeHeaders(Http::RequestHeaderMap& headers, bool) {
  request_headers_ = &headers;
  buildRequestInfo(headers);
  state_ = State::Calling;
  in_decode_headers_ = true;
  mixer::CheckStart start = mixer::check(config_->worker(), request_info_,
                                         std::make_unique<FilterCheckCallback>(this));
  in_decode_headers_ = false;
  switch (start.state) {
  case mixer::CheckState::Done:
    completeCheck(start.result);
    return allowed_ ? Http::FilterHeadersStatus::Continue
                    : Http::FilterHeadersStatus::StopIteration;
  case mixer::CheckState::Pending:
    check_id_ = start.id;
    return Http::FilterHeadersStatus::StopIteration;
  default:
    state_ = State::Complete;
    ENVOY_LOG(warn, "mixer check failed: {}", view(start.result.status.message));
    if (config_->failClosed()) {
      decoder_callbacks_->sendLocalReply(Http::Code::InternalServerError, "mixer error", nullptr,
                                         absl::nullopt, "mixer_internal_error");
      return Http::FilterHeadersStatus::StopIteration;
    }
    return Http::FilterHeadersStatus::Continue;
  }
}

void MixerFilter::onCheckComplete(const mixer::CheckResult& result) {
  completeCheck(result);
  if (allowed_ && !in_decode_headers_) {
    decoder_callbacks_->continueDecoding();
  }
}

void MixerFilter::completeCheck(const mixer::CheckResult& result) {
  state_ = State::Complete;
  allowed_ = result.allowed;
  if (!result.allowed) {
    auto response_ops = result.response_header_ops;
    decoder_callbacks_->sendLocalReply(
        static_cast<Http::Code>(result.http_code), std::string(view(result.body)),
        [response_ops](Http::ResponseHeaderMap& headers) { applyHeaderOps(response_ops, headers); },
        absl::nullopt, "mixer_denied");
    return;
  }
  applyHeaderOps(result.request_header_ops, *request_headers_);
  if (!result.request_header_ops.empty()) {
    // Header changes may change the route.
    decoder_callbacks_->downstreamCallbacks()->clearRouteCache();
  }
}

Http::FilterDataStatus MixerFilter::mutate(Buffer::Instance& data) {
  if (request_headers_ == nullptr) return Http::FilterDataStatus::Continue;
  buildRequestInfo(*request_headers_);
  const std::string body = data.toString();
  mixer::MutateResult m = mixer::mutate(config_->worker(), request_info_, bytes(body));
  if (mixer::ok(m.status) && m.body_replaced) {
    data.drain(data.length());
    data.add(m.body.data(), m.body.size());
  }
  return Http::FilterDataStatus::Continue;
}

Http::FilterDataStatus MixerFilter::decodeData(Buffer::Instance& data, bool) {
  return mutate(data);
}

Http::FilterDataStatus MixerFilter::encodeData(Buffer::Instance& data, bool) {
  return mutate(data);
}

void MixerFilter::log(const Formatter::HttpFormatterContext& log_context,
                      const StreamInfo::StreamInfo& stream_info) {
  if (request_headers_ == nullptr) return;
  buildRequestInfo(log_context.requestHeaders());
  std::vector<std::pair<std::string, std::string>> copies;
  log_context.responseHeaders().iterate([&copies](const Http::HeaderEntry& e) {
    copies.emplace_back(std::string(e.key().getStringView()),
                        std::string(e.value().getStringView()));
    return Http::HeaderMap::Iterate::Continue;
  });
  std::vector<mixer::HeaderView> response_views;
  for (const auto& c : copies) response_views.push_back(mixer::HeaderView{bytes(c.first), bytes(c.second)});
  mixer::ResponseInfo response{};
  response.code = stream_info.responseCode().value_or(0);
  response.headers = rust::Slice<const mixer::HeaderView>(response_views.data(), response_views.size());
  response.request_total_size = stream_info.bytesReceived();
  response.response_total_size = stream_info.bytesSent();
  if (auto d = stream_info.currentDuration(); d.has_value()) {
    response.duration_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(*d).count();
  }
  mixer::report(config_->worker(), request_info_, response);
}

void MixerFilter::onDestroy() {
  if (state_ == State::Calling && check_id_ != 0) {
    // The completion will never run: the library deletes the callback uncalled.
    mixer::cancel_check(config_->worker(), check_id_);
  }
  state_ = State::Destroyed;
}

} // namespace Mixer
} // namespace HttpFilters
} // namespace Extensions
} // namespace Envoy
