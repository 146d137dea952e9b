#include "client/libvirt_domain.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <cstdio>
#include <cstdlib>

namespace cairn::client {

namespace {

extern "C" void IgnoreVirError(void*, virErrorPtr) {}

const LibvirtApi* loaded_libvirt = nullptr;  // set once, by LoadLibvirt

// The libxml2 functions the parsers below call (client/dynamic_library.h).
#define CAIRN_LIBXML2_FUNCTIONS(X) \
  X(xmlReadMemory) X(xmlFreeDoc) X(xmlDocGetRootElement) X(xmlStrcmp) X(xmlGetProp) X(xmlNodeGetContent)
struct Libxml2Api {
  CAIRN_DYNAMIC_API(CAIRN_LIBXML2_FUNCTIONS)
  // xmlFree is a variable holding libxml2's deallocator, not a function.
  xmlFreeFunc* free_func = nullptr;
};

Status BindLibxml2(const DynamicLibrary& lib, Libxml2Api* api) {
  CAIRN_DYNAMIC_BIND(CAIRN_LIBXML2_FUNCTIONS, lib, api);
  CAIRN_ASSIGN_OR_RETURN(void* free_var, lib.Symbol("xmlFree"));
  api->free_func = static_cast<xmlFreeFunc*>(free_var);
  return Status::OK();
}

Result<const Libxml2Api*> LoadLibxml2() { return LoadOnce("libxml2.so.2", "libxml2", BindLibxml2); }

const xmlChar* X(const char* s) { return reinterpret_cast<const xmlChar*>(s); }

// A parsed document with the library that parsed it (every helper below
// takes nodes of one, so the table is loaded).
struct XmlDocFreer {
  const Libxml2Api* api;
  void operator()(xmlDocPtr d) const { api->xmlFreeDoc(d); }
};
using XmlDoc = std::unique_ptr<xmlDoc, XmlDocFreer>;

Result<XmlDoc> ParseXml(const std::string& text, const char* root_name) {
  CAIRN_ASSIGN_OR_RETURN(const Libxml2Api* x, LoadLibxml2());
  XmlDoc doc(x->xmlReadMemory(text.data(), static_cast<int>(text.size()), "libvirt.xml", nullptr,
                              XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING),
             XmlDocFreer{x});
  if (!doc) return Status::Corruption(std::string("libvirt's <") + root_name + "> XML does not parse");
  xmlNodePtr root = x->xmlDocGetRootElement(doc.get());
  if (root == nullptr || x->xmlStrcmp(root->name, X(root_name)) != 0) {
    return Status::Corruption(std::string("libvirt's XML has no <") + root_name + "> root");
  }
  return doc;
}

// libxml2's table; only called on nodes of a document ParseXml returned.
const Libxml2Api& Xml() { return **LoadLibxml2(); }

std::string TakeXmlString(xmlChar* v) {
  if (v == nullptr) return "";
  std::string out(reinterpret_cast<const char*>(v));
  (*Xml().free_func)(v);
  return out;
}

std::string Attr(xmlNodePtr n, const char* name) {
  return n == nullptr ? "" : TakeXmlString(Xml().xmlGetProp(n, X(name)));
}

std::string Text(xmlNodePtr n) { return n == nullptr ? "" : TakeXmlString(Xml().xmlNodeGetContent(n)); }

std::vector<xmlNodePtr> Children(xmlNodePtr n, const char* name) {
  std::vector<xmlNodePtr> out;
  if (n == nullptr) return out;
  for (xmlNodePtr c = n->children; c != nullptr; c = c->next) {
    if (c->type == XML_ELEMENT_NODE && Xml().xmlStrcmp(c->name, X(name)) == 0) out.push_back(c);
  }
  return out;
}

xmlNodePtr Child(xmlNodePtr n, const char* name) {
  auto all = Children(n, name);
  return all.empty() ? nullptr : all[0];
}

std::string SkipReason(const DomainDisk& d) {
  if (d.device == "cdrom") return "a CD-ROM";
  if (d.device == "floppy") return "a floppy disk";
  if (d.device != "disk" && d.device != "lun") return "device type " + d.device;
  if (d.readonly) return "read-only";
  if (d.shareable) return "shareable (another VM may write it at any time)";
  if (d.type == "network") return "network-backed (libvirt's backup of it is not supported here)";
  if (d.type != "file" && d.type != "block" && d.type != "volume") {
    return "disk type " + d.type + " is not supported";
  }
  if (d.target.empty()) return "no target name";
  return "";
}

DomainDisk ParseDisk(xmlNodePtr disk) {
  DomainDisk d;
  d.type = Attr(disk, "type");
  d.device = Attr(disk, "device");
  if (d.device.empty()) d.device = "disk";
  d.format = Attr(Child(disk, "driver"), "type");
  xmlNodePtr src = Child(disk, "source");
  d.source = Attr(src, "file");
  if (d.source.empty()) d.source = Attr(src, "dev");
  d.target = Attr(Child(disk, "target"), "dev");
  d.readonly = Child(disk, "readonly") != nullptr;
  d.shareable = Child(disk, "shareable") != nullptr;
  d.skip = SkipReason(d);
  return d;
}

}  // namespace

namespace {

Status BindLibvirt(const DynamicLibrary& lib, LibvirtApi* api) {
  CAIRN_DYNAMIC_BIND(CAIRN_LIBVIRT_FUNCTIONS, lib, api);
  api->virInitialize();
  api->virSetErrorFunc(nullptr, IgnoreVirError);
  loaded_libvirt = api;
  return Status::OK();
}

}  // namespace

Result<const LibvirtApi*> LoadLibvirt() { return LoadOnce("libvirt.so.0", "libvirt0", BindLibvirt); }

const LibvirtApi& Virt() {
  if (loaded_libvirt == nullptr) {
    std::fprintf(stderr, "cairn: internal error: libvirt called before it was loaded\n");
    std::abort();
  }
  return *loaded_libvirt;
}

Status VirError(const std::string& what) {
  virErrorPtr e = Virt().virGetLastError();
  std::string msg = e != nullptr && e->message != nullptr ? e->message : "unknown libvirt error";
  return Status::IOError(what + ": " + msg);
}

Result<VirConnection> VirOpen(const std::string& uri) {
  CAIRN_ASSIGN_OR_RETURN(const LibvirtApi* v, LoadLibvirt());
  VirConnection c(v->virConnectOpen(uri.c_str()));
  if (!c) return VirError("cannot connect to libvirt at " + uri);
  return c;
}

Result<VirDomain> VirLookup(virConnectPtr conn, const std::string& name_or_uuid) {
  VirDomain d(Virt().virDomainLookupByName(conn, name_or_uuid.c_str()));
  if (!d) d.reset(Virt().virDomainLookupByUUIDString(conn, name_or_uuid.c_str()));
  if (!d) return Status::NotFound("no libvirt domain named '" + name_or_uuid + "'");
  return d;
}

Result<DomainXml> ParseDomainXml(const std::string& xml) {
  CAIRN_ASSIGN_OR_RETURN(XmlDoc doc, ParseXml(xml, "domain"));
  xmlNodePtr root = Xml().xmlDocGetRootElement(doc.get());
  DomainXml out;
  out.name = Text(Child(root, "name"));
  out.uuid = Text(Child(root, "uuid"));
  for (xmlNodePtr disk : Children(Child(root, "devices"), "disk")) {
    out.disks.push_back(ParseDisk(disk));
  }
  for (xmlNodePtr sec : Children(root, "seclabel")) {
    if (Attr(sec, "model") != "dac") continue;
    std::string label = Text(Child(sec, "label"));  // "+64055:+64055"
    size_t colon = label.find(':');
    if (colon == std::string::npos) continue;
    std::string u = label.substr(0, colon), g = label.substr(colon + 1);
    if (!u.empty() && u[0] == '+') u.erase(0, 1);
    if (!g.empty() && g[0] == '+') g.erase(0, 1);
    char* end_u = nullptr;
    char* end_g = nullptr;
    unsigned long uid = std::strtoul(u.c_str(), &end_u, 10);
    unsigned long gid = std::strtoul(g.c_str(), &end_g, 10);
    if (u.empty() || g.empty() || *end_u != '\0' || *end_g != '\0') continue;
    out.dac = std::make_pair(static_cast<uid_t>(uid), static_cast<gid_t>(gid));
  }
  if (out.name.empty()) return Status::Corruption("libvirt's domain XML has no <name>");
  return out;
}

Result<std::vector<std::string>> ParseCheckpointDisks(const std::string& xml) {
  CAIRN_ASSIGN_OR_RETURN(XmlDoc doc, ParseXml(xml, "domaincheckpoint"));
  std::vector<std::string> out;
  xmlNodePtr root = Xml().xmlDocGetRootElement(doc.get());
  for (xmlNodePtr d : Children(Child(root, "disks"), "disk")) {
    if (Attr(d, "checkpoint") == "bitmap") out.push_back(Attr(d, "name"));
  }
  return out;
}

Result<BackupJobXml> ParseBackupJobXml(const std::string& xml) {
  CAIRN_ASSIGN_OR_RETURN(XmlDoc doc, ParseXml(xml, "domainbackup"));
  xmlNodePtr root = Xml().xmlDocGetRootElement(doc.get());
  BackupJobXml out;
  out.socket = Attr(Child(root, "server"), "socket");
  for (xmlNodePtr d : Children(Child(root, "disks"), "disk")) {
    if (Attr(d, "backup") == "no") continue;
    BackupJobXml::Disk disk;
    disk.target = Attr(d, "name");
    disk.export_name = Attr(d, "exportname");
    disk.export_bitmap = Attr(d, "exportbitmap");
    out.disks.push_back(disk);
  }
  return out;
}

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\'': out += "&apos;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace cairn::client
