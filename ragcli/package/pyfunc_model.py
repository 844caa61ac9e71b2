"""The code file of a packaged model (MLflow's models-from-code): MLflow executes it when the model
is loaded, with the package's own copy of ragcli on the path. ragcli itself never imports it.

It adapts MLflow's `PythonModel` calls to `ragcli.package.runtime.PackagedPipeline`: the artifacts
and recorded settings become the pipeline in `load_context`; `predict` answers every input row; an
input the model cannot answer is an MLflow INVALID_PARAMETER_VALUE (a 400 from a scoring server).
"""

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


class RagcliModel(PythonModel):
    def load_context(self, context):
        from ragcli.package.runtime import PackagedPipeline, packaged_settings

        config = context.model_config or {}
        settings = packaged_settings(config.get("settings") or {}, context.artifacts["models"],
                                     context.artifacts.get("index"))
        self.pipeline = PackagedPipeline(settings)

    def predict(self, context, model_input, params=None):
        from ragcli.package.runtime import BadInput

        try:
            return self.pipeline.predict(model_input)
        except BadInput as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(RagcliModel())
