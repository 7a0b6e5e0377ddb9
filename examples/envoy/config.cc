#include "examples/envoy/config.h"

#include "envoy/registry/registry.h"

#include "examples/envoy/mixer_filter.h"

namespace Envoy {
namespace Extensions {
namespace HttpFilters {
namespace Mixer {

Http::FilterFactoryCb MixerFilterFactory::createFilterFactoryFromProtoTyped(
    const mixer::envoy::v2::FilterConfig& proto_config, const std::string&,
    Server::Configuration::FactoryContext& context) {
  // Main thread: compile the config once; each worker gets its mixer::Worker through the
  // ThreadLocal slot the config object sets up.
  auto config = std::make_shared<MixerFilterConfig>(proto_config, context.serverFactoryContext());
  return [config](Http::FilterChainFactoryCallbacks& callbacks) -> void {
    auto filter = std::make_shared<MixerFilter>(config);
    callbacks.addStreamFilter(filter);
    callbacks.addAccessLogHandler(filter);
  };
}

REGISTER_FACTORY(MixerFilterFactory, Server::Configuration::NamedHttpFilterConfigFactory);

} // namespace Mixer
} // namespace HttpFilters
} // namespace Extensions
} // namespace Envoy
