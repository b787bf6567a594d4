#include "yaml_options.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <CLI/CLI.hpp>

#include "test_util.h"

namespace spindlekv::cli {
namespace {

// A subcommand with one flag and one option, as the CLI registers them.
struct Fixture {
  CLI::App app{"test"};
  CLI::App* sub = app.add_subcommand("capture");
  bool overwrite = false;
  int64_t seq_len = 0;
  Fixture() {
    sub->add_flag("--overwrite", overwrite);
    sub->add_option("--seq-len", seq_len);
  }
};

TEST(YamlOptions, FlagsTakeTrueOrFalseAndFalseLeavesThemUnset) {
  Fixture f;
  EXPECT_TRUE(resolve_yaml_option(*f.sub, "overwrite", YAML::Load("true"), "").set);
  const YamlOption off = resolve_yaml_option(*f.sub, "overwrite", YAML::Load("false"), "");
  EXPECT_FALSE(off.set);
  EXPECT_TRUE(off.values.empty());
  EXPECT_SKV_ERROR(resolve_yaml_option(*f.sub, "overwrite", YAML::Load("1"), "section 'capture'"),
                   "section 'capture': key 'overwrite' is a flag and must be true or false");
}

TEST(YamlOptions, OptionsTakeTheirValuesAsWrittenUnderTheDashedName) {
  Fixture f;
  const YamlOption r = resolve_yaml_option(*f.sub, "seq_len", YAML::Load("512"), "");
  EXPECT_EQ(r.flag, "--seq-len");
  EXPECT_TRUE(r.set);
  EXPECT_EQ(r.values, std::vector<std::string>{"512"});
  // "false" is a value like any other for an option that takes one.
  EXPECT_EQ(resolve_yaml_option(*f.sub, "seq-len", YAML::Load("false"), "").values,
            std::vector<std::string>{"false"});
  const YamlOption list = resolve_yaml_option(*f.sub, "seq-len", YAML::Load("[1, 2]"), "");
  EXPECT_EQ(list.values, (std::vector<std::string>{"1", "2"}));
}

TEST(YamlOptions, UnknownKeysAndNestedMapsAreRefusedByName) {
  Fixture f;
  EXPECT_SKV_ERROR(resolve_yaml_option(*f.sub, "seq_lne", YAML::Load("1"), ""),
                   "unknown key 'seq_lne' for 'capture' (allowed: overwrite, seq-len)");
  EXPECT_SKV_ERROR(resolve_yaml_option(*f.sub, "seq_len", YAML::Load("{a: 1}"), ""),
                   "key 'seq_len' must be a scalar or a list");
}

}  // namespace
}  // namespace spindlekv::cli
