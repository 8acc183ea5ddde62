"""Training: data loading, models, the objectives and their token kernels, and one Trainer loop for all of them.

DeepSpeed, which transformers imports when it is installed, warns at import on every machine without a GPU that it
is "Setting accelerator to CPU"; that says nothing to a CPU run and is dropped here, before anything imports it.
"""

import logging


def _not_cpu_accelerator_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Setting accelerator to CPU.")


logging.getLogger("DeepSpeed").addFilter(_not_cpu_accelerator_notice)
