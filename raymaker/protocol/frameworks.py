"""SageMaker's framework containers (script mode) as names and image URIs: PyTorch, scikit-learn and
XGBoost. One table, read by the SDK (which image a ``PyTorch`` estimator names), the engine (an image
URI selects script mode) and serving (which framework's default handlers apply).

A script runs with the libraries installed on the cluster; ``framework_version`` picks the image a
SageMaker user would name, and an unknown one is refused with the versions SageMaker offers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from raymaker.protocol.errors import ValidationError

# <12-digit account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@digest]
ECR_IMAGE_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9._/-]+?)(?::(?P<tag>[\w.-]+)|@sha256:[0-9a-f]{64})?$"
)


@dataclass(frozen=True)
class Framework:
    name: str  # as the SageMaker SDK's image_uris.retrieve names it
    account: str  # us-east-1's registry account of its images
    repositories: tuple[str, ...]  # training first, then inference
    versions: tuple[str, ...]  # framework_version values SageMaker offers
    py_versions: tuple[str, ...]

    def image_uri(self, version: str, py_version: str | None = None, *, gpu: bool = False,
                  inference: bool = False, region: str = "us-east-1") -> str:
        """The image a SageMaker user gets from ``sagemaker.image_uris.retrieve``."""
        repo = self.repositories[-1] if inference else self.repositories[0]
        host = f"{self.account}.dkr.ecr.{region}.amazonaws.com"
        if self.name == "pytorch":
            py = py_version or self.py_versions[-1]
            return f"{host}/{repo}:{version}-{'gpu' if gpu else 'cpu'}-{py}"
        if self.name == "sklearn":
            return f"{host}/{repo}:{version}-cpu-py3"
        return f"{host}/{repo}:{version}"

    def check_version(self, version: str | None, py_version: str | None = None) -> None:
        """ValidationError naming the versions to use, for a version SageMaker does not offer."""
        if not version:
            raise ValidationError(
                f"{self.name}: framework_version is required; use one of {', '.join(self.versions)}"
            )
        if version not in self.versions and _major_minor(version) not in {_major_minor(v) for v in self.versions}:
            raise ValidationError(
                f"{self.name}: framework_version {version!r} is not one SageMaker offers; use one of "
                f"{', '.join(self.versions)}"
            )
        if py_version and py_version not in self.py_versions:
            raise ValidationError(
                f"{self.name}: py_version {py_version!r} is not supported; use one of {', '.join(self.py_versions)}"
            )


def _major_minor(version: str) -> str:
    return ".".join(version.split("-")[0].split(".")[:2])


FRAMEWORKS: dict[str, Framework] = {
    f.name: f
    for f in (
        Framework(
            "pytorch",
            "763104351884",
            ("pytorch-training", "pytorch-inference"),
            ("1.8.1", "1.9.1", "1.10.2", "1.11.0", "1.12.1", "1.13.1", "2.0.1", "2.1.0", "2.2.0", "2.3.0",
             "2.4.0", "2.5.1", "2.6.0"),
            ("py38", "py39", "py310", "py311", "py312"),
        ),
        Framework(
            "sklearn",
            "683313688378",
            ("sagemaker-scikit-learn",),
            ("0.23-1", "1.0-1", "1.2-1", "1.4-2"),
            ("py3",),
        ),
        Framework(
            "xgboost",
            "683313688378",
            ("sagemaker-xgboost",),
            ("1.0-1", "1.2-1", "1.2-2", "1.3-1", "1.5-1", "1.7-1", "2.0-1"),
            ("py3",),
        ),
    )
}
_BY_REPOSITORY = {repo: f for f in FRAMEWORKS.values() for repo in f.repositories}


def get_framework(name: str) -> Framework:
    try:
        return FRAMEWORKS[name]
    except KeyError:
        raise ValidationError(
            f"unknown framework {name!r}: raymaker runs scripts for {', '.join(sorted(FRAMEWORKS))}"
        ) from None


def image_repository(image: str) -> str | None:
    """The repository of an ECR image URI (``.../pytorch-training:2.3.0-cpu-py311`` ->
    ``pytorch-training``), or None for an image that is not on ECR."""
    m = ECR_IMAGE_RE.match(image.strip())
    return m.group("repo").rsplit("/", 1)[-1] if m else None


def framework_of_image(image: str) -> Framework | None:
    """The framework whose SageMaker container ``image`` is, or None. ``sagemaker-xgboost`` is both
    the built-in algorithm and XGBoost's framework container: the request's ``sagemaker_program``
    decides which (SageMaker's XGBoost container does the same)."""
    repo = image_repository(image)
    return _BY_REPOSITORY.get(repo) if repo else None
