"""The SavedModel takes raw columns and gives JAX's probabilities, reloaded in a fresh process."""

import json
import pathlib
import subprocess
import sys

import numpy as np

from tests.conftest import ADULT_CONFIG, ROOT, run_cli

COLUMNS = ("age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
           "occupation", "relationship", "race", "gender", "capital_gain", "capital_loss",
           "hours_per_week", "native_country")
NUMERIC = {"age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"}

# Runs in a fresh interpreter: only TensorFlow and the raw rows, no recjax, no JAX.
SERVE = """
import csv, gzip, json, sys
import numpy as np
import tensorflow as tf
model_dir, data, out = sys.argv[1:]
columns, numeric = json.load(open(out + '.spec'))
with gzip.open(data, 'rt') as f:
    rows = [[v.strip() for v in r] for r in csv.reader(f) if r]
def feed(rows):
    return {c: tf.constant([float(r[i]) for r in rows], tf.float32) if c in numeric
            else tf.constant([r[i] for r in rows]) for i, c in enumerate(columns)}
serve = tf.saved_model.load(model_dir).signatures['serving_default']
probs = serve(**feed(rows))['probability'].numpy()
one = serve(**feed(rows[:1]))['probability'].numpy()
seven = serve(**feed(rows[5:12]))['probability'].numpy()
np.savez(out, all=probs, one=one, seven=seven)
"""


def test_saved_model_in_a_fresh_process_matches_jax_on_the_raw_test_rows(adult_run, tmp_path):
  workdir, summary = adult_run
  model_dir = pathlib.Path(summary["saved_model"])
  test_file = ROOT / "data" / "adult" / "adult.test.gz"
  predictions = tmp_path / "jax.csv"
  run_cli("predict", "--config", f"{ADULT_CONFIG}:smoke", "--workdir", workdir,
          "--input", test_file, "--output", predictions)
  jax_probs = np.loadtxt(predictions, skiprows=1)
  assert jax_probs.shape == (16281,)

  out = tmp_path / "tf.npz"
  (tmp_path / "tf.npz.spec").write_text(json.dumps([COLUMNS, sorted(NUMERIC)]))
  subprocess.run([sys.executable, "-c", SERVE, str(model_dir), str(test_file), str(out)],
                 check=True, capture_output=True, timeout=300)
  tf_probs = np.load(out)
  max_difference = np.max(np.abs(tf_probs["all"] - jax_probs))
  print(f"max |TF - JAX| over {len(jax_probs)} rows: {max_difference:.3g}")
  assert max_difference <= 1e-5
  np.testing.assert_allclose(tf_probs["one"], jax_probs[:1], atol=1e-5)
  np.testing.assert_allclose(tf_probs["seven"], jax_probs[5:12], atol=1e-5)
  # and the model is a real one: the probabilities are spread, not constant
  assert jax_probs.std() > 0.1


def test_saved_model_cli_lists_one_named_input_per_raw_column_with_dynamic_batch(adult_run):
  _, summary = adult_run
  cli = pathlib.Path(sys.executable).parent / "saved_model_cli"
  shown = subprocess.run([str(cli), "show", "--dir", summary["saved_model"], "--tag_set", "serve",
                          "--signature_def", "serving_default"],
                         check=True, capture_output=True, text=True, timeout=120).stdout
  inputs = shown.split("outputs")[0]
  for column in COLUMNS:
    dtype = "DT_FLOAT" if column in NUMERIC else "DT_STRING"
    assert f"inputs['{column}'] tensor_info:\n      dtype: {dtype}\n      shape: (-1)" in inputs, shown
  assert "income_bracket" not in inputs          # the label is not a serving input
  assert inputs.count("tensor_info") == len(COLUMNS)
  assert "outputs['probability'] tensor_info:\n      dtype: DT_FLOAT\n      shape: (-1)" in shown
