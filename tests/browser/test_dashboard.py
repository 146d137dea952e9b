"""The dashboard: the datastore row, and a verify task that failed (a chunk
corrupted on disk) listed under "Failed in the last 24 hours" and shown as
failed in the content view. Fields the server does not send show "—"."""

import glob
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class DashboardTest(cairn_browser.BrowserTest):
    def test_store_and_failed_verify(self):
        snap = self.server.backup_image(77, "2026-08-01T00:00:00Z", size_mib=4, seed=5)
        chunks = [c for c in glob.glob(os.path.join(self.server.data, "**", ".chunks", "*", "*"), recursive=True)
                  if len(os.path.basename(c)) == 64]
        self.assertTrue(chunks, "no chunk files found in the data folder")
        for c in chunks:
            with open(c, "r+b") as f:
                f.seek(40)
                b = f.read(1)
                f.seek(40)
                f.write(bytes([b[0] ^ 0xFF]))
        r = self.server.api("POST", "/datastores/default/verify", {"target": snap})
        task = self.server.wait_task(r["task"])
        self.assertEqual(task["state"], "failed")

        self.login()
        row = self.css('tr[data-testid="store-row"][data-store="default"]')
        cells = [td.text for td in row.find_elements("css selector", "td")]
        self.assertEqual(cells[0], "default")
        self.assertRegex(cells[1], r"\d+(\.\d+)? \w?i?B / ")  # usage from statvfs
        failed = self.css(f'[data-testid="failed-tasks"] tr[data-task="{r["task"]}"]')
        self.assertEqual(failed.get_attribute("data-state"), "failed")
        self.assertEqual(self.all('[data-testid="running-tasks"] tr[data-testid="task-row"]'), [])
        self.screenshot("dashboard-failed-task")
        # The task's log names the bad chunk; the snapshot shows failed.
        failed.find_element("css selector", '[data-testid="task-link"]').click()
        self.css('main[data-log-state="failed"]')
        self.assertIn("bad", self.css('[data-testid="task-log"]').text.lower())
        self.open("content?store=default&group=" + urllib.parse.quote("vm/77", safe=""))
        self.view("content")
        self.assertEqual(self.css(f'tr[data-snapshot="{snap}"] [data-testid="verify-state"]').text, "failed")


if __name__ == "__main__":
    cairn_browser.main()
