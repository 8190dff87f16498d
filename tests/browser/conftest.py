"""Headless Chromium (Debian's) driven by playwright against a real ComfyUI server and frontend."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dev.support.browser import ARGS, CHROMIUM, newest_frontend_root
from dev.support.examples import copy_inputs
from dev.support.server import STANDIN_ADE, TINY_MODELS_PACK, ComfyServer

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def frontend_version(root: Path | None) -> str:
    import importlib.metadata

    if root is None:
        return importlib.metadata.version("comfyui-frontend-package") if _has_dist() else "bundled"
    for dist in (root.parents[1]).glob("comfyui_frontend_package-*.dist-info"):
        return dist.name.removeprefix("comfyui_frontend_package-").removesuffix(".dist-info")
    return "newest"


def _has_dist():
    try:
        import importlib.metadata

        importlib.metadata.version("comfyui-frontend-package")
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append("Chromium (/usr/bin/chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright")
    if not missing:
        return
    message = f"BROWSER TESTS SKIPPED: {', '.join(missing)} not installed (run dev/setup_browser.sh)"
    print(f"\n{'!' * 80}\n{message}\n{'!' * 80}", file=sys.stderr)
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=message))


FRONTENDS = ["bundled", "newest"]


@pytest.fixture(scope="session", params=FRONTENDS)
def server(request):
    root = None
    if request.param == "newest":
        root = newest_frontend_root()
        if root is None:
            pytest.skip("the newest comfyui-frontend-package could not be installed (no registry access?)")
    with ComfyServer(extra_nodes=[STANDIN_ADE, TINY_MODELS_PACK], front_end_root=root) as s:
        s.frontend = frontend_version(root) if root else "1.32.9 (bundled)"
        copy_inputs(s.base / "input")
        yield s


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


BLANK_WORKFLOW = {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {},
                  "extra": {}, "version": 0.4}


def open_frontend(context, server):
    """A page of the real frontend, ready: our node type registered, dialogs closed, a blank workflow
    loaded the way the frontend loads any (so its undo history starts clean), and deprecation
    warnings of its litegraph (where it has them) recorded with their call stacks."""
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url) or
               route.request.url.startswith("data:") or route.request.url.startswith("blob:") else route.abort())
    page.console_errors = []
    page.on("pageerror", lambda e: page.console_errors.append(str(e)))
    # a returning user: no first-run templates dialog
    server.post_raw("/settings/Comfy.TutorialCompleted", b"true")
    page.goto(server.url)
    page.wait_for_function("() => !!(window.app && window.app.graph && window.LiteGraph && "
                           "window.LiteGraph.registered_node_types['AnyI2VTrajectory'])", timeout=60000)
    # first start: the frontend opens its templates dialog; close any dialog before testing
    page.wait_for_timeout(500)
    for _ in range(3):
        if page.locator(".p-dialog-mask").count() == 0:
            break
        close = page.locator(".p-dialog-mask button[aria-label='Close'], .p-dialog-mask .p-dialog-close-button")
        if close.count():
            close.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    return fresh(page)


def fresh(page):
    """The open frontend made ready for the next test: a blank workflow loaded, no pending pointer or
    menu, deprecation warnings recorded from here on."""
    page.mouse.up()
    page.keyboard.press("Escape")
    page.evaluate("async (wf) => { await app.loadGraphData(wf); }", BLANK_WORKFLOW)
    page.evaluate("""() => { window.__deprecations = [];
        if (Array.isArray(LiteGraph.onDeprecationWarning) && !window.__deprecationHook) {
          window.__deprecationHook = (m) => window.__deprecations.push(m + '\\n' + new Error().stack);
          LiteGraph.alwaysRepeatWarnings = true;
          LiteGraph.onDeprecationWarning.push(window.__deprecationHook);
        } }""")
    page.console_errors.clear()
    return page


@pytest.fixture(scope="module")
def frontend(browser, server):
    """One page of the frontend per test module and frontend (starting the app is the slow part)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield open_frontend(context, server)
    context.close()


@pytest.fixture
def page(frontend):
    return fresh(frontend)


@pytest.fixture
def vue_page(browser, server):
    """The frontend with "Nodes 2.0" (the Vue node renderer) switched on; switched off again after."""
    server.post_raw("/settings/Comfy.VueNodes.Enabled", b"true")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = open_frontend(context, server)
        assert page.evaluate("() => app.extensionManager.setting.get('Comfy.VueNodes.Enabled')") is True
        yield page
    finally:
        context.close()
        server.post_raw("/settings/Comfy.VueNodes.Enabled", b"false")


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed browser test leaves a screenshot of its page in test-artifacts/ (what the user would have seen)."""
    outcome = yield
    report = outcome.get_result()
    page = item.funcargs.get("page") or item.funcargs.get("vue_page") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and page is not None:
        try:
            name = "FAILED-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in item.name) + ".png"
            report.sections.append(("screenshot", str(screenshot(page, name))))
        except Exception as e:  # a crashed page: the failure itself is what matters
            report.sections.append(("screenshot", f"none: {e}"))
