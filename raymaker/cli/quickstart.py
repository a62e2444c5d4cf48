"""``raymaker quickstart``: the README's main job. Local mode end to end, no cloud account, no server:
scikit-learn's bundled breast cancer data -> CSV channels on local disk -> a built-in XGBoost training
job on the local Ray instance -> metrics, billable seconds and the model's location."""

from __future__ import annotations

import argparse
import os

import numpy as np

from raymaker.cli.common import ALGORITHM, Subparsers, get_session
from raymaker.protocol.environment import raymaker_home
from raymaker.sdk import Estimator, Session, TrainingInput

# The algorithms the quickstart has hyperparameters for (run_quickstart).
QUICKSTART_ALGORITHM = ALGORITHM.but(
    default="xgboost", choices=["xgboost", "linear-learner"], help="xgboost (default) or linear-learner"
)


def write_dataset(directory: str, seed: int = 0) -> tuple[str, str]:
    """Breast cancer as SageMaker CSV (label first, no header), split 75/25 into train/ and validation/."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    paths = []
    for name, xs, ys in (("train", x_train, y_train), ("validation", x_val, y_val)):
        folder = os.path.join(directory, name)
        os.makedirs(folder, exist_ok=True)
        np.savetxt(os.path.join(folder, f"{name}.csv"), np.column_stack([ys, xs]), delimiter=",", fmt="%.7g")
        paths.append(folder)
    return paths[0], paths[1]


def run_quickstart(algorithm: str = "xgboost", session: Session | None = None) -> int:
    data_dir = os.path.join(str(raymaker_home()), "quickstart-data")
    train, validation = write_dataset(data_dir)
    print(f"data: scikit-learn breast cancer, CSV channels under {data_dir}")
    hyperparameters = {
        "xgboost": {"objective": "binary:logistic", "num_round": 50, "eval_metric": "auc", "max_depth": 4},
        "linear-learner": {"predictor_type": "binary_classifier", "epochs": 10},
    }[algorithm]
    est = Estimator(algorithm, hyperparameters=hyperparameters, instance_type="local", session=session)
    est.fit(
        {
            "train": TrainingInput(train, content_type="text/csv"),
            "validation": TrainingInput(validation, content_type="text/csv"),
        }
    )
    desc = est.latest_training_job.describe()
    print()
    print(f"training job:     {desc['TrainingJobName']} ({desc['TrainingJobStatus']})")
    for m in desc.get("FinalMetricDataList") or []:
        print(f"{m['MetricName'] + ':':<17} {m['Value']:.4f}")
    print(f"billable seconds: {desc.get('BillableTimeInSeconds')}")
    print(f"model:            {est.model_data}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    return run_quickstart(args.algorithm, get_session(args))


def add_commands(sub: Subparsers) -> None:
    p = sub.add_parser("quickstart", help="train XGBoost on a small real dataset in local mode")
    QUICKSTART_ALGORITHM.add(p)
    p.set_defaults(func=cmd_quickstart)
