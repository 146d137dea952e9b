"""The prune dialog: keep options give a live preview from the server's own
dry run, the same keep/remove per snapshot as the CLI's `cairn prune
--dry-run`; pruning removes exactly what the preview showed."""

import json
import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class PruneTest(cairn_browser.BrowserTest):
    def preview(self):
        """The dialog's preview, newest first: (time, keep, text) per snapshot."""
        # Read in one script: the list is re-rendered while options are typed,
        # and elements fetched one by one could go stale in between.
        items = self.driver.execute_script(
            "return Array.from(document.querySelectorAll('[data-testid=\"prune-item\"]')).map((i) => "
            "[i.querySelector('.mono') ? i.querySelector('.mono').innerText : '', "
            "i.getAttribute('data-keep'), i.innerText]);")
        return [(when, keep == "true", text[len(when):].strip()) for when, keep, text in items]

    def cli_dry_run(self, group, *options):
        """`cairn --output json prune GROUP OPTIONS --dry-run` (the real client)
        as the preview shows it: (time, keep, text) per snapshot, newest first."""
        r = self.server.client("--output", "json", "prune", group, *options, "--dry-run")
        rep = json.loads(r.stdout)
        self.assertTrue(rep["dry-run"], rep)
        return [(s["snapshot"].rsplit("/", 1)[1], s["keep"], f"keep ({s['reason']})" if s["keep"] else "remove")
                for s in rep["snapshots"]]

    def wait_preview(self, expected, what):
        self.wait(lambda d: self.preview() == expected, timeout=30,
                  message=f"preview for {what}: {self.preview()} != CLI {expected}")
        time.sleep(1.5)  # no later answer (an older option set) replaces it
        self.assertEqual(self.preview(), expected, what)

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
        self.assertEqual(self.preview(), self.cli_dry_run("vm/9", "--keep-last", "1"))
        self.screenshot("prune-preview")
        # The preview was a dry run: nothing is gone yet.
        listed = self.server.api("GET", "/datastores/default/snapshots?group=vm%2F9")
        self.assertEqual(len(listed), 3)
        self.css('[data-testid="prune-run"]').click()
        self.css('main[data-view="tasks"][data-log-state="ok"]', timeout=60)
        listed = self.server.api("GET", "/datastores/default/snapshots?group=vm%2F9")
        self.assertEqual([s["snapshot"] for s in listed], [snaps[2]])

    def test_preview_equals_cli_dry_run(self):
        """Several periods, several options: snapshot by snapshot, the preview
        says what the CLI's dry run says; the prune then keeps just those."""
        times = ["2026-03-02T09:00:00Z", "2026-03-02T18:00:00Z", "2026-03-03T10:00:00Z",
                 "2026-03-09T10:00:00Z", "2026-03-16T07:00:00Z", "2026-03-16T08:30:00Z",
                 "2026-03-17T10:00:00Z", "2026-04-01T10:00:00Z"]
        for i, t in enumerate(times):
            self.server.backup_image(19, t, size_mib=2, seed=i + 1)
        self.login()
        self.open("content?store=default&group=" + urllib.parse.quote("vm/19", safe=""))
        self.view("content")
        self.css('[data-testid="prune-group"]').click()
        self.css('[data-testid="prune-dialog"]')
        # No option: keep-all, as the CLI says.
        self.wait_preview(self.cli_dry_run("vm/19"), "no option")
        options = {"keep-last": "2", "keep-daily": "2", "keep-weekly": "2", "keep-monthly": "2"}
        expected = self.cli_dry_run("vm/19", *[a for k, v in options.items() for a in ("--" + k, v)])
        self.assertEqual(len(expected), len(times))
        # The data makes the options matter: some kept, some removed, several reasons.
        self.assertEqual({e[1] for e in expected}, {True, False})
        self.assertGreaterEqual(len({e[2] for e in expected if e[1]}), 3, expected)
        for k, v in options.items():
            self.css(f'[data-testid="prune-{k}"]').send_keys(v)
        self.wait_preview(expected, "the typed options")
        kept = sum(e[1] for e in expected)
        self.assertIn(f"Keeps {kept}, removes {len(expected) - kept}", self.css('[data-testid="prune-preview"]').text)
        self.screenshot("prune-preview-options")
        # Still a preview: all there, on the server too.
        self.assertEqual(len(self.server.api("GET", "/datastores/default/snapshots?group=vm%2F19")), len(times))
        self.css('[data-testid="prune-run"]').click()
        self.css('main[data-view="tasks"][data-log-state="ok"]', timeout=60)
        listed = self.server.api("GET", "/datastores/default/snapshots?group=vm%2F19&order=desc")
        self.assertEqual([s["snapshot"].rsplit("/", 1)[1] for s in listed], [e[0] for e in expected if e[1]])


if __name__ == "__main__":
    cairn_browser.main()
