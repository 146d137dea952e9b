"""An encrypted snapshot in the content view: a lock and the key's
fingerprint beside it, no download link (the server has no key), and a
restore command that asks for the key file. A plain snapshot of the same
page shows none of that. Backups made by the real `cairn backup image
--encrypt` with a key made by `cairn key create`."""

import json
import os
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class EncryptedTest(cairn_browser.BrowserTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.server
        cls.keyfile = os.path.join(s.tmp, "key.json")
        s.client("key", "create", "--kdf", "none", cls.keyfile)
        shown = json.loads(s.client("--output", "json", "key", "show", cls.keyfile).stdout)
        cls.fingerprint = shown["fingerprint"]
        cls.plain = s.backup_image(303, "2026-06-01T00:00:00Z", seed=5)
        img = os.path.join(s.tmp, "enc.raw")
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", img, "8M"], check=True)
        with open(img, "r+b") as f:
            f.write(b"secret payload " * 4096)
        s.client("--output", "json", "backup", "image", "--id", "303",
                 "--backup-time", "2026-06-02T00:00:00Z", "--encrypt", "--keyfile", cls.keyfile, img)
        cls.enc = "vm/303/2026-06-02T00:00:00Z"

    def setUp(self):
        self.login()

    def test_lock_fingerprint_and_no_download(self):
        self.open("content?store=default&group=" + urllib.parse.quote("vm/303", safe=""))
        self.view("content")
        self.css('[data-testid="snapshots-section"][data-group="vm/303"]')
        enc_row = self.css(f'tr[data-snapshot="{self.enc}"]')
        cell = enc_row.find_element("css selector", '[data-testid="encryption"]')
        self.assertIn("encrypted", cell.text)
        self.assertEqual(len(cell.find_elements("css selector", ".lock")), 1)
        self.assertEqual(cell.find_element("css selector", '[data-testid="fingerprint"]').text,
                         self.fingerprint)
        self.assertIn(self.fingerprint, cell.get_attribute("title"))
        plain_row = self.css(f'tr[data-snapshot="{self.plain}"]')
        self.assertEqual(plain_row.find_element("css selector", '[data-testid="encryption"]').text, "none")

        enc_row.find_element("css selector", '[data-testid="expand"]').click()
        arch = self.css('[data-testid="archives-row"] [data-testid="archive"]')
        self.assertEqual(arch.find_elements("css selector", '[data-testid="download"]'), [])
        self.assertIn("--keyfile", arch.find_element("css selector", '[data-testid="restore-cmd"]').text)
        self.screenshot("content-encrypted")
        # The server refuses to make the image itself, with a clear message.
        r = self.server.request(
            "GET", "/api/v1/datastores/default/download?snapshot=" + urllib.parse.quote(self.enc, safe="")
            + "&archive=" + urllib.parse.quote(arch.get_attribute("data-archive"), safe=""))
        self.assertEqual(r.status, 400, r.body)
        self.assertIn(b"encrypted", r.body)
        errors = [m for m in self.severe_console_errors()
                  if "Content Security Policy" in m or "Uncaught" in m]
        self.assertEqual(errors, [])


if __name__ == "__main__":
    cairn_browser.main()
