// The typed client's answer checks (client/repository_client.h): answers of
// the shapes server/API.md describes parse; an answer that lacks a field or
// has one of the wrong type is Corruption("server answer: …"), never an
// exception. The calls themselves run against the real server in
// tests/integration/repository_client_test.cc and through the CLI tests.

#include "client/repository_client.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>
#include <set>
#include <string>

#include "storage/gc.h"
#include "storage/verify.h"

namespace cairn::client {
namespace {

using nlohmann::json;

json Task() {
  return {{"id", "20270115T080000Z-verify-0123abcd"},
          {"kind", "verify"},
          {"store", "default"},
          {"auth-id", "admin!default"},
          {"start", 1800000000},
          {"end", 1800000005},
          {"state", "ok"},
          {"summary", "done"},
          {"result", {{"snapshots-ok", 1}}}};
}

json Snapshot() {
  return {{"snapshot", "vm/100/2027-01-15T08:00:00Z"},
          {"ns", ""},
          {"type", "vm"},
          {"id", "100"},
          {"time", 1800000000},
          {"time-text", "2027-01-15T08:00:00Z"},
          {"size", 8388608},
          {"archives", json::array({{{"name", "disk0.fidx"}, {"size", 8388608}, {"csum", "ab"}}})},
          {"protected", false},
          {"notes", ""},
          {"client", {{"consistency", "crash"}}},
          {"verify", {{"state", "ok"}, {"time", 1800000100}, {"task", "t"}}},
          {"owner", "admin!default"},
          {"encrypted", true},
          {"fingerprint", "1f:2e:3d:4c:5b:6a:79:88"}};
}

json Group() {
  return {{"group", "vm/100"}, {"ns", ""},       {"type", "vm"},      {"id", "100"},
          {"owner", nullptr},  {"snapshots", 2}, {"last", 1800000000}};
}

json Prune() {
  return {{"group", "vm/100"},
          {"options", "--keep-last 1"},
          {"time-zone", "UTC"},
          {"dry-run", false},
          {"kept", 1},
          {"removed", 1},
          {"failed", 0},
          {"snapshots", json::array({{{"snapshot", "vm/100/2027-01-15T08:00:00Z"},
                                      {"time", 1800000000},
                                      {"keep", true},
                                      {"reason", "keep-last"},
                                      {"protected", false},
                                      {"removed", false}},
                                     {{"snapshot", "vm/100/2027-01-14T08:00:00Z"},
                                      {"time", 1799913600},
                                      {"keep", false},
                                      {"reason", "remove"},
                                      {"protected", false},
                                      {"removed", true}}})}};
}

json Verify() {
  storage::VerifyResult r;
  r.snapshots_checked = 2;
  r.snapshots_ok = 1;
  r.snapshots_failed = 1;
  r.failed.push_back(
      {*storage::SnapshotRef::Parse("vm/1/2027-01-15T08:00:00Z"), {"bad chunk"}, true});
  storage::BadChunk bad;
  bad.kind = "corrupt";
  bad.problem = "digest mismatch";
  bad.used_by.push_back(*storage::SnapshotRef::Parse("vm/1/2027-01-15T08:00:00Z"));
  r.bad_chunks.push_back(bad);
  r.warnings.push_back("a warning");
  return r.ToJson();
}

template <typename T>
void ExpectCorruption(const Result<T>& r, const std::string& what) {
  ASSERT_FALSE(r.ok()) << what;
  EXPECT_TRUE(r.status().IsCorruption()) << what << ": " << r.status().ToString();
  EXPECT_EQ(r.status().message().rfind("server answer: ", 0), 0u) << r.status().message();
}

// For each key of the object at `pointer` in `valid` (except `optional`
// ones): without it, and with a value of a wrong type, `parse` must answer
// Corruption.
template <typename Parse>
void ExpectEveryFieldChecked(const json& valid, const json::json_pointer& pointer, Parse parse,
                             const std::set<std::string>& optional = {},
                             const std::set<std::string>& any_type = {}) {
  ASSERT_TRUE(parse(valid).ok()) << parse(valid).status().ToString();
  for (const auto& [key, value] : valid.at(pointer).items()) {
    if (!optional.contains(key)) {
      json missing = valid;
      missing.at(pointer).erase(key);
      ExpectCorruption(parse(missing), "without " + pointer.to_string() + "/" + key);
    }
    if (any_type.contains(key)) continue;
    // A value of another type than the valid one: an object for a scalar or
    // a list, a string for an object (and a negative number for a count).
    json wrong = valid;
    wrong.at(pointer)[key] = value.is_object() || value.is_null() ? json(-1) : json{{"x", 1}};
    ExpectCorruption(parse(wrong), "wrong " + pointer.to_string() + "/" + key);
  }
}

TEST(RepositoryClientTest, TaskParses) {
  auto t = ParseTaskInfo(Task());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->id, "20270115T080000Z-verify-0123abcd");
  EXPECT_EQ(t->auth_id, "admin!default");
  EXPECT_EQ(t->state, TaskState::kOk);
  EXPECT_EQ(t->end, 1800000005);
  EXPECT_EQ(t->result["snapshots-ok"], 1);

  json running = Task();
  running["state"] = "running";
  running["end"] = nullptr;
  running["result"] = nullptr;
  auto r = ParseTaskInfo(running);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->state, TaskState::kRunning);
  EXPECT_FALSE(r->end.has_value());
  EXPECT_TRUE(r->result.is_null());

  // A server from before task results sends no "result": none.
  json old = Task();
  old.erase("result");
  auto o = ParseTaskInfo(old);
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->result.is_null());
}

TEST(RepositoryClientTest, MalformedTaskIsCorruption) {
  ExpectEveryFieldChecked(Task(), json::json_pointer(""), ParseTaskInfo, {"result"}, {"result"});
  json unknown = Task();
  unknown["state"] = "sleeping";
  ExpectCorruption(ParseTaskInfo(unknown), "unknown state");
  json running_with_result = Task();
  running_with_result["state"] = "running";
  ExpectCorruption(ParseTaskInfo(running_with_result), "running with a result");
  json huge = Task();
  huge["start"] = std::numeric_limits<uint64_t>::max();
  ExpectCorruption(ParseTaskInfo(huge), "start past int64");
  json fractional = Task();
  fractional["start"] = 1.5;
  ExpectCorruption(ParseTaskInfo(fractional), "fractional start");
  for (const json& j : {json(nullptr), json::array(), json("task"), json(7)}) {
    ExpectCorruption(ParseTaskInfo(j), "task " + j.dump());
  }
  json list = json::array({Task(), Task()});
  ASSERT_TRUE(ParseTasks(list).ok());
  list[1].erase("id");
  ExpectCorruption(ParseTasks(list), "second task without id");
  ExpectCorruption(ParseTasks(Task()), "an object for a list");
}

TEST(RepositoryClientTest, StartedTask) {
  auto id = ParseTaskStarted({{"task", "t1"}});
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, "t1");
  ExpectCorruption(ParseTaskStarted(json::object()), "no task");
  ExpectCorruption(ParseTaskStarted({{"task", 1}}), "numeric task");
  ExpectCorruption(ParseTaskStarted({{"task", ""}}), "empty task");
  ExpectCorruption(ParseTaskStarted(json::array()), "list");
}

TEST(RepositoryClientTest, SnapshotsParse) {
  json list = json::array(
      {Snapshot(),
       {{"snapshot", "vm/100/2027-01-16T08:00:00Z"}, {"error", "Corruption: manifest"}}});
  list[0]["verify"] = nullptr;
  auto s = ParseSnapshots(list);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  ASSERT_EQ(s->size(), 2u);
  EXPECT_EQ((*s)[0].size, 8388608u);
  EXPECT_FALSE((*s)[0].verify.has_value());
  ASSERT_EQ((*s)[0].archives.size(), 1u);
  EXPECT_EQ((*s)[0].archives[0].name, "disk0.fidx");
  EXPECT_EQ((*s)[0].client["consistency"], "crash");
  EXPECT_EQ((*s)[1].error, "Corruption: manifest");

  auto one = ParseSnapshotInfo(Snapshot());
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  ASSERT_TRUE(one->verify.has_value());
  EXPECT_EQ(one->verify->state, "ok");
  EXPECT_EQ(one->owner, "admin!default");
  EXPECT_TRUE(one->encrypted);
  EXPECT_EQ(one->fingerprint, "1f:2e:3d:4c:5b:6a:79:88");
  json old = Snapshot();
  old.erase("encrypted");
  old.erase("fingerprint");
  auto plain = ParseSnapshotInfo(old);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_FALSE(plain->encrypted);
  EXPECT_FALSE(plain->fingerprint.has_value());
}

TEST(RepositoryClientTest, MalformedSnapshotIsCorruption) {
  // "encrypted" is optional: servers before encryption send neither field.
  ExpectEveryFieldChecked(Snapshot(), json::json_pointer(""), ParseSnapshotInfo, {"encrypted"},
                          {"client"});
  ExpectEveryFieldChecked(Snapshot(), json::json_pointer("/verify"), ParseSnapshotInfo);
  ExpectEveryFieldChecked(Snapshot(), json::json_pointer("/archives/0"), ParseSnapshotInfo);
  json list = json::array({Snapshot()});
  list[0]["size"] = "8 MiB";
  auto r = ParseSnapshots(list);
  ExpectCorruption(r, "size as text");
  EXPECT_NE(r.status().message().find("snapshots[0]"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("\"size\""), std::string::npos) << r.status().message();
  ExpectCorruption(ParseSnapshots(json::array({{{"snapshot", "x"}, {"error", 5}}})),
                   "error not text");
}

TEST(RepositoryClientTest, GroupsAndDatastores) {
  auto g = ParseGroups(json::array({Group()}));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_FALSE((*g)[0].owner.has_value());
  EXPECT_EQ((*g)[0].last, 1800000000);
  json groups = json::array({Group()});
  ExpectEveryFieldChecked(groups, json::json_pointer("/0"), ParseGroups);

  json stores =
      json::array({{{"name", "default"}, {"usage", {{"total", 10}, {"used", 4}, {"avail", 6}}}},
                   {{"name", "nostat"}}});
  auto d = ParseDatastores(stores);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE((*d)[0].usage.has_value());
  EXPECT_EQ((*d)[0].usage->avail, 6u);
  EXPECT_FALSE((*d)[1].usage.has_value());
  ExpectEveryFieldChecked(stores, json::json_pointer("/0/usage"), ParseDatastores);
  ExpectEveryFieldChecked(stores, json::json_pointer("/1"), ParseDatastores);
}

TEST(RepositoryClientTest, PruneResult) {
  auto p = ParsePruneReport(Prune());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->kept, 1u);
  ASSERT_EQ(p->snapshots.size(), 2u);
  EXPECT_EQ(p->snapshots[1].reason, "remove");
  EXPECT_TRUE(p->snapshots[1].removed);
  ExpectEveryFieldChecked(Prune(), json::json_pointer(""), ParsePruneReport);
  ExpectEveryFieldChecked(Prune(), json::json_pointer("/snapshots/0"), ParsePruneReport);
  json with_error = Prune();
  with_error["snapshots"][1]["error"] = "in use";
  auto e = ParsePruneReport(with_error);
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->snapshots[1].error, "in use");
  with_error["snapshots"][1]["error"] = false;
  ExpectCorruption(ParsePruneReport(with_error), "error not text");
}

TEST(RepositoryClientTest, GcResult) {
  storage::GcResult r;
  r.disk_chunks = 8;
  r.dedup_factor = 1.5;
  json j = r.ToJson();
  auto g = ParseGcResult(j);
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->disk_chunks, 8u);
  EXPECT_EQ(g->dedup_factor, 1.5);
  ExpectEveryFieldChecked(j, json::json_pointer(""), ParseGcResult);
}

TEST(RepositoryClientTest, VerifyResult) {
  auto v = ParseVerifyReport(Verify());
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->snapshots_failed, 1u);
  ASSERT_EQ(v->failed.size(), 1u);
  EXPECT_EQ(v->failed[0].reasons, std::vector<std::string>{"bad chunk"});
  ASSERT_EQ(v->bad_chunks.size(), 1u);
  EXPECT_EQ(v->bad_chunks[0].used_by, std::vector<std::string>{"vm/1/2027-01-15T08:00:00Z"});
  EXPECT_EQ(v->warnings, std::vector<std::string>{"a warning"});
  ExpectEveryFieldChecked(Verify(), json::json_pointer(""), ParseVerifyReport);
  ExpectEveryFieldChecked(Verify(), json::json_pointer("/failed/0"), ParseVerifyReport);
  ExpectEveryFieldChecked(Verify(), json::json_pointer("/bad-chunks/0"), ParseVerifyReport);
  json bad_list = Verify();
  bad_list["warnings"] = json::array({"ok", 3});
  ExpectCorruption(ParseVerifyReport(bad_list), "a number among the warnings");
}

TEST(RepositoryClientTest, AnswerBody) {
  auto ok = ParseAnswerBody(R"({"a": [1, 2]})");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ((*ok)["a"][1], 2);
  ExpectCorruption(ParseAnswerBody("<html>502 Bad Gateway</html>"), "html");
  ExpectCorruption(ParseAnswerBody(""), "empty");
  ExpectCorruption(ParseAnswerBody("{\"a\": 1"), "cut short");
  ExpectCorruption(ParseAnswerBody(std::string(100000, '[') + std::string(100000, ']')), "deep");
}

TEST(RepositoryClientTest, TaskFailureKeepsTheCode) {
  TaskInfo t;
  t.id = "t1";
  t.kind = "prune";
  t.state = TaskState::kFailed;
  t.summary = "NotFound: no group vm/9";
  Status s = TaskFailure(t);
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  EXPECT_EQ(s.message(), "prune task t1 failed: no group vm/9");
  t.summary = "InvalidArgument: bad group";
  EXPECT_TRUE(TaskFailure(t).IsInvalidArgument());
  t.summary = "the server stopped while the task ran";
  s = TaskFailure(t);
  EXPECT_TRUE(s.IsIOError());
  EXPECT_EQ(s.message(), "prune task t1 failed: the server stopped while the task ran");
}

}  // namespace
}  // namespace cairn::client
