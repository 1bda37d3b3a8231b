"""The package's layering (docs/ARCHITECTURE.md): `zol2l attack` walks down from the command line to the first
black-box call without climbing back up, no module imports one that imports it back (module-level or inside a
function), and no module is over 400 lines."""
import ast
import os
import sys

import zol2l_ext
from zol2l_ext import cli

PKG = os.path.dirname(os.path.abspath(zol2l_ext.__file__))


def _walk_of_attack(tmp_path):
    """The package files on the call stack at every call from `cli.main` to the first black-box evaluation (an
    attack problem's __call__), and the calls that went into a file already on the stack below the caller."""
    stack, climbs, chain = [], [], []

    def profile(frame, event, arg):
        if chain or event not in ("call", "return"):
            return
        path = frame.f_code.co_filename
        if not path.startswith(PKG + os.sep):
            return
        rel = os.path.relpath(path, PKG)
        if event == "return":
            if stack and stack[-1][0] is frame:
                stack.pop()
            return
        caller = stack[-1][1] if stack else None
        if rel != caller and any(f == rel for _, f in stack):
            climbs.append(f"{caller} -> {rel}:{frame.f_code.co_name} (on the stack: "
                          f"{' > '.join(dict.fromkeys(f for _, f in stack))})")
        stack.append((frame, rel))
        if rel.startswith(os.path.join("zo", "problems")) and frame.f_code.co_name == "__call__":
            chain.extend(dict.fromkeys(f for _, f in stack))

    argv = ["attack", "--count", "1", "--trials", "1", "--steps", "1", "--optimizers", "zo-sgd", "--no-progress",
            "--out", str(tmp_path / "out")]
    sys.setprofile(profile)
    try:
        rc = cli.main(argv)
    finally:
        sys.setprofile(None)
    assert rc == 0
    return chain, climbs


def test_attack_walk_goes_down_once(tmp_path):
    chain, climbs = _walk_of_attack(tmp_path)
    assert chain, "the walk never reached a black-box call"
    assert chain[0] == "cli.py" and chain[1] == os.path.join("commands", "attack.py")
    assert climbs == [], "calls back up into a file already on the stack:\n" + "\n".join(climbs)


def _imports(path, pkg_module):
    """The package modules that ``path`` imports anywhere (module level and inside functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    base = pkg_module if path.endswith("__init__.py") else pkg_module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            mod = base
            for _ in range(node.level - 1):
                mod = mod.rsplit(".", 1)[0]
            mod = f"{mod}.{node.module}" if node.module else mod
            out.update(f"{mod}.{a.name}" for a in node.names)
            out.add(mod)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            out.update(n for n in names if n.startswith("zol2l_ext"))
    return out


def test_no_import_loops():
    modules = {}
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                name = "zol2l_ext." + os.path.relpath(path[:-3], PKG).replace(os.sep, ".")
                modules[name.removesuffix(".__init__")] = path
    graph = {m: {d for d in _imports(p, m) if d in modules and d != m and not m.startswith(d + ".")}
             for m, p in modules.items()}
    loops, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                loops.append(" -> ".join(path[path.index(d):] + [d]))
            elif d not in state:
                visit(d, path + [d])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert loops == [], "import loops:\n" + "\n".join(loops)


def test_modules_are_small():
    long = []
    for folder, _, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                n = sum(1 for _ in open(path, encoding="utf-8"))
                if n > 400:
                    long.append(f"{os.path.relpath(path, PKG)}: {n} lines")
    assert long == [], "modules over 400 lines:\n" + "\n".join(long)
