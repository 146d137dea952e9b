"""Download from the content view: a real backup (`cairn backup image`) of an
image with varied content (random, zeros, text; not a multiple of the 4 MiB
chunk size), the snapshot expanded, its Download link fetched with the
browser's session cookie; the bytes equal what the copy-ready `cairn restore`
command the UI shows writes, and both equal the source image."""

import base64
import hashlib
import os
import random
import shlex
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402

MIB = 1 << 20

FETCH_B64 = """
const [href, done] = arguments;
fetch(href, {credentials: 'same-origin', cache: 'no-store'}).then(async (r) => {
  const buf = new Uint8Array(await r.arrayBuffer());
  let bin = '';
  for (let i = 0; i < buf.length; i += 0x8000) bin += String.fromCharCode.apply(null, buf.subarray(i, i + 0x8000));
  done({status: r.status, type: r.headers.get('Content-Type'), length: r.headers.get('Content-Length'),
        disposition: r.headers.get('Content-Disposition'), b64: btoa(bin)});
}, (e) => done({status: -1, error: String(e)}));
"""


def varied_image(path):
    """About 6.7 MiB: random, zeros (a whole zero chunk), text, random again;
    a multiple of 512 bytes but not of 4 MiB."""
    rng = random.Random(20260806)
    text = b"".join(b"line %06d of the cairn download test: the quick brown fox\n" % i for i in range(9000))
    parts = [rng.randbytes(MIB + 4096), bytes(4 * MIB + 512), text, rng.randbytes(300 * 1024)]
    data = b"".join(parts)
    data += bytes(-len(data) % 512)
    assert len(data) % (4 * MIB) != 0
    with open(path, "wb") as f:
        f.write(data)
    return data


class DownloadTest(cairn_browser.BrowserTest):
    def test_download_equals_restore_equals_source(self):
        src_dir = os.path.join(self.server.tmp, "src")
        os.makedirs(src_dir)
        source = varied_image(os.path.join(src_dir, "disk0.raw"))
        snap = self.server.backup_file(66, "2026-08-10T12:00:00Z", os.path.join(src_dir, "disk0.raw"))

        self.login()
        self.open("content?store=default&group=" + urllib.parse.quote("vm/66", safe=""))
        self.view("content")
        row = self.css(f'tr[data-snapshot="{snap}"]')
        row.find_element("css selector", '[data-testid="expand"]').click()
        arch = self.css('[data-testid="archives-row"] [data-testid="archive"]')
        name = arch.get_attribute("data-archive")
        self.assertTrue(name.endswith(".fidx"), name)
        link = arch.find_element("css selector", '[data-testid="download"]')
        href = link.get_attribute("href")
        self.assertTrue(href.startswith(self.server.url + "/api/v1/datastores/default/download?"), href)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)
        self.assertEqual(query, {"snapshot": [snap], "archive": [name]})
        cmd = arch.find_element("css selector", '[data-testid="restore-cmd"]').text
        self.screenshot("download-archive")

        # The link with the session cookie only (no token): the image's bytes.
        got = self.driver.execute_async_script(FETCH_B64, href)
        self.assertEqual(got["status"], 200, got.get("error"))
        self.assertEqual(got["type"], "application/octet-stream")
        self.assertEqual(got["length"], str(len(source)))
        self.assertIn("attachment", got["disposition"])
        downloaded = base64.b64decode(got["b64"])

        # The restore command as the UI shows it, run by the real client.
        argv = shlex.split(cmd)
        self.assertEqual(argv[0], "cairn")
        self.assertEqual(argv[1:3], ["--repo", f"{self.server.url}/default"])
        self.assertEqual(argv[3:6], ["restore", snap, name])
        target = os.path.join(self.server.tmp, argv[6])
        self.assertFalse(os.path.exists(target), target)
        self.server.client(*argv[1:])
        with open(target, "rb") as f:
            restored = f.read()

        def digest(b):
            return f"{len(b)} bytes, sha256 {hashlib.sha256(b).hexdigest()}"
        self.assertEqual(digest(restored), digest(source), "restore differs from the source")
        self.assertEqual(digest(downloaded), digest(source), "download differs from the source")
        self.assertTrue(downloaded == restored == source)


if __name__ == "__main__":
    cairn_browser.main()
