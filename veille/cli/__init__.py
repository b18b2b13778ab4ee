"""CLI stage: a thin click layer over the library API (`veille.core.Watch` and the stage modules).

Global options come first (`veille --db x.db fetch`) and each has an environment variable. Commands live
in one module per area and register themselves on `main`. Exit codes: 0 done (even if some sources
failed: they are listed), 1 the command failed, 2 configuration or usage error.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from ..errors import ConfigError, VeilleError


@dataclass
class App:
    """What every command needs: the paths given by the global options."""

    db: Path
    sources: Path
    topics: Path
    config: Path

    def settings(self):
        from ..config import load_settings

        return load_settings(self.config)

    def watch(self, readonly: bool = False):
        from ..core import Watch

        return Watch(db=self.db, sources=self.sources, topics=self.topics, config=self.config, readonly=readonly)


pass_app = click.make_pass_decorator(App)


class VeilleGroup(click.Group):
    """Turns veille's errors into one clear line on stderr and the documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            if e.hint:
                click.echo(f"hint: {e.hint}", err=True)
            ctx.exit(2)
        except VeilleError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(1)


@click.group(cls=VeilleGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), envvar="VEILLE_DB", default="veille.db",
              show_default=True, show_envvar=True, help="SQLite archive.")
@click.option("--sources", type=click.Path(dir_okay=False, path_type=Path), envvar="VEILLE_SOURCES",
              default="sources.yaml", show_default=True, show_envvar=True, help="Sources file.")
@click.option("--topics", type=click.Path(dir_okay=False, path_type=Path), envvar="VEILLE_TOPICS",
              default="topics.yaml", show_default=True, show_envvar=True, help="Topics file.")
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), envvar="VEILLE_CONFIG",
              default="veille.yaml", show_default=True, show_envvar=True,
              help="Settings file (optional; see `veille settings`).")
@click.version_option(package_name="veille")
@click.pass_context
def main(ctx: click.Context, db: Path, sources: Path, topics: Path, config: Path) -> None:
    """veille: press watch for French local authorities.

    Fetches the sources of sources.yaml, extracts and deduplicates articles, tags them with the
    topics of topics.yaml, stores them in SQLite and builds weekly digests for members.
    """
    ctx.obj = App(db=db, sources=sources, topics=topics, config=config)


def _register() -> None:
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{module.name}")


_register()


def run() -> None:
    """The `veille` console script: `main`, then an immediate exit with its code.

    A command has closed its archive and its pools when it returns; what is left is the interpreter's
    teardown (modules, numpy, lxml, httpx...), 70-100 ms after every command, a tenth of a warm pass.
    Output streams and log handlers are flushed, then `os._exit` skips the teardown.
    """
    import logging
    import os

    try:
        main()
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe (`veille ... | head`): nothing more to tell
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    run()
