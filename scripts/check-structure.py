#!/usr/bin/env python3
"""Checks that Package.swift, the sources' imports and the README's dependency table agree.

1. Declared = imported, both ways, for every target with Swift sources: each target or product a
   target declares is imported by at least one of its source files, and each module a source file
   imports is declared, unless it ships with the toolchain (TOOLCHAIN_MODULES). SwiftPM 6.3's own
   `--explicit-target-dependency-import-check error` (scripts/test.sh) covers only part of this:
   it flags an import of a module of the build (this package's or a dependency's) that is not in
   the importing target's dependency closure, so an import of a transitive dependency passes
   (Bridge importing Addressing through CNI); it reports one such import per target and never
   an unused declaration.
2. The README's dependency table (the format is described in the comment above it) lists exactly
   Package.swift's targets with exactly their declared dependencies, in layer order: a row names
   only targets of rows above it.

Imports are read from the text: `import X`, `@testable import X`, `public import X`, `import
struct X.Y`..., outside comments and multi-line string literals. `#if canImport(X)` blocks count
as importing X.

Usage: scripts/check-structure.py [--package-json FILE]   (default: `swift package dump-package`)
Exits 1 and prints one line per disagreement. With --print-table it prints the table's rows as
Package.swift declares them instead (in layer order: the README's order where it has a row, a new
target after its dependencies), to paste into README.md after a change of Package.swift.
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules that come with the toolchain or the OS: importing them needs no declaration.
TOOLCHAIN_MODULES = {
    "Swift", "_Concurrency", "_StringProcessing", "SwiftOnoneSupport", "Glibc", "Musl", "Darwin",
    "Android", "WASILibc", "Foundation", "FoundationEssentials", "FoundationInternationalization",
    "FoundationNetworking", "FoundationXML", "CoreFoundation", "Dispatch", "Synchronization",
    "RegexBuilder", "Observation", "Distributed", "Testing", "XCTest",
}

# A product of another package whose module is not named like the product: product -> modules.
PRODUCT_MODULES = {}

IMPORT = re.compile(
    r"^\s*(?:@\w+(?:\([^)]*\))?\s+)*"                      # @testable, @_exported, @preconcurrency
    r"(?:(?:public|package|internal|fileprivate|private)\s+)?"
    r"import\s+(?:(?:typealias|struct|class|enum|protocol|let|var|func)\s+)?"
    r"([A-Za-z_][A-Za-z0-9_]*)")


def c99name(name):
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def load_package(path):
    if path:
        with open(path) as f:
            return json.load(f)
    out = subprocess.run(["swift", "package", "dump-package"], cwd=ROOT, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def dependencies(target, target_names):
    """The target's declared dependencies as (kind, name, package): kind is "target" or "product"."""
    deps = []
    for dep in target.get("dependencies", []):
        if "target" in dep:
            deps.append(("target", dep["target"][0], None))
        elif "product" in dep:
            deps.append(("product", dep["product"][0], dep["product"][1]))
        elif "byName" in dep:
            name = dep["byName"][0]
            deps.append(("target", name, None) if name in target_names else ("product", name, name))
    return deps


def source_dir(target):
    if target.get("path"):
        return os.path.join(ROOT, target["path"])
    return os.path.join(ROOT, "Tests" if target["type"] == "test" else "Sources", target["name"])


def swift_files(target):
    top = source_dir(target)
    excluded = {os.path.normpath(os.path.join(top, e)) for e in target.get("exclude", [])}
    for directory, subdirectories, files in os.walk(top):
        subdirectories[:] = sorted(d for d in subdirectories
                                   if os.path.normpath(os.path.join(directory, d)) not in excluded)
        for name in sorted(files):
            path = os.path.join(directory, name)
            if name.endswith(".swift") and os.path.normpath(path) not in excluded:
                yield path


def strip_comments_and_strings(text):
    """The text with comments and multi-line string literals blanked, line structure kept."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    lines, in_string = [], False
    for line in text.split("\n"):
        quotes = line.count('"""')
        lines.append("" if in_string or quotes else re.sub(r"//.*", "", line))
        if quotes % 2:
            in_string = not in_string
    return lines


def imports(path):
    with open(path, encoding="utf-8") as f:
        lines = strip_comments_and_strings(f.read())
    found = {}
    for number, line in enumerate(lines, 1):
        m = IMPORT.match(line)
        if m:
            found.setdefault(m.group(1), number)
        for module in re.findall(r"canImport\(\s*([A-Za-z_][A-Za-z0-9_]*)", line):
            found.setdefault(module, number)
    return found


def check_imports(package):
    problems = []
    target_names = {t["name"] for t in package["targets"]}
    for target in package["targets"]:
        if target["type"] in ("system", "binary", "plugin"):
            continue
        files = list(swift_files(target))
        if not files:
            continue  # a C target
        imported = {}  # module -> first "file:line"
        for path in files:
            for module, line in imports(path).items():
                imported.setdefault(module, f"{os.path.relpath(path, ROOT)}:{line}")
        declared = {}  # module -> how Package.swift names it
        for kind, name, package_name in dependencies(target, target_names):
            if kind == "target":
                declared[c99name(name)] = f"target {name}"
            else:
                for module in PRODUCT_MODULES.get(name, [c99name(name)]):
                    declared[module] = f"product {name} of {package_name}"
        for module, where in sorted(imported.items()):
            if module not in declared and module not in TOOLCHAIN_MODULES:
                problems.append(f"{target['name']}: imports {module} ({where}), which Package.swift does not "
                                f"declare as its dependency")
        for module, what in sorted(declared.items()):
            if module not in imported:
                problems.append(f"{target['name']}: declares {what}, which none of its sources imports")
    return problems


TABLE_START = "<!-- dependency table"
KINDS = {"regular": "library", "executable": "executable", "test": "test", "system": "system",
         "macro": "macro", "plugin": "plugin", "binary": "binary"}


def readme_table(path):
    """The rows of the README's dependency table: [(line, target, kind, [dependency, ...])]."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = next((i for i, line in enumerate(lines) if line.startswith(TABLE_START)), None)
    if start is None:
        return None
    i = start
    while i < len(lines) and "-->" not in lines[i]:
        i += 1
    i += 1
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    rows = []
    i += 2  # the header and the separator
    while i < len(lines) and lines[i].startswith("|"):
        cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
        if len(cells) != 3:
            rows.append((i + 1, None, None, cells))
        else:
            target = cells[0].strip("`")
            deps = [] if cells[2] in ("-", "—") else [d.strip().strip("`") for d in cells[2].split(",")]
            rows.append((i + 1, target, cells[1], deps))
        i += 1
    return rows


def check_table(package):
    readme = os.path.join(ROOT, "README.md")
    rows = readme_table(readme)
    if rows is None:
        return [f"README.md: no dependency table (a line starting with '{TABLE_START}')"]
    problems = []
    target_names = {t["name"] for t in package["targets"]}
    targets = {t["name"]: t for t in package["targets"]}
    seen = []
    for line, name, kind, deps in rows:
        where = f"README.md:{line}"
        if name is None:
            problems.append(f"{where}: a row needs 3 cells (target | kind | depends on), found {deps}")
            continue
        if name not in targets:
            problems.append(f"{where}: {name} is not a target of Package.swift")
            continue
        if name in seen:
            problems.append(f"{where}: {name} has a second row")
        target = targets[name]
        if kind != KINDS.get(target["type"], target["type"]):
            problems.append(f"{where}: {name} is a {KINDS.get(target['type'])} target, not {kind}")
        expected = [n if k == "target" else f"{p}/{n}" for k, n, p in dependencies(target, target_names)]
        if sorted(deps) != sorted(expected):
            problems.append(f"{where}: {name} depends on {', '.join(sorted(expected)) or 'nothing'} in "
                            f"Package.swift, the table says {', '.join(sorted(deps)) or 'nothing'}")
        for dep in deps:
            if dep in target_names and dep not in seen:
                problems.append(f"{where}: {name} depends on {dep}, which is not in a row above it")
        seen.append(name)
    for name in sorted(target_names - set(seen)):
        problems.append(f"README.md: the dependency table has no row for {name}")
    return problems


def print_table(package):
    target_names = {t["name"] for t in package["targets"]}
    targets = {t["name"]: t for t in package["targets"]}
    deps = {name: [n if k == "target" else f"{p}/{n}" for k, n, p in dependencies(t, target_names)]
            for name, t in targets.items()}
    rows = readme_table(os.path.join(ROOT, "README.md")) or []
    preferred = [name for _, name, _, _ in rows if name in targets]
    preferred += [t["name"] for t in package["targets"] if t["name"] not in preferred]
    order = []
    def place(name):
        if name in order:
            return
        for dep in deps[name]:
            if dep in targets:
                place(dep)
        order.append(name)
    for name in preferred:
        place(name)
    for name in order:
        kind = KINDS.get(targets[name]["type"], targets[name]["type"])
        listed = ", ".join(f"`{d}`" for d in deps[name]) or "-"
        print(f"| `{name}` | {kind} | {listed} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package-json", help="the output of `swift package dump-package`")
    parser.add_argument("--print-table", action="store_true", help="print the table's rows and exit")
    args = parser.parse_args()
    package = load_package(args.package_json)
    if args.print_table:
        print_table(package)
        return 0
    problems = check_imports(package) + check_table(package)
    for problem in problems:
        print(problem)
    if problems:
        print(f"check-structure: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check-structure: Package.swift, the imports and README's dependency table agree", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
