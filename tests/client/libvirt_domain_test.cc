// Parsing of libvirt's XML for `cairn backup domain` (client/libvirt_domain.h):
// the disks and why some are skipped, the DAC label, checkpoint and backup
// job XML, and XML that is not what libvirt writes (Corruption, no crash).

#include "client/libvirt_domain.h"

#include <gtest/gtest.h>

namespace cairn::client {
namespace {

constexpr const char* kDomain = R"(<domain type='qemu' id='3'>
  <name>web-01</name>
  <uuid>0b7d2d7e-6a53-4b38-9a3e-0d6f0c0e5a11</uuid>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/a.qcow2' index='2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/>
      <source dev='/dev/vg/b'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
    <disk type='file' device='disk'><driver type='raw'/><source file='/x'/><target dev='vdc'/><readonly/></disk>
    <disk type='file' device='disk'><driver type='raw'/><source file='/y'/><target dev='vdd'/><shareable/></disk>
    <disk type='network' device='disk'><driver type='raw'/><source protocol='rbd' name='p/i'/><target dev='vde'/></disk>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'><label>+64055:+64056</label></seclabel>
</domain>)";

TEST(LibvirtDomainXml, DisksAndSkipReasons) {
  auto d = ParseDomainXml(kDomain);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->name, "web-01");
  EXPECT_EQ(d->uuid, "0b7d2d7e-6a53-4b38-9a3e-0d6f0c0e5a11");
  ASSERT_EQ(d->disks.size(), 6u);
  EXPECT_EQ(d->disks[0].target, "vda");
  EXPECT_EQ(d->disks[0].format, "qcow2");
  EXPECT_EQ(d->disks[0].source, "/var/lib/libvirt/images/a.qcow2");
  EXPECT_EQ(d->disks[0].skip, "");
  EXPECT_EQ(d->disks[1].source, "/dev/vg/b");
  EXPECT_EQ(d->disks[1].skip, "");
  EXPECT_EQ(d->disks[2].skip, "a CD-ROM");
  EXPECT_EQ(d->disks[3].skip, "read-only");
  EXPECT_NE(d->disks[4].skip.find("shareable"), std::string::npos);
  EXPECT_NE(d->disks[5].skip.find("network-backed"), std::string::npos);
  ASSERT_TRUE(d->dac.has_value());
  EXPECT_EQ(d->dac->first, 64055u);
  EXPECT_EQ(d->dac->second, 64056u);
}

TEST(LibvirtDomainXml, BadXmlIsCorruption) {
  EXPECT_TRUE(ParseDomainXml("<domain><name>x</name").status().IsCorruption());
  EXPECT_TRUE(ParseDomainXml("<other/>").status().IsCorruption());
  EXPECT_TRUE(ParseDomainXml("<domain><devices/></domain>").status().IsCorruption());
  EXPECT_TRUE(ParseCheckpointDisks("").status().IsCorruption());
  EXPECT_TRUE(ParseBackupJobXml("<domain/>").status().IsCorruption());
  // A label that is not uid:gid is ignored, not misread.
  auto d = ParseDomainXml(
      "<domain><name>a</name><seclabel model='dac'><label>+x:+1</label></seclabel></domain>");
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->dac.has_value());
}

TEST(LibvirtDomainXml, CheckpointAndBackupJob) {
  auto cp = ParseCheckpointDisks(
      "<domaincheckpoint><name>cairn-cp-1-ab</name><disks><disk name='vda' checkpoint='bitmap' "
      "bitmap='cairn-cp-1-ab'/><disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>");
  ASSERT_TRUE(cp.ok());
  EXPECT_EQ(*cp, std::vector<std::string>{"vda"});
  auto job = ParseBackupJobXml(
      "<domainbackup mode='pull'><incremental>c</incremental><server transport='unix' "
      "socket='/tmp/cairn-domain-42-x/nbd.sock'/><disks><disk name='vda' backup='yes' "
      "exportname='vda' exportbitmap='backup-vda'/><disk name='hdc' backup='no'/></disks>"
      "</domainbackup>");
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->socket, "/tmp/cairn-domain-42-x/nbd.sock");
  ASSERT_EQ(job->disks.size(), 1u);
  EXPECT_EQ(job->disks[0].export_bitmap, "backup-vda");
}

TEST(LibvirtDomainXml, Escape) { EXPECT_EQ(XmlEscape("a'<&>\""), "a&apos;&lt;&amp;&gt;&quot;"); }

}  // namespace
}  // namespace cairn::client
