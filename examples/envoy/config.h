#pragma once

#include "examples/envoy/mixer.pb.h"
#include "examples/envoy/mixer.pb.validate.h"

#include "source/extensions/filters/http/common/factory_base.h"

namespace Envoy {
namespace Extensions {
namespace HttpFilters {
namespace Mixer {

// Registers the filter as `mixer.v2` (typed config mixer.envoy.v2.FilterConfig).
class MixerFilterFactory : public Common::FactoryBase<mixer::envoy::v2::FilterConfig> {
public:
  MixerFilterFactory() : FactoryBase("mixer.v2") {}

private:
  Http::FilterFactoryCb
  createFilterFactoryFromProtoTyped(const mixer::envoy::v2::FilterConfig& proto_config,
                                    const std::string& stats_prefix,
                                    Server::Configuration::FactoryContext& context) override;
};

} // namespace Mixer
} // namespace HttpFilters
} // namespace Extensions
} // namespace Envoy
