// qemu-ga framing (client/guest_agent.h): the input is what a hostile guest
// agent writes on its channel after the client's guest-sync-delimited, with
// every "@ID@" replaced by the id the client sent (so the fuzzer can get past
// the sync), followed by end of stream. The client syncs, runs commands and
// reads freeze counts; every outcome must be a Status.
#include <chrono>
#include <memory>
#include <regex>

#include "client/guest_agent.h"
#include "tests/fuzz/fake_peer.h"
#include "tests/fuzz/fuzz_util.h"

namespace cairn::fuzz {

using cairn::client::GuestAgent;
using namespace std::chrono_literals;

int FuzzGuestAgent(const uint8_t* data, size_t size) {
  static FakePeer peer("ga");
  const std::string input(AsText(data, size));
  auto reply = [&](const std::string& first) {
    static const std::regex kId("\"id\":([0-9]+)");
    std::smatch m;
    const std::string id = std::regex_search(first, m, kId) ? m[1].str() : "0";
    std::string out = input;
    for (size_t at = out.find("@ID@"); at != std::string::npos; at = out.find("@ID@", at)) {
      out.replace(at, 4, id);
      at += id.size();
    }
    return out;
  };
  peer.Serve(/*read_first=*/true, reply, [&] {
    auto agent = GuestAgent::Connect(peer.path(), 5s);
    if (!agent.ok()) return;
    (void)(*agent)->Execute("guest-info", nlohmann::json::object(), 1s);
    (void)(*agent)->FreezeStatus(1s);
    auto frozen = (*agent)->Freeze(1s);
    if (frozen.ok()) FUZZ_CHECK(*frozen >= 0);
    (void)(*agent)->Thaw(1s);
  });
  return 0;
}

}  // namespace cairn::fuzz

CAIRN_FUZZ_ENTRY(FuzzGuestAgent)
