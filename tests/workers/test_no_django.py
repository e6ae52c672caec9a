import subprocess
import sys


def test_workers_import_without_django():
    code = (
        "import sys, workers, workers.config, workers.data, workers.events, workers.training, "
        "workers.tiny_model, workers.device, workers.sample_data, workers.validate, workers.formats, "
        "workers.containers, workers.report, workers.stats, workers.templates, "
        "workers.quality, workers.prepare, workers.inference; "
        "assert 'django' not in sys.modules, 'workers imported django'; "
        "assert 'torch' not in sys.modules, 'workers imported torch at import time'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
