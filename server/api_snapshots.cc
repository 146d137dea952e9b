// Routes: groups and snapshots — listings (from the catalog), delete,
// protection and notes.

#include "server/api_common.h"

namespace cairn::server::api {
namespace {

using storage::GroupRef;

// ?limit=N&offset=M&order=asc|desc for one group's snapshots.
Result<storage::SnapshotPage> PageParams(const httplib::Request& req) {
  storage::SnapshotPage page;
  CAIRN_ASSIGN_OR_RETURN(auto limit, NumberParam(req, "limit", 1'000'000));
  CAIRN_ASSIGN_OR_RETURN(auto offset, NumberParam(req, "offset", uint64_t{1} << 40));
  page.limit = limit.value_or(0);
  page.offset = offset.value_or(0);
  if (req.has_param("order")) {
    const std::string order = req.get_param_value("order");
    if (order != "asc" && order != "desc") return Status::InvalidArgument("order must be asc or desc");
    page.newest_first = order == "desc";
  }
  return page;
}

Result<SnapshotRef> SnapshotParam(const httplib::Request& req) {
  CAIRN_ASSIGN_OR_RETURN(std::string text, Param(req, "snapshot"));
  return SnapshotRef::Parse(text);
}

}  // namespace

void RegisterSnapshotRoutes(Service* service, httplib::Server* http) {
  http->Get(R"(/api/v1/datastores/([^/]+)/groups)",
            Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(auto groups,
                           service->ListGroupSummaries(c, req.get_param_value("q")));
    json out = json::array();
    for (const auto& g : groups) {
      json j = GroupJson(g.row);
      j["unique_bytes"] = g.unique_bytes ? json(*g.unique_bytes) : json(nullptr);
      j["stale"] = g.stale;
      j["stale_after"] = g.stale_after;
      out.push_back(std::move(j));
    }
    SendJson(res, 200, out);
    return Status::OK();
  }));

  // One group's snapshots (paged), or every visible group's. X-Total-Count
  // is how many there are without the page.
  http->Get(R"(/api/v1/datastores/([^/]+)/snapshots)",
            Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    std::optional<GroupRef> group;
    if (req.has_param("group")) {
      CAIRN_ASSIGN_OR_RETURN(group, GroupRef::Parse(req.get_param_value("group")));
    }
    CAIRN_ASSIGN_OR_RETURN(storage::SnapshotPage page, PageParams(req));
    CAIRN_ASSIGN_OR_RETURN(SnapshotListing listing, service->ListSnapshots(c, group, page));
    json out = json::array();
    for (const auto& g : listing.groups) {
      for (const auto& row : g.snapshots) out.push_back(SnapshotJson(row, g.owner));
    }
    res.set_header("X-Total-Count", std::to_string(listing.total));
    SendJson(res, 200, out);
    return Status::OK();
  }));

  // Delete (Admin), unless protected or in use by a session.
  http->Delete(R"(/api/v1/datastores/([^/]+)/snapshots)",
               Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(SnapshotRef ref, SnapshotParam(req));
    CAIRN_RETURN_IF_ERROR(service->DeleteSnapshot(c, ref));
    SendJson(res, 200, {{"deleted", ref.ToString()}});
    return Status::OK();
  }));

  // Protect/unprotect (Admin) and notes (Admin, or the owner with Backup).
  http->Put(R"(/api/v1/datastores/([^/]+)/snapshots/(protected|notes))",
            Wrap([service](const httplib::Request& req, httplib::Response& res) {
    CAIRN_ASSIGN_OR_RETURN(StoreCaller c, StoreFromPath(*service, req));
    CAIRN_ASSIGN_OR_RETURN(SnapshotRef ref, SnapshotParam(req));
    CAIRN_ASSIGN_OR_RETURN(json body, ParseBody(req));
    storage::SnapshotRow row;
    if (req.matches[2] == "protected") {
      CAIRN_ASSIGN_OR_RETURN(auto on, BoolField(body, "protected"));
      if (!on) return Status::InvalidArgument("protected must be a boolean");
      CAIRN_ASSIGN_OR_RETURN(row, service->SetProtected(c, ref, *on));
    } else {
      CAIRN_ASSIGN_OR_RETURN(std::string notes, StringField(body, "notes"));
      CAIRN_ASSIGN_OR_RETURN(row, service->SetNotes(c, ref, notes));
    }
    auto owner = c.store->GetOwner(ref.group);
    SendJson(res, 200, SnapshotJson(row, owner.ok() ? *owner : ""));
    return Status::OK();
  }));
}

}  // namespace cairn::server::api
