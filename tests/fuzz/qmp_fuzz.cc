// QMP messages as QEMU sends them (client/qmp_client.h): the input is what a
// hostile QEMU writes on the monitor socket, greeting first, followed by end
// of stream. The client connects, runs a command, waits for an event and
// polls; every outcome must be a Status, never a crash or a hang.
#include <chrono>
#include <memory>

#include "client/qmp_client.h"
#include "tests/fuzz/fake_peer.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using cairn::client::QmpClient;
using namespace std::chrono_literals;

int FuzzQmp(const uint8_t* data, size_t size) {
  static FakePeer peer("qmp");
  const std::string input(AsText(data, size));
  peer.Serve(/*read_first=*/false, [&](const std::string&) { return input; }, [&] {
    QmpClient::Options options;
    options.timeout = 5s;
    options.max_message_bytes = 64 * 1024;
    options.max_queued_events = 8;
    auto client = QmpClient::Connect(peer.path(), options);
    if (!client.ok()) return;
    (void)(*client)->version();
    (void)(*client)->Execute("query-status");
    (void)(*client)->WaitEvent("JOB_STATUS_CHANGE",
                               [](const nlohmann::json& e) { return e.contains("data"); }, 1s);
    (void)(*client)->Hmp("info block");
    (void)(*client)->Poll();
    FUZZ_CHECK((*client)->TakeEvents().size() <= 8);
  });
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzQmp)
