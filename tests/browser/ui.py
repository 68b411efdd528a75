"""Driving Streamlit widgets from Playwright: wait for reruns, pick options, fill fields."""

from __future__ import annotations

import re

from playwright.sync_api import TimeoutError as PlaywrightTimeout


def goto(page, label: str, heading: str | None = None) -> None:
    page.locator("[data-testid='stSidebarNav']").get_by_role("link", name=label, exact=True) \
        .click()
    page.get_by_role("heading", name=heading or label, exact=True).first.wait_for()
    idle(page)


def idle(page, timeout: float = 120_000) -> None:
    """Streamlit shows a status widget ('Running...') while a script run is in flight."""
    page.wait_for_timeout(250)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def select(page, label: str, option: str | re.Pattern | int) -> str:
    """Pick an option by its text or position; returns the option's text. Retried: a rerun
    that lands while the list is opening re-mounts the widget and closes the list."""
    combo = page.get_by_role("combobox", name=label, exact=True)
    item = (page.get_by_role("option").nth(option) if isinstance(option, int)
            else page.get_by_role("option", name=option).first)
    for attempt in range(8):
        idle(page)
        combo.click()
        try:
            item.wait_for(timeout=4000)
            text = item.inner_text()
            # bounded: under load a list re-rendered by a rerun can keep detaching the option
            # (seen for 60 s in a full-suite run); close it and open it again instead
            item.click(timeout=10_000)
            break
        except PlaywrightTimeout:
            if attempt == 7:
                raise
            page.keyboard.press("Escape")
    idle(page)
    return text


def select_value(page, label: str) -> str:
    return page.get_by_role("combobox", name=label, exact=True).input_value()


def fill(page, label: str, value: str) -> None:
    field = page.get_by_label(label, exact=True)
    field.fill(value)
    field.press("Enter")
    idle(page)


def one_thread(page) -> None:
    """Train on one CPU thread: on a busy 2-core machine two threads are many times slower."""
    page.get_by_text("More settings", exact=True).click()
    fill(page, "CPU threads (0 = auto)", "1")


def click_until(page, button, expect, tries: int = 3, timeout: float = 60_000) -> None:
    """Click `button` until `expect` shows. On a loaded machine a click can land while the
    page is re-rendering and be lost; a second click is sent only when the first started no
    script run (none in flight, nothing to show, the button still enabled), so an action
    never runs twice."""
    for attempt in range(tries):
        idle(page)
        button.click()
        try:
            expect.wait_for(timeout=5_000)
            return
        except PlaywrightTimeout:
            idle(page, timeout)
            if expect.is_visible() or attempt == tries - 1 or not button.is_enabled():
                expect.wait_for(timeout=timeout)
                return
