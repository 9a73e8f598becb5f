"""Prepare notebooks/ for a one-click environment (Binder's postBuild): inject a profile's parameters.

Each notebook gets papermill's ``injected-parameters`` cell with the values of the profile (default smoke),
exactly as ``bber reproduce --profile smoke`` would pass them, without running anything. Opened in JupyterLab,
the notebooks then run on that profile. It rewrites notebooks/ in place: meant for the throwaway copy of the
repository inside a Binder image, not for a working tree (``--out DIR`` writes elsewhere).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare(profile: str, out: Path) -> list[Path]:
    import papermill as pm

    from bber_utils.train.profiles import load_profile
    from bber_utils.core.papermill import injected_parameters
    from bber_utils.notebook.pipeline import list_notebooks

    params = load_profile(profile)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for nb in list_notebooks():
        chosen = injected_parameters(nb, params)  # exactly what bber reproduce injects
        dst = out / nb.name
        pm.execute_notebook(str(nb), str(dst), parameters=chosen, prepare_only=True, kernel_name="bber",
                            progress_bar=False)
        written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--out", type=Path, default=REPO / "notebooks", help="default: notebooks/ (in place)")
    args = ap.parse_args(argv)
    written = prepare(args.profile, args.out)
    print(f"{len(written)} notebooks in {args.out} prepared for the {args.profile} profile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
