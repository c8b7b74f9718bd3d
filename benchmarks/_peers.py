"""Peer models that run in their own virtual environments, driven through files (stdlib only).

CellFlow (``cellflow-tools``, JAX) is a peer for the held-out benchmarks, never a dependency of scflowlm:
:func:`ensure_cellflow_env` builds its venv once, :func:`run_cellflow` runs ``_cellflow_peer.py`` in it.

    python = ensure_cellflow_env(ROOT)
    seconds = run_cellflow(python, input_h5ad=..., output_h5ad=..., holdout=[{"cell_type": ..., "condition": ...}],
                           seed=0, iterations=2000)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

HERE = Path(__file__).resolve().parent
CELLFLOW_SCRIPT = HERE / "_cellflow_peer.py"
CELLFLOW_VENV = ".venv-cellflow"

#: The working set for CellFlow on the CPU, pinned whole (``pip freeze`` of a venv made with
#: ``pip install cellflow-tools==0.0.9 jax[cpu] requests`` on Python 3.11, Linux x86_64). ``requests`` is
#: used by cellflow-tools but not declared. Nothing here pulls in torch; were one added that did, it must be
#: ``torch==2.13.0`` (the CPU wheel on disk; any other torch is a multi-GB CUDA build).
CELLFLOW_REQUIREMENTS = (
    "cellflow-tools==0.0.9",
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "requests==2.34.2",
    "absl-py==2.5.1",
    "adjustText==1.4.0",
    "aiofiles==25.1.0",
    "anndata==0.12.19",
    "anyio==4.16.0",
    "array-api-compat==1.16.0",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "click==8.5.1",
    "cloudpickle==3.1.3",
    "contourpy==1.3.3",
    "coverage==7.17.5",
    "cycler==0.12.1",
    "dask==2026.8.0",
    "diffrax==0.7.2",
    "donfig==0.8.1.post1",
    "equinox==0.13.8",
    "etils==1.15.0",
    "filelock==4.3.1",
    "flax==0.12.8",
    "fonttools==4.68.0",
    "formulaic==1.2.2",
    "fsspec==2026.9.0",
    "google-crc32c==1.9.0",
    "h11==0.16.0",
    "h5py==3.16.0",
    "hf-xet==1.8.0",
    "httpcore2==2.16.2",
    "httpx2==2.16.2",
    "huggingface_hub==2.4.0",
    "humanize==4.17.0",
    "idna==3.20",
    "importlib_metadata==10.2.0",
    "interface_meta==2.0.1",
    "jaxopt==0.8.5",
    "jaxtyping==0.3.11",
    "joblib==1.6.0",
    "kiwisolver==1.5.1",
    "lazy-importer==0.1.0",
    "legacy-api-wrap==1.5",
    "lineax==0.1.1",
    "llvmlite==0.50.0",
    "locket==1.0.0",
    "markdown-it-py==4.3.0",
    "matplotlib==3.11.2",
    "mdurl==0.1.2",
    "ml_dtypes==0.6.0",
    "msgpack==1.2.4",
    "narwhals==2.29.0",
    "natsort==8.4.0",
    "networkx==3.6.1",
    "numba==0.68.1",
    "numcodecs==0.16.6",
    "numpy==2.4.6",
    "opt_einsum==3.4.0",
    "optax==0.2.8",
    "optimistix==0.1.0",
    "orbax==0.1.9",
    "orbax-checkpoint==0.12.8",
    "ott-jax==0.6.0",
    "packaging==26.4",
    "pandas==2.3.3",
    "partd==1.4.2",
    "patsy==1.0.3",
    "pillow==13.0.0",
    "prometheus_client==0.26.0",
    "protobuf==7.36.2",
    "psutil==7.2.2",
    "pyarrow==26.0.1",
    "Pygments==2.21.0",
    "pynndescent==0.7.0",
    "pyparsing==3.3.3",
    "python-dateutil==4.0.0",
    "pytz==2026.6",
    "PyYAML==6.0.4",
    "rich==15.0.0",
    "scanpy==1.11.5",
    "scikit-learn==1.5.1",
    "scipy==1.15.3",
    "scverse-misc==0.0.3",
    "seaborn==0.13.2",
    "session-info2==0.4.1",
    "session_info==1.0.1",
    "simplejson==4.3.0",
    "statsmodels==0.15.0",
    "stdlib-list==0.12.0",
    "tensorstore==0.1.86",
    "threadpoolctl==3.8.0",
    "toolz==1.2.0",
    "tqdm==4.70.1",
    "treescope==0.1.10",
    "truststore==0.10.5",
    "typing_extensions==4.16.0",
    "tzdata==2026.6",
    "umap-learn==0.5.7",
    "urllib3==2.8.0",
    "uvloop==0.23.0",
    "wadler_lindig==0.1.8",
    "wrapt==2.5.2",
    "zarr==3.1.6",
    "zipp==4.1.2",
)

_STAMP = ".scflowlm-peer-stamp"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "..." + text[-n:]


def ensure_cellflow_env(root: Path) -> Path:
    """Create (once) the CellFlow venv at ``root / ".venv-cellflow"`` and return its python.

    Installs :data:`CELLFLOW_REQUIREMENTS` with pip (1.6 GB; about a minute, cold or warm pip cache). A stamp
    file holding a hash of the requirements makes later calls free; change the pins and the venv is updated.
    """
    venv = Path(root) / CELLFLOW_VENV
    python = _venv_python(venv)
    digest = hashlib.sha256("\n".join(CELLFLOW_REQUIREMENTS).encode()).hexdigest()
    stamp = venv / _STAMP
    if python.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return python
    if sys.version_info < (3, 11):
        raise RuntimeError("cellflow-tools needs Python >= 3.11 for its venv")
    env = _clean_env()
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *CELLFLOW_REQUIREMENTS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"installing CellFlow into {venv} failed:\n{_tail(proc.stdout + proc.stderr)}")
    check = subprocess.run(
        [str(python), "-c", "import cellflow.model, jax, requests; print(jax.__version__)"],
        capture_output=True,
        text=True,
        env=env,
    )
    if check.returncode != 0:
        raise RuntimeError(f"CellFlow does not import in {venv}:\n{_tail(check.stderr)}")
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(digest + "\n")
    tmp.replace(stamp)
    return python


def _clean_env() -> dict[str, str]:
    """The current environment without what would leak the calling venv into the peer's python."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(key, None)
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _thread_env(threads: int) -> dict[str, str]:
    env = _clean_env()
    n = str(int(threads))
    for key in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
        "NUMBA_NUM_THREADS",
    ):
        env[key] = n
    # XLA:CPU has no exact thread-count knob: with one thread, turn off Eigen's multi-threaded kernels.
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_cpu_multi_thread_eigen")]
    if threads <= 1:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["TQDM_DISABLE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cellflow(
    python: Path,
    *,
    input_h5ad: Path,
    output_h5ad: Path,
    holdout: list[dict],
    seed: int,
    iterations: int,
    threads: int = 1,
    timeout: float | None = None,
    extra_args: Sequence[str] = (),
) -> float:
    """Train CellFlow without ``holdout`` and predict it, in the peer venv; return the subprocess's wall seconds.

    ``input_h5ad`` needs ``obs["cell_type"]``, ``obs["condition"]`` ("control" for control cells, "A+B" for
    combinations) and ``obsm["X_pca"]``. ``output_h5ad`` gets one predicted cell per control cell of each held-out
    condition's cell type (``obsm["X_pca"]``, ``obs["cell_type"]``, ``obs["condition"]``, ``obs["source_cell"]``).
    JAX/XLA and the BLAS libraries are held to ``threads`` CPU threads; ``extra_args`` go to ``_cellflow_peer.py``
    (e.g. ``["--time-predict", "1000"]``). Raises ``RuntimeError`` with the tail of
    the peer's stderr when it fails.
    """
    holdout = [{"cell_type": str(h["cell_type"]), "condition": str(h["condition"])} for h in holdout]
    output_h5ad = Path(output_h5ad)
    output_h5ad.unlink(missing_ok=True)
    cmd = [
        str(python),
        str(CELLFLOW_SCRIPT),
        "--input",
        str(input_h5ad),
        "--output",
        str(output_h5ad),
        "--holdout",
        json.dumps(holdout),
        "--seed",
        str(int(seed)),
        "--iterations",
        str(int(iterations)),
        *extra_args,
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_thread_env(threads), timeout=timeout)
    except subprocess.TimeoutExpired as err:
        err_text = (
            err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else (err.stderr or "")
        )
        raise RuntimeError(f"CellFlow peer timed out after {timeout} s:\n{_tail(err_text)}") from err
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not output_h5ad.exists():
        raise RuntimeError(
            f"CellFlow peer failed (exit {proc.returncode}): {' '.join(cmd[:2])} ...\n{_tail(proc.stderr or proc.stdout)}"
        )
    return seconds
