"""A stand-in Kubernetes API server, just enough for Helm's install action.

helm-sdkpy (the only Helm on PyPI) can lint but has no `helm template` and no dry-run:
its install always talks to a cluster. This server is that cluster: it answers
discovery for the kinds the Tally chart uses, stores what Helm creates, reports every
Job as complete (so pre-install hooks finish) and forgets what Helm deletes. Helm's
release (with the rendered manifests and hooks) is then read back from the install
result, so CI sees exactly what `helm install` would send.

An object of a kind it does not know is refused with 404, as a real API server would
refuse an unknown apiVersion/kind.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# group/version -> {resource: (kind, namespaced)}
RESOURCES: dict[str, dict[str, tuple[str, bool]]] = {
    "v1": {
        "configmaps": ("ConfigMap", True),
        "secrets": ("Secret", True),
        "services": ("Service", True),
        "serviceaccounts": ("ServiceAccount", True),
        "pods": ("Pod", True),
        "namespaces": ("Namespace", False),
    },
    "apps/v1": {"deployments": ("Deployment", True)},
    "batch/v1": {"jobs": ("Job", True)},
    "autoscaling/v2": {"horizontalpodautoscalers": ("HorizontalPodAutoscaler", True)},
    "policy/v1": {"poddisruptionbudgets": ("PodDisruptionBudget", True)},
    "networking.k8s.io/v1": {"ingresses": ("Ingress", True)},
}

VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"}


def _status(code: int, reason: str, message: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "reason": reason,
        "message": message,
        "code": code,
    }


class FakeKube:
    """Serves on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str, str], dict] = {}
        self.lock = threading.Lock()
        self.resource_version = 1
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"{}")

            def do_GET(self) -> None:
                fake.handle(self, "GET")

            def do_POST(self) -> None:
                fake.handle(self, "POST")

            def do_PUT(self) -> None:
                fake.handle(self, "PUT")

            def do_PATCH(self) -> None:
                fake.handle(self, "PATCH")

            def do_DELETE(self) -> None:
                self._body()  # delete options, e.g. {"propagationPolicy": "Background"}
                fake.handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def kubeconfig(self, namespace: str) -> str:
        """A kubeconfig for this server, as YAML text (what helm-sdkpy accepts inline)."""
        return (
            "apiVersion: v1\n"
            "kind: Config\n"
            "clusters:\n"
            f"- name: fake\n  cluster:\n    server: {self.url}\n"
            "users:\n"
            "- name: fake\n  user:\n    token: fake\n"
            "contexts:\n"
            f"- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\n"
            "current-context: fake\n"
        )

    def __enter__(self) -> "FakeKube":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    # -- request handling ------------------------------------------------------------

    def handle(self, request, method: str) -> None:
        path = urlsplit(request.path).path.rstrip("/")
        query = urlsplit(request.path).query
        if method == "GET" and path == "/version":
            return request._send(200, VERSION)
        if method == "GET" and path == "/openapi/v2":
            # An empty protobuf document: Helm validates hooks against the server's
            # OpenAPI schema, and with none it checks only that objects parse.
            request.send_response(200)
            request.send_header("Content-Type", "application/octet-stream")
            request.send_header("Content-Length", "0")
            request.end_headers()
            return None
        if method == "GET" and path == "/api":
            return request._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if method == "GET" and path == "/apis":
            groups = []
            for group_version in RESOURCES:
                if "/" not in group_version:
                    continue
                group, version = group_version.split("/")
                entry = {"groupVersion": group_version, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return request._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group_version, rest = parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return request._send(404, _status(404, "NotFound", f"no route {path}"))
        resources = RESOURCES.get(group_version)
        if resources is None:
            return request._send(404, _status(404, "NotFound", f"unknown group/version {group_version}"))
        if not rest:
            if method != "GET":
                return request._send(405, _status(405, "MethodNotAllowed", path))
            listing = [
                {
                    "name": name,
                    "singularName": kind.lower(),
                    "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                }
                for name, (kind, namespaced) in resources.items()
            ]
            return request._send(200, {"kind": "APIResourceList", "groupVersion": group_version, "resources": listing})
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        resource, name = rest[0], (rest[1] if len(rest) > 1 else "")
        if resource not in resources:
            return request._send(404, _status(404, "NotFound", f"unknown resource {group_version}/{resource}"))
        kind = resources[resource][0]
        key = (group_version, resource, namespace, name)
        watch = method == "GET" and not name and ("watch=true" in query or "watch=1" in query)
        with self.lock:
            response = self.apply(method, request, key, kind, watch)
        if watch:
            # A streaming list (sendInitialEvents): every object as ADDED, then the
            # bookmark that ends the initial events; then the stream stays open, with no
            # further events, until the client hangs up or the server stops.
            request.send_response(200)
            request.send_header("Content-Type", "application/json")
            request.send_header("Connection", "close")
            request.end_headers()
            request.wfile.write(b"".join(json.dumps(event).encode() + b"\n" for event in response))
            request.wfile.flush()
            request.close_connection = True
            self.stopping.wait()
            return None
        return request._send(*response)

    def apply(self, method: str, request, key: tuple[str, str, str, str], kind: str, watch: bool):
        """The (code, body) answer to a request on a resource, or a watch's events."""
        group_version, resource, namespace, name = key
        if method == "GET" and not name:
            items = [obj for (gv, res, ns, _), obj in self.objects.items() if (gv, res, ns) == key[:3]]
            if watch:
                bookmark = {
                    "kind": kind,
                    "apiVersion": group_version,
                    "metadata": {
                        "resourceVersion": str(self.resource_version),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                return [{"type": "ADDED", "object": obj} for obj in items] + [{"type": "BOOKMARK", "object": bookmark}]
            return 200, {
                "kind": f"{kind}List",
                "apiVersion": group_version,
                "metadata": {"resourceVersion": str(self.resource_version)},
                "items": items,
            }
        if method == "GET":
            if key in self.objects:
                return 200, self.objects[key]
            return 404, _status(404, "NotFound", f'{resource} "{name}" not found')
        if method == "POST":
            obj = request._body()
            name = obj.get("metadata", {}).get("name", "")
            key = (group_version, resource, namespace, name)
            if key in self.objects:
                return 409, _status(409, "AlreadyExists", f'{resource} "{name}" already exists')
            self.resource_version += 1
            metadata = obj.setdefault("metadata", {})
            metadata.update(
                {
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": str(self.resource_version),
                    "generation": 1,
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                }
            )
            if namespace:
                metadata["namespace"] = namespace
            if kind == "Job":
                obj["status"] = {
                    "succeeded": 1,
                    "startTime": "2026-01-01T00:00:00Z",
                    "completionTime": "2026-01-01T00:00:01Z",
                    "conditions": [{"type": "Complete", "status": "True"}],
                }
            self.objects[key] = obj
            return 201, obj
        if method == "DELETE":
            if self.objects.pop(key, None) is None:
                return 404, _status(404, "NotFound", f'{resource} "{name}" not found')
            return 200, _status(200, "", "deleted")
        return 405, _status(405, "MethodNotAllowed", f"{method} {request.path}")
