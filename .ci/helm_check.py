"""Lints and renders the Helm chart with a real Helm (helm-sdkpy bundles Helm's Go
library) and checks what it renders. Run through .ci/helm-lint, which installs the
tools and sets HELM_DRIVER=memory.

1. `helm lint` of the chart with its default values and with each file in
   helm/tally/ci/ (lint takes no values files here, so the chart is copied with the
   values merged the way Helm merges them); warnings fail too.
2. `helm install` of the same value sets against a stand-in API server (.ci/fake_kube.py):
   schema validation and template errors come back with Helm's own messages, and the
   release holds the exact manifests and hooks a cluster would receive.
3. Checks on those manifests: Kubernetes' strict JSON schemas (1.27, the chart's
   minimum, and the newest), kinds present, probes, security contexts, Secret
   references, selectors, hook order, and — when TALLY_BIN names a built binary —
   that `tally` accepts the rendered tally.toml and environment.
4. Values that must be refused are refused, with the expected message.
5. With TALLY_BIN set, the release rendered with the documented minimum (a Pub/Sub
   project, here with an emulator host) runs as local processes
   (.ci/live_deploy_check.py): hook Jobs, then the five services, which create a customer
   and a subscription and bill its first, ended period, which finance books; without the
   peer key a service that calls peers stops at start.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

import helm_sdkpy
import kubernetes_validate
import yaml

from deploy_checks import (
    ROOT,
    Checks,
    bad_tally_variables,
    cli_variables,
    code_ordered_subscriptions,
    code_subscriptions,
    code_topics,
    config_sections,
    run_binary,
    setup_entry_is_ordered,
    struct_fields,
    tally_binary,
)
from fake_kube import FakeKube
import live_deploy_check

CHART = ROOT / "helm" / "tally"
SERVICES = ["ingest", "rating", "invoicing", "payments", "finance", "connectors", "export"]
# The grpc.health.v1 name each service reports readiness under.
READINESS_SERVICES = {
    "ingest": "tally.ingest.v1.IngestService",
    "rating": "tally.rating.v1.RatingService",
    "invoicing": "tally.invoicing.v1.InvoiceService",
    "payments": "tally.payments.v1.PaymentService",
    "finance": "tally.finance.v1.LedgerService",
    "connectors": "tally.connectors.v1.ConnectorService",
    "export": "tally.export.v1.ExportService",
}
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.latest_version()]
NAMESPACE = "billing"
RELEASE = "tally"
LINT_SEVERITY = {1: "INFO", 2: "WARNING", 3: "ERROR"}

# The live check's values: the documented minimum (pubsub.projectId) plus an emulator,
# since no real Pub/Sub is reachable from CI.
LIVE_EMULATOR_HOST = "pubsub-emulator:8085"
LIVE_VALUES = {"pubsub": {"projectId": "tally-live", "emulatorHost": LIVE_EMULATOR_HOST}}

# Values that must be refused, and a piece of the message Helm must give.
MUST_FAIL = [
    ({"servces": {}}, "additional properties 'servces' not allowed"),
    ({"services": {"ingset": {"enabled": True}}}, "additional properties 'ingset' not allowed"),
    ({"services": {"ingest": {"replicaCount": "two"}}}, "/services/ingest/replicaCount"),
    ({"config": {"logFormat": "xml"}}, "/config/logFormat"),
    ({"config": {"ingest": {"max_batch_event": 10}}}, "additional properties 'max_batch_event' not allowed"),
    ({"pubsub": {"maxDeliveryAttempts": 3}}, "/pubsub/maxDeliveryAttempts"),
    ({"pubsub": {"projectId": "Not_A_Project"}}, "/pubsub/projectId"),
    ({"database": {"existingSecret": ""}}, "/database/existingSecret"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"extraEnv": [{"name": "TALLY_LISTEN", "value": "x"}]}, "/extraEnv/0/name"),
    ({"services": {"payments": {"webhooks": {"ingress": {"enabled": True}}}}}, "ingress.host is required"),
    ({"services": {"rating": {"autoscaling": {"enabled": True, "minReplicas": 9, "maxReplicas": 3}}}}, "minReplicas (9) is above maxReplicas (3)"),
    ({"pubsub": {"setup": {"enabled": True}}}, "pubsub.projectId is required"),
    ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
    ({"apiKey": {"generate": False}}, "apiKey.existingSecret is required when apiKey.generate is false"),
]


def merge(base: dict, override: dict) -> dict:
    """Helm's merge of a values file over the defaults: maps merge, null deletes."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


async def lint(chart_dir: Path) -> list[tuple[str, str]]:
    """(severity, path) of every lint message above INFO (helm-sdkpy drops the texts)."""
    result = await helm_sdkpy.Lint(helm_sdkpy.Configuration(namespace=NAMESPACE)).run(str(chart_dir))
    problems = []
    for message in result.get("Messages") or []:
        if message["Severity"] >= 2:
            problems.append((LINT_SEVERITY.get(message["Severity"], "?"), message["Path"]))
    if result.get("Errors") and not problems:
        problems.append(("ERROR", "lint reported errors"))
    return problems


async def lint_with(values: dict | None) -> list[tuple[str, str]]:
    if values is None:
        return await lint(CHART)
    with tempfile.TemporaryDirectory() as directory:
        copy_dir = Path(directory) / "tally"
        shutil.copytree(CHART, copy_dir)
        defaults = yaml.safe_load((CHART / "values.yaml").read_text())
        (copy_dir / "values.yaml").write_text(yaml.safe_dump(merge(defaults, values)))
        return await lint(copy_dir)


async def install(values: dict) -> dict:
    """Helm's install against a fresh stand-in cluster; the release as a dict."""
    with FakeKube() as kube:
        config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=kube.kubeconfig(NAMESPACE))
        return await helm_sdkpy.Install(config).run(RELEASE, str(CHART), values=values, wait=False, timeout=60)


def documents(text: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "Job"):
        return obj["spec"]["template"]["spec"]
    return None


def env_map(container: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def check_release(checks: Checks, label: str, values: dict, release: dict) -> None:
    effective = merge(yaml.safe_load((CHART / "values.yaml").read_text()), values)
    manifests = documents(release["manifest"])
    hooks = [(hook, documents(hook["manifest"])[0]) for hook in release.get("hooks") or []]
    objects = manifests + [obj for _, obj in hooks]
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    prefix = f"[{label}]"

    # Kubernetes' own schemas, strict: a misspelled or misplaced field fails.
    for version in KUBERNETES_VERSIONS:
        for obj in objects:
            name = f"{obj['kind']}/{obj['metadata']['name']}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
                checks.check(True, "")
            except kubernetes_validate.ValidationError as error:
                checks.check(False, f"{prefix} {name} is invalid for Kubernetes {version}: {error.message} at {list(error.path)}")
            except kubernetes_validate.SchemaNotFoundError as error:
                checks.check(False, f"{prefix} no Kubernetes {version} schema for {name}: {error}")

    # Every enabled service has its objects; nothing else is rendered.
    checks.check(sorted(effective["services"]) == sorted(SERVICES),
                 f"{prefix} services in values.yaml {sorted(effective['services'])} are the checked ones {SERVICES}")
    enabled = [s for s in SERVICES if effective["services"][s]["enabled"]]
    for service in enabled:
        name = f"{RELEASE}-{service}"
        settings = effective["services"][service]
        checks.check(name in by_kind.get("Deployment", {}), f"{prefix} Deployment {name} missing")
        checks.check(name in by_kind.get("Service", {}), f"{prefix} Service {name} missing")
        checks.check(
            (name in by_kind.get("HorizontalPodAutoscaler", {})) == settings["autoscaling"]["enabled"],
            f"{prefix} HorizontalPodAutoscaler {name} present iff autoscaling.enabled",
        )
        checks.check(
            (name in by_kind.get("PodDisruptionBudget", {})) == settings["podDisruptionBudget"]["enabled"],
            f"{prefix} PodDisruptionBudget {name} present iff podDisruptionBudget.enabled",
        )
        deployment = by_kind.get("Deployment", {}).get(name)
        if deployment and settings["autoscaling"]["enabled"]:
            checks.check("replicas" not in deployment["spec"], f"{prefix} {name}: replicas left to the HPA")
    checks.check(RELEASE in by_kind.get("ConfigMap", {}), f"{prefix} ConfigMap {RELEASE} missing")
    ingress_on = effective["services"]["payments"]["webhooks"]["ingress"]["enabled"]
    checks.check(bool(by_kind.get("Ingress")) == ingress_on, f"{prefix} webhook Ingress present iff enabled")

    # Hooks: accounts and scripts first, then the Pub/Sub setup, then migrations.
    hook_weights = {(obj["kind"], obj["metadata"]["name"]): hook.get("weight", 0) for hook, obj in hooks}
    migrate = ("Job", f"{RELEASE}-migrate")
    checks.check(migrate in hook_weights, f"{prefix} the migration Job is not a hook")
    for hook, obj in hooks:
        annotations = obj["metadata"].get("annotations", {})
        checks.check(
            annotations.get("helm.sh/hook") == "pre-install,pre-upgrade",
            f"{prefix} hook {obj['kind']}/{obj['metadata']['name']} runs pre-install,pre-upgrade",
        )
        checks.check(
            "before-hook-creation" in annotations.get("helm.sh/hook-delete-policy", ""),
            f"{prefix} hook {obj['kind']}/{obj['metadata']['name']} has a delete policy",
        )
    if ("ServiceAccount", f"{RELEASE}-hooks") in hook_weights and migrate in hook_weights:
        checks.check(
            hook_weights[("ServiceAccount", f"{RELEASE}-hooks")] < hook_weights[migrate],
            f"{prefix} the hooks ServiceAccount exists before the migration Job",
        )
    # The peer key: generated (a hook Secret first, registered by a hook Job after the
    # migrations) unless an existing Secret is named; every service calls with it.
    generated = effective["apiKey"]["generate"] and not effective["apiKey"]["existingSecret"]
    key_secret = effective["apiKey"]["existingSecret"] or f"{RELEASE}-peer-key"
    secret_hook = ("Secret", f"{RELEASE}-peer-key")
    register = ("Job", f"{RELEASE}-peer-key")
    checks.check((secret_hook in hook_weights) == generated, f"{prefix} peer-key Secret hook iff generated")
    checks.check(
        (register in hook_weights) == (generated and effective["migrations"]["enabled"]),
        f"{prefix} peer-key registration Job iff generated (and migrations run)",
    )
    if register in hook_weights:
        checks.check(
            hook_weights[secret_hook] < hook_weights[migrate] < hook_weights[register],
            f"{prefix} the peer-key Secret, then the migrations, then its registration",
        )
        container = by_kind["Job"][register[1]]["spec"]["template"]["spec"]["containers"][0]
        checks.check(
            container["args"][:2] == ["keys", "register"] and "read,write" in container["args"],
            f"{prefix} the registration Job runs `tally keys register --scope read,write`: {container['args']}",
        )
        source = env_map(container).get("TALLY_API_KEY", {}).get("valueFrom", {}).get("secretKeyRef", {})
        checks.check(source.get("name") == key_secret, f"{prefix} the registration Job reads the peer key Secret")
    if secret_hook in hook_weights:
        data = by_kind["Secret"][secret_hook[1]].get("data", {})
        key = data.get(effective["apiKey"]["key"], "")
        checks.check(len(key) > 40, f"{prefix} the generated peer key Secret holds a key")
    for service in enabled:
        deployment = by_kind.get("Deployment", {}).get(f"{RELEASE}-{service}", {})
        containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [{}])
        source = env_map(containers[0]).get("TALLY_API_KEY", {}).get("valueFrom", {}).get("secretKeyRef", {})
        checks.check(
            source.get("name") == key_secret and source.get("key") == effective["apiKey"]["key"],
            f"{prefix} {service} calls its peers with the key in Secret {key_secret}: {source}",
        )

    setup = ("Job", f"{RELEASE}-pubsub-setup")
    checks.check((setup in hook_weights) == effective["pubsub"]["setup"]["enabled"], f"{prefix} Pub/Sub setup Job iff enabled")
    if setup in hook_weights:
        checks.check(hook_weights[setup] < hook_weights[migrate], f"{prefix} Pub/Sub setup runs before migrations")
        container = by_kind["Job"][setup[1]]["spec"]["template"]["spec"]["containers"][0]
        topics = env_map(container)["PUBSUB_TOPICS"]["value"].split()
        checks.check(topics == code_topics(), f"{prefix} pubsub.topics {topics} == crates/bus/src/topics.rs {code_topics()}")
        entries = env_map(container)["PUBSUB_SUBSCRIPTIONS"]["value"].split()
        for entry in entries:
            topic = entry.split("=", 1)[1].split(":")[0]
            checks.check(topic in code_topics(), f"{prefix} subscription {entry} reads a known topic")
        named = {entry.split("=", 1)[0] for entry in entries}
        listed = {subscription["name"] for subscription in effective["pubsub"]["subscriptions"]}
        for constant, name in code_subscriptions().items():
            checks.check(name in listed, f"{prefix} pubsub.subscriptions lacks {name} ({constant})")
            # Only the subscriptions of enabled services are created: an unread one
            # would keep every message for Pub/Sub's retention.
            owner = constant.split("/")[1]
            wanted = effective["services"].get(owner, {}).get("enabled", True)
            checks.check((name in named) == wanted,
                         f"{prefix} the setup Job {'creates' if wanted else 'does not create'} {name} "
                         f"(services.{owner} is {'enabled' if wanted else 'disabled'})")
        # Each entry's `service` is the crate that names the subscription.
        owners = {name: constant.split("/")[1] for constant, name in code_subscriptions().items()}
        for subscription in effective["pubsub"]["subscriptions"]:
            owner = owners.get(subscription["name"])
            checks.check(owner in (None, subscription["service"]),
                         f"{prefix} pubsub.subscriptions {subscription['name']} is consumed by {owner}, "
                         f"not {subscription['service']}")
        ordered = code_ordered_subscriptions()
        for entry in entries:
            name = entry.split("=", 1)[0]
            checks.check(
                setup_entry_is_ordered(entry) == (name in ordered),
                f"{prefix} subscription {entry} is {'ordered' if name in ordered else 'unordered'} as the code creates it",
            )

    # Pods: hardening, identity, Secrets by reference only.
    service_account = RELEASE if effective["serviceAccount"]["create"] else effective["serviceAccount"]["name"]
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        checks.check(spec.get("enableServiceLinks") is False, f"{prefix} {name}: enableServiceLinks must be false")
        security = spec.get("securityContext", {})
        checks.check(security.get("runAsNonRoot") is True, f"{prefix} {name}: runAsNonRoot")
        checks.check(security.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{prefix} {name}: seccomp RuntimeDefault")
        if obj["kind"] == "Job":
            checks.check(spec.get("serviceAccountName") == f"{service_account}-hooks", f"{prefix} {name}: runs as the hooks account")
        else:
            checks.check(spec.get("serviceAccountName") == service_account, f"{prefix} {name}: runs as {service_account}")
        for container in spec["containers"]:
            where = f"{prefix} {name}/{container['name']}"
            context = container.get("securityContext", {})
            checks.check(context.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
            checks.check(context.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
            checks.check("ALL" in context.get("capabilities", {}).get("drop", []), f"{where}: drops ALL capabilities")
            resources = container.get("resources", {})
            checks.check("memory" in resources.get("limits", {}) and resources.get("requests"), f"{where}: requests and a memory limit")
            env = env_map(container)
            for secret in ("DATABASE_URL", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "TALLY_API_KEY"):
                if secret in env:
                    checks.check(
                        "secretKeyRef" in env[secret].get("valueFrom", {}) and "value" not in env[secret],
                        f"{where}: {secret} comes from a Secret",
                    )
            refused = bad_tally_variables(list(env))
            checks.check(not refused, f"{where}: TALLY_ variables the config loader refuses: {refused}")

    # Deployments: the command, gRPC health probes on the serving port, the config file.
    config_map = by_kind.get("ConfigMap", {}).get(RELEASE, {})
    toml_text = config_map.get("data", {}).get("tally.toml", "")
    try:
        toml = tomllib.loads(toml_text)
        checks.check(True, "")
    except tomllib.TOMLDecodeError as error:
        toml = {}
        checks.check(False, f"{prefix} tally.toml does not parse: {error}")
    checks.check(toml.get("bus", {}).get("backend") == "pubsub", f"{prefix} tally.toml: the pubsub backend")
    checks.check(toml.get("auth", {}).get("enabled") is True, f"{prefix} tally.toml: authentication on")
    for service in enabled:
        deployment = by_kind.get("Deployment", {}).get(f"{RELEASE}-{service}")
        if not deployment:
            continue
        where = f"{prefix} Deployment/{RELEASE}-{service}"
        template = deployment["spec"]["template"]
        spec = template["spec"]
        container = spec["containers"][0]
        checks.check(container["args"][-2:] == ["serve", service], f"{where}: runs `tally serve {service}`")
        config_path = container["args"][container["args"].index("--config") + 1] if "--config" in container["args"] else None
        mounts = {mount["name"]: mount["mountPath"] for mount in container.get("volumeMounts", [])}
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        checks.check(
            config_path and "config" in mounts and config_path.startswith(mounts["config"] + "/")
            and volumes["config"]["configMap"]["name"] == RELEASE,
            f"{where}: --config points into the mounted ConfigMap",
        )
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        listen = env_map(container).get("TALLY_GRPC__LISTEN_ADDR", {}).get("value", "")
        checks.check(listen == f"0.0.0.0:{ports.get('grpc')}", f"{where}: listens on the grpc container port ({listen})")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            checks.check(
                container.get(probe, {}).get("grpc", {}).get("port") == ports.get("grpc"),
                f"{where}: {probe} uses gRPC health on the grpc port",
            )
        # Liveness is the empty name (never the database); readiness a name the
        # service reports readiness under (crates/runtime/src/readiness.rs).
        for probe in ("startupProbe", "livenessProbe"):
            name = container.get(probe, {}).get("grpc", {}).get("service", "")
            checks.check(name == "", f"{where}: {probe} checks liveness (service \"\"), not {name!r}")
        readiness = container.get("readinessProbe", {}).get("grpc", {}).get("service", "")
        checks.check(
            readiness == READINESS_SERVICES.get(service),
            f"{where}: readinessProbe checks {READINESS_SERVICES.get(service)!r}, not {readiness!r}",
        )
        checks.check("checksum/config" in template["metadata"].get("annotations", {}), f"{where}: rolls on config changes")
        grace = spec.get("terminationGracePeriodSeconds", 30)
        checks.check(
            grace > effective["config"]["shutdownGracePeriodSeconds"] + effective["preStopSleepSeconds"],
            f"{where}: terminationGracePeriodSeconds {grace} covers preStop and the drain",
        )
        pod_labels = template["metadata"]["labels"]
        service_object = by_kind.get("Service", {}).get(f"{RELEASE}-{service}", {})
        selector = service_object.get("spec", {}).get("selector", {})
        checks.check(selector and selector.items() <= pod_labels.items(), f"{where}: the Service selects these pods")
        checks.check(
            selector == deployment["spec"]["selector"]["matchLabels"], f"{where}: Service and Deployment select alike"
        )
        for kind in ("PodDisruptionBudget",):
            other = by_kind.get(kind, {}).get(f"{RELEASE}-{service}")
            if other:
                checks.check(other["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), f"{where}: the {kind} selects these pods")
        hpa = by_kind.get("HorizontalPodAutoscaler", {}).get(f"{RELEASE}-{service}")
        if hpa:
            checks.check(hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"], f"{where}: the HPA scales it")
        if service == "payments":
            checks.check("webhooks" in ports, f"{where}: a webhooks container port")
            service_ports = {port["name"] for port in service_object.get("spec", {}).get("ports", [])}
            checks.check(service_ports == {"grpc", "webhooks"}, f"{where}: the Service exposes grpc and webhooks")
    for ingress in by_kind.get("Ingress", {}).values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                target = by_kind.get("Service", {}).get(backend["name"], {})
                names = {port["name"] for port in target.get("spec", {}).get("ports", [])}
                checks.check(backend["port"].get("name") in names, f"{prefix} Ingress backend {backend} exists")

    notes = release.get("info", {}).get("notes", "")
    checks.check("tally keys create" in notes, f"{prefix} NOTES.txt rendered")
    checks.check(
        ("WARNING: pubsub.projectId is empty" in notes) == (not effective["pubsub"]["projectId"]),
        f"{prefix} NOTES.txt warns iff pubsub.projectId is empty",
    )

    # The real binary accepts the rendered configuration and environment.
    binary = tally_binary()
    if binary is None:
        print(f"  {prefix} SKIPPED the binary check: set TALLY_BIN to a built tally (.ci/run does)")
        return
    # Without a Pub/Sub project the services must refuse to start, naming the key
    # (what NOTES.txt warns about); with one they must accept everything.
    needs_project = not effective["pubsub"]["projectId"]
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None or obj["metadata"]["name"].endswith("pubsub-setup"):
            continue
        container = spec["containers"][0]
        env = {name: entry.get("value", f"from-{name.lower()}") for name, entry in env_map(container).items()}
        error = run_binary(binary, container["args"], env, {"/etc/tally/tally.toml": toml_text})
        name = f"{prefix} {obj['kind']}/{obj['metadata']['name']}"
        if needs_project and "serve" in container["args"]:
            checks.check(error and "bus.project_id" in error, f"{name}: tally should refuse an empty bus.project_id, got: {error}")
        else:
            checks.check(error is None, f"{name}: tally refuses its configuration: {error}")


def check_schema_matches_code(checks: Checks) -> None:
    """values.schema.json spells out configuration keys: it must follow config.rs."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    names = schema["definitions"]["env"]["items"]["properties"]["name"]["anyOf"]
    sections = names[1]["pattern"].split("(", 1)[1].split(")", 1)[0].split("|")
    variables = names[2]["pattern"].split("(", 1)[1].split(")", 1)[0].split("|")
    checks.check(
        sorted(sections) == sorted(section.upper() for section in config_sections()),
        f"values.schema.json env names allow sections {sections}; config.rs has {config_sections()}",
    )
    checks.check(
        sorted(f"TALLY_{variable}" for variable in variables) == sorted(cli_variables()),
        f"values.schema.json env names allow {variables}; config.rs leaves {cli_variables()} to the command line",
    )
    ingest = schema["properties"]["config"]["properties"]["ingest"]["properties"]
    checks.check(
        sorted(ingest) == sorted(struct_fields("IngestConfig")),
        f"values.schema.json config.ingest keys {sorted(ingest)} != IngestConfig {sorted(struct_fields('IngestConfig'))}",
    )
    print(f"  values.schema.json follows config.rs (sections, command-line variables, [ingest] keys)")


async def check_live(checks: Checks) -> None:
    binary = tally_binary()
    if binary is None:
        print("  SKIPPED the live check: set TALLY_BIN to a built tally (.ci/run does)")
        return
    try:
        release = await install(LIVE_VALUES)
    except helm_sdkpy.HelmError as error:
        checks.check(False, f"[live values] helm install failed: {error}")
        return
    objects = documents(release["manifest"]) + [documents(hook["manifest"])[0] for hook in release.get("hooks") or []]
    try:
        deployment = live_deploy_check.from_helm(objects, RELEASE, LIVE_EMULATOR_HOST)
    except (live_deploy_check.Failed, KeyError) as error:
        checks.check(False, f"[live values] the rendered release cannot be run: {error!r}")
        return
    live_deploy_check.run_deployment(checks, binary, deployment)


async def main() -> None:
    checks = Checks()
    value_sets: list[tuple[str, dict]] = [("default values", {})]
    for path in sorted((CHART / "ci").glob("*.yaml")):
        value_sets.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text()) or {}))

    print(f"Helm library: {helm_sdkpy.get_version()}; Kubernetes schemas: {', '.join(KUBERNETES_VERSIONS)}")
    check_schema_matches_code(checks)
    for label, values in value_sets:
        print(f"\n==> {label}")
        problems = await lint_with(values or None)
        checks.check(not problems, f"[{label}] helm lint: {problems}")
        print(f"  helm lint: {'clean' if not problems else problems}")
        try:
            release = await install(values)
        except helm_sdkpy.HelmError as error:
            checks.check(False, f"[{label}] helm install failed: {error}")
            continue
        manifests = documents(release["manifest"])
        kinds = sorted({obj["kind"] for obj in manifests})
        hooks = [f"{hook['kind']}/{hook['name']}" for hook in release.get("hooks") or []]
        print(f"  rendered {len(manifests)} objects ({', '.join(kinds)}) and hooks {hooks}")
        check_release(checks, label, values, release)

    print("\n==> values that must be refused")
    for values, expected in MUST_FAIL:
        try:
            await install(values)
            checks.check(False, f"accepted {values}, expected an error containing {expected!r}")
        except helm_sdkpy.HelmError as error:
            checks.check(expected in str(error), f"{values}: error {str(error)!r} lacks {expected!r}")
    problems = await lint_with({"servces": {}})
    checks.check(problems, "helm lint accepted an unknown top-level key")
    print(f"  {len(MUST_FAIL)} bad value sets refused by install; lint refuses an unknown key: {bool(problems)}")

    print("\n==> live: the rendered release as processes on PostgreSQL and the emulator, billing an ended period")
    await check_live(checks)

    checks.finish("helm chart")


if __name__ == "__main__":
    if os.environ.get("HELM_DRIVER") != "memory":
        sys.exit("run through .ci/helm-lint (it sets HELM_DRIVER=memory before Helm's library loads)")
    asyncio.run(main())
