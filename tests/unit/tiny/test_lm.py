"""The shared text-training routine: a prompt prefix run once gives the same states and gradients."""


def test_a_shared_prefix_runs_once_with_the_same_hidden_states_and_gradients():
    """train_sampled(share_prefix=True): the prompt prefix every sequence shares (a rephrase prompt's system turn
    and few-shot turns) is run once; the rows' hidden states and the gradients equal the batch run whole."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from alarm.tiny.lm import MIN_SHARED, forward_shared, shared_prefix
    from alarm.tiny.qwen3 import TINY_QWEN3

    g = torch.Generator().manual_seed(0)
    head = torch.randint(0, 1000, (MIN_SHARED + 16,), generator=g).tolist()
    batch = [(head + torch.randint(0, 1000, (n,), generator=g).tolist(), len(head) + 4) for n in (9, 14, 6)]
    assert shared_prefix(batch) == len(head) and shared_prefix(batch[:1]) == 0
    assert shared_prefix([(s[MIN_SHARED:], p - MIN_SHARED) for s, p in batch]) == 0  # too short to share
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY_QWEN3))
    ids = torch.zeros((3, max(len(s) for s, _ in batch)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (s, _) in enumerate(batch):
        ids[b, : len(s)], mask[b, : len(s)] = torch.tensor(s), 1
    runs = []
    for shared in (0, len(head)):
        model.zero_grad()
        hidden = forward_shared(model.model, model.get_input_embeddings()(ids), mask, shared)
        (hidden * mask[..., None]).square().sum().backward()
        runs.append((hidden.detach()[mask.bool()], [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(runs[1][0], runs[0][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(runs[1][1], runs[0][1], strict=True):  # float noise only (Qwen3's norms compute in float32)
        assert float((a - b).norm()) <= 2e-4 * float(b.norm())  # a lost gradient path would differ by O(1)
