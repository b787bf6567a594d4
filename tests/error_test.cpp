#include "core/error.h"

#include <gtest/gtest.h>

#include <stdexcept>

namespace spindlekv {
namespace {

TEST(Error, CheckEqCarriesConditionBothValuesAndLocation) {
  try {
    int layers = 3;
    SKV_CHECK_EQ(layers, 4, "tensor 'x'");
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("tensor 'x'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("layers == 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("got 3 vs 4"), std::string::npos) << msg;
    EXPECT_NE(msg.find("error_test.cpp:"), std::string::npos) << msg;
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidInput);
  }
}

TEST(Error, CheckDoesNotThrowWhenConditionHolds) {
  EXPECT_NO_THROW(SKV_CHECK(1 + 1 == 2, "arithmetic"));
  EXPECT_NO_THROW(SKV_CHECK_LT(1, 2, "order"));
}

TEST(Error, ContextIsPrependedAsErrorUnwinds) {
  try {
    with_context("loading model.safetensors", [] {
      with_context("tensor x", [] { SKV_THROW(kUnsupported, "dtype 'F8' unknown"); });
    });
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "dtype 'F8' unknown");
    EXPECT_EQ(std::string(e.what()).rfind("loading model.safetensors: tensor x: dtype 'F8'", 0), 0u)
        << e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_EQ(exit_code_for(e.kind()), 4);
  }
}

TEST(Error, ForeignExceptionsAreWrappedWithContext) {
  try {
    with_context("stage", []() -> int { throw std::out_of_range("index 9"); });
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInternal);
    EXPECT_NE(std::string(e.what()).find("stage: index 9"), std::string::npos) << e.what();
  }
}

TEST(Error, WithContextReturnsValueWhenNothingThrows) {
  EXPECT_EQ(with_context("stage", [] { return 42; }), 42);
}

}  // namespace
}  // namespace spindlekv
