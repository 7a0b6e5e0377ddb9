#pragma once

// The Mixer V2 HTTP filter: decodeHeaders -> check (StopIteration, then continueDecoding() or
// sendLocalReply()), decodeData/encodeData -> mutation, log -> report, onDestroy -> cancel.
// A thin layer over libmixer_ffi (include/mixer/mixer.h). Needs Envoy's tree to compile.

#include <memory>
#include <string>
#include <vector>

#include "envoy/access_log/access_log.h"
#include "envoy/event/dispatcher.h"
#include "envoy/http/async_client.h"
#include "envoy/http/filter.h"
#include "envoy/thread_local/thread_local.h"
#include "envoy/upstream/cluster_manager.h"

#include "source/extensions/filters/http/common/pass_through_filter.h"

#include "examples/envoy/mixer.pb.h"
#include "mixer/mixer.h"

namespace Envoy {
namespace Extensions {
namespace HttpFilters {
namespace Mixer {

// mixer::HostDispatcher over one Envoy dispatcher (a worker's, or the main thread's) and the
// cluster manager's async HTTP clients. Owned by the Rust side once handed over.
class EnvoyHostDispatcher : public mixer::HostDispatcher {
public:
  EnvoyHostDispatcher(Event::Dispatcher& dispatcher, Upstream::ClusterManager& cm)
      : state_(std::make_shared<State>(dispatcher, cm)) {}

  uint64_t monotonic_ns() const override;
  uint64_t approximate_monotonic_ns() const override;
  int64_t wall_ns() const override;
  uint64_t schedule(uint64_t delay_ns, rust::Box<mixer::Task> task) const override;
  void cancel_timer(uint64_t id) const override;
  void post(rust::Box<mixer::Task> task) const override;
  uint64_t http(const mixer::HttpRequest& request, rust::Box<mixer::HttpDone> done) const override;
  void cancel_http(uint64_t id) const override;

private:
  class Callout;
  // Everything mutable lives here (the interface's methods are const).
  struct State {
    State(Event::Dispatcher& d, Upstream::ClusterManager& c) : dispatcher(d), cm(c) {}
    Event::Dispatcher& dispatcher;
    Upstream::ClusterManager& cm;
    uint64_t next_id = 1;
    absl::flat_hash_map<uint64_t, Event::TimerPtr> timers;
    absl::flat_hash_map<uint64_t, std::unique_ptr<Callout>> callouts;
  };
  std::shared_ptr<State> state_;
};

// Per-worker state in a ThreadLocal slot: that worker's mixer::Worker.
struct ThreadLocalMixer : public ThreadLocal::ThreadLocalObject {
  explicit ThreadLocalMixer(rust::Box<mixer::Worker> w) : worker(std::move(w)) {}
  rust::Box<mixer::Worker> worker;
};

// Shared by every filter instance: the pipeline (created on the main thread) and the slot.
class MixerFilterConfig {
public:
  MixerFilterConfig(const mixer::envoy::v2::FilterConfig& proto,
                    Server::Configuration::ServerFactoryContext& context);
  bool valid() const { return valid_; }
  bool failClosed() const { return fail_closed_; }
  const mixer::Worker& worker() const { return *tls_->worker; }
  const mixer::Pipeline& pipeline() const { return *pipeline_; }

private:
  bool valid_{false};
  bool fail_closed_{false};
  std::unique_ptr<rust::Box<mixer::Pipeline>> pipeline_;
  ThreadLocal::TypedSlotPtr<ThreadLocalMixer> tls_;
};
using MixerFilterConfigSharedPtr = std::shared_ptr<MixerFilterConfig>;

class MixerFilter : public Http::PassThroughFilter,
                    public AccessLog::Instance,
                    public Logger::Loggable<Logger::Id::filter> {
public:
  explicit MixerFilter(MixerFilterConfigSharedPtr config) : config_(std::move(config)) {}

  // Http::StreamFilterBase
  void onDestroy() override;

  // Http::StreamDecoderFilter
  Http::FilterHeadersStatus decodeHeaders(Http::RequestHeaderMap& headers,
                                          bool end_stream) override;
  Http::FilterDataStatus decodeData(Buffer::Instance& data, bool end_stream) override;

  // Http::StreamEncoderFilter
  Http::FilterDataStatus encodeData(Buffer::Instance& data, bool end_stream) override;

  // AccessLog::Instance
  void log(const Formatter::HttpFormatterContext& log_context,
           const StreamInfo::StreamInfo& stream_info) override;

  // Called through CheckCallback when a pending check completes (on this worker).
  void onCheckComplete(const mixer::CheckResult& result);

private:
  enum class State { Idle, Calling, Complete, Destroyed };

  void buildRequestInfo(const Http::RequestHeaderMap& headers);
  void completeCheck(const mixer::CheckResult& result);
  Http::FilterDataStatus mutate(Buffer::Instance& data);

  MixerFilterConfigSharedPtr config_;
  Http::RequestHeaderMap* request_headers_{};
  // Backing storage for the borrowed views in request_info_ (valid during one call).
  std::vector<std::pair<std::string, std::string>> header_copies_;
  std::vector<mixer::HeaderView> views_;
  std::string source_ip_, destination_ip_, source_principal_, destination_principal_, sni_;
  mixer::RequestInfo request_info_{};
  State state_{State::Idle};
  uint64_t check_id_{0};
  bool in_decode_headers_{false};
  bool allowed_{false};
};

} // namespace Mixer
} // namespace HttpFilters
} // namespace Extensions
} // namespace Envoy
