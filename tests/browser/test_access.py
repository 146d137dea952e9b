"""The access view (Admin on "*"): the users and tokens it lists are the
API's; a token made in the page shows its secret once — the secret works,
and after leaving the view and coming back it is nowhere in the page; a
role set in the permissions form is in GET /access/acl. A user with only
Reader (password login) gets no Access link, and #/access refuses it
instead of listing anything."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class AccessTest(cairn_browser.BrowserTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.server
        s.add_user("rita", "rita's long password", store="*", role="Reader")
        s.add_user("otto", "otto's long password", store="default", role="Backup")
        cls.otto_token = s.create_token("otto!bk", role="Backup")

    def logout(self):
        if self.all('[data-testid="logout"]') and self.css('[data-testid="logout"]').is_displayed():
            self.css('[data-testid="logout"]').click()
            self.view("login")

    def rows(self, testid, attr):
        return [r.get_attribute(attr) for r in self.all(f'[data-testid="{testid}"]')]

    def acl_rows(self):
        return [[td.text for td in r.find_elements("css selector", "td")]
                for r in self.all('[data-testid="acl-table"] [data-testid="acl-row"]')]

    def api_acl(self):
        return [[a["store"], a["auth_id"], a["role"]] for a in self.server.api("GET", "/access/acl")]

    def test_1_admin_lists_creates_token_and_sets_role(self):
        s = self.server
        self.logout()
        self.login()
        self.assertTrue(self.css('[data-testid="nav-access"]').is_displayed())
        self.css('[data-testid="nav-access"]').click()
        self.view("access")
        users = [u["user"] for u in s.api("GET", "/access/users")]
        tokens = [t["auth_id"] for t in s.api("GET", "/access/tokens")]
        self.assertTrue({"admin", "rita", "otto"} <= set(users), users)
        self.assertTrue({"admin!default", "otto!bk"} <= set(tokens), tokens)
        self.assertEqual(self.rows("user-row", "data-user"), users)
        self.assertEqual([r.text.split("\n")[0].split(" ")[0] for r in self.all('[data-testid="user-row"] td:first-child')],
                         users)
        self.assertEqual(self.rows("token-row", "data-token"), tokens)
        self.assertEqual([r.text for r in self.all('[data-testid="token-row"] td:first-child')], tokens)
        self.assertEqual(self.acl_rows(), self.api_acl())
        self.screenshot("access-admin")

        # A token made in the page: its secret is shown once, and it works.
        self.css('[data-testid="token-id"]').send_keys("otto!ui")
        self.css('[data-testid="add-token"] button[type="submit"]').click()
        dlg = self.css('dialog[data-testid="token-secret-dialog"]')
        full = dlg.find_element("css selector", '[data-testid="token-secret"]').text
        auth_id, _, secret = full.partition(":")
        self.assertEqual(auth_id, "otto!ui")
        self.assertGreaterEqual(len(secret), 16, full)
        self.screenshot("access-token-secret")
        r = s.request("GET", "/api/v1/status", token=full)
        self.assertEqual(r.status, 200, r.body)
        r = s.request("GET", "/api/v1/status", token="otto!ui:" + "0" * len(secret))
        self.assertEqual(r.status, 401, r.body)
        self.assertIn("otto!ui", [t["auth_id"] for t in s.api("GET", "/access/tokens")])
        self.assertNotIn(secret.encode(), s.request("GET", "/api/v1/access/tokens").body)
        dlg.find_element("css selector", "button").click()
        self.wait(lambda d: not self.all('dialog[data-testid="token-secret-dialog"]'), message="dialog stays")
        self.view("access")
        self.css('[data-testid="token-row"][data-token="otto!ui"]')

        # Away and back: the secret is nowhere in the page.
        self.css('[data-testid="nav-dashboard"]').click()
        self.view("dashboard")
        self.css('[data-testid="nav-access"]').click()
        self.view("access")
        self.css('[data-testid="token-row"][data-token="otto!ui"]')
        self.assertEqual(self.rows("token-row", "data-token"), [t["auth_id"] for t in s.api("GET", "/access/tokens")])
        self.assertNotIn(secret, self.driver.page_source)
        self.assertNotIn(secret, self.driver.execute_script(
            "return document.documentElement.outerHTML + document.body.innerText + "
            "[...document.querySelectorAll('input, textarea')].map((e) => e.value).join(' ')"))
        self.assertEqual(self.all('[data-testid="token-secret"]'), [])

        # A role set in the form is the API's ACL entry, and the table shows it.
        self.assertNotIn(["default", "otto!ui", "Audit"], self.api_acl())
        from selenium.webdriver.support.ui import Select
        Select(self.css('[data-testid="acl-store"]')).select_by_value("default")
        self.css('[data-testid="acl-auth"]').send_keys("otto!ui")
        Select(self.css('[data-testid="acl-role"]')).select_by_value("Audit")
        self.css('[data-testid="set-acl"] button[type="submit"]').click()
        self.wait(lambda d: ["default", "otto!ui", "Audit"] in self.acl_rows(), message="ACL row not shown")
        self.view("access")
        self.assertIn(["default", "otto!ui", "Audit"], self.api_acl())
        self.assertEqual(self.acl_rows(), self.api_acl())
        # The new token holds that role: it may read the GC status (Audit).
        r = s.request("GET", "/api/v1/datastores", token=full)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual([x.get("roles") for x in r.json()], [["Audit"]])
        self.screenshot("access-acl-set")

    def test_2_reader_gets_no_access(self):
        s = self.server
        self.logout()
        self.driver.get(s.url + "/")
        self.view("login")
        self.css('[data-testid="login-tab-password"]').click()
        self.css('[data-testid="login-user"]').send_keys("rita")
        self.css('[data-testid="login-password"]').send_keys("rita's long password")
        self.css('[data-testid="login-submit"]').click()
        self.view("dashboard")
        self.assertEqual(self.css('[data-testid="who"]').text, "rita")
        # The server refuses rita's session the access lists (so the test
        # means what it says).
        r = self.driver.execute_async_script(
            "const d = arguments[0]; fetch('/api/v1/access/users', {credentials: 'same-origin'})"
            ".then(async (r) => d({status: r.status, body: await r.text()}), (e) => d({status: -1, body: String(e)}));")
        self.assertEqual(r["status"], 403, r)
        link = self.css('[data-testid="nav-access"]')
        self.assertFalse(link.is_displayed())
        self.assertTrue(self.css('[data-testid="nav-dashboard"]').is_displayed())

        self.open("access")
        self.driver.refresh()
        main = self.view("access")
        err = self.css('[data-testid="view-error"]')
        self.assertTrue(err.is_displayed())
        self.assertEqual(err.get_attribute("role"), "alert")
        for testid in ("users", "tokens", "acl", "user-row", "token-row", "acl-row", "add-token", "set-acl"):
            self.assertEqual(self.all(f'[data-testid="{testid}"]'), [], testid)
        text = main.text
        for secretish in ("otto!bk", "admin!default", "otto"):
            self.assertNotIn(secretish, text)
        self.assertFalse(self.css('[data-testid="nav-access"]').is_displayed())
        self.screenshot("access-as-reader")


if __name__ == "__main__":
    cairn_browser.main()
