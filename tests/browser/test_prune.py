"""The prune dialog: keep options give a live preview from the server's own
dry run; pruning removes exactly what the preview showed."""

import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class PruneTest(cairn_browser.BrowserTest):
    def test_preview_then_prune(self):
        snaps = [self.server.backup_image(9, f"2026-07-0{d}T10:00:00Z", seed=d) for d in (1, 2, 3)]
        self.login()
        self.open("content?store=default&group=" + urllib.parse.quote("vm/9", safe=""))
        self.view("content")
        self.css('[data-testid="prune-group"]').click()
        self.css('[data-testid="prune-dialog"]')
        # No option: the server keeps everything.
        self.wait(lambda d: len(self.all('[data-testid="prune-item"]')) == 3)
        self.assertEqual({i.get_attribute("data-keep") for i in self.all('[data-testid="prune-item"]')}, {"true"})
        self.css('[data-testid="prune-keep-last"]').send_keys("1")
        self.wait(lambda d: [i.get_attribute("data-keep") for i in self.all('[data-testid="prune-item"]')]
                  == ["true", "false", "false"], message="preview for keep-last 1")
        self.assertIn("Keeps 1, removes 2", self.css('[data-testid="prune-preview"]').text)
        self.screenshot("prune-preview")
        # The preview was a dry run: nothing is gone yet.
        listed = self.server.api("GET", "/datastores/default/snapshots?group=vm%2F9")
        self.assertEqual(len(listed), 3)
        self.css('[data-testid="prune-run"]').click()
        self.css('main[data-view="tasks"][data-log-state="ok"]', timeout=60)
        listed = self.server.api("GET", "/datastores/default/snapshots?group=vm%2F9")
        self.assertEqual([s["snapshot"] for s in listed], [snaps[2]])


if __name__ == "__main__":
    cairn_browser.main()
