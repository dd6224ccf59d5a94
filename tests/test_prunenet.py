"""PruneNet trains as its authors do (LCS2-IIITD/PruneNet) and one policy serves every ratio."""

from __future__ import annotations

import math

import pytest
import torch
from lawlab_plugins import prunenet, random_prunenet

from lawlab.testing import tiny_model, tiny_registry, tiny_run_context

REGISTRY = tiny_registry(random_prunenet, prunenet)
ADAPTER = REGISTRY.get("architectures", "llama")
IDS = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47]])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny ops on a busy 2-core machine run ~20x faster on one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    prunenet._policies.clear()
    yield
    torch.set_num_threads(before)


def first_ffn(model):
    return [prunenet.first_ffn_matrix(ADAPTER, layer) for layer in ADAPTER.layers(model.model)]


def test_reward_is_inverse_ks_of_the_first_ffn_spectrum():
    stats = pytest.importorskip("scipy.stats")
    w = first_ffn(tiny_model())[0]
    rows = torch.arange(0, 128, 2)
    s = prunenet.singular_values(w)
    assert torch.allclose(s, torch.linalg.svdvals(w.double()).flip(0), atol=1e-9)
    ks = stats.ks_2samp(s.numpy(), prunenet.singular_values(w[rows]).numpy()).statistic
    assert prunenet.ks_distance(s, prunenet.singular_values(w[rows])) == pytest.approx(ks)
    assert prunenet.spectrum_reward(s, w[rows]) == pytest.approx(1 / ks)
    assert prunenet.spectrum_reward(s, w) == 99999.0  # all rows kept: KS 0, the authors' cap


def test_sampling_without_replacement_has_multinomials_law():
    """Gumbel top-k draws rows with the law of torch.multinomial(weights, k, replacement=False)."""
    weights = torch.tensor([0.9, 0.5, 0.2, 0.1, 0.05])
    g = torch.Generator().manual_seed(0)
    n = 4000
    ours = torch.zeros(5)
    theirs = torch.zeros(5)
    for _ in range(n):
        ours[prunenet.sample_rows(weights.log(), 2, g)] += 1
        theirs[torch.multinomial(weights, 2, replacement=False, generator=g)] += 1
    assert torch.allclose(ours / n, theirs / n, atol=0.03)


def test_policy_sees_rows_through_a_linear_map_and_row_scores():
    """α = σ((W Aᵀ + b) s): the factored form is the authors' n × n product."""
    w = first_ffn(tiny_model())[0]
    p = prunenet.new_policy(64, 128, seed=3)
    full = (w @ p["proj_weight"].T + p["proj_bias"]) @ p["row_scores"]
    assert torch.allclose(prunenet.keep_logits(p, w), full.squeeze(-1), atol=1e-5)
    assert p["row_scores"].min() >= 0 and p["row_scores"].max() <= 1  # U(0, 1) like the authors'


def test_training_does_what_the_authors_training_does():
    """Episodes over every layer, 1/KS rewards, the best episode's policy kept; and what
    that training does: every sampled row is pushed up (positive rewards, no baseline),
    so α rises for all rows alike and stays far narrower than the sampling noise."""
    mats = first_ffn(tiny_model("llama", num_hidden_layers=3))
    params = prunenet.PruneNetParams(episodes=8)
    policy, log = prunenet.train_policy(mats, params, seed=0)
    rewards, ks = log["episode_rewards"], log["episode_ks"]
    assert len(rewards) == len(ks) == 8
    # An episode's reward is the mean over all 3 layers of 1/KS at keep = int(0.7·128) = 89 rows.
    assert all(r > 1 for r in rewards) and all(0 < k < 1 for k in ks)
    assert all(r >= 1 / k - 1e-9 for r, k in zip(rewards, ks, strict=True))  # mean(1/x) >= 1/mean(x)
    assert log["best_episode"] == max(range(8), key=rewards.__getitem__)
    before = prunenet.keep_logits(prunenet.new_policy(64, 128, seed=0), mats[0]).detach()
    after = prunenet.keep_logits(policy, mats[0]).detach()
    assert after.mean() > before.mean() + 0.1
    noise_sd = math.pi / math.sqrt(3)  # sd of logit u, u ~ U(0, 1)
    assert after.std() < noise_sd / 4


def planted_model(seed: int):
    """A tiny llama whose first FFN rows a policy linear in a row can tell apart: in each
    layer half the rows share a direction (3 × a unit vector, plus N(0, 1) noise), and the
    other half are nearly zero. Keeping the shared-direction rows keeps the spectrum."""
    model = tiny_model("llama", num_hidden_layers=3, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in ADAPTER.layers(model.model):
            w = ADAPTER.mlp(layer)[0].weight
            n, d = w.shape
            direction = torch.randn(d, generator=g)
            rows = torch.randperm(n, generator=g)[: n // 2]
            w.mul_(0.02)
            w[rows] += 3 * direction / direction.norm() + torch.randn(len(rows), d, generator=g)
    return model


def mean_ks(mats, choose, draws: int = 20) -> float:
    total = 0.0
    for _ in range(draws):
        for w in mats:
            rows = choose(w)
            total += prunenet.ks_distance(prunenet.singular_values(w), prunenet.singular_values(w[rows]))
    return total / (draws * len(mats))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reward_rises_over_episodes_where_a_row_direction_keeps_the_spectrum(seed):
    """With the authors' defaults (20 episodes, lr 0.001, γ 0.99, r 0.3), training raises the
    reward from episode 0 when the rows worth keeping share a direction, and the policy kept
    (the best episode's) samples spectra closer than random selection does."""
    mats = first_ffn(planted_model(seed))
    policy, log = prunenet.train_policy(mats, prunenet.PruneNetParams(), seed=seed)
    rewards = log["episode_rewards"]
    assert len(rewards) == 20
    later = sum(rewards[1:]) / 19
    assert later > rewards[0] + 0.4, rewards  # measured: +0.77 to +1.04 over seeds 0-2
    g = torch.Generator().manual_seed(7)
    keep = int(0.7 * mats[0].shape[0])
    trained = mean_ks(mats, lambda w: prunenet.sample_rows(prunenet.noisy_log_weights(policy, w, g), keep, g))
    uniform = mean_ks(mats, lambda w: torch.randperm(len(w), generator=g)[:keep])
    assert trained < uniform - 0.02, (trained, uniform)  # measured: 0.239-0.266 against 0.302-0.310


def test_training_is_deterministic_and_keyed_by_every_training_param():
    mats = first_ffn(tiny_model())
    params = prunenet.PruneNetParams(episodes=2)
    a, log_a = prunenet.train_policy(mats, params, seed=1)
    b, log_b = prunenet.train_policy(mats, params, seed=1)
    assert log_a == log_b and all(torch.equal(a[k], b[k]) for k in ("proj_weight", "proj_bias", "row_scores"))
    key = prunenet.policy_key(mats, params, 1)
    for change in ({"episodes": 3}, {"learning_rate": 0.01}, {"discount": 0.9}, {"train_ratio": 0.5}):
        assert prunenet.policy_key(mats, params.model_copy(update=change), 1) != key, change
    for same in ({"selection": "top"}, {"multiple_of": 1}, {"cache": False}):
        assert prunenet.policy_key(mats, params.model_copy(update=same), 1) == key, same
    assert prunenet.policy_key(mats, params, 2) != key


def test_one_policy_trained_once_serves_every_ratio(tmp_path):
    pruner = REGISTRY.get("pruners", "prunenet")
    params = pruner.Params(episodes=3)
    ctx = tiny_run_context(tmp_path, REGISTRY)
    details = [pruner.prune(tiny_model(), r, params, ctx).compression.details for r in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert [d["policy"] for d in details] == ["trained"] + ["reused (memory)"] * 4
    assert len({d["policy_key"] for d in details}) == 1
    assert [d["kept_channels"] for d in details] == [112, 88, 64, 40, 16]
    assert details[0]["policy_seconds"] > 0 and len(details[0]["episode_rewards"]) == 3
    # A new process finds the policy in the cache file and prunes identically.
    first = pruner.prune(tiny_model(), 0.5, params, ctx)
    prunenet._policies.clear()
    again = pruner.prune(tiny_model(), 0.5, params, ctx)
    assert again.compression.details["policy"] == "reused (cache file)"
    with torch.no_grad():
        assert torch.equal(again.model(IDS).logits, first.model(IDS).logits)


def test_selection_samples_with_the_seed_or_keeps_the_top_rows(tmp_path):
    pruner = REGISTRY.get("pruners", "prunenet")
    sampled = pruner.Params(episodes=1)
    top = pruner.Params(episodes=1, selection="top")

    def kept(params, r, seed=0):
        model = pruner.prune(tiny_model(), r, params, tiny_run_context(tmp_path, REGISTRY, seed=seed))
        return [set(model.model.model.layers[i].mlp.gate_proj.weight[:, 0].tolist()) for i in range(2)]

    assert kept(sampled, 0.5) == kept(sampled, 0.5)
    assert kept(sampled, 0.5) != kept(sampled, 0.5, seed=1)  # a new seed trains and samples anew
    # Top rows are nested across ratios: a larger r keeps a subset of a smaller r's rows.
    for small, large in zip(kept(top, 0.3), kept(top, 0.6), strict=True):
        assert large < small


def test_train_ratio_is_validated():
    with pytest.raises(ValueError, match="train_ratio"):
        prunenet.PruneNetParams(train_ratio=1.0)
