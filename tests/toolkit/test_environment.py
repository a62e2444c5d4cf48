"""What a SageMaker script reads before it starts: hyperparameters decoded and turned into arguments,
the config files, and every SM_* variable, as the sagemaker-training-toolkit produces them."""

from __future__ import annotations

import json
import os

import pytest

from raymaker.io.channels import Channel
from raymaker.toolkit.environment import (
    decode_hyperparameters,
    framework_params,
    input_data_config,
    resource_config,
    to_cmd_args,
    to_env_vars,
    training_env,
    write_config,
)
from raymaker.toolkit.paths import MLTree

# What the v2 SDK sends for PyTorch(entry_point="train.py", source_dir=..., hyperparameters={...}):
# every value JSON-encoded, so strings arrive quoted.
V2_REQUEST_HPS = {
    "epochs": "3",
    "lr": "0.1",
    "optimizer": '"adam"',
    "learning-rate": "0.01",
    "use-cuda": "false",
    "layers": "[64, 32]",
    "sagemaker_program": '"train.py"',
    "sagemaker_submit_directory": '"s3://bucket/job/source/sourcedir.tar.gz"',
    "sagemaker_container_log_level": "20",
    "sagemaker_region": '"us-east-1"',
    "sagemaker_job_name": '"job-1"',
    "sagemaker_torch_distributed_enabled": "true",
    "_tuning_objective_metric": '"validation:loss"',
}

CHANNELS = (
    Channel(name="train", s3_uri="s3://bucket/train/", content_type="text/csv"),
    Channel(name="validation", s3_uri="s3://bucket/validation/", input_mode="FastFile",
            distribution="ShardedByS3Key"),
)

# SM_TRAINING_ENV's keys: every property of the toolkit's Environment (sagemaker-contract.md 2.7).
TRAINING_ENV_KEYS = {
    "additional_framework_parameters", "channel_input_dirs", "current_host", "current_instance_group",
    "current_instance_group_hosts", "current_instance_type", "distribution_hosts",
    "distribution_instance_groups", "framework_module", "hosts", "hyperparameters", "input_config_dir",
    "input_data_config", "input_dir", "instance_groups", "instance_groups_dict", "is_hetero", "is_master",
    "is_modelparallel_enabled", "is_smddpmprun_installed", "is_smddprun_installed", "job_name",
    "log_level", "master_hostname", "model_dir", "module_dir", "module_name", "network_interface_name",
    "num_cpus", "num_gpus", "num_neurons", "output_data_dir", "output_dir", "output_intermediate_dir",
    "resource_config", "topology", "user_entry_point",
}


def test_hyperparameters_decode_as_json_else_raw_and_split_off_sagemakers():
    user, sagemaker = decode_hyperparameters({**V2_REQUEST_HPS, "raw": "adam", "empty": ""})
    assert user == {
        "epochs": 3, "lr": 0.1, "optimizer": "adam", "learning-rate": 0.01, "use-cuda": False,
        "layers": [64, 32], "raw": "adam", "empty": "",
    }
    assert sagemaker["sagemaker_program"] == "train.py"
    assert sagemaker["_tuning_objective_metric"] == "validation:loss"
    assert set(sagemaker) == {k for k in V2_REQUEST_HPS if k.startswith(("sagemaker_", "_tuning"))}
    # SM_FRAMEWORK_PARAMS: the sagemaker_ keys the toolkit does not consume itself.
    assert framework_params(sagemaker) == {"sagemaker_torch_distributed_enabled": True}


@pytest.mark.parametrize(
    "hps, expected",
    [
        ({"da-sh": "1", "un_der": "2", "un-sh": "3", "da_der": "2"},
         ["--da-sh", "1", "--da_der", "2", "--un-sh", "3", "--un_der", "2"]),
        ({}, []),
        ({"U": "1", "b": b"2", "T": "", "": "42"}, ["", "42", "-T", "", "-U", "1", "-b", "2"]),
        ({"floats": 4.0, "int": 2, "unicode": "¡ø"}, ["--floats", "4.0", "--int", "2", "--unicode", "¡ø"]),
        ({"truthy": True, "falsy": False, "none": None}, ["--falsy", "False", "--none", "", "--truthy", "True"]),
        ({"nested": ["1", ["2", [3]]]}, ["--nested", "['1', ['2', [3]]]"]),
        ({"map": {"b": [1, 3], "a": "x"}}, ["--map", "a=x,b=[1, 3]"]),
    ],
)
def test_cmd_args_are_the_toolkits(hps, expected):
    assert to_cmd_args(hps) == expected


def test_env_vars_are_the_toolkits():
    assert to_env_vars({"model_dir": "/m", "hp_learning-rate": 0.01, "none": None, "b": b"\xe9",
                        "d": {"z": 1, "a": [1, "x"]}, "t": True}) == {
        "SM_MODEL_DIR": "/m",
        "SM_HP_LEARNING-RATE": "0.01",
        "SM_NONE": "",
        "SM_B": "é",
        "SM_D": '{"a":[1,"x"],"z":1}',
        "SM_T": "true",
    }


def test_config_files(tmp_path):
    tree = MLTree(str(tmp_path / "ml")).make()
    write_config(
        tree,
        hyperparameters=V2_REQUEST_HPS,
        input_data_config=input_data_config(CHANNELS),
        resource_config=resource_config("algo-2", ["algo-1", "algo-2"], "ml.m5.xlarge"),
        checkpoint_config={"S3Uri": "s3://bucket/ckpt"},
    )

    def read(name: str) -> dict:
        with open(os.path.join(tree.root, "input", "config", f"{name}.json")) as f:
            return json.load(f)

    assert read("hyperparameters") == V2_REQUEST_HPS  # verbatim strings, not decoded
    assert read("inputdataconfig") == {
        "train": {"ContentType": "text/csv", "TrainingInputMode": "File",
                  "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"},
        "validation": {"TrainingInputMode": "FastFile", "S3DistributionType": "ShardedByS3Key",
                       "RecordWrapperType": "None"},
    }
    assert read("resourceconfig") == {
        "current_host": "algo-2",
        "current_instance_type": "ml.m5.xlarge",
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-1", "algo-2"],
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge",
                             "hosts": ["algo-1", "algo-2"]}],
        "network_interface_name": "eth0",
    }
    # LocalPath is where the checkpoints are in this tree (the request's /opt/ml path mapped into it).
    assert read("checkpointconfig") == {"S3Uri": "s3://bucket/ckpt", "LocalPath": tree.checkpoint_dir}


def test_no_checkpoint_config_without_checkpoint(tmp_path):
    tree = MLTree(str(tmp_path)).make()
    write_config(tree, hyperparameters={}, input_data_config={},
                 resource_config=resource_config("algo-1", ["algo-1"], "ml.m5.large"))
    assert not os.path.exists(tree.config_file("checkpointconfig"))


def test_resource_config_refuses_a_host_not_in_hosts():
    with pytest.raises(ValueError, match="algo-3"):
        resource_config("algo-3", ["algo-1", "algo-2"], "ml.m5.large")


def env_for(tree: MLTree, **overrides) -> dict[str, str]:
    kwargs = dict(
        job_name="job-1", job_arn="arn:aws:sagemaker:us-east-1:123456789012:training-job/job-1",
        hyperparameters=V2_REQUEST_HPS, channels=CHANNELS, current_host="algo-2",
        hosts=["algo-1", "algo-2"], instance_type="ml.m5.xlarge", num_cpus=3, num_gpus=0,
    )
    kwargs.update(overrides)
    return training_env(tree, **kwargs)


def test_training_env_has_every_toolkit_variable_with_the_trees_paths(tmp_path):
    tree = MLTree(str(tmp_path / "ml"))
    env = env_for(tree)
    root = tree.root
    expected = {
        "SM_MODEL_DIR": f"{root}/model",
        "SM_CHANNELS": '["train","validation"]',
        "SM_CHANNEL_TRAIN": f"{root}/input/data/train",
        "SM_CHANNEL_VALIDATION": f"{root}/input/data/validation",
        "SM_HP_EPOCHS": "3",
        "SM_HP_LR": "0.1",
        "SM_HP_OPTIMIZER": "adam",
        "SM_HP_LEARNING-RATE": "0.01",
        "SM_HP_USE-CUDA": "false",
        "SM_HP_LAYERS": "[64,32]",
        "SM_HOSTS": '["algo-1","algo-2"]',
        "SM_CURRENT_HOST": "algo-2",
        "SM_CURRENT_INSTANCE_TYPE": "ml.m5.xlarge",
        "SM_CURRENT_INSTANCE_GROUP": "homogeneousCluster",
        "SM_CURRENT_INSTANCE_GROUP_HOSTS": '["algo-1","algo-2"]',
        "SM_INSTANCE_GROUPS": '["homogeneousCluster"]',
        "SM_IS_HETERO": "false",
        "SM_NUM_CPUS": "3",
        "SM_NUM_GPUS": "0",
        "SM_NUM_NEURONS": "0",
        "SM_NETWORK_INTERFACE_NAME": "eth0",
        "SM_OUTPUT_DATA_DIR": f"{root}/output/data",
        "SM_OUTPUT_DIR": f"{root}/output",
        "SM_OUTPUT_INTERMEDIATE_DIR": f"{root}/output/intermediate",
        "SM_INPUT_DIR": f"{root}/input",
        "SM_INPUT_CONFIG_DIR": f"{root}/input/config",
        "SM_USER_ENTRY_POINT": "train.py",
        "SM_MODULE_NAME": "train",
        "SM_MODULE_DIR": "s3://bucket/job/source/sourcedir.tar.gz",
        "SM_FRAMEWORK_MODULE": "",
        "SM_FRAMEWORK_PARAMS": '{"sagemaker_torch_distributed_enabled":true}',
        "SM_LOG_LEVEL": "20",
        "SM_USER_ARGS": json.dumps(["--epochs", "3", "--layers", "[64, 32]", "--learning-rate", "0.01",
                                    "--lr", "0.1", "--optimizer", "adam", "--use-cuda", "False"],
                                   separators=(",", ":")),
        "TRAINING_JOB_NAME": "job-1",
        "TRAINING_JOB_ARN": "arn:aws:sagemaker:us-east-1:123456789012:training-job/job-1",
        "SAGEMAKER_BASE_DIR": root,
        "CURRENT_HOST": "algo-2",
        "SAGEMAKER_JOB_NAME": "job-1",
        "SAGEMAKER_REGION": "us-east-1",
        "SM_INPUT_TRAINING_CONFIG_FILE": f"{root}/input/config/hyperparameters.json",
        "SM_INPUT_DATA_CONFIG_FILE": f"{root}/input/config/inputdataconfig.json",
        "SM_CHECKPOINT_CONFIG_FILE": f"{root}/input/config/checkpointconfig.json",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert not any(k.startswith("SM_HP_SAGEMAKER") or k == "SM_HP__TUNING_OBJECTIVE_METRIC" for k in env)
    assert json.loads(env["SM_HPS"]) == {"epochs": 3, "lr": 0.1, "optimizer": "adam", "learning-rate": 0.01,
                                         "use-cuda": False, "layers": [64, 32]}
    assert json.loads(env["SM_RESOURCE_CONFIG"]) == resource_config("algo-2", ["algo-1", "algo-2"], "ml.m5.xlarge")
    assert json.loads(env["SM_INPUT_DATA_CONFIG"]) == input_data_config(CHANNELS)
    assert json.loads(env["SM_INSTANCE_GROUPS_DICT"]) == {
        "homogeneousCluster": {"instance_group_name": "homogeneousCluster", "instance_type": "ml.m5.xlarge",
                               "hosts": ["algo-1", "algo-2"]}}
    # torch_distributed puts this group among the distribution groups; algo-1 is the master.
    assert json.loads(env["SM_DISTRIBUTION_INSTANCE_GROUPS"]) == ["homogeneousCluster"]

    training = json.loads(env["SM_TRAINING_ENV"])
    assert set(training) == TRAINING_ENV_KEYS
    assert training["channel_input_dirs"] == {"train": f"{root}/input/data/train",
                                              "validation": f"{root}/input/data/validation"}
    assert training["master_hostname"] == "algo-1" and training["is_master"] is False
    assert training["distribution_hosts"] == ["algo-1", "algo-2"]
    assert training["job_name"] == "job-1" and training["num_cpus"] == 3
    assert training["hyperparameters"]["layers"] == [64, 32]
    assert training["is_modelparallel_enabled"] is None  # the toolkit's value without SM_HP_MP_PARAMETERS
    # Every value is a string, as os.environ needs.
    assert all(isinstance(v, str) for v in env.values())


def test_without_distribution_no_distribution_groups_and_master_is_first_host(tmp_path):
    hps = {k: v for k, v in V2_REQUEST_HPS.items() if k != "sagemaker_torch_distributed_enabled"}
    env = env_for(MLTree(str(tmp_path)), hyperparameters=hps, current_host="algo-1")
    training = json.loads(env["SM_TRAINING_ENV"])
    assert env["SM_DISTRIBUTION_INSTANCE_GROUPS"] == "[]"
    assert training["distribution_hosts"] == []
    assert training["master_hostname"] == "algo-1" and training["is_master"] is True
    assert env["SM_FRAMEWORK_PARAMS"] == "{}"


def test_request_environment_adds_variables_but_the_toolkits_win(tmp_path):
    tree = MLTree(str(tmp_path))
    env = env_for(tree, environment={"MY_FLAG": "1", "SM_MODEL_DIR": "/elsewhere",
                                     "SM_INPUT_DATA_CONFIG_FILE": "/custom.json", "TRAINING_JOB_NAME": "x"})
    assert env["MY_FLAG"] == "1"
    assert env["SM_MODEL_DIR"] == tree.model_dir  # the toolkit writes its SM_* over the container's
    assert env["SM_INPUT_DATA_CONFIG_FILE"] == "/custom.json"  # an image default: the request's wins
    assert env["TRAINING_JOB_NAME"] == "x"


def test_v3_model_trainer_raw_strings_and_entry_point_override(tmp_path):
    # ModelTrainer sends strings raw ("adam", not "\"adam\""); both read the same.
    env = env_for(MLTree(str(tmp_path)), hyperparameters={"optimizer": "adam", "sagemaker_program": "a.py"},
                  entry_point="sub/b.py")
    assert env["SM_HP_OPTIMIZER"] == "adam"
    assert env["SM_USER_ENTRY_POINT"] == "sub/b.py" and env["SM_MODULE_NAME"] == "sub/b"
    assert env["SM_MODULE_DIR"] == os.path.join(str(tmp_path), "code")  # no submit directory: the code dir
