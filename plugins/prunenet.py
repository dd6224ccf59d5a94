"""PruneNet (Sengupta, Chaudhary & Chakraborty, ICLR 2025, arXiv 2501.15296): calibration-free
FFN-channel pruning with a learned policy, trained as the authors train it
(github.com/LCS2-IIITD/PruneNet, ``prunenet/prunenet.py``).

The policy sees the first FFN matrix W (n × d: ``gate_proj`` here, ``fc1`` in OPT) of a
layer and gives every row i a keep probability α_i = σ(Σ_j (W_i · A_j + b_j) s_j), with
A, b a d → n linear map and s an n-vector of row scores (so one policy fits every layer of
a model, not another model). Sampling adds logistic noise: the row weights are
p_i = σ(logit u_i + logit α_i), u ~ U(0, 1), and rows are drawn in proportion to p without
replacement (``torch.multinomial``; here the equivalent Gumbel top-k in log space).

Training is REINFORCE over episodes. An episode visits every layer in order, keeps
int((1 − r_train)·n) sampled rows of each, and rewards layer i with 1/KS, the inverse
two-sample Kolmogorov–Smirnov distance between the singular values of W and of the kept
rows of W, discounted by γ^i. Then, layer by layer, the loss −R_i · Σ_{kept} log p_i (p
drawn afresh) takes one AdamW step. The policy after the episode with the highest total
reward is kept. At pruning time each layer's rows are sampled the same way with the
study's seed; one policy, learned once per model, serves every ratio.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from lawlab_plugins.random_prunenet import ChannelParams, FFNChannelPruner
from pydantic import Field

from lawlab import hookimpl
from lawlab.api import LoadedModel, Params, RunContext

POLICY_VERSION = 2  # bump when training changes, so cached policies are not reused
WEIGHT_DECAY = 0.01  # AdamW's default, as in the authors' code
_policies: dict[str, Any] = {}  # in-process cache, keyed like the files
# Fields that only matter at pruning time: everything else shapes the policy and is hashed.
PRUNE_TIME_FIELDS = {"multiple_of", "rounding", "cache", "selection"}


class PruneNetParams(ChannelParams):
    episodes: int = Field(
        20, ge=0, description="REINFORCE episodes; each samples and rewards every layer once (authors: 20)."
    )
    learning_rate: float = Field(0.001, gt=0, description="AdamW learning rate of the policy (authors: 0.001).")
    discount: float = Field(0.99, gt=0, le=1, description="Layer i's reward is scaled by discount**i (authors: 0.99).")
    train_ratio: float = Field(
        0.3, ge=0, lt=1, description="Compression ratio the policy is trained at; the trained policy serves every r."
    )
    selection: Literal["sample", "top"] = Field(
        "sample",
        description="At pruning time: sample rows from the policy's noisy keep probabilities without "
        "replacement (authors), or keep the rows of highest keep probability.",
    )
    cache: bool = Field(True, description="Reuse a trained policy from lawlab's cache (safetensors).")


# --------------------------------------------------------------------------- spectra


def first_ffn_matrix(adapter: Any, layer: Any) -> Any:
    """The matrix whose rows are pruned and scored: the first FFN projection (gate_proj)."""
    return adapter.mlp(layer)[0].weight.detach().float()


def singular_values(w: Any) -> Any:
    """Singular values (float64) via the eigenvalues of the smaller Gram matrix."""
    import torch

    w = w.double()
    g = w @ w.T if w.shape[0] < w.shape[1] else w.T @ w
    return torch.linalg.eigvalsh(g).clamp_min(0).sqrt()


def ks_distance(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov–Smirnov statistic (scipy's ``ks_2samp(...).statistic``):
    the largest gap between the two empirical CDFs."""
    import torch

    a, b = a.sort().values, b.sort().values
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True) / len(a)
    fb = torch.searchsorted(b, grid, right=True) / len(b)
    return float((fa - fb).abs().max())


def spectrum_reward(reference: Any, kept: Any) -> float:
    """1/KS between the original spectrum and that of the kept rows; 99999 when they match."""
    d = ks_distance(reference, singular_values(kept))
    return 99999.0 if d == 0 else 1.0 / d


# --------------------------------------------------------------------------- policy


def new_policy(d: int, n: int, seed: int) -> Any:
    """The authors' SparsityPredictor: a d → n linear map (A, b), initialised like
    ``nn.Linear``, and row scores s ~ U(0, 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    bound = 1 / math.sqrt(d)
    return torch.nn.ParameterDict({
        "proj_weight": torch.nn.Parameter((torch.rand(n, d, generator=g) * 2 - 1) * bound),
        "proj_bias": torch.nn.Parameter((torch.rand(n, generator=g) * 2 - 1) * bound),
        "row_scores": torch.nn.Parameter(torch.rand(n, 1, generator=g)),
    })


def keep_logits(policy: Any, w: Any) -> Any:
    """logit α for every row of ``w``: (W Aᵀ + b) s, computed as W (Aᵀ s) + b·s (the same
    function and gradients, without the n × n intermediate)."""
    s = policy["row_scores"]
    return (w @ (policy["proj_weight"].T @ s) + policy["proj_bias"] @ s).squeeze(-1)


def logistic_noise(n: int, g: Any) -> Any:
    """logit u, u ~ U(0, 1): the noise the authors add to logit α."""
    import torch

    u = torch.rand(n, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return u.log() - (-u).log1p()


def noisy_log_weights(policy: Any, w: Any, g: Any) -> Any:
    """log p_i, p_i = σ(logit u_i + logit α_i) with u_i ~ U(0, 1): the row weights the
    authors sample from (and whose logs their policy gradient uses)."""
    import torch

    z = keep_logits(policy, w)
    return torch.nn.functional.logsigmoid(logistic_noise(len(z), g).to(z) + z)


def sample_rows(log_weights: Any, k: int, g: Any) -> Any:
    """``k`` rows drawn one by one in proportion to exp(log_weights), without replacement
    (the law of ``torch.multinomial(weights, k, replacement=False)``), as Gumbel top-k in
    log space so that tiny weights cannot underflow; sorted indices."""
    import torch

    u = torch.rand(log_weights.shape, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    keys = log_weights.detach().double().cpu() - (-u.log()).log()
    return torch.topk(keys, k).indices.sort().values.to(log_weights.device)


def train_policy(mats: Sequence[Any], params: PruneNetParams, seed: int, progress: Any = None) -> tuple[Any, dict]:
    """The authors' REINFORCE loop (see the module docstring); returns the policy of the
    best episode and a log of per-episode rewards."""
    import torch

    n, d = mats[0].shape
    spectra = [singular_values(w) for w in mats]
    g = torch.Generator().manual_seed(seed)
    policy = new_policy(d, n, seed).to(mats[0].device)
    opt = torch.optim.AdamW(policy.parameters(), lr=params.learning_rate, weight_decay=WEIGHT_DECAY)
    keep = max(1, int((1 - params.train_ratio) * n))
    best, best_state = -math.inf, copy.deepcopy(policy.state_dict())
    rewards_log, ks_log = [], []
    if progress is not None:
        progress.start("prunenet policy", total=params.episodes)
    for _ in range(params.episodes):
        # Sample every layer with the policy as it stands, then update layer by layer.
        actions, rewards = [], []
        with torch.no_grad():
            for w, s in zip(mats, spectra, strict=True):
                rows = sample_rows(noisy_log_weights(policy, w, g), keep, g)
                actions.append(rows)
                rewards.append(spectrum_reward(s, w[rows]))
        for i, (w, rows) in enumerate(zip(mats, actions, strict=True)):
            # The authors' surrogate: log p of the kept rows, p drawn with fresh noise, times
            # the discounted reward (no baseline).
            loss = -noisy_log_weights(policy, w, g)[rows].sum() * (params.discount**i * rewards[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        total = sum(rewards)
        rewards_log.append(total / len(rewards))
        ks_log.append(sum(1 / r for r in rewards) / len(rewards))
        if total > best:  # the authors save the policy after an episode that beat the best total
            best, best_state = total, copy.deepcopy(policy.state_dict())
        if progress is not None:
            progress.advance()
    if progress is not None:
        progress.done()
    policy.load_state_dict(best_state)
    best_episode = max(range(len(rewards_log)), key=rewards_log.__getitem__) if rewards_log else None
    return policy.eval(), {"episode_rewards": rewards_log, "episode_ks": ks_log, "best_episode": best_episode}


def policy_key(mats: Sequence[Any], params: PruneNetParams, seed: int) -> str:
    """Hash of the first FFN matrices and of every parameter that shapes training."""
    h = hashlib.sha256()
    for w in mats:
        h.update(w.contiguous().cpu().numpy().tobytes())
    training = params.model_dump(mode="json", exclude=PRUNE_TIME_FIELDS)
    h.update(json.dumps({"training": training, "seed": seed, "version": POLICY_VERSION}, sort_keys=True).encode())
    return h.hexdigest()[:32]


class PruneNet(FFNChannelPruner):
    name: ClassVar[str] = "prunenet"
    description: ClassVar[str] = (
        "learned, calibration-free FFN-channel pruning as its authors train it: a policy rewarded by "
        "1/KS of the first FFN matrix's singular values, learned once per model and reused across ratios"
    )
    Params: ClassVar[type[Params]] = PruneNetParams

    def policy(self, model: LoadedModel, adapter: Any, params: PruneNetParams, ctx: RunContext) -> tuple[Any, dict]:
        """The trained policy for this model: from memory, from the cache, or trained now."""
        import torch
        from safetensors.torch import load_file, save_file

        mats = [first_ffn_matrix(adapter, layer) for layer in adapter.layers(model.model)]
        key = policy_key(mats, params, ctx.seed)
        path = ctx.cache_dir / "prunenet" / f"{key}.safetensors"
        info: dict[str, Any] = {"policy_key": key, "policy_file": str(path)}
        if key in _policies:
            return _policies[key], {**info, "policy": "reused (memory)"}
        n, d = mats[0].shape
        if params.cache and path.exists():
            policy = new_policy(d, n, ctx.seed)
            policy.load_state_dict(load_file(path))
            info["policy"] = "reused (cache file)"
        else:
            start = time.perf_counter()
            with torch.enable_grad():
                policy, log = train_policy(mats, params, ctx.seed, ctx.progress)
            info.update(policy="trained", policy_seconds=time.perf_counter() - start, **log)
            if params.cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
                save_file(state, path, metadata={"lawlab": "prunenet policy", "key": key,
                                                  "params": params.model_dump_json()})
        _policies[key] = policy.to(mats[0].device).eval()
        return _policies[key], info

    def choose(self, model: LoadedModel, adapter: Any, keep: int, params: Any, ctx: RunContext) -> tuple[list[Any], dict]:
        import torch

        policy, info = self.policy(model, adapter, params, ctx)
        g = torch.Generator().manual_seed(ctx.seed)
        index, ks = [], []
        with torch.no_grad():
            for layer in adapter.layers(model.model):
                w = first_ffn_matrix(adapter, layer)
                if params.selection == "sample":
                    rows = sample_rows(noisy_log_weights(policy, w, g), keep, g)
                else:  # ties break by row number
                    rows = torch.argsort(keep_logits(policy, w), descending=True, stable=True)[:keep].sort().values
                index.append(rows)
                ks.append(ks_distance(singular_values(w), singular_values(w[rows])))
        return index, {**info, "selection": params.selection, "ks_per_layer": ks, "ks_mean": sum(ks) / len(ks)}


@hookimpl
def register_pruners(register):
    register(PruneNet())
