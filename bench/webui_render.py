#!/usr/bin/python3
"""Time to a rendered, filterable groups view in headless Chromium (issue 15).

Run by bench/run_listing.sh with BROWSER=1 against its server on the large
datastore; by hand:

    /usr/bin/python3 bench/webui_render.py https://127.0.0.1:PORT TOKEN [REPS] [GROUPS]

Logs in with the API token through the login view, then REPS times (default
5) loads `#/content?store=default` in the same tab and reads, with the
Performance API, the time from the navigation's start to the moment the
groups table holds GROUPS rows (default 600) and the search box is there and
the view is no longer busy; then types a filter into the search box and
times until the table shows only the matching rows. Prints every run and the
medians; the first load is a cold server and a cold browser cache.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "browser"))
import cairn_browser  # noqa: E402

# Resolves with performance.now() once the groups view is complete.
READY_JS = """
const want = arguments[0], done = arguments[arguments.length - 1];
function check() {
  const main = document.querySelector('main[data-view="content"]');
  const ok = main && !main.hasAttribute('aria-busy') &&
      document.querySelector('[data-testid="group-search"]') &&
      document.querySelectorAll('[data-testid="group-row"]').length === want;
  if (ok) done(performance.now()); else requestAnimationFrame(check);
}
check();
"""

# Types `text` into the search box; resolves with the ms until the table
# shows `want` rows.
FILTER_JS = """
const text = arguments[0], want = arguments[1], done = arguments[arguments.length - 1];
const box = document.querySelector('[data-testid="group-search"]');
const t0 = performance.now();
box.value = text;
box.dispatchEvent(new Event('input', { bubbles: true }));
function check() {
  if (document.querySelectorAll('[data-testid="group-row"]').length === want) {
    requestAnimationFrame(() => done(performance.now() - t0));
  } else {
    requestAnimationFrame(check);
  }
}
check();
"""


def main():
    url, token = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    groups = int(sys.argv[4]) if len(sys.argv) > 4 else 600
    why = cairn_browser.browser_missing()
    if why:
        sys.exit("webui_render: " + why)
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = cairn_browser.make_driver()
    driver.set_script_timeout(120)
    try:
        driver.get(url + "/")
        wait = WebDriverWait(driver, 60, poll_frequency=0.05)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="login-tab-token"]'))
        driver.find_element(By.CSS_SELECTOR, '[data-testid="login-tab-token"]').click()
        driver.find_element(By.CSS_SELECTOR, '[data-testid="login-token"]').send_keys(token)
        driver.find_element(By.CSS_SELECTOR, '[data-testid="login-submit"]').click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, 'main[data-view="dashboard"]'))
        renders, filters = [], []
        for i in range(reps + 1):
            # A new navigation each time (not just a hash change): the whole
            # page loads, as when an admin opens the URL.
            driver.get("about:blank")
            driver.get(url + "/#/content?store=default")
            ms = driver.execute_async_script(READY_JS, groups)
            # Groups whose id holds "vm/40": vm/40 and vm/400..vm/409 in the
            # generated store (ids are 0..GROUPS-1); counted from the page.
            want = sum(1 for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="group-row"]')
                       if "vm/40" in (e.get_attribute("data-group") or ""))
            fms = driver.execute_async_script(FILTER_JS, "vm/40", want)
            label = "first (cold)" if i == 0 else f"run {i}"
            print(f"  {label}: rendered and filterable after {ms:.0f} ms; "
                  f"filter 'vm/40' -> {want} rows in {fms:.0f} ms")
            if i > 0:
                renders.append(ms)
                filters.append(fms)
        print(f"median of {reps}: groups view rendered and filterable in "
              f"{statistics.median(renders):.0f} ms, filter in {statistics.median(filters):.0f} ms")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
