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


def test_shared_rest_trains_with_the_exact_softmax_and_leaves_one_row_for_the_unused_tokens():
    """train_sampled(shared_rest=True): the tokens no batch reads or writes end with one shared embedding row, and
    a step's loss is the plain cross-entropy over the whole vocabulary of the model with that row shared."""
    import copy
    from types import SimpleNamespace

    import torch
    import torch.nn.functional as F
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from alarm.tiny.lm import train_sampled
    from alarm.tiny.qwen3 import TINY_QWEN3

    vocab, pad = 3000, 2999
    g = torch.Generator().manual_seed(1)
    batch = [(torch.randint(0, 500, (n,), generator=g).tolist(), 5) for n in (12, 9)]
    out_ids = [600, 601]
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**{**TINY_QWEN3, "vocab_size": vocab}))
    used = sorted({i for s, _ in batch for i in s} | set(out_ids) | {pad})
    rest = sorted(set(range(vocab)) - set(used))
    start = copy.deepcopy(model)
    with torch.no_grad():
        start.get_input_embeddings().weight[rest] = start.get_input_embeddings().weight[rest[0]].clone()
        ids = torch.full((2, 12), pad)
        mask = torch.zeros_like(ids)
        for b, (s, _) in enumerate(batch):
            ids[b, : len(s)], mask[b, : len(s)] = torch.tensor(s), 1
        logits = start(input_ids=ids, attention_mask=mask).logits  # (2, 12, V): every row of the vocabulary
        want = F.cross_entropy(torch.cat([logits[b, p - 1: len(s) - 1] for b, (s, p) in enumerate(batch)]),
                               torch.tensor([i for s, p in batch for i in s[p:]]))
    losses = train_sampled(model, SimpleNamespace(pad_token_id=pad), [batch, batch], out_ids, seed=0, lr_max=1e-2,
                           shared_rest=True)
    assert abs(losses[0] - float(want)) < 1e-4 * float(want)
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[rest], emb[rest[0]].expand(len(rest), -1))
    assert not torch.equal(emb[rest[0]], start.get_input_embeddings().weight[rest[0]])  # trained, as one row
    assert torch.unique(emb, dim=0).shape[0] == len(used) + 1
