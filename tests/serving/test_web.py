"""The reviewers' web app in a real browser (Debian's Chromium) against a real server."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.serving_support import Server, announce, form, item_photos, start_server, stop

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    # The system's Chromium: no browser is ever downloaded (`make install` apt-installs it).
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make install does)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM}


@pytest.fixture
def humans_only(tmp_path: Path) -> Iterator[Server]:
    """No model: every upload goes to people."""
    server = start_server(tmp_path / "data", None)
    yield server
    stop(server)


def submit(server: Server, manifest: Path, index: int = 0, **fields: str) -> dict:
    """Submitted by a member back end; the whole appraisal, as the platform reads it."""
    with server.client(server.key("member_backend")) as client:
        answer = client.post(
            "/v1/appraisals", data=form(**fields), files=item_photos(manifest, index)
        )
    assert answer.status_code == 201, answer.text
    return appraisal(server, answer.json()["id"])


def appraisal(server: Server, appraisal_id: str) -> dict:
    with server.client(server.key("platform")) as client:
        return client.get(f"/v1/appraisals/{appraisal_id}").json()


def key_parts(key: str) -> tuple[str, str, str]:
    """`tsk`, the prefix and the secret: the secret may itself hold `_`, so split twice only."""
    tsk, prefix, secret = key.split("_", 2)
    return tsk, prefix, secret


def sign_in(page: Page, server: Server, key: str) -> None:
    page.goto(server.url + "/review/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Review queue")


def claim(page: Page) -> None:
    page.click("text=Claim next")
    expect(page).to_have_url(re.compile(r"/review/tasks/\d+$"))
    expect(page.locator(".photo img:not(.heat)").first).to_be_visible()


@contextmanager
def database(server: Server) -> Iterator[Session]:
    """A transaction on the server's database, for what the pages cannot show."""
    from serving.db import default_database_url, make_engine, make_sessionmaker

    engine = make_engine(server.database_url or default_database_url(server.data_dir))
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()


def test_sign_in_sessions_and_csrf(humans_only: Server, page: Page) -> None:
    server = humans_only
    reviewer = server.key("reviewer")
    page.goto(server.url + "/review/history")
    expect(page).to_have_url(re.compile(r"/review/login"))  # every page needs a session

    page.fill("#key", "tsk_000000000000_not-a-key")
    page.click("button[type=submit]")
    expect(page.locator(".message.error")).to_contain_text("unknown or has been revoked")
    page.fill("#key", server.key("app"))
    page.click("button[type=submit]")
    expect(page.locator(".message.error")).to_contain_text("app role cannot review")

    page.fill("#key", reviewer)
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url + "/review/history")  # back where it was going
    cookie = next(c for c in page.context.cookies() if c["name"] == "touchstone_review")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    _, prefix, secret = key_parts(reviewer)
    assert secret not in cookie["value"] and reviewer not in cookie["value"]
    assert (server.data_dir / "web-secret").stat().st_mode & 0o777 == 0o600

    # A form POST without the page's token is refused, with the cookie or not.
    forged = page.request.post(server.url + "/review/claim", form={"csrf_token": "forged"})
    assert forged.status == 403
    assert page.request.post(server.url + "/review/claim", form={}).status == 403

    # Revoking the key ends the session at the next request.
    from serving.db import ApiKey

    with database(server) as session:
        session.execute(
            update(ApiKey).where(ApiKey.prefix == prefix).values(revoked_at=dt.datetime.now(dt.UTC))
        )
    page.goto(server.url + "/review")
    expect(page.locator(".message.error")).to_contain_text("revoked")

    # The admin page is the admin's alone; it shows the queue whatever else it can.
    page.goto(server.url + "/review/login")
    page.fill("#key", server.key("admin"))
    page.click("button[type=submit]")
    page.click("nav >> text=Admin")
    expect(page.locator("h1")).to_have_text("Review quality")
    expect(page.locator("table.kv").first).to_contain_text("overdue")
    expect(page.locator("form.claim")).to_have_count(0)
    page.click("text=Sign out")
    expect(page.locator("h1")).to_have_text("Sign in to review")
    page.fill("#key", server.key("reviewer"))
    page.click("button[type=submit]")
    page.goto(server.url + "/review/admin")
    expect(page.locator("h1")).to_have_text("Not allowed")
    page.click("text=Sign out")
    expect(page.locator("h1")).to_have_text("Sign in to review")
    page.goto(server.url + "/review")
    expect(page).to_have_url(re.compile(r"/review/login"))


def test_claim_and_decide_by_keyboard(
    humans_only: Server, page: Page, tiny_synthetic: Path, tmp_path: Path
) -> None:
    server = humans_only
    item = submit(server, tiny_synthetic, member="member-8841", brand="Hermès")
    page.set_viewport_size({"width": 1440, "height": 900})  # a reviewer's laptop
    sign_in(page, server, server.key("reviewer"))
    expect(page.locator(".count.on-time .n")).to_have_text("1")
    claim(page)
    task_url = page.url

    panel = page.locator(".panel")
    expect(panel).to_contain_text("me***41")  # masked
    expect(panel).to_contain_text("Hermès")
    expect(panel).to_contain_text("the model is unavailable")  # why it came to a person
    expect(panel).to_contain_text("No model is loaded, so there is no heatmap.")
    photos = page.locator(".photo img:not(.heat)")
    assert photos.count() == len(item["findings"])
    for i in range(photos.count()):  # served through the cookie route, decoded by the browser
        photos.nth(i).scroll_into_view_if_needed()
        assert photos.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
    headings = page.locator(".region h2").all_inner_texts()
    assert [h.split()[0] for h in headings] == ["Hardware", "Stitching", "Logo"]

    # The lease is kept alive through the cookie route (the page does this every minute).
    beat = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector('meta[name="csrf-token"]').content;
            const answer = await fetch(`/review/tasks/${id}/heartbeat`,
                {method: "POST", headers: {"X-CSRF-Token": csrf}});
            return [answer.status, await answer.json()];
        }""",
        task_url.rsplit("/", 1)[1],
    )
    assert beat[0] == 200 and beat[1]["seconds_left"] > 500

    # Zoom: a click opens the photo large, Escape closes it.
    page.locator(".photo .frame").first.click()
    expect(page.locator("#lightbox")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()

    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(tmp_path / "work-page.png"))

    # Keys typed into the notes are words, not verdicts.
    page.keyboard.press("n")
    page.keyboard.type("a crisp serial; c-clamp stitch pitch as the brand's")
    expect(page.locator("#confirm")).to_be_hidden()
    page.keyboard.press("Escape")  # leaves the notes
    page.keyboard.press("c")
    expect(page.locator("#confirm")).to_contain_text("Counterfeit")
    page.keyboard.press("Escape")
    expect(page.locator("#confirm")).to_be_hidden()
    page.keyboard.press("a")
    expect(page.locator("#confirm")).to_contain_text("Authentic")
    page.keyboard.press("Enter")
    expect(page.locator(".message")).to_have_text("Verdict recorded: Authentic.")

    shown = appraisal(server, item["id"])
    assert shown["status"] == "finalized" and shown["decision"]["outcome"] == "authentic"
    from serving.db import Verdict

    with database(server) as session:
        notes = session.scalar(select(Verdict.notes).where(Verdict.appraisal_id == item["id"]))
    assert notes == "a crisp serial; c-clamp stitch pitch as the brand's"

    page.click("text=My verdicts")
    expect(page.locator(".count").first).to_contain_text("1")
    expect(page.locator("table.list")).to_contain_text("Authentic")
    page.click("nav >> text=Queue")
    page.click("text=Claim next")
    expect(page.locator(".message")).to_contain_text("The queue is empty")


def test_disagreement_escalates_to_a_senior(
    humans_only: Server, browser: Browser, tiny_synthetic: Path
) -> None:
    server = humans_only
    item = submit(server, tiny_synthetic, declared_value="80000")
    assert item["decision"]["reviews_required"] == 2

    # The first reviewer works in the browser: a blind review shows no other opinion.
    alice = browser.new_page()
    sign_in(alice, server, server.key("reviewer"))
    claim(alice)
    expect(alice.locator(".panel")).to_contain_text("Double review · blind")
    expect(alice.locator(".panel")).to_contain_text("80,000 CNY")
    expect(alice.locator(".earlier")).to_have_count(0)
    alice.keyboard.press("a")
    alice.keyboard.press("Enter")
    expect(alice.locator(".message")).to_have_text("Verdict recorded: Authentic.")

    # The second through the API: they disagree.
    with server.client(server.key("reviewer")) as bob:
        task = bob.post("/v1/review/claim").json()["task"]["id"]
        answer = bob.post(
            f"/v1/review/tasks/{task}/verdict",
            json={"outcome": "counterfeit", "notes": "letter spacing off"},
        )
        assert answer.status_code == 200, answer.text
        assert appraisal(server, answer.json()["appraisal_id"])["status"] == "in_review"

    senior = browser.new_page()
    sign_in(senior, server, server.key("senior"))
    expect(senior.locator(".counts")).to_contain_text("escalations")
    claim(senior)
    expect(senior.locator(".panel")).to_contain_text("Escalation · senior decision")
    earlier = senior.locator(".earlier .verdict-card")
    expect(earlier).to_have_count(2)
    expect(senior.locator(".earlier")).to_contain_text("Authentic")
    expect(senior.locator(".earlier")).to_contain_text("Counterfeit")
    expect(senior.locator(".earlier")).to_contain_text("letter spacing off")
    senior.keyboard.press("c")
    senior.keyboard.press("Enter")
    expect(senior.locator(".message")).to_have_text("Verdict recorded: Counterfeit.")
    alice.context.close()
    senior.context.close()

    shown = appraisal(server, item["id"])
    assert shown["status"] == "finalized" and shown["decision"]["outcome"] == "counterfeit"


def test_heatmap_from_the_served_model(
    tmp_path: Path, page: Page, browser: Browser, tiny_model: Path, tiny_synthetic: Path
) -> None:
    server = start_server(tmp_path / "data", tiny_model)
    try:
        # A VIP item always goes to a person, and its review is not blind; it is due first.
        announce(server, "m-vip", "collector")
        submit(server, tiny_synthetic, member="m-vip", tier="collector")
        blind = submit(server, tiny_synthetic, 1, declared_value="80000")
        sign_in(page, server, server.key("reviewer"))
        claim(page)
        expect(page.locator(".panel")).to_contain_text("p(authentic)")
        task = page.url.rsplit("/", 1)[1]
        first = page.locator(".photo .frame").first
        photo_url = f"{server.url}/review/tasks/{task}/photos/{first.get_attribute('data-sha')}"

        answer = page.request.get(photo_url + "/heatmap.png")
        assert answer.status == 200 and answer.headers["content-type"] == "image/png"
        overlay = Image.open(io.BytesIO(answer.body()))
        photo = Image.open(io.BytesIO(page.request.get(photo_url).body()))
        assert overlay.mode == "RGBA"
        assert abs(overlay.width / overlay.height - photo.width / photo.height) < 0.02

        page.keyboard.press("h")  # the overlay, toggled on the page
        expect(first.locator("img.heat")).to_be_visible()
        page.keyboard.press("h")
        expect(first.locator("img.heat")).to_be_hidden()

        # A blind task never shows where the model looked, even to a senior, who may see it.
        from serving.db import Photo, ReviewTask

        with database(server) as session:
            blind_task = session.scalar(
                select(ReviewTask.id).where(ReviewTask.appraisal_id == blind["id"]).limit(1)
            )
            sha = session.scalar(
                select(Photo.sha256).where(Photo.appraisal_id == blind["id"]).limit(1)
            )
        senior = browser.new_page()
        sign_in(senior, server, server.key("senior"))
        url = f"{server.url}/review/tasks/{blind_task}/photos/{sha}"
        assert senior.request.get(url).status == 200
        refused = senior.request.get(url + "/heatmap.png")
        assert refused.status == 403 and refused.json()["code"] == "blind_task"
        senior.context.close()
    finally:
        stop(server)


def test_occlusion_finds_where_the_model_looks() -> None:
    """A model that reads only the top-left cell: covering that cell, and only it, moves it."""
    from serving.web.heatmap import occlusion, overlay_png
    from touchstone.imaging import Preprocessing

    class TopLeft:
        preprocessing = Preprocessing(input_size=36, mean=(0.5,) * 3, std=(0.5,) * 3)
        region_index = {"logo": 0}  # noqa: RUF012 (a stand-in for OnnxModel)

        def predict(self, batch: np.ndarray) -> np.ndarray:
            return batch[:, :, :6, :6].mean(axis=(1, 2, 3))[:, None]

    result = occlusion(TopLeft(), Image.new("RGB", (72, 72), "white"), "logo")  # type: ignore[arg-type]
    assert result.log_odds == pytest.approx(1.0)
    assert result.heat[0, 0] == pytest.approx(1.0, abs=0.01)
    assert np.abs(result.heat.ravel()[1:]).max() < 1e-6
    # A wide photo is centre-cropped for the model: its outer columns were never seen.
    wide = occlusion(TopLeft(), Image.new("RGB", (90, 60), "white"), "logo")  # type: ignore[arg-type]
    assert np.all(wide.heat[:, 0] == 0) and wide.heat[0, 1] > 0.3
    overlay = Image.open(io.BytesIO(overlay_png(result.heat, (900, 600))))
    assert overlay.size == (768, 512) and overlay.mode == "RGBA"
    alpha = np.asarray(overlay)[..., 3]
    assert alpha[:20, :20].min() > 100 and alpha[-100:, -100:].max() == 0


def test_a_non_ascii_csrf_token_is_refused_not_a_crash(humans_only: Server) -> None:
    import httpx

    server = humans_only
    with httpx.Client(base_url=server.url, headers={"Accept": "text/html"}) as browser:
        assert browser.get("/review/login").status_code == 200
        forged = browser.post(
            "/review/login", data={"key": server.key("reviewer"), "csrf_token": "jeton-forgé"}
        )
        assert forged.status_code == 400, forged.text  # the sign-in form, shown again
        token = re.search(r'name="csrf_token" value="([^"]+)"', forged.text)
        assert token is not None
        signed = browser.post(
            "/review/login", data={"key": server.key("reviewer"), "csrf_token": token.group(1)}
        )
        assert signed.status_code == 303
        claim = browser.post("/review/claim", data={"csrf_token": "ünïcödé"})
        assert claim.status_code == 403, claim.text
        answer = browser.post(
            "/review/claim", data={"csrf_token": "ünïcödé"}, headers={"Accept": "*/*"}
        )
        assert answer.status_code == 403 and answer.json()["code"] == "csrf_failed"
