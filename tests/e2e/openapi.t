#!/usr/bin/env bash
# docs/openapi.yaml read by a real YAML parser (python3-yaml, when it is
# installed; spec/openapi_spec.lua checks it against the router without one):
# it parses, it is OpenAPI 3.1, every $ref resolves, and, where the Python
# packages openapi-spec-validator and openapi-schema-validator are present,
# it is a valid OpenAPI document whose examples fit their schemas.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$ROOT/tests/lib/tap.sh"
DOC=$ROOT/docs/openapi.yaml

python3 -c 'import yaml' 2>/dev/null || { echo "1..0 # SKIP python3-yaml is not installed"; exit 0; }

# check NAME: runs one check of the Python below; prints its complaints.
check() {
    python3 - "$DOC" "$1" <<'EOF'
import re, sys, yaml
doc, what = sys.argv[1], sys.argv[2]
try:
    d = yaml.safe_load(open(doc))
except yaml.YAMLError as e:
    sys.exit(f"not YAML: {e}")

def resolve(ref):
    node = d
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node

def refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)

def main():
    if what == "parse":
        if not isinstance(d, dict) or not isinstance(d.get("paths"), dict):
            sys.exit("no paths")
    elif what == "version":
        if not re.fullmatch(r"3\.1\.\d+", str(d.get("openapi"))):
            sys.exit(f"openapi is {d.get('openapi')!r}")
    elif what == "refs":
        bad = [r for r in refs(d) if not str(r).startswith("#/components/") or resolve(r) is None]
        if bad:
            sys.exit("dangling: " + ", ".join(map(str, bad)))
    elif what == "operations":
        ids, bad = {}, []
        for path, ops in d["paths"].items():
            for method, op in ops.items():
                if method in ("parameters", "summary", "description"):
                    continue
                oid = op.get("operationId")
                if not oid or oid in ids or not op.get("responses"):
                    bad.append(f"{method.upper()} {path}")
                ids[oid] = path
        if bad:
            sys.exit("no unique operationId or no responses: " + ", ".join(bad))
    elif what == "validator":
        try:
            from openapi_spec_validator import validate
        except ImportError:
            print("skip")
            sys.exit(0)
        validate(d)
    elif what == "examples":
        try:
            from openapi_schema_validator import OAS31Validator
            from referencing import Registry, Resource
            from referencing.jsonschema import DRAFT202012
        except ImportError:
            print("skip")
            sys.exit(0)
        registry = Registry().with_resource("urn:doc", Resource.from_contents(d, default_specification=DRAFT202012))
        bad = []
        def fits(ptr, value):
            errs = list(OAS31Validator({"$ref": "urn:doc#" + ptr}, registry=registry).iter_errors(value))
            if errs:
                bad.append(f"{ptr}: {errs[0].message[:160]}")
        def esc(k):
            return str(k).replace("~", "~0").replace("/", "~1")
        def walk(node, ptr):
            if isinstance(node, dict):
                if "schema" in node and ("example" in node or "examples" in node):
                    values = [node["example"]] if "example" in node else [e["value"] for e in node["examples"].values()]
                    for v in values:
                        fits(ptr + "/schema", v)
                for k, v in node.items():
                    walk(v, ptr + "/" + esc(k))
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{ptr}/{i}")
        for name, s in d["components"]["schemas"].items():
            if "example" in s:
                fits("/components/schemas/" + name, s["example"])
        walk(d["paths"], "/paths")
        walk(d["components"]["responses"], "/components/responses")
        if bad:
            sys.exit("examples that do not fit: " + "; ".join(bad))

try:
    main()
except SystemExit:
    raise
except Exception as e:  # a validator's error: its first lines, not the whole document
    sys.exit(f"{type(e).__name__}: {str(e)[:300]}")
EOF
}

# run NAME DESCRIPTION: one TAP line for check NAME (skipped when it says so).
run() {
    local out rc=0
    out=$(check "$1" 2>&1) || rc=$?
    if [[ $rc == 0 && $out == skip ]]; then
        ok 0 "$2 # SKIP the Python package is not installed"
        return
    fi
    ok "$rc" "$2"
    [[ $rc == 0 ]] || diag "$(head -c 600 <<<"$out")"
}

run parse "docs/openapi.yaml parses as YAML, with paths"
run version "it is OpenAPI 3.1.x"
run refs "every \$ref names a component that exists"
run operations "every operation has a unique operationId and responses"
run validator "openapi-spec-validator accepts it"
run examples "its examples fit their schemas"
done_testing
