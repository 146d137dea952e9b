#pragma once

// Thin RAII wrappers around libvirt's C API (Debian's libvirt-dev) and the
// parts of its XML that `cairn backup domain` reads (client/domain_backup.h).
// libvirt's own error printing is turned off; errors become Status values
// with libvirt's message. Parsing of libvirt's XML uses libxml2; XML that
// does not parse or lacks what is needed is Corruption.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "client/dynamic_library.h"
#include "storage/status.h"

namespace cairn::client {

using storage::Result;
using storage::Status;

// The libvirt functions the client calls, loaded from libvirt.so.0 at first
// use (client/dynamic_library.h).
#define CAIRN_LIBVIRT_FUNCTIONS(X)                                                       \
  X(virInitialize) X(virSetErrorFunc) X(virGetLastError) X(virConnectOpen)               \
  X(virConnectClose) X(virConnectListAllDomains) X(virDomainLookupByName)                \
  X(virDomainLookupByUUIDString) X(virDomainFree) X(virDomainGetName)                    \
  X(virDomainGetState) X(virDomainIsActive) X(virDomainGetXMLDesc)                       \
  X(virDomainGetBlockInfo) X(virDomainGetJobInfo) X(virDomainAbortJob)                   \
  X(virDomainFSFreeze) X(virDomainFSThaw) X(virDomainBackupBegin)                        \
  X(virDomainBackupGetXMLDesc) X(virDomainListAllCheckpoints) X(virDomainCheckpointGetName) \
  X(virDomainCheckpointGetXMLDesc) X(virDomainCheckpointLookupByName)                    \
  X(virDomainCheckpointDelete) X(virDomainCheckpointFree)
struct LibvirtApi {
  CAIRN_DYNAMIC_API(CAIRN_LIBVIRT_FUNCTIONS)
};
// Loads libvirt (once; later calls return the first outcome) and turns its
// own error printing off. VirOpen calls it.
Result<const LibvirtApi*> LoadLibvirt();
// The loaded table. Only after LoadLibvirt succeeded (every libvirt object
// comes from VirOpen, which loads it); before, it aborts with a message.
const LibvirtApi& Virt();

struct VirConnectCloser {
  void operator()(virConnectPtr c) const { Virt().virConnectClose(c); }
};
struct VirDomainFreer {
  void operator()(virDomainPtr d) const { Virt().virDomainFree(d); }
};
using VirConnection = std::unique_ptr<virConnect, VirConnectCloser>;
using VirDomain = std::unique_ptr<virDomain, VirDomainFreer>;

// libvirt's last error as IOError: "<what>: <message>".
Status VirError(const std::string& what);

Result<VirConnection> VirOpen(const std::string& uri);
// By name, then by UUID. NotFound when neither matches.
Result<VirDomain> VirLookup(virConnectPtr conn, const std::string& name_or_uuid);

// One <disk> of a domain's XML.
struct DomainDisk {
  std::string target;  // <target dev>
  std::string device;  // disk, cdrom, floppy, lun
  std::string type;    // file, block, network, volume, ...
  std::string format;  // <driver type>: qcow2, raw, ...
  std::string source;  // file or device path ("" for network)
  bool readonly = false;
  bool shareable = false;
  uint64_t size = 0;  // capacity (virDomainGetBlockInfo), filled by the caller
  // Why it is not backed up ("" = eligible).
  std::string skip;
};

struct DomainXml {
  std::string name;
  std::string uuid;
  std::vector<DomainDisk> disks;
  // The DAC label QEMU runs with ("+64055:+64055" → 64055, 64055), if any.
  std::optional<std::pair<uid_t, gid_t>> dac;
};
Result<DomainXml> ParseDomainXml(const std::string& xml);

// The disks (targets) a checkpoint's XML holds a bitmap for.
Result<std::vector<std::string>> ParseCheckpointDisks(const std::string& xml);

// From a backup job's XML: the NBD socket, and per disk target its export
// name and dirty-bitmap export ("" when the disk has none).
struct BackupJobXml {
  std::string socket;
  struct Disk {
    std::string target, export_name, export_bitmap;
  };
  std::vector<Disk> disks;
};
Result<BackupJobXml> ParseBackupJobXml(const std::string& xml);

// Escapes text for an XML attribute or element.
std::string XmlEscape(const std::string& s);

}  // namespace cairn::client
