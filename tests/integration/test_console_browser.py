"""The web console in a real browser (Debian's Chromium, headless, driven by Playwright)
against a real worker, Kafka and chDB with a planted scan: create a flow log, see traffic
appear, open the Sankey, filter flows, see the scan's alarm. Screenshots of each step are
kept in ``test-artifacts/console/`` (FLOWLOGS_TEST_ARTIFACTS to put them elsewhere)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from agents import scenarios
from agents.synthetic import SyntheticConfig, synthetic_inventory
from flowlogs.kafka import ensure_topics
from tests.integration.helpers import paced_agent

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic is refused on a closed network; keep it quiet.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("FLOWLOGS_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")) / "console"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_console_end_to_end(settings_factory, worker_factory, browser: Browser, tmp_path: Path) -> None:
    inventory_file = tmp_path / "inventory.yaml"
    synthetic_inventory(4, 2).dump(inventory_file)
    settings = settings_factory(
        kafka={"session_timeout_seconds": 6},
        worker={"window_seconds": 5, "idle_close_seconds": 2.0, "allowed_lateness_seconds": 1.0, "inventory": str(inventory_file)},
        store={"batch_seconds": 0.3},
    )
    ensure_topics(settings)
    worker = worker_factory(settings)
    agent, _ = paced_agent(settings, SyntheticConfig(enis=4, flows=500, rate=4_000, duration=45, seed=2, scenarios=("scan",), chunk_packets=1024))
    agent.start()
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    try:
        page.goto(worker.api + "/console/")
        page.get_by_test_id("api-token").fill(settings.api_token())

        # Create a flow log: everything, both destinations.
        page.get_by_test_id("nav-flow-logs").click()
        page.get_by_test_id("flow-log-name").fill("all traffic")
        page.get_by_test_id("flow-log-submit").click()
        expect(page.locator('[data-testid="flow-log-row"][data-name="all traffic"]')).to_have_count(1, timeout=15_000)
        shot(page, "1-flow-log-created")

        # Traffic appears on the chart. It draws whole 1-minute steps only (a partial one
        # would show as a dip), so the first one may be up to a minute away.
        page.get_by_test_id("nav-traffic").click()
        chart = page.get_by_test_id("traffic-chart")
        for _ in range(90):
            page.get_by_test_id("traffic-refresh").click()
            if chart.get_attribute("data-state") == "ready":
                break
            page.wait_for_timeout(1000)
        expect(chart).to_have_attribute("data-state", "ready")
        assert int(chart.get_attribute("data-series") or 0) >= 1
        shot(page, "2-traffic")

        # The Sankey of sources and destinations.
        page.get_by_test_id("nav-sankey").click()
        sankey = page.get_by_test_id("sankey-chart")
        expect(sankey).to_have_attribute("data-state", "ready", timeout=15_000)
        assert int(sankey.get_attribute("data-links") or 0) >= 1
        shot(page, "3-sankey")

        # Filter flows: the scanner's probes to ssh.
        page.get_by_test_id("nav-flows").click()
        page.get_by_test_id("flow-filter").fill(f"srcaddr = {scenarios.SCAN_SOURCES[0]} and dstport = 22")
        page.get_by_test_id("flow-search").click()
        rows = page.get_by_test_id("flow-results-row")
        expect(rows.first).to_be_visible(timeout=15_000)
        assert rows.count() >= 10
        page.get_by_test_id("flow-filter").fill("srcaddr = 'x' or 1=1")
        page.get_by_test_id("flow-search").click()
        expect(page.get_by_test_id("flow-search-error")).to_be_visible(timeout=10_000)
        shot(page, "4-flow-search")

        # The planted scan's alarm.
        page.get_by_test_id("nav-alarms").click()
        scan = page.locator('[data-testid="alarm"][data-detector="address_scan"]')
        expect(scan.first).to_be_visible(timeout=30_000)
        expect(scan.first).to_contain_text(scenarios.SCAN_SOURCES[0])
        page.get_by_test_id("theme-toggle").click()
        shot(page, "5-alarms")
    finally:
        page.close()
        agent.join(90)
    # The refused search answers 400 on purpose; the browser logs that as an error too.
    assert [e for e in errors if "status of 400" not in e] == [], errors
