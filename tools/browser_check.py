"""Notebook 09 as a user meets it: JupyterLab on loopback, headless Chromium, Run All, then the widget.

    python tools/browser_check.py --workdir runs/smoke [--profile smoke] [--screenshot figures/jupyterlab_09_widget.png]

``--workdir`` must hold a trained run (``bber reproduce --profile smoke`` makes one). The notebook is
parameterised for that folder and profile (papermill's ``parameterize_notebook``, nothing executed) into
``<workdir>/browser/``, JupyterLab is started on 127.0.0.1 with a random token, and Chromium (Debian's
``/usr/bin/chromium``, driven by playwright) opens it, runs all cells, waits for the rendered probability figure
and the inference widget, edits the transcript, presses Predict and checks that the figure changed; then it edits
the notebook's exercise cell (a new transcript, typed into its editor) and runs it. Prints one JSON
line with what it found; exit 0 when every check passed. Needs ``apt-get install chromium`` and ``pip install
playwright`` (the ``dev`` extra); no browser download.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
NOTEBOOK = "09_inference.ipynb"


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_requirements() -> str | None:
    """Why the check cannot run here (None: it can)."""
    if chromium_path() is None:
        return "chromium is not installed (apt-get install -y chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(workdir: Path, profile: str) -> Path:
    """Notebook 09 with the profile's parameters and ``workdir`` injected (not executed)."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from bber_utils.train.profiles import load_profile
    from bber_utils.core.papermill import injected_parameters

    src = REPO / "notebooks" / NOTEBOOK
    params = {**load_profile(profile), "workdir": str(workdir)}
    params = injected_parameters(src, params)
    nb = parameterize_notebook(load_notebook_node(str(src)), params)
    nb.metadata.pop("papermill", None)
    out = workdir / "browser" / NOTEBOOK
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(out))
    return out


def _start_lab(root: Path, port: int, token: str, log) -> subprocess.Popen:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path,
           "MPLBACKEND": "module://matplotlib_inline.backend_inline", "MKL_CBWR": "COMPATIBLE"}
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--ServerApp.disable_check_xsrf=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
           "jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
            return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise RuntimeError("jupyter lab did not answer within 120 s")


EXERCISE_TRANSCRIPT = "The train is late again and nobody told us anything"


def edit_and_run_exercise(page, transcript: str, timeout_ms: int = 120_000) -> dict:
    """The first cell tagged ``exercise`` as a student meets it: click into its editor, replace its
    ``transcript = "..."`` line by typing, run it with Shift+Enter, and wait for its output to show the new
    transcript. -> findings (``exercise_ran_edited``: True when the edited cell's own output came back)."""
    index = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.content.widgets.findIndex("
        " c => (c.model.getMetadata('tags') || []).includes('exercise'))")
    if index < 0:
        return {"exercise_ran_edited": False, "exercise_cell": "none tagged exercise"}
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.scroll_into_view_if_needed()
    source = page.evaluate("(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel"
                           ".getSource()", index)
    lines = [f'transcript = "{transcript}"' if line.startswith("transcript = ") else line
             for line in source.splitlines()]
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text("\n".join(lines))
    page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        "([i, t]) => { const c = window.jupyterapp.shell.currentWidget.content.widgets[i];"
        " const out = c.node.querySelector('.jp-OutputArea'); return out && out.innerText.includes(t); }",
        arg=[index, transcript], timeout=timeout_ms)
    edited = page.evaluate("(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel"
                           ".getSource()", index)
    return {"exercise_cell": index, "exercise_ran_edited": transcript in edited,
            "exercise_output": cell.locator(".jp-OutputArea").inner_text()[:300]}


def check(workdir: str | os.PathLike, profile: str = "smoke", screenshot: str | os.PathLike | None = None,
          timeout_s: float = 300) -> dict:
    """Run the check; returns ``{"ok": bool, ...findings}`` (raises only when it cannot start)."""
    from playwright.sync_api import sync_playwright

    workdir = Path(workdir).resolve()
    nb_path = _prepare(workdir, profile)
    port, token = _free_port(), secrets.token_hex(16)
    found: dict = {"notebook": str(nb_path)}
    with open(workdir / "browser" / "jupyterlab.log", "w") as log:
        lab = _start_lab(workdir, port, token, log)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                rel = nb_path.relative_to(workdir).as_posix()
                t0 = time.time()
                page.goto(f"http://127.0.0.1:{port}/lab/tree/{rel}?token={token}", timeout=120_000)
                page.wait_for_selector(".jp-Notebook", timeout=120_000)
                page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                                       " && window.jupyterapp.shell.currentWidget.sessionContext"
                                       " && window.jupyterapp.shell.currentWidget.sessionContext.session",
                                       timeout=120_000)
                page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.ready")
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                figure = page.wait_for_selector(".bber-probabilities img", timeout=timeout_s * 1000)
                found["run_all_s"] = round(time.time() - t0, 1)
                found["static_figures"] = page.locator(".jp-OutputArea-output img").count()
                before = figure.get_attribute("src")
                found["status_before"] = page.inner_text(".bber-status")
                found["figure_rendered"] = bool(before and before.startswith("data:image/png"))
                page.fill(".bber-transcript textarea", "What a wonderful surprise, I am so happy today!")
                page.click("button.bber-predict")
                page.wait_for_function(
                    "(src) => { const i = document.querySelector('.bber-probabilities img');"
                    " return i && i.getAttribute('src') !== src; }", arg=before, timeout=120_000)
                found["figure_updated_after_edit"] = True
                found["status_after"] = page.inner_text(".bber-status")
                options = page.locator(".bber-clip select option").count()
                found["clips_in_dropdown"] = options
                if options > 1:
                    page.select_option(".bber-clip select", index=1)
                    page.wait_for_function(
                        "(s) => document.querySelector('.bber-status').innerText !== s",
                        arg=found["status_after"], timeout=120_000)
                    found["status_other_clip"] = page.inner_text(".bber-status")
                page.wait_for_function("() => { const i = document.querySelector('.bber-probabilities img');"
                                       " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
                found.update(edit_and_run_exercise(page, EXERCISE_TRANSCRIPT))
                page.wait_for_timeout(3000)
                if screenshot:
                    page.add_style_tag(content=".jp-toast-container, .Toastify { display: none !important; }")
                    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                    explorer = page.locator(".bber-inference-explorer")
                    explorer.scroll_into_view_if_needed()
                    page.wait_for_timeout(1000)
                    explorer.screenshot(path=str(screenshot), animations="disabled")
                    found["screenshot"] = str(screenshot)
                errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
                found["error_outputs"] = page.locator(".jp-RenderedText[data-mime-type="
                                                      "'application/vnd.jupyter.error']").count()
                found["stderr_outputs"] = errors.count()
                browser.close()
        finally:
            lab.terminate()
            try:
                lab.wait(timeout=20)
            except subprocess.TimeoutExpired:
                lab.kill()
    found["ok"] = bool(found.get("figure_rendered") and found.get("figure_updated_after_edit")
                       and found.get("exercise_ran_edited") and found.get("error_outputs") == 0)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", required=True, help="a run folder with a trained model (e.g. runs/smoke)")
    p.add_argument("--profile", default="smoke")
    p.add_argument("--screenshot", default=None)
    args = p.parse_args(argv)
    why = missing_requirements()
    if why:
        print(json.dumps({"ok": False, "skipped": why}))
        return 2
    found = check(args.workdir, args.profile, args.screenshot)
    print(json.dumps(found))
    return 0 if found["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
