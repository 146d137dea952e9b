"""The dashboard: the datastore row, and a verify task that failed (a chunk
corrupted on disk) listed under "Failed in the last 24 hours" and shown as
failed in the content view. Fields the server does not send show "—"."""

import glob
import os
import sys
import time
import urllib.parse
from decimal import ROUND_HALF_UP, Decimal, localcontext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


def figures(server):
    """GET /datastores' entry of default without `usage` (statvfs of a
    filesystem other processes write to)."""
    store = next(x for x in server.api("GET", "/datastores") if x["name"] == "default")
    store.pop("usage", None)
    return store


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def utc_text(t):
    """dom.js utcText: the ISO time in UTC, without milliseconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def to_fixed(x, digits):
    """JavaScript's Number.prototype.toFixed (ties away from zero on the
    exact binary value; Python's format rounds ties to even)."""
    with localcontext() as c:
        c.prec = 200
        return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def format_bytes(n):
    """dom.js formatBytes."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return (str(n) if i == 0 else to_fixed(n, 2 if n < 10 else 1)) + " " + units[i]


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

    def test_figures_and_stale_groups_equal_the_api(self):
        s = self.server
        now = int(time.time())
        # Two backups of one disk that differ in a single 64 KiB block: they
        # share every other chunk. A third group is deleted so that GC frees
        # something (grace 0: its chunks are older than the cutoff).
        img = os.path.join(s.tmp, "shared.raw")
        with open(img, "wb") as f:
            f.write(os.urandom(12 << 20))  # three 4 MiB chunks
        s.backup_file(500, iso(now - 7200), img)
        with open(img, "r+b") as f:
            f.seek(5 << 20)
            f.write(os.urandom(65536))
        s.backup_file(500, iso(now - 7000), img)
        gone = s.backup_image(501, iso(now - 6000), size_mib=2, seed=9)
        s.api("DELETE", "/datastores/default/snapshots?snapshot=" + urllib.parse.quote(gone, safe=""))
        time.sleep(2)
        gc = s.wait_task(s.api("POST", "/datastores/default/gc", {"grace-seconds": 0})["task"])
        self.assertEqual(gc["state"], "ok", gc)
        verify = s.wait_task(s.api("POST", "/datastores/default/verify", {"target": ""})["task"])
        self.assertEqual(verify["state"], "ok", verify)

        # The store's stale limit down to 60 s: a backup of an hour ago is
        # stale, one of now is not.
        s.admin_command("datastore", "set", "default", "--stale-after", "60")
        s.backup_image(502, iso(now - 3600), size_mib=1, seed=11)
        s.backup_image(503, iso(int(time.time())), size_mib=1, seed=12)

        # dedup comes from a background pass (5 s after the last change):
        # wait until the listing is settled, so the page and the API agree.
        deadline = time.time() + 60
        prev = None
        while True:
            cur = figures(s)
            if cur == prev and isinstance(cur.get("dedup"), (int, float)):
                break
            self.assertLess(time.time(), deadline, f"/datastores did not settle: {cur}")
            prev = cur
            time.sleep(2)
        store = cur
        # The setup is what the test means.
        self.assertIsInstance(store["chunks"], int)
        self.assertGreater(store["chunks"], 0)
        self.assertGreater(store["last_gc"]["removed-bytes"], 0, store["last_gc"])
        self.assertGreater(store["dedup"], 1.0, store)  # the two vm/500 backups share chunks
        self.assertEqual(store["last_verify"]["state"], "ok")
        self.assertEqual(store["stale_after"], 60)
        groups = s.api("GET", "/datastores/default/groups")
        api_stale = sorted(g["group"] for g in groups if g["stale"] is True)
        self.assertIn("vm/502", api_stale)
        self.assertNotIn("vm/503", api_stale)

        self.login()
        self.open("dashboard")
        self.view("dashboard")
        row = self.css('tr[data-testid="store-row"][data-store="default"]')
        cells = row.find_elements("css selector", "td")
        texts = [td.text for td in cells]
        after = figures(s)
        self.assertEqual(after, store, "the listing changed while the page loaded")
        self.screenshot("dashboard-figures")

        self.assertEqual(texts[2], str(store["chunks"]))
        self.assertEqual(texts[3], format_bytes(store["chunk_bytes"]))
        self.assertEqual(texts[4], to_fixed(store["dedup"], 2) + "\u00d7")
        gc_time = cells[5].find_element("css selector", "time")
        self.assertEqual(gc_time.get_attribute("datetime"), utc_text(store["last_gc"]["start-time"]))
        self.assertTrue(texts[5].endswith(f' (freed {format_bytes(store["last_gc"]["removed-bytes"])})'), texts[5])
        v_time = cells[6].find_element("css selector", "time")
        self.assertEqual(v_time.get_attribute("datetime"), utc_text(store["last_verify"]["time"]))
        self.assertEqual(cells[6].find_element("css selector", ".state").text, store["last_verify"]["state"])
        self.assertEqual(texts[7], ", ".join(store["roles"]))

        shown = {}
        for li in self.all('[data-testid="stale-groups"] [data-testid="stale-group"]'):
            href = li.find_element("css selector", "a").get_attribute("href")
            q = urllib.parse.parse_qs(href.split("?", 1)[1])
            self.assertEqual(q["store"], ["default"])
            shown[q["group"][0]] = li
        self.assertEqual(sorted(shown), api_stale)
        for g in groups:
            if g["group"] in shown:
                self.assertEqual(shown[g["group"]].find_element("css selector", "time").get_attribute("datetime"),
                                 utc_text(g["last"]))
        self.assertIn("vm/502", shown)
        self.assertNotIn("vm/503", shown)
        # Still fresh when checked (the page was read within the 60 s).
        fresh = next(x for x in s.api("GET", "/datastores/default/groups") if x["group"] == "vm/503")
        self.assertFalse(fresh["stale"])


if __name__ == "__main__":
    cairn_browser.main()
