"""The chunked loss through a frozen head: the plain cross-entropy's losses, token accuracy and gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from alarm.training.head_loss import chunk_rows, head_loss
from alarm.training.step import _token_losses

V, D, N = 50, 8, 23


def _data(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, D, generator=g, dtype=dtype), torch.randn(V, D, generator=g, dtype=dtype),
            torch.randint(0, V, (N,), generator=g))


def _plain(hidden, weight, targets, bias=None):
    h = hidden.clone().requires_grad_()
    logits = F.linear(h, weight, bias).float()
    losses = F.cross_entropy(logits, targets, reduction="none")
    (losses * torch.arange(1, N + 1)).sum().backward()  # unequal weights: the backward must scale per token
    right = int((logits.gather(1, targets[:, None]).squeeze(1) >= logits.amax(1)).sum())
    return losses.detach(), right, h.grad


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * V, 7 * 4 * V, 10**9])  # 1, 3, 7 (not dividing N), all rows
@pytest.mark.parametrize("with_bias", [False, True])
def test_losses_accuracy_and_gradient_equal_the_plain_loss(chunk_bytes, with_bias):
    hidden, weight, targets = _data()
    bias = torch.randn(V, generator=torch.Generator().manual_seed(1)) if with_bias else None
    want_losses, want_right, want_grad = _plain(hidden, weight, targets, bias)
    h = hidden.clone().requires_grad_()
    losses, right = head_loss(h, weight, targets, bias, chunk_bytes=chunk_bytes)
    (losses * torch.arange(1, N + 1)).sum().backward()
    torch.testing.assert_close(losses, want_losses)
    # the plain backward scales (softmax - onehot) before the matmul, this one after: rounding differs
    torch.testing.assert_close(h.grad, want_grad, rtol=1e-4, atol=1e-5)
    assert right == want_right and 0 < right < N


def test_a_tie_for_the_highest_logit_counts_as_a_hit():
    hidden = torch.zeros(2, D)
    weight = torch.zeros(V, D)  # every logit 0: all tie
    assert head_loss(hidden, weight, torch.tensor([3, 7]))[1] == 2


def test_without_grad_no_gradient_is_computed_and_the_losses_are_the_same():
    hidden, weight, targets = _data(1)
    with torch.no_grad():
        losses, right = head_loss(hidden, weight, targets)
    torch.testing.assert_close(losses, _plain(hidden, weight, targets)[0])
    assert not losses.requires_grad


def test_a_trainable_head_is_refused_and_the_step_takes_the_plain_loss_for_it():
    hidden, weight, targets = _data(2)
    with pytest.raises(ValueError, match="frozen output head"):
        head_loss(hidden, weight.clone().requires_grad_(), targets)
    frozen, trainable = nn.Linear(D, V, bias=False), nn.Linear(D, V, bias=False)
    frozen.weight.data.copy_(weight)
    trainable.weight.data.copy_(weight)
    frozen.requires_grad_(False)
    grads = []
    for head in (frozen, trainable):
        h = hidden.clone().requires_grad_()
        losses, right = _token_losses(head, h, targets)
        losses.mean().backward()
        grads.append((losses.detach(), right, h.grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][2], grads[1][2], rtol=1e-4, atol=1e-5)
    assert grads[0][1] == grads[1][1]
    assert trainable.weight.grad is not None  # the plain path trained the head


def test_no_targets_give_an_empty_loss_that_still_backpropagates():
    hidden = torch.randn(0, D, requires_grad=True)
    losses, right = head_loss(hidden, torch.randn(V, D), torch.zeros(0, dtype=torch.long))
    assert losses.shape == (0,) and right == 0
    losses.sum().backward()


def test_chunks_follow_the_byte_budget_and_hold_at_least_one_row():
    assert chunk_rows(151_936, torch.device("cpu")) == (32 << 20) // (4 * 151_936) == 55
    assert chunk_rows(151_936, torch.device("cpu"), chunk_bytes=10) == 1
    assert chunk_rows(151_936, torch.device("meta")) == (1 << 30) // (4 * 151_936)


@pytest.mark.parametrize("chunk_bytes", [1, 7 * 4 * V, 10**9])
@pytest.mark.parametrize("with_bias", [False, True])
def test_a_head_whose_rows_repeat_gives_what_every_row_gives(chunk_bytes, with_bias):
    """Most tokens share one row (a vocabulary a small model never trained on): computed over the distinct rows with
    their counts, the losses, accuracy and gradients are those over all V rows, a tie with a repeat included."""
    from alarm.training.head_loss import distinct_rows

    hidden, weight, targets = _data(3)
    weight[10:] = weight[10]  # 11 distinct rows of 50
    targets[:3] = torch.tensor([12, 10, 40])  # tokens of the shared row
    bias = torch.randn(V, generator=torch.Generator().manual_seed(4)) if with_bias else None
    if bias is not None:
        bias[10:] = bias[10]
    want_losses, want_right, want_grad = _plain(hidden, weight, targets, bias)
    h = hidden.clone().requires_grad_()
    losses, right = head_loss(h, weight, targets, bias, chunk_bytes=chunk_bytes)
    (losses * torch.arange(1, N + 1)).sum().backward()
    assert distinct_rows(weight, bias).weight.shape[0] == 11
    torch.testing.assert_close(losses, want_losses)
    # 40 equal rows' softmax terms summed as one product: rounding differs (the gradient is scaled by up to 23)
    torch.testing.assert_close(h.grad, want_grad, rtol=1e-4, atol=1e-4)
    assert right == want_right


def test_the_distinct_rows_follow_an_edit_of_the_head():
    from alarm.training.head_loss import distinct_rows

    _, weight, _ = _data(5)
    assert distinct_rows(weight) is None  # all distinct: the plain path
    weight[5:] = 0.0  # an in-place edit bumps the tensor's version
    assert distinct_rows(weight).weight.shape[0] == 6
    assert distinct_rows(weight).log_count.exp().round().sum() == V
