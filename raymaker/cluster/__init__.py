"""The Ray cluster raymaker runs on: its definition (``cluster/*.yaml``: instance types, prices), what
an instance asks Ray for and whether the cluster can ever give it, and joining or starting Ray."""
