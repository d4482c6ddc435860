#!/usr/bin/python3
"""Drives the daemon's web UI in headless Chromium (selenium + chromedriver from apt).

Usage: ui_browser.py API_URL MAGNET

Adds MAGNET from the page's form and opens the torrent's detail while it downloads: the
files tab lists two files with checkboxes, unticking the second sends the selection (the
table then says it is selected: `data-selected="0"`); the peers, trackers and pieces tabs
each render. It waits until the row says `seeding`, pauses the torrent from the page, sees
`paused`, resumes it, sees `seeding` again. Every wait is on the page's DOM state, never a
fixed sleep. Prints one JSON line with the states it saw; exits non-zero (with the reason
on stderr) otherwise.
"""
import json
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main():
    url, magnet = sys.argv[1], sys.argv[2]
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    seen = []
    t0 = time.time()
    steps = []

    def step(name):
        steps.append(f"{name} {time.time() - t0:.1f}s")

    def row_state():
        rows = driver.find_elements(By.CSS_SELECTOR, "#torrents tr")
        if not rows:
            return None, None
        try:
            return rows[0].get_attribute("data-state"), rows[0].find_element(By.CSS_SELECTOR, ".pct").text
        except StaleElementReferenceException:
            return None, None

    def wait_for(state, pct=None, limit=60):
        end = time.time() + limit
        while time.time() < end:
            s, p = row_state()
            if s and (not seen or seen[-1] != s):
                seen.append(s)
            if s == state and (pct is None or (p or "").strip() == pct):
                return
            time.sleep(0.1)
        raise SystemExit(f"never saw {state} {pct or ''}; saw {seen}")

    def wait_until(what, f, limit=30):
        end = time.time() + limit
        while time.time() < end:
            try:
                v = f()
                if v:
                    return v
            except (StaleElementReferenceException, WebDriverException):
                pass
            time.sleep(0.1)
        msg = driver.find_element(By.ID, "msg").text
        raise SystemExit(f"never saw {what} (page message: {msg!r})")

    def click(css):
        end = time.time() + 20
        while time.time() < end:
            try:
                driver.find_element(By.CSS_SELECTOR, css).click()
                return
            except (StaleElementReferenceException, WebDriverException):
                time.sleep(0.1)
        raise SystemExit(f"could not click {css}")

    try:
        driver.get(url)
        driver.find_element(By.ID, "magnet").send_keys(magnet)
        driver.find_element(By.ID, "add-button").click()
        # The seeder is slow (512 KiB/s): the file list is there long before the end.
        click("#torrents tr td.name")
        wait_until(
            "two file checkboxes",
            lambda: len(driver.find_elements(By.CSS_SELECTOR, "#files input[type=checkbox]")) == 2,
        )
        wait_until(
            "both files selected",
            lambda: all(b.is_selected() for b in driver.find_elements(By.CSS_SELECTOR, "#files input[type=checkbox]")),
        )
        click("#files input[type=checkbox][data-index='1']")
        selected = wait_until(
            "the selection applied",
            lambda: driver.find_element(By.ID, "files").get_attribute("data-selected") == "0" and "0",
        )
        step("selected")
        tabs = []
        for name in ("peers", "trackers", "pieces", "files"):
            click(f"#tab-{name}")
            wait_until(f"the {name} tab", lambda: driver.find_element(By.ID, "tab").get_attribute("data-tab") == name)
            tabs.append(name)
        step("tabs")
        wait_for("seeding")
        step("seeding")
        click("#torrents tr button.pause")
        wait_for("paused")
        step("paused")
        click("#torrents tr button.resume")
        wait_for("seeding")
        title = driver.title
    finally:
        driver.quit()
    print(json.dumps({"ok": True, "states": seen, "title": title, "selected": selected, "tabs": tabs, "steps": steps}))


if __name__ == "__main__":
    main()
