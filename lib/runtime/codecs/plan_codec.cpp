// The calibrated byte plan as a row codec: "plan<suffix>" ("plan2.5") binds
// each (layer, side) to the codec that the artifact's plan of that name
// gives it (runtime/codec_plan.h), or to no codec ("none": rows in the
// storage dtype). Its fields, bytes and saved-cache tensors are the bound
// codec's, so the cache counts and stores a planned layer exactly as it would
// that codec alone; a cache saved with a plan loads with the same artifact.
#include <cctype>

#include "core/error.h"
#include "runtime/artifact.h"
#include "runtime/detail/row_codec_family.h"

namespace spindlekv {
namespace detail {
namespace {

class PlanCodec : public RowCodec {
 public:
  explicit PlanCodec(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  bool needs_artifact() const override { return true; }
  std::shared_ptr<const RowCoder> bind(const RowCodecContext& c) const override {
    SKV_CHECK(c.artifact != nullptr, "row codec '", name_, "' needs an artifact with its plan");
    const CodecPlan& plan = c.artifact->codec_plans.at(name_);
    const auto& side = c.side == KvSide::kKeys ? plan.keys : plan.values;
    SKV_CHECK(c.layer >= 0 && c.layer < static_cast<int64_t>(side.size()), "codec plan '", name_,
              "' has no layer ", c.layer);
    const auto codec = parse_row_codec(side[c.layer]);
    if (!codec) return nullptr;
    SKV_CHECK(!codec->needs_artifact(), "codec plan '", name_, "' names '", side[c.layer],
              "', which needs an artifact itself");
    return codec->bind(c);
  }

 private:
  std::string name_;
};

}  // namespace

RowCodecFamily plan_codec_family() {
  return {"plan<suffix> (a codec plan of the artifact)",
          {},
          [](const std::string& name) -> std::shared_ptr<const RowCodec> {
            if (name.size() <= 4 || name.compare(0, 4, "plan") != 0) return nullptr;
            for (char ch : name.substr(4)) {
              SKV_CHECK(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '-' ||
                            ch == '_',
                        "row codec '", name, "': a plan's suffix holds letters, digits, '.', '-' ",
                        "and '_' only");
            }
            return std::make_shared<PlanCodec>(name);
          }};
}

}  // namespace detail
}  // namespace spindlekv
