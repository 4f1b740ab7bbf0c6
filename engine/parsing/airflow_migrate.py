"""`dagwatch dags migrate`: rewrite the Airflow imports of DAG files and plugin modules
to dagwatch's, keeping comments and formatting (LibCST edits the concrete syntax tree).

`from airflow.operators.python import PythonOperator` becomes `from engine import
PythonOperator`; any Airflow module path (Airflow 1.10's, 2's, 3's `airflow.sdk` and the
standard provider) maps by the name it imports. A few names have another dagwatch name
(`AirflowSkipException` -> `SkipTask`, `DummyOperator` -> `EmptyOperator`...): the import
and the module's uses of the name are renamed. What has no dagwatch counterpart (another
provider, `AirflowPlugin`, a star import) is left as it is and reported with its line.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

#: Airflow name -> (dagwatch module, dagwatch name), for names that are not in `engine`
#: under the same name.
RENAMES: dict[str, tuple[str, str]] = {
    "AirflowSkipException": ("engine", "SkipTask"),
    "AirflowException": ("engine.exceptions", "TaskError"),
    "AirflowFailException": ("engine.exceptions", "FailTaskNoRetry"),
    "AirflowSensorTimeout": ("engine.exceptions", "SensorTimeout"),
    "AirflowTaskTimeout": ("engine.exceptions", "TaskTimeout"),
    "DummyOperator": ("engine", "EmptyOperator"),
    "days_ago": ("engine.utils.dates", "days_ago"),
    "apply_defaults": ("engine.utils.decorators", "apply_defaults"),
    "Context": ("engine.sdk.compat", "TaskContext"),
}
#: `import airflow.X` module paths that exist in dagwatch.
MODULES = {
    "airflow": "engine",
    "airflow.utils.dates": "engine.utils.dates",
    "airflow.utils.decorators": "engine.utils.decorators",
}


def _engine_names() -> frozenset[str]:
    import engine

    return frozenset(engine.__all__) - {"__version__"}


@dataclass
class Unmapped:
    """An import dagwatch cannot map, where it is and why."""

    path: str
    line: int
    code: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: cannot map `{self.code}`: {self.reason}"


@dataclass
class FileResult:
    path: Path
    before: str
    after: str
    unmapped: list[Unmapped] = field(default_factory=list)
    error: str | None = None

    @property
    def changed(self) -> bool:
        return self.after != self.before

    def diff(self) -> str:
        name = str(self.path)
        relative = not self.path.is_absolute()
        return "".join(
            difflib.unified_diff(
                self.before.splitlines(keepends=True),
                self.after.splitlines(keepends=True),
                fromfile=f"a/{name}" if relative else name,
                tofile=f"b/{name}" if relative else name,
            )
        )


def _dotted(node: cst.BaseExpression | None) -> str:
    if node is None:
        return ""
    if isinstance(node, cst.Name):
        return node.value
    if isinstance(node, cst.Attribute):
        return f"{_dotted(node.value)}.{node.attr.value}"
    return ""


def _is_airflow(module: str) -> bool:
    return module == "airflow" or module.startswith("airflow.")


def _why_not(module: str, name: str) -> str:
    if module.startswith("airflow.providers.") and not module.startswith(
        "airflow.providers.standard"
    ):
        provider = module.split(".")[2]
        return f"dagwatch has no {provider!r} provider; use a Python library or a hook of your own"
    if name == "AirflowPlugin":
        return "dagwatch plugins are modules named in the `dagwatch.plugins` entry point"
    if name == "*":
        return "a star import: import the names you use"
    return f"dagwatch has no {name!r}"


class _Rewriter(cst.CSTTransformer):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self, path: str, names: frozenset[str]) -> None:
        super().__init__()
        self.path = path
        self.names = names
        self.unmapped: list[Unmapped] = []
        #: old name -> new name, for the module's uses
        self.renames: dict[str, str] = {}
        self.module_root_renamed = False

    def _line(self, node: cst.CSTNode) -> int:
        return self.get_metadata(PositionProvider, node).start.line

    def _report(self, node: cst.CSTNode, code: str, reason: str) -> None:
        self.unmapped.append(Unmapped(self.path, self._line(node), code, reason))

    def _target(self, name: str) -> tuple[str, str] | None:
        if name in RENAMES:
            return RENAMES[name]
        if name in self.names:
            return "engine", name
        return None

    def leave_SimpleStatementLine(
        self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine
    ) -> cst.BaseStatement | cst.FlattenSentinel[cst.BaseStatement]:
        if len(updated.body) != 1:
            return updated
        statement = updated.body[0]
        if isinstance(statement, cst.ImportFrom):
            return self._import_from(original, updated, statement)
        if isinstance(statement, cst.Import):
            return self._import(original, updated, statement)
        return updated

    def _import(
        self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine, node: cst.Import
    ) -> cst.SimpleStatementLine:
        aliases = []
        for alias in node.names:
            module = _dotted(alias.name)
            if not _is_airflow(module):
                aliases.append(alias)
                continue
            target = MODULES.get(module)
            if target is None:
                self._report(original, f"import {module}", _why_not(module, module))
                aliases.append(alias)
                continue
            if alias.asname is None:
                self.module_root_renamed = True  # `airflow.x.y` uses now start at `engine`
            aliases.append(alias.with_changes(name=cst.parse_expression(target)))
        return updated.with_changes(body=[node.with_changes(names=aliases)])

    def _map_names(
        self, original: cst.CSTNode, module: str, names: Sequence[cst.ImportAlias]
    ) -> tuple[dict[str, list[cst.ImportAlias]], list[cst.ImportAlias]]:
        """The imported names by dagwatch module, and those left (reported) as they are."""
        groups: dict[str, list[cst.ImportAlias]] = {}
        kept: list[cst.ImportAlias] = []
        for alias in names:
            name = _dotted(alias.name)
            target = None if _why_not_provider(module) else self._target(name)
            if target is None:
                self._report(original, f"from {module} import {name}", _why_not(module, name))
                kept.append(alias)
                continue
            new_module, new_name = target
            if new_name != name and alias.asname is None:
                self.renames[name] = new_name
            groups.setdefault(new_module, []).append(alias.with_changes(name=cst.Name(new_name)))
        return groups, kept

    def _import_from(
        self,
        original: cst.SimpleStatementLine,
        updated: cst.SimpleStatementLine,
        node: cst.ImportFrom,
    ) -> cst.BaseStatement | cst.FlattenSentinel[cst.BaseStatement]:
        if node.relative:
            return updated
        module = _dotted(node.module)
        if not _is_airflow(module):
            return updated
        if isinstance(node.names, cst.ImportStar):
            self._report(original, f"from {module} import *", _why_not(module, "*"))
            return updated
        groups, kept = self._map_names(original, module, node.names)
        if not groups:
            return updated
        if len(groups) == 1 and not kept:  # one module for all: edit in place, layout kept
            ((new_module, aliases),) = groups.items()
            if len(_unique(aliases)) == len(aliases):
                module_node = cst.parse_expression(new_module)
                return updated.with_changes(
                    body=[node.with_changes(module=module_node, names=aliases)]
                )
        statements: list[cst.SimpleStatementLine] = []
        for new_module, aliases in groups.items():
            imported = cst.ImportFrom(
                module=cst.parse_expression(new_module),  # type: ignore[arg-type]
                names=_without_last_comma(_unique(aliases)),
            )
            statements.append(cst.SimpleStatementLine(body=[imported]))
        if kept:
            rest = node.with_changes(names=_without_last_comma(kept))
            statements.append(cst.SimpleStatementLine(body=[rest]))
        if not statements:
            return updated
        first = statements[0]
        if first is not updated:
            statements[0] = first.with_changes(
                leading_lines=updated.leading_lines, trailing_whitespace=updated.trailing_whitespace
            )
        if len(statements) == 1:
            return statements[0]
        return cst.FlattenSentinel(statements)


def _why_not_provider(module: str) -> bool:
    """Modules of providers other than the standard one: nothing maps from them."""
    return module.startswith("airflow.providers.") and not module.startswith(
        "airflow.providers.standard"
    )


def _unique(aliases: list[cst.ImportAlias]) -> list[cst.ImportAlias]:
    seen: set[tuple[str, str | None]] = set()
    found = []
    for alias in aliases:
        key = (_dotted(alias.name), _dotted(alias.asname.name) if alias.asname else None)
        if key not in seen:
            seen.add(key)
            found.append(alias)
    return found


def _without_last_comma(aliases: Sequence[cst.ImportAlias]) -> list[cst.ImportAlias]:
    items = list(aliases)
    if items:
        items[-1] = items[-1].with_changes(comma=cst.MaybeSentinel.DEFAULT)
    return items


class _Renamer(cst.CSTTransformer):
    """Rename the uses of renamed imports, and `airflow.` roots of dotted module uses."""

    def __init__(self, renames: dict[str, str], root: bool) -> None:
        super().__init__()
        self.renames = renames
        self.root = root
        self._skip: set[int] = set()

    def visit_Attribute(self, node: cst.Attribute) -> None:
        self._skip.add(id(node.attr))  # `x.AirflowException` is another object's attribute

    def visit_Arg(self, node: cst.Arg) -> None:
        if node.keyword is not None:
            self._skip.add(id(node.keyword))

    def visit_Import(self, node: cst.Import) -> bool:
        return False  # imports were rewritten already; what was kept stays as written

    def visit_ImportFrom(self, node: cst.ImportFrom) -> bool:
        return False

    def leave_Attribute(self, original: cst.Attribute, updated: cst.Attribute) -> cst.Attribute:
        if self.root and isinstance(updated.value, cst.Name) and updated.value.value == "airflow":
            return updated.with_changes(value=cst.Name("engine"))
        return updated

    def leave_Name(self, original: cst.Name, updated: cst.Name) -> cst.Name:
        if id(original) in self._skip:
            return updated
        new = self.renames.get(updated.value)
        return updated.with_changes(value=new) if new else updated


def migrate_source(source: str, path: str = "<string>") -> tuple[str, list[Unmapped]]:
    """The source with its Airflow imports rewritten, and what could not be mapped."""
    module = cst.parse_module(source)
    rewriter = _Rewriter(path, _engine_names())
    rewritten = MetadataWrapper(module).visit(rewriter)
    if rewriter.renames or rewriter.module_root_renamed:
        rewritten = rewritten.visit(_Renamer(rewriter.renames, rewriter.module_root_renamed))
    return rewritten.code, rewriter.unmapped


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The `.py` files named or under the folders named, in order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*.py")
                if not any(part.startswith(".") or part == "__pycache__" for part in p.parts)
            )
        else:
            yield path


def migrate_file(path: Path) -> FileResult:
    """Migrate one file in memory (nothing is written)."""
    try:
        before = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return FileResult(path, "", "", error=f"cannot be read: {exc}")
    try:
        after, unmapped = migrate_source(before, str(path))
    except cst.ParserSyntaxError as exc:
        message = str(exc).strip().splitlines()[0]
        return FileResult(
            path, before, before, error=f"not valid Python (line {exc.raw_line}): {message}"
        )
    return FileResult(path, before, after, unmapped)
