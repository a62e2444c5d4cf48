"""The data plane: formats that decode to columnar batches, storage, channels and input modes."""

from raymaker.io.batch import Batch, DataFormatError

__all__ = ["Batch", "DataFormatError"]
