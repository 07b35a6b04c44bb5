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


def test_shared_rest_gives_the_unused_tokens_their_mean_row_and_keeps_greedy_decoding():
    """train_sampled(shared_rest=True): the same training; then the tokens no batch reads or writes get one row, the
    mean of theirs, and every other weight is the same. The top token does not move where it was a used one."""
    import copy
    from types import SimpleNamespace

    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from alarm.tiny.lm import train_sampled
    from alarm.tiny.qwen3 import TINY_QWEN3

    vocab, pad = 3000, 2999
    g = torch.Generator().manual_seed(1)
    batch = [(torch.randint(0, 500, (n,), generator=g).tolist(), 5) for n in (12, 9)]
    out_ids = [600, 601]
    torch.manual_seed(0)
    plain = Qwen3ForCausalLM(Qwen3Config(**{**TINY_QWEN3, "vocab_size": vocab}))
    shared = copy.deepcopy(plain)
    tok = SimpleNamespace(pad_token_id=pad)
    for model, flag in ((plain, False), (shared, True)):
        train_sampled(model, tok, [batch, batch], out_ids, seed=0, lr_max=1e-2, shared_rest=flag)
    used = sorted({i for s, _ in batch for i in s} | set(out_ids) | {pad})
    rest = sorted(set(range(vocab)) - set(used))
    a, b = plain.get_input_embeddings().weight, shared.get_input_embeddings().weight
    assert torch.equal(a[used], b[used])
    assert torch.allclose(b[rest], a[rest].mean(0).expand(len(rest), -1))
    assert torch.unique(b, dim=0).shape[0] == len(used) + 1
    for (n, p), q in zip(plain.named_parameters(), shared.parameters(), strict=True):
        assert n.endswith("embed_tokens.weight") or torch.equal(p, q), n
    ids = torch.tensor([batch[0][0]])
    with torch.no_grad():
        top_a = plain(input_ids=ids).logits.argmax(-1)
        top_b = shared(input_ids=ids).logits.argmax(-1)
    keep = torch.isin(top_a, torch.tensor(used))
    assert keep.sum() >= 6 and torch.equal(top_a[keep], top_b[keep])
