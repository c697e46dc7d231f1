#!/usr/bin/env python3
"""Render a kustomize directory without kustomize.

    python3 deploy/k8s/render.py deploy/k8s/overlays/production > manifests.yaml

A real kustomize (`kubectl kustomize DIR`, `kustomize build DIR`) is preferred wherever it
is installed; this renderer exists so the manifests can be rendered and validated on a
machine without one (CI, scripts/checks/k8s.sh). It implements exactly the subset of
kustomize that deploy/k8s uses and refuses anything else instead of guessing:

  Kustomization / Component fields:
    resources    files (one or more YAML documents) or directories holding a kustomization
    components   directories holding a `kind: Component` kustomization
    namespace    set on every namespaced resource (not on Namespace and other cluster-scoped kinds)
    labels       [{pairs, includeSelectors: false, includeTemplates}]  (no selector rewriting)
    images       [{name, newName, newTag, digest}] for (init)containers' image
    patches      [{path | patch, target: {kind, name}?}] strategic-merge patches matched by
                 apiVersion group/kind + metadata.name (or by `target`)

  Strategic merge: maps merge recursively, `null` deletes a key, lists of objects merge by
  their Kubernetes merge key (containers/volumes/env/... by name, volumeMounts by
  mountPath, container ports by containerPort, Service ports by port), an item holding
  `$patch: delete` removes the matching item; every other list is replaced whole.

Transformer order follows kustomize: resources, components, patches, namespace, labels, images.
Output: the manifests as one YAML stream in kustomize's default (legacy) kind order.
"""
from __future__ import annotations

import copy
import os
import sys

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("render.py needs PyYAML: pip install pyyaml")


class RenderError(Exception):
    pass


KNOWN_FIELDS = {
    "apiVersion", "kind", "metadata", "resources", "components", "namespace", "labels",
    "images", "patches",
}

# kinds that have no namespace
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "PriorityClass", "IngressClass",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "APIService",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "RuntimeClass",
}

# kustomize's default ("legacy") output order; other kinds follow by group/version/kind.
ORDER_FIRST = [
    "Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition",
    "ServiceAccount", "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding",
    "ClusterRoleBinding", "ConfigMap", "Secret", "Endpoints", "Service", "LimitRange",
    "PriorityClass", "PersistentVolume", "PersistentVolumeClaim", "Deployment",
    "StatefulSet", "CronJob", "PodDisruptionBudget",
]
ORDER_LAST = ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]

# kinds whose spec.template is a pod template (labels.includeTemplates)
POD_TEMPLATE_PATHS = {
    "Deployment": ["spec", "template"],
    "StatefulSet": ["spec", "template"],
    "DaemonSet": ["spec", "template"],
    "ReplicaSet": ["spec", "template"],
    "Job": ["spec", "template"],
    "CronJob": ["spec", "jobTemplate", "spec", "template"],
}

# strategic-merge keys of object lists, by field name
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "volumes": "name", "env": "name", "imagePullSecrets": "name",
    "volumeMounts": "mountPath", "volumeDevices": "devicePath",
}


def load_docs(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "metadata" not in d:
            raise RenderError(f"{path}: every document needs kind and metadata")
    return docs


def kustomization_file(directory: str) -> str:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    raise RenderError(f"{directory}: no kustomization.yaml")


def group_of(api_version: str) -> str:
    return api_version.split("/")[0] if "/" in api_version else ""


def res_id(doc: dict) -> str:
    ns = doc["metadata"].get("namespace")
    return f"{doc['kind']}/{doc['metadata']['name']}" + (f" (ns {ns})" if ns else "")


# ----------------------------------------------------------------- strategic merge
def list_merge_key(field: str, items: list) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field in MERGE_KEYS:
        return MERGE_KEYS[field]
    if field == "ports":
        if all("containerPort" in i for i in items):
            return "containerPort"
        if all("port" in i for i in items):
            return "port"
    return None


def merge_list(field: str, base: list, patch: list) -> list:
    key = list_merge_key(field, [i for i in patch if isinstance(i, dict)] or base)
    if key is None or not all(isinstance(i, dict) and key in i for i in patch):
        return copy.deepcopy([i for i in patch if not (isinstance(i, dict) and i.get("$patch"))])
    result = copy.deepcopy(base)
    added = []
    for item in patch:
        directive = item.get("$patch")
        match = next((r for r in result if isinstance(r, dict) and r.get(key) == item[key]), None)
        if directive == "delete":
            if match is not None:
                result.remove(match)
            continue
        if directive not in (None, "merge"):
            raise RenderError(f"unsupported $patch: {directive} in list {field}")
        clean = {k: v for k, v in item.items() if k != "$patch"}
        if match is None:
            added.append(copy.deepcopy(clean))
        else:
            result[result.index(match)] = merge(match, clean)
    # kustomize (kyaml) puts items that only the patch has before the existing ones
    return added + result


def merge(base, patch):
    if not isinstance(base, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") not in (None, "merge"):
        raise RenderError(f"unsupported map-level $patch: {patch['$patch']}")
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if k == "$patch":
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = merge_list(k, out[k], v)
        elif isinstance(v, list):
            out[k] = merge_list(k, [], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# ----------------------------------------------------------------- transformers
def apply_patches(docs: list[dict], patches: list, where: str) -> None:
    for entry in patches or []:
        if not isinstance(entry, dict) or not ({"path", "patch"} & entry.keys()):
            raise RenderError(f"{where}: patches entries need path or patch")
        extra = set(entry) - {"path", "patch", "target"}
        if extra:
            raise RenderError(f"{where}: unsupported patch options {sorted(extra)}")
        if "path" in entry:
            pdocs = load_docs(os.path.join(where, entry["path"]))
        else:
            pdocs = [d for d in yaml.safe_load_all(entry["patch"]) if d is not None]
        target = entry.get("target") or {}
        if set(target) - {"kind", "name", "group", "version"}:
            raise RenderError(f"{where}: only kind/name/group/version targets are supported")
        for p in pdocs:
            if isinstance(p, list):
                raise RenderError(f"{where}: JSON6902 patches are not supported")
            kind = target.get("kind", p.get("kind"))
            name = target.get("name", p.get("metadata", {}).get("name"))
            group = target.get("group", group_of(p.get("apiVersion", "")) if not target else None)
            hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name
                    and (group is None or group_of(d["apiVersion"]) == group)]
            if not hits:
                raise RenderError(f"{where}: patch target {kind}/{name} not found")
            for d in hits:
                body = copy.deepcopy(p)
                if target:
                    body.pop("apiVersion", None)
                    body.pop("kind", None)
                    body.get("metadata", {}).pop("name", None)
                merged = merge(d, body)
                d.clear()
                d.update(merged)


def apply_namespace(docs: list[dict], namespace: str) -> None:
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            d["metadata"]["namespace"] = namespace
        # kustomize also rewrites subjects of (Cluster)RoleBindings that pointed at the old ns
        for s in d.get("subjects", []) or []:
            if s.get("kind") == "ServiceAccount":
                s["namespace"] = namespace


def apply_labels(docs: list[dict], labels: list, where: str) -> None:
    for spec in labels or []:
        if set(spec) - {"pairs", "includeSelectors", "includeTemplates"}:
            raise RenderError(f"{where}: unsupported labels options")
        if spec.get("includeSelectors"):
            raise RenderError(f"{where}: labels.includeSelectors: true is not supported")
        pairs = {str(k): str(v) for k, v in (spec.get("pairs") or {}).items()}
        for d in docs:
            d["metadata"].setdefault("labels", {}).update(pairs)
            path = POD_TEMPLATE_PATHS.get(d["kind"])
            if spec.get("includeTemplates") and path:
                node = d
                for part in path:
                    node = node.setdefault(part, {})
                node.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def split_image(image: str) -> tuple[str, str, str]:
    """name, tag, digest of an image reference (a port in the registry is not a tag)."""
    name, digest = (image.split("@", 1) + [""])[:2]
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest


def apply_images(docs: list[dict], images: list) -> None:
    for d in docs:
        path = POD_TEMPLATE_PATHS.get(d["kind"])
        if not path:
            continue
        node = d
        for part in path + ["spec"]:
            node = node.get(part, {})
        for field in ("initContainers", "containers"):
            for c in node.get(field, []) or []:
                name, tag, digest = split_image(c.get("image", ""))
                for img in images or []:
                    if img["name"] != name:
                        continue
                    new = img.get("newName", name)
                    if img.get("digest"):
                        c["image"] = f"{new}@{img['digest']}"
                    elif img.get("newTag"):
                        c["image"] = f"{new}:{img['newTag']}"
                    else:
                        c["image"] = new + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


# ----------------------------------------------------------------- build
def build(directory: str, want_kind: str = "Kustomization") -> list[dict]:
    path = kustomization_file(directory)
    with open(path, encoding="utf-8") as fh:
        k = yaml.safe_load(fh) or {}
    unknown = set(k) - KNOWN_FIELDS
    if unknown:
        raise RenderError(f"{path}: unsupported kustomization fields {sorted(unknown)}")
    if k.get("kind", "Kustomization") != want_kind:
        raise RenderError(f"{path}: expected kind {want_kind}, found {k.get('kind')}")
    docs: list[dict] = []
    for r in k.get("resources", []) or []:
        p = os.path.normpath(os.path.join(directory, r))
        docs.extend(build(p) if os.path.isdir(p) else load_docs(p))
    for c in k.get("components", []) or []:
        docs = apply_component(docs, os.path.normpath(os.path.join(directory, c)))
    seen = set()
    for d in docs:
        key = (d["apiVersion"], d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        if key in seen:
            raise RenderError(f"{path}: duplicate resource {res_id(d)}")
        seen.add(key)
    apply_patches(docs, k.get("patches"), directory)
    if k.get("namespace"):
        apply_namespace(docs, k["namespace"])
    apply_labels(docs, k.get("labels"), directory)
    apply_images(docs, k.get("images"))
    return docs


def apply_component(docs: list[dict], directory: str) -> list[dict]:
    path = kustomization_file(directory)
    with open(path, encoding="utf-8") as fh:
        k = yaml.safe_load(fh) or {}
    if k.get("kind") != "Component":
        raise RenderError(f"{path}: not a Component")
    unknown = set(k) - KNOWN_FIELDS
    if unknown:
        raise RenderError(f"{path}: unsupported component fields {sorted(unknown)}")
    docs = docs + [d for r in k.get("resources", []) or []
                   for d in load_docs(os.path.join(directory, r))]
    apply_patches(docs, k.get("patches"), directory)
    if k.get("namespace"):
        apply_namespace(docs, k["namespace"])
    apply_labels(docs, k.get("labels"), directory)
    apply_images(docs, k.get("images"))
    return docs


def sort_key(doc: dict):
    kind = doc["kind"]
    if kind in ORDER_FIRST:
        rank = (0, ORDER_FIRST.index(kind), "")
    elif kind in ORDER_LAST:
        rank = (2, ORDER_LAST.index(kind), "")
    else:
        # kustomize orders the remaining kinds by group, version, kind
        api = doc["apiVersion"]
        rank = (1, 0, f"{group_of(api)}/{api.split('/')[-1]}/{kind}")
    return rank + (doc["metadata"].get("namespace") or "", doc["metadata"]["name"])


def render(directory: str) -> list[dict]:
    return sorted(build(directory), key=sort_key)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        print(f"usage: {argv[0]} KUSTOMIZE_DIR", file=sys.stderr)
        return 2
    try:
        docs = render(argv[1])
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    yaml.safe_dump_all(docs, sys.stdout, default_flow_style=False, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
