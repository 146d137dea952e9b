"""A user with role Backup on the datastore, logged in with a password: the
content view lists only the groups it owns (made by its token), offers
neither delete, protect, prune nor GC, and notes only on its own snapshots.
Writes with the session cookie need the session's CSRF token: a fetch from
the page without X-CSRF-Token is refused (403) and changes nothing; with it,
the same request is allowed on the user's own group and still refused on
admin's."""

import json
import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402

PUT_NOTES = """
const [snapshot, notes, csrf, done] = arguments;
const headers = {'Content-Type': 'application/json'};
if (csrf) headers['X-CSRF-Token'] = csrf;
fetch('/api/v1/datastores/default/snapshots/notes?snapshot=' + encodeURIComponent(snapshot),
      {method: 'PUT', credentials: 'same-origin', headers, body: JSON.stringify({notes})})
  .then(async (r) => done({status: r.status, body: await r.text()}),
        (e) => done({status: -1, body: String(e)}));
"""

GET_CSRF = """
const done = arguments[arguments.length - 1];
fetch('/api/v1/session', {credentials: 'same-origin'})
  .then(async (r) => done({status: r.status, body: await r.text()}),
        (e) => done({status: -1, body: String(e)}));
"""


class RolesTest(cairn_browser.BrowserTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.server
        s.add_user("bob", "bob's long password", store="default", role="Backup")
        cls.bob_token = s.create_token("bob!bk", role="Backup")
        cls.other = [s.backup_image(401, "2026-08-01T00:00:00Z", size_mib=2, seed=3),
                     s.backup_image(402, "2026-08-01T00:00:00Z", size_mib=2, seed=4)]
        # backup_image uses the admin token; bob's group is made with bob's token.
        cls.own = []
        for i, t in enumerate(("2026-08-01T00:00:00Z", "2026-08-02T00:00:00Z")):
            img = os.path.join(s.tmp, f"bob-{i}.raw")
            with open(img, "wb") as f:
                f.write(bytes([i + 7]) * (1 << 20) + os.urandom(1 << 20))
            cls.own.append(s.backup_file(301, t, img, token=cls.bob_token))

    def login_bob(self):
        self.driver.get(self.server.url + "/")
        main = self.css('main[data-view="login"]:not([aria-busy]), main[data-view="dashboard"]:not([aria-busy])')
        if main.get_attribute("data-view") == "dashboard":
            return
        self.css('[data-testid="login-tab-password"]').click()
        self.css('[data-testid="login-user"]').send_keys("bob")
        self.css('[data-testid="login-password"]').send_keys("bob's long password")
        self.css('[data-testid="login-submit"]').click()
        self.view("dashboard")
        self.assertEqual(self.css('[data-testid="who"]').text, "bob")

    def setUp(self):
        self.login_bob()

    def notes_of(self, snapshot):
        group = snapshot.rsplit("/", 1)[0]
        listed = self.server.api("GET", "/datastores/default/snapshots?group=" + urllib.parse.quote(group, safe=""))
        return next(s for s in listed if s["snapshot"] == snapshot).get("notes")

    def test_1_owner_and_roles(self):
        # The setup is what the test means: bob's token owns vm/301, admin the others.
        groups = {g["group"]: g["owner"] for g in self.server.api("GET", "/datastores/default/groups")}
        self.assertEqual(groups, {"vm/301": "bob!bk", "vm/401": "admin!default", "vm/402": "admin!default"})
        roles = {s["name"]: s.get("roles") for s in
                 self.driver.execute_async_script(
                     "const d = arguments[0]; fetch('/api/v1/datastores', {credentials: 'same-origin'})"
                     ".then((r) => r.json()).then(d, (e) => d(String(e)));")}
        self.assertEqual(roles, {"default": ["Backup"]})

    def test_2_content_shows_only_own_groups_and_no_admin_actions(self):
        self.open("content?store=default")
        self.view("content")
        self.css('[data-testid="groups-section"]')
        rows = [r.get_attribute("data-group") for r in self.all('[data-testid="group-row"]')]
        self.assertEqual(rows, ["vm/301"])
        self.assertEqual(self.all('[data-testid="run-gc"]'), [])
        self.assertEqual(self.all('[data-testid="verify-store"]'), [])
        self.screenshot("content-as-backup-groups")

        self.css('tr[data-group="vm/301"] [data-testid="group-link"]').click()
        self.css('[data-testid="snapshots-section"][data-group="vm/301"]')
        self.view("content")
        snaps = [r.get_attribute("data-snapshot") for r in self.all('[data-testid="snapshot-row"]')]
        self.assertEqual(snaps, [self.own[1], self.own[0]])
        for snap in self.own:
            row = self.css(f'tr[data-snapshot="{snap}"]')
            buttons = [b.get_attribute("data-testid")
                       for b in row.find_elements("css selector", "td.actions button")]
            self.assertEqual(buttons, ["verify-snapshot", "edit-notes"], snap)
        for testid in ("delete-snapshot", "protect", "prune-group", "run-gc"):
            self.assertEqual(self.all(f'[data-testid="{testid}"]'), [], testid)
        self.assertEqual(len(self.all('[data-testid="verify-group"]')), 1)
        self.screenshot("content-as-backup-snapshots")

        # Admin's group by URL: the server refuses it, the page lists nothing of it.
        self.open("content?store=default&group=vm%2F401")
        self.view("content")
        self.assertEqual(self.all('[data-testid="snapshot-row"]'), [])
        self.assertNotIn(self.other[0], self.css("main").text)

    def test_3_csrf_on_notes(self):
        self.open("content?store=default")
        self.view("content")
        own, other = self.own[0], self.other[0]
        self.server.api("PUT", "/datastores/default/snapshots/notes?snapshot=" + urllib.parse.quote(own, safe=""),
                        {"notes": "before"})

        # Without the header: 403, nothing changed.
        r = self.driver.execute_async_script(PUT_NOTES, own, "x", None)
        self.assertEqual(r["status"], 403, r)
        self.assertIn("CSRF", json.loads(r["body"])["error"])
        self.assertEqual(self.notes_of(own), "before")
        # A wrong token is no better.
        r = self.driver.execute_async_script(PUT_NOTES, own, "x", "0" * 64)
        self.assertEqual(r["status"], 403, r)
        self.assertEqual(self.notes_of(own), "before")

        # With the session's token (read by the page from GET /session): allowed.
        s = self.driver.execute_async_script(GET_CSRF)
        self.assertEqual(s["status"], 200, s)
        session = json.loads(s["body"])
        self.assertEqual(session["user"], "bob")
        csrf = session["csrf"]
        self.assertRegex(csrf, r"^[0-9a-f]{64}$")
        r = self.driver.execute_async_script(PUT_NOTES, own, "x", csrf)
        self.assertEqual(r["status"], 200, r)
        self.assertEqual(json.loads(r["body"])["notes"], "x")
        self.assertEqual(self.notes_of(own), "x")

        # The header does not lift the role: admin's group stays refused.
        before = self.notes_of(other)
        r = self.driver.execute_async_script(PUT_NOTES, other, "x", csrf)
        self.assertEqual(r["status"], 403, r)
        self.assertEqual(self.notes_of(other), before)

        # The UI shows the new notes.
        self.open("content?store=default&group=vm%2F301")
        self.view("content")
        cell = self.css(f'tr[data-snapshot="{own}"] [data-testid="notes"]')
        self.assertEqual(cell.text, "x")
        self.screenshot("content-as-backup-notes")


if __name__ == "__main__":
    cairn_browser.main()
