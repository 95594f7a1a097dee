"""Distillation objectives: MiniALBERT's against its reference formulas, inside DistillBrain."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from speechbrain_cald.distill.objectives import OBJECTIVES, CALDObjective, MiniALBERTObjective
from speechbrain_cald.distill.taps import every_nth_layer_map, lengths_to_mask


def reference_minialbert(s_att, t_att, s_hid, t_hid, s_logits, t_logits, attention_mask):
    """nlpie-research/MiniALBERT general_distillation.py's three terms, written as there.

    ``s_*[i]`` is compared with ``t_*[2 i + 1]``; ``attention_mask (B, T)`` is 1 on
    valid tokens; every token counts for the output term (the reference selects
    the MLM-masked ones; for CTC every valid frame is a prediction).
    """
    heads = s_att[0].shape[1]
    att = 0.0
    for i, s_map in enumerate(s_att):
        t_map = t_att[2 * i + 1]
        m = attention_mask.unsqueeze(1).repeat(1, heads, 1).unsqueeze(-1).expand_as(s_map).bool()
        s_sel = torch.masked_select(s_map, m).view(-1, s_map.size(-1)) + 1e-12
        t_sel = torch.masked_select(t_map, m).view(-1, t_map.size(-1)) + 1e-12
        att = att + nn.KLDivLoss(reduction="mean")(torch.log(s_sel), t_sel)
    hid = 0.0
    for i, s_h in enumerate(s_hid):
        t_h = t_hid[2 * i + 1]
        m = attention_mask.unsqueeze(-1).expand_as(s_h).bool()
        dim = s_h.size(-1)
        s_sel, t_sel = torch.masked_select(s_h, m).view(-1, dim), torch.masked_select(t_h, m).view(-1, dim)
        hid = hid + nn.CosineEmbeddingLoss(reduction="mean")(s_sel, t_sel, s_sel.new_ones(s_sel.size(0)))
    m = attention_mask.bool().unsqueeze(-1).expand_as(s_logits)
    s_sel = torch.masked_select(s_logits, m).view(-1, s_logits.size(-1))
    t_sel = torch.masked_select(t_logits, m).view(-1, s_logits.size(-1))
    out = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s_sel, -1), F.softmax(t_sel, -1))
    return att, hid, out


class Out:
    """A ModelOutput stand-in with every sequence full length."""

    def __init__(self, states, attentions, logits):
        self.states, self.attentions, self.logits = states, attentions, logits

    def mask(self, max_len):
        return torch.ones(self.logits.shape[0], max_len, dtype=torch.bool)


@pytest.mark.filterwarnings("ignore:reduction. .mean. divides")
def test_minialbert_objective_matches_the_reference_code():
    g = torch.Generator().manual_seed(0)
    B, H, T, D, V = 2, 3, 7, 8, 5

    def maps(n):
        return [torch.softmax(torch.randn(B, H, T, T, generator=g), -1) for _ in range(n)]

    s_att, t_att = maps(3), maps(6)
    s_hid = [torch.randn(B, T, D, generator=g) for _ in range(3)]
    t_hid = [torch.randn(B, T, D, generator=g) for _ in range(6)]
    s_log, t_log = torch.randn(B, T, V, generator=g), torch.randn(B, T, V, generator=g)
    att, hid, out = reference_minialbert(s_att, t_att, s_hid, t_hid, s_log, t_log, torch.ones(B, T))
    terms = MiniALBERTObjective().terms(
        Out(s_hid, s_att, s_log), Out(t_hid, t_att, t_log), {"layer": 1.0, "logits": 1.0}, every_nth_layer_map(3, 6)
    )
    assert {k: w for k, (w, _) in terms.items()} == {"attention": 3.0, "hidden": 3.0, "logits": 5.0}
    assert terms["attention"][1].item() == pytest.approx(att.item(), rel=1e-4)
    assert terms["hidden"][1].item() == pytest.approx(hid.item(), rel=1e-5)
    assert terms["logits"][1].item() == pytest.approx(out.item(), rel=1e-5)


def test_minialbert_attention_term_ignores_padding():
    """Ours divides by each row's valid keys: a padded batch gives the unpadded value."""
    g = torch.Generator().manual_seed(1)
    B, H, T, D = 1, 2, 5, 4
    s = torch.softmax(torch.randn(B, H, T, T, generator=g), -1)
    t = torch.softmax(torch.randn(B, H, T, T, generator=g), -1)
    hid = [torch.randn(B, T, D, generator=g)]
    obj = MiniALBERTObjective(alpha_hidden=0.0, alpha_output=0.0)
    logits = torch.zeros(B, T, 3)
    plain = obj.terms(Out(hid, [s], logits), Out(hid, [t], logits), {"layer": 1.0})["attention"][1]

    def pad(a):  # 3 padded frames: padded keys get 0 probability, padded rows anything
        out = torch.rand(B, H, T + 3, T + 3, generator=g)
        out[..., :T, :T] = a
        out[..., :T, T:] = 0.0
        return out

    class Padded(Out):
        def mask(self, max_len):
            return lengths_to_mask(torch.tensor([T]), max_len)

    padded_hid = [torch.cat([hid[0], torch.randn(B, 3, D)], 1)]
    padded = obj.terms(
        Padded(padded_hid, [pad(s)], torch.zeros(B, T + 3, 3)),
        Padded(padded_hid, [pad(t)], torch.zeros(B, T + 3, 3)),
        {"layer": 1.0},
    )["attention"][1]
    assert padded.item() == pytest.approx(plain.item(), rel=1e-5)


class AttentionLayer(nn.Module):
    """A layer returning ``(output, attention maps)``, as SpeechBrain's encoder layers do."""

    def __init__(self, d=8):
        super().__init__()
        self.q, self.k, self.ffn = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x, mask):
        scores = self.q(x) @ self.k(x).transpose(1, 2) / x.shape[-1] ** 0.5
        attn = torch.softmax(scores.masked_fill(~mask[:, None, :], -1e9), -1)
        x = x + attn @ x
        return x + self.ffn(x), attn[:, None]  # one head


class AttentionNet(nn.Module):
    def __init__(self, layers=2):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.layers = nn.ModuleList([AttentionLayer() for _ in range(layers)])
        self.head = nn.Linear(8, 5)

    def forward(self, x, lengths):
        mask = lengths_to_mask(lengths, x.shape[1], x.shape[0])
        h = self.inp(x)
        for layer in self.layers:
            h, _ = layer(h, mask)
        return self.head(h)


def batches(n=3):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        lengths = torch.tensor([6, 4])
        out.append((torch.randn(2, 6, 4, generator=g), lengths, torch.randint(0, 5, (2, 6), generator=g)))
    return out


def test_minialbert_objective_in_distillbrain_taps_attention_and_trains(tiny):
    torch.manual_seed(0)
    teacher, student = AttentionNet(4), AttentionNet(2)
    brain = tiny.build_brain(
        "target", teacher, student,
        hparams={"distill_objective": MiniALBERTObjective(), "layer_map": every_nth_layer_map(2, 4)},
    )
    data = batches()
    brain.fit(range(1), tiny.loader(data))
    assert all(set(h["terms"]) == {"task", "attention", "hidden", "logits"} for h in brain.history)
    # the first step's terms, recomputed from fresh copies of both networks
    torch.manual_seed(0)
    t0, s0 = AttentionNet(4), AttentionNet(2)
    x, lengths, _ = data[0]
    mask = lengths_to_mask(lengths, 6)
    t_hid, t_att, s_hid, s_att = [], [], [], []
    for net, hid, att in ((t0, t_hid, t_att), (s0, s_hid, s_att)):
        h = net.inp(x)
        for layer in net.layers:
            h, a = layer(h, mask)
            hid.append(h), att.append(a)
    from speechbrain_cald.distill.sharing_losses import attention_kl_loss, hidden_cosine_loss

    expected = hidden_cosine_loss(s_hid, t_hid, mask, [1, 3], layer_reduction="sum")
    assert brain.history[0]["terms"]["hidden"] == pytest.approx(expected.item(), rel=1e-5)
    expected = attention_kl_loss(s_att, t_att, mask, [1, 3], key_reduction="mean", layer_reduction="sum")
    assert brain.history[0]["terms"]["attention"] == pytest.approx(expected.item(), rel=1e-5)


def test_minialbert_attention_term_needs_attention_maps(tiny):
    teacher = tiny.TinyEncoder()  # its layers return a tensor: no attention maps
    brain = tiny.build_brain("target", teacher, hparams={"distill_objective": MiniALBERTObjective()})
    with pytest.raises(ValueError, match="attention maps"):
        brain.fit(range(1), tiny.loader(tiny.make_batches(1)))
    # without the attention term it runs (hidden + output only)
    brain = tiny.build_brain("target", teacher, hparams={"distill_objective": MiniALBERTObjective(alpha_attention=0.0)})
    brain.fit(range(1), tiny.loader(tiny.make_batches(1)))
    assert set(brain.history[0]["terms"]) == {"task", "hidden", "logits"}


def test_objective_registry_and_errors(tiny):
    assert set(OBJECTIVES) == {"cald", "minialbert"}
    with pytest.raises(TypeError, match="distill_objective"):
        tiny.build_brain("target", hparams={"distill_objective": "minialbert"})
    with pytest.raises(KeyError, match="layer_loss"):
        CALDObjective(layer_loss={"norm": True})
    # the hybrid guide switches off MiniALBERT's layer group (attention + hidden), not its output term
    assert MiniALBERTObjective().scaled({"layer": 0.0, "logits": 1.0}) == {"attention": 0.0, "hidden": 0.0, "logits": 5.0}
