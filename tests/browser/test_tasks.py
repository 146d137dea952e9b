"""The tasks view: a verify started from the content view appears in the
list, and its log view shows the verify's log, the same bytes the API
serves; a running verify's log is followed live, then shown whole."""

import os
import signal
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402


class Throttle:
    """Slows a process down like cpulimit: SIGSTOP/SIGCONT in a cycle, so it
    runs `run_ms` of every `run_ms + stop_ms`. A verify of tens of MiB takes
    a few hundred ms here (SHA-256 in hardware); throttled, it runs for
    seconds whatever the machine, long enough to watch it running."""

    def __init__(self, pid, run_ms=15, stop_ms=185):
        self.pid, self.run, self.stop_s = pid, run_ms / 1000, stop_ms / 1000
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        try:
            while not self.done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                self.done.wait(self.stop_s)
                os.kill(self.pid, signal.SIGCONT)
                self.done.wait(self.run)
        finally:
            os.kill(self.pid, signal.SIGCONT)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        os.kill(self.pid, signal.SIGCONT)


# What the log view shows, read at one instant.
SHOWN = """
const main = document.querySelector('main[data-view="tasks"]');
const log = document.querySelector('[data-testid="task-log"]');
const badge = document.querySelector('main [data-testid="task-state"]');
const status = document.querySelector('[data-testid="log-status"]');
return main && log ? {state: main.getAttribute('data-log-state'), badge: badge ? badge.textContent : null,
                      log: log.textContent, status: status ? status.textContent : null} : null;
"""


class TasksTest(cairn_browser.BrowserTest):
    def test_verify_log_followed_live(self):
        """A verify of several snapshots, started with the content view's
        Verify group button: the log view shows its first lines while the
        task runs (and says so), keeps following, and ends with the whole log
        and the state ok."""
        for i in range(3):
            img = os.path.join(self.server.tmp, f"big-{i}.raw")
            with open(img, "wb") as f:
                f.write(os.urandom(32 << 20))
            self.server.backup_file(77, f"2026-06-0{i + 1}T08:00:00Z", img)
        self.login()
        self.open("content?store=default&group=" + urllib.parse.quote("vm/77", safe=""))
        self.view("content")
        button = self.css('[data-testid="verify-group"]')
        running = None
        with Throttle(self.server.proc.pid):
            button.click()
            main = self.css('main[data-view="tasks"][data-task]', timeout=60)
            task_id = main.get_attribute("data-task")

            def seen_running(d):
                shown = d.execute_script(SHOWN)
                return shown if shown and shown["state"] == "running" and shown["log"].strip() else False
            running = self.wait(seen_running, timeout=60, message="the running task's log with a line")
            self.screenshot("task-log-running")
            # The task really was running then (the server says so still).
            t = self.server.api("GET", "/tasks/" + urllib.parse.quote(task_id, safe=""))
            self.assertEqual(t["state"], "running", "verify ended before it was seen running")
        self.assertEqual(running["badge"], "running")
        self.assertIn("Following", running["status"])
        self.assertIn("TASK started: verify", running["log"])
        self.assertNotIn("TASK ok", running["log"])

        self.css('main[data-view="tasks"][data-log-state="ok"]', timeout=60)
        shown = self.driver.execute_script(SHOWN)
        r = self.server.request("GET", "/api/v1/tasks/" + urllib.parse.quote(task_id, safe="") + "/log")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers["X-Task-State"], "ok")
        whole = r.body.decode()
        self.assertEqual(shown["log"], whole)  # the same bytes: nothing lost or doubled while following
        self.assertTrue(whole.startswith(running["log"]))
        self.assertIn("verifying 3 snapshot(s) of vm/77", whole)
        self.assertIn("3 ok, 0 failed", whole)
        self.assertIn("TASK ok", whole)
        self.assertEqual(shown["badge"], "ok")
        self.assertEqual(shown["status"], "Finished: ok.")
        self.screenshot("task-log-followed")

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
