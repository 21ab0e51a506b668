"""`from azureml_user.parallel_run import EntryScript` for Azure ML entry scripts.

The worker's child process sets the environment variables read here before it
imports user code, so this module needs nothing else from batchfleet.
"""

from __future__ import annotations

import logging
import os

ENTRY_LOGGER = "batchfleet.entry_script"


class EntryScript:
    """Run-time facts for the entry script, as Azure ML's EntryScript exposes them."""

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(ENTRY_LOGGER)

    @property
    def output_dir(self) -> str:
        return os.environ.get("AZUREML_BI_OUTPUT_PATH", os.getcwd())

    @property
    def working_dir(self) -> str:
        return os.environ.get("BATCHFLEET_WORKING_DIR", os.getcwd())

    @property
    def log_dir(self) -> str:
        return os.environ.get("BATCHFLEET_LOG_DIR", os.getcwd())

    @property
    def agent_name(self) -> str:
        return os.environ.get("BATCHFLEET_AGENT_NAME", "process000")

    @property
    def node_id(self) -> str:
        return os.environ.get("BATCHFLEET_NODE_ID", "node")
