#!/usr/bin/env python3
"""How tangled the portal's imports are, read from the source (AST) without importing anything.

Prints, for the packages portal, builds and hosts (migrations left out):
- the files in an import cycle that crosses apps: the strongly connected components of the module import graph, every
  import counted (at module level and inside functions, since a function-level import only hides an edge), keeping the
  components whose modules belong to more than one app (app = the Django app's package: portal, portal.demo, builds,
  builds.releases, builds.diskimages, builds.supplychain, hosts, hosts.rollouts);
- the function-level imports (an import statement inside a function or method), and how many of them sit in an
  AppConfig.ready();
- the longest module and the lines per app.

Usage: scripts/import_cycles.py [--list]   (--list names the files in each cycle and every function-level import)
"""

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("portal", "builds", "hosts")
APPS = ("portal.demo", "builds.releases", "builds.diskimages", "builds.supplychain", "hosts.rollouts",
        "portal", "builds", "hosts")


def modules():
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def app_of(module):
    return next(app for app in APPS if module == app or module.startswith(app + "."))


def resolve(module, path, node):
    """The portal modules an import statement names (a `from x import y` may name module x.y or a name in x)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if path.name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        for _ in range(node.level - 1):
            base = base.rpartition(".")[0]
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def targets(module, path, node, found):
    """The portal modules an import statement loads: `from x import y` loads module x.y when there is one, else x."""
    names = resolve(module, path, node)
    if isinstance(node, ast.ImportFrom):
        submodules = [name for name in names[1:] if name in found]
        names = submodules if len(submodules) == len(node.names) else [names[0]] + submodules
    for name in names:
        while name and name not in found:
            name = name.rpartition(".")[0]
        if name and name != module:
            yield name


def graph(found):
    edges = defaultdict(set)
    function_level = []
    for module, path in found.items():
        tree = ast.parse(path.read_text(), str(path))
        parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            edges[module].update(targets(module, path, node, found))
            up, function = parents.get(node), None
            while up is not None and function is None:
                if isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    function = up
                up = parents.get(up)
            if function is not None:
                function_level.append((path.relative_to(ROOT), node.lineno, function.name))
    return edges, function_level


def components(nodes, edges):
    """Tarjan's strongly connected components, iteratively."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    result.append(sorted(component))
    return result


def main(argv):
    found = modules()
    edges, function_level = graph(found)
    cycles = [c for c in components(sorted(found), edges) if len(c) > 1]
    across = [c for c in cycles if len({app_of(m) for m in c}) > 1]
    in_ready = sum(1 for _, _, name in function_level if name == "ready")
    lines = {module: len(path.read_text().splitlines()) for module, path in found.items()}
    longest = max(lines, key=lines.get)
    per_app = defaultdict(int)
    for module, count in lines.items():
        per_app[app_of(module)] += count
    print(f"files in an import cycle across apps: {sum(len(c) for c in across)} ({len(across)} cycles)")
    print(f"files in an import cycle within one app: {sum(len(c) for c in cycles if c not in across)}")
    print(f"function-level imports: {len(function_level)} ({in_ready} in AppConfig.ready())")
    print(f"longest module: {found[longest].relative_to(ROOT)} {lines[longest]} lines")
    print("lines per app: " + ", ".join(f"{app} {per_app[app]}" for app in APPS if app in per_app))
    if "--list" in argv:
        for component in cycles:
            print("cycle:", " ".join(component))
        for path, line, name in function_level:
            print(f"function-level import: {path}:{line} in {name}()")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
