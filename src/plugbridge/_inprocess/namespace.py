"""Each plugin instance's own module namespace, loaded fresh from disk and removed on unload.

A Python plugin ``hello_plugin.py`` is imported as ``_plugbridge_<n>.hello_plugin``, where
``_plugbridge_<n>`` is a synthetic package private to one instance. Its helper modules and
relative imports resolve inside that package, so two instances never share module globals.
Absolute imports of a package plugin's own package (``import pkgplug.helpers``) are
compiled as relative ones, so they too reach the instance's copy, and nothing named
``pkgplug`` ever enters ``sys.modules``. Source is always compiled from the file as it is
now: never from cached bytecode, whose mtime+size check misses an edit made within the
same second that keeps the size.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import os
import sys
import threading
import types
from collections.abc import Sequence
from pathlib import Path

from .._errors import InitializationFailed, describe_exception
from .._plugin import Plugin
from .._sources import PythonSource
from .._steadylog import steady_logger

NAMESPACE_PREFIX = "_plugbridge_"
_numbers = itertools.count(1)


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles from the source file every time; never reads or writes bytecode.

    With ``own_package`` (a package plugin's top name, ``pkgplug``), absolute imports of
    that package are compiled as relative ones (see ``_SelfImports``): the module's
    ``__package__`` is ``package``.
    """

    def __init__(self, fullname: str, path: str, package: str, own_package: str | None) -> None:
        super().__init__(fullname, path)
        self.package = package
        self.own_package = own_package

    def get_code(self, fullname: str) -> types.CodeType:
        source = self.get_data(self.path)
        own = self.own_package
        if own is not None and own.encode() in source:
            tree = ast.parse(source, self.path)
            tree = _SelfImports(own, self.package.count(".") + 1).visit(tree)
            ast.fix_missing_locations(tree)
            return compile(tree, self.path, "exec", dont_inherit=True)
        return compile(source, self.path, "exec", dont_inherit=True)

    def exec_module(self, module: types.ModuleType) -> None:
        # The module's ``getLogger(__name__)``, steady from its creation (see _steadylog).
        steady_logger(module.__name__)
        super().exec_module(module)


class _SelfImports(ast.NodeTransformer):
    """Absolute imports of the plugin's own package, made relative to the namespace root.

    ``level`` is the relative level that reaches the namespace root (``_plugbridge_<n>``)
    from the module. ``import pkgplug.helpers`` becomes ``from ..pkgplug import helpers
    as pkgplug`` + ``from .. import pkgplug`` (the same binding, the same module loaded);
    ``import pkgplug.helpers as h`` becomes ``from ..pkgplug import helpers as h``;
    ``from pkgplug.x import y`` becomes ``from ..pkgplug.x import y``. Line numbers stay.
    """

    def __init__(self, own_package: str, level: int) -> None:
        self.own = own_package
        self.level = level

    def _is_own(self, name: str) -> bool:
        return name == self.own or name.startswith(self.own + ".")

    def visit_Import(self, node: ast.Import) -> ast.stmt | list[ast.stmt]:
        if not any(self._is_own(alias.name) for alias in node.names):
            return node
        statements: list[ast.stmt] = []
        others: list[ast.alias] = []
        for alias in node.names:
            if not self._is_own(alias.name):
                others.append(alias)
                continue
            if others:  # keep the order of the imports' side effects
                statements.append(ast.Import(names=others))
                others = []
            head, _, leaf = alias.name.rpartition(".")
            if alias.asname is not None:
                module, name = (head, leaf) if head else (None, self.own)
                statements.append(self._from(module, name, alias.asname))
            else:
                if head:  # load the submodule, then bind the package's name
                    statements.append(self._from(head, leaf, self.own))
                statements.append(self._from(None, self.own, None))
        if others:
            statements.append(ast.Import(names=others))
        return [ast.copy_location(statement, node) for statement in statements]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        if node.level == 0 and node.module is not None and self._is_own(node.module):
            node.level = self.level
        return node

    def _from(self, module: str | None, name: str, asname: str | None) -> ast.ImportFrom:
        return ast.ImportFrom(module=module, names=[ast.alias(name, asname)], level=self.level)


class _NamespaceFinder(importlib.abc.MetaPathFinder):
    """Finds submodules of live plugin namespaces; installed only while one exists."""

    def __init__(self) -> None:
        self.namespaces: dict[str, str | None] = {}
        """Live namespaces, each with its plugin's own package name (None: not a package)."""
        self.lock = threading.Lock()

    def fresh_lock(self) -> None:
        """In a forked child: a lock a parent thread held at the fork would stay held."""
        self.lock = threading.Lock()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(NAMESPACE_PREFIX):
            return None
        namespace = fullname.partition(".")[0]
        if namespace not in self.namespaces or path is None:
            return None
        own = self.namespaces.get(namespace)
        parent, _, leaf = fullname.rpartition(".")
        for entry in path:
            package_init = Path(entry, leaf, "__init__.py")
            if package_init.is_file():
                return _spec(fullname, package_init, fullname, own, package=True)
            module_file = Path(entry, leaf + ".py")
            if module_file.is_file():
                return _spec(fullname, module_file, parent, own, package=False)
        return None

    def register(self, namespace: str, own_package: str | None) -> None:
        with self.lock:
            if not self.namespaces:
                sys.meta_path.insert(0, self)
            self.namespaces[namespace] = own_package

    def unregister(self, namespace: str) -> None:
        with self.lock:
            self.namespaces.pop(namespace, None)
            if not self.namespaces and self in sys.meta_path:
                sys.meta_path.remove(self)


class _DottedFileSpec(importlib.machinery.ModuleSpec):
    """A plugin file with dots in its name (``hello.v2.py``), straight in the namespace.

    Its module name keeps the dots (``_plugbridge_3.hello.v2``, so ``getLogger(__name__)``
    reads ``hello.v2``), but its parent is the namespace itself: relative imports find the
    modules next to the file, as for any other plugin file.
    """

    def __init__(self, fullname: str, file: Path, namespace: str) -> None:
        loader = _FreshSourceLoader(fullname, str(file), namespace, None)
        super().__init__(fullname, loader, origin=str(file))
        self.has_location = True
        self._namespace = namespace

    @property
    def parent(self) -> str:
        return self._namespace


def _spec(
    fullname: str, file: Path, parent: str, own_package: str | None, *, package: bool
) -> importlib.machinery.ModuleSpec:
    spec = importlib.util.spec_from_file_location(
        fullname,
        file,
        loader=_FreshSourceLoader(fullname, str(file), parent, own_package),
        submodule_search_locations=[str(file.parent)] if package else None,
    )
    assert spec is not None
    return spec


_FINDER = _NamespaceFinder()
os.register_at_fork(after_in_child=_FINDER.fresh_lock)


class PluginNamespace:
    """One instance's private copy of a plugin's modules."""

    def __init__(self, source: PythonSource) -> None:
        self.source = source
        self.name = f"{NAMESPACE_PREFIX}{next(_numbers)}"
        self.module: types.ModuleType | None = None

    def strip(self, qualified: str) -> str:
        """``_plugbridge_3.pkg.helpers`` -> ``pkg.helpers`` (the name the author wrote)."""
        if qualified.startswith(self.name):
            return qualified[len(self.name) + 1 :]
        return qualified

    def load(self) -> type[Plugin]:
        """Import the plugin module fresh and find its plugin class."""
        root = types.ModuleType(self.name, "plugbridge instance namespace")
        root.__path__ = [str(self.source.search_dir)]
        root.__package__ = self.name
        sys.modules[self.name] = root
        _FINDER.register(self.name, self._own_package())
        try:
            self.module = self._import()
        except BaseException as exc:
            self.unload()
            raise InitializationFailed(
                f"cannot import plugin {self.source.module!r} from {self.source.search_dir}: "
                f"{self.strip_text(describe_exception(exc))}"
            ) from None
        try:
            return self._plugin_class(self.module)
        except InitializationFailed:
            self.unload()
            raise

    def _own_package(self) -> str | None:
        """The plugin's own package (``pkgplug``), whose absolute imports stay inside."""
        source = self.source
        top = source.top_package
        if source.dotted_file is None and (source.search_dir / top / "__init__.py").is_file():
            return top
        return None

    def _import(self) -> types.ModuleType:
        fullname = f"{self.name}.{self.source.module}"
        file = self.source.dotted_file
        if file is None:
            return importlib.import_module(fullname)
        # ``import_module`` would read the dots as packages: load the file itself.
        spec = _DottedFileSpec(fullname, file, self.name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[fullname] = module
        assert spec.loader is not None
        spec.loader.exec_module(module)
        return module

    def strip_text(self, text: str) -> str:
        """An error text without the namespace's internal name: the author's names only."""
        return text.replace(self.name + ".", "").replace(self.name, str(self.source.search_dir))

    def unload(self) -> None:
        """Remove every module of this namespace from ``sys.modules``."""
        _FINDER.unregister(self.name)
        dotted = self.name + "."
        for key in [k for k in list(sys.modules) if k == self.name or k.startswith(dotted)]:
            sys.modules.pop(key, None)
        self.module = None

    def _plugin_class(self, module: types.ModuleType) -> type[Plugin]:
        label = self.source.module
        if self.source.class_name is not None:
            found = getattr(module, self.source.class_name, None)
            if not (isinstance(found, type) and issubclass(found, Plugin)):
                raise InitializationFailed(
                    f"{label}:{self.source.class_name} is not a plugbridge.Plugin subclass"
                )
            return found
        if hasattr(module, "plugin"):
            found = module.plugin
            if isinstance(found, type) and issubclass(found, Plugin) and found is not Plugin:
                return found
            raise InitializationFailed(
                f"{label}.plugin must be a plugbridge.Plugin subclass, not {found!r}"
            )
        candidates = _plugin_classes(module, exact=True) or _plugin_classes(module, exact=False)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise InitializationFailed(f"no plugbridge.Plugin subclass found in {label}")
        names = ", ".join(sorted(c.__name__ for c in candidates))
        raise InitializationFailed(
            f"{label} defines several Plugin subclasses ({names}); set a module attribute"
            f" 'plugin' or load '{label}:ClassName'"
        )


def _plugin_classes(module: types.ModuleType, *, exact: bool) -> list[type[Plugin]]:
    """Plugin subclasses in ``module``: defined in it, or (``exact=False``) in its package."""
    own = module.__name__
    found: list[type[Plugin]] = []
    for value in vars(module).values():
        if not (isinstance(value, type) and issubclass(value, Plugin) and value is not Plugin):
            continue
        where = value.__module__
        if where == own or (not exact and where.startswith(own + ".")):
            found.append(value)
    return list(dict.fromkeys(found))
