"""Logging set-up: one file per process under ``var/log/``, plain text, no PHI.

Code logs identifiers (aggregate ids, event types, positions), never names,
birth dates, addresses, identifiers of patients, request bodies or query strings.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def configure_logging(process: str, log_dir: Path, level: int = logging.INFO) -> None:
    """Send this process's logs to ``log_dir/<process>.log``, and its warnings to stderr.

    One line per request goes to the file only: writing each twice cost a busy
    service more than its own routes did.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter(
        f"%(asctime)s {process} %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"
    )
    root = logging.getLogger()
    root.setLevel(level)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    file_handler = logging.FileHandler(log_dir / f"{process}.log", encoding="utf-8")
    file_handler.setFormatter(formatter)
    root.addHandler(file_handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    stream.setLevel(max(level, logging.WARNING))
    root.addHandler(stream)
    # uvicorn's own access log prints query strings: ours does not, so silence theirs
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
