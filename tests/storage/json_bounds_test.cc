#include "storage/json_bounds.h"

#include <gtest/gtest.h>

#include <string>

namespace cairn::storage {
namespace {

std::string Arrays(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

std::string Objects(size_t depth) {
  std::string s;
  for (size_t i = 0; i < depth; ++i) s += "{\"a\":";
  s += "1";
  s += std::string(depth, '}');
  return s;
}

TEST(JsonBoundsTest, DepthCountsArraysAndObjects) {
  EXPECT_EQ(JsonDepth(""), 0u);
  EXPECT_EQ(JsonDepth("1"), 0u);
  EXPECT_EQ(JsonDepth("\"x\""), 0u);
  EXPECT_EQ(JsonDepth("[]"), 1u);
  EXPECT_EQ(JsonDepth("{}"), 1u);
  EXPECT_EQ(JsonDepth("[[]]"), 2u);
  EXPECT_EQ(JsonDepth("{\"a\":{}}"), 2u);
  EXPECT_EQ(JsonDepth("[[],[[]],[]]"), 3u);
  EXPECT_EQ(JsonDepth(Arrays(64)), 64u);
  EXPECT_EQ(JsonDepth(Objects(65)), 65u);
}

TEST(JsonBoundsTest, Depth64IsAcceptedAnd65Refused) {
  const JsonLimits limits;  // 64 levels, 1 MiB
  for (const std::string& text : {Arrays(64), Objects(64)}) {
    auto j = ParseJsonBounded(text, limits);
    ASSERT_TRUE(j.ok()) << j.status().ToString();
  }
  for (const std::string& text : {Arrays(65), Objects(65)}) {
    Status s = ParseJsonBounded(text, limits).status();
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_NE(s.message().find("deeper than 64"), std::string::npos) << s.message();
  }
}

TEST(JsonBoundsTest, BracketsInsideStringsDoNotCount) {
  const std::string deep_text = "\"" + std::string(1000, '[') + std::string(1000, '{') + "\"";
  EXPECT_EQ(JsonDepth(deep_text), 0u);
  EXPECT_EQ(JsonDepth("{\"k[[[[\":\"v{{{{\"}"), 1u);
  auto j = ParseJsonBounded("{\"k\":\"" + std::string(500, '[') + "\"}", JsonLimits{1, 1 << 20});
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ((*j)["k"].get<std::string>(), std::string(500, '['));
}

TEST(JsonBoundsTest, EscapesAreFollowed) {
  // An escaped quote does not end the string: the brackets after it are
  // still inside it.
  EXPECT_EQ(JsonDepth(R"(["a\"[[[[", 1])"), 1u);
  // An escaped backslash does end it: the brackets after the closing quote
  // count.
  EXPECT_EQ(JsonDepth(R"(["a\\", [[[1]]]])"), 4u);
  EXPECT_EQ(JsonDepth(R"(["\\\"[[", [[]]])"), 3u);
  // \u escapes are four hex digits, nothing special.
  EXPECT_EQ(JsonDepth(R"(["\u005b\u007b", []])"), 2u);
  // A deep text hidden behind an escaped quote is seen whole.
  const std::string hidden = "[\"\\\\\"" + std::string(100, '[') + std::string(100, ']') + "]";
  EXPECT_EQ(JsonDepth(hidden), 101u);
  EXPECT_TRUE(ParseJsonBounded(hidden, JsonLimits{}).status().IsInvalidArgument());
}

TEST(JsonBoundsTest, UnbalancedClosersDoNotHideOpeners) {
  EXPECT_EQ(JsonDepth("]]]]" + std::string(70, '[')), 70u);
  EXPECT_TRUE(ParseJsonBounded("]]]]" + std::string(70, '['), JsonLimits{}).status()
                  .IsInvalidArgument());
}

TEST(JsonBoundsTest, SizeIsBounded) {
  const std::string text = "\"" + std::string(100, 'x') + "\"";
  EXPECT_TRUE(CheckJsonBounds(text, JsonLimits{64, text.size()}).ok());
  Status s = CheckJsonBounds(text, JsonLimits{64, text.size() - 1});
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("exceeds the limit"), std::string::npos);
}

TEST(JsonBoundsTest, InvalidJsonIsInvalidArgument) {
  for (const char* text : {"", "{", "[1,]", "{\"a\" 1}", "1 2", "\"\xff\""}) {
    EXPECT_TRUE(ParseJsonBounded(text, JsonLimits{}).status().IsInvalidArgument()) << text;
  }
}

// The crash of issue 17, item 1: a megabyte of '[' is refused before any
// value is built, so nothing recurses over it.
TEST(JsonBoundsTest, AMillionOpenersAreRefusedWithoutParsing) {
  const std::string body = "{\"target\":\"vm/999\",\"x\":" + std::string(1000000, '[') +
                           std::string(1000000, ']') + "}";
  Status s = ParseJsonBounded(body, JsonLimits{64, 4 << 20}).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
}

}  // namespace
}  // namespace cairn::storage
