"""TF-Serving's REST formats, as documented for its predict, status and metadata APIs.

A predict request names a signature (`serving_default` when absent) and gives its inputs
as `instances` (the row format: a list of {input: value}, or of bare values when the
signature has one input) or as `inputs` (the columnar format: {input: [values]}, or one
list). The answer is `predictions` for the row format (a list of values with one output,
of {output: value} with several) and `outputs` for the columnar one. Everything here is a
pure function of JSON values and the signature's specs, so the formats are tested without
a server; a malformed request raises `BadRequest` naming the field.
"""

import re

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from recjax.errors import RecjaxError


class BadRequest(RecjaxError):
  """A request the server answers with 400 and this message."""


class NotFound(RecjaxError):
  """A model or version the server does not have: 404."""


def _column(name: str, values, spec: tf.TensorSpec, where: str):
  """One input's values as the array its spec takes, or BadRequest naming the bad value."""
  if spec.dtype == tf.float32:
    for i, v in enumerate(values):
      if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BadRequest(f"{where.format(i=i)}: input {name!r} takes numbers, got {v!r}")
    return np.asarray(values, np.float32)
  for i, v in enumerate(values):
    if not isinstance(v, str):
      raise BadRequest(f"{where.format(i=i)}: input {name!r} takes strings, got {v!r}")
  return values             # a list: TF converts it faster than an object array


def _check_names(given, specs, field: str) -> None:
  unknown = sorted(set(given) - set(specs))
  if unknown:
    raise BadRequest(f"{field}: unknown input {unknown[0]!r}; the signature takes "
                     f"{', '.join(sorted(specs))}")
  missing = sorted(set(specs) - set(given))
  if missing:
    raise BadRequest(f"{field}: missing input {missing[0]!r}")


def parse_predict(body, specs: dict[str, tf.TensorSpec], max_rows: int,
                  same_length: bool = True):
  """(columns {input: array}, row_format) of a predict request's body. `same_length`: the
  columnar format's inputs must have one length (False for the rank signature, whose user
  and context inputs have one row and its item inputs N; the model checks those)."""
  if not isinstance(body, dict):
    raise BadRequest("the request body is not a JSON object")
  unknown = sorted(set(body) - {"signature_name", "instances", "inputs"})
  if unknown:
    raise BadRequest(f"unknown field {unknown[0]!r}; a predict request has signature_name "
                     "and instances or inputs")
  if ("instances" in body) == ("inputs" in body):
    raise BadRequest("give exactly one of 'instances' (rows) and 'inputs' (columns)")
  only = next(iter(specs)) if len(specs) == 1 else None
  if "instances" in body:
    rows = body["instances"]
    if not isinstance(rows, list):
      raise BadRequest("'instances' is not a list of rows")
    if len(rows) > max_rows:
      raise BadRequest(f"'instances' has {len(rows)} rows; the limit is {max_rows}")
    if only is not None and not isinstance(rows[0], dict):
      rows = [{only: v} for v in rows]
    for i, row in enumerate(rows):
      if not isinstance(row, dict):
        raise BadRequest(f"instances[{i}] is not an object of inputs")
      _check_names(row, specs, f"instances[{i}]")
    return {name: _column(name, [r[name] for r in rows], spec, "instances[{i}]")
            for name, spec in specs.items()}, True
  inputs = body["inputs"]
  if only is not None and isinstance(inputs, list):
    inputs = {only: inputs}
  if not isinstance(inputs, dict):
    raise BadRequest("'inputs' is not an object of input columns")
  _check_names(inputs, specs, "inputs")
  lengths = set()
  for name, values in inputs.items():
    if not isinstance(values, list):
      values = inputs[name] = [values]        # one scalar: a one-row column
    lengths.add(len(values))
  if same_length and len(lengths) != 1:
    raise BadRequest(f"inputs: the columns differ in length ({sorted(lengths)})")
  if 0 in lengths and max(lengths) > 0:
    raise BadRequest(f"inputs: some columns are empty and others not ({sorted(lengths)})")
  if max(lengths) > max_rows:
    raise BadRequest(f"inputs: more than {max_rows} rows")
  return {name: _column(name, inputs[name], spec, f"inputs.{name}[{{i}}]")
          for name, spec in specs.items()}, False


def call(function, columns: dict) -> dict[str, np.ndarray]:
  """Calls a signature (`session_model.Signature`) on a request's columns. A value the
  model's transforms reject (their InvalidArgumentError names the column) is the request's
  fault: a BadRequest."""
  try:
    return function(**columns)
  except tf.errors.InvalidArgumentError as e:
    found = re.search(r"assertion failed: \[(.*?)\] \[", e.message or "")
    raise BadRequest(found.group(1).replace("\\'", "'") if found
                     else (e.message or str(e)).strip().replace("\n", " ")[:500]) from None


def format_predict(outputs: dict[str, np.ndarray], row_format: bool) -> dict:
  """The answer to a predict request: `predictions` (rows) or `outputs` (columns)."""
  values = {name: np.asarray(v).tolist() for name, v in outputs.items()}
  if not row_format:
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
  if len(values) == 1:
    return {"predictions": next(iter(values.values()))}
  names = list(values)
  return {"predictions": [dict(zip(names, row)) for row in zip(*values.values())]}


def _tensor_info(spec, name: str) -> dict:
  dims = [{"size": str(-1 if d is None else d), "name": ""} for d in spec.shape.as_list()]
  return {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum),     # "DT_FLOAT"
          "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}


def metadata(name: str, loaded) -> dict:
  """GET /v1/models/<name>/metadata: the model spec and each signature's inputs/outputs."""
  defs = {}
  for signature in loaded.signatures:
    defs[signature] = {
        "inputs": {k: _tensor_info(s, f"{signature}_{k}:0")
                   for k, s in loaded.inputs(signature).items()},
        "outputs": {k: _tensor_info(s, k) for k, s in loaded.outputs(signature).items()},
        "method_name": "tensorflow/serving/predict"}
  return {"model_spec": {"name": name, "signature_name": "", "version": str(loaded.version)},
          "metadata": {"signature_def": {"signature_def": defs}}}
