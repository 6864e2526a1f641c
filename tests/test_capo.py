"""CAPO's advantage, PPO-clip and temporal-similarity terms on hand-made groups (values worked by hand)."""

from __future__ import annotations

import math

import pytest
import torch

from resadapt_eval.training.capo import CapoConfig, capo_advantages, ppo_clip_loss, temporal_similarity_loss

S = 1 / (1 + math.exp(-0.2 / 0.15)) - 0.5  # shaping at 0.2 from a pivot of 0.4, tau 0.15: 0.29135


def test_mixed_group_by_hand():
    acc = torch.tensor([1.0, 1.0, 0.0, 0.0])
    cost = torch.tensor([0.2, 0.6, 0.2, 0.6])  # group mean 0.4, so the pivot is 0.4
    adv = capo_advantages(acc, cost)
    want = [1 + 0.25 * 0.7 * S - 0.05 * 0.2, 1 - 0.25 * 0.7 * S - 0.05 * 0.6,
            -1 - 0.25 * 1.3 * S - 0.05 * 0.2, -1 + 0.25 * 1.3 * S - 0.05 * 0.6]
    assert adv.tolist() == pytest.approx(want, abs=1e-5)
    # the asymmetry: among right answers the cheaper wins, among wrong ones the one that spent more
    assert adv[0] > adv[1] and adv[3] > adv[2]


def test_uniform_outcomes_leave_only_the_cost_shaping():
    cost = torch.tensor([0.2, 0.6])
    right = capo_advantages(torch.ones(2), cost)
    assert right.tolist() == pytest.approx([0.25 * 0.7 * S - 0.01, 1e-3], abs=1e-6)  # clamped: never negative
    wrong = capo_advantages(torch.zeros(2), cost)
    assert wrong.tolist() == pytest.approx([-0.25 * 1.3 * S - 0.01, 0.25 * 1.3 * S - 0.03], abs=1e-6)
    unclamped = capo_advantages(torch.ones(2), cost, CapoConfig(clamp_correct=False))
    assert unclamped[1] < 0


def test_pivot_moves_with_the_group_cost():
    acc = torch.ones(2)
    cheap_group = capo_advantages(acc, torch.tensor([0.1, 0.2]), CapoConfig(gas=0.0, clamp_correct=False))
    dear_group = capo_advantages(acc, torch.tensor([0.7, 0.8]), CapoConfig(gas=0.0, clamp_correct=False))
    # pivot 0.275 vs 0.575: cost 0.2 sits below the first pivot; 0.7 sits above the second
    assert cheap_group[1] > 0 and dear_group[0] < 0 and cheap_group[0] > cheap_group[1]


def test_ppo_clip_stops_the_gradient_outside_the_trust_region():
    logp_old = torch.zeros(1, 2)
    logp = torch.tensor([[0.5, 0.0]], requires_grad=True)  # ratio e^0.5 = 1.65 > 1.28 on the first chunk
    loss = ppo_clip_loss(logp, logp_old, torch.tensor([1.0]), torch.ones(1, 2))
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == pytest.approx(-0.5)
    assert loss.item() == pytest.approx(-(1.28 + 1.0) / 2)


def test_temporal_similarity_penalises_a_duplicate_successor_that_gets_more():
    f = torch.ones(1, 2, 4)  # identical chunks: w = sigmoid((1 - 0.55) / 0.12) close to 1
    w = 1 / (1 + math.exp(-(1 - 0.55) / 0.12))
    up = temporal_similarity_loss(f, torch.tensor([[0.5, 1.0]]), torch.ones(1, 2))
    assert up.item() == pytest.approx(w * (math.log(1.0) - math.log(0.5) + 0.05 * w), rel=1e-5)
    down = temporal_similarity_loss(f, torch.tensor([[1.0, 0.5]]), torch.ones(1, 2))
    assert down.item() == 0.0
    different = torch.tensor([[[1.0, 0, 0, 0], [0, 1.0, 0, 0]]])  # orthogonal: w = sigmoid(-4.6)
    assert temporal_similarity_loss(different, torch.tensor([[0.5, 1.0]]), torch.ones(1, 2)) < 0.01 * up


def test_task_schedule_alternates_equal_weights_and_follows_shares():
    from resadapt_eval.training.allocator import task_schedule

    assert task_schedule([1, 1, 1], 7) == [0, 1, 2, 0, 1, 2, 0]  # the plain round-robin of earlier recipes
    order = task_schedule([1, 1, 0.1], 2100)
    assert order.count(2) == 100 and abs(order.count(0) - order.count(1)) <= 1
    assert 2 not in task_schedule([1, 1, 0], 50)
    with pytest.raises(ValueError):
        task_schedule([0, 0], 3)
