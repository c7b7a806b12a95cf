"""The review page in a real browser (Debian's Chromium, headless, driven by Selenium) against
the real app on loopback, over a partition published by the real tagger.

Reviewers are told apart by the sign-in proxy's header, which each browser sends on every
request (as an SSO proxy adds it). Measured, not asserted: answers per minute by keyboard.
Set REVIEW_SCREENSHOT=docs/review-page.png to keep the screenshot for the documentation site
(`make screenshots` does).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from review_support import (
    DAY,
    ESCAPE_ID,
    HOSTILE_ID,
    HTML_ID,
    app_env,
    chromium,
    filled_store,
    queued,
    running,
    tagged_catalogue,
)

from tagging.catalogue.answers import UNUSABLE
from tagging.labels import CATEGORY_SLUGS
from tagging.review.store import ReviewStore

WAIT_S = 30


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, fmnist, champion_registry):
    return tagged_catalogue(tmp_path_factory.mktemp("review-browser"), fmnist,
                            champion_registry)


@pytest.fixture
def browsers(tmp_path):
    """browser(name, javascript=True) -> a Chromium signed in as `name`; all quit at the end."""
    opened: list[Any] = []

    def browser(name: str | None, javascript: bool = True) -> Any:
        driver = chromium(name, tmp_path / f"profile-{name}-{len(opened)}",
                          javascript=javascript)
        opened.append(driver)
        return driver

    yield browser
    for driver in opened:
        driver.quit()


# ---------------------------------------------------------------- driving the page


def by_id(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def shown(driver: Any) -> str | None:
    """The product on screen (None: the queue is empty for this reviewer)."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, "product-id")
    return found[0].text if found else None


def progress(driver: Any) -> dict[str, int]:
    return {key: int(by_id(driver, key).text) for key in ("left", "mine", "everyone")}


def act(driver: Any, action: Any) -> None:
    """Do something that posts a form, and wait for the next page: a new document (the old
    one's marker gone), fully loaded. Not Selenium's staleness_of: asking Chromium about an
    element of a document being replaced can fail with "Node with given id does not belong
    to the document" instead of "stale element", which staleness_of does not expect."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script("window.reviewTestOldPage = true")
    action()
    WebDriverWait(driver, WAIT_S, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script(  # mid-navigation the script itself may fail: try again
            "return !window.reviewTestOldPage && document.readyState === 'complete'"))


def press(driver: Any, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    act(driver, lambda: ActionChains(driver).send_keys(key).perform())


def click(driver: Any, selector: str) -> None:
    from selenium.webdriver.common.by import By

    act(driver, lambda: driver.find_element(By.CSS_SELECTOR, selector).click())


def photo_unavailable(driver: Any) -> bool:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(lambda d: by_id(d, "photo-note").is_displayed())
    return not by_id(driver, "photo").is_displayed()


def console_problems(driver: Any) -> list[str]:
    """Console messages other than the photos the app refuses on purpose."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]


# ---------------------------------------------------------------- two reviewers at once


def test_two_reviewers_at_once_each_photo_answered_once(catalogue, tmp_path, browsers):
    """One reviewer by keyboard, one by mouse, at the same time, until the queue is empty:
    no photo is shown to both, every photo gets exactly one answer."""
    db = tmp_path / "review.db"
    store = filled_store(db, catalogue, audit_share=1.0)  # every row with a photo is asked
    asked = set(queued(store))
    with running(tmp_path, app_env(catalogue, db)) as app:
        alice, bob = browsers("alice"), browsers("bob")
        seen: dict[str, list[str]] = {"alice": [], "bob": []}
        checks: dict[str, Any] = {}
        timing: dict[str, float] = {}
        errors: list[BaseException] = []

        def keyboard() -> None:
            alice.get(app.url)
            save_screenshot(alice, tmp_path)
            start = time.monotonic()
            while (product := shown(alice)) is not None:
                seen["alice"].append(product)
                note(alice, product, checks)
                press(alice, "u" if product in (ESCAPE_ID, HTML_ID) else "1")
            timing["alice"] = time.monotonic() - start

        def mouse() -> None:
            bob.get(app.url)
            while (product := shown(bob)) is not None:
                seen["bob"].append(product)
                note(bob, product, checks)
                click(bob, "button.unusable" if product in (ESCAPE_ID, HTML_ID)
                      else "button.other")

        def guarded(work: Any) -> None:
            try:
                work()
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=guarded, args=(w,)) for w in (keyboard, mouse)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        assert not errors, [f"{e!r}: {e}" for e in errors]
        problems = console_problems(alice) + console_problems(bob)
        alice.refresh()  # both done: nothing left, and the progress line agrees
        final = progress(alice)

    both = set(seen["alice"]) & set(seen["bob"])
    assert not both, f"shown to both: {both}"
    assert Counter(seen["alice"] + seen["bob"]) == Counter(asked)  # each once, all of them
    answers = ReviewStore(str(db)).answers(DAY)
    assert Counter(a["product_id"] for a in answers) == Counter(asked)
    for answer in answers:
        assert answer["product_id"] in seen[answer["reviewer"]]
    assert {a["answer"] for a in answers if a["product_id"] in (ESCAPE_ID, HTML_ID)} == {
        UNUSABLE}
    assert seen["alice"] and seen["bob"]
    # the hostile id was shown as text: no script ran, no markup was parsed
    assert checks[HOSTILE_ID]["text"] == HOSTILE_ID
    assert checks[HOSTILE_ID]["title"] != "pwned" and not checks[HOSTILE_ID]["alert"]
    assert checks[ESCAPE_ID] and checks[HTML_ID]  # "photo cannot be shown" instead
    assert final == {"left": 0, "mine": len(seen["alice"]), "everyone": len(asked)}
    assert not problems, problems  # no CSP violation, no script error
    rate = len(seen["alice"]) / timing["alice"] * 60
    print(f"\nkeyboard: {len(seen['alice'])} answers in {timing['alice']:.1f} s = "
          f"{rate:.0f} answers/min (2 reviewers at once; mouse: {len(seen['bob'])})")


def note(driver: Any, product: str, checks: dict[str, Any]) -> None:
    """What the hostile rows look like on the page."""
    from selenium.common.exceptions import NoAlertPresentException

    if product == HOSTILE_ID:
        try:
            alert = driver.switch_to.alert is not None
        except NoAlertPresentException:
            alert = False
        checks[product] = {"text": by_id(driver, "product-id").text, "title": driver.title,
                           "alert": alert}
    elif product in (ESCAPE_ID, HTML_ID):
        checks[product] = photo_unavailable(driver)


def save_screenshot(driver: Any, tmp_path: Path) -> None:
    """The page as a reviewer first sees it (REVIEW_SCREENSHOT: where to keep a copy)."""
    path = tmp_path / "review-page.png"
    driver.save_screenshot(str(path))
    if os.environ.get("REVIEW_SCREENSHOT"):
        shutil.copyfile(path, os.environ["REVIEW_SCREENSHOT"])


# ---------------------------------------------------------------- one reviewer's keys


def test_skip_unusable_undo_and_an_expired_claim(catalogue, tmp_path, browsers):
    from selenium.webdriver.common.keys import Keys

    db = tmp_path / "review.db"
    filled_store(db, catalogue).close()
    lease = 10.0  # long enough for a loaded machine to start a browser within it
    with running(tmp_path, app_env(catalogue, db, TAGGING_REVIEW_LEASE_S=str(lease))) as app:
        carol = browsers("carol")
        carol.get(app.url)
        first = shown(carol)
        press(carol, "s")  # skip: the next photo; the skipped one is free for others
        second = shown(carol)
        assert second not in (None, first)

        press(carol, "u")  # unusable
        third = shown(carol)
        assert third not in (first, second)
        assert by_id(carol, "last-product").text == second
        assert by_id(carol, "last-answer").text == "Unusable photo"
        assert progress(carol)["mine"] == 1

        press(carol, "z")  # undo: the photo comes back, the answer is retracted
        assert shown(carol) == second and progress(carol)["mine"] == 0
        press(carol, "2")  # the model's second guess
        assert shown(carol) not in (None, second)
        press(carol, Keys.BACKSPACE)  # Backspace undoes too
        assert shown(carol) == second
        press(carol, "b")  # a category by its letter: Bag
        records = [(a["product_id"], a["answer"]) for a in ReviewStore(str(db)).answers(DAY)]
        assert records == [(second, "bag")]
        with ReviewStore(str(db)).db.transaction() as cur:
            history = cur.execute("SELECT answer, retracts FROM answers WHERE product_id = ? "
                                  "ORDER BY id", (second,)).all()
        assert [h["answer"] for h in history] == [UNUSABLE, None, history[2]["answer"], None,
                                                  "bag"]
        assert history[2]["answer"] in CATEGORY_SLUGS

        dave, erin = browsers("dave"), browsers("erin")
        dave.get(app.url)
        claimed_at = time.monotonic()
        assert shown(dave) == first  # carol skipped it: released to the others
        erin.get(app.url)
        assert shown(erin) not in (None, first)  # dave holds it
        time.sleep(max(0.0, claimed_at + lease + 1 - time.monotonic()))  # dave walked away
        press(erin, "1")
        assert shown(erin) == first  # the expired claim came back to the queue
        dave.refresh()
        assert shown(dave) not in (first, None)


def test_the_page_works_without_javascript(catalogue, tmp_path, browsers):
    db = tmp_path / "review.db"
    filled_store(db, catalogue).close()
    with running(tmp_path, app_env(catalogue, db)) as app:
        frank = browsers("frank", javascript=False)
        frank.get(app.url)
        product = shown(frank)
        click(frank, "button[value='bag']")  # a plain form: POST, then redirect
        assert shown(frank) not in (None, product)
        assert progress(frank)["mine"] == 1
        click(frank, "form.undo button")
        assert shown(frank) == product
        anonymous = browsers(None)
        anonymous.get(app.url)
        assert "X-Forwarded-User" in by_id(anonymous, "message").text  # 401 without identity
    answers = ReviewStore(str(db))
    assert [a["answer"] for a in answers.answers(DAY)] == []  # answered, then undone
