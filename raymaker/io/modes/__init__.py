"""SageMaker input modes: File (copy first, cached), FastFile (lazy reads) and the Pipe FIFO contract."""

from raymaker.io.modes.fastfile import FastFileChannel
from raymaker.io.modes.fifo import PipeFifoWriter
from raymaker.io.modes.file import DownloadReport, download_channel

__all__ = ["DownloadReport", "FastFileChannel", "PipeFifoWriter", "download_channel"]
