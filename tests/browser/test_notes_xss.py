"""Notes holding markup are shown as text: no element is made from them and
no script runs (the notes are set through the API with the admin token)."""

import os
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cairn_browser  # noqa: E402

NOTES = ('<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
         '<b data-testid="injected">bold</b>\nsecond line')


class NotesXssTest(cairn_browser.BrowserTest):
    def test_markup_in_notes_is_text(self):
        snap = self.server.backup_image(7, "2026-05-01T00:00:00Z")
        self.server.api("PUT", "/datastores/default/snapshots/notes?snapshot=" +
                        urllib.parse.quote(snap, safe=""), {"notes": NOTES})
        self.login()
        self.open("content?store=default&group=" + urllib.parse.quote("vm/7", safe=""))
        self.view("content")
        cell = self.css(f'tr[data-snapshot="{snap}"] [data-testid="notes"]')
        # The first line, exactly as typed, as text.
        self.assertEqual(cell.text, NOTES.split("\n")[0])
        self.assertEqual(cell.get_attribute("title"), NOTES)
        self.assertEqual(self.all('[data-testid="injected"]'), [])
        self.assertEqual(self.all("main img"), [])
        self.assertEqual(self.all("main script"), [])
        # Also in the notes editor.
        self.css(f'tr[data-snapshot="{snap}"] [data-testid="edit-notes"]').click()
        area = self.css('[data-testid="notes-input"]')
        self.assertEqual(area.get_property("value"), NOTES)
        self.screenshot("notes-editor")
        # Group search over notes finds it by text, markup included.
        self.open("content?store=default")
        self.view("content")
        box = self.css('[data-testid="group-search"]')
        box.send_keys("onerror")
        self.wait(lambda d: len(self.all('[data-testid="group-row"]')) == 1)
        self.screenshot("notes-markup")
        self.assertIsNone(self.driver.execute_script("return window.__pwned === undefined ? null : window.__pwned"))


if __name__ == "__main__":
    cairn_browser.main()
