#!/usr/bin/env python3
"""The functions of one binary that a callgrind profile shows executed, one (mangled) name a line,
most instructions first: a symbol ordering file for lld (scripts/orderfile-podnetd.sh).

usage: callgrind_functions.py BINARY CALLGRIND_OUT...

Callgrind names each object and function once, with a number, then by the number alone; a cost
line after `calls=` is the callee's inclusive cost and is not the caller's own.
"""
import collections, re, sys

binary, outputs = sys.argv[1], sys.argv[2:]
cost = collections.Counter()
for path in outputs:
    names = {"ob": {}, "fn": {}}
    ours, fn, skip_next = False, None, False
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        m = re.match(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line)
        if m:
            callee, kind, i, name = m.groups()
            if name is not None:
                names[kind][i] = name
            if not callee:
                name = names[kind].get(i)
                if kind == "ob":
                    ours = name == binary
                elif ours and name and not name.startswith("0x") and " " not in name:  # "(below main)"
                    fn = re.sub(r"'\d+$", "", name)
                else:
                    fn = None
            continue
        if line.startswith("calls="):
            skip_next = True
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if skip_next:
                skip_next = False
            elif fn is not None:
                parts = line.split()
                if len(parts) > 1:
                    cost[fn] += int(parts[1])
for name, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0])):
    print(name)
