"""The deployment files under deploy/ parse, describe the cluster they claim, and run real CLI commands.

Fast (no network, no Ray cluster, no Docker): YAML is read with ``yaml.safe_load_all``; every
``python -m range_dist ...`` command found in deploy/ (RayJob entrypoint, launcher comments and setup
commands, Dockerfile, README) is parsed with the project's own argument parser.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
KUBERAY = DEPLOY / "kuberay"
DOCKERFILE = DEPLOY / "Dockerfile"
LAUNCHER = DEPLOY / "ray-cluster-launcher.yaml"

#: Subcommands another change is adding to the CLI: their commands are skipped until registered.
PENDING_SUBCOMMANDS = {"embed-grid"}

EXPECTED_API_VERSIONS = {"RayCluster": "ray.io/v1", "RayJob": "ray.io/v1", "PersistentVolumeClaim": "v1"}


# ---------------------------------------------------------------------------- helpers
def _yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"} and p.is_file())


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(KUBERAY.glob("*.y*ml")) for d in _load_all(p)]


def _one(kind: str) -> dict[str, Any]:
    found = [d for _, d in _k8s_docs() if d.get("kind") == kind]
    assert len(found) == 1, f"expected exactly one {kind} under deploy/kuberay/, found {len(found)}"
    return found[0]


def _cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """(label, RayCluster spec) for the RayCluster and for the RayJob's rayClusterSpec."""
    return [("RayCluster.spec", _one("RayCluster")["spec"]),
            ("RayJob.spec.rayClusterSpec", _one("RayJob")["spec"]["rayClusterSpec"])]


def _groups(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, group) for the head group and every worker group of a RayCluster spec."""
    yield "head", spec["headGroupSpec"]
    for group in spec.get("workerGroupSpecs") or []:
        yield f"worker group {group.get('groupName')!r}", group


def _pod(group: dict[str, Any]) -> dict[str, Any]:
    return group["template"]["spec"]


def _limits(container: dict[str, Any]) -> dict[str, Any]:
    return (container.get("resources") or {}).get("limits") or {}


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _join_continuations(text: str) -> str:
    return re.sub(r"\\\s*\n", " ", text)


#: ``python -m range_dist`` and its arguments, up to the end of the line or a shell operator / quote (prose).
_COMMAND = re.compile(r"\bpython3?\s+-m\s+range_dist(?![\w.])(?P<rest>[^\n`'\";|&<>()#]*)")
_OPERATOR_CHARS = ";&|<>()"
_PREFIXES = (["python", "-m", "range_dist"], ["python3", "-m", "range_dist"])


def _shell_words(line: str) -> list[str]:
    """Shell words and operators (``&&``, ``;``, ``|``…) of one line; ValueError on unbalanced quotes."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=_OPERATOR_CHARS)
    lexer.whitespace_split = True
    return list(lexer)


def _commands_in_line(line: str) -> Iterator[list[str]]:
    try:
        words = _shell_words(line)
    except ValueError:  # prose with an apostrophe: no shell structure to follow
        for match in _COMMAND.finditer(line):
            yield shlex.split(match.group("rest"))
        return
    for i, word in enumerate(words):
        if words[i:i + 3] in _PREFIXES:
            argv = []
            for arg in words[i + 3:]:
                if arg and set(arg) <= set(_OPERATOR_CHARS):
                    break
                argv.append(arg)
            yield argv
        elif any(c.isspace() for c in word):  # a quoted script, e.g. bash -c '... && python -m range_dist ...'
            yield from _commands_in_text(word)


def _commands_in_text(text: str) -> Iterator[list[str]]:
    """Every ``python -m range_dist ARGS`` in a text (shell lines, comments, Markdown), as ARGS."""
    for line in _join_continuations(text).replace("`", "\n").splitlines():
        # a bare mention in prose ("each `python -m range_dist` command") is not a command
        yield from (argv for argv in _commands_in_line(line) if argv)


def _commands_in_file(path: Path) -> Iterator[list[str]]:
    raw = path.read_text(encoding="utf-8")
    if path.suffix in {".yaml", ".yml"}:
        for doc in _load_all(path):
            for text in _strings(doc):
                yield from _commands_in_text(text)
        comments = "\n".join(line.strip()[1:] for line in raw.splitlines() if line.strip().startswith("#"))
        yield from _commands_in_text(comments)
    elif path.name == "Dockerfile" or path.suffix == ".md":
        yield from _commands_in_text(raw)
        if path.name == "Dockerfile":  # exec form: CMD ["python", "-m", "range_dist", ...]
            for match in re.finditer(r"^\s*(?:CMD|ENTRYPOINT|RUN)\s+(\[.*\])\s*$", raw, flags=re.MULTILINE):
                words = json.loads(match.group(1))
                if words[:3] in (["python", "-m", "range_dist"], ["python3", "-m", "range_dist"]) and words[3:]:
                    yield words[3:]


def _all_commands() -> list[tuple[str, list[str]]]:
    seen: set[tuple[str, tuple[str, ...]]] = set()
    out = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for argv in _commands_in_file(path):
            key = (_rel(path), tuple(argv))
            if key not in seen:
                seen.add(key)
                out.append((_rel(path), argv))
    return out


def _at_collection(build: Any) -> list[Any]:
    """Parametrization data; a broken manifest gives [] here and fails test_yaml_parses & co. instead."""
    try:
        return list(build())
    except Exception:
        return []


COMMANDS: list[tuple[str, list[str]]] = _at_collection(_all_commands)


def _option(argv: list[str], name: str) -> str | None:
    for i, word in enumerate(argv):
        if word == name and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


def _subcommand(argv: list[str]) -> str | None:
    return next((word for word in argv if not word.startswith("-")), None)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _registered() -> dict[str, argparse.ArgumentParser]:
    from range_dist.cli.main import build_parser

    return _subparsers(build_parser())


def _skip_if_pending(subcommand: str | None) -> None:
    if subcommand in PENDING_SUBCOMMANDS and subcommand not in _registered():
        pytest.skip(f"`{subcommand}` is not registered in range_dist.cli.main.build_parser() yet "
                    f"(subcommands now: {', '.join(sorted(_registered()))})")


def _config_refs() -> list[tuple[str, str]]:
    """(config path, the deploy/ files that reference it), one row per config."""
    refs: dict[str, set[str]] = {}
    for where, argv in COMMANDS:
        if cfg := _option(argv, "--config"):
            refs.setdefault(cfg, set()).add(where)
    return [(cfg, ", ".join(sorted(wheres))) for cfg, wheres in sorted(refs.items())]


CONFIG_REFS: list[tuple[str, str]] = _at_collection(_config_refs)
CLUSTER_SPECS: list[tuple[str, dict[str, Any]]] = _at_collection(_cluster_specs)


def _dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG\s+{name}=(\S+)", DOCKERFILE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert match, f"deploy/Dockerfile has no `ARG {name}=...` default"
    return match.group(1)


# ---------------------------------------------------------------------------- every YAML parses
def test_deploy_has_the_expected_files() -> None:
    for name in ("Dockerfile", ".dockerignore", "README.md", "ray-cluster-launcher.yaml",
                 "kuberay/raycluster.yaml", "kuberay/rayjob.yaml"):
        assert (DEPLOY / name).is_file(), f"deploy/{name} is missing"


@pytest.mark.parametrize("path", _yaml_files(), ids=_rel)
def test_yaml_parses(path: Path) -> None:
    docs = _load_all(path)
    assert docs, f"{_rel(path)} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs), f"{_rel(path)}: every document must be a mapping"


K8S_DOCS: list[tuple[Path, dict[str, Any]]] = _at_collection(_k8s_docs)


@pytest.mark.parametrize(("path", "doc"), K8S_DOCS, ids=[f"{_rel(p)}:{d.get('kind')}" for p, d in K8S_DOCS])
def test_kubernetes_kinds_and_api_versions(path: Path, doc: dict[str, Any]) -> None:
    kind = doc.get("kind")
    assert kind in EXPECTED_API_VERSIONS, f"{_rel(path)}: unexpected kind {kind!r}"
    assert doc.get("apiVersion") == EXPECTED_API_VERSIONS[kind], f"{_rel(path)}: {kind} apiVersion"
    assert doc.get("metadata", {}).get("name"), f"{_rel(path)}: {kind} has no metadata.name"


def test_raycluster_and_rayjob_files_hold_their_kind() -> None:
    assert [d["kind"] for d in _load_all(KUBERAY / "raycluster.yaml")] == ["RayCluster"]
    assert [d["kind"] for d in _load_all(KUBERAY / "rayjob.yaml")] == ["RayJob"]


# ---------------------------------------------------------------------------- cluster shape
@pytest.mark.parametrize(("label", "spec"), CLUSTER_SPECS, ids=[label for label, _ in CLUSTER_SPECS])
def test_head_runs_no_actors_and_has_no_gpu(label: str, spec: dict[str, Any]) -> None:
    head = spec["headGroupSpec"]
    assert head.get("rayStartParams", {}).get("num-cpus") == "0", f"{label}: head needs num-cpus \"0\" (a string)"
    for container in _pod(head)["containers"]:
        assert "nvidia.com/gpu" not in _limits(container), f"{label}: the head must not request a GPU"


@pytest.mark.parametrize(("label", "spec"), CLUSTER_SPECS, ids=[label for label, _ in CLUSTER_SPECS])
def test_workers_request_a_gpu(label: str, spec: dict[str, Any]) -> None:
    workers = spec.get("workerGroupSpecs") or []
    assert workers, f"{label}: no worker group"
    for group in workers:
        for container in _pod(group)["containers"]:
            gpus = _limits(container).get("nvidia.com/gpu")
            assert gpus is not None and int(gpus) >= 1, (
                f"{label}: worker group {group.get('groupName')!r} container {container.get('name')!r} "
                "has no nvidia.com/gpu limit")


@pytest.mark.parametrize(("label", "spec"), CLUSTER_SPECS, ids=[label for label, _ in CLUSTER_SPECS])
def test_dev_shm_is_in_memory_on_every_pod(label: str, spec: dict[str, Any]) -> None:
    for name, group in _groups(spec):
        pod = _pod(group)
        in_memory = {v["name"] for v in pod.get("volumes", []) if (v.get("emptyDir") or {}).get("medium") == "Memory"}
        assert in_memory, f"{label} {name}: no emptyDir volume with medium: Memory"
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/dev/shm") in in_memory, (
                f"{label} {name}: container {container.get('name')!r} must mount the in-memory emptyDir at /dev/shm")


@pytest.mark.parametrize(("label", "spec"), CLUSTER_SPECS, ids=[label for label, _ in CLUSTER_SPECS])
def test_data_is_the_shared_pvc_on_every_pod(label: str, spec: dict[str, Any]) -> None:
    claims = {d["metadata"]["name"] for _, d in _k8s_docs() if d["kind"] == "PersistentVolumeClaim"}
    for name, group in _groups(spec):
        pod = _pod(group)
        pvcs = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", [])
                if "persistentVolumeClaim" in v}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/data") in pvcs, f"{label} {name}: /data must be a PVC volume mount"
            claim = pvcs[mounts["/data"]]
            if claims:
                assert claim in claims, f"{label} {name}: claim {claim!r} is not defined under deploy/kuberay/"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RANGE_DIST_CACHE", "/data/cache") == "/data/cache"


def test_rayjob_cluster_matches_the_raycluster() -> None:
    (_, cluster), (_, job) = _cluster_specs()
    assert cluster["rayVersion"] == job["rayVersion"]

    def shape(spec: dict[str, Any]) -> dict[str, Any]:
        return {name: {"rayStartParams": group.get("rayStartParams"),
                       "volumes": _pod(group).get("volumes"),
                       "containers": [(c["image"], c.get("resources"), c.get("volumeMounts"))
                                      for c in _pod(group)["containers"]]}
                for name, group in _groups(spec)}

    assert shape(cluster) == shape(job)


def test_images_and_ray_version_agree_with_the_dockerfile() -> None:
    base = _dockerfile_arg("RAY_IMAGE")
    match = re.fullmatch(r"rayproject/ray(?:-ml)?:(\d+\.\d+\.\d+)-py3\d+-(?:gpu|cu\d+)", base)
    assert match, f"deploy/Dockerfile base {base!r} should be a Ray GPU image (rayproject/ray:X.Y.Z-pyNN-gpu)"
    assert "FROM ${RAY_IMAGE}" in DOCKERFILE.read_text(encoding="utf-8")
    images = set()
    for label, spec in _cluster_specs():
        assert spec["rayVersion"] == match.group(1), f"{label}: rayVersion != the image's Ray {match.group(1)}"
        for _, group in _groups(spec):
            images |= {c["image"] for c in _pod(group)["containers"]}
    launcher = _load_all(LAUNCHER)[0]
    images.add(launcher["docker"]["image"])
    assert len(images) == 1, f"the manifests should run one image, found {sorted(images)}"


# ---------------------------------------------------------------------------- RayJob
def test_rayjob_entrypoint_and_lifecycle() -> None:
    spec = _one("RayJob")["spec"]
    assert spec.get("shutdownAfterJobFinishes") is True
    grid = [argv for argv in _commands_in_text(spec["entrypoint"]) if _subcommand(argv) == "embed-grid"]
    assert len(grid) == 1, f"the entrypoint should run embed-grid once: {spec['entrypoint']!r}"
    assert _option(grid[0], "--ray-address") == "auto", "the job must join its cluster (--ray-address auto)"
    out = _option(grid[0], "--out")
    assert out and out.endswith(".zarr") and out.startswith(("s3://", "/data/")), \
        f"--out {out!r}: a bucket URL, or the shared /data volume"
    if out.startswith("s3://"):  # every Ray pod writes: each gets the credentials from a secret, none inline
        cluster = spec["rayClusterSpec"]
        containers = [c for group in (cluster["headGroupSpec"], *cluster["workerGroupSpecs"])
                      for c in group["template"]["spec"]["containers"]]
        for container in containers:
            refs = [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]
            assert refs, f"{container['name']}: object-store credentials should come from a secret (envFrom)"
            assert not any(e.get("name", "").startswith("AWS_SECRET") for e in container.get("env", [])), \
                f"{container['name']}: no secret inline"


def test_rayjob_entrypoint_is_one_command_for_the_submitter_shell() -> None:
    """KubeRay builds ``if ray job status ...; then ...; else ray job submit ... -- <entrypoint> ; fi`` and runs it
    with a shell, pasting the entrypoint unquoted: a top-level ``&&``/``;``/``|`` would run the rest in the
    submitter pod (no GPU, no /data). Compound entrypoints must be one word, e.g. ``bash -c '... && ...'``."""
    entrypoint = _one("RayJob")["spec"]["entrypoint"]
    operators = [w for w in _shell_words(entrypoint) if w and set(w) <= set(_OPERATOR_CHARS)]
    assert not operators, f"top-level shell operators {operators} in the RayJob entrypoint {entrypoint!r}"


def test_rayjob_runtime_env_working_dir_is_the_image_checkout() -> None:
    runtime_env = yaml.safe_load(_one("RayJob")["spec"].get("runtimeEnvYAML") or "{}")
    assert isinstance(runtime_env, dict)
    working_dir = runtime_env.get("working_dir")
    if working_dir is None or "://" in str(working_dir):
        return
    workdir = re.findall(r"^WORKDIR\s+(\S+)", DOCKERFILE.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert workdir and working_dir == workdir[-1], (
        f"runtimeEnvYAML working_dir {working_dir!r} must be where deploy/Dockerfile copies the repository")


# ---------------------------------------------------------------------------- cluster launcher
def test_cluster_launcher_config() -> None:
    config = _load_all(LAUNCHER)
    assert len(config) == 1
    cfg = config[0]
    assert cfg["provider"]["type"] == "aws"
    assert cfg["provider"]["region"] == "us-west-2"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert not types[cfg["head_node_type"]].get("resources", {}).get("GPU"), "the head should be a CPU node"
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    gpu_workers = [n for n, t in workers.items() if t.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu_workers, "no worker node type with resources {GPU: >= 1}"
    assert cfg["docker"]["image"]
    assert cfg.get("file_mounts"), "file_mounts should sync the repository"
    assert any("range-dist" in str(remote) for remote in cfg["file_mounts"])
    assert any("pip install" in cmd for cmd in cfg.get("setup_commands", [])), "setup_commands should install it"
    text = LAUNCHER.read_text(encoding="utf-8")
    submit = r"ray job submit --address http://\S+:8265 .*-- python -m range_dist embed-grid .*--ray-address auto"
    assert re.search(submit, text), "the launcher should say how to submit embed-grid"


def test_cluster_launcher_matches_rays_schema() -> None:
    spec = importlib.util.find_spec("ray")  # locates the package without importing it (slow)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ray is not installed")
    jsonschema = pytest.importorskip("jsonschema")
    schema_path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    if not schema_path.is_file():
        pytest.skip(f"{schema_path} not found in this Ray")
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    jsonschema.validate(_load_all(LAUNCHER)[0], schema)


# ---------------------------------------------------------------------------- Dockerfile
def test_dockerfile() -> None:
    text = _join_continuations(DOCKERFILE.read_text(encoding="utf-8"))
    assert re.search(r"^ENV\s.*\bRANGE_DIST_CACHE=/data/cache\b", text, flags=re.MULTILINE)
    assert re.search(r"^RUN\s.*\bpip install\b[^\n]*\s\.(\s|$)", text, flags=re.MULTILINE), "pip install . missing"
    assert re.search(r"^COPY\s.*\s\.\s+\S+", text, flags=re.MULTILINE), "the repository is not copied in"
    assert _dockerfile_arg("FETCH_ASSETS") == "0", "fetching assets at build time must be off by default"
    assert re.search(r"FETCH_ASSETS.*python -m range_dist fetch-assets", text), "FETCH_ASSETS should gate fetch-assets"


def test_dockerignore() -> None:
    ignore = (DEPLOY / ".dockerignore").read_text(encoding="utf-8")
    patterns = {line.strip() for line in ignore.splitlines() if line.strip() and not line.startswith("#")}
    for needed in (".git", "out"):
        assert needed in patterns, f"deploy/.dockerignore should exclude {needed}"
    assert patterns & {".venv", "**/.venv"}, "deploy/.dockerignore should exclude .venv"
    specific = DEPLOY / "Dockerfile.dockerignore"  # what BuildKit uses with -f deploy/Dockerfile from the root
    if specific.exists():
        assert specific.read_text(encoding="utf-8") == ignore, "deploy/.dockerignore and Dockerfile.dockerignore differ"


# ---------------------------------------------------------------------------- commands vs the real CLI
def test_commands_were_found() -> None:
    where = {w for w, _ in COMMANDS}
    assert "deploy/kuberay/rayjob.yaml" in where
    assert "deploy/ray-cluster-launcher.yaml" in where
    assert any(_subcommand(argv) == "embed-grid" for _, argv in COMMANDS)


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[f"{w}:{' '.join(a)}" for w, a in COMMANDS])
def test_command_parses_with_the_cli(where: str, argv: list[str]) -> None:
    from range_dist.cli.main import build_parser

    sub = _subcommand(argv)
    _skip_if_pending(sub)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            informational = {"-h", "--help", "--version"} & set(argv)
            if exc.code in (0, None) and informational:
                return
            pytest.fail(f"{where}: `python -m range_dist {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")
    assert args.command == sub


EMBED_GRID = [(w, a) for w, a in COMMANDS if _subcommand(a) == "embed-grid"]


@pytest.mark.parametrize(("where", "argv"), EMBED_GRID, ids=[f"{w}:{' '.join(a)}" for w, a in EMBED_GRID])
def test_embed_grid_command_builds_a_job_config(where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Config file + flags, merged as the embed-grid handler does, from the repository root (the job's cwd)."""
    _skip_if_pending("embed-grid")
    try:
        from range_dist.jobs.grid.config import GridJobConfig
    except ImportError as exc:
        pytest.skip(f"range_dist.jobs.grid.config.GridJobConfig is not importable: {exc}")
    from range_dist.cli.main import build_parser
    from range_dist.errors import RangeDistError

    config = _option(argv, "--config")
    if config and not (REPO / config).is_file():
        pytest.skip(f"{config} (referenced by {where}) does not exist in the repository yet")
    monkeypatch.chdir(REPO)
    args = build_parser().parse_args(argv)
    from range_dist.config.schema import from_sources

    try:
        job = from_sources(GridJobConfig, yaml_path=args.config, flags=args)
    except RangeDistError as exc:
        pytest.fail(f"{where}: `python -m range_dist {shlex.join(argv)}`: {exc}")
    if where.startswith("deploy/"):
        assert str(job.out).startswith(("s3://", "/data/")), \
            f"{where}: the cube should go to a bucket or the shared volume, not {job.out}"


@pytest.mark.parametrize(("config", "where"), CONFIG_REFS, ids=[c for c, _ in CONFIG_REFS])
def test_referenced_config_exists(config: str, where: str) -> None:
    path = REPO / config
    if not path.is_file():
        pytest.skip(f"{config} (referenced by {where}) does not exist in the repository yet")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{config} should be a mapping of option names to values"


@pytest.mark.parametrize(("config", "where"), CONFIG_REFS, ids=[c for c, _ in CONFIG_REFS])
def test_referenced_config_keys_are_embed_grid_options(config: str, where: str) -> None:
    path = REPO / config
    if not path.is_file():
        pytest.skip(f"{config} (referenced by {where}) does not exist in the repository yet")
    _skip_if_pending("embed-grid")
    options = {a.dest for a in _registered()["embed-grid"]._actions} - {"help", "config"}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(data) - options)
    assert not unknown, f"{config}: keys {unknown} are not embed-grid options (known: {sorted(options)})"
