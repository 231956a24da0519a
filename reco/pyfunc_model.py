"""The code MLflow logs with every registered version and runs to make its model ("models from
code", :func:`reco.registry.register`): a :class:`~reco.registry.RecoModel`, which then loads
the version's checkpoint from its artifacts. Run by MLflow only; importing it elsewhere would
set MLflow's current model.
"""

from mlflow.models import set_model

from reco.registry import RecoModel

set_model(RecoModel())
