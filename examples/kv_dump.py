"""Dump a vision transformer's attention keys, values and queries with
forward hooks into a safetensors file that `tq3d kv` compresses.

    pip install torch timm safetensors
    python examples/kv_dump.py cache.safetensors          # a ViT-L/16 at 512×384
    tq3d kv compress cache.safetensors -o cache.tq3k --bits 4.25
    tq3d kv eval cache.safetensors                        # against KIVI, same bits
    tq3d kv decompress cache.tq3k -o back.safetensors     # same names, shapes, dtypes

The same hook works for DUSt3R / MASt3R (their encoders are timm-style
ViT-L blocks: `blk.attn.qkv` is one Linear producing q, k and v) and for any
model whose attention computes q, k, v with one fused Linear. For models
with separate q/k/v projections, hook those three Linears instead.

Tensors are named `blocks.{i}.attn.{q,k,v}` with shape [tokens, heads,
head_dim] (batch item 0), which `tq3d kv` reads with its default layout
("thd"): `.k` is a key, `.v` a value, `.q` a query. Queries are used as
weights for the bit allocation only and are not stored in the .tq3k.
Nothing here downloads weights unless you ask for `--pretrained`.
"""

import argparse

import torch


def fused_qkv_hook(store, name, heads):
    """A forward hook on a Linear that outputs [B, N, 3·C]: q, k, v."""

    def hook(_module, _inputs, output):
        b, n, c3 = output.shape
        c = c3 // 3
        qkv = output.detach()[0].reshape(n, 3, heads, c // heads)
        for i, part in enumerate("qkv"):
            # [tokens, heads, head_dim], contiguous, in the model's dtype.
            store[f"{name}.{part}"] = qkv[:, i].contiguous().cpu()

    return hook


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", help="the .safetensors file to write")
    p.add_argument("--model", default="vit_large_patch16_384", help="a timm ViT name")
    p.add_argument("--height", type=int, default=384)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--pretrained", action="store_true", help="download timm weights")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float16")
    p.add_argument("--image", help="an image file (default: random pixels)")
    args = p.parse_args()

    import timm
    from safetensors.torch import save_file

    model = timm.create_model(
        args.model,
        pretrained=args.pretrained,
        img_size=(args.height, args.width),
        num_classes=0,
    ).eval()
    dtype = getattr(torch, args.dtype)
    model = model.to(dtype)

    store = {}
    for i, blk in enumerate(model.blocks):
        blk.attn.qkv.register_forward_hook(
            fused_qkv_hook(store, f"blocks.{i}.attn", blk.attn.num_heads)
        )

    if args.image:
        from PIL import Image
        import numpy as np

        img = Image.open(args.image).convert("RGB").resize((args.width, args.height))
        x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255.0
        cfg = model.pretrained_cfg
        mean = torch.tensor(cfg.get("mean", (0.5, 0.5, 0.5)))[:, None, None]
        std = torch.tensor(cfg.get("std", (0.5, 0.5, 0.5)))[:, None, None]
        x = (x - mean) / std
    else:
        x = torch.randn(1, 3, args.height, args.width)
    with torch.no_grad():
        model(x.to(dtype))

    save_file(store, args.output, metadata={"model": args.model})
    n = sum(t.numel() for k, t in store.items() if not k.endswith(".q"))
    print(f"{args.output}: {len(store)} tensors, {n} key/value elements ({args.dtype})")


if __name__ == "__main__":
    main()
