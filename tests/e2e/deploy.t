#!/usr/bin/env bash
# deploy/: the image, the OpenFaaS stack and the Knative Service, read as an
# operator relies on them. No container runtime, OpenFaaS or Kubernetes can
# run here, so nothing is built or deployed: the YAML is read by a real
# parser (python3-yaml, skipped without it, as tests/e2e/openapi.t), the
# Dockerfile by a line parser, and the image's flags are given to this
# build's `replica function` to show it starts with them.
set -euo pipefail
ROOT=${ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$ROOT/tests/lib/tap.sh"
: "${REPLICA:?set REPLICA}"

python3 -c 'import yaml' 2>/dev/null || { echo "1..0 # SKIP python3-yaml is not installed"; exit 0; }

# facts: one "name<TAB>value" line per fact the checks below compare; lists
# are JSON. The parsing is all here so that the checks read plainly.
facts() {
    python3 - "$ROOT" <<'PY'
import json, re, shlex, sys, yaml
root = sys.argv[1]
out = {}
def put(k, v):
    out[k] = v if isinstance(v, str) else json.dumps(v)

# Dockerfile: instructions with continuation lines joined, split per stage.
lines, cur = [], ""
for raw in open(f"{root}/deploy/Dockerfile"):
    s = raw.rstrip("\n")
    if not cur and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append((cur + s).strip()); cur = ""
stages = []
for l in lines:
    op, _, arg = l.partition(" ")
    if op.upper() == "FROM":
        stages.append([])
    stages[-1].append((op.upper(), arg.strip()))
put("docker.stages", len(stages))
put("docker.from", [a.split()[0] for st in stages for o, a in st if o == "FROM"])
final = stages[-1]
def last(op):
    vals = [a for o, a in final if o == op]
    return vals[-1] if vals else ""
put("docker.user", last("USER"))
put("docker.entrypoint", json.loads(last("ENTRYPOINT") or "[]"))
cmd = json.loads(last("CMD") or "[]")
put("docker.cmd", cmd)
put("docker.expose", last("EXPOSE"))
put("docker.volume", last("VOLUME"))
run = " ".join(a for o, a in stages[0] if o == "RUN")
m = re.search(r"SCRIPTS_DIR=(\S+)", run)
put("docker.scripts_built", m.group(1) if m else "")
put("docker.make_targets", [w for w in shlex.split(run.split("make -s", 1)[-1].split("&&")[0]) if "=" not in w])
copies = [a.split() for o, a in final if o == "COPY"]
put("docker.scripts_copied", next((c[-1] for c in copies if c[-2].endswith("/scripts")), ""))
put("docker.binary_copied", next((c[-1] for c in copies if c[-2].endswith("/replica")), ""))

def flag(args, name):
    return args[args.index(name) + 1] if name in args else ""
put("docker.max_inflight", flag(cmd, "--max-inflight"))
put("docker.drain_timeout", flag(cmd, "--drain-timeout"))
put("docker.seal_key_file", flag(cmd, "--seal-key-file"))
put("docker.token_file", flag(cmd, "--token-file"))

st = yaml.safe_load(open(f"{root}/deploy/openfaas/stack.yml"))
fn = st["functions"]["replica"]
put("of.version", str(st["version"]))
put("of.provider", st["provider"]["name"])
put("of.image", fn["image"])
put("of.secrets", fn.get("secrets", []))
put("of.readonly", fn.get("readonly_root_filesystem"))
put("of.env", fn.get("environment", {}))
for k in ("min", "max", "type", "target"):
    put(f"of.scale.{k}", str(fn.get("labels", {}).get(f"com.openfaas.scale.{k}", "")))
put("of.ready_path", fn.get("annotations", {}).get("com.openfaas.ready.http.path", ""))

kn = yaml.safe_load(open(f"{root}/deploy/knative/service.yaml"))
t = kn["spec"]["template"]; ps = t["spec"]; c = ps["containers"][0]
ann = t["metadata"]["annotations"]
put("kn.api", f"{kn['apiVersion']} {kn['kind']}")
put("kn.image", c["image"])
put("kn.command", c.get("command", []))
args = [str(a) for a in c.get("args", [])]
put("kn.max_inflight", flag(args, "--max-inflight"))
put("kn.drain_timeout", flag(args, "--drain-timeout"))
put("kn.seal_key_file", flag(args, "--seal-key-file"))
put("kn.token_file", flag(args, "--token-file"))
put("kn.concurrency", str(ps.get("containerConcurrency", "")))
put("kn.timeout", str(ps.get("timeoutSeconds", "")))
for k in ("min-scale", "max-scale", "target", "metric"):
    put(f"kn.{k}", str(ann.get(f"autoscaling.knative.dev/{k}", "")))
put("kn.ports", [p["containerPort"] for p in c.get("ports", [])])
put("kn.ready", c["readinessProbe"]["httpGet"]["path"])
put("kn.live", c["livenessProbe"]["httpGet"]["path"])
sc = c.get("securityContext", {})
put("kn.security", [sc.get("runAsNonRoot"), sc.get("readOnlyRootFilesystem"), sc.get("allowPrivilegeEscalation")])
put("kn.run_as", str(sc.get("runAsUser", "")))
vols = {v["name"]: v for v in ps.get("volumes", [])}
mounts = {}
for m in c.get("volumeMounts", []):
    v = vols.get(m["name"], {})
    src = v["secret"]["secretName"] if "secret" in v else ("emptyDir" if "emptyDir" in v else "?")
    mounts[m["mountPath"]] = src + ("/" + m["subPath"] if "subPath" in m else "")
put("kn.mounts", mounts)
for k, v in out.items():
    print(f"{k}\t{v}")
PY
}

declare -A F
while IFS=$'\t' read -r k v; do F[$k]=$v; done < <(facts)
ok $((${#F[@]} > 40 ? 0 : 1)) "the three files parse (${#F[@]} facts)"

# The contract of docs/faas.md: its defaults, and the image's install path.
TOKEN=/var/openfaas/secrets/replica-function-token
SEAL=/var/openfaas/secrets/replica-seal-key
like "$(sed -n '/^| `--token-file/p' "$ROOT/docs/faas.md")" "\`$TOKEN\`" "docs/faas.md still names $TOKEN as --token-file's default"

# The image.
is "${F[docker.stages]}" 2 "Dockerfile: a build stage and a runtime stage"
is "${F[docker.from]}" '["debian:12", "debian:12"]' "Dockerfile: both stages FROM debian:12"
like "${F[docker.user]}" '^[1-9][0-9]*(:[0-9]+)?$' "Dockerfile: USER is a numeric UID, not root (${F[docker.user]})"
is "${F[docker.entrypoint]}" '["replica", "function"]' "Dockerfile: ENTRYPOINT runs replica function"
is "${F[docker.binary_copied]}" /usr/local/bin/replica "Dockerfile: the binary is on PATH"
is "${F[docker.scripts_built]}" "" "Dockerfile: no scripts path is compiled in (SCRIPTS_DIR is gone)"
BIN_PREFIX=${F[docker.binary_copied]%/bin/*}
is "${F[docker.scripts_copied]}" "$BIN_PREFIX/share/replica/scripts" "Dockerfile: scripts/ is copied to BIN/../share/replica/scripts, where the binary looks"
is "${F[docker.make_targets]}" '["replica"]' "Dockerfile: builds only the binary (no web console, no Node.js)"
is "${F[docker.expose]}" 8080 "Dockerfile: EXPOSE 8080 (\$PORT's default)"
is "${F[docker.volume]}" /tmp "Dockerfile: /tmp is a volume, the only writable path"
is "${F[docker.seal_key_file]}" "$SEAL" "Dockerfile: CMD's --seal-key-file is the OpenFaaS secret's path"
is "${F[docker.token_file]}" "" "Dockerfile: CMD keeps the default --token-file"

# OpenFaaS.
is "${F[of.version]}/${F[of.provider]}" 1.0/openfaas "stack.yml: version 1.0, provider openfaas"
is "${F[of.secrets]}" '["replica-function-token", "replica-seal-key"]' "stack.yml: the two secrets, named as the image's paths end"
is "/var/openfaas/secrets/$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])[0])' "${F[of.secrets]}")" "$TOKEN" "stack.yml: the token secret lands at --token-file's default"
is "/var/openfaas/secrets/$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])[1])' "${F[of.secrets]}")" "${F[docker.seal_key_file]}" "stack.yml: the key secret lands at the image's --seal-key-file"
is "${F[of.readonly]}" true "stack.yml: readonly_root_filesystem"
# No watchdog in the image: its settings would be inert, and misleading.
is "${F[of.env]}" '{}' "stack.yml: no of-watchdog environment (replica is the workload itself)"
is "${F[of.scale.target]}" "${F[docker.max_inflight]}" "stack.yml: com.openfaas.scale.target = the image's --max-inflight"
is "${F[of.scale.type]}" capacity "stack.yml: scale on capacity (in-flight)"
ok $((${F[of.scale.min]} >= 1 && ${F[of.scale.max]} <= 5 && ${F[of.scale.min]} <= ${F[of.scale.max]} ? 0 : 1)) "stack.yml: 1 <= scale.min <= scale.max <= 5 (CE)"
is "${F[of.ready_path]}" /_/ready "stack.yml: the readiness path is /_/ready"

# Knative.
is "${F[kn.api]}" "serving.knative.dev/v1 Service" "service.yaml: a serving.knative.dev/v1 Service"
img=${F[of.image]#*:-}
is "${F[kn.image]}" "${img%\}}" "service.yaml: the same image as stack.yml's default"
is "${F[kn.image]}" "ghcr.io/OWNER/replica:dev" "service.yaml: the placeholder image"
is "${F[kn.command]}" '[]' "service.yaml: no command, so the image's ENTRYPOINT (replica function) runs"
is "${F[kn.concurrency]}" "${F[kn.max_inflight]}" "service.yaml: containerConcurrency = --max-inflight"
is "${F[kn.max_inflight]}/${F[kn.drain_timeout]}/${F[kn.seal_key_file]}" \
   "${F[docker.max_inflight]}/${F[docker.drain_timeout]}/${F[docker.seal_key_file]}" "service.yaml: args = the image's CMD flags"
is "${F[kn.token_file]}" "" "service.yaml: the default --token-file"
is "${F[kn.target]}" "${F[kn.max_inflight]}" "service.yaml: autoscaling target = --max-inflight"
is "${F[kn.metric]}" concurrency "service.yaml: autoscaling on concurrency"
ok $((${F[kn.min-scale]} >= 0 && ${F[kn.min-scale]} <= ${F[kn.max-scale]} ? 0 : 1)) "service.yaml: min-scale <= max-scale"
# Knative's grace period is timeoutSeconds; the engine ends at drain + 5 s.
ok $((${F[kn.timeout]} >= ${F[kn.drain_timeout]} + 5 ? 0 : 1)) "service.yaml: timeoutSeconds (${F[kn.timeout]}) covers --drain-timeout + 5 s"
ok $((${F[kn.timeout]} <= 600 ? 0 : 1)) "service.yaml: timeoutSeconds within Knative's default maximum (600)"
is "${F[kn.ports]}" '[8080]' "service.yaml: one port, 8080"
is "${F[kn.ready]} ${F[kn.live]}" "/_/ready /_/health" "service.yaml: readiness /_/ready, liveness /_/health"
is "${F[kn.security]}" '[true, true, false]' "service.yaml: runAsNonRoot, readOnlyRootFilesystem, no privilege escalation"
is "${F[kn.run_as]}" "${F[docker.user]%%:*}" "service.yaml: runAsUser = the image's USER"
is "${F[kn.mounts]}" "{\"$TOKEN\": \"replica-function-token/replica-function-token\", \"$SEAL\": \"replica-seal-key/replica-seal-key\", \"/tmp\": \"emptyDir\"}" \
   "service.yaml: the secrets at the token-file and seal-key paths, an emptyDir at /tmp"

# This build accepts the image's flags (the key path swapped for a temp file),
# laid out as the image's COPY lines lay it out, under $W/img, and run from
# another directory without REPLICA_SCRIPTS: it finds its scripts there.
W=$(mktemp -d /tmp/replica-deploy.XXXXXX)
trap 'kill "${PID:-}" 2>/dev/null || true; rm -rf "$W"' EXIT
IMG_BIN=$W/img${F[docker.binary_copied]}
mkdir -p "${IMG_BIN%/*}" "$(dirname "$W/img${F[docker.scripts_copied]}")"
cp "$REPLICA" "$IMG_BIN"
cp -R "$ROOT/scripts" "$W/img${F[docker.scripts_copied]}"
head -c 32 /dev/urandom >"$W/key"; chmod 600 "$W/key"
mapfile -t args < <(python3 -c 'import json,sys;print("\n".join(json.loads(sys.argv[1])))' "${F[docker.cmd]}")
args=("${args[@]/$SEAL/$W/key}")
PORT=$((20000 + RANDOM % 20000))
(cd "$W" && unset REPLICA_SCRIPTS && REPLICA_FUNCTION_TOKEN=t exec "$IMG_BIN" function "${args[@]}" --listen "127.0.0.1:$PORT" >"$W/log" 2>&1) &
PID=$!
ready=""
for _ in $(seq 50); do
    ready=$(curl -s "http://127.0.0.1:$PORT/_/ready" || true)
    [[ -n $ready ]] && break
    sleep 0.1
done
like "$ready" '"status": ?"ready"' "replica function starts with the image's CMD flags"
like "$(cat "$W/log")" "at most ${F[docker.max_inflight]} in flight" "and takes --max-inflight ${F[docker.max_inflight]} from them"
kill "$PID"; wait "$PID" 2>/dev/null || true

done_testing
