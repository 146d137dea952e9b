"""The jobs view: a job added on the command line is listed with its
schedule and next run; with the job API (POST/PUT/DELETE /jobs and
/calendar/next) the dialog previews the next five runs while typing, adds,
edits and removes a job."""

import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class JobsTest(cairn_browser.BrowserTest):
    def test_list(self):
        self.server.admin_command("job", "add", "nightly-verify", "--kind", "verify", "--store", "default",
                                  "--schedule", "sat 02:00")
        self.login()
        self.open("jobs")
        self.view("jobs")
        row = self.css('tr[data-job="nightly-verify"]')
        self.assertIn("sat 02:00", row.text)
        self.assertIn("verify", row.text)
        nxt = self.server.api("GET", "/jobs")[0]["next-run"]
        times = row.find_elements("css selector", "time")
        self.assertTrue(any(t.get_attribute("title").startswith(utc_text(nxt)) for t in times))

    def test_add_edit_remove_with_preview(self):
        if self.server.request("GET", "/api/v1/calendar/next?schedule=daily").status == 404:
            self.skipTest("this server has no job API (POST /jobs, GET /calendar/next: branch api15)")
        self.login()
        self.open("jobs")
        self.view("jobs")
        self.css('[data-testid="job-add"]').click()
        self.css('[data-testid="job-id"]').send_keys("ui-gc")
        self.css('[data-testid="job-kind"]').send_keys("gc")
        sched = self.css('[data-testid="job-schedule"]')
        sched.clear()
        sched.send_keys("mon..fri 22:30")
        # The preview of the dialog's first schedule ("daily") may still be
        # shown for the debounce time: wait for the one typed.
        self.wait_preview("mon..fri 22:30")
        sched.send_keys(" nonsense")
        self.css('[data-testid="schedule-error"]')
        sched.clear()
        sched.send_keys("daily")
        # Click Save only once the preview is the typed one: a modal dialog is
        # centred, so while its preview changes size the Save button moves and
        # a click can land beside it (under load the row then never came).
        self.wait_preview("daily")
        self.screenshot("job-dialog")
        self.css('[data-testid="job-save"]').click()
        self.wait(lambda d: not self.all('[data-testid="job-dialog"]'), message="the job dialog stayed open")
        self.css('tr[data-job="ui-gc"]')
        job = [j for j in self.server.api("GET", "/jobs") if j["id"] == "ui-gc"][0]
        self.assertEqual((job["kind"], job["schedule"]), ("gc", "daily"))
        self.css('tr[data-job="ui-gc"] [data-testid="job-edit"]').click()
        sched = self.css('[data-testid="job-schedule"]')
        sched.clear()
        sched.send_keys("hourly")
        self.css('[data-testid="job-save"]').click()
        self.wait(lambda d: "hourly" in self.css('tr[data-job="ui-gc"]').text)
        self.css('tr[data-job="ui-gc"] [data-testid="job-remove"]').click()
        self.css('[data-testid="confirm-ok"]').click()
        self.wait(lambda d: not self.all('tr[data-job="ui-gc"]'))
        self.assertEqual([j for j in self.server.api("GET", "/jobs") if j["id"] == "ui-gc"], [])


    def wait_preview(self, schedule):
        """Waits until the dialog previews the server's next five runs of `schedule`."""
        want = [utc_text(t) for t in self.server.api(
            "GET", "/calendar/next?" + urllib.parse.urlencode({"schedule": schedule, "count": 5}))["next"]]
        shown = lambda: [t.get_attribute("datetime") for t in self.all('[data-testid="next-runs"] time')]
        try:
            self.wait(lambda d: shown() == want, timeout=10)
        except Exception:
            self.assertEqual(shown(), want)


def utc_text(t):
    import datetime
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    cairn_browser.main()
