"""Static files of the web UI: served with the right Content-Type and the
security headers, without a token; no directory listing, no path traversal
(plain or percent-encoded), no symlink out of the folder."""

import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class StaticFilesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = cairn_browser.Server()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def get(self, path, method="GET"):
        return self.server.request(method, path, token="")

    def test_types(self):
        cases = {"/": "text/html", "/index.html": "text/html", "/js/app.js": "text/javascript",
                 "/js/views/content.js": "text/javascript", "/css/cairn.css": "text/css",
                 "/favicon.svg": "image/svg+xml"}
        for path, want in cases.items():
            with self.subTest(path=path):
                r = self.get(path)
                self.assertEqual(r.status, 200, r.body)
                self.assertTrue(r.headers["Content-Type"].startswith(want), r.headers["Content-Type"])
        index = self.get("/").body
        self.assertEqual(index, open(os.path.join(cairn_browser.SOURCE_DIR, "web", "index.html"), "rb").read())

    def test_head(self):
        r = self.get("/js/app.js", method="HEAD")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"")
        self.assertTrue(r.headers["Content-Type"].startswith("text/javascript"))

    def test_security_headers(self):
        for path in ("/", "/js/app.js", "/css/cairn.css"):
            with self.subTest(path=path):
                h = self.get(path).headers
                self.assertEqual(h["Content-Security-Policy"], CSP)
                self.assertEqual(h["X-Content-Type-Options"], "nosniff")
                self.assertEqual(h["Referrer-Policy"], "no-referrer")
                self.assertEqual(h["X-Frame-Options"], "DENY")
        api = self.get("/api/v1/version")
        self.assertEqual(api.status, 200)
        self.assertEqual(api.headers["Cache-Control"], "no-store")
        self.assertEqual(api.headers["Content-Security-Policy"], CSP)

    def test_no_listing_no_traversal(self):
        for path in ("/js/", "/js", "/css", "/views", "/../server/main.cc", "/js/../../README.md",
                     "/%2e%2e/README.md", "/js/%2E%2E/%2e%2e/CMakeLists.txt", "/js/..%2f..%2fREADME.md",
                     "/.hidden.js", "/README.md", "/nothing.js", "/api/v1/nothing"):
            with self.subTest(path=path):
                r = self.get(path)
                self.assertIn(r.status, (400, 401, 404), r.body)
                self.assertNotIn(b"add_subdirectory", r.body)
                self.assertNotIn(b"int main", r.body)

    def test_symlink_out_of_folder_refused(self):
        # A copy of web/ in a temporary folder with a link out of it (the
        # source tree is never written), served by a server of its own.
        tmp = tempfile.mkdtemp(prefix="cairn-web-copy-")
        try:
            web = os.path.join(tmp, "web")
            shutil.copytree(os.path.join(cairn_browser.SOURCE_DIR, "web"), web)
            target = os.path.join(tmp, "secret.js")
            with open(target, "w") as f:
                f.write("secret")
            os.symlink(target, os.path.join(web, "js", "escape.js"))
            server = cairn_browser.Server(web_dir=web)
            try:
                self.assertEqual(server.request("GET", "/js/app.js", token="").status, 200)
                r = server.request("GET", "/js/escape.js", token="")
                self.assertEqual(r.status, 404, r.body)
                self.assertNotIn(b"secret", r.body)
            finally:
                server.stop()
        finally:
            shutil.rmtree(tmp)

if __name__ == "__main__":
    unittest.main(verbosity=2)
