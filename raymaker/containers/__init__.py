"""The container runtime on a node (podman or docker): finding it, images (present, pulled, loaded,
listed), and the ``run`` command lines for SageMaker's container contract (``train`` / ``serve``)."""
