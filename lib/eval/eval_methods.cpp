#include "eval/eval_methods.h"

#include "core/error.h"
#include "runtime/baseline_policies.h"
#include "runtime/row_codec.h"

namespace spindlekv {

std::vector<std::string> known_methods() {
  std::vector<std::string> all = {"full",         "streaming",   "h2o",       "h2o-mean",
                                  "snapkv",       "snapkv-mean", "pyramidkv", "pyramidkv-mean",
                                  "pyramidinfer", "spindle-jit", "spindle",   "spindle-hybrid"};
  // The codebooks on the strongest eviction stage (snapkv-mean's).
  for (const char* m : {"spindle-jit-mean", "spindle-mean"}) all.push_back(m);
  for (const std::string& c : row_codec_names()) all.push_back(c);  // the runtime's codecs
  for (const char* m : {"snapkv+kivi4", "snapkv-mean+kivi4", "snapkv-mean+tq3", "pyramidkv+kivi4",
                        "spindle+kivi4"}) {
    all.push_back(m);
  }
  return all;
}

bool MethodSpec::needs_artifact() const {
  return budget == BudgetKind::kCalibrated || codebook == CodebookMode::kCalibrated ||
         codebook == CodebookMode::kHybrid ||
         (!codec.empty() && parse_row_codec(codec)->needs_artifact());
}

namespace {

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
  const size_t plus = name.rfind('+');
  if (plus != std::string::npos && is_row_codec_name(name.substr(plus + 1))) {
    // Eviction (and codebooks), then exact rows held by the codec.
    const std::string codec = name.substr(plus + 1);
    MethodSpec m = method_spec(name.substr(0, plus));
    SKV_CHECK(!m.single_setting() && m.codec.empty(), "method '", name,
              "': a codec is a suffix of a method that evicts (use '", codec,
              "' alone for the coded full cache)");
    m.name = name;
    m.codec = codec;
    return m;
  }
  const std::string pool = "+pool";
  if (ends_with(name, pool)) {  // a SpindleKV variant that pools importance as SnapKV does
    MethodSpec m = method_spec(name.substr(0, name.size() - pool.size()));
    SKV_CHECK(m.is_spindle() && m.codec.empty() && !m.token_id_layer0, "method '", name,
              "': +pool follows a SpindleKV variant directly (the baselines ",
              "pool already; quantiser and +l0 come after it, as in 'spindle+pool+kivi4')");
    m.name = name;
    const GqaMode gqa = m.gqa;
    m.make_policy = [gqa] { return std::make_shared<WindowAttentionPolicy>(gqa, kSnapKvPooling); };
    return m;
  }
  MethodSpec m;
  m.name = name;
  if (is_row_codec_name(name)) {  // the full cache, coded: a fixed ratio
    m.fixed_ratio = true;
    m.codec = name;
    m.make_policy = [] { return std::make_shared<FullCachePolicy>(); };
    return m;
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
  } else if (name == "spindle-jit-mean" || name == "spindle-mean") {
    // The codebook on the strongest eviction stage: snapkv-mean's (uniform
    // budgets, scores averaged over the group, pooled), then Algorithm 1 or
    // the calibrated codebook over what it keeps.
    m.codebook = name == "spindle-mean" ? CodebookMode::kCalibrated : CodebookMode::kJustInTime;
    m.gqa = GqaMode::kGroupAverage;
    m.make_policy = window(GqaMode::kGroupAverage, kSnapKvPooling);
  } else if (name == "spindle-hybrid") {
    m.budget = BudgetKind::kCalibrated;
    m.codebook = CodebookMode::kHybrid;
    m.make_policy = window(GqaMode::kRepeat, 1);
  } else {
    std::string all;
    for (const auto& k : known_methods()) all += (all.empty() ? "" : ", ") + k;
    SKV_THROW(kInvalidInput, "method '", name, "' is unknown (known: ", all,
              "; a SpindleKV variant also with +pool; a row codec (", row_codec_grammar(),
              ") alone or as the suffix of a method that evicts; each also with +l0)");
  }
  return m;
}

}  // namespace spindlekv
