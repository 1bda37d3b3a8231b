#!/usr/bin/env bash
# Packaging check (CI): `pip install --no-build-isolation .` into a clean venv that has torch and nothing else,
# then `zol2l attack` from outside the repository. Catches undeclared runtime dependencies and files missing from
# the installed package, which an editable install in the repository hides.
#
# torch is not downloaded again: the clean venv sees only torch and its own requirements, linked from .venv (made
# by scripts/bootstrap.sh). The extension is built for the CPU only: the CUDA compile is checked by bootstrap.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

base=$(.venv/bin/python -c 'import sys; print(sys._base_executable)')
"$base" -m venv "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# torch and its transitive requirements, as links in one folder that the clean venv reads through a .pth file
.venv/bin/python - "$work/torch-only" <<'PY'
import os, sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

out = sys.argv[1]
os.makedirs(out)
todo, seen, linked = [("torch", ())], set(), set()
while todo:
    name, extras = todo.pop()
    name = canonicalize_name(name)
    if (name, extras) in seen:
        continue
    seen.add((name, extras))
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        continue  # a requirement of another platform
    for text in dist.requires or []:
        req = Requirement(text)
        # the base requirements, and those of the extras asked for (torch asks for cuda-toolkit[cudart, ...])
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("",) + extras):
            todo.append((req.name, tuple(sorted(req.extras))))
    if name in linked:
        continue
    linked.add(name)
    root = str(dist.locate_file(""))
    for f in dist.files or []:
        top = str(f).split("/")[0]
        src, dst = os.path.join(root, top), os.path.join(out, top)
        if not top.startswith("..") and os.path.exists(src) and not os.path.lexists(dst):
            os.symlink(src, dst)
print("clean venv: torch with", ", ".join(sorted(linked - {"torch"})))
PY
echo "$work/torch-only" >"$site/torch-only.pth"

# the build requirements that --no-build-isolation expects to find (pyproject.toml [build-system])
"$work/venv/bin/python" -m pip install -q --upgrade pip setuptools wheel ninja
# From a copy of the files git knows (tracked and new, not ignored): pip builds a local folder in place, and its
# build/ must neither reuse nor replace the one scripts/bootstrap.sh keeps here.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - | tar -xf - -C "$work/src"
ZOL2L_SKIP_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "$work/venv/bin/python" -m pip install -q --no-build-isolation "$work/src"
cd "$work"
ZOL2L_CACHE="$work/cache" "$work/venv/bin/zol2l" attack --count 2 --trials 1 --steps 20 --out "$work/out"
for f in results.json loss_curves.png adversarial_grid.png; do
  [[ -s "$work/out/$f" ]] || { echo "clean install: zol2l attack wrote no $f" >&2; exit 1; }
done
echo "clean install: zol2l attack ran outside the repository"
