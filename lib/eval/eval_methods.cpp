#include "eval/eval_methods.h"

#include "core/error.h"
#include "runtime/baseline_policies.h"

namespace spindlekv {

std::vector<std::string> known_methods() {
  return {"full",         "streaming",       "h2o",          "h2o-mean",
          "snapkv",       "snapkv-mean",     "pyramidkv",    "pyramidkv-mean",
          "pyramidinfer", "spindle-jit",     "spindle",      "spindle-hybrid",
          "fp8",          "fp8-calibrated",  "kivi4",        "kivi2",
          "snapkv+kivi4", "pyramidkv+kivi4", "spindle+kivi4"};
}

namespace {

// The quantisers, alone or as a suffix.
struct Quantiser {
  const char* name;
  KvQuantization mode;
  Fp8Scales scales;
};
constexpr Quantiser kQuantisers[] = {
    {"fp8", KvQuantization::kFp8, Fp8Scales::kDynamic},
    {"fp8-calibrated", KvQuantization::kFp8, Fp8Scales::kCalibrated},
    {"kivi4", KvQuantization::kKivi4, Fp8Scales::kDynamic},
    {"kivi2", KvQuantization::kKivi2, Fp8Scales::kDynamic},
};

// SnapKV's (and PyramidKV's) max-pooling of importance over neighbours.
constexpr int64_t kSnapKvPooling = 7;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

MethodSpec method_spec(const std::string& name) {
  const std::string suffix = "+l0";
  if (ends_with(name, suffix)) {
    MethodSpec m = method_spec(name.substr(0, name.size() - suffix.size()));
    SKV_CHECK(!m.full_cache, "method '", name, "': the full cache keeps layer 0 already");
    m.name = name;
    m.token_id_layer0 = true;
    return m;
  }
  for (const Quantiser& q : kQuantisers) {
    const std::string suffix = std::string("+") + q.name;
    if (ends_with(name, suffix)) {  // eviction (and codebooks), then quantised exact rows
      MethodSpec m = method_spec(name.substr(0, name.size() - suffix.size()));
      SKV_CHECK(!m.single_setting() && m.quantization == KvQuantization::kNone, "method '", name,
                "': a quantiser is a suffix of a method that evicts (use '", q.name,
                "' alone for the quantised full cache)");
      m.name = name;
      m.quantization = q.mode;
      m.fp8_scales = q.scales;
      return m;
    }
  }
  const std::string pool = "+pool";
  if (ends_with(name, pool)) {  // a SpindleKV variant that pools importance as SnapKV does
    MethodSpec m = method_spec(name.substr(0, name.size() - pool.size()));
    SKV_CHECK(m.is_spindle() && m.quantization == KvQuantization::kNone && !m.token_id_layer0,
              "method '", name, "': +pool follows a SpindleKV variant directly (the baselines ",
              "pool already; quantiser and +l0 come after it, as in 'spindle+pool+kivi4')");
    m.name = name;
    const GqaMode gqa = m.gqa;
    m.make_policy = [gqa] { return std::make_shared<WindowAttentionPolicy>(gqa, kSnapKvPooling); };
    return m;
  }
  MethodSpec m;
  m.name = name;
  for (const Quantiser& q : kQuantisers) {
    if (name == q.name) {  // the full cache, quantised: a fixed ratio
      m.fixed_ratio = true;
      m.quantization = q.mode;
      m.fp8_scales = q.scales;
      m.make_policy = [] { return std::make_shared<FullCachePolicy>(); };
      return m;
    }
  }
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
    m.make_policy = window(GqaMode::kRepeat, kSnapKvPooling);
  } else if (name == "snapkv-mean") {  // scores averaged over the group (AdaKV, KVCache-Factory)
    m.gqa = GqaMode::kGroupAverage;
    m.make_policy = window(GqaMode::kGroupAverage, kSnapKvPooling);
  } else if (name == "pyramidkv") {
    m.budget = BudgetKind::kPyramid;
    m.make_policy = window(GqaMode::kRepeat, kSnapKvPooling);
  } else if (name == "pyramidkv-mean") {
    m.budget = BudgetKind::kPyramid;
    m.gqa = GqaMode::kGroupAverage;
    m.make_policy = window(GqaMode::kGroupAverage, kSnapKvPooling);
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
              "; a SpindleKV variant also with +pool; a method that evicts also with +fp8, "
              "+fp8-calibrated, +kivi4 or +kivi2; each also with +l0)");
  }
  return m;
}

}  // namespace spindlekv
