"""The deployment files under deploy/ agree with the code they deploy.

Nothing here starts Docker, Kubernetes or Kafka: each file is parsed and its wiring is
checked against the settings (services.config), the commands (services.cli), the HTTP
routes (api.app) and the metrics the API exports (api.metrics).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tomllib
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from services import config
from services.cli import parser
from services.config import Settings
from services.notifier import NotifierMetrics, receivers
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SETTING_VARS = {config.env_name(f.name) for f in fields(Settings)}
# Contract §4: the severities an alert may carry, whichever side raises it.
SEVERITIES = {"critical", "major", "minor", "warning", "info"}


# ---------------------------------------------------------------- loading


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def one(path: Path) -> Any:
    docs = load_yaml(path)
    assert len(docs) == 1, path
    return docs[0]


@cache
def compose() -> dict[str, Any]:
    return one(DEPLOY / "docker-compose.yml")


@cache
def k8s_docs() -> tuple[dict[str, Any], ...]:
    return tuple(d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
                 for d in load_yaml(p))


def k8s(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def k8s_named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in k8s(kind) if d["metadata"]["name"] == name]
    return doc


def citybrain_services() -> dict[str, dict[str, Any]]:
    """Compose services that run the citybrain image."""
    return {n: s for n, s in compose()["services"].items() if s.get("image", "").startswith("citybrain")}


def role(command: list[str]) -> str:
    return command[0]


def compose_notifier() -> tuple[str, dict[str, Any]]:
    (named,) = [(n, s) for n, s in citybrain_services().items() if role(s["command"]) == "notify"]
    return named


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment as a mapping, so anchors can merge it"
    return {k: str(v) for k, v in env.items()}


def configmap() -> dict[str, str]:
    return k8s_named("ConfigMap", "citybrain")["data"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def k8s_env(container: dict[str, Any]) -> dict[str, str]:
    """The CITYBRAIN_* variables a container sees, from its ConfigMaps, Secrets and env."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(k8s_named("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(k8s_named("Secret", source["secretRef"]["name"])["stringData"])
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def effective(env: dict[str, str]) -> Settings:
    """The settings a process started with `env` runs with (validated as at start)."""
    return config.load({k: v for k, v in env.items() if "${" not in v})


def k8s_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for w in k8s("Deployment") + k8s("StatefulSet"):
        for c in containers(w):
            yield w["metadata"]["name"], c
    for j in k8s("Job"):
        for c in j["spec"]["template"]["spec"]["containers"]:
            yield j["metadata"]["name"], c


@cache
def app() -> Any:
    return create_app(Settings(), {})


def get(path: str) -> httpx.Response:
    """GET from the API app in-process. httpx's ASGI transport runs no lifespan, so the
    read models never start and nothing connects to Kafka."""
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()),
                                     base_url="http://api") as client:
            return await client.get(path)

    return asyncio.run(go())


def serves(path: str) -> bool:
    """Whether the app has a GET route at `path` (/readyz answers 503 here: not caught up)."""
    return get(path).status_code not in (404, 405)


@cache
def exported() -> dict[str, dict[str, set[str]]]:
    """Every sample name the API's and the notifier's /metrics expose, with each label's
    values seen.

    One request through the app gives the HTTP metrics a child; the notifier's metrics are
    those of the compose notifier's receivers; both are parsed as Prometheus would."""
    assert get("/healthz").status_code == 200
    registry = CollectorRegistry()
    NotifierMetrics(registry, receivers(effective(compose_env(compose_notifier()[1]))))
    text = get("/metrics").text + generate_latest(registry).decode()
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for k, v in sample.labels.items():
                labels.setdefault(k, set()).add(v)
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in one(DEPLOY / "prometheus" / "alerts.yml")["groups"] for r in g["rules"]]


def grafana_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana" / "citybrain.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def prometheus() -> dict[str, Any]:
    return one(DEPLOY / "prometheus" / "prometheus.yml")


def api_job() -> dict[str, Any]:
    (job,) = [j for j in prometheus()["scrape_configs"] if j["job_name"] == "citybrain-api"]
    return job


# ---------------------------------------------------------------- every file


def deploy_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.is_file())


def test_every_deploy_file_parses() -> None:
    kinds = {".yml": load_yaml, ".yaml": load_yaml, ".json": lambda p: json.loads(p.read_text())}
    for path in deploy_files():
        if path.suffix in kinds:
            assert kinds[path.suffix](path), path


def test_every_citybrain_variable_is_a_setting() -> None:
    for path in deploy_files():
        for name in set(re.findall(r"CITYBRAIN_[A-Z0-9_]+", path.read_text())):
            assert name in SETTING_VARS, f"{path.relative_to(ROOT)}: {name} is not a setting"


def test_setting_values_are_valid_where_given() -> None:
    for name, service in citybrain_services().items():
        env = compose_env(service)
        for key, value in env.items():
            if "${" in value:  # compose interpolation: from deploy/.env, under the same name
                assert re.fullmatch(r"\$\{" + key + r"(:[?-][^}]*)?\}", value), (name, key, value)
        effective(env)
    effective(configmap())


# ---------------------------------------------------------------- image


def test_dockerfile_builds_the_package_with_its_pins() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"pip install .*-c constraints\.txt \.$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["citybrain"\]$', text, re.M)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["citybrain"] == "services.cli:main"

    # What the image copies exists, and the Dockerfile's own ignore file lets it through.
    copied = [src for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
              for src in line.split()[:-1]]
    assert copied
    allowed = {line.lstrip("!").rstrip("/") for line in
               (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")}
    for src in copied:
        assert (ROOT / src).exists(), src
        assert src.rstrip("/") in allowed, f"{src} is copied but excluded from the build context"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for runtime in ("api", "services", "streams"):
        assert f"{runtime}*" in packages["include"] and runtime in copied


def image_data_dir() -> str:
    m = re.search(r"CITYBRAIN_DATA_DIR=(\S+)", (DEPLOY / "Dockerfile").read_text())
    assert m
    return m.group(1)


# ---------------------------------------------------------------- commands


def test_commands_exist() -> None:
    commands = [s["command"] for s in citybrain_services().values()]
    commands += [c["args"] for _, c in k8s_containers()]
    assert {role(c) for c in commands} >= {"topics", "worker", "api", "simulate", "notify"}
    for command in commands:
        try:
            parser().parse_args(command)
        except SystemExit:
            pytest.fail(f"`citybrain {' '.join(command)}` is not a valid command line")


def test_broker_flags_agree_with_the_broker_setting() -> None:
    for name, service in citybrain_services().items():
        args = parser().parse_args(service["command"])
        if getattr(args, "broker", None) is not None:
            assert args.broker == compose_env(service)["CITYBRAIN_BROKER"], name


# ---------------------------------------------------------------- compose


def test_compose_kafka_is_kraft_and_serves_the_brokers_the_services_use() -> None:
    kafka = compose()["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    advertised = {urlsplit(u).netloc for u in env["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, service in citybrain_services().items():
        assert compose_env(service)["CITYBRAIN_BROKER"] in advertised, name
    assert "healthcheck" in kafka


def test_compose_sasl_ssl_overlay_secures_every_citybrain_service(tmp_path: Path, processes: None) -> None:
    """docker-compose.sasl-ssl.yml over the plain file: every citybrain service reaches the
    broker's SASL_SSL listener with the secrets make-secrets.sh writes, as the user the
    broker's JAAS file lists; its settings validate with those files where compose mounts them."""
    overlay = one(DEPLOY / "docker-compose.sasl-ssl.yml")
    kafka = {**compose()["services"]["kafka"]["environment"], **overlay["services"]["kafka"]["environment"]}
    sasl_ssl = {u.removeprefix("SASL_SSL://") for u in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
                if u.startswith("SASL_SSL://")}
    subprocess.run(["bash", str(DEPLOY / "kafka" / "make-secrets.sh"), str(tmp_path), "kafka"],
                   check=True, capture_output=True)
    mounted = {f"/run/secrets/{name}": str(tmp_path / Path(spec["file"]).name)
               for name, spec in overlay["secrets"].items()}
    jaas = (tmp_path / "kafka_server_jaas.conf").read_text()
    for name, base in citybrain_services().items():
        service = overlay["services"][name]
        assert set(service["secrets"]) == set(overlay["secrets"]), name
        env = {**compose_env(base), **compose_env(service)}
        s = effective({k: mounted.get(v, v) for k, v in env.items()})
        assert s.bootstrap in sasl_ssl and s.kafka_security_protocol == "SASL_SSL", name
        sec = s.kafka_security()
        assert f'user_{sec.username}="{sec.password}"' in jaas, name
        if "--broker" in service.get("command", []):
            assert service["command"][service["command"].index("--broker") + 1] in sasl_ssl


def test_compose_order_topics_first() -> None:
    services = citybrain_services()
    (topics,) = [n for n, s in services.items() if role(s["command"]) == "topics"]
    assert compose()["services"][topics]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name, service in services.items():
        if role(service["command"]) in ("worker", "api", "simulate", "notify"):
            assert service["depends_on"][topics]["condition"] == "service_completed_successfully", name


def test_compose_workers_each_have_their_own_id_and_rocksdb_volume() -> None:
    workers = {n: s for n, s in citybrain_services().items() if role(s["command"]) == "worker"}
    assert len(workers) >= 2
    ids, volumes = set(), set()
    for name, service in workers.items():
        args = parser().parse_args(service["command"])
        settings = effective(compose_env(service))
        assert settings.store == "rocksdb", name
        mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
        assert str(settings.data_dir) in mounts, f"{name}: data dir is not on a volume"
        volume = mounts[str(settings.data_dir)]
        assert volume in compose()["volumes"], f"{name}: {volume} is not a named volume"
        ids.add(args.worker_id)
        volumes.add(volume)
    assert len(ids) == len(volumes) == len(workers)


def test_compose_apis_listen_on_the_network_with_tokens() -> None:
    apis = {n: s for n, s in citybrain_services().items() if role(s["command"]) == "api"}
    assert len(apis) == 2
    for name, service in apis.items():
        env = compose_env(service)
        settings = effective(env)
        assert settings.api_host == "0.0.0.0", name
        assert "CITYBRAIN_API_TOKENS" in env, name
        published = {p.rsplit(":", 1)[1] for p in service["ports"]}
        assert published == {str(settings.api_port)}, name


def test_compose_simulator_is_optional() -> None:
    sims = [s for s in citybrain_services().values() if role(s["command"]) == "simulate"]
    assert sims and all(s.get("profiles") == ["simulator"] for s in sims)


def test_compose_alertmanager_url_names_the_alertmanager_service() -> None:
    services = compose()["services"]
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    for name, service in citybrain_services().items():
        if role(service["command"]) in ("worker", "api", "notify"):
            url = urlsplit(effective(compose_env(service)).alertmanager_url or "")
            assert (url.hostname, url.port) == ("alertmanager", 9093), name


def test_compose_has_one_notifier_scraped_with_its_queue_on_a_volume() -> None:
    name, service = compose_notifier()
    settings = effective(compose_env(service))
    mounts = {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}
    assert mounts[str(settings.data_dir)] in compose()["volumes"], "the queue must outlive the container"
    assert settings.api_host == "0.0.0.0" and settings.notifier_metrics_port
    (job,) = [j for j in prometheus()["scrape_configs"] if j["job_name"] == "citybrain-notifier"]
    assert [t for c in job["static_configs"] for t in c["targets"]] == [f"{name}:{settings.notifier_metrics_port}"]
    assert "ports" not in service  # metrics for Prometheus on the compose network only


def test_compose_prometheus_scrapes_every_api_replica_and_loads_the_rules() -> None:
    services = compose()["services"]
    apis = {n: effective(compose_env(s)).api_port for n, s in citybrain_services().items()
            if role(s["command"]) == "api"}
    job = api_job()
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert serves("/metrics")
    targets = {t for c in job["static_configs"] for t in c["targets"]}
    assert targets == {f"{n}:{port}" for n, port in apis.items()}

    mounts = {m.split(":")[1]: m.split(":")[0] for m in services["prometheus"]["volumes"]}
    for rule_file in prometheus()["rule_files"]:
        assert (DEPLOY / mounts[rule_file]).resolve() == DEPLOY / "prometheus" / "alerts.yml"
    assert (DEPLOY / mounts["/etc/prometheus/prometheus.yml"]).resolve() == DEPLOY / "prometheus" / "prometheus.yml"
    am_mounts = {m.split(":")[1]: m.split(":")[0] for m in services["alertmanager"]["volumes"]}
    assert (DEPLOY / am_mounts["/etc/alertmanager/alertmanager.yml"]).resolve() == \
        DEPLOY / "alertmanager" / "alertmanager.yml"
    (am,) = prometheus()["alerting"]["alertmanagers"]
    assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]


# ---------------------------------------------------------------- kubernetes


def test_k8s_sasl_ssl_overlay_mounts_the_kafka_secret_in_every_citybrain_pod(tmp_path: Path, processes: None) -> None:
    """deploy/k8s-sasl-ssl: its settings validate with the Secret's files where the pods get
    them, and every workload of the base mounts that Secret in its container."""
    overlay = one(DEPLOY / "k8s-sasl-ssl" / "kustomization.yaml")
    (literals,) = [g["literals"] for g in overlay["configMapGenerator"] if g["name"] == "citybrain"]
    env = {**configmap(), **dict(item.split("=", 1) for item in literals)}
    mounts, patched = set(), set()
    for p in overlay["patches"]:
        patch = yaml.safe_load(p["patch"])
        spec = patch["spec"]["template"]["spec"]
        (volume,) = spec["volumes"]
        (container,) = spec["containers"]
        (mount,) = container["volumeMounts"]
        assert volume["secret"]["secretName"] == "citybrain-kafka" and mount["name"] == volume["name"]
        mounts.add(mount["mountPath"])
        patched.add((patch["kind"], patch["metadata"]["name"]))
        base = k8s_named(patch["kind"], patch["metadata"]["name"])
        assert [c["name"] for c in containers(base) if c["image"] == "citybrain"] == [container["name"]]
    assert patched == {(w["kind"], w["metadata"]["name"]) for w in k8s("Deployment") + k8s("StatefulSet") + k8s("Job")}
    (mount_path,) = mounts
    (tmp_path / "ca.pem").write_text(subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "/dev/null", "-subj", "/CN=ca",
         "-days", "1"], check=True, capture_output=True, text=True).stdout)
    (tmp_path / "password").write_text("pw\n")
    s = effective({k: v.replace(mount_path, str(tmp_path)) for k, v in env.items()})
    assert s.kafka_security().protocol == "SASL_SSL" and s.kafka_security().password == "pw"


def test_kustomization_lists_every_manifest_but_the_token_placeholder() -> None:
    listed = set(one(K8S / "kustomization.yaml")["resources"])
    # Re-applying must not reset the real tokens to the empty placeholder.
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.yaml"}
    for doc in k8s_docs():
        assert "namespace" not in doc["metadata"], doc["metadata"]["name"]


def test_k8s_selectors_match_their_pods() -> None:
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
            for w in k8s("Deployment") + k8s("StatefulSet")}
    for w in k8s("Deployment") + k8s("StatefulSet"):
        assert w["spec"]["selector"]["matchLabels"].items() <= pods[w["metadata"]["name"]].items()
    for svc in k8s("Service"):
        assert any(svc["spec"]["selector"].items() <= labels.items() for labels in pods.values())
    budgets = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in k8s("PodDisruptionBudget")}
    for w in k8s("Deployment") + k8s("StatefulSet"):
        assert tuple(sorted(w["spec"]["selector"]["matchLabels"].items())) in budgets, w["metadata"]["name"]


def test_k8s_containers_have_resources() -> None:
    for name, c in k8s_containers():
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= c["resources"][kind].keys(), (name, kind)


def test_k8s_workers_keep_rocksdb_state_per_pod() -> None:
    sts = k8s_named("StatefulSet", "citybrain-worker")
    assert sts["spec"]["replicas"] >= 2
    (c,) = containers(sts)
    settings = effective(k8s_env(c))
    assert settings.store == "rocksdb"
    assert str(settings.data_dir) == image_data_dir()
    # The worker id comes from the pod name, which is stable for a StatefulSet's pod.
    args = parser().parse_args(c["args"])
    var = re.fullmatch(r"\$\((\w+)\)", args.worker_id)
    assert var, "--worker-id should be the pod name"
    (env,) = [e for e in c["env"] if e["name"] == var.group(1)]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[str(settings.data_dir)] in claims
    assert sts["spec"]["serviceName"] in {s["metadata"]["name"] for s in k8s("Service")}
    assert "ports" not in c and "livenessProbe" not in c  # workers serve no HTTP


def test_k8s_api_probes_ports_and_tokens() -> None:
    api = k8s_named("Deployment", "citybrain-api")
    assert api["spec"]["replicas"] == 2
    (c,) = containers(api)
    settings = effective(k8s_env(c))
    assert settings.api_host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert list(ports.values()) == [settings.api_port]

    def probe(kind: str) -> tuple[str, int]:
        get = c[kind]["httpGet"]
        return get["path"], ports.get(get["port"], get["port"])

    assert probe("readinessProbe") == ("/readyz", settings.api_port)
    assert probe("livenessProbe") == ("/healthz", settings.api_port)
    assert serves("/readyz") and serves("/healthz")

    notes = api["spec"]["template"]["metadata"]["annotations"]
    assert serves(notes["prometheus.io/path"])
    assert int(notes["prometheus.io/port"]) == settings.api_port

    (svc,) = [s for s in k8s("Service") if s["metadata"]["name"] == "citybrain-api"]
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= set(ports) | set(ports.values())
    # The tokens come from the Secret, which ships empty: no default token to guess.
    secrets = [s["secretRef"]["name"] for s in c["envFrom"] if "secretRef" in s]
    assert [k8s_named("Secret", n)["stringData"] for n in secrets] == [{"CITYBRAIN_API_TOKENS": ""}]


def test_k8s_notifier_is_one_pod_scraped_with_its_queue_on_a_claim() -> None:
    sts = k8s_named("StatefulSet", "citybrain-notifier")
    assert sts["spec"]["replicas"] == 1  # a StatefulSet never runs two during a rollout
    (c,) = containers(sts)
    assert role(c["args"]) == "notify"
    settings = effective(k8s_env(c))
    assert settings.alertmanager_url and str(settings.data_dir) == image_data_dir()
    claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
    assert {m["mountPath"]: m["name"] for m in c["volumeMounts"]}[str(settings.data_dir)] in claims
    assert settings.api_host == "0.0.0.0"
    assert [p["containerPort"] for p in c["ports"]] == [settings.notifier_metrics_port]
    notes = sts["spec"]["template"]["metadata"]["annotations"]
    assert int(notes["prometheus.io/port"]) == settings.notifier_metrics_port
    assert notes["prometheus.io/path"] == "/metrics"


def test_k8s_topics_job_provisions() -> None:
    (job,) = k8s("Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert role(c["args"]) == "topics"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"


# ---------------------------------------------------------------- one configuration


def test_partitions_and_prefix_are_the_same_everywhere() -> None:
    seen = {(s.partitions, s.topic_prefix) for s in
            [effective(compose_env(svc)) for svc in citybrain_services().values()]
            + [effective(k8s_env(c)) for _, c in k8s_containers()]}
    assert len(seen) == 1, seen
    for name, service in citybrain_services().items():
        assert "CITYBRAIN_PARTITIONS" in compose_env(service), f"{name} relies on the default"
    assert "CITYBRAIN_PARTITIONS" in configmap()


# ---------------------------------------------------------------- metrics and alerts


SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


def check_promql(expr: str, where: str) -> None:
    metrics = exported()
    names = set(re.findall(r"\bcitybrain_[a-z0-9_]+", expr))
    assert names, f"{where}: {expr!r} uses no citybrain metric"
    for name in names:
        assert name in metrics, f"{where}: {name} is not exported (have {sorted(metrics)})"
    scrape = {"job", "instance"}
    known = scrape | {"le"} | {label for labels in metrics.values() for label in labels}
    for name, body in SELECTOR.findall(expr):
        for label, op, value in MATCHER.findall(body):
            if name == "up" or label in scrape:
                continue
            assert label in metrics[name], f"{where}: {name} has no label {label}"
            if op == "=" and "$" not in value:
                assert value in metrics[name][label], f"{where}: {name}{{{label}={value!r}}} never exported"
    for group in GROUPING.findall(expr):
        for label in filter(None, (g.strip() for g in group.split(","))):
            assert label in known, f"{where}: grouping by unknown label {label}"


def test_alert_rules_use_exported_metrics() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {"CitybrainApiDown", "CitybrainViewNotCaughtUp",
                                           "CitybrainDeadLettersRising", "CitybrainNoEventsProcessed"}
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        if "citybrain_" in rule["expr"]:
            check_promql(rule["expr"], rule["alert"])
        for job in re.findall(r'job\s*=\s*"([^"]+)"', rule["expr"]):
            assert job in {j["job_name"] for j in prometheus()["scrape_configs"]}, rule["alert"]


def test_grafana_dashboard_uses_exported_metrics() -> None:
    dash = json.loads((DEPLOY / "grafana" / "citybrain.json").read_text())
    assert [i["name"] for i in dash["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exprs = grafana_exprs()
    used = set()
    for expr in exprs:
        if "citybrain_" in expr:
            check_promql(expr, "grafana")
            used |= set(re.findall(r"\bcitybrain_[a-z0-9_]+", expr))
    # Every metric family the API exports has a panel.
    assert {"citybrain_events_total", "citybrain_records_total", "citybrain_view_caught_up",
            "citybrain_http_requests_total", "citybrain_http_request_seconds_bucket",
            "citybrain_notifications_total", "citybrain_notification_queue"} <= used


def test_alertmanager_routes_to_declared_receivers() -> None:
    am = one(DEPLOY / "alertmanager" / "alertmanager.yml")
    receivers = {r["name"] for r in am["receivers"]}

    def walk(route: dict[str, Any]) -> Iterator[str]:
        if "receiver" in route:
            yield route["receiver"]
        for child in route.get("routes", []):
            yield from walk(child)

    assert set(walk(am["route"])) <= receivers
    # Own-health alerts are told apart by name: every rule in alerts.yml must match.
    (platform,) = [r for r in am["route"]["routes"] if r["receiver"] == "platform"]
    (pattern,) = re.findall(r'alertname =~ "([^"]+)"', platform["matchers"][0])
    assert all(re.fullmatch(pattern, r["alert"]) for r in alert_rules())
