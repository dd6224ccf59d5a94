"""PruneNet (Sengupta et al., ICLR 2025, arXiv 2501.15296): calibration-free FFN-channel
pruning with a learned policy.

A small policy network scores every FFN channel from its weights alone (the channel's
gate and up rows and down column). It is trained with REINFORCE: at a random ratio it
samples which channels to keep (Gumbel top-k, i.e. Plackett–Luce sampling without
replacement), and the reward is minus the Kolmogorov–Smirnov distance between the
singular values of the layer's FFN input matrix [gate | up] before and after removing the
other rows. The policy is trained once per model and cached; every ratio then keeps the
top-scoring channels of each layer, so the same policy serves all ratios.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from lawlab_plugins.random_prunenet import ChannelParams, FFNChannelPruner
from pydantic import Field, model_validator

from lawlab import hookimpl
from lawlab.api import LoadedModel, Params, RunContext

POLICY_VERSION = 1
_policies: dict[str, Any] = {}  # in-process cache, keyed like the files


class PruneNetParams(ChannelParams):
    steps: int = Field(30, ge=0, description="Policy-gradient steps (one random layer per step).")
    samples_per_step: int = Field(4, ge=2, description="Sampled channel subsets per step (their mean is the baseline).")
    hidden: int = Field(32, ge=1, description="Width of the policy network's hidden layer.")
    learning_rate: float = Field(0.01, gt=0, description="Adam learning rate of the policy.")
    train_ratios: tuple[float, float] = Field(
        (0.1, 0.9), description="Training samples a ratio uniformly in this range, so one policy fits every r."
    )
    cache: bool = Field(True, description="Reuse a trained policy from lawlab's cache (safetensors).")

    @model_validator(mode="after")
    def _range(self) -> PruneNetParams:
        lo, hi = self.train_ratios
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError("train_ratios must satisfy 0 <= low <= high < 1")
        return self


# --------------------------------------------------------------------------- pieces


def channel_features(adapter: Any, layer: Any) -> Any:
    """One row per channel: its gate row, up row and down column, scaled to unit RMS."""
    import torch

    gate, up, down = adapter.mlp(layer)
    f = torch.cat([gate.weight, up.weight, down.weight.T], dim=1).detach().float()
    return f / f.pow(2).mean().sqrt().clamp_min(1e-12)


def spectrum_matrix(adapter: Any, layer: Any) -> Any:
    """The FFN input matrix whose rows a channel owns: [gate | up] (n × 2d)."""
    import torch

    gate, up, _ = adapter.mlp(layer)
    return torch.cat([gate.weight, up.weight], dim=1).detach().float()


def singular_values(w: Any) -> Any:
    """Singular values via the smaller Gram matrix (cheaper than an SVD)."""
    import torch

    g = w @ w.T if w.shape[0] < w.shape[1] else w.T @ w
    return torch.linalg.eigvalsh(g.double()).clamp_min(0).sqrt()


def ks_distance(a: Any, b: Any) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the empirical CDFs."""
    import torch

    a, b = a.sort().values, b.sort().values
    grid = torch.cat([a, b])
    fa = torch.searchsorted(a, grid, right=True) / len(a)
    fb = torch.searchsorted(b, grid, right=True) / len(b)
    return float((fa - fb).abs().max())


def _policy(in_features: int, hidden: int) -> Any:
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(in_features, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1))
    torch.nn.init.zeros_(net[2].weight)  # start as the uniform policy (= random-PruneNet)
    torch.nn.init.zeros_(net[2].bias)
    return net


def _sample(logits: Any, keep: int, g: Any) -> tuple[Any, Any]:
    """Gumbel top-k: ``keep`` channels without replacement, and the Plackett–Luce
    log-probability of drawing them in that order."""
    import torch

    u = torch.rand(logits.shape, generator=g).clamp(1e-9, 1 - 1e-9).to(logits.device)
    order = torch.argsort(logits.detach() - torch.log(-torch.log(u)), descending=True)
    ordered = logits[order]
    # Denominator at draw i: logsumexp over the channels not drawn yet (positions i..n-1).
    remaining = torch.logcumsumexp(ordered.flip(0), 0).flip(0)
    logp = (ordered[:keep] - remaining[:keep]).sum()
    return order[:keep], logp


def train_policy(layers: Sequence[Any], adapter: Any, params: PruneNetParams, seed: int) -> tuple[Any, dict]:
    """REINFORCE with a batch-mean baseline; returns the policy and a training log."""
    import torch

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    feats = [channel_features(adapter, layer) for layer in layers]
    mats = [spectrum_matrix(adapter, layer) for layer in layers]
    spectra = [singular_values(m) for m in mats]
    policy = _policy(feats[0].shape[1], params.hidden).to(feats[0].device)
    opt = torch.optim.Adam(policy.parameters(), lr=params.learning_rate)
    lo, hi = params.train_ratios
    n = feats[0].shape[0]
    rewards_log = []
    for _ in range(params.steps):
        li = int(torch.randint(len(layers), (1,), generator=g))
        r = lo + (hi - lo) * float(torch.rand((), generator=g))
        keep = max(1, round((1 - r) * n))
        logits = policy(feats[li]).squeeze(-1)
        logps, rewards = [], []
        for _ in range(params.samples_per_step):
            idx, logp = _sample(logits, keep, g)  # idx lives on the weights' device
            rewards.append(-ks_distance(spectra[li], singular_values(mats[li][idx])))
            logps.append(logp)
        reward = torch.tensor(rewards)
        loss = -((reward - reward.mean()) * torch.stack(logps)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        rewards_log.append(float(reward.mean()))
    return policy.eval(), {"mean_reward_per_step": rewards_log}


def policy_key(layers: Sequence[Any], adapter: Any, params: PruneNetParams, seed: int) -> str:
    """Hash of the FFN weights and of everything that shapes training."""
    h = hashlib.sha256()
    for layer in layers:
        for lin in adapter.mlp(layer):
            h.update(lin.weight.detach().float().contiguous().cpu().numpy().tobytes())
    training = params.model_dump(mode="json", exclude={"multiple_of", "rounding", "cache"})
    h.update(json.dumps({"training": training, "seed": seed, "version": POLICY_VERSION}, sort_keys=True).encode())
    return h.hexdigest()[:32]


class PruneNet(FFNChannelPruner):
    name: ClassVar[str] = "prunenet"
    description: ClassVar[str] = (
        "learned, calibration-free FFN-channel pruning: a policy trained to keep the singular-value "
        "spectrum (KS reward), cached and reused across ratios"
    )
    Params: ClassVar[type[Params]] = PruneNetParams

    def policy(self, model: LoadedModel, adapter: Any, params: PruneNetParams, ctx: RunContext) -> tuple[Any, dict]:
        """The trained policy for this model: from memory, from the cache, or trained now."""
        import torch
        from safetensors.torch import load_file, save_file

        layers = adapter.layers(model.model)
        key = policy_key(layers, adapter, params, ctx.seed)
        path = ctx.cache_dir / "prunenet" / f"{key}.safetensors"
        info: dict[str, Any] = {"policy_key": key, "policy_file": str(path)}
        if key in _policies:
            return _policies[key], {**info, "policy": "reused (memory)"}
        in_features = channel_features(adapter, layers[0]).shape[1]
        if params.cache and path.exists():
            policy = _policy(in_features, params.hidden)
            policy.load_state_dict(load_file(path))
            info["policy"] = "reused (cache file)"
        else:
            with torch.enable_grad():
                policy, log = train_policy(layers, adapter, params, ctx.seed)
            info.update(policy="trained", **log)
            if params.cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
                save_file(state, path, metadata={"lawlab": "prunenet policy", "key": key,
                                                  "params": params.model_dump_json()})
        device = adapter.mlp(layers[0])[0].weight.device  # train and score where the weights are
        _policies[key] = policy.to(device).eval()
        return _policies[key], info

    def choose(self, model: LoadedModel, adapter: Any, keep: int, params: Any, ctx: RunContext) -> tuple[list[Any], dict]:
        import torch

        layers = adapter.layers(model.model)
        policy, info = self.policy(model, adapter, params, ctx)
        index, ks = [], []
        with torch.no_grad():
            for layer in layers:
                scores = policy(channel_features(adapter, layer)).squeeze(-1)
                # Ties (an untrained policy scores all channels alike) break by channel number.
                top = torch.argsort(scores, descending=True, stable=True)[:keep].sort().values
                index.append(top)
                m = spectrum_matrix(adapter, layer)
                ks.append(ks_distance(singular_values(m), singular_values(m[top])))
        return index, {**info, "ks_per_layer": ks, "ks_mean": sum(ks) / len(ks)}


@hookimpl
def register_pruners(register):
    register(PruneNet())
