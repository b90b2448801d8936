"""The model file of ``lowbit compress`` and its report: Deep-Compression tensor encoding of each
stage (P, P+Q, P+Q+H) and the per-layer / per-stage table (``lowbit.train.compress``).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from lowbit import codec

__all__ = ["encode_stage", "layer_rows", "format_report"]


def encode_stage(state: Mapping[str, np.ndarray], layer_names: list[str],
                 codebooks: Mapping[str, np.ndarray], index_bits: Mapping[str, int],
                 huffman: bool, codebook_dtype: str = "f4", bias_dtype: str = "f4"
                 ) -> dict[str, codec.Tensor]:
    """Model-file tensors for one stage: pruned layers' weights as "dc", their biases raw
    float32 or float16, everything else raw as it is."""
    tensors: dict[str, codec.Tensor] = {}
    for key, arr in state.items():
        layer = key[:-len(".weight")] if key.endswith(".weight") else None
        if layer in layer_names:
            book = codebooks.get(layer)
            tensors[key] = codec.model.dc(
                arr, codebook=book, index_bits=int(index_bits[layer]), huffman_index=huffman,
                huffman_values=huffman and book is not None,
                value_dtype=codebook_dtype if book is not None else "f4")
        elif bias_dtype == "f2" and key.endswith(".bias") and key[:-5] in layer_names:
            tensors[key] = codec.model.raw(arr.astype(np.float16))
        else:
            tensors[key] = codec.model.raw(arr)
    return tensors


def layer_rows(tensors: Mapping[str, codec.Tensor], state: Mapping[str, np.ndarray],
               layer_names: list[str], bits: Mapping[str, int], index_bits: Mapping[str, int]
               ) -> list[dict[str, Any]]:
    rows = []
    for layer in layer_names:
        t = tensors[f"{layer}.weight"]
        s = t.stats
        b = tensors.get(f"{layer}.bias")
        bias_bytes = b.stats["bytes"] if b is not None else 0
        n_bias = state[f"{layer}.bias"].size if b is not None else 0
        nnz = max(1, s["nnz"])
        rows.append({
            "layer": layer, "weights": s["size"], "kept": s["nnz"],
            "kept_frac": s["nnz"] / max(1, s["size"]), "store": s["store"],
            "weight_bits": int(bits.get(layer, 32)) or 32,
            "index_bits": int(index_bits[layer]) if s["store"] == "sparse" else 0,
            "value_bits_eff": 8 * (s["value_bytes"] + s["codebook_bytes"]) / nnz,
            "index_bits_eff": 8 * s["index_bytes"] / nnz,
            "bytes": s["bytes"] + bias_bytes,
            "fp32_bytes": 4 * (s["size"] + n_bias),
        })
        rows[-1]["ratio"] = rows[-1]["fp32_bytes"] / max(1, rows[-1]["bytes"])
    return rows


def format_report(r: Mapping[str, Any]) -> str:
    n = max([10] + [len(row["layer"]) for row in r["layers"]])
    head = (f"{'layer':<{n}}{'weights':>9}{'kept':>7}  {'weight bits':>13}  {'index bits':>12}"
            f"  {'store':<7}{'bytes':>9}{'ratio':>8}")
    lines = [f"Deep Compression of {r['model']} ({r['checkpoint']})", head, "-" * len(head)]
    for row in r["layers"]:
        wb = f"{row['weight_bits']} ({row['value_bits_eff']:.2f})"
        ib = f"{row['index_bits']} ({row['index_bits_eff']:.2f})" if row["index_bits"] else "-"
        lines.append(f"{row['layer']:<{n}}{row['weights']:>9,}{row['kept_frac']:>7.1%}  {wb:>13}  "
                     f"{ib:>12}  {row['store']:<7}{row['bytes']:>9,}{row['ratio']:>7.1f}x")
    tot_w = sum(x["weights"] for x in r["layers"])
    tot_k = sum(x["kept"] for x in r["layers"])
    lines.append(f"{'header+pad':<{n}}{'':>9}{'':>7}  {'':>13}  {'':>12}  {'':<7}"
                 f"{r['file_bytes'] - sum(x['bytes'] for x in r['layers']):>9,}")
    lines.append(f"{'total':<{n}}{tot_w:>9,}{tot_k / max(1, tot_w):>7.1%}  {'':>13}  {'':>12}  "
                 f"{'file':<7}{r['file_bytes']:>9,}{r['fp32_bytes'] / r['file_bytes']:>7.1f}x")
    lines.append("(weight / index bits: configured (effective bits per kept weight in the file, "
                 "codebook and code tables included))")
    lines.append("")
    lines.append(f"{'stage':<16}{'file bytes':>12}{'ratio':>9}{'test acc':>10}")
    st = r["stages"]
    lr = r.get("low_rank")
    if lr:
        lines.append(f"{'float (fp32)':<16}{r['fp32_bytes']:>12,}{1:>8.1f}x{r['acc_float']:>10.2%}")
        lines.append(f"{'low-rank (fp32)':<16}{4 * lr['params']:>12,}"
                     f"{r['fp32_bytes'] / (4 * lr['params']):>8.1f}x{lr['acc_tuned']:>10.2%}"
                     f"  ({lr['spec']}, {lr['epochs']} epoch(s) fine-tuned)")
    rows = [] if lr else [("float (fp32)", None, r["acc_float"])]
    for label, key, acc in rows + [("P", "p", r["acc_pruned"]), ("P+Q", "pq", r["acc_compressed"]),
                                   ("P+Q+H", "pqh", r["acc_compressed"])]:
        nbytes = r["fp32_bytes"] if key is None else st[key]["file_bytes"]
        lines.append(f"{label:<16}{nbytes:>12,}{r['fp32_bytes'] / nbytes:>8.1f}x{acc:>10.2%}")
    lines.append(f"written: {r['out']} ({r['file_bytes']:,} bytes, "
                 f"{'P+Q+H' if r['options']['huffman'] else 'P+Q'}); wall time "
                 f"{r['wall_seconds']:.0f} s")
    return "\n".join(lines)
