"""SageMaker's training toolkit contract, run on raymaker's instances: a user's script (script mode)
gets the ``/opt/ml`` tree, the ``SM_*`` environment and its hyperparameters as arguments exactly as the
sagemaker-training-toolkit gives them, so a script written for SageMaker cannot tell the difference.
Custom containers (a later payload) get the same tree bind-mounted."""
