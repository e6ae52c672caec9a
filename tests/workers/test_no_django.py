import os
import subprocess
import sys
from pathlib import Path

import workers

# Every module of the package, found by pkgutil: a new module is covered without editing this test.
CODE = """
import importlib, pkgutil, sys
import workers
names = sorted(m.name for m in pkgutil.iter_modules(workers.__path__, "workers."))
for name in names:
    importlib.import_module(name)
assert 'django' not in sys.modules, 'workers imported django'
assert 'torch' not in sys.modules, 'workers imported torch at import time'
print(' '.join(names))
"""


def test_every_workers_module_imports_without_django_or_torch():
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                            cwd=Path(workers.__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    root = Path(workers.__file__).parent
    files = {f"workers.{path.stem}" for path in root.glob("*.py") if path.stem != "__init__"}
    packages = {f"workers.{path.parent.name}" for path in root.glob("*/__init__.py")}  # workers.vision
    assert set(result.stdout.split()) == files | packages
