"""The tasks view: a verify started from the content view appears in the
list, and its log view shows the verify's log, the same bytes the API
serves."""

import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class TasksTest(cairn_browser.BrowserTest):
    def test_verify_task_log(self):
        snap = self.server.backup_image(55, "2026-06-01T12:00:00Z")
        self.login()
        self.open("content?store=default&group=" + urllib.parse.quote("vm/55", safe=""))
        self.view("content")
        self.css(f'tr[data-snapshot="{snap}"] [data-testid="verify-snapshot"]').click()
        # The UI goes to the task's log and follows it until it ends.
        main = self.css('main[data-view="tasks"][data-task]')
        task_id = main.get_attribute("data-task")
        self.css('main[data-log-state="ok"]', timeout=60)
        log = self.css('[data-testid="task-log"]').text
        r = self.server.request("GET", "/api/v1/tasks/" + urllib.parse.quote(task_id, safe="") + "/log")
        self.assertEqual(r.status, 200)
        self.assertEqual(log.strip(), r.body.decode().strip())
        self.assertIn(snap, log)
        self.screenshot("task-log")
        # The list shows it; the "failed" filter hides it.
        self.open("tasks")
        self.view("tasks")
        row = self.css(f'tr[data-task="{task_id}"]')
        self.assertEqual(row.get_attribute("data-state"), "ok")
        self.assertIn("verify", row.text)
        self.open("tasks?filter=failed")
        self.view("tasks")
        self.assertEqual(self.all(f'tr[data-task="{task_id}"]'), [])
        # And the snapshot shows it verified.
        self.open("content?store=default&group=" + urllib.parse.quote("vm/55", safe=""))
        self.view("content")
        state = self.css(f'tr[data-snapshot="{snap}"] [data-testid="verify-state"]')
        self.assertEqual(state.text, "ok")


if __name__ == "__main__":
    cairn_browser.main()
