#!/usr/bin/env python3
"""Every command line of README.md parses (CTest label `lint`).

Takes each `cairn …` / `cairn-server …` line of the README's code blocks
(also as `$B …`, `$C …`, `$P …` after `B=…/cairn-server` and the like),
expands the README's notation — `[optional]` parts both left out and put
in, `a|b` alternatives each, `…` placeholders dropped, `# comments` and
redirections cut — and runs each resulting command line with `--help`
appended against the built binaries. It must exit 0: both programs refuse an
argument they do not expect even when `--help` is given, so a README line
whose options the program does not take fails here.

    tests/readme_commands_test.py [SOURCE_DIR [BINARY_DIR]]

Defaults: $CAIRN_SOURCE_DIR / $CAIRN_BINARY_DIR, else this checkout and its
build/. CAIRN_README overrides the README's path; `--list` only prints the
command lines.
"""

import itertools
import os
import re
import shlex
import subprocess
import sys

PROGRAMS = ("cairn", "cairn-server")


def code_lines(text):
    """The lines of the README's fenced code blocks, continuations joined
    (a trailing backslash, or an indented line that starts with `[`)."""
    inside = False
    pending = ""
    lines = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif (fenced and re.match(r"^\s+\[", line) and lines
              and not lines[-1].rstrip().endswith("\\")):
            lines[-1] = strip_comment(lines[-1]).rstrip() + " " + line.strip()
            continue
        lines.append(line)
    for line in lines:
        if line.startswith("```"):
            inside = not inside
            pending = ""
            continue
        if not inside:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""


def strip_comment(line):
    """The line without a trailing `# comment` (outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def split_top(text):
    """Splits at ` | ` outside brackets and quotes (alternative subcommands)."""
    parts, depth, quote, cur = [], 0, None, ""
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif (ch == "|" and depth == 0 and text[i - 1:i] == " "
              and text[i + 1:i + 2] == " "):
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    parts.append(cur)
    return parts


def expand_brackets(text):
    """The readings of the `[optional]` parts: all left out, and all put in
    (`[a | b]`: once with each alternative). Nested brackets work from the
    inside out. Every option the README shows is in at least one reading."""
    inner = re.compile(r"\[([^\[\]]*)\]")
    alts = max([len(m.split(" | ")) for m in inner.findall(text)] or [0])
    readings = [inner.sub("", text) if alts else text]
    while inner.search(readings[0]):
        readings[0] = inner.sub("", readings[0])
    for k in range(alts):
        r = text
        while inner.search(r):
            r = inner.sub(lambda m: m.group(1).split(" | ")[min(k, len(m.group(1).split(" | ")) - 1)].strip(), r)
        readings.append(r)
    return list(dict.fromkeys(readings))


# Placeholders of the README's notation that stand for numbers or for a
# file that must exist (any will do for parsing: this script).
NUMBERS = {"S": "60", "N": "16", "MS": "1000", "SECONDS": "60",
           "PEM": os.path.abspath(__file__)}


def expand_alternatives(words):
    """`add|list|remove` as a word: one command line per alternative."""
    options = []
    for w in words:
        if "|" in w and not w.startswith(("'", '"')) and "://" not in w:
            options.append(w.split("|"))
        else:
            options.append([w])
    return [list(c) for c in itertools.product(*options)]


def commands(readme):
    aliases = {}
    out = []
    for raw in code_lines(readme):
        line = strip_comment(raw).strip()
        m = re.match(r"^([A-Z])=(\S+)$", line)
        if m and os.path.basename(m.group(2)) in PROGRAMS:
            aliases["$" + m.group(1)] = os.path.basename(m.group(2))
            continue
        if not line:
            continue
        first = line.split()[0]
        program = aliases.get(first) or (first if first in PROGRAMS else None)
        if program is None:
            continue
        rest = line[len(first):]
        # `$B job list [--output json] | job remove ID | job next …`: the
        # same program, several subcommands.
        for piece in split_top(rest):
            piece = re.split(r"\s[<>]\s*\S+", piece)[0]  # redirections
            for reading in expand_brackets(piece):
                try:
                    words = shlex.split(reading)
                except ValueError as e:
                    raise SystemExit(f"README line not shell syntax: {raw!r}: {e}")
                # `…` alone or in an option's name (`--keep-…`) goes; in a
                # value (`AB:CD:…`) it stands for text.
                words = [NUMBERS.get(w, w.replace("…", "x")) for w in words
                         if "…" not in w or not (w == "…" or w.startswith("-"))]
                for alt in expand_alternatives(words):
                    cmd = [program] + alt
                    if cmd not in out:
                        out.append(cmd)
    return out


def main():
    args = [a for a in sys.argv[1:] if a != "--list"]
    here = os.path.dirname(os.path.abspath(__file__))
    source = args[0] if args else os.environ.get("CAIRN_SOURCE_DIR", os.path.dirname(here))
    binary = (args[1] if len(args) > 1
              else os.environ.get("CAIRN_BINARY_DIR", os.path.join(source, "build")))
    readme = os.environ.get("CAIRN_README", os.path.join(source, "README.md"))
    with open(readme, encoding="utf-8") as f:
        cmds = commands(f.read())
    if "--list" in sys.argv:
        for c in cmds:
            print(shlex.join(c))
        return 0
    paths = {"cairn": os.path.join(binary, "client", "cairn"),
             "cairn-server": os.path.join(binary, "server", "cairn-server")}
    for p in paths.values():
        if not os.access(p, os.X_OK):
            print(f"readme_commands_test: {p} is not built", file=sys.stderr)
            return 1
    if len(cmds) < 10:
        print(f"readme_commands_test: only {len(cmds)} command lines found in {readme}",
              file=sys.stderr)
        return 1
    failed = 0
    env = dict(os.environ, CAIRN_DATA="/nonexistent/cairn-readme-test")
    for c in cmds:
        argv = [paths[c[0]]] + c[1:] + ["--help"]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        if r.returncode != 0:
            failed += 1
            print(f"FAIL (exit {r.returncode}): {shlex.join(c)} --help\n  "
                  + r.stderr.strip().replace("\n", "\n  "))
    print(f"{len(cmds) - failed} of {len(cmds)} README command lines parse")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
