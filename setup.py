"""Packaging hook: the task cards live in `tasks/` at the top of the repository (the project's layout),
and the wheel ships them inside the package as `resadapt_eval/tasks/*.yaml`, where
`resadapt_eval.adapters.base.bundled_tasks_dir` finds them in an installed copy.

Everything else is declared in setup.cfg. An editable install needs no copy: the source tree's
`tasks/` is found beside the package."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CARDS = "tasks"


class BuildWithTaskCards(build_py):
    """build_py, plus the task cards copied into the built package (non-editable builds only)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        source = ROOT / CARDS
        cards = sorted(source.glob("*.yaml"))
        if not cards:
            raise SystemExit(f"no task cards in {source}: the sdist or checkout is incomplete")
        target = Path(self.build_lib) / "resadapt_eval" / CARDS
        self.mkpath(str(target))
        for card in cards:
            self.copy_file(str(card), str(target / card.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        if getattr(self, "editable_mode", False):
            return super().get_outputs(include_bytecode)
        cards = [str(Path(self.build_lib) / "resadapt_eval" / CARDS / p.name) for p in (ROOT / CARDS).glob("*.yaml")]
        return [*super().get_outputs(include_bytecode), *cards]


setup(cmdclass={"build_py": BuildWithTaskCards})
