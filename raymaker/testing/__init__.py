"""Test and benchmark support; the top layer, so it may import every other one.

* ``raymaker.testing.s3``: a real S3 API server (moto) on 127.0.0.1; its helpers are re-exported here.
* ``raymaker.testing.conformance``: the conformance suite every built-in algorithm passes.
* ``raymaker.testing.distributed``: an algorithm's ``train`` in several local worker processes.

The last two are imported by name only (they load the algorithms, and serve for the hosting check)."""

from __future__ import annotations

from raymaker.testing.s3 import free_port, start_moto_server, stop

__all__ = ["free_port", "start_moto_server", "stop"]
