#!/usr/bin/env python3
"""Writes helm/strata/values.schema.json: every value of the chart, and under `config` the gateway's whole config
(docs/CONFIG.md) with unknown keys refused at every level, so `helm install` rejects a typo'd or mistyped value with
the value's path in the message. `check_chart.py` fails when the committed file differs from what this writes.

    python3 helm/strata/ci/gen_schema.py            # rewrite the file
"""

import json
import pathlib

CHART = pathlib.Path(__file__).resolve().parent.parent

DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d))+$", "description": "e.g. 250ms, 30s, 1m30s"}
SIZE = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^[0-9]+(B|KB|MB|GB|KiB|MiB|GiB)?$"},
    ],
    "description": "bytes, or e.g. 512KiB, 256MiB",
}
LISTEN = {"type": "string", "pattern": r"^(\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):[0-9]{1,5}$"}
CODES = [
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]
METADATA_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"}
FIELD_PATH = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
              "description": "a request field, by name (dotted into nested messages: filter.tenant_id)"}


def obj(properties, required=(), description=None):
    """An object with exactly these properties."""
    schema = {"type": "object", "additionalProperties": False, "properties": properties}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def string(description=None, **extra):
    schema = {"type": "string", **extra}
    if description:
        schema["description"] = description
    return schema


def bounded(kind, minimum=None, maximum=None):
    schema = {"type": kind}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def integer(minimum=None, maximum=None):
    return bounded("integer", minimum, maximum)


def number(minimum=None, maximum=None):
    return bounded("number", minimum, maximum)


def array(items, **extra):
    return {"type": "array", "items": items, **extra}


BOOL = {"type": "boolean"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECT = {"type": "object"}

RETRY = obj({
    "attempts": integer(1, 10),
    "per_try_timeout": DURATION,
    "on": array({"enum": CODES}),
    "backoff": DURATION,
    "budget_percent": integer(0, 100),
    "min_retries_per_second": integer(0),
})

BACKEND = obj({
    "endpoints": array(string(pattern=r"^(https?://|dns:///).+"), minItems=1),
    "resolve_interval": DURATION,
    "timeout": DURATION,
    "connect_timeout": DURATION,
    "lb": {"enum": ["round_robin", "p2c"]},
    "keepalive_interval": DURATION,
    "keepalive_timeout": DURATION,
    "health_check": obj({
        "interval": DURATION,
        "timeout": DURATION,
        "unhealthy_threshold": integer(1),
        "healthy_threshold": integer(1),
        "service": string(),
    }),
    "outlier": obj({
        "consecutive_failures": integer(1),
        "base_ejection_time": DURATION,
        "max_ejection_percent": integer(0, 100),
    }),
    "tls": obj({"ca": string(), "cert": string(), "key": string(), "server_name": string()}),
    "retry": RETRY,
    "max_concurrent_requests": integer(1),
    "default_timeout": DURATION,
    "max_timeout": DURATION,
}, required=["endpoints"])

ROUTE = obj({
    "match": string("`/pkg.Service/Method`, `/pkg.Service/*` or `*`", pattern=r"^(\*|/[^/]+/(\*|[^/*]+))$"),
    "backend": string("a name under `backends`", minLength=1),
    "cache": obj({
        "ttl": DURATION,
        "negative_ttl": DURATION,
        "negative_codes": array({"enum": CODES}),
        "stale_while_revalidate": DURATION,
        "stale_if_error": DURATION,
        "early_refresh_beta": number(0),
        "max_ttl": DURATION,
        "max_entry_bytes": SIZE,
        "vary": array(METADATA_NAME),
        "shared": BOOL,
        "key_fields": array(FIELD_PATH),
        "ignore_fields": array(FIELD_PATH),
        "canonical": BOOL,
        "keep_unknown_fields": BOOL,
        "from_proto": BOOL,
    }) | {"anyOf": [{"required": ["ttl"]}, {"required": ["from_proto"], "properties": {"from_proto": {"const": True}}}]},
    "retry": RETRY,
    "rate_limit": obj({
        "rps": integer(1),
        "burst": integer(1),
        "key": METADATA_NAME,
        "apply_to": {"enum": ["all", "misses"]},
    }, required=["rps"]),
}, required=["match", "backend"])

CONFIG = obj({
    "listen": LISTEN,
    "tls": obj({"cert": string(), "key": string(), "client_ca": string(), "reload_interval": DURATION},
               required=["cert", "key"]),
    "log": obj({"level": string(), "format": {"enum": ["text", "json"]}, "access": BOOL}),
    "telemetry": obj({
        "otlp_endpoint": string(pattern=r"^https?://"),
        "sample_ratio": number(0, 1),
        "service_name": string(),
    }),
    "admin": obj({"listen": LISTEN, "token": string()}),
    "max_request_bytes": SIZE,
    "max_response_bytes": SIZE,
    "expose_cache_status": BOOL,
    "max_concurrent_requests": integer(1),
    "worker_threads": integer(1, 1024),
    "drain_delay": DURATION,
    "idle_timeout": DURATION,
    "shutdown_grace": DURATION,
    "cache": obj({
        "namespace": string(pattern=r"^[A-Za-z0-9._-]+$"),
        "l1": obj({"max_bytes": SIZE, "max_ttl_when_disconnected": DURATION}),
        "l2": obj({
            "url": string(pattern=r"^rediss?://"),
            "cluster": array(string(pattern=r"^rediss?://"), minItems=1),
            "timeout": DURATION,
            "write_queue": integer(1),
        }),
        "lease": obj({"ttl": DURATION, "wait": DURATION}),
        "private_metadata": array(METADATA_NAME),
        "flight_wait": DURATION,
    }),
    "descriptors": obj({"reflection": BOOL, "files": array(string()), "refresh": DURATION}),
    "backends": {"type": "object", "minProperties": 1, "additionalProperties": BACKEND},
    "routes": array(ROUTE, minItems=1),
}, required=["backends", "routes"], description="The gateway config, 1:1 (docs/CONFIG.md).")

RESOURCES = obj({"requests": ANY_OBJECT, "limits": ANY_OBJECT, "claims": {"type": "array"}})
PROBE = obj({
    "initialDelaySeconds": integer(0),
    "periodSeconds": integer(1),
    "timeoutSeconds": integer(1),
    "failureThreshold": integer(1),
    "successThreshold": integer(1),
})

VALUES = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Values of the Strata chart",
    **obj({
        "global": ANY_OBJECT,
        "replicaCount": integer(0),
        "image": obj({
            "repository": string(minLength=1),
            "tag": string(),
            "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
        }, required=["repository"]),
        "imagePullSecrets": array(obj({"name": string(minLength=1)}, required=["name"])),
        "nameOverride": string(),
        "fullnameOverride": string(),
        "config": CONFIG,
        "rollOnConfigChange": BOOL,
        "redis": obj({
            "enabled": BOOL,
            "url": {"anyOf": [{"const": ""}, string(pattern=r"^rediss?://[^@]+$")],
                    "description": "redis://host:port, without a password (it comes from existingSecret)"},
            "cluster": array(string(pattern=r"^rediss?://")),
            "existingSecret": obj({"name": string(), "key": string(minLength=1)}),
            "image": obj({"repository": string(minLength=1), "tag": string(minLength=1),
                          "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}}),
            "resources": RESOURCES,
            "maxmemory": string(pattern=r"^[0-9]+(b|kb|mb|gb)?$"),
            "persistence": obj({"enabled": BOOL, "size": string(), "storageClass": string()}),
        }),
        "serviceAccount": obj({"create": BOOL, "name": string(), "annotations": STRING_MAP,
                               "automountToken": BOOL}),
        "podAnnotations": STRING_MAP,
        "podLabels": STRING_MAP,
        "podSecurityContext": ANY_OBJECT,
        "securityContext": ANY_OBJECT,
        "resources": RESOURCES,
        "probes": obj({"liveness": PROBE, "readiness": PROBE}),
        "terminationGracePeriodSeconds": {"type": ["integer", "null"], "minimum": 0},
        "topologySpread": obj({
            "enabled": BOOL,
            "whenUnsatisfiable": {"enum": ["DoNotSchedule", "ScheduleAnyway"]},
            "zones": BOOL,
        }),
        "nodeSelector": STRING_MAP,
        "tolerations": array(ANY_OBJECT),
        "affinity": ANY_OBJECT,
        "priorityClassName": string(),
        "extraEnv": array(ANY_OBJECT),
        "envFrom": array(ANY_OBJECT),
        "tls": obj({"secretName": string()}),
        "extraSecretMounts": array(obj({
            "name": string(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
            "secretName": string(minLength=1),
            "mountPath": string(pattern=r"^/"),
        }, required=["name", "secretName", "mountPath"])),
        "service": obj({
            "type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
            "port": integer(1, 65535),
            "adminPort": integer(1, 65535),
            "annotations": STRING_MAP,
            "headless": BOOL,
        }),
        "autoscaling": obj({
            "enabled": BOOL,
            "minReplicas": integer(1),
            "maxReplicas": integer(1),
            "targetCPUUtilizationPercentage": {"type": ["integer", "null"], "minimum": 1, "maximum": 100},
            "customMetrics": array(ANY_OBJECT),
        }),
        "podDisruptionBudget": obj({"enabled": BOOL, "minAvailable": {"type": ["integer", "string"]}}),
        "networkPolicy": obj({
            "enabled": BOOL,
            "grpcFromNamespaces": array(string(minLength=1)),
            "adminFromNamespaces": array(string(minLength=1)),
            "allowAllEgress": BOOL,
            "egressPorts": array(integer(1, 65535)),
        }),
        "serviceMonitor": obj({"enabled": BOOL, "interval": string(pattern=r"^[0-9]+(ms|s|m|h)$"),
                               "labels": STRING_MAP}),
        "grafanaDashboard": obj({"enabled": BOOL, "labels": STRING_MAP}),
    }, required=["image", "config"]),
}


def render():
    return json.dumps(VALUES, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    (CHART / "values.schema.json").write_text(render())
