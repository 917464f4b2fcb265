"""What the workers compile: the benchmark's models, and synthetic FX graphs for the key micro-benchmark.

Runs in a worker only (imports torch, and `transformers` for bert and gpt2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def build_model(name: str, size: dict[str, int], device: str) -> tuple[Any, tuple[Any, ...]]:
    """A seeded model in training mode and its inputs."""
    import torch

    torch.manual_seed(0)
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown model {name!r}")
    model, inputs = builder(size)
    model = model.to(device).train()
    return model, tuple(t.to(device) for t in inputs)


def _build_mlp(size: dict[str, int]) -> tuple[Any, tuple[Any, ...]]:
    import torch
    from torch import nn

    w = size["width"]
    layers: list[nn.Module] = []
    for _ in range(size["layers"]):
        layers += [nn.Linear(w, w), nn.ReLU()]
    model: nn.Module = nn.Sequential(*layers)
    return model, (torch.randn(size["batch"], w),)


def _build_encoder(size: dict[str, int]) -> tuple[Any, tuple[Any, ...]]:
    import torch
    from torch import nn

    layer = nn.TransformerEncoderLayer(
        d_model=size["d_model"],
        nhead=size["heads"],
        dim_feedforward=4 * size["d_model"],
        batch_first=True,
    )
    model = nn.TransformerEncoder(layer, num_layers=size["layers"], enable_nested_tensor=False)
    return model, (torch.randn(size["batch"], size["seq"], size["d_model"]),)


def _build_conv(size: dict[str, int]) -> tuple[Any, tuple[Any, ...]]:
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
    )
    return model, (torch.randn(size["batch"], 3, 32, 32),)


def _build_bert(size: dict[str, int]) -> tuple[Any, tuple[Any, ...]]:
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        num_hidden_layers=size["layers"],
        hidden_size=size["hidden"],
        num_attention_heads=size["heads"],
        intermediate_size=4 * size["hidden"],
    )
    model = BertModel(config)
    return model, (torch.randint(0, config.vocab_size, (size["batch"], size["seq"])),)


def _build_gpt2(size: dict[str, int]) -> tuple[Any, tuple[Any, ...]]:
    import torch
    from transformers import GPT2Config, GPT2Model

    gpt_config = GPT2Config(
        n_layer=size["layers"],
        n_embd=size["hidden"],
        n_head=size["heads"],
        n_positions=max(64, size["seq"]),
    )
    model = GPT2Model(gpt_config)
    return model, (torch.randint(0, gpt_config.vocab_size, (size["batch"], size["seq"])),)


_BUILDERS: dict[str, Callable[[dict[str, int]], tuple[Any, tuple[Any, ...]]]] = {
    "mlp": _build_mlp,
    "encoder": _build_encoder,
    "conv": _build_conv,
    "bert": _build_bert,
    "gpt2": _build_gpt2,
}


def _loss(out: Any) -> Any:
    if hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    return out.float().pow(2).mean()


def build_chain_graph(n_ops: int, example: Any) -> Any:
    """A Dynamo-like GraphModule: a chain of ``n_ops`` pointwise ops on one input.

    Every node carries ``meta["example_value"]`` as Dynamo's do.
    """
    import operator

    import torch

    graph = torch.fx.Graph()
    x = graph.placeholder("l_x_")
    value = example.detach()
    x.meta["example_value"] = value
    cur = x
    with torch.no_grad():
        for i in range(n_ops):
            kind = i % 3
            if kind == 0:
                cur = graph.call_function(torch.sin, (cur,))
                value = torch.sin(value)
            elif kind == 1:
                cur = graph.call_function(torch.cos, (cur,))
                value = torch.cos(value)
            else:
                const = float(i % 7) + 0.5
                cur = graph.call_function(operator.add, (cur, const))
                value = value + const
            cur.meta["example_value"] = value
    graph.output((cur,))
    return torch.fx.GraphModule(torch.nn.Module(), graph)
