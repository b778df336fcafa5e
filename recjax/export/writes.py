"""Which exports a run writes, and where: TF-Serving's layout, decided here once.

TF-Serving serves `<base_path>/<integer version>/saved_model.pb` and ignores everything else
under the base path, so a run's models live at `<workdir>/export/<model_name>/<version>/`,
the version being the global step (it only grows). Each version is written under a hidden
temporary name and renamed into place (`saved_model.save`), so a watcher never sees half a
model. A recall model is also served tower by tower (the item tower offline over the corpus,
the user tower per request): its towers get base paths of their own beside the model's,
`<model_name>_user_tower/` and `<model_name>_item_tower/`, same versions. The best
evaluation's version is recorded in `best.json` beside the versions; `export.keep` newest
versions stay, and the best one; `<workdir>/saved_model` links to the newest.
"""

import json
import os
import pathlib
import shutil

from recjax.export import saved_model
from recjax.export import towers

BEST = "best.json"


def base_path(experiment, workdir) -> pathlib.Path:
  """The model's TF-Serving base path in a workdir: `export/<model_name>`."""
  return pathlib.Path(workdir).absolute() / "export" / experiment.export.model_name


def tower_base(base, tower: str) -> pathlib.Path:
  return pathlib.Path(base).parent / f"{pathlib.Path(base).name}_{tower}_tower"


def versions(base) -> list[int]:
  """The versions under a base path, oldest first: its directories named by an integer
  (as TF-Serving's file system source reads them)."""
  base = pathlib.Path(base)
  if not base.is_dir():
    return []
  return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and p.is_dir())


def write(experiment, state, base, version: int, with_towers: bool = True) -> dict[str, str]:
  """Version `version` of the whole model under `base` and, for a recall model, of each
  tower under its own base: {"saved_model": path, "user_tower": path, ...}."""
  base = pathlib.Path(base).absolute()
  written = {"saved_model": str(saved_model.export(experiment, state, base / str(version)))}
  if with_towers and any(t.kind.retrieval for t in experiment.tasks):
    for tower in towers.TOWERS:
      path = tower_base(base, tower) / str(version)
      written[f"{tower}_tower"] = str(towers.export_tower(experiment, state, tower, path))
  return written


def prune(base, keep: int, protect: int | None) -> None:
  """Removes all but the `keep` newest versions under `base`, never `protect` (the best).
  A version is first renamed to a hidden name, so no watcher sees it half deleted."""
  for version in versions(base)[:-keep]:
    if version != protect:
      path = pathlib.Path(base) / str(version)
      hidden = path.with_name(f".removing-{version}")
      path.rename(hidden)
      shutil.rmtree(hidden, ignore_errors=True)


def link(workdir, target) -> None:
  """Points `<workdir>/saved_model` at `target`, replacing the old link in one rename (a
  reader follows the old link or the new one, never none); a real directory of that name
  (not recjax's) is left alone."""
  alias = pathlib.Path(workdir) / "saved_model"
  if alias.exists() and not alias.is_symlink():
    return
  tmp = alias.with_name(".saved_model-link")
  tmp.unlink(missing_ok=True)
  tmp.symlink_to(os.path.relpath(target, alias.parent))
  os.replace(tmp, alias)


def write_run(experiment, workdir, state, best_state, best: dict) -> dict:
  """A run's exports: the final `state` as version `state.step`, the best evaluation's state
  (`best_state`; None where the final state is the best) as version `best["step"]`, `best.json`
  recording it, old versions pruned and `saved_model` linked to the newest. Returns the
  summary's "saved_model" and "export" entries."""
  base = base_path(experiment, workdir)
  final = int(state.step)
  written = write(experiment, state, base, final)
  latest = written.pop("saved_model")
  best_version = final if best_state is None else int(best["step"])
  if best_state is not None:
    write(experiment, best_state, base, best_version, with_towers=False)
  (base / BEST).write_text(json.dumps({"version": best_version, **best}))
  keep = experiment.export.keep
  prune(base, keep, best_version)
  for path in written.values():
    prune(pathlib.Path(path).parent, keep, None)
  link(workdir, latest)
  return {"saved_model": latest,
          "export": {"base_path": str(base), "latest": latest, "versions": versions(base),
                     "best": str(base / str(best_version)), "best_step": best["step"],
                     **written}}
