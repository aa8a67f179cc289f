#!/usr/bin/env python3
"""The chart's checks, run by scripts/test with the venv's python (helm-python-sdk: Helm v4's SDK, no helm binary;
kubernetes-validate: offline Kubernetes schemas):

- values.schema.json and the README's values table are what gen_schema.py / gen_readme.py write (no drift);
- `lint --strict` finds nothing, for the default values and for ci/full-values.yaml (every optional part on);
- both renders pass `kubernetes-validate --strict` for Kubernetes 1.28 and 1.33;
- the config in both rendered ConfigMaps passes `strata check` (the chart cannot render a config the gateway rejects);
- bad values are rejected by the schema with a message naming the value;
- changing a key under `config` changes the pod template's checksum; other values do not;
- every metric the Grafana dashboard queries is one the gateway exports.

    target/venv/bin/python helm/strata/ci/check_chart.py --strata target/debug/strata --grpcurl target/venv/bin/grpcurl
"""

import argparse
import copy
import json
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import helm_python
import kubernetes_validate
import yaml

CI = pathlib.Path(__file__).resolve().parent
CHART = CI.parent
sys.path.insert(0, str(CI))
import gen_readme  # noqa: E402
import gen_schema  # noqa: E402

KUBERNETES_VERSIONS = ["1.28.0", "1.33.0"]
# Kinds whose schemas are not Kubernetes' own (Prometheus Operator's): checked for shape by the chart's own tests.
CUSTOM_KINDS = {"ServiceMonitor"}

failures = []


def check(condition, message):
    print(("ok    " if condition else "FAIL  ") + message)
    if not condition:
        failures.append(message)


def full_values():
    return yaml.safe_load((CI / "full-values.yaml").read_text())


def render(values):
    chart = helm_python.Chart.load(CHART)
    chart.validate_schema(chart.merge_values(values))
    return chart.render(values, name="strata", namespace="strata", is_install=True)


def documents(rendered):
    for path, text in sorted(rendered.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                yield path, doc


def of_kind(rendered, kind):
    return [doc for _, doc in documents(rendered) if doc["kind"] == kind]


def check_generated_files():
    schema = (CHART / "values.schema.json").read_text()
    check(schema == gen_schema.render(), "values.schema.json is what ci/gen_schema.py writes")
    readme = (CHART / "README.md").read_text()
    check(gen_readme.table() in readme, "README.md's values table is what ci/gen_readme.py writes from values.yaml")


def check_lint(label, values):
    report = helm_python.lint(CHART, values, strict=True, namespace="strata")
    findings = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
    check(not findings, f"lint --strict, {label}: {findings or 'clean'}")


def check_kubernetes(label, rendered):
    for version in KUBERNETES_VERSIONS:
        problems = []
        for path, doc in documents(rendered):
            if doc["kind"] in CUSTOM_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except Exception as e:  # ValidationError and friends: report them all
                problems.append(f"{path} {doc['kind']}: {e}")
        check(not problems, f"kubernetes-validate --strict {version}, {label}: {problems or 'valid'}")


def mounted_secrets(rendered):
    """Where the rendered Deployment mounts Secrets (the TLS files `config` points at live there)."""
    [deployment] = of_kind(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    secret_volumes = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
    mounts = pod["containers"][0].get("volumeMounts", [])
    return [m["mountPath"] for m in mounts if m["name"] in secret_volumes]


def check_config(label, rendered, strata):
    """`strata check` on the rendered config, as the pod would see it: the Secrets the chart mounts stood in for by
    a self-signed certificate in a temporary directory (check reads every file the config names)."""
    [configmap] = [c for c in of_kind(rendered, "ConfigMap") if "strata.yaml" in c.get("data", {})]
    text = configmap["data"]["strata.yaml"]
    with tempfile.TemporaryDirectory() as tmp:
        for i, mount in enumerate(mounted_secrets(rendered)):
            stand_in = pathlib.Path(tmp) / f"secret-{i}"
            stand_in.mkdir()
            subprocess.run(
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=strata",
                 "-keyout", stand_in / "tls.key", "-out", stand_in / "tls.crt"],
                check=True, capture_output=True,
            )
            (stand_in / "ca.crt").write_bytes((stand_in / "tls.crt").read_bytes())
            text = text.replace(mount.rstrip("/") + "/", f"{stand_in}/")
        config = pathlib.Path(tmp) / "strata.yaml"
        config.write_text(text)
        result = subprocess.run([strata, "check", "--config", config], capture_output=True, text=True)
    check(result.returncode == 0, f"strata check accepts the rendered config, {label}: {result.stderr.strip() or 'ok'}")


def check_rejected(label, values, must_name):
    chart = helm_python.Chart.load(CHART)
    try:
        chart.validate_schema(chart.merge_values(values))
    except helm_python.HelmValuesError as e:
        check(must_name in str(e), f"schema rejects {label}, naming `{must_name}`: {str(e).strip()[:160]}")
        return
    check(False, f"schema rejects {label}")


def checksum(values):
    [deployment] = of_kind(render(values), "Deployment")
    return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def check_dashboard(strata, grpcurl):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        data_port = s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        admin_port = s.getsockname()[1]
    config = {
        "listen": f"127.0.0.1:{data_port}",
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "cache": {"l2": {"url": "redis://127.0.0.1:1", "timeout": "25ms"}},
        "backends": {"b": {"endpoints": ["http://127.0.0.1:1"]}},
        "routes": [{"match": "*", "backend": "b", "cache": {"ttl": "1s"}}],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(config, f)
        f.flush()
        gateway = subprocess.Popen([strata, "serve", "--config", f.name], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            metrics = f"http://127.0.0.1:{admin_port}/metrics"
            deadline = time.time() + 20
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(metrics, timeout=2).read()
                    break
                except OSError:
                    time.sleep(0.1)
            # One call (its backend is down: UNAVAILABLE), so that the per-call families have a sample to show.
            subprocess.run(
                [grpcurl, "-plaintext", "-import-path", str(CHART.parent.parent / "proto" / "proto"),
                 "-proto", "demo/v1/catalog.proto", "-d", '{"id":"item-1"}', f"127.0.0.1:{data_port}",
                 "demo.v1.Catalog/GetItem"],
                capture_output=True, timeout=30,
            )
            text = urllib.request.urlopen(metrics, timeout=5).read().decode()
            check_service_monitor_scrape(admin_port)
        finally:
            gateway.terminate()
            gateway.wait(timeout=20)
    exported = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    dashboard = (CHART / "dashboards" / "strata.json").read_text()
    queried = set(re.findall(r"\b(strata_[a-z0-9_]+)", dashboard))
    unknown = sorted(m for m in queried if re.sub(r"_(bucket|sum|count)$", "", m) not in exported)
    check(bool(exported) and not unknown, f"every metric the dashboard queries is exported: {unknown or 'yes'}")


def check_service_monitor_scrape(admin_port):
    """A real Prometheus scrapes the gateway the way the rendered ServiceMonitor describes it (the Service port it names,
    its path and interval): the target must be up and `strata_calls_total` queryable."""
    rendered = render({"serviceMonitor": {"enabled": True, "interval": "1s"}})
    [monitor] = of_kind(rendered, "ServiceMonitor")
    [endpoint] = monitor["spec"]["endpoints"]
    [service] = [s for s in of_kind(rendered, "Service") if any(p["name"] == endpoint["port"] for p in s["spec"]["ports"])]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    [deployment] = of_kind(rendered, "Deployment")
    container_ports = {p["name"] for p in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]}
    check(port["targetPort"] in container_ports and port["targetPort"] == "admin",
          f"the ServiceMonitor's port `{endpoint['port']}` reaches the container's admin port")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        web = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        config = {
            "global": {"scrape_interval": endpoint["interval"], "scrape_timeout": "900ms"},
            "scrape_configs": [{"job_name": "strata", "metrics_path": endpoint["path"],
                                "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}]}],
        }
        (pathlib.Path(tmp) / "prometheus.yml").write_text(yaml.safe_dump(config))
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
             f"--web.listen-address=127.0.0.1:{web}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            api = f"http://127.0.0.1:{web}/api/v1"
            health, error, samples = "unknown", "", []
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    targets = json.load(urllib.request.urlopen(f"{api}/targets", timeout=2))["data"]["activeTargets"]
                    if targets and targets[0]["health"] != "unknown":
                        health, error = targets[0]["health"], targets[0]["lastError"]
                        samples = json.load(urllib.request.urlopen(
                            f"{api}/query?query=strata_calls_total", timeout=2))["data"]["result"]
                        if health != "up" or samples:
                            break
                except OSError:
                    pass
                time.sleep(0.2)
        finally:
            prometheus.terminate()
            prometheus.wait(timeout=20)
    check(health == "up" and bool(samples),
          f"a Prometheus scraping as the ServiceMonitor says finds the target up with strata_calls_total: "
          f"{health} {error!r}, {len(samples)} series")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strata", required=True, help="the strata binary (for `check` and the metric names)")
    parser.add_argument("--grpcurl", required=True, help="grpcurl (one call through the gateway for the metrics)")
    args = parser.parse_args()
    strata, grpcurl = args.strata, args.grpcurl

    check_generated_files()
    for label, values in [("default values", {}), ("ci/full-values.yaml", full_values())]:
        check_lint(label, values)
        rendered = render(values)
        check_kubernetes(label, rendered)
        check_config(label, rendered, strata)

    with_redis = {"redis": {"enabled": True}}
    rendered = render(with_redis)
    check(len(of_kind(rendered, "StatefulSet")) == 1, "redis.enabled renders the in-chart Redis")
    check_kubernetes("redis.enabled", rendered)
    check_config("redis.enabled", rendered, strata)

    check_rejected("a string for replicaCount", {"replicaCount": "two"}, "replicaCount")
    bad = copy.deepcopy(helm_python.Chart.load(CHART).values)
    bad["config"]["cache"]["l1"]["max_byts"] = "64MiB"
    check_rejected("an unknown key under config", bad, "max_byts")
    bad = copy.deepcopy(helm_python.Chart.load(CHART).values)
    bad["config"]["routes"] = [{"match": "*"}]
    check_rejected("a route without backend", bad, "backend")
    check_rejected("a duration without a unit", {"config": {"shutdown_grace": "10"}}, "shutdown_grace")

    base = checksum({})
    changed = copy.deepcopy(helm_python.Chart.load(CHART).values["config"])
    changed["cache"]["l1"]["max_bytes"] = "128MiB"
    check(checksum({"config": changed}) != base, "a change under config changes the checksum annotation")
    check(checksum({"replicaCount": 5}) == base, "a change outside config leaves the checksum alone")

    [deployment] = of_kind(render({}), "Deployment")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    check(grace == 15, f"terminationGracePeriodSeconds = shutdown_grace 10s + drain 0s + 5 s: {grace}")

    check_dashboard(strata, grpcurl)
    if failures:
        print(f"\n{len(failures)} chart check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("\nall chart checks passed")


if __name__ == "__main__":
    main()
