"""The import rules of DESIGN.md "Layout", checked on the source with ``ast`` and at runtime.

* stores and signers never import each other (the backend client layer, ``rotator/clients/``, is
  what they share);
* each backend SDK has one importer: hvac ``rotator/clients/vault.py``, botocore and boto3
  ``rotator/clients/aws.py``, py-clob-client ``rotator/clob/``;
* ``rotator.consumer``, with everything ``CredentialSource.from_settings`` needs, reaches none of
  the worker's modules;
* no ``importlib.import_module`` or ``__import__``: an import the checker cannot follow.

Every import counts: module level, inside functions (the lazy ones), and under ``TYPE_CHECKING``
(for the two "never import" rules; the reachability rule follows only imports that run). The
checker is run over a planted tree too, so a checker that reports nothing is caught.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

ROOT = Path(__file__).resolve().parents[2] / "rotator"

Where = Literal["module", "function", "type-checking"]
DYNAMIC = "<dynamic>"


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. rotator.stores.envelope
    target: str  # dotted name of the imported module (or of the package an object came from)
    path: str  # the importer's file, relative to the package's parent
    line: int
    where: Where

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target} ({self.where})"


def _module_name(path: Path, root: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, path: str, modules: frozenset[str]) -> None:
        self.module, self.path, self.modules = module, path, modules
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []
        self._functions = 0
        self._type_checking = 0

    def _where(self) -> Where:
        if self._type_checking:
            return "type-checking"
        return "function" if self._functions else "module"

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(Import(self.module, target, self.path, node.lineno, self._where()))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # ``from rotator.stores import vault`` imports a module; ``from rotator.model import Key``, a name.
        submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in self.modules]
        if len(submodules) < len(node.names):
            self._add(base, node)
        for name in submodules:
            self._add(name, node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module / __import__: a target this checker cannot follow, so not allowed.
        f = node.func
        if (isinstance(f, ast.Name) and f.id in ("__import__", "import_module")) or (
            isinstance(f, ast.Attribute) and f.attr == "import_module"
        ):
            self.found.append(Import(self.module, DYNAMIC, self.path, node.lineno, self._where()))
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._type_checking += 1
        for stmt in node.body:
            self.visit(stmt)
        self._type_checking -= 1
        for stmt in node.orelse:
            self.visit(stmt)


def scan(root: Path) -> list[Import]:
    """Every import statement in the package at ``root`` (a directory with ``__init__.py``)."""
    files = sorted(root.rglob("*.py"))
    modules = frozenset(_module_name(f, root) for f in files)
    found: list[Import] = []
    for f in files:
        rel = str(f.relative_to(root.parent))
        collector = _Collector(_module_name(f, root), f.name == "__init__.py", rel, modules)
        collector.visit(ast.parse(f.read_text(encoding="utf-8"), filename=rel))
        found.extend(collector.found)
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# -- the rules -----------------------------------------------------------------------------------

#: Each SDK and the one place that may import it (a module, or a package and all it holds).
SDK_HOMES: Mapping[str, str] = {
    "hvac": "rotator.clients.vault",
    "botocore": "rotator.clients.aws",
    "boto3": "rotator.clients.aws",
    "py_clob_client": "rotator.clob",
    # The bots' SDKs (issue 15): only the consumer's adapters import them.
    "py_clob_client_v2": "rotator.sdk",
    "polymarket": "rotator.sdk",
}

#: Imports of an SDK outside its home that are not the worker's use of it, each with its reason.
SDK_EXCEPTIONS: Mapping[tuple[str, str], str] = {
    # The bot's own py-clob-client: RotatingClient wraps the ClobClient a bot hands it, and builds
    # ApiCreds for it. It cannot go through rotator.clob, which the consumer must not load.
    ("rotator.consumer", "py_clob_client"): "the bots' CLOB client, not the worker's adapter",
    ("rotator.sdk", "py_clob_client"): "the V1 adapter builds the bots' ClobClient",
}

#: The worker's modules: a bot that imports rotator.consumer loads none of them.
WORKER = (
    "rotator.rotation",
    "rotator.runtime",
    "rotator.scheduler",
    "rotator.metrics",
    "rotator.exporter",
    "rotator.leader",
    "rotator.orphans",
    "rotator.clob",
    "rotator.signers",
    "rotator.cli",
    "rotator.demo",
    "rotator.sandbox",
)

#: What a bot loads: the library, and what ``CredentialSource.from_settings`` imports to build a store
#: (reached through the library's function-local imports too; named here so that moving them keeps
#: them checked).
CONSUMER_ROOTS = (
    "rotator.consumer",
    "rotator.config",
    "rotator.stores.factory",
    "rotator.sdk",
    "rotator.sdk.unified",
)


@dataclass(frozen=True)
class Violation:
    rule: str
    importer: str
    target: str
    detail: str  # file:line and how it is reached, for the failure message

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies it across edits (no line numbers)."""
        return (self.rule, self.importer, self.target)


def stores_signers(imports: Iterable[Import]) -> list[Violation]:
    stores, signers = "rotator.stores", "rotator.signers"
    return [
        Violation("stores<->signers", i.importer, i.target, str(i))
        for i in imports
        if (_within(i.importer, stores) and _within(i.target, signers))
        or (_within(i.importer, signers) and _within(i.target, stores))
    ]


def sdk_outside_home(
    imports: Iterable[Import],
    homes: Mapping[str, str] = SDK_HOMES,
    exceptions: Mapping[tuple[str, str], str] = SDK_EXCEPTIONS,
) -> list[Violation]:
    out = []
    for i in imports:
        sdk = i.target.partition(".")[0]
        home = homes.get(sdk)
        if home is None or _within(i.importer, home) or (i.importer, sdk) in exceptions:
            continue
        out.append(Violation(f"sdk {sdk} outside {home}", i.importer, sdk, str(i)))
    return out


def dynamic_imports(imports: Iterable[Import]) -> list[Violation]:
    return [Violation("dynamic import", i.importer, i.target, str(i)) for i in imports if i.target == DYNAMIC]


def _parents(module: str) -> Iterator[str]:
    parts = module.split(".")
    for n in range(1, len(parts)):
        yield ".".join(parts[:n])


def reaches_worker(imports: Iterable[Import], roots: Iterable[str], worker: Iterable[str]) -> list[Violation]:
    """Worker modules loaded from ``roots`` by imports that run (module level or in a function)."""
    edges: dict[str, list[Import]] = {}
    for i in imports:
        if i.where != "type-checking" and _within(i.target, "rotator"):
            edges.setdefault(i.importer, []).append(i)
    worker = tuple(worker)
    how: dict[str, list[Import]] = {}
    out = []
    for root in roots:  # one after the other: a path shows from the first root that reaches it
        how.setdefault(root, [])
        queue = deque([root])
        while queue:
            module = queue.popleft()
            # Importing a module runs its packages' __init__ first.
            for name in (*_parents(module), module):
                for edge in edges.get(name, ()):
                    if edge.target in how:
                        continue
                    how[edge.target] = [*how[module], edge]
                    hit = next((w for w in worker if _within(edge.target, w)), None)
                    if hit is None:
                        queue.append(edge.target)
                        continue
                    # Reported where the consumer's side enters the worker; what follows is the worker's.
                    path = " -> ".join(str(e) for e in how[edge.target])
                    out.append(Violation(f"consumer reaches {hit}", edge.importer, edge.target, path))
    return out


def check(root: Path) -> list[Violation]:
    """Every rule over the package at ``root``; one violation per (rule, importer, target), in order."""
    imports = scan(root)
    found = [
        *stores_signers(imports),
        *sdk_outside_home(imports),
        *reaches_worker(imports, CONSUMER_ROOTS, WORKER),
        *dynamic_imports(imports),
    ]
    merged: dict[tuple[str, str, str], Violation] = {}
    for v in found:
        seen = merged.get(v.key)
        merged[v.key] = v if seen is None else Violation(*v.key, f"{seen.detail}; {v.detail}")
    return sorted(merged.values(), key=lambda v: v.key)


# -- the tree as it is ---------------------------------------------------------------------------

#: Violations the client layer (issue 14, rotator/clients/) is removing, as (rule, importer, target).
#: Each entry must still be found: once the client layer lands, the test names the entries to delete
#: here. Nothing may be added. Empty is the goal.
#: Violations known and scheduled for removal; empty since the client layer (rotator/clients/).
PENDING: frozenset[tuple[str, str, str]] = frozenset()


def _report(violations: Iterable[Violation]) -> str:
    return "\n".join(f"  [{v.rule}] {v.detail}" for v in violations)


class PendingViolations(UserWarning):
    """Shown in pytest's warnings summary while PENDING is not empty."""


def test_the_package_keeps_the_import_rules() -> None:
    found = check(ROOT)
    new = [v for v in found if v.key not in PENDING]
    assert not new, "import rules broken (DESIGN.md, Layout):\n" + _report(new)
    gone = PENDING - {v.key for v in found}
    assert not gone, "no longer found; take these out of PENDING: " + ", ".join(map(str, sorted(gone)))
    if found:
        warnings.warn(PendingViolations("still to remove (client layer):\n" + _report(found)), stacklevel=1)


# -- the checker catches what it is meant to catch -----------------------------------------------


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    pkg = root / "rotator"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in (path.parent, *path.parent.parents):
            if parent == root:
                break
            (parent / "__init__.py").touch()
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return pkg


CLEAN = {
    "clients/vault.py": "import hvac\n",
    "clients/aws.py": "import botocore.session\nfrom boto3 import Session\n",
    "clob/adapter.py": "def sign():\n    from py_clob_client.signing import eip712\n",
    "stores/vault.py": "from rotator.clients.vault import login\n",
    "stores/factory.py": "def build():\n    from rotator.stores import vault\n",
    "signers/vault.py": "from rotator.clients import vault\n",
    "rotation.py": "from rotator.signers.vault import x\n",
    "runtime.py": "from rotator.rotation import Rotator\n",
    "config.py": "import json\n",
    "consumer.py": (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from rotator.rotation import Policy  # not loaded at runtime\n"
        "def from_settings():\n"
        "    from rotator.stores.factory import build\n"
    ),
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert check(_tree(tmp_path, CLEAN)) == []


R = "rotator"


@pytest.mark.parametrize(
    ("rel", "source", "expected"),
    [
        # stores <-> signers, in either direction, at module level, in a function, for type checking
        (
            "stores/vault.py",
            "from rotator.signers.vault import x\n",
            {
                ("stores<->signers", f"{R}.signers.vault"),
                (f"consumer reaches {R}.signers", f"{R}.signers.vault"),
            },
        ),
        (
            "signers/vault.py",
            "def f():\n    from ..stores import vault\n",
            {("stores<->signers", f"{R}.stores.vault")},
        ),
        (
            "signers/aws.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rotator.stores.aws import A\n",
            {("stores<->signers", f"{R}.stores.aws")},
        ),
        # an SDK outside its one module
        (
            "signers/aws.py",
            "def client():\n    import botocore.session\n",
            {(f"sdk botocore outside {R}.clients.aws", "botocore")},
        ),
        ("stores/aws.py", "import boto3\n", {(f"sdk boto3 outside {R}.clients.aws", "boto3")}),
        (
            "stores/vault.py",
            "class S:\n    def f(self):\n        from hvac import exceptions\n",
            {(f"sdk hvac outside {R}.clients.vault", "hvac")},
        ),
        (
            "rotation.py",
            "import py_clob_client.client\n",
            {(f"sdk py_clob_client outside {R}.clob", "py_clob_client")},
        ),
        # an import the checker cannot follow
        (
            "stores/file.py",
            "import importlib\ndef f():\n    importlib.import_module('rotator.signers')\n",
            {("dynamic import", DYNAMIC)},
        ),
        # the consumer's side reaching the worker, directly, lazily, through a package's __init__
        ("consumer.py", "import rotator.rotation\n", {(f"consumer reaches {R}.rotation", f"{R}.rotation")}),
        (
            "stores/vault.py",
            "def key():\n    from rotator.metrics import Metrics\n",
            {(f"consumer reaches {R}.metrics", f"{R}.metrics")},
        ),
        ("config.py", "import rotator.clob.budget\n", {(f"consumer reaches {R}.clob", f"{R}.clob.budget")}),
        (
            "stores/__init__.py",
            "from rotator import runtime\n",
            {(f"consumer reaches {R}.runtime", f"{R}.runtime")},
        ),
    ],
)
def test_a_planted_violation_is_reported(
    tmp_path: Path, rel: str, source: str, expected: set[tuple[str, str]]
) -> None:
    found = check(_tree(tmp_path, {**CLEAN, rel: CLEAN.get(rel, "") + source}))
    assert {(v.rule, v.target) for v in found} == expected, _report(found)
    assert all(f"rotator/{rel}:" in v.detail for v in found)  # names the file that imports it


def test_a_violation_through_a_chain_names_every_step(tmp_path: Path) -> None:
    planted = {
        **CLEAN,
        "stores/envelope.py": "from rotator.signers.aws import kms\n",
        "stores/factory.py": "def build():\n    from rotator.stores.envelope import key\n",
    }
    found = {v.rule: v for v in check(_tree(tmp_path, planted))}
    assert set(found) == {"stores<->signers", "consumer reaches rotator.signers"}
    assert found["consumer reaches rotator.signers"].detail == (
        "rotator/consumer.py:5 imports rotator.stores.factory (function) -> "
        "rotator/stores/factory.py:2 imports rotator.stores.envelope (function) -> "
        "rotator/stores/envelope.py:1 imports rotator.signers.aws (module)"
    )


# -- at runtime ----------------------------------------------------------------------------------

RUNTIME_FORBIDDEN = (
    "prometheus_client",
    "apscheduler",
    "py_clob_client",
    "py_clob_client_v2",
    "polymarket",
    "hvac",
    "botocore",
    "boto3",
    *WORKER,
)


def test_a_bot_on_the_file_store_loads_none_of_the_worker(tmp_path: Path) -> None:
    path = str(tmp_path / "k.enc")
    code = textwrap.dedent(
        f"""
        import sys
        from rotator.consumer import CredentialSource
        from rotator.errors import NotFound
        from rotator.stores.file import generate_file_key

        env = {{"BOT_FILE_KEY": generate_file_key()}}
        store = {{"backend": "file", "file": {{"path": {path!r}, "key_env": "BOT_FILE_KEY"}}}}
        with CredentialSource.from_settings(store, credential="mm1", path="polymarket/mm1", env=env) as src:
            try:
                src.get()
            except NotFound:
                print("read: nothing published")
        forbidden = {RUNTIME_FORBIDDEN!r}
        print(sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["read: nothing published", "[]"], out.stdout


def test_the_sdk_names_of_rotator_consumer_load_no_sdk_until_a_client_is_built() -> None:
    """``rotator.consumer`` re-exports the SDK seam lazily: naming it loads rotator.sdk, not an SDK."""
    code = textwrap.dedent(
        """
        import sys
        import rotator.consumer as c
        sdks = ("py_clob_client", "py_clob_client_v2", "polymarket")
        loaded = lambda: sorted(m for m in sys.modules if m.partition(".")[0] in sdks)
        print(loaded(), "rotator.sdk" in sys.modules)
        names = (c.connect, c.wrap, c.adapter_for, c.RotatingSecureClient, c.AsyncRotatingSecureClient)
        print(loaded(), "rotator.sdk" in sys.modules, c.adapter_for("unified").name, c.SDKS[0])
        c.local_environment("http://127.0.0.1:1")
        print(any(m == "polymarket" for m in sys.modules))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[] False", "[] True unified unified", "True"], out.stdout


def test_the_config_loads_no_settings_library() -> None:
    # Every command loads the config first: it is a plain pydantic model (load_settings merges the
    # ROTATOR_* overrides itself), so neither pydantic-settings nor the asyncio it brings is loaded.
    code = textwrap.dedent(
        """
        import sys
        from rotator.config import load_settings
        load_settings(None, data={"credentials": []}, env={"ROTATOR_LOG__LEVEL": "debug"})
        print(sorted(m for m in sys.modules if m.partition(".")[0] in ("pydantic_settings", "asyncio")))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]"], out.stdout
