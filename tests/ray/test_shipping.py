"""The plugin's code travels with it: the actor runs it where the host's files are not."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import plugbridge

PACKAGE_INIT = """
    import importlib, os
    from pathlib import Path
    from plugbridge import Plugin, handler

    class Shipped(Plugin):
        name = "shipped"

        @handler("where")
        def where(self, ctx, host_dir):
            here = Path(__file__).parent
            helper = importlib.import_module(__name__ + ".late")  # imported only now
            return {
                "host_dir_exists": os.path.exists(host_dir),
                "file": __file__,
                "data": (here / "data.txt").read_text(),
                "late": helper.VALUE,
                "sibling": __import__(__name__.rpartition(".")[0] + ".sibling",
                                      fromlist=["x"]).WORD,
            }
"""


def _write_package(root: Path, version: str) -> Path:
    package = root / "shipped_pkg"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(PACKAGE_INIT.replace("\n    ", "\n"))
    (package / "late.py").write_text(f"VALUE = {version!r}\n")
    (package / "data.txt").write_text(f"data {version}")
    (root / "sibling.py").write_text(f"WORD = 'sibling {version}'\n")
    return package


def test_code_runs_in_an_actor_that_cannot_see_the_host_files(tmp_path: Path) -> None:
    """A package plugin loaded from a directory that is then deleted on the host: its
    submodule (imported only at call time), its data file and a sibling module are still
    there in the actor, which runs them from its own copy, not from the host's path."""
    host_dir = tmp_path / "host_only"
    package = _write_package(host_dir, "v1")
    with plugbridge.load(package, isolation="ray") as plugin:
        shutil.rmtree(host_dir)
        answer = plugin.call("where", str(host_dir))
        assert answer["host_dir_exists"] is False  # the actor cannot see the host's files
        assert not answer["file"].startswith(str(host_dir))
        assert answer["data"] == "data v1"
        assert answer["late"] == "v1"
        assert answer["sibling"] == "sibling v1"

        _write_package(host_dir, "v2")  # what is on disk now is what a reload ships
        plugin.reload()
        shutil.rmtree(host_dir)
        answer = plugin.call("where", str(host_dir))
        assert (answer["data"], answer["late"], answer["sibling"]) == (
            "data v2",
            "v2",
            "sibling v2",
        )


def test_the_actors_copy_is_removed_when_it_stops(write_plugin: Callable[..., Path]) -> None:
    source = write_plugin(
        """
        from plugbridge import Plugin, handler

        class Here(Plugin):
            @handler("file")
            def file(self, ctx, _):
                return __file__
        """
    )
    with plugbridge.load(source, isolation="ray") as plugin:
        copy = Path(plugin.call("file"))
        assert copy.parent != source.parent
        assert copy.read_text() == source.read_text()  # one machine: the test can look
    assert not copy.parent.exists()
