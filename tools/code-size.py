#!/usr/bin/env python3
"""Code bytes of an ELF by where their source lives, from its DWARF line table.

Every address range of the line table is charged to the source file of its
row, so code inlined from the driver into the image (LTO inlines a lot) still
counts as driver code, and library code inlined into the driver counts as
core/alloc. Needs `llvm-dwarfdump` and an image built with debug info.

    tools/code-size.py target/aarch64-unknown-none/release/smmuv3-image
"""
import os
import re
import subprocess
import sys
from collections import Counter


ROOT = os.getcwd() + "/"


def bucket(path):
    """`path` is absolute (or a toolchain path starting /rustc/ or library/)."""
    if path.startswith(ROOT + "src/image/") or path == ROOT + "src/main.rs":
        return "image (src/image, src/main.rs)"
    if path.startswith(ROOT + "src/"):
        return "driver (smmuv3 library: src/ outside src/image, src/main.rs)"
    if path.startswith(ROOT):
        return "other project files"
    if path.startswith(("/rustc/", "library/")):
        return "core, alloc, compiler-builtins"
    return "dependency crates"


def comp_dirs(elf):
    """DW_AT_stmt_list offset -> DW_AT_comp_dir, per compilation unit."""
    out = subprocess.run(
        ["llvm-dwarfdump", "--debug-info", "--recurse-depth=0", elf],
        check=True, capture_output=True, text=True,
    ).stdout
    dirs, stmt = {}, None
    for line in out.splitlines():
        m = re.search(r"DW_AT_stmt_list\s+\((0x[0-9a-f]+)\)", line)
        if m:
            stmt = int(m.group(1), 16)
        m = re.search(r'DW_AT_comp_dir\s+\("(.*)"\)', line)
        if m and stmt is not None:
            dirs[stmt] = m.group(1)
            stmt = None
    return dirs


def main(elf):
    out = subprocess.run(
        ["llvm-dwarfdump", "--debug-line", elf],
        check=True, capture_output=True, text=True,
    ).stdout
    cus = comp_dirs(elf)
    dirs, files, rows = {}, {}, []
    sizes = Counter()
    per_file = Counter()
    cur_name = None

    def flush():
        for (a, f, end), (b, _, _) in zip(rows, rows[1:]):
            if end:
                continue
            n = b - a
            if 0 < n < 1 << 20:
                path = files.get(f, "?")
                sizes[bucket(path)] += n
                per_file[path] += n
        rows.clear()

    for line in out.splitlines():
        if line.startswith("debug_line["):
            flush()
            off = int(line[len("debug_line["):].split("]")[0], 16)
            dirs, files = {0: cus.get(off, "")}, {}
        elif line.startswith("include_directories["):
            m = re.match(r'include_directories\[\s*(\d+)\] = "(.*)"', line)
            dirs[int(m.group(1))] = m.group(2)
        elif line.startswith("file_names["):
            idx = int(re.match(r"file_names\[\s*(\d+)\]", line).group(1))
            cur_name = idx
        elif line.strip().startswith("name:") and cur_name is not None:
            files[cur_name] = line.split('"')[1]
        elif line.strip().startswith("dir_index:") and cur_name is not None:
            d = dirs.get(int(line.split()[1]), "")
            if d and not d.startswith("/") and not d.startswith("library/"):
                d = dirs[0] + "/" + d
            files[cur_name] = (d + "/" if d else "") + files[cur_name]
            cur_name = None
        elif line.startswith("0x"):
            p = line.split()
            rows.append((int(p[0], 16), int(p[3]), "end_sequence" in line))
            if "end_sequence" in line:
                flush()
    flush()
    total = sum(sizes.values())
    for k, v in sizes.most_common():
        print(f"  {v:>8} bytes  {v / 1024:6.1f} KiB  {k}")
    print(f"  {total:>8} bytes  {total / 1024:6.1f} KiB  code in the line table")
    if "-v" in sys.argv:
        for k, v in per_file.most_common(40):
            print(f"    {v:>8}  {k}")


if __name__ == "__main__":
    main(sys.argv[1])
