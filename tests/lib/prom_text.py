#!/usr/bin/env python3
"""tests/lib/prom_text.py - a strict reader of the Prometheus text format
(version 0.0.4), for tests/e2e/serve_metrics.t and bench/soak.sh.

    prom_text.py < exposition > samples.json

Reads the exposition on stdin and checks what a scraper relies on: every
line is a comment (# HELP / # TYPE once per family, TYPE before its
samples), a blank line or a sample `name{label="value",...} value`; names
and label names are valid, label values use only the \\\\, \\" and \\n escapes,
values are numbers; a counter's name ends in _total; a histogram's series
have _bucket lines with ascending `le` and non-decreasing counts, a +Inf
bucket equal to _count, and a _sum. On success it prints the samples as a
JSON list of {"name", "labels", "value"}; otherwise it prints what is wrong
on stderr and exits 1.
"""
import json
import math
import re
import sys

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def fail(lineno, msg):
    sys.stderr.write("line %d: %s\n" % (lineno, msg))
    sys.exit(1)


def parse_labels(s, pos, lineno):
    """Parses {a="x",...} from s[pos] == '{'; returns (labels, next pos)."""
    labels = {}
    pos += 1
    while True:
        if s.startswith("}", pos):
            return labels, pos + 1
        m = LABEL.match(s, pos)
        if not m:
            fail(lineno, "bad label name at column %d" % pos)
        name = m.group(0)
        pos = m.end()
        if not s.startswith('="', pos):
            fail(lineno, "label %s: expected =\"" % name)
        pos += 2
        out = []
        while True:
            if pos >= len(s):
                fail(lineno, "label %s: unterminated value" % name)
            c = s[pos]
            if c == "\\":
                nxt = s[pos + 1:pos + 2]
                if nxt not in ("\\", '"', "n"):
                    fail(lineno, "label %s: bad escape \\%s" % (name, nxt))
                out.append("\n" if nxt == "n" else nxt)
                pos += 2
            elif c == '"':
                pos += 1
                break
            elif c == "\n":
                fail(lineno, "label %s: raw newline" % name)
            else:
                out.append(c)
                pos += 1
        if name in labels:
            fail(lineno, "label %s twice" % name)
        labels[name] = "".join(out)
        if s.startswith(",", pos):
            pos += 1
        elif not s.startswith("}", pos):
            fail(lineno, "expected , or } after label %s" % name)


def parse_value(v, lineno):
    if v in ("+Inf", "-Inf", "NaN"):
        return float(v.replace("Inf", "inf").replace("NaN", "nan"))
    try:
        return float(v)
    except ValueError:
        fail(lineno, "bad value %r" % v)


def family_of(name, types):
    """The declared family a sample name belongs to."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[: -len(suffix)]
        if name.endswith(suffix) and types.get(base) == "histogram":
            return base
    return None


def check_histograms(samples, lineno):
    series = {}
    for s in samples:
        if s["type"] != "histogram":
            continue
        key = (s["family"], tuple(sorted((k, v) for k, v in s["labels"].items() if k != "le")))
        h = series.setdefault(key, {"buckets": [], "sum": None, "count": None})
        if s["name"].endswith("_bucket"):
            if "le" not in s["labels"]:
                fail(lineno, "%s: a bucket without le" % s["name"])
            h["buckets"].append((parse_value(s["labels"]["le"], lineno), s["value"]))
        elif s["name"].endswith("_sum"):
            h["sum"] = s["value"]
        else:
            h["count"] = s["value"]
    for (fam, labels), h in series.items():
        what = "%s%s" % (fam, dict(labels))
        les = [b[0] for b in h["buckets"]]
        if les != sorted(les) or len(set(les)) != len(les):
            fail(lineno, "%s: le not ascending" % what)
        counts = [b[1] for b in h["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            fail(lineno, "%s: bucket counts decrease" % what)
        if not les or les[-1] != math.inf:
            fail(lineno, "%s: no +Inf bucket" % what)
        if h["count"] is None or h["sum"] is None:
            fail(lineno, "%s: no _count or _sum" % what)
        if counts[-1] != h["count"]:
            fail(lineno, "%s: +Inf bucket %s != _count %s" % (what, counts[-1], h["count"]))


def main():
    text = sys.stdin.read()
    if text and not text.endswith("\n"):
        fail(0, "the exposition does not end in a newline")
    types, helps, samples, seen = {}, set(), [], set()
    lineno = 0
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME.fullmatch(name):
                    fail(lineno, "bad name %r" % name)
                if parts[1] == "HELP":
                    if name in helps:
                        fail(lineno, "HELP of %s twice" % name)
                    if re.search(r"\\[^\\n]", parts[3] if len(parts) > 3 else ""):
                        fail(lineno, "bad escape in HELP of %s" % name)
                    helps.add(name)
                else:
                    if name in types:
                        fail(lineno, "TYPE of %s twice" % name)
                    if len(parts) != 4 or parts[3] not in TYPES:
                        fail(lineno, "bad TYPE line")
                    if any(s["family"] == name for s in samples):
                        fail(lineno, "TYPE of %s after its samples" % name)
                    if parts[3] == "counter" and not name.endswith("_total"):
                        fail(lineno, "counter %s does not end in _total" % name)
                    types[name] = parts[3]
            continue
        m = NAME.match(line)
        if not m:
            fail(lineno, "bad sample name")
        name, pos = m.group(0), m.end()
        labels = {}
        if line.startswith("{", pos):
            labels, pos = parse_labels(line, pos, lineno)
        if not line.startswith(" ", pos):
            fail(lineno, "expected a space before the value")
        fields = line[pos + 1:].split(" ")
        if len(fields) not in (1, 2):
            fail(lineno, "expected a value and an optional timestamp")
        value = parse_value(fields[0], lineno)
        fam = family_of(name, types)
        if fam is None:
            fail(lineno, "sample %s has no TYPE" % name)
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            fail(lineno, "sample %s%s twice" % (name, labels))
        seen.add(key)
        samples.append({"name": name, "family": fam, "type": types[fam], "labels": labels, "value": value})
    check_histograms(samples, lineno)
    for s in samples:
        del s["family"], s["type"]
    json.dump(samples, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
