"""The content view against real backups made by `cairn backup image`:
groups and snapshots, search, archives with a restore command and download
link, protect then delete refused while protected, then unprotect and
delete. Also saves a screenshot of each main view, at desktop and phone
width."""

import os
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class ContentTest(cairn_browser.BrowserTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.snaps = [cls.server.backup_image(101, "2026-05-01T00:00:00Z", seed=1),
                     cls.server.backup_image(101, "2026-05-02T00:00:00Z", seed=2),
                     cls.server.backup_image(202, "2026-05-03T00:00:00Z", seed=3)]

    def setUp(self):
        self.login()

    def open_group(self, group):
        self.open("content?store=default&group=" + urllib.parse.quote(group, safe=""))
        self.view("content")
        return self.css('[data-testid="snapshots-section"]')

    def test_1_groups_and_snapshots(self):
        self.open("content?store=default")
        self.view("content")
        rows = self.wait(lambda d: self.all('[data-testid="group-row"]') if len(self.all('[data-testid="group-row"]')) == 2 else False)
        groups = [r.get_attribute("data-group") for r in rows]
        self.assertEqual(groups, ["vm/101", "vm/202"])
        row = self.css('tr[data-group="vm/101"]')
        self.assertEqual(row.find_element("css selector", 'td[data-col="snapshots"]').text, "2")
        self.assertEqual(row.find_element("css selector", 'td[data-col="owner"]').text, "admin!default")
        # Local time shown, UTC in the title.
        t = row.find_element("css selector", 'td[data-col="last"] time')
        self.assertEqual(t.get_attribute("title"), "2026-05-02T00:00:00Z (UTC)")
        self.screenshot("content-groups")
        # Sorting by snapshots count, descending after two clicks.
        self.css('[data-testid="sort-snapshots"]').click()
        self.css('[data-testid="sort-snapshots"]').click()
        first = self.all('[data-testid="group-row"]')[0].get_attribute("data-group")
        self.assertEqual(first, "vm/101")

        self.css('tr[data-group="vm/101"] [data-testid="group-link"]').click()
        self.css('[data-testid="snapshots-section"][data-group="vm/101"]')
        snaps = [r.get_attribute("data-snapshot") for r in self.all('[data-testid="snapshot-row"]')]
        self.assertEqual(snaps, [self.snaps[1], self.snaps[0]])  # newest first
        self.assertIn("1–2 of 2", self.css('[data-testid="page-info"]').text)
        row = self.css(f'tr[data-snapshot="{self.snaps[1]}"]')
        row.find_element("css selector", '[data-testid="expand"]').click()
        arch = self.css('[data-testid="archives-row"] [data-testid="archive"]')
        name = arch.get_attribute("data-archive")
        self.assertTrue(name.endswith(".fidx"), name)
        cmd = arch.find_element("css selector", '[data-testid="restore-cmd"]').text
        self.assertEqual(cmd, f"cairn --repo https://127.0.0.1:{self.server.port}/default restore "
                              f"{self.snaps[1]} {name} {name[:-5]}")
        href = arch.find_element("css selector", '[data-testid="download"]').get_attribute("href")
        self.assertIn("/api/v1/datastores/default/download?", href)
        self.assertIn("snapshot=" + urllib.parse.quote(self.snaps[1], safe=""), href)
        self.screenshot("content-snapshots")

    def test_1b_paging(self):
        self.server.backup_image(101, "2026-05-02T06:00:00Z", seed=4)
        try:
            self.open("content?store=default&group=vm%2F101&size=2")
            self.view("content")
            rows = lambda: [r.get_attribute("data-snapshot") for r in self.all('[data-testid="snapshot-row"]')]
            self.assertEqual(rows(), ["vm/101/2026-05-02T06:00:00Z", self.snaps[1]])
            self.assertIn("1–2 of 3", self.css('[data-testid="page-info"]').text)
            self.assertFalse(self.css('[data-testid="page-prev"]').is_enabled())
            self.css('[data-testid="page-next"]').click()
            self.wait(lambda d: rows() == [self.snaps[0]])
            self.assertIn("3–3 of 3", self.css('[data-testid="page-info"]').text)
            self.assertFalse(self.css('[data-testid="page-next"]').is_enabled())
            self.css('[data-testid="page-prev"]').click()
            self.wait(lambda d: len(rows()) == 2)
        finally:
            self.server.api("DELETE", "/datastores/default/snapshots?snapshot=" +
                            urllib.parse.quote("vm/101/2026-05-02T06:00:00Z", safe=""))

    def test_2_search_filters(self):
        self.open("content?store=default")
        self.view("content")
        self.wait(lambda d: len(self.all('[data-testid="group-row"]')) == 2)
        box = self.css('[data-testid="group-search"]')
        box.send_keys("202")
        self.wait(lambda d: [r.get_attribute("data-group") for r in self.all('[data-testid="group-row"]')] == ["vm/202"])
        box.clear()
        box.send_keys("no-such-group")
        self.css('[data-testid="no-groups"]')
        # Notes are searched too.
        self.server.api("PUT", "/datastores/default/snapshots/notes?snapshot=" +
                        urllib.parse.quote(self.snaps[0], safe=""), {"notes": "database host\nmore"})
        self.open("content?store=default&q=database")
        self.view("content")
        self.wait(lambda d: [r.get_attribute("data-group") for r in self.all('[data-testid="group-row"]')] == ["vm/101"])
        # Typed, in other case: the server searches the notes (GET …/groups?q=).
        box = self.css('[data-testid="group-search"]')
        box.clear()
        box.send_keys("HOST")
        self.wait(lambda d: [r.get_attribute("data-group") for r in self.all('[data-testid="group-row"]')] == ["vm/101"])
        found = self.server.api("GET", "/datastores/default/groups?q=HoSt")
        self.assertEqual([g["group"] for g in found], ["vm/101"])
        self.assertEqual(self.server.request("GET", "/api/v1/datastores/default/groups?q=" + "x" * 201).status, 400)

    def test_3_protect_then_delete_refused(self):
        snap = self.snaps[2]
        self.open_group("vm/202")
        row = self.css(f'tr[data-snapshot="{snap}"]')
        self.assertEqual(row.get_attribute("data-protected"), "false")
        row.find_element("css selector", '[data-testid="protect"]').click()
        row = self.css(f'tr[data-snapshot="{snap}"][data-protected="true"]')
        self.assertEqual(row.find_element("css selector", '[data-testid="protect"]').text, "Unprotect")
        row.find_element("css selector", '[data-testid="delete-snapshot"]').click()
        dlg = self.css('[data-testid="confirm-dialog"]')
        self.assertIn(snap, dlg.text)
        self.css('[data-testid="confirm-ok"]').click()
        toast = self.wait(lambda d: self.css('[data-testid="toast"]') if self.css('[data-testid="toast"]').is_displayed() else False)
        self.assertIn("Cannot delete", toast.text)
        self.assertIn("protected", toast.text.lower())
        # Still there, on the server too.
        listed = self.server.api("GET", "/datastores/default/snapshots?group=vm%2F202")
        self.assertEqual([s["snapshot"] for s in listed], [snap])
        self.assertTrue(listed[0]["protected"])
        self.screenshot("delete-refused")
        # Unprotect, cancel once (nothing happens), then delete.
        self.css(f'tr[data-snapshot="{snap}"] [data-testid="protect"]').click()
        self.css(f'tr[data-snapshot="{snap}"][data-protected="false"] [data-testid="delete-snapshot"]').click()
        self.css('[data-testid="confirm-cancel"]').click()
        time.sleep(0.3)
        self.assertEqual(len(self.server.api("GET", "/datastores/default/snapshots?group=vm%2F202")), 1)
        self.css(f'tr[data-snapshot="{snap}"] [data-testid="delete-snapshot"]').click()
        self.css('[data-testid="confirm-ok"]').click()
        self.wait(lambda d: not self.all(f'tr[data-snapshot="{snap}"]'))
        self.assertEqual(self.server.api("GET", "/datastores/default/snapshots?group=vm%2F202"), [])

    def test_4_screenshots_of_every_view(self):
        for view in ("dashboard", "tasks", "jobs", "access", "content"):
            self.open(view)
            self.view(view)
            time.sleep(0.3)
            self.screenshot(view)
        self.driver.set_window_size(390, 844)
        try:
            for view in ("dashboard", "content"):
                self.open(view)
                self.view(view)
                time.sleep(0.3)
                self.screenshot(view + "-phone")
        finally:
            self.driver.set_window_size(1280, 800)
        # Dark colours (prefers-color-scheme), emulated through DevTools.
        self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        try:
            self.open("content?store=default&group=vm%2F101")
            self.view("content")
            bg = self.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
            self.assertEqual(bg, "rgb(15, 19, 24)")
            self.screenshot("content-snapshots-dark")
        finally:
            self.driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
        self.css('[data-testid="logout"]').click()
        self.view("login")
        self.screenshot("login")
        # Nothing the pages did broke the CSP or threw.
        errors = [m for m in self.severe_console_errors()
                  if "Content Security Policy" in m or "Uncaught" in m]
        self.assertEqual(errors, [])


if __name__ == "__main__":
    cairn_browser.main()
