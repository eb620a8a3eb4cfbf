#!/usr/bin/env python3
"""Offline validation of deploy/: run by scripts/validate-deploy.sh, which installs the tools.

Checks, without a cluster, a Docker engine or the network:
  * every Kustomize overlay (and the examples) renders, and every rendered document validates:
    core kinds against the Kubernetes JSON schemas bundled in kubernetes-validate (strict, so
    unknown fields fail), custom resources against deploy/schemas/ (hand-written CRD subsets);
  * cross-object rules (secret references, selectors, ports, probes, spool, KEDA, network
    policies, image, non-root, env names the code actually reads, policies = topology.rs);
  * the PrometheusRule with `promtool check rules` and `promtool test rules`, and every PromQL
    expression of the dashboard and the KEDA triggers with promtool's parser;
  * every wafleet_* metric those expressions (and the rule tests' input series) name is defined in
    ingest/src/metric.rs, worker/src/metric.rs or fleet/src/metric.rs;
  * the Grafana dashboard JSON, the compose file (Compose Specification schema + structure) and
    the Dockerfile (hadolint + structure).

Exit status 1 and a list of failures if anything is wrong.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import jsonschema
import yaml
from referencing import Registry, Resource

sys.path.insert(0, str(Path(__file__).resolve().parent))
import db_connections  # noqa: E402  (beside this file; its self-test is db_connections_test.py)

# Connection demand of each rendered overlay, checked against the CNPG example's role limits.
DB_DEMAND: dict[str, db_connections.Demand] = {}

# ---------------------------------------------------------------------------------------------
# Facts the manifests must agree with (from the code and the architecture document).

BINARIES = {"wafleet-ingest", "wafleet-worker", "wafleet", "wafleet-admin", "wafleet-sim"}
IMAGE_REPO = "ghcr.io/wafleet/wafleet"
RUN_AS = 10001
# Variables read by the binaries that do not start with WAFLEET_.
EXTERNAL_ENV = {
    "AMQP_URL", "RABBITMQ_API_URL", "DATABASE_URL", "ADMIN_DATABASE_URL", "MIGRATE_DATABASE_URL", "WA_API_KEY", "WA_API_BASE_URL",
    "RUST_LOG", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
}
# WAFLEET_* settings the manifests set before the code reads them (documented in deploy/README.md).
PENDING_ENV: set[str] = set()
SECRET_ENV = {"WAFLEET_SIGNING_KEY", "AMQP_URL", "RABBITMQ_API_URL", "DATABASE_URL", "ADMIN_DATABASE_URL",
              "MIGRATE_DATABASE_URL", "WA_API_KEY"}
OVERLAYS = {  # overlay -> (namespace, ingest kind, worker trigger type)
    "dev": ("wafleet-dev", "Deployment", "rabbitmq"),
    "prod": ("wafleet", "StatefulSet", "rabbitmq"),
    "prod-large-fleet": ("wafleet", "StatefulSet", "prometheus"),
}
# Whether the overlay runs the isolation canary (WAFLEET_CANARY_TENANTS set on the worker).
CANARY = {"dev": False, "prod": True, "prod-large-fleet": True}
# Pods (and namespaces) with this label may call the admin API (NetworkPolicy wafleet-admin).
ADMIN_ACCESS_LABEL = "wafleet.io/admin-access"
ADMIN_PORT = 8082
# Ops ports (health, readiness, metrics; never a public port), by component: (container port name,
# number). Admitted only from Prometheus' namespace and scraped by a ServiceMonitor or PodMonitor.
OPS_PORTS = {"ingest": ("ops", 9080), "worker": ("metrics", 8081), "admin": ("ops", 9082)}
MONITORING_NAMESPACE = {"kubernetes.io/metadata.name": "monitoring"}
INGEST_WEBHOOK_PORT = 8080
# Container ports a monitor may name before the workload declares them (none today).
PENDING_PORTS: set[tuple[str, str]] = set()
# wafleet-admin: OPERATIONS_DRAIN of admin/src/startup.rs, background operations after the server stopped.
ADMIN_OPERATIONS_DRAIN_SECS = 20
# Egress the admin API may have: DNS, OTLP, RabbitMQ AMQP + management API, Postgres, WA Bridges (443).
ADMIN_EGRESS = {("UDP", 53), ("TCP", 53), ("TCP", 4317), ("TCP", 4318), ("TCP", 5672), ("TCP", 15672), ("TCP", 5432), ("TCP", 443)}
REQUIRED_ALERTS = {
    "WafleetDLQGrowing", "WafleetTenantQueueBacklogOld", "WafleetQuarantineNotEmpty", "WafleetIngestSpoolNotEmpty",
    "WafleetTenantQueueNoConsumer", "WafleetUnroutedGrowing", "WafleetSender429Storm", "WafleetIngest5xx",
    "WafleetIngest4xxRate", "WafleetIsolationCanaryFailing", "WafleetIngestTenantSpoolShareFull",
    "WafleetIngestAbsent", "WafleetIngestNotReady", "WafleetRepliesFailedOrExpired", "WafleetRepliesUnknown",
    "WafleetOutboxReplyNearTTL", "WafleetOutboxBacklogBeyondReplyTTL", "WafleetBridgeDisconnected",
    "WafleetAccountKeyUnusable", "WafleetAutoscalerAtMax", "WafleetIngestSpoolHalfFull", "WafleetIngestSpoolNearlyFull",
}
RUNBOOK = "https://github.com/wafleet/wafleet/blob/main/docs/runbooks.md#runbook-"
DASHBOARD_METRICS = [
    "wafleet_ingest_requests_total", "wafleet_ingest_accept_seconds", "rabbitmq_detailed_queue_messages_ready",
    "wa\\\\.dlq\\\\.", "wa.quarantine", "wa.unrouted", "wafleet_worker_processed_total", "wafleet_worker_dropped_total",
    "wafleet_worker_failed_total", "wafleet_sender_sends_total", "wafleet_sender_429_total", "wafleet_ingest_spool_records",
    "wafleet_budget_wait_seconds_bucket", "wafleet_outbox_backlog_minutes", "topk(", "wafleet_ingest_accept_seconds_bucket",
    # Fleet-wide: spool fill, bridges, http bots. One tenant's row ($tenant): its queue, DLQ,
    # oldest message, retries, outbox backlog, sends and bridge.
    "wafleet_ingest_spool_max_bytes", "wafleet_bridges{", "wafleet_http_bot_requests_total",
    'queue="wa.tenant.$tenant"', 'queue="wa.dlq.$tenant"', "rabbitmq_detailed_queue_messages_unacked",
    "rabbitmq_detailed_queue_head_message_timestamp", 'wafleet_worker_retried_total{namespace=~"$namespace", tenant="$tenant"}',
    'wafleet_outbox_tenant_backlog_minutes{namespace=~"$namespace", tenant="$tenant"}',
    'wafleet_sender_sends_total{namespace=~"$namespace", tenant="$tenant"}',
    'wafleet_bridge_connected{namespace=~"$namespace", tenant="$tenant"}',
]
REQUIRED_PRIVATE_EXCEPT = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2", "rbac.authorization.k8s.io/v1"}


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def ok(self, cond: bool, what: str) -> bool:
        if cond:
            self.passed += 1
        else:
            self.failures.append(what)
            print(f"  FAIL {what}", flush=True)
        return cond

    def section(self, title: str) -> None:
        print(f"-- {title}", flush=True)


C = Checker()


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def load_yaml_docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------------------------------------
# Schemas

class Schemas:
    def __init__(self, crd_dir: Path, k8s_versions: list[str]) -> None:
        import kubernetes_validate

        self.base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
        self.crd_dir = crd_dir
        self.versions = k8s_versions
        self._registry: dict[str, tuple[Registry, dict]] = {}
        self._schema_cache: dict[Path, dict] = {}

    def _core(self, version: str, kind: str, api_version: str):
        d = self.base / f"v{version}.0-local-strict"
        if not d.is_dir():
            raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {version}")
        if version not in self._registry:
            defs = json.loads((d / "_definitions.json").read_text())
            self._registry[version] = (Resource.from_contents(defs) @ Registry(), defs)
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
        path = d / f"{kind.lower()}-{api}.json"
        if not path.exists():
            return None, None
        if path not in self._schema_cache:
            self._schema_cache[path] = json.loads(path.read_text())
        schema = self._schema_cache[path]
        registry = Resource.from_contents(schema) @ self._registry[version][0]
        return schema, registry

    def crd_schema(self, api_version: str, kind: str):
        group, _, version = api_version.rpartition("/")
        path = self.crd_dir / group / f"{kind.lower()}_{version}.json"
        if not path.exists():
            return None
        if path not in self._schema_cache:
            self._schema_cache[path] = json.loads(path.read_text())
        return self._schema_cache[path]

    def validate(self, doc: dict, where: str) -> None:
        api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
        name = f"{where}: {kind}/{doc.get('metadata', {}).get('name')}"
        if api in CORE_GROUPS:
            for v in self.versions:
                schema, registry = self._core(v, kind, api)
                if not C.ok(schema is not None, f"{name}: no Kubernetes {v} schema for {api} {kind}"):
                    continue
                errors = sorted(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(doc),
                                key=lambda e: list(e.path))
                C.ok(not errors, f"{name} (Kubernetes {v}): " + "; ".join(
                    f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in errors[:5]))
            return
        schema = self.crd_schema(api, kind)
        if not C.ok(schema is not None, f"{name}: no schema for {api} {kind} in deploy/schemas/"):
            return
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
        C.ok(not errors, f"{name}: " + "; ".join(
            f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message[:300]}" for e in errors[:5]))


# ---------------------------------------------------------------------------------------------
# Helpers over rendered objects

def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    return obj["spec"]["template"]["metadata"].get("labels", {})


def selector_matches(selector: dict, labels: dict) -> bool:
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        val, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and val not in expr.get("values", []):
            return False
        if op == "NotIn" and val in expr.get("values", []):
            return False
        if op == "Exists" and expr["key"] not in labels:
            return False
        if op == "DoesNotExist" and expr["key"] in labels:
            return False
    return True


def containers(obj: dict) -> list[dict]:
    ps = pod_spec(obj)
    return (ps.get("initContainers", []) + ps.get("containers", [])) if ps else []


def env_value(obj_list: list[dict], cm_name: str, var: str):
    for o in obj_list:
        if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == cm_name:
            return o.get("data", {}).get(var)
    return None


# Crates whose sources may read a setting (the worker's service layer lives in fleet/ since the split).
CODE_CRATES = ("ingest", "worker", "fleet", "cli", "shared", "sim", "admin")


def code_mentions(repo: Path) -> str:
    text = []
    for crate in CODE_CRATES:
        for p in (repo / crate).rglob("*.rs"):
            text.append(p.read_text(errors="replace"))
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------
# Kustomize renders

def render(kubectl: str, path: Path) -> list[dict] | None:
    r = run([kubectl, "kustomize", str(path)])
    if not C.ok(r.returncode == 0, f"kustomize build {path} failed:\n{r.stderr.strip()[:2000]}"):
        return None
    return load_yaml_docs(r.stdout)


def check_env_names(where: str, names: set[str], code: str) -> None:
    for n in sorted(names):
        if n.startswith("WAFLEET_"):
            C.ok(n in PENDING_ENV or f'"{n}"' in code,
                 f"{where}: {n} is set but no Rust source under {'/ '.join(CODE_CRATES)}/ reads it (typo?)")
        else:
            C.ok(n in EXTERNAL_ENV, f"{where}: env {n} is neither WAFLEET_* nor a known external variable")


def quantity_bytes(q) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(q))
    if not m:
        raise ValueError(f"quantity {q}")
    mult = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    return int(m.group(1)) * mult[m.group(2)]


def check_overlay(name: str, objs: list[dict], secret_keys: dict[str, set[str]], code: str, promql: list[tuple[str, str]],
                  repo: Path) -> None:
    ns, ingest_kind, worker_trigger = OVERLAYS[name]
    where = f"overlay {name}"
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    names = {key(o) for o in objs}
    C.ok(len(names) == len(objs), f"{where}: duplicate objects")

    C.ok(not by_kind.get("Secret"), f"{where}: renders a Secret ({[key(o) for o in by_kind.get('Secret', [])]}); "
         "secrets must never be committed in a kustomization")
    for o in objs:
        if o["kind"] != "Namespace":
            C.ok(o["metadata"].get("namespace") == ns, f"{where}: {key(o)} is not in namespace {ns}")
        C.ok(o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "wafleet",
             f"{where}: {key(o)} lacks label app.kubernetes.io/part-of=wafleet")
    C.ok(any(o["kind"] == "Namespace" and o["metadata"]["name"] == ns for o in objs), f"{where}: no Namespace {ns}")

    workloads = [o for o in objs if pod_spec(o) is not None]
    cms = {o["metadata"]["name"]: o for o in by_kind.get("ConfigMap", [])}
    configs = {n: o for n, o in cms.items() if n.startswith("wafleet-") and "config" in n}
    if not C.ok({"wafleet-config", "wafleet-ingest-config", "wafleet-worker-config"} <= {re.sub(r"-[a-z0-9]{10}$", "", n) for n in configs},
                f"{where}: wafleet-config, wafleet-ingest-config and wafleet-worker-config ConfigMaps"):
        return
    for n, o in configs.items():
        for k in o.get("data", {}):
            C.ok(k not in SECRET_ENV, f"{where}: secret setting {k} is in ConfigMap {n}")
        check_env_names(f"{where} ConfigMap {n}", set(o.get("data", {})), code)

    def container_env(c: dict) -> dict:
        env = {}
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                env.update(cms.get(ef["configMapRef"]["name"], {}).get("data", {}))
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
        return env

    # --- workloads
    for w in workloads:
        wn = key(w)
        ps = pod_spec(w)
        sc = ps.get("securityContext", {})
        C.ok(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == RUN_AS, f"{where}: {wn} must run as non-root uid {RUN_AS}")
        C.ok(ps.get("automountServiceAccountToken") is False, f"{where}: {wn} mounts a service account token")
        for c in containers(w):
            cn = f"{wn}/{c['name']}"
            C.ok(c.get("image", "").startswith(IMAGE_REPO + ":"), f"{where}: {cn} image {c.get('image')} is not {IMAGE_REPO}:<tag>")
            C.ok(bool(c.get("command")) and c["command"][0] in BINARIES, f"{where}: {cn} command {c.get('command')} is not a wafleet binary")
            csc = c.get("securityContext", {})
            C.ok(csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True
                 and csc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: {cn} securityContext is not locked down")
            C.ok("memory" in c.get("resources", {}).get("limits", {}), f"{where}: {cn} has no memory limit")
            env_names = set()
            for e in c.get("env", []):
                env_names.add(e["name"])
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    C.ok(ref["name"] in secret_keys and ref["key"] in secret_keys[ref["name"]],
                         f"{where}: {cn} env {e['name']} references secret {ref['name']}/{ref['key']} "
                         "missing from deploy/k8s/secret.example.yaml")
                elif e["name"] in SECRET_ENV:
                    C.ok(False, f"{where}: {cn} sets secret {e['name']} inline instead of from a Secret")
            check_env_names(f"{where} {cn}", env_names, code)
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    C.ok(ef["configMapRef"]["name"] in cms, f"{where}: {cn} envFrom ConfigMap {ef['configMapRef']['name']} not rendered")
                C.ok("secretRef" not in ef, f"{where}: {cn} uses envFrom secretRef (reference keys one by one)")

    def workload(kind: str, wname: str):
        return next((o for o in workloads if o["kind"] == kind and o["metadata"]["name"] == wname), None)

    # --- ingest
    ingest = next((o for o in workloads if pod_labels(o).get("app.kubernetes.io/component") == "ingest"), None)
    if C.ok(ingest is not None and ingest["kind"] == ingest_kind, f"{where}: ingest must be a {ingest_kind}"):
        ps = pod_spec(ingest)
        c = ps["containers"][0]
        C.ok(c["command"] == ["wafleet-ingest"], f"{where}: ingest command")
        C.ok(c.get("readinessProbe", {}).get("httpGet", {}) == {"path": "/readyz", "port": "ops"},
             f"{where}: ingest readiness must be /readyz on port ops")
        C.ok(c.get("livenessProbe", {}).get("httpGet", {}) == {"path": "/healthz", "port": "ops"},
             f"{where}: ingest liveness must be /healthz on port ops")
        conf = container_env(c)
        cports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
        C.ok(cports == {"http": INGEST_WEBHOOK_PORT, "ops": OPS_PORTS["ingest"][1]}
             and conf.get("WAFLEET_INGEST_ADDR") == f"0.0.0.0:{INGEST_WEBHOOK_PORT}"
             and conf.get("WAFLEET_INGEST_OPS_ADDR") == f"0.0.0.0:{OPS_PORTS['ingest'][1]}",
             f"{where}: ingest must declare http {INGEST_WEBHOOK_PORT} (WAFLEET_INGEST_ADDR) and ops {OPS_PORTS['ingest'][1]} "
             f"(WAFLEET_INGEST_OPS_ADDR), got ports {cports}")
        spool = conf.get("WAFLEET_SPOOL_DIR")
        mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == spool), None)
        if C.ok(mount is not None, f"{where}: ingest does not mount WAFLEET_SPOOL_DIR={spool}"):
            if ingest_kind == "StatefulSet":
                vct = [v["metadata"]["name"] for v in ingest["spec"].get("volumeClaimTemplates", [])]
                C.ok(mount["name"] in vct, f"{where}: ingest spool is not a volumeClaimTemplate")
            else:
                vol = next((v for v in ps.get("volumes", []) if v["name"] == mount["name"]), {})
                C.ok("emptyDir" in vol, f"{where}: dev ingest spool must be an emptyDir")
            size = None
            if ingest_kind == "StatefulSet":
                vct = next((v for v in ingest["spec"].get("volumeClaimTemplates", []) if v["metadata"]["name"] == mount["name"]), {})
                size = vct.get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
            else:
                size = next((v for v in ps.get("volumes", []) if v["name"] == mount["name"]), {}).get("emptyDir", {}).get("sizeLimit")
            max_bytes = int(conf.get("WAFLEET_SPOOL_MAX_BYTES", 1 << 30))
            C.ok(size is not None and quantity_bytes(size) > max_bytes,
                 f"{where}: spool volume ({size}) must be larger than WAFLEET_SPOOL_MAX_BYTES ({max_bytes})")
        check_startup_budget(where, c, int(conf.get("WAFLEET_SPOOL_MAX_BYTES", 1 << 30)), repo)
        pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        script = " ".join(pre)
        bound = re.search(r'-lt\s+(\d+)', script)
        grace = ps.get("terminationGracePeriodSeconds", 30)
        C.ok("WAFLEET_SPOOL_DIR" in script and bound is not None,
             f"{where}: ingest preStop must wait on $WAFLEET_SPOOL_DIR with a bound")
        glob = re.search(r"-name '([^']+)'", script)
        writer = (repo / "ingest/src/spool/writer.rs")
        seg = re.search(r'format!\("([^"{]*)\{seq:0\d+\}([^"]*)"\)', writer.read_text()) if writer.exists() else None
        C.ok(glob is not None and seg is not None and glob.group(1) == f"{seg.group(1)}*{seg.group(2)}",
             f"{where}: preStop glob {glob.group(1) if glob else None} must match the segment files of ingest/src/spool/writer.rs")
        if bound:
            drain = int(conf.get("WAFLEET_SHUTDOWN_DRAIN_SECS", "10"))
            C.ok(grace >= int(bound.group(1)) + drain + 10,
                 f"{where}: ingest terminationGracePeriodSeconds {grace} must cover the preStop bound {bound.group(1)}s "
                 f"+ WAFLEET_SHUTDOWN_DRAIN_SECS {drain}s + 10s")
        sh = run(["sh", "-n", "-c", pre[-1]]) if pre else None
        C.ok(sh is not None and sh.returncode == 0, f"{where}: ingest preStop script is not valid sh: {sh.stderr if sh else ''}")

    # --- worker
    worker = workload("Deployment", "wafleet-worker")
    if C.ok(worker is not None, f"{where}: no Deployment wafleet-worker"):
        ps = pod_spec(worker)
        c = ps["containers"][0]
        C.ok(c["command"] == ["wafleet-worker"], f"{where}: worker command")
        C.ok(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{where}: worker liveness must be /healthz")
        conf = container_env(c)
        drain = (int(conf.get("WAFLEET_BOT_TIMEOUT_MS", "10000")) + int(conf.get("WAFLEET_SEND_TIMEOUT_MS", "10000"))) / 1000
        C.ok(ps.get("terminationGracePeriodSeconds", 30) > drain + 5,
             f"{where}: worker terminationGracePeriodSeconds must exceed the drain ({drain}s)")

    # --- migration Job
    job = workload("Job", "wafleet-migrate")
    if C.ok(job is not None, f"{where}: no Job wafleet-migrate"):
        c = pod_spec(job)["containers"][0]
        C.ok(c["command"] == ["wafleet", "migrate"], f"{where}: migration Job must run `wafleet migrate`")
        mig = next((e for e in c.get("env", []) if e["name"] == "MIGRATE_DATABASE_URL"), None)
        C.ok(mig is not None and "secretKeyRef" in mig.get("valueFrom", {}), f"{where}: Job needs MIGRATE_DATABASE_URL from a Secret")
        # migrate creates and grants both duty roles, so it names both (fleet/src/db/roles.rs).
        job_env = {e["name"]: e for e in c.get("env", [])}
        for n in ("DATABASE_URL", "ADMIN_DATABASE_URL"):
            C.ok("secretKeyRef" in job_env.get(n, {}).get("valueFrom", {}), f"{where}: Job needs {n} from a Secret")

    # --- the migrate phase (deploy/README.md "Order"): the Job and all it needs apply first
    phase = {key(o) for o in objs if o["metadata"].get("labels", {}).get("wafleet.io/phase") == "migrate"}
    if job is not None:
        needs = {f"Namespace/{ns}", f"ServiceAccount/{pod_spec(job).get('serviceAccountName')}", key(job)}
        needs |= {f"ConfigMap/{ef['configMapRef']['name']}" for c in containers(job) for ef in c.get("envFrom", []) if "configMapRef" in ef}
        needs |= {key(n) for n in by_kind.get("NetworkPolicy", [])}
        C.ok(needs <= phase, f"{where}: label wafleet.io/phase=migrate missing on {sorted(needs - phase)}")
        # Argo CD runs the same order: what the Job needs in wave -2, the Job (a Sync hook that
        # replaces its predecessor) in wave -1, everything else after it.
        ann = job["metadata"].get("annotations", {})
        C.ok(ann.get("argocd.argoproj.io/hook") == "Sync" and ann.get("argocd.argoproj.io/sync-wave") == "-1"
             and ann.get("argocd.argoproj.io/hook-delete-policy") == "BeforeHookCreation",
             f"{where}: the migration Job must be an Argo CD Sync hook in wave -1 with hook-delete-policy BeforeHookCreation")
        for o in objs:
            wave = o["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave")
            if key(o) in phase and o is not job:
                C.ok(wave == "-2", f"{where}: {key(o)} is needed by the migration Job: Argo CD sync-wave must be -2, not {wave}")
            elif o is not job:
                C.ok(wave is None, f"{where}: {key(o)} must sync after the migration Job (no sync-wave below 0), has {wave}")

    # --- services, monitors, PDBs
    for s in by_kind.get("Service", []):
        sel = s["spec"].get("selector", {})
        targets = [w for w in workloads if w["kind"] != "Job" and all(pod_labels(w).get(k) == v for k, v in sel.items())]
        if C.ok(bool(sel) and len(targets) == 1, f"{where}: {key(s)} selects {len(targets)} workloads"):
            ports = {p.get("name") for c in pod_spec(targets[0])["containers"] for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort")
                C.ok(not isinstance(tp, str) or tp in ports, f"{where}: {key(s)} targetPort {tp} is not a container port")
    for pm in by_kind.get("PodMonitor", []):
        pods = [w for w in workloads if w["kind"] != "Job" and selector_matches(pm["spec"]["selector"], pod_labels(w))]
        if C.ok(len(pods) == 1, f"{where}: {key(pm)} selects {len(pods)} workloads (want exactly 1)"):
            component = pod_labels(pods[0]).get("app.kubernetes.io/component")
            names_ = {p.get("name") for c in containers(pods[0]) for p in c.get("ports", [])}
            for ep in pm["spec"]["podMetricsEndpoints"]:
                pending = (component, ep.get("port")) in PENDING_PORTS and ep.get("port") not in names_
                if pending:
                    print(f"  note {where}: {key(pm)} names port {ep.get('port')}, not declared by {key(pods[0])} yet (pending)")
                C.ok(ep.get("port") in names_ or pending, f"{where}: {key(pm)} endpoint port {ep.get('port')} not on {key(pods[0])}")
    for sm in by_kind.get("ServiceMonitor", []):
        svcs = [s for s in by_kind.get("Service", []) if selector_matches(sm["spec"]["selector"], s["metadata"].get("labels", {}))]
        if C.ok(len(svcs) == 1, f"{where}: {key(sm)} selects {len(svcs)} Services (want exactly 1)"):
            names_ = {p.get("name") for p in svcs[0]["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                C.ok(ep.get("port") in names_, f"{where}: {key(sm)} endpoint port {ep.get('port')} not on {key(svcs[0])}")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        C.ok(any(selector_matches(pdb["spec"]["selector"], pod_labels(w)) for w in workloads if w["kind"] != "Job"),
             f"{where}: {key(pdb)} selects no workload")
    C.ok({"wafleet-ingest", "wafleet-worker", "wafleet-admin"} <= {p["metadata"]["name"] for p in by_kind.get("PodDisruptionBudget", [])},
         f"{where}: PDBs for ingest, worker and admin")

    # --- KEDA
    sos = {o["metadata"]["name"]: o for o in by_kind.get("ScaledObject", [])}
    tas = {o["metadata"]["name"]: o for o in by_kind.get("TriggerAuthentication", [])}
    C.ok(not by_kind.get("HorizontalPodAutoscaler"), f"{where}: HPAs are made by KEDA, not committed")
    for so in sos.values():
        ref = so["spec"]["scaleTargetRef"]
        C.ok(workload(ref.get("kind", "Deployment"), ref["name"]) is not None,
             f"{where}: {key(so)} targets missing {ref.get('kind')}/{ref['name']}")
        for t in so["spec"]["triggers"]:
            ar = t.get("authenticationRef")
            if ar:
                C.ok(ar["name"] in tas, f"{where}: {key(so)} uses missing TriggerAuthentication {ar['name']}")
            if t["type"] == "prometheus":
                promql.append((f"{where} {key(so)} trigger {t.get('name')}", t["metadata"]["query"]))
                C.ok(t["metadata"]["serverAddress"].startswith("http"), f"{where}: {key(so)} serverAddress")
    for ta in tas.values():
        for r in ta["spec"].get("secretTargetRef", []):
            C.ok(r["name"] in secret_keys and r["key"] in secret_keys[r["name"]],
                 f"{where}: {key(ta)} references secret {r['name']}/{r['key']} missing from secret.example.yaml")
    wso = sos.get("wafleet-worker")
    if C.ok(wso is not None, f"{where}: no ScaledObject for the worker"):
        C.ok(wso["spec"].get("minReplicaCount", 0) >= 1, f"{where}: worker minReplicaCount must be >= 1 (sender, reconciler)")
        t = wso["spec"]["triggers"]
        C.ok(len(t) == 1 and t[0]["type"] == worker_trigger, f"{where}: worker trigger must be {worker_trigger}")
        if t and t[0]["type"] == "rabbitmq":
            md = t[0]["metadata"]
            C.ok(md.get("queueName") == r"^wa\.tenant\..*" and md.get("useRegex") == "true" and md.get("operation") == "sum"
                 and md.get("mode") == "QueueLength" and md.get("protocol") == "http",
                 f"{where}: worker rabbitmq trigger must sum QueueLength over ^wa\\.tenant\\..* (regex, http)")
        if t and t[0]["type"] == "prometheus":
            q = t[0]["metadata"]["query"]
            C.ok("rabbitmq_detailed_queue_messages" in q and 'queue=~"wa\\\\.tenant\\\\..*"' in q,
                 f"{where}: worker prometheus trigger must sum rabbitmq_detailed_queue_messages over wa\\\\.tenant\\\\..*")
    iso = sos.get("wafleet-ingest")
    if C.ok(iso is not None, f"{where}: no ScaledObject for ingest"):
        t = iso["spec"]["triggers"]
        C.ok(len(t) == 1 and t[0]["type"] == "prometheus" and "wafleet_ingest_requests_total" in t[0]["metadata"]["query"]
             and f'namespace="{ns}"' in t[0]["metadata"]["query"],
             f"{where}: ingest must scale on rate(wafleet_ingest_requests_total) of namespace {ns}")

    # --- NetworkPolicies
    nps = {o["metadata"]["name"]: o for o in by_kind.get("NetworkPolicy", [])}
    deny = [n for n in nps.values() if set(n["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not n["spec"].get("ingress") and not n["spec"].get("egress")]
    C.ok(any(all(selector_matches(d["spec"]["podSelector"], pod_labels(w)) for w in workloads) for d in deny),
         f"{where}: no default-deny NetworkPolicy covering every wafleet workload")

    def egress_ports(w: dict) -> list[tuple[dict, set]]:
        out = []
        for n in nps.values():
            if selector_matches(n["spec"]["podSelector"], pod_labels(w)):
                for rule in n["spec"].get("egress", []):
                    out.append((rule, {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}))
        return out

    for w in workloads:
        ports = set().union(*[p for _, p in egress_ports(w)]) if egress_ports(w) else set()
        C.ok({("UDP", 53), ("TCP", 53)} <= ports, f"{where}: {key(w)} cannot reach DNS")
        C.ok({("TCP", 4317), ("TCP", 4318)} <= ports, f"{where}: {key(w)} cannot reach the OTLP collector")
    if ingest is not None:
        ports = set().union(*[p for _, p in egress_ports(ingest)])
        C.ok(ports == {("UDP", 53), ("TCP", 53), ("TCP", 4317), ("TCP", 4318), ("TCP", 5672)},
             f"{where}: ingest egress must be DNS, OTLP and RabbitMQ 5672 only (got {sorted(ports, key=str)})")
        check_webhook_ingress(where, nps, ingest, workloads)
    if worker is not None:
        rules = egress_ports(worker)
        ports = set().union(*[p for _, p in rules])
        C.ok({("TCP", 5672), ("TCP", 15672), ("TCP", 5432), ("TCP", 443)} <= ports, f"{where}: worker egress RabbitMQ/Postgres/443")
        https = [r for r, p in rules if ("TCP", 443) in p]
        C.ok(bool(https) and all(all("ipBlock" in t for t in r.get("to", [])) and r.get("to") for r in https)
             and any(t["ipBlock"]["cidr"] == "0.0.0.0/0" and REQUIRED_PRIVATE_EXCEPT <= set(t["ipBlock"].get("except", []))
                     for r in https for t in r["to"]),
             f"{where}: worker 443 egress must be 0.0.0.0/0 minus the private/link-local ranges")
        # One source for the ports an http bot may use: every port WAFLEET_HTTP_BOT_PORTS allows
        # (the ConfigMap's value, else the worker's default) must be open to public addresses, or
        # a bot on it passes the SSRF guard, times out and its messages go through every retry tier.
        bot_ports = container_env(pod_spec(worker)["containers"][0]).get("WAFLEET_HTTP_BOT_PORTS")
        if bot_ports is None:
            m = re.search(r'env = "WAFLEET_HTTP_BOT_PORTS", default_value = "([0-9,]+)"', (repo / "worker/src/config.rs").read_text())
            bot_ports = m.group(1) if m else ""
        public = {p for r, ps in rules for p in ps
                  if r.get("to") and any(t.get("ipBlock", {}).get("cidr") == "0.0.0.0/0" for t in r["to"])}
        for port in filter(None, (x.strip() for x in bot_ports.split(","))):
            C.ok(("TCP", int(port)) in public,
                 f"{where}: WAFLEET_HTTP_BOT_PORTS allows {port} but the worker's egress to public addresses does not")
    def ingress_rules(w: dict) -> list[dict]:
        return [r for n in nps.values() if selector_matches(n["spec"]["podSelector"], pod_labels(w))
                for r in n["spec"].get("ingress", [])]

    # --- isolation canary on the worker
    if worker is not None:
        c = pod_spec(worker)["containers"][0]
        conf = container_env(c)
        refs = {e["name"]: (e.get("valueFrom") or {}).get("secretKeyRef") for e in c.get("env", [])}
        canary_on = bool(conf.get("WAFLEET_CANARY_TENANTS", "").strip())
        C.ok(canary_on == CANARY[name], f"{where}: the isolation canary must be {'on' if CANARY[name] else 'off'} "
             "(WAFLEET_CANARY_TENANTS in wafleet-worker-config)")
        if canary_on:
            C.ok((refs.get("WAFLEET_SIGNING_KEY") or {}).get("key") == "signing-key",
                 f"{where}: the canary needs WAFLEET_SIGNING_KEY on the worker from wafleet-secrets/signing-key "
                 "(component worker-canary)")
            chat = conf.get("WAFLEET_CANARY_CHAT", "")
            C.ok(re.fullmatch(r"\d{6,20}|[\d-]+@g\.us", chat) is not None,
                 f"{where}: WAFLEET_CANARY_CHAT {chat!r} must be 6-20 digits or a group JID (worker/src/canary.rs)")
            for k in ("WAFLEET_CANARY_INTERVAL_SECS", "WAFLEET_CANARY_TIMEOUT_SECS"):
                C.ok(int(conf.get(k, "1") or "1") > 0, f"{where}: {k} must be > 0")
            url = conf.get("WAFLEET_CANARY_INGEST_URL", "")
            m = re.fullmatch(r"(https?)://([^/:]+)(?::(\d+))?/?", url)
            if C.ok(m is not None, f"{where}: WAFLEET_CANARY_INGEST_URL {url!r} must be an http(s) base URL"):
                host = m.group(2)
                svc_name = host.split(".")[0]
                in_cluster = "." not in host or host.endswith((".svc", ".svc.cluster.local"))
                if in_cluster:
                    svc = next((s for s in by_kind.get("Service", []) if s["metadata"]["name"] == svc_name), None)
                    port = int(m.group(3) or (443 if m.group(1) == "https" else 80))
                    C.ok(svc is not None and ingest is not None
                         and all(pod_labels(ingest).get(k) == v for k, v in svc["spec"].get("selector", {}).items())
                         and any(p["port"] == port for p in svc["spec"]["ports"]),
                         f"{where}: WAFLEET_CANARY_INGEST_URL {url} must name the ingest Service and one of its ports")
                    to_ingest = [p for r, p in egress_ports(worker)
                                 if any("ipBlock" not in t and "namespaceSelector" not in t
                                        and selector_matches(t.get("podSelector", {}), pod_labels(ingest)) for t in r.get("to", []))]
                    C.ok(any(("TCP", 8080) in p for p in to_ingest),
                         f"{where}: the canary posts to ingest in the cluster but no NetworkPolicy lets the worker reach "
                         "the ingest pods on 8080 (component worker-canary)")
                    from_worker = [r for n in nps.values() if selector_matches(n["spec"]["podSelector"], pod_labels(ingest))
                                   for r in n["spec"].get("ingress", [])
                                   if INGEST_WEBHOOK_PORT in {p.get("port") for p in r.get("ports", [])}
                                   and any(set(f) == {"podSelector"} and selector_matches(f["podSelector"], pod_labels(worker))
                                           for f in r.get("from", []))]
                    C.ok(bool(from_worker), f"{where}: the canary posts to ingest in the cluster but no NetworkPolicy admits "
                         "the worker on the ingest pods' 8080 (component worker-canary)")
        else:
            C.ok("WAFLEET_SIGNING_KEY" not in refs,
                 f"{where}: the worker holds WAFLEET_SIGNING_KEY without the canary (it could mint any tenant's URL)")

    # --- admin API: internal only
    admin = workload("Deployment", "wafleet-admin")
    if C.ok(admin is not None, f"{where}: no Deployment wafleet-admin"):
        ps = pod_spec(admin)
        c = ps["containers"][0]
        C.ok(c["command"] == ["wafleet-admin"], f"{where}: admin command")
        C.ok(1 <= admin["spec"].get("replicas", 1) <= 2, f"{where}: admin replicas must be 1-2")
        C.ok(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", f"{where}: admin readiness must be /readyz")
        C.ok(c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", f"{where}: admin liveness must be /healthz")
        conf = container_env(c)
        addr = conf.get("WAFLEET_ADMIN_ADDR", "127.0.0.1:8082")
        ports = {p.get("containerPort") for p in c.get("ports", [])}
        C.ok(addr == f"0.0.0.0:{ADMIN_PORT}" and ADMIN_PORT in ports,
             f"{where}: admin must listen on 0.0.0.0:{ADMIN_PORT} (WAFLEET_ADMIN_ADDR={addr}) and declare that port")
        refs = {e["name"]: (e.get("valueFrom") or {}).get("secretKeyRef") for e in c.get("env", [])}
        for n in ("ADMIN_DATABASE_URL", "AMQP_URL", "RABBITMQ_API_URL", "WAFLEET_SIGNING_KEY", "WA_API_KEY"):
            C.ok(refs.get(n) is not None, f"{where}: admin needs {n} from a Secret")
        C.ok("DATABASE_URL" not in refs, f"{where}: admin must not hold the worker's DATABASE_URL (a role per duty)")
        if worker is not None:
            wconf = container_env(pod_spec(worker)["containers"][0])
            for k in ("WA_API_BASE_URL", "WAFLEET_SEND_RATE_PER_MIN", "WAFLEET_SEND_BURST", "WAFLEET_BUDGET_WINDOW_SECS",
                      "WAFLEET_SEND_TIMEOUT_MS", "WAFLEET_EGRESS_RATE_PER_MIN", "WAFLEET_EGRESS_BURST"):
                C.ok(conf.get(k) == wconf.get(k), f"{where}: admin {k}={conf.get(k)} differs from the worker's ({wconf.get(k)}): "
                     "the send budget is the fleet's")
        drain = int(conf.get("WAFLEET_ADMIN_BUDGET_WAIT_SECS", "10")) + int(conf.get("WAFLEET_SEND_TIMEOUT_MS", "10000")) / 1000
        C.ok(ps.get("terminationGracePeriodSeconds", 30) >= drain + ADMIN_OPERATIONS_DRAIN_SECS + 5,
             f"{where}: admin terminationGracePeriodSeconds must cover a request ({drain}s) + {ADMIN_OPERATIONS_DRAIN_SECS}s of operations")
        for s_ in by_kind.get("Service", []):
            if all(pod_labels(admin).get(k) == v for k, v in s_["spec"].get("selector", {}).items()):
                C.ok(s_["spec"].get("type", "ClusterIP") == "ClusterIP", f"{where}: {key(s_)} exposes the admin API beyond the cluster")
                C.ok(not any(selector_matches(sm["spec"]["selector"], s_["metadata"].get("labels", {}))
                             for sm in by_kind.get("ServiceMonitor", [])),
                     f"{where}: a ServiceMonitor selects {key(s_)}, the API's Service; the admin API's metrics are on its "
                     "ops port (PodMonitor wafleet-admin)")
        ops_ports = [p for p in pod_spec(admin)["containers"][0].get("ports", []) if p.get("name") == "ops"]
        C.ok(bool(ops_ports) and conf.get("WAFLEET_ADMIN_OPS_ADDR", "").endswith(f":{ops_ports[0]['containerPort']}")
             and conf.get("WAFLEET_ADMIN_OPS_ADDR", "").startswith("0.0.0.0:"),
             f"{where}: the admin container's port `ops` must be WAFLEET_ADMIN_OPS_ADDR's, bound on 0.0.0.0 "
             f"({conf.get('WAFLEET_ADMIN_OPS_ADDR')})")
        C.ok(not by_kind.get("Ingress"), f"{where}: renders an Ingress; the admin API must not be routed from outside, "
             "and the webhook's route is the operator's")
        # The API port's rules; the ops port's are check_ops_ports'.
        rules = [r for r in ingress_rules(admin) if not r.get("ports") or ADMIN_PORT in {p.get("port") for p in r["ports"]}]
        peers_ok = bool(rules)
        for r in rules:
            peers = r.get("from", [])
            peers_ok &= bool(peers) and {p.get("port") for p in r.get("ports", [])} == {ADMIN_PORT}
            for peer in peers:
                pl = peer.get("podSelector", {}).get("matchLabels", {})
                nl = peer.get("namespaceSelector", {}).get("matchLabels", {}) if "namespaceSelector" in peer else None
                peers_ok &= pl.get(ADMIN_ACCESS_LABEL) == "true" and "ipBlock" not in peer \
                    and (nl is None or nl.get(ADMIN_ACCESS_LABEL) == "true")
        C.ok(peers_ok, f"{where}: admin ingress must be {ADMIN_PORT} only, from pods labelled {ADMIN_ACCESS_LABEL}=true "
             "(in namespaces with the same label)")
        aports = set().union(*[p for _, p in egress_ports(admin)]) if egress_ports(admin) else set()
        C.ok({("TCP", 5672), ("TCP", 15672), ("TCP", 5432), ("TCP", 443)} <= aports <= ADMIN_EGRESS,
             f"{where}: admin egress must be DNS, OTLP, RabbitMQ 5672/15672, Postgres 5432 and 443 (got {sorted(aports, key=str)})")
        https = [r for r, p in egress_ports(admin) if ("TCP", 443) in p]
        C.ok(all(r.get("to") and all("ipBlock" in t and (t["ipBlock"]["cidr"] != "0.0.0.0/0"
                                                          or REQUIRED_PRIVATE_EXCEPT <= set(t["ipBlock"].get("except", [])))
                                     for t in r["to"]) for r in https),
             f"{where}: admin 443 egress must be public addresses only (0.0.0.0/0 minus the private/link-local ranges)")

    if worker is not None and admin is not None and wso is not None:
        DB_DEMAND[name] = db_connections.demand(
            container_env(pod_spec(worker)["containers"][0]), int(wso["spec"].get("maxReplicaCount", 100)),
            container_env(pod_spec(admin)["containers"][0]), int(admin["spec"].get("replicas", 1)),
            db_connections.leader_duties(repo))

    check_ops_ports(where, nps, workloads, by_kind)

    # --- dashboard ConfigMap = file
    dash = next((o for n, o in cms.items() if n == "wafleet-grafana-dashboard"), None)
    if C.ok(dash is not None, f"{where}: no dashboard ConfigMap"):
        C.ok(dash["metadata"].get("labels", {}).get("grafana_dashboard") == "1", f"{where}: dashboard ConfigMap label grafana_dashboard=1")


def check_startup_budget(where: str, c: dict, max_bytes: int, repo: Path) -> None:
    """Ingest replays its whole spool before it serves: the startup probe must allow the overlay's
    WAFLEET_SPOOL_MAX_BYTES at the replay budget docs/deployment.md states, plus the start margin."""
    m = re.search(r"Replay budget: (\d+) s per GiB, plus (\d+) s", (repo / "docs/deployment.md").read_text())
    if not C.ok(m is not None, "docs/deployment.md states no \"Replay budget: N s per GiB, plus M s\""):
        return
    per_gib, margin = int(m.group(1)), int(m.group(2))
    sp = c.get("startupProbe", {})
    C.ok(sp.get("httpGet") == {"path": "/healthz", "port": "ops"}, f"{where}: ingest needs a startupProbe on /healthz, port ops")
    budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
    need = max_bytes / (1 << 30) * per_gib + margin
    C.ok(budget >= need, f"{where}: ingest startupProbe allows {budget} s, but replaying a full spool "
         f"(WAFLEET_SPOOL_MAX_BYTES={max_bytes}) needs {need:.0f} s ({per_gib} s per GiB + {margin} s)")


def policy_ingress(nps: dict, w: dict) -> list[dict]:
    """Every ingress rule of every NetworkPolicy that selects workload `w`'s pods."""
    return [r for n in nps.values() if selector_matches(n["spec"]["podSelector"], pod_labels(w))
            for r in n["spec"].get("ingress", [])]


def admits(rule: dict, port: int) -> bool:
    return not rule.get("ports") or port in {p.get("port") for p in rule["ports"]}


def check_webhook_ingress(where: str, nps: dict, ingest: dict, workloads: list[dict]) -> None:
    """The webhook port is reached through the ingress controller: a namespace selector, never
    "from anywhere" or an ipBlock; the only other peer allowed is the worker (isolation canary)."""
    rules = [r for r in policy_ingress(nps, ingest) if admits(r, INGEST_WEBHOOK_PORT)]
    worker = next((w for w in workloads if pod_labels(w).get("app.kubernetes.io/component") == "worker"), None)

    def allowed(peer: dict) -> bool:
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer:
            ns = peer["namespaceSelector"]
            return bool(ns.get("matchLabels") or ns.get("matchExpressions")) and ns.get("matchLabels") != MONITORING_NAMESPACE
        return worker is not None and selector_matches(peer.get("podSelector", {}), pod_labels(worker))

    C.ok(any(any("namespaceSelector" in f for f in r.get("from", [])) for r in rules),
         f"{where}: ingest must admit the webhook port {INGEST_WEBHOOK_PORT} from the ingress controller's namespace")
    for r in rules:
        C.ok(bool(r.get("from")) and all(allowed(f) for f in r["from"]),
             f"{where}: ingest webhook port {INGEST_WEBHOOK_PORT} admitted from {r.get('from') or 'anywhere'}; only the "
             "ingress controller's namespace (a non-empty namespaceSelector) and the canary's worker pods may reach it")
        C.ok(bool(r.get("ports")), f"{where}: an ingest ingress rule without ports admits every port, ops included")


def check_ops_ports(where: str, nps: dict, workloads: list[dict], by_kind: dict) -> None:
    """Each workload's ops port: admitted only from the monitoring namespace, and scraped."""
    services = by_kind.get("Service", [])
    for w in workloads:
        component = pod_labels(w).get("app.kubernetes.io/component")
        if w["kind"] == "Job" or component not in OPS_PORTS:
            continue
        name, number = OPS_PORTS[component]
        declared = {p.get("name"): p.get("containerPort") for c in containers(w) for p in c.get("ports", [])}
        pending = (component, name) in PENDING_PORTS and name not in declared
        C.ok(declared.get(name) == number or pending, f"{where}: {key(w)} must declare its ops port {name} {number}")
        rules = [r for r in policy_ingress(nps, w) if admits(r, number)]
        C.ok(any(r.get("from") for r in rules), f"{where}: no NetworkPolicy lets Prometheus reach {key(w)} on {name} {number}")
        for r in rules:
            C.ok(bool(r.get("from")) and all(set(f) <= {"namespaceSelector", "podSelector"}
                                             and f.get("namespaceSelector", {}).get("matchLabels") == MONITORING_NAMESPACE
                                             for f in r["from"]),
                 f"{where}: {key(w)} ops port {number} admitted from {r.get('from') or 'anywhere'}; only the monitoring "
                 f"namespace ({MONITORING_NAMESPACE}) may reach it")
        scraped = any(ep.get("port") == name for pm in by_kind.get("PodMonitor", [])
                      if selector_matches(pm["spec"]["selector"], pod_labels(w)) for ep in pm["spec"]["podMetricsEndpoints"])
        for sm in by_kind.get("ServiceMonitor", []):
            for svc in services:
                if not (selector_matches(sm["spec"]["selector"], svc["metadata"].get("labels", {}))
                        and all(pod_labels(w).get(k) == v for k, v in svc["spec"].get("selector", {}).items())):
                    continue
                targets = {p.get("name"): p.get("targetPort") for p in svc["spec"]["ports"]}
                scraped |= any(targets.get(ep.get("port")) in (name, number) for ep in sm["spec"]["endpoints"])
                C.ok(all(targets.get(ep.get("port")) in (name, number) for ep in sm["spec"]["endpoints"]),
                     f"{where}: {key(sm)} scrapes {key(w)} on a port other than its ops port {name}")
        C.ok(scraped, f"{where}: no ServiceMonitor or PodMonitor scrapes {key(w)} on its ops port {name}")


def check_spool_drain_job(docs: list[dict], secret_keys: dict[str, set[str]]) -> None:
    """The Job that drains a removed replica's spool PVC runs `wafleet-ingest drain` on the mounted
    PVC with ingest's broker credentials, locked down, and is no endpoint of the webhook Service."""
    where = "spool-drain-job.yaml"
    if not C.ok(len(docs) == 1 and docs[0]["kind"] == "Job", f"{where}: one Job"):
        return
    job = docs[0]
    ps = pod_spec(job)
    c = ps["containers"][0]
    mount = next((m for m in c.get("volumeMounts", []) if m["name"] == "spool"), {})
    claim = next((v for v in ps.get("volumes", []) if v["name"] == "spool"), {}).get("persistentVolumeClaim", {})
    C.ok(c.get("command", [])[:4] == ["wafleet-ingest", "drain", "--spool-dir", mount.get("mountPath")],
         f"{where}: must run `wafleet-ingest drain --spool-dir <the mounted PVC>`")
    C.ok(re.fullmatch(r"spool-wafleet-ingest-\d+", claim.get("claimName", "")) is not None,
         f"{where}: must mount a StatefulSet spool PVC (spool-wafleet-ingest-<ordinal>)")
    ref = next(((e.get("valueFrom") or {}).get("secretKeyRef") for e in c.get("env", []) if e["name"] == "AMQP_URL"), None)
    C.ok(ref == {"name": "wafleet-secrets", "key": "ingest-amqp-url"} and "ingest-amqp-url" in secret_keys.get("wafleet-secrets", set()),
         f"{where}: AMQP_URL must come from wafleet-secrets/ingest-amqp-url (ingest's publish-only user)")
    C.ok({e["name"] for e in c.get("env", [])} == {"AMQP_URL"}, f"{where}: the drain needs AMQP_URL only (no signing key)")
    C.ok(ps.get("restartPolicy") == "Never" and ps.get("securityContext", {}).get("runAsUser") == RUN_AS
         and c.get("securityContext", {}).get("readOnlyRootFilesystem") is True and ps.get("automountServiceAccountToken") is False,
         f"{where}: non-root {RUN_AS}, read-only root, no service account token, restartPolicy Never")
    C.ok(pod_labels(job).get("app.kubernetes.io/component") == "cli",
         f"{where}: pods must be component=cli (egress by wafleet-migrate-and-cli; never an ingest Service endpoint)")
    C.ok(c.get("image", "").startswith(IMAGE_REPO + ":"), f"{where}: image must be {IMAGE_REPO}:<tag>")


def check_examples(objs: list[dict], secret_keys: dict[str, set[str]], repo: Path) -> None:
    where = "examples"
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    C.ok(not by_kind.get("Secret"), f"{where}: renders a Secret")
    rc = by_kind.get("RabbitmqCluster", [])
    if C.ok(len(rc) == 1, f"{where}: one RabbitmqCluster"):
        spec = rc[0]["spec"]
        C.ok(spec.get("replicas") == 3, f"{where}: RabbitmqCluster needs 3 replicas")
        C.ok({"rabbitmq_management", "rabbitmq_prometheus"} <= set(spec.get("rabbitmq", {}).get("additionalPlugins", [])),
             f"{where}: RabbitmqCluster plugins")
    users = {u["metadata"]["name"]: u for u in by_kind.get("User", [])}
    perms = {p["spec"].get("userReference", {}).get("name"): p for p in by_kind.get("Permission", [])}
    for u in users.values():
        ref = u["spec"].get("importCredentialsSecret", {}).get("name")
        C.ok(ref in secret_keys and {"username", "password"} <= secret_keys[ref],
             f"{where}: {key(u)} credentials secret {ref} (username/password) missing from secret.example.yaml")
    expect = {
        "wafleet-ingest": ({"configure": "", "write": r"^wa\.inbound$", "read": ""}, []),
        "wafleet-worker": ({"configure": r"^wa\.", "write": r"^wa\.", "read": r"^wa\."}, []),
        "wafleet-cli": ({"configure": r"^wa\.", "write": r"^wa\.", "read": r"^wa\."}, ["policymaker"]),
    }
    for uname, (perm, tags) in expect.items():
        u = users.get(uname)
        if C.ok(u is not None, f"{where}: no RabbitMQ User {uname}"):
            C.ok(u["spec"].get("tags", []) == tags, f"{where}: {uname} tags must be {tags}")
            p = perms.get(uname)
            C.ok(p is not None and p["spec"]["permissions"] == perm and p["spec"]["vhost"] == "wafleet",
                 f"{where}: {uname} permissions must be {perm} on vhost wafleet")
    for uname, u in users.items():
        if uname not in expect:
            C.ok("administrator" not in u["spec"].get("tags", []) and uname not in perms,
                 f"{where}: extra user {uname} must have no permissions and no administrator tag")
    check_policies(by_kind.get("Policy", []), repo)
    cl = by_kind.get("Cluster", [])
    if C.ok(len(cl) == 1, f"{where}: one CloudNativePG Cluster"):
        spec = cl[0]["spec"]
        C.ok(spec["instances"] == 3, f"{where}: CNPG instances must be 3")
        roles = {r["name"]: r for r in spec.get("managed", {}).get("roles", [])}
        # A role per duty (fleet/src/db/roles.rs): the worker's and the administration role.
        for duty_role in ("wafleet_worker", "wafleet_admin"):
            app = roles.get(duty_role)
            if C.ok(app is not None, f"{where}: CNPG must manage role {duty_role}"):
                C.ok(app.get("login") is True and app.get("superuser") is False and app.get("bypassrls") is False
                     and app.get("createrole") is False and not app.get("inRoles"),
                     f"{where}: {duty_role} must login, not superuser, not bypassrls, not createrole, in no role")
        C.ok("wafleet_app" not in roles, f"{where}: the single application role wafleet_app is gone (a role per duty)")
        owner_name = spec.get("bootstrap", {}).get("initdb", {}).get("owner")
        owner = roles.get(owner_name)
        if C.ok(owner is not None, f"{where}: CNPG must manage the owner role {owner_name}"):
            C.ok(owner.get("bypassrls") is True and owner.get("superuser") is False,
                 f"{where}: owner role needs bypassrls (SECURITY DEFINER functions) and no superuser")
        for r in roles.values():
            s = r.get("passwordSecret", {}).get("name")
            C.ok(s in secret_keys and {"username", "password"} <= secret_keys[s], f"{where}: role {r['name']} secret {s} missing")
        mc = int(spec.get("postgresql", {}).get("parameters", {}).get("max_connections", "100"))
        C.ok(bool(DB_DEMAND), f"{where}: no overlay's connection demand to check the Cluster against")
        for overlay, demand in DB_DEMAND.items():
            for problem in db_connections.problems(demand, roles, mc):
                C.ok(False, f"{where}: with overlay {overlay}: {problem}")


def rust_constants(*sources: str) -> dict[str, str]:
    out = {}
    for src in sources:
        for name, raw, num in re.findall(r'pub const (\w+): [^=]+= (?:r?"((?:[^"\\]|\\.)*)"|([\d_]+));', src):
            out[name] = raw if num == "" else num.replace("_", "")
    return out


def balanced(text: str, start: int) -> str:
    """The text of the {...} block whose opening brace is at `start`."""
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i + 1]
    raise ValueError("unbalanced braces")


def topology_policies(repo: Path) -> dict[str, dict]:
    """The policies `wafleet migrate` PUTs with its default settings: parsed from
    Management::apply_policies_with() in fleet/src/topology.rs (inline json! bodies or the
    functions it calls, following calls with their arguments; the runtime bound takes the value
    apply_policies() passes, the default)."""
    topo = re.sub(r"//[^\n]*", "", (repo / "fleet/src/topology.rs").read_text())
    consts = rust_constants(topo, (repo / "shared/src/topology.rs").read_text())

    def value(v: str, env: dict):
        v = v.strip()
        if v in env:
            return env[v]
        if v.startswith(("r\"", "\"")):
            return v[v.index('"') + 1:-1]
        if re.fullmatch(r"[\d_]+", v):
            return int(v.replace("_", ""))
        c = consts.get(v)
        if c is None:
            raise KeyError(f"constant {v} not found")
        return int(c) if c.isdigit() else c

    def function(name: str) -> tuple[list[str], str]:
        m = re.search(rf"fn {name}\(([^)]*)\)", topo)
        params = [p.split(":")[0].strip() for p in m.group(1).split(",") if ":" in p]
        return params, balanced(topo, topo.index("{", m.end()))

    def parse_body(body: str, env: dict) -> dict:
        pattern = re.search(r'"pattern":\s*(r?"[^"]*"|\w+)', body)
        apply_to = re.search(r'"apply-to":\s*"([^"]*)"', body)
        priority = re.search(r'"priority":\s*(\w+)', body)
        d = body.index('"definition"')
        definition_text = balanced(body, body.index("{", d))
        definition = {k: value(v, env)
                      for k, v in re.findall(r'"([a-z-]+)":\s*(r?"[^"]*"|[A-Za-z_]+|[\d_]+)', definition_text)}
        return {"pattern": value(pattern.group(1), env), "applyTo": apply_to.group(1),
                "priority": int(value(priority.group(1), env)), "definition": definition}

    def call(name: str, args: str, env: dict) -> dict:
        params, body = function(name)
        inner = dict(zip(params, [value(a, env) for a in args.split(",") if a.strip()]))
        if "json!(" in body:
            return parse_body(body, inner)
        m = re.search(r"(\w+)\(([^()]*)\)", body)
        return call(m.group(1), m.group(2), inner)

    _, defaults = function("apply_policies")
    default_args = re.search(r"apply_policies_with\(([^()]*)\)", defaults).group(1)
    params, body = function("apply_policies_with")
    env = dict(zip(params, [value(a, {}) for a in default_args.split(",") if a.strip()]))
    out = {}
    for m in re.finditer(r'\["policies",\s*&self\.vhost,\s*(\w+)\],\s*', body):
        name = value(m.group(1), env)
        rest = body[m.end():]
        if rest.startswith("json!("):
            out[name] = parse_body(balanced(rest, rest.index("{")), env)
        else:
            f = re.match(r"(\w+)\(([^()]*)\)", rest)
            out[name] = call(f.group(1), f.group(2), env)
    return out


def check_policies(policies: list[dict], repo: Path) -> None:
    """The Policy objects must equal what `wafleet migrate` applies (fleet/src/topology.rs)."""
    where = "examples Policy"
    try:
        want = topology_policies(repo)
    except (ValueError, KeyError, AttributeError) as e:
        C.ok(False, f"{where}: cannot read the policies of fleet/src/topology.rs apply_policies(): {e}")
        return
    C.ok(len(want) >= 2, f"{where}: found only {list(want)} in apply_policies()")
    got = {p["spec"]["name"]: p["spec"] for p in policies}
    C.ok(set(got) == set(want), f"{where}: Policy objects {sorted(got)} != policies of wafleet migrate {sorted(want)}")
    for name, w in want.items():
        p = got.get(name)
        if p is None:
            continue
        have = {"pattern": p["pattern"], "applyTo": p.get("applyTo"), "priority": p.get("priority", 0), "definition": p["definition"]}
        C.ok(have == w and p.get("vhost") == "wafleet", f"{where}: {name} differs from topology.rs: want {w}, got {have}")


# ---------------------------------------------------------------------------------------------
# Prometheus rules, PromQL, dashboard

def check_rules(promtool: str, rule_obj: dict, tests: Path, tmp: Path) -> None:
    spec = rule_obj["spec"]
    rules_file = tmp / "wafleet-rules.yaml"
    rules_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    r = run([promtool, "check", "rules", str(rules_file)])
    C.ok(r.returncode == 0, f"promtool check rules:\n{r.stdout}{r.stderr}")
    test_file = tmp / "wafleet-rules.test.yaml"
    test_file.write_text(tests.read_text().replace("RULES_FILE", str(rules_file)))
    r = run([promtool, "test", "rules", str(test_file)])
    C.ok(r.returncode == 0, f"promtool test rules:\n{r.stdout[-4000:]}{r.stderr[-2000:]}")
    alerts = [rule for g in spec["groups"] for rule in g["rules"] if "alert" in rule]
    names = {a["alert"] for a in alerts}
    C.ok(REQUIRED_ALERTS <= names, f"PrometheusRule lacks alerts {sorted(REQUIRED_ALERTS - names)}")
    C.ok(len(names) == len(alerts), "PrometheusRule has duplicate alert names")
    for a in alerts:
        ann = a.get("annotations", {})
        C.ok(ann.get("runbook_url") == RUNBOOK + a["alert"].lower(), f"alert {a['alert']}: runbook_url must be {RUNBOOK}{a['alert'].lower()}")
        C.ok(bool(ann.get("summary")), f"alert {a['alert']}: no summary")
        C.ok(a.get("labels", {}).get("severity") in ("critical", "warning", "info"), f"alert {a['alert']}: severity label")
    exprs = " ".join(a["expr"] for a in alerts)
    for a in alerts:
        if "wafleet_canary_success" in a["expr"]:
            C.ok("wafleet_canary_leader" in a["expr"], f"alert {a['alert']}: must ignore replicas not leading the canary (wafleet_canary_leader)")
    for needle in ('wa\\\\.dlq\\\\.', 'queue="wa.quarantine"', "wafleet_ingest_spool_records", "wafleet_worker_tenant_consuming",
                   'queue="wa.unrouted"', "wafleet_sender_429_total", "wafleet_canary_success", 'status=~"5..', 'status=~"4..',
                   "rabbitmq_detailed_queue_head_message_timestamp"):
        C.ok(needle in exprs, f"PrometheusRule: no alert uses {needle}")


# The metric-name modules: every wafleet_* series a dashboard panel, an alert or a KEDA trigger
# queries must be named there, so a renamed metric fails here and not silently in production.
METRIC_MODULES = ("ingest/src/metric.rs", "worker/src/metric.rs", "fleet/src/metric.rs")
# Series names metrics-exporter-prometheus derives from one metric: histograms gain _bucket, _sum
# and _count, and a counter is exported with _total when its name lacks it.
EXPORTER_SUFFIXES = ("", "_total", "_bucket", "_sum", "_count")


def defined_metrics(repo: Path) -> set[str]:
    """The wafleet_* names of the metric modules, with the series names the exporter derives."""
    sources = [(repo / m).read_text() for m in METRIC_MODULES if C.ok((repo / m).is_file(), f"{m} is missing")]
    names = {v for v in rust_constants(*sources).values() if v.startswith("wafleet_")}
    C.ok(bool(names), f"no wafleet_* metric names found in {', '.join(METRIC_MODULES)}")
    return {n + suffix for n in names for suffix in EXPORTER_SUFFIXES}


def check_metric_names(defined: set[str], exprs: list[tuple[str, str]]) -> None:
    """Every wafleet_* metric a PromQL expression names is defined in a metric module. RabbitMQ's
    own (rabbitmq_*) and standard series (up, kube_*, …) are not ours to define. `wafleet:` is a
    recording-rule prefix, not a metric of the code."""
    for where, expr in exprs:
        # Label values ("…") may hold anything, e.g. a database role: only names outside quotes count.
        bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
        for name in sorted(set(re.findall(r"(?<![A-Za-z0-9_:])wafleet_[a-z0-9_]+", bare))):
            C.ok(name in defined, f"{where}: queries {name}, which no metric module defines ({', '.join(METRIC_MODULES)})")


def substitute_grafana(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
    expr = re.sub(r"\$\{?topn\}?", "10", expr)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?", ".*", expr)


def check_promql(promtool: str, exprs: list[tuple[str, str]], tmp: Path) -> None:
    """promtool has no standalone parser command: every expression becomes a recording rule."""
    groups = [{"name": "parse-check", "rules": [{"record": f"wafleet:parse_check_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]
    f = tmp / "promql-parse.yaml"
    f.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    r = run([promtool, "check", "rules", str(f)])
    if r.returncode != 0:
        bad = re.findall(r"group \"parse-check\", rule (\d+)", r.stdout + r.stderr)
        detail = [exprs[int(i) - 1] for i in bad if int(i) - 1 < len(exprs)]
        C.ok(False, f"PromQL parse errors:\n{r.stdout}{r.stderr}\n{detail}")
    else:
        C.ok(True, "")


def check_dashboard(path: Path, promql: list[tuple[str, str]]) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        C.ok(False, f"{path}: not JSON: {e}")
        return None
    for k in ("title", "uid", "schemaVersion", "panels", "templating", "time", "version"):
        C.ok(k in d, f"dashboard: missing key {k}")
    C.ok(isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36, "dashboard: schemaVersion >= 36")
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    C.ok(ds.get("type") == "datasource" and ds.get("query") == "prometheus", "dashboard: needs a `datasource` variable of Prometheus type")
    ids: list[int] = []
    all_exprs = []

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))

    for p in walk(d.get("panels", [])):
        ids.append(p.get("id"))
        t = p.get("title", f"id {p.get('id')}")
        g = p.get("gridPos", {})
        C.ok(all(isinstance(g.get(k), int) for k in "hwxy") and g.get("x", 0) + g.get("w", 0) <= 24, f"dashboard panel {t}: gridPos")
        if p.get("type") == "row":
            continue
        C.ok(p.get("datasource", {}).get("uid") == "${datasource}", f"dashboard panel {t}: datasource must be ${{datasource}}")
        targets = p.get("targets", [])
        refs = [x.get("refId") for x in targets]
        C.ok(bool(targets) and len(refs) == len(set(refs)), f"dashboard panel {t}: targets/refIds")
        for x in targets:
            if C.ok(bool(x.get("expr")), f"dashboard panel {t}: target {x.get('refId')} has no expr"):
                all_exprs.append(x["expr"])
                promql.append((f"dashboard panel {t}", substitute_grafana(x["expr"])))
    C.ok(all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids)), f"dashboard: panel ids must be unique integers ({ids})")
    joined = "\n".join(all_exprs)
    for name in ("namespace", "vhost", "tenant"):
        C.ok(name in variables, f"dashboard: needs a `{name}` variable")
    tenant = variables.get("tenant", {})
    C.ok(tenant.get("includeAll") is False and tenant.get("multi") is False and r'queue=~"wa\\.tenant\\.' in (tenant.get("query") or {}).get("query", ""),
         "dashboard: `tenant` is one tenant at a time, taken from the wa.tenant.* queue names")
    for e in all_exprs:
        C.ok(re.search(r'\b(namespace|vhost)\s*=~?\s*"(?!\$)', e) is None,
             f"dashboard: {e} hard-codes a namespace or vhost; use $namespace / $vhost")
    for e in all_exprs:
        if "wafleet_canary_success" in e:
            C.ok("wafleet_canary_leader" in e, f"dashboard: {e} must ignore replicas not leading the canary (wafleet_canary_leader)")
    for m in DASHBOARD_METRICS:
        C.ok(m in joined, f"dashboard: no panel queries {m}")
    # metrics-exporter-prometheus renders histograms as summaries (a `quantile` label) unless
    # buckets are configured; shared/src/telemetry.rs decides which one the queries must use.
    telemetry = (path.parents[2] / "shared/src/telemetry.rs").read_text()
    if re.search(r'set_buckets_for_metric\(\s*Matcher::Suffix\("_seconds"', telemetry):
        C.ok(re.search(r'_seconds\{[^}]*quantile=', joined) is None,
             "dashboard: *_seconds metrics are histograms (buckets configured): use histogram_quantile over *_bucket, not quantile=")
    elif "set_buckets" not in telemetry:
        C.ok("_bucket" not in joined, "dashboard: queries *_bucket but the recorder exports summaries (no buckets configured)")
    return d


# ---------------------------------------------------------------------------------------------
# compose, Dockerfile

def check_compose(path: Path, code: str) -> None:
    where = "compose"
    d = yaml.safe_load(path.read_text())
    # The Compose Specification's own JSON schema (draft 7, vendored from compose-spec/compose-spec
    # schema/compose-spec.json), so a misspelt key fails here rather than in `docker compose up`.
    spec = json.loads((path.parent / "schemas/compose-spec.json").read_text())
    for e in jsonschema.Draft7Validator(spec).iter_errors(d):
        C.ok(False, f"{where}: compose-spec schema: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
    C.ok(True, "")
    services = d.get("services", {})
    need = {"rabbitmq", "postgres", "migrate", "ingest", "worker", "admin", "simulator"}
    C.ok(need <= set(services), f"{where}: services {sorted(need - set(services))} missing")
    volumes = set((d.get("volumes") or {}).keys())
    for name, s in services.items():
        C.ok(bool(s.get("image")), f"{where}: {name} has no image")
        if "build" in s:
            ctx = (path.parent / s["build"]["context"]).resolve()
            C.ok((ctx / s["build"]["dockerfile"]).is_file(), f"{where}: {name} build dockerfile not found")
        deps = s.get("depends_on", {})
        deps = {k: {"condition": "service_started"} for k in deps} if isinstance(deps, list) else deps
        for dep, cond in deps.items():
            if not C.ok(dep in services, f"{where}: {name} depends on unknown service {dep}"):
                continue
            c = cond.get("condition")
            C.ok(c in ("service_started", "service_healthy", "service_completed_successfully"), f"{where}: {name}->{dep} condition {c}")
            if c == "service_healthy":
                C.ok("healthcheck" in services[dep], f"{where}: {name} waits for {dep} healthy but {dep} has no healthcheck")
            if c == "service_completed_successfully":
                C.ok(services[dep].get("restart", "no") == "no", f"{where}: {dep} must be one-shot (restart: \"no\")")
        if name != "migrate":
            C.ok("healthcheck" in s, f"{where}: long-running {name} has no healthcheck")
            C.ok(s.get("restart") in ("unless-stopped", "always", "on-failure"), f"{where}: long-running {name} needs a restart policy")
        for p in s.get("ports", []):
            C.ok(str(p).startswith("127.0.0.1:"), f"{where}: {name} publishes {p} beyond localhost")
        for v in s.get("volumes", []):
            src = str(v).split(":")[0]
            if src.startswith("."):
                C.ok((path.parent / src).exists(), f"{where}: {name} bind mount {src} does not exist")
            else:
                C.ok(src in volumes, f"{where}: {name} volume {src} not declared")
        cmd = s.get("command")
        if isinstance(cmd, list) and cmd and cmd[0].startswith("wafleet"):
            C.ok(cmd[0] in BINARIES, f"{where}: {name} runs unknown binary {cmd[0]}")
            env = s.get("environment", {})
            check_env_names(f"{where} {name}", set(env), code)
    C.ok(services.get("migrate", {}).get("command") == ["wafleet", "migrate"], f"{where}: migrate must run `wafleet migrate`")
    C.ok("--unlimited" in services.get("simulator", {}).get("command", []), f"{where}: simulator must run --unlimited")
    adm = services.get("admin", {})
    C.ok(adm.get("command") == ["wafleet-admin"] and adm.get("environment", {}).get("WAFLEET_ADMIN_ADDR") == f"0.0.0.0:{ADMIN_PORT}"
         and f"127.0.0.1:{ADMIN_PORT}:{ADMIN_PORT}" in adm.get("ports", [])
         and adm.get("depends_on", {}).get("migrate", {}).get("condition") == "service_completed_successfully",
         f"{where}: admin must run wafleet-admin on 0.0.0.0:{ADMIN_PORT}, published on 127.0.0.1 only, after migrate")
    ing = services.get("ingest", {})
    ops = OPS_PORTS["ingest"][1]
    C.ok(ing.get("environment", {}).get("WAFLEET_INGEST_OPS_ADDR") == f"0.0.0.0:{ops}"
         and f"/dev/tcp/127.0.0.1/{ops} " in " ".join(ing.get("healthcheck", {}).get("test", [])),
         f"{where}: ingest must serve its ops port on 0.0.0.0:{ops} and be health-checked there")
    pg = " ".join(services.get("postgres", {}).get("command", []))
    C.ok("fsync=off" not in pg and "fsync=on" in pg, f"{where}: postgres must keep fsync on")
    plugins = (path.parent / "compose/enabled_plugins").read_text().strip()
    C.ok(re.fullmatch(r"\[\s*[a-z_]+(\s*,\s*[a-z_]+)*\s*\]\.", plugins) is not None
         and "rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins,
         f"{where}: compose/enabled_plugins must be an Erlang list with management and prometheus: {plugins}")
    for m in re.finditer(r"(?<!\$)\$\{([^}]*)\}", path.read_text()):
        C.ok(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*((:?[-?+]).*)?", m.group(1)) is not None,
             f"{where}: bad interpolation ${{{m.group(1)}}}")


def check_compose_observability(path: Path, rule: dict | None) -> None:
    """The `observability` profile: Prometheus scraping the ops ports with the alert rules of the
    PrometheusRule, Grafana with the dashboard provisioned; required secrets fail fast."""
    where = "compose"
    text = path.read_text()
    d = yaml.safe_load(text)
    services = d.get("services", {})
    for name, s in services.items():
        want = ["observability"] if name in ("prometheus", "grafana") else None
        C.ok(s.get("profiles") == want, f"{where}: {name} profiles must be {want} (only Prometheus and Grafana are opt-in)")
        env = s.get("environment", {})
        if "WAFLEET_SIGNING_KEY" in env:
            C.ok(str(env["WAFLEET_SIGNING_KEY"]).startswith("${WAFLEET_SIGNING_KEY:?"),
                 f"{where}: {name} must require WAFLEET_SIGNING_KEY with ${{WAFLEET_SIGNING_KEY:?message}}")
    prom, graf = services.get("prometheus", {}), services.get("grafana", {})

    def mounted(service: dict, target: str) -> Path | None:
        for v in service.get("volumes", []):
            src, dst = str(v).split(":")[:2]
            if dst == target and src.startswith("."):
                return (path.parent / src).resolve()
        return None

    config_path = mounted(prom, "/etc/prometheus/prometheus.yml")
    if not C.ok(config_path is not None and config_path.is_file(), f"{where}: prometheus must mount its prometheus.yml"):
        return
    config = yaml.safe_load(config_path.read_text())
    jobs = {j["job_name"]: [t for sc in j.get("static_configs", []) for t in sc.get("targets", [])] for j in config.get("scrape_configs", [])}
    C.ok(jobs.get("wafleet-ingest") == [f"ingest:{OPS_PORTS['ingest'][1]}"] and jobs.get("wafleet-worker") == [f"worker:{OPS_PORTS['worker'][1]}"],
         f"{where}: prometheus must scrape jobs wafleet-ingest (ingest:{OPS_PORTS['ingest'][1]}) and wafleet-worker "
         f"(worker:{OPS_PORTS['worker'][1]}), the names the alerts and the dashboard use (got {jobs})")
    rules_path = next((mounted(prom, f) for f in config.get("rule_files", [])), None)
    if C.ok(rules_path is not None and rules_path.is_file(), f"{where}: prometheus rule_files must be a mounted file") and rule:
        C.ok(yaml.safe_load(rules_path.read_text()) == {"groups": rule["spec"]["groups"]},
             f"{where}: {rules_path.name} differs from the groups of k8s/base/prometheusrule.yaml (regenerate it, see its header)")
    dash = mounted(graf, "/var/lib/grafana/dashboards/wafleet-dashboard.json")
    C.ok(dash == (path.parent / "grafana/wafleet-dashboard.json").resolve(), f"{where}: grafana must mount grafana/wafleet-dashboard.json")
    prov = mounted(graf, "/etc/grafana/provisioning")
    if C.ok(prov is not None and prov.is_dir(), f"{where}: grafana must mount its provisioning folder"):
        providers = [p for f in (prov / "dashboards").glob("*.yaml") for p in yaml.safe_load(f.read_text()).get("providers", [])]
        C.ok(any(p.get("options", {}).get("path") == "/var/lib/grafana/dashboards" for p in providers),
             f"{where}: no Grafana dashboard provider reads /var/lib/grafana/dashboards")
        sources = [s for f in (prov / "datasources").glob("*.yaml") for s in yaml.safe_load(f.read_text()).get("datasources", [])]
        C.ok(any(s.get("type") == "prometheus" and s.get("url") == "http://prometheus:9090" and s.get("isDefault") for s in sources),
             f"{where}: Grafana needs the compose Prometheus as its default datasource")
    C.ok(graf.get("environment", {}).get("GF_AUTH_BASIC_ENABLED") == "false"
         and graf.get("environment", {}).get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer",
         f"{where}: grafana must be read-only for anonymous viewers with basic auth off (no default admin password)")


def check_dockerfile(path: Path, hadolint: str | None, repo: Path) -> None:
    where = "Dockerfile"
    text = path.read_text()
    if hadolint:
        r = run([hadolint, "--failure-threshold", "warning", str(path)])
        C.ok(r.returncode == 0, f"{where}: hadolint:\n{r.stdout}{r.stderr}")
    else:
        print("  (hadolint not available: structural checks only)")
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    stages = [s for _, s in froms]
    C.ok(stages[:5] == ["chef", "planner", "cacher", "builder", "runtime"], f"{where}: stages must be chef/planner/cacher/builder/runtime, got {stages}")
    C.ok(re.search(r"^ARG RUST_VERSION=1\.9\d+$", text, re.M) is not None and froms[0][0].startswith("rust:${RUST_VERSION}-"),
         f"{where}: builder must be rust:1.9x-bookworm")
    C.ok(re.search(r"^ARG DEBIAN_CODENAME=bookworm$", text, re.M) is not None, f"{where}: bookworm base")
    C.ok(froms[-1][0] == "debian:${DEBIAN_CODENAME}-slim", f"{where}: runtime must be debian:bookworm-slim")
    C.ok("SQLX_OFFLINE=true" in text, f"{where}: SQLX_OFFLINE=true")
    C.ok("cargo chef prepare" in text and re.search(r"cargo chef cook --release --locked", text) is not None,
         f"{where}: cargo-chef prepare/cook --release --locked")
    build = re.search(r"cargo build --release --locked(.*?)(&&|$)", text, re.S)
    C.ok(build is not None and all(f"--bin {b} " in build.group(1) + " " for b in BINARIES), f"{where}: build all five binaries")
    runtime = text[text.rfind("FROM "):]
    C.ok(re.search(r"^USER 10001(:10001)?$", runtime, re.M) is not None, f"{where}: runtime must run as USER 10001")
    apt = re.findall(r"apt-get install[^\n]*", runtime)
    C.ok(bool(apt) and all(re.fullmatch(r"apt-get install -y --no-install-recommends ca-certificates\s*\\?\s*", a) for a in apt),
         f"{where}: runtime installs only ca-certificates ({apt})")
    C.ok("ENTRYPOINT" not in re.sub(r"#.*", "", runtime), f"{where}: no ENTRYPOINT (manifests choose the binary)")
    ignore = (repo / ".dockerignore")
    if C.ok(ignore.is_file(), ".dockerignore at the repository root"):
        lines = {l.strip() for l in ignore.read_text().splitlines() if l.strip() and not l.startswith("#")}
        C.ok({"target/", ".git/"} <= lines, ".dockerignore must exclude target/ and .git/")
        members = tomllib.loads((repo / "Cargo.toml").read_text())["workspace"]["members"]
        for needed in ["migrations", "Cargo.lock", ".cargo", "Cargo.toml", *members]:
            C.ok(not any(l.rstrip("/") in (needed, f"{needed}/") or l == "*" for l in lines), f".dockerignore excludes {needed}")


# ---------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True, type=Path)
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--promtool", required=True)
    ap.add_argument("--hadolint")
    ap.add_argument("--k8s-versions", default="1.30,1.34")
    args = ap.parse_args()
    repo: Path = args.repo.resolve()
    deploy = repo / "deploy"
    k8s = deploy / "k8s"
    code = code_mentions(repo)
    schemas = Schemas(deploy / "schemas", args.k8s_versions.split(","))
    promql: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory(prefix="wafleet-deploy-") as t:
        tmp = Path(t)

        C.section("CRD schemas are what deploy/schemas/generate.py produces")
        r = run([sys.executable, str(deploy / "schemas/generate.py"), str(tmp / "schemas")])
        if C.ok(r.returncode == 0, f"schemas/generate.py failed: {r.stderr}"):
            for f in (tmp / "schemas").rglob("*.json"):
                rel = f.relative_to(tmp / "schemas")
                committed = deploy / "schemas" / rel
                C.ok(committed.is_file() and committed.read_text() == f.read_text(), f"deploy/schemas/{rel} differs from generate.py output")

        C.section("secret.example.yaml (outside every kustomization)")
        secret_docs = load_yaml_docs((k8s / "secret.example.yaml").read_text())
        secret_keys = {}
        for s in secret_docs:
            schemas.validate(s, "secret.example.yaml")
            C.ok(s["kind"] == "Secret", f"secret.example.yaml: {key(s)} is not a Secret")
            secret_keys[s["metadata"]["name"]] = set(s.get("stringData", {})) | set(s.get("data", {}))
            for v in s.get("stringData", {}).values():
                C.ok("REPLACE_ME" in v or v in ("wafleet-ingest", "wafleet-worker", "wafleet-cli", "wafleet-keda",
                                                "wafleet_owner", "wafleet_worker", "wafleet_admin"),
                     f"secret.example.yaml: {key(s)} holds a value that is not a placeholder")
        for kf in k8s.rglob("kustomization.yaml"):
            C.ok("secret.example" not in kf.read_text().split("# ")[0] and
                 not re.search(r"^\s*-\s*.*secret\.example", kf.read_text(), re.M),
                 f"{kf.relative_to(repo)} includes secret.example.yaml")

        rule = dash_cm = None
        for overlay in OVERLAYS:
            C.section(f"overlay {overlay}: render and validate")
            objs = render(args.kubectl, k8s / "overlays" / overlay)
            if objs is None:
                continue
            for o in objs:
                schemas.validate(o, f"overlay {overlay}")
            check_overlay(overlay, objs, secret_keys, code, promql, repo)
            if overlay == "prod":
                rule = next((o for o in objs if o["kind"] == "PrometheusRule"), None)
                dash_cm = next((o for o in objs if o["metadata"]["name"] == "wafleet-grafana-dashboard"), None)

        C.section("examples: render and validate")
        ex = render(args.kubectl, k8s / "examples")
        if ex is not None:
            for o in ex:
                schemas.validate(o, "examples")
            check_examples(ex, secret_keys, repo)

        C.section("examples/spool-drain-job.yaml (outside every kustomization)")
        drain_docs = load_yaml_docs((k8s / "examples/spool-drain-job.yaml").read_text())
        for o in drain_docs:
            schemas.validate(o, "spool-drain-job.yaml")
        check_spool_drain_job(drain_docs, secret_keys)

        C.section("PrometheusRule: promtool check rules + test rules")
        if C.ok(rule is not None, "prod overlay renders no PrometheusRule"):
            check_rules(args.promtool, rule, deploy / "tools/prometheusrule.test.yaml", tmp)
            runbooks = (repo / "docs/runbooks.md").read_text()
            for a in (r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r):
                C.ok(f"\n### Runbook {a['alert']}\n" in runbooks, f"docs/runbooks.md has no section \"### Runbook {a['alert']}\"")

        C.section("Grafana dashboard")
        dash_path = deploy / "grafana/wafleet-dashboard.json"
        d = check_dashboard(dash_path, promql)
        if d is not None and dash_cm is not None:
            C.ok(json.loads(dash_cm["data"]["wafleet-dashboard.json"]) == d, "dashboard ConfigMap differs from the JSON file")

        C.section(f"PromQL of the dashboard and KEDA triggers ({len(promql)} expressions) through promtool's parser")
        check_promql(args.promtool, promql, tmp)

        C.section("metric names in the dashboard, KEDA triggers and alerts are defined in the metric modules")
        rule_exprs = []
        if rule is not None:
            rule_exprs = [(f"PrometheusRule {r.get('alert') or r.get('record')}", r["expr"])
                          for g in rule["spec"]["groups"] for r in g["rules"]]
        tests = yaml.safe_load((deploy / "tools/prometheusrule.test.yaml").read_text())
        test_series = [("prometheusrule.test.yaml input series", s["series"])
                       for t in tests.get("tests", []) for s in t.get("input_series", [])]
        check_metric_names(defined_metrics(repo), promql + rule_exprs + test_series)

        C.section("compose.yaml")
        check_compose(deploy / "compose.yaml", code)
        check_compose_observability(deploy / "compose.yaml", rule)

        C.section("Dockerfile")
        check_dockerfile(deploy / "Dockerfile", args.hadolint, repo)

    print()
    if C.failures:
        print(f"deploy validation FAILED: {len(C.failures)} failure(s), {C.passed} checks passed")
        for f in C.failures:
            print(f"  - {f.splitlines()[0]}")
        return 1
    print(f"deploy validation OK: {C.passed} checks, no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
