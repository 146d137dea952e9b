"""Shared helpers of the browser tests: the real cairn-server on loopback
with a temporary data folder, a small API client (token auth), real backups
made by the real `cairn` client, and headless Chromium through Selenium.

Run by Debian's /usr/bin/python3 (python3-selenium). Environment:
  CAIRN_BINARY_DIR  the build folder (server/cairn-server, client/cairn)
  CAIRN_SOURCE_DIR  the source folder (web/ is served from there)
A test run exits 77 (CTest: skipped) when chromium or chromedriver is missing.
"""

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

SOURCE_DIR = os.environ.get("CAIRN_SOURCE_DIR",
                            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BINARY_DIR = os.environ.get("CAIRN_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
SCREENSHOT_DIR = os.path.join(BINARY_DIR, "tests", "browser-screenshots")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SKIP = 77


def browser_missing():
    """Why the browser cannot run, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.path.exists(path):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "python3-selenium is not installed (run with /usr/bin/python3)"
    return None


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


class Server:
    """cairn-server run on 127.0.0.1 with a free port and a fresh data folder."""

    def __init__(self, web_dir=None):
        self.tmp = tempfile.mkdtemp(prefix="cairn-browser-")
        if web_dir is None:
            web_dir = os.path.join(SOURCE_DIR, "web")
        self.data = os.path.join(self.tmp, "data")
        os.makedirs(self.data)
        self.log_path = os.path.join(self.tmp, "server.log")
        binary = os.path.join(BINARY_DIR, "server", "cairn-server")
        if not os.path.exists(binary):
            raise RuntimeError(f"{binary} is not built")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--data", self.data, "run", "--listen", "127.0.0.1:0",
             "--web-dir", web_dir],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        out = ""
        while time.time() < deadline:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                out = f.read()
            m = re.search(r"listening on https://127\.0\.0\.1:(\d+)/", out)
            f = re.search(r"fingerprint \(SHA-256\): ([0-9A-F:]{95})", out)
            if m and f:
                self.port = int(m.group(1))
                self.fingerprint = f.group(1)
                break
            if self.proc.poll() is not None:
                raise RuntimeError("cairn-server exited at start:\n" + out)
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError("cairn-server did not start in 30 s:\n" + out)
        with open(os.path.join(self.data, "admin.token")) as f:
            self.admin_token = f.read().strip()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ctx = ssl.create_default_context()
        self.ctx.check_hostname = False
        self.ctx.verify_mode = ssl.CERT_NONE

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def server_log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def admin_command(self, *args):
        """`cairn-server --data DATA ARGS…` (works while the server runs)."""
        r = subprocess.run([os.path.join(BINARY_DIR, "server", "cairn-server"), "--data", self.data, *args],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"cairn-server {' '.join(args)} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    def add_user(self, name, password, store="*", role="Reader"):
        pw_file = os.path.join(self.tmp, name + ".pw")
        with open(pw_file, "w") as f:
            f.write(password + "\n")
        self.admin_command("user", "add", name)
        self.admin_command("user", "passwd", name, "--password-file", pw_file)
        self.admin_command("acl", "set", "--store", store, "--role", role, "--auth", name)

    def request(self, method, path, body=None, token=None, headers=None):
        """One HTTPS request; `token` None means the admin token, "" none."""
        h = dict(headers or {})
        token = self.admin_token if token is None else token
        if token:
            h["Authorization"] = "CairnToken " + token
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def api(self, method, path, body=None, token=None):
        r = self.request(method, "/api/v1" + path, body, token)
        if r.status >= 300:
            raise AssertionError(f"{method} {path}: {r.status} {r.body!r}")
        return json.loads(r.body) if r.body else None

    def wait_task(self, task_id, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            t = self.api("GET", "/tasks/" + urllib.parse.quote(task_id, safe=""))
            if t["state"] != "running":
                return t
            time.sleep(0.2)
        raise AssertionError(f"task {task_id} still running after {timeout} s")

    def backup_image(self, vm_id, backup_time, size_mib=8, seed=1):
        """A real backup: a raw image made by qemu-img, filled with bytes that
        depend on `seed`, sent by `cairn backup image`. Returns the snapshot."""
        img = os.path.join(self.tmp, f"disk-{vm_id}-{seed}.raw")
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", img, f"{size_mib}M"], check=True)
        with open(img, "r+b") as f:
            for i in range(0, size_mib, 2):
                f.seek(i * 1024 * 1024)
                f.write(bytes([(seed * 31 + i) % 251 + 1]) * 65536)
        return self.backup_file(vm_id, backup_time, img)

    def client(self, *args, token=None, timeout=300):
        """The real `cairn ARGS…` against the default store (repo, token and
        fingerprint from the environment, as an operator would set them);
        `token` None means the admin token. Returns the CompletedProcess
        (text); a non-zero exit fails."""
        env = dict(os.environ, CAIRN_REPO=f"{self.url}/default",
                   CAIRN_TOKEN=self.admin_token if token is None else token,
                   CAIRN_FINGERPRINT=self.fingerprint)
        r = subprocess.run([os.path.join(BINARY_DIR, "client", "cairn"), *args],
                           env=env, cwd=self.tmp, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"cairn {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r

    def backup_file(self, vm_id, backup_time, img, token=None):
        """`cairn backup image` of the image file `img` (with `token`, None:
        the admin token). Returns the snapshot."""
        self.client("--output", "json", "backup", "image", "--id", str(vm_id),
                    "--backup-time", backup_time, img, token=token)
        return f"vm/{vm_id}/{backup_time}"

    def create_token(self, auth_id, store="default", role="Backup"):
        """`cairn-server token create USER!NAME` granted `role`; the full
        token (USER!NAME:SECRET)."""
        out = self.admin_command("token", "create", auth_id).strip().splitlines()
        token = next(l for l in out if l.startswith(auth_id + ":"))
        self.admin_command("acl", "set", "--store", store, "--role", role, "--auth", auth_id)
        return token


def make_driver(width=1280, height=800):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--ignore-certificate-errors", f"--window-size={width},{height}",
              "--user-data-dir=" + tempfile.mkdtemp(prefix="cairn-chromium-")):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=ChromeService(executable_path=CHROMEDRIVER), options=opts)


class BrowserTest(unittest.TestCase):
    """A server and a browser per test class; `self.login()` logs in with
    the admin token through the login view."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        try:
            cls.driver = make_driver()
        except Exception:
            cls.server.stop()
            raise
        cls.driver.implicitly_wait(0)
        os.makedirs(SCREENSHOT_DIR, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.server.stop()

    # --- waiting and finding ---
    def wait(self, cond, timeout=20, message=""):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait
        # The views re-render: an element read in `cond` may be replaced meanwhile.
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1,
                             ignored_exceptions=(StaleElementReferenceException,)).until(cond, message)

    def css(self, selector, timeout=20):
        from selenium.webdriver.common.by import By
        return self.wait(lambda d: d.find_element(By.CSS_SELECTOR, selector)
                         if d.find_elements(By.CSS_SELECTOR, selector) else False,
                         timeout, f"no element {selector}")

    def all(self, selector):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def view(self, name, timeout=20):
        """Waits until the main view `name` has rendered."""
        return self.css(f'main[data-view="{name}"]:not([aria-busy])', timeout)

    def open(self, hash_path):
        self.driver.get(self.server.url + "/#/" + hash_path)

    def screenshot(self, name):
        self.driver.save_screenshot(os.path.join(SCREENSHOT_DIR, name + ".png"))

    def login(self):
        self.driver.get(self.server.url + "/")
        main = self.css('main[data-view="login"]:not([aria-busy]), main[data-view="dashboard"]:not([aria-busy])')
        if main.get_attribute("data-view") == "dashboard":
            return  # the browser's session is still valid
        self.css('[data-testid="login-tab-token"]').click()
        self.css('[data-testid="login-token"]').send_keys(self.server.admin_token)
        self.css('[data-testid="login-submit"]').click()
        self.view("dashboard")

    def severe_console_errors(self):
        try:
            logs = self.driver.get_log("browser")
        except Exception:
            return []
        return [l["message"] for l in logs if l.get("level") == "SEVERE"]


def main():
    why = browser_missing()
    if why:
        # CI installs the browser (packaging/install-deps.sh): there a missing
        # one is a failure, not a skip.
        if os.environ.get("CI"):
            print("FAIL: browser tests need Chromium: " + why, file=sys.stderr)
            sys.exit(1)
        print("SKIP: browser tests need Chromium: " + why, file=sys.stderr)
        sys.exit(SKIP)
    unittest.main(verbosity=2)
