"""Building blocks shared by models: MLP, and the feature-interaction layers of the ranking zoo.

Each layer is the operator of one paper, written once so that models differ only in how they
wire them. Field inputs are pooled embeddings [B, F, D]; flat inputs are [B, N]. Index sets
(pairs i < j) are numpy constants, so the layers convert with jax2tf under a symbolic batch.
"""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class MLP(nn.Module):
  """Dense layers with ReLU between them; the last layer is linear when `linear_out`."""
  features: Sequence[int]
  linear_out: bool = False

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.features):
      x = nn.Dense(width, name=f"dense_{i}")(x)
      if not (self.linear_out and i == len(self.features) - 1):
        x = nn.relu(x)
    return x


class FM(nn.Module):
  """Second-order factorization machine over field embeddings [B, F, D] -> [B]:
  sum over pairs i < j of <v_i, v_j>, computed as 0.5 * ((sum v)^2 - sum v^2)."""

  @nn.compact
  def __call__(self, embeddings):
    square_of_sum = jnp.square(jnp.sum(embeddings, 1))
    sum_of_square = jnp.sum(jnp.square(embeddings), 1)
    return 0.5 * jnp.sum(square_of_sum - sum_of_square, -1)


class NumericFields(nn.Module):
  """Numeric features as fields: x_m -> x_m v_m, one learned [D] vector per feature
  ([B, N] -> [B, N, D]); how FM (Rendle 2010) and AutoInt put real values beside ids."""
  dim: int

  @nn.compact
  def __call__(self, dense):
    v = self.param("embedding", nn.initializers.normal(0.05), (dense.shape[-1], self.dim))
    return dense[:, :, None] * v


class FirstOrder(nn.Module):
  """The linear part of LR, FM, xDeepFM and FiBiNET: the sum of 1-dim id weights [B, F, 1]
  plus a linear map (with the global bias) of the numeric features [B, N], -> [B]."""

  @nn.compact
  def __call__(self, weights, dense):
    if weights.shape[-1] != 1:
      raise ValueError(f"a first-order group must have dim 1, got dim {weights.shape[-1]}")
    return jnp.sum(weights, (1, 2)) + linear(self, dense, "dense")


def linear(module: nn.Module, dense, name: str):
  """w.x + b of the numeric features [B, N] -> [B], a Dense layer `name` of `module`; with no
  numeric features (N = 0) only the bias b, a param `name`_bias (Orbax cannot save a [0, 1]
  kernel, and lecun-normal divides by the fan-in)."""
  if dense.shape[-1]:
    return nn.Dense(1, name=name, parent=module)(dense)[:, 0]
  return jnp.broadcast_to(module.param(f"{name}_bias", nn.initializers.zeros, (1,)),
                          dense.shape[:1])


def flatten(x):
  """[B, ...] -> [B, N], with the batch dimension left symbolic for export."""
  return x.reshape(x.shape[0], -1)


def _pairs(num_fields: int) -> tuple[np.ndarray, np.ndarray]:
  return np.triu_indices(num_fields, k=1)


class DotInteraction(nn.Module):
  """DLRM's interaction: the dot products of all pairs i < j of F vectors, [B, F, D] ->
  [B, F(F-1)/2] (self-products excluded, as the reference code's default)."""

  @nn.compact
  def __call__(self, x):
    i, j = _pairs(x.shape[1])
    return jnp.einsum("bpd,bpd->bp", x[:, i], x[:, j])


class CrossNet(nn.Module):
  """DCN's cross network (Wang et al. 2017): x_{l+1} = x_0 (x_l . w_l) + b_l + x_l, [B, N]."""
  num_layers: int

  @nn.compact
  def __call__(self, x0):
    x = x0
    for i in range(self.num_layers):
      xw = nn.Dense(1, use_bias=False, name=f"w_{i}")(x)                     # [B, 1]
      b = self.param(f"b_{i}", nn.initializers.zeros, (x0.shape[-1],))
      x = x0 * xw + b + x
    return x


class CrossNetV2(nn.Module):
  """DCN-V2's cross network (Wang et al. 2021): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

  `low_rank` r > 0 factors W_l = U_l V_l^T (r << N). With `num_experts` > 1 as well it is
  the paper's DCN-Mix: a softmax gate over experts x_0 * (U g(C g(V^T x_l)) + b), g = tanh.
  """
  num_layers: int
  low_rank: int = 0
  num_experts: int = 1

  @nn.compact
  def __call__(self, x0):
    n = x0.shape[-1]
    x = x0
    for i in range(self.num_layers):
      if self.num_experts > 1:
        if not self.low_rank:
          raise ValueError("num_experts > 1 (DCN-Mix) needs low_rank > 0")
        experts, gates = [], []
        for e in range(self.num_experts):
          h = jnp.tanh(nn.Dense(self.low_rank, use_bias=False, name=f"v_{i}_{e}")(x))
          h = jnp.tanh(nn.Dense(self.low_rank, use_bias=False, name=f"c_{i}_{e}")(h))
          experts.append(x0 * nn.Dense(n, name=f"u_{i}_{e}")(h))
          gates.append(nn.Dense(1, use_bias=False, name=f"gate_{i}_{e}")(x))
        weights = jax.nn.softmax(jnp.concatenate(gates, -1), -1)              # [B, E]
        x = jnp.einsum("be,ben->bn", weights, jnp.stack(experts, 1)) + x
      elif self.low_rank:
        h = nn.Dense(self.low_rank, use_bias=False, name=f"v_{i}")(x)
        x = x0 * nn.Dense(n, name=f"u_{i}")(h) + x
      else:
        x = x0 * nn.Dense(n, name=f"w_{i}")(x) + x
    return x


class CIN(nn.Module):
  """xDeepFM's compressed interaction network (Lian et al. 2018), [B, F, D] -> [B, sum(maps)].

  Layer k: X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j) + b_h, with no activation (the
  paper's eq. 6; its code's default identity). Each layer's maps are sum-pooled over D. With
  `split_half`, half of a hidden layer's maps feed the next layer and half the output.
  """
  layer_sizes: Sequence[int]
  split_half: bool = True

  @nn.compact
  def __call__(self, x0):
    x, pooled = x0, []
    for k, size in enumerate(self.layer_sizes):
      last = k == len(self.layer_sizes) - 1
      if self.split_half and not last and size % 2:
        raise ValueError(f"CIN layer size {size} must be even with split_half")
      w = self.param(f"w_{k}", nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2),
                     (x.shape[1], x0.shape[1], size))
      b = self.param(f"b_{k}", nn.initializers.zeros, (size,))
      maps = jnp.einsum("bhd,bmd,hms->bsd", x, x0, w) + b[:, None]
      if self.split_half and not last:
        x, out = maps[:, : size // 2], maps[:, size // 2:]
      else:
        x, out = maps, maps
      pooled.append(jnp.sum(out, -1))
    return jnp.concatenate(pooled, -1)


class FieldSelfAttention(nn.Module):
  """AutoInt's interacting layer (Song et al. 2019): multi-head self-attention over fields,
  [B, F, D] -> [B, F, heads * head_dim]. Scores are plain inner products (the paper's eq. 5,
  no scaling); a projected residual is added before the ReLU."""
  num_heads: int = 2
  head_dim: int = 16
  residual: bool = True

  @nn.compact
  def __call__(self, x):
    shape = (self.num_heads, self.head_dim)
    q, k, v = (nn.DenseGeneral(shape, use_bias=False, name=n)(x) for n in ("query", "key", "value"))
    weights = jax.nn.softmax(jnp.einsum("bfhd,bghd->bhfg", q, k), -1)
    out = jnp.einsum("bhfg,bghd->bfhd", weights, v)
    if self.residual:
      out = out + nn.DenseGeneral(shape, use_bias=False, name="residual")(x)
    return nn.relu(out.reshape(out.shape[:2] + (-1,)))


class SENet(nn.Module):
  """FiBiNET's squeeze-excitation over fields (Huang et al. 2019), [B, F, D] -> [B, F, D]:
  z_i = mean(v_i), a = ReLU(W_2 ReLU(W_1 z)) with F / reduction_ratio hidden units, v_i a_i."""
  reduction_ratio: float = 3.0

  @nn.compact
  def __call__(self, x):
    fields = x.shape[1]
    z = jnp.mean(x, -1)
    a = nn.relu(nn.Dense(max(1, int(fields / self.reduction_ratio)), use_bias=False,
                         name="squeeze")(z))
    a = nn.relu(nn.Dense(fields, use_bias=False, name="excite")(a))
    return x * a[:, :, None]


class Bilinear(nn.Module):
  """FiBiNET's bilinear interaction: p_ij = (v_i W) * v_j for pairs i < j, [B, F, D] ->
  [B, F(F-1)/2, D]. `field_type`: "all" (one W), "each" (W_i per field), "interaction"
  (W_ij per pair)."""
  field_type: str = "all"

  @nn.compact
  def __call__(self, x):
    fields, dim = x.shape[1], x.shape[2]
    i, j = _pairs(fields)
    init = nn.initializers.lecun_normal()
    if self.field_type == "all":
      left = (x @ self.param("kernel", init, (dim, dim)))[:, i]
    elif self.field_type == "each":
      w = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)), (fields, dim, dim))
      left = jnp.einsum("bfd,fde->bfe", x, w)[:, i]
    elif self.field_type == "interaction":
      w = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)), (len(i), dim, dim))
      left = jnp.einsum("bpd,pde->bpe", x[:, i], w)
    else:
      raise ValueError(f"field_type {self.field_type!r}; valid: all, each, interaction")
    return left * x[:, j]


class MaskBlock(nn.Module):
  """MaskNet's MaskBlock (Wang et al. 2021): out = ReLU(LN(W (mask * x))), where the
  instance-guided mask = W_2 ReLU(W_1 v_emb + b_1) + b_2 is computed from the whole flat
  embedding v_emb, its first layer `aggregation_ratio` times as wide as v_emb."""
  features: int
  aggregation_ratio: float = 2.0

  @nn.compact
  def __call__(self, v_emb, x):
    width = max(1, int(v_emb.shape[-1] * self.aggregation_ratio))
    mask = nn.relu(nn.Dense(width, name="mask_aggregation")(v_emb))
    mask = nn.Dense(x.shape[-1], name="mask_projection")(mask)
    hidden = nn.Dense(self.features, use_bias=False, name="hidden")(mask * x)
    return nn.relu(nn.LayerNorm(name="layer_norm")(hidden))
