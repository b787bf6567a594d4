#include "eval/eval_methods.h"

#include "core/error.h"
#include "runtime/baseline_policies.h"

namespace spindlekv {

std::vector<std::string> known_methods() {
  return {"full",         "streaming",   "h2o",       "h2o-mean",
          "snapkv",       "snapkv-mean", "pyramidkv", "pyramidkv-mean",
          "pyramidinfer", "spindle-jit", "spindle",   "spindle-hybrid"};
}

MethodSpec method_spec(const std::string& name) {
  const std::string suffix = "+l0";
  if (name.size() > suffix.size() &&
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    MethodSpec m = method_spec(name.substr(0, name.size() - suffix.size()));
    SKV_CHECK(!m.full_cache, "method '", name, "': the full cache keeps layer 0 already");
    m.name = name;
    m.token_id_layer0 = true;
    return m;
  }
  MethodSpec m;
  m.name = name;
  auto window = [](GqaMode g, int64_t pool) {
    return [g, pool] { return std::make_shared<WindowAttentionPolicy>(g, pool); };
  };
  if (name == "full") {
    m.full_cache = true;
    m.make_policy = [] { return std::make_shared<FullCachePolicy>(); };
  } else if (name == "streaming") {
    m.make_policy = [] { return std::make_shared<StreamingLlmPolicy>(4); };
  } else if (name == "h2o") {
    m.make_policy = [] { return std::make_shared<H2oPolicy>(0.5, GqaMode::kRepeat); };
  } else if (name == "h2o-mean") {  // heavy hitters chosen once per KV head
    m.gqa = GqaMode::kGroupAverage;
    m.make_policy = [] { return std::make_shared<H2oPolicy>(0.5, GqaMode::kGroupAverage); };
  } else if (name == "snapkv") {
    m.make_policy = window(GqaMode::kRepeat, 7);
  } else if (name == "snapkv-mean") {  // scores averaged over the group (AdaKV, KVCache-Factory)
    m.gqa = GqaMode::kGroupAverage;
    m.make_policy = window(GqaMode::kGroupAverage, 7);
  } else if (name == "pyramidkv") {
    m.budget = BudgetKind::kPyramid;
    m.make_policy = window(GqaMode::kRepeat, 7);
  } else if (name == "pyramidkv-mean") {
    m.budget = BudgetKind::kPyramid;
    m.gqa = GqaMode::kGroupAverage;
    m.make_policy = window(GqaMode::kGroupAverage, 7);
  } else if (name == "pyramidinfer") {
    m.budget = BudgetKind::kPyramid;
    m.gqa = GqaMode::kGroupAverage;
    m.make_policy = window(GqaMode::kGroupAverage, 1);
  } else if (name == "spindle-jit") {  // the paper: pyramid, repeat, Algorithm 1
    m.budget = BudgetKind::kPyramid;
    m.codebook = CodebookMode::kJustInTime;
    m.make_policy = window(GqaMode::kRepeat, 1);
  } else if (name == "spindle") {  // ours: calibrated budgets and codebooks
    m.budget = BudgetKind::kCalibrated;
    m.codebook = CodebookMode::kCalibrated;
    m.make_policy = window(GqaMode::kRepeat, 1);
  } else if (name == "spindle-hybrid") {
    m.budget = BudgetKind::kCalibrated;
    m.codebook = CodebookMode::kHybrid;
    m.make_policy = window(GqaMode::kRepeat, 1);
  } else {
    std::string all;
    for (const auto& k : known_methods()) all += (all.empty() ? "" : ", ") + k;
    SKV_THROW(kInvalidInput, "method '", name, "' is unknown (known: ", all,
              ", each also with +l0)");
  }
  return m;
}

}  // namespace spindlekv
