"""Script mode's framework estimators and models, named and shaped as the SageMaker Python SDK v2's
``sagemaker.pytorch``, ``sagemaker.sklearn`` and ``sagemaker.xgboost``: ``PyTorch``, ``SKLearn``,
``XGBoost`` (framework mode) train a script in SageMaker's framework container of
``framework_version``; ``PyTorchModel``, ``SKLearnModel``, ``XGBoostModel`` serve a model with an
inference script. Images come from ``raymaker.protocol.frameworks`` (CPU or GPU by instance type);
the code and the wire format are ``Estimator``'s and ``Model``'s script mode.

    from raymaker.pytorch import PyTorch

    est = PyTorch(entry_point="train.py", source_dir="src", framework_version="2.3.0",
                  py_version="py311", instance_count=2, instance_type="ml.m5.xlarge",
                  distribution={"torch_distributed": {"enabled": True}},
                  hyperparameters={"epochs": 3})
    est.fit({"train": "s3://bucket/train"})
    predictor = est.deploy(1, "ml.m5.xlarge")
"""

from __future__ import annotations

import re
from typing import Any

from raymaker.protocol.environment import region
from raymaker.protocol.frameworks import Framework as FrameworkSpec
from raymaker.protocol.frameworks import framework_of_image, get_framework, image_repository
from raymaker.sdk.deserializers import CSVDeserializer, NumpyDeserializer
from raymaker.sdk.estimator import Estimator
from raymaker.sdk.model import Model
from raymaker.sdk.predictor import Predictor
from raymaker.sdk.serializers import LibSVMSerializer, NumpySerializer
from raymaker.sdk.session import Session

__all__ = [
    "Framework",
    "FrameworkModel",
    "PyTorch",
    "PyTorchModel",
    "PyTorchPredictor",
    "SKLearn",
    "SKLearnModel",
    "SKLearnPredictor",
    "XGBoost",
    "XGBoostModel",
    "XGBoostPredictor",
]


def is_gpu_instance(instance_type: str | None) -> bool:
    """A GPU instance type (``ml.g*``, ``ml.p*``, ``local_gpu``), as ``fw_utils._is_gpu_instance``:
    it picks a framework's GPU image."""
    return bool(instance_type) and (
        str(instance_type).startswith(("ml.g", "ml.p")) or instance_type == "local_gpu"
    )


def full_version(framework: FrameworkSpec, version: str) -> str:
    """The listed version ``version`` names (``2.3`` -> ``2.3.0``, ``1.7`` -> ``1.7-1``), as
    ``image_uris.retrieve`` resolves a version alias; ``check_version`` has accepted it."""
    if version in framework.versions:
        return version
    major_minor = ".".join(version.split("-")[0].split(".")[:2])
    matches = [v for v in framework.versions if ".".join(v.split("-")[0].split(".")[:2]) == major_minor]
    return matches[-1] if matches else version


# Image tags: pytorch 2.3.0-cpu-py311; sklearn 1.2-1-cpu-py3; xgboost 1.7-1 (py3).
_TAGS = {
    "pytorch": re.compile(r"^(?P<version>\d+(?:\.\d+)*)-(?:cpu|gpu)-(?P<py>py\d+)"),
    "sklearn": re.compile(r"^(?P<version>\d+(?:\.\d+)*-\d+)-cpu-(?P<py>py\d+)"),
    "xgboost": re.compile(r"^(?P<version>\d+(?:\.\d+)*-\d+)$"),
}


def versions_from_image(framework: FrameworkSpec, image: str) -> tuple[str, str] | None:
    """``(framework_version, py_version)`` of one of ``framework``'s images, or None (a tag that is not
    SageMaker's, or a version SageMaker does not list)."""
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    m = _TAGS[framework.name].match(tag)
    if not m:
        return None
    version, py = m.group("version"), m.groupdict().get("py") or "py3"
    try:
        framework.check_version(version, py)
    except ValueError:
        return None
    return version, py


def _check_versions(
    framework: FrameworkSpec,
    version: str | None,
    py_version: str | None,
    image_uri: str | None,
    require_py: bool,
) -> None:
    """As ``fw_utils.validate_version_or_image_args``: without an image, the versions SageMaker
    offers; with one, an image of this framework."""
    if image_uri:
        found = framework_of_image(image_uri)
        if found is None or found.name != framework.name:
            raise ValueError(
                f"image_uri {image_uri!r} is not a SageMaker {framework.name} image (repositories "
                f"{', '.join(framework.repositories)}): drop image_uri and give framework_version"
            )
        return
    if not version or (require_py and not py_version):
        raise ValueError(
            "framework_version or py_version was None, yet image_uri was also None. Either specify both "
            f"framework_version and py_version, or specify image_uri. {framework.name} versions: "
            f"{', '.join(framework.versions)}; py_versions: {', '.join(framework.py_versions)}"
        )
    framework.check_version(version, py_version)


# --- estimators ----------------------------------------------------------------------------------


class Framework(Estimator):
    """A script in one framework's SageMaker container (``sagemaker.estimator.Framework``): every
    hyperparameter travels JSON-encoded; ``framework_version`` and ``py_version`` pick the image
    unless ``image_uri`` names one."""

    _framework_name: str = ""
    _require_py_version = False
    _model_class: type[FrameworkModel]

    def __init__(
        self,
        entry_point: str | None,
        source_dir: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        *,
        framework_version: str | None = None,
        py_version: str | None = None,
        image_uri: str | None = None,
        distribution: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if "algorithm" in kwargs:
            raise TypeError(f"{type(self).__name__} runs a script, not a built-in algorithm: drop algorithm")
        self.framework_version = framework_version
        self.py_version = py_version
        super().__init__(
            image_uri=image_uri,
            entry_point=entry_point,
            source_dir=source_dir,
            hyperparameters=hyperparameters,
            distribution=distribution,
            **kwargs,
        )

    @property
    def framework(self) -> FrameworkSpec:
        return get_framework(self._framework_name)

    def _check_image(self) -> None:
        if self.entry_point is None:
            raise ValueError(
                f"Argument entry_point must be set: the script {type(self).__name__} runs, e.g. "
                "entry_point='train.py'"
            )
        _check_versions(
            self.framework, self.framework_version, self.py_version, self.image_uri, self._require_py_version
        )

    def training_image_uri(self) -> str:
        """``image_uri``, else the framework's training image for ``framework_version`` and
        ``py_version``, GPU for a GPU instance type (``image_uris.retrieve``)."""
        if self.image_uri:
            return self.image_uri
        return self.framework.image_uri(
            full_version(self.framework, self.framework_version),  # type: ignore[arg-type]
            self.py_version,
            gpu=is_gpu_instance(self.instance_type),
            region=region(),
        )

    def _json_hyperparameters(self) -> bool:
        return True

    def create_model(
        self,
        name: str | None = None,
        env: dict[str, str] | None = None,
        *,
        entry_point: str | None = None,
        source_dir: str | None = None,
        dependencies: list[str] | None = None,
        role: str | None = None,
        image_uri: str | None = None,
        model_server_workers: int | None = None,
        predictor_cls: type[Predictor] | None = None,
    ) -> FrameworkModel:
        """The framework's model of the latest training job: its inference image of the same versions
        (or the estimator's ``image_uri``), the training job's entry point and uploaded code unless
        ``entry_point`` / ``source_dir`` are given (``PyTorch.create_model`` in the SageMaker SDK)."""
        extra = {"predictor_cls": predictor_cls} if predictor_cls else {}
        return self._model_class(
            self.model_data,
            role or self.role,
            framework_version=self.framework_version,
            py_version=self.py_version,
            image_uri=image_uri or self.image_uri,
            model_server_workers=model_server_workers,
            name=name or self._job().name,
            env=env,
            session=self.session,
            **self._model_code_args(entry_point, source_dir, dependencies),
            **extra,
        )

    @classmethod
    def _prepare_init_params_from_job_description(cls, desc: dict[str, Any]) -> dict[str, Any]:
        params = super()._prepare_init_params_from_job_description(desc)
        if params.pop("algorithm", None) is not None or "entry_point" not in params:
            raise ValueError(
                f"Training job {desc.get('TrainingJobName')} ran no script (no sagemaker_program): attach "
                "it with raymaker.Estimator.attach"
            )
        framework = get_framework(cls._framework_name)
        image = params.get("image_uri") or ""
        found = framework_of_image(image)
        if found is None or found.name != framework.name:
            raise ValueError(
                f"Training job {desc.get('TrainingJobName')} didn't use image for requested framework "
                f"{framework.name} ({image_repository(image) or image}): attach it with the matching class"
            )
        versions = versions_from_image(framework, image)
        if versions is not None:
            del params["image_uri"]
            params["framework_version"], params["py_version"] = versions
        return params


class PyTorch(Framework):
    """``sagemaker.pytorch.PyTorch``: a PyTorch script; ``distribution={"torch_distributed":
    {"enabled": True}}`` (or ``pytorchddp``) runs one process per instance with torchrun's
    environment."""

    _framework_name = "pytorch"
    _require_py_version = True

    def __init__(
        self,
        entry_point: str | None = None,
        framework_version: str | None = None,
        py_version: str | None = None,
        source_dir: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        image_uri: str | None = None,
        distribution: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        # As the SageMaker SDK: SageMaker metrics time series on for PyTorch 1.3 and later.
        if (
            "enable_sagemaker_metrics" not in kwargs
            and framework_version
            and _at_least(framework_version, (1, 3))
        ):
            kwargs["enable_sagemaker_metrics"] = True
        super().__init__(
            entry_point,
            source_dir,
            hyperparameters,
            framework_version=framework_version,
            py_version=py_version,
            image_uri=image_uri,
            distribution=distribution,
            **kwargs,
        )


class SKLearn(Framework):
    """``sagemaker.sklearn.SKLearn``: a scikit-learn script, on one CPU instance."""

    _framework_name = "sklearn"

    def __init__(
        self,
        entry_point: str | None,
        framework_version: str | None = None,
        py_version: str = "py3",
        source_dir: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        image_uri: str | None = None,
        **kwargs: Any,
    ):
        if kwargs.get("instance_count", 1) != 1:
            raise ValueError(
                "Scikit-Learn does not support distributed training. Please remove the 'instance_count' "
                "argument or set 'instance_count=1' when initializing SKLearn."
            )
        if is_gpu_instance(kwargs.get("instance_type")):
            raise ValueError(
                f"Scikit-Learn has no GPU image: use a CPU instance type, not {kwargs['instance_type']!r}"
            )
        super().__init__(
            entry_point,
            source_dir,
            hyperparameters,
            framework_version=framework_version,
            py_version=py_version,
            image_uri=image_uri,
            **kwargs,
        )


class XGBoost(Framework):
    """``sagemaker.xgboost.XGBoost``: an XGBoost script (framework mode) in SageMaker's XGBoost
    container (the built-in algorithm is ``Estimator("xgboost")``)."""

    _framework_name = "xgboost"

    def __init__(
        self,
        entry_point: str | None,
        framework_version: str | None = None,
        source_dir: str | None = None,
        hyperparameters: dict[str, Any] | None = None,
        py_version: str = "py3",
        image_uri: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            entry_point,
            source_dir,
            hyperparameters,
            framework_version=framework_version,
            py_version=py_version,
            image_uri=image_uri,
            **kwargs,
        )


def _at_least(version: str, minimum: tuple[int, ...]) -> bool:
    parts = []
    for p in version.split("-")[0].split("."):
        if not p.isdigit():
            break
        parts.append(int(p))
    return tuple(parts) >= minimum


# --- predictors ----------------------------------------------------------------------------------


class PyTorchPredictor(Predictor):
    """``sagemaker.pytorch.PyTorchPredictor``: NumPy arrays in and out (``application/x-npy``)."""

    def __init__(
        self,
        endpoint_name: str,
        sagemaker_session: Session | None = None,
        serializer: Any = None,
        deserializer: Any = None,
        *,
        session: Session | None = None,
    ):
        super().__init__(
            endpoint_name,
            sagemaker_session,
            serializer or NumpySerializer(),
            deserializer or NumpyDeserializer(),
            session=session,
        )


class SKLearnPredictor(PyTorchPredictor):
    """``sagemaker.sklearn.SKLearnPredictor``: NumPy arrays in and out (``application/x-npy``)."""


class XGBoostPredictor(Predictor):
    """``sagemaker.xgboost.XGBoostPredictor``: LibSVM in, CSV out."""

    def __init__(
        self,
        endpoint_name: str,
        sagemaker_session: Session | None = None,
        serializer: Any = None,
        deserializer: Any = None,
        *,
        session: Session | None = None,
    ):
        super().__init__(
            endpoint_name,
            sagemaker_session,
            serializer or LibSVMSerializer(),
            deserializer or CSVDeserializer(),
            session=session,
        )


# --- models --------------------------------------------------------------------------------------


class FrameworkModel(Model):
    """A model served by one framework's SageMaker inference container with an inference script
    (``sagemaker.model.FrameworkModel``): its Environment always carries the script's variables."""

    _framework_name: str = ""
    _require_py_version = False

    def __init__(
        self,
        model_data: str,
        role: str | None = None,
        entry_point: str | None = None,
        *,
        framework_version: str | None = None,
        py_version: str | None = None,
        image_uri: str | None = None,
        predictor_cls: type[Predictor] = Predictor,
        model_server_workers: int | None = None,
        **kwargs: Any,
    ):
        if "algorithm" in kwargs:
            raise TypeError(
                f"{type(self).__name__} serves a script, not a built-in algorithm: drop algorithm"
            )
        self.framework_version = framework_version
        self.py_version = py_version
        super().__init__(
            model_data,
            image_uri,
            role,
            entry_point=entry_point,
            predictor_cls=predictor_cls,
            model_server_workers=model_server_workers,
            **kwargs,
        )

    @property
    def framework(self) -> FrameworkSpec:
        return get_framework(self._framework_name)

    def _check_image(self, image_uri: str | None) -> None:
        _check_versions(
            self.framework, self.framework_version, self.py_version, image_uri, self._require_py_version
        )

    def _script_mode(self) -> bool:
        return True

    def serving_image_uri(self, instance_type: str | None = None) -> str:
        """``image_uri``, else the framework's inference image for ``framework_version`` and
        ``py_version``, GPU for a GPU ``instance_type`` (``serving_image_uri`` in the SageMaker SDK)."""
        if self.image_uri:
            return self.image_uri
        return self.framework.image_uri(
            full_version(self.framework, self.framework_version),  # type: ignore[arg-type]
            self.py_version,
            gpu=is_gpu_instance(instance_type),
            inference=True,
            region=region(),
        )


class PyTorchModel(FrameworkModel):
    """``sagemaker.pytorch.PyTorchModel``."""

    _framework_name = "pytorch"
    _require_py_version = True

    def __init__(
        self,
        model_data: str,
        role: str | None = None,
        entry_point: str | None = None,
        framework_version: str | None = None,
        py_version: str | None = None,
        image_uri: str | None = None,
        predictor_cls: type[Predictor] = PyTorchPredictor,
        model_server_workers: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            model_data,
            role,
            entry_point,
            framework_version=framework_version,
            py_version=py_version,
            image_uri=image_uri,
            predictor_cls=predictor_cls,
            model_server_workers=model_server_workers,
            **kwargs,
        )


class SKLearnModel(FrameworkModel):
    """``sagemaker.sklearn.SKLearnModel``."""

    _framework_name = "sklearn"

    def __init__(
        self,
        model_data: str,
        role: str | None = None,
        entry_point: str | None = None,
        framework_version: str | None = None,
        py_version: str = "py3",
        image_uri: str | None = None,
        predictor_cls: type[Predictor] = SKLearnPredictor,
        model_server_workers: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            model_data,
            role,
            entry_point,
            framework_version=framework_version,
            py_version=py_version,
            image_uri=image_uri,
            predictor_cls=predictor_cls,
            model_server_workers=model_server_workers,
            **kwargs,
        )


class XGBoostModel(FrameworkModel):
    """``sagemaker.xgboost.XGBoostModel``."""

    _framework_name = "xgboost"

    def __init__(
        self,
        model_data: str,
        role: str | None = None,
        entry_point: str | None = None,
        framework_version: str | None = None,
        image_uri: str | None = None,
        py_version: str = "py3",
        predictor_cls: type[Predictor] = XGBoostPredictor,
        model_server_workers: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            model_data,
            role,
            entry_point,
            framework_version=framework_version,
            py_version=py_version,
            image_uri=image_uri,
            predictor_cls=predictor_cls,
            model_server_workers=model_server_workers,
            **kwargs,
        )


PyTorch._model_class = PyTorchModel
SKLearn._model_class = SKLearnModel
XGBoost._model_class = XGBoostModel
