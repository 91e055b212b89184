"""Build hooks for the man page (setup.cfg `cmdclass`): not part of the installed package.

argparse-manpage's `build_py` writes `man/roast.1` from `roast.cli.build_parser()` and its
`install` copies the page to `share/man/man1`. An editable install (`pip install -e .`) runs
neither `install` nor `install_data`: setuptools' `editable_wheel` asks the distribution for
`has_data()`, a method that does not exist, so data files never reach an editable wheel. pip then
removes the page a previous `pip install .` put there and installs nothing in its place, and
`man roast` stops working. In editable mode, `build_py` therefore puts the page into the wheel's
data directory itself.
"""
from __future__ import annotations

import os

from build_manpages.build_manpages import get_build_py_cmd
from setuptools.command.build_py import build_py as _setuptools_build_py

PAGE = os.path.join("man", "roast.1")
_base = get_build_py_cmd(_setuptools_build_py)


class build_py(_base):  # named after the command it replaces, as setuptools' are
    def run(self) -> None:
        super().run()  # writes man/roast.1 first
        if getattr(self, "editable_mode", False):
            install = self.get_finalized_command("install")
            target = os.path.join(install.install_data, "share", "man", "man1")
            self.mkpath(target)
            self.copy_file(PAGE, target)
