"""How far can a label filter go on a corrupted phantom cohort? Candidate checks and an upper bound.

    python benchmarks/reproduce_solf.py -o OUT --no-report        # the cohort and its features first
    python benchmarks/solf_feasibility.py OUT                      # then this: OUT/feasibility/

Reads the cohort, its planted corruptions and the feature store that ``reproduce_solf.py`` (or
``swinbob solf ablation``) left in OUT, and measures three things at one epsilon (default 2):

1. **Candidate checks not in the library**, each bounded by the cohort like the library's checks
   (upper tail P(100 - eps/2); the partner ratio two-sided): a planar cut face (the largest end-slice
   area over the largest slice along any axis, ends on the image border excluded), the distance of
   detached pieces from the largest piece (mm), one-voxel pits (outside voxels with at least 5 of
   their 6 face neighbours in the structure), 3D-enclosed cavities (share of the volume), a
   morphological closing's gain (two 6-connected iterations, share of the volume), the log
   volume ratio to the other-side partner, and, where the cohort has images, two label-image
   disagreements (a structure holding voxels that look like a touching structure; touching voxels
   labelled otherwise that look like it; see ``image_disagreement``). For each: recall on the corruption kind it is meant for
   and false flags among the healthy pairs; then the combined rule with each added as a signal
   (and with three signals out of range instead of two).
2. **An upper bound for any threshold on a score**: every structure's signals become tail
   probabilities against the cohort (empirical, two-sided for the SOLF features and the partner
   ratio, upper for the rest); a score ranks the pairs (the second-smallest tail probability: a
   continuous 2-of-k rule; the product of the two smallest; Fisher's sum; the smallest) and the
   number flagged is swept with the truth known, so no rule that thresholds that score can do
   better: the best smallest per-kind recall at precision >= ``--precision``, and the best
   precision at a per-kind recall >= ``--recall`` (the issue's goal: 0.9 on every kind at 0.6).
   Done for the library's signals alone and with the candidates.
3. OUT/feasibility/feasibility.md with the tables (and candidates.jsonl, the values, resumable).

Nothing here is a filter to ship: the bound uses the truth. It says whether a goal is reachable with
a set of signals at all.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: candidate -> (corruption kind it is meant for, tail: 1 upper, 2 two-sided)
CANDIDATES = {
    "cut_face": ("truncation", 1),
    "detached_mm": ("spurious_blob", 1),
    "pits": ("holes", 1),
    "cavity_fraction": ("holes", 1),
    "closing_gain": ("holes", 1),
    "partner_log_ratio": ("truncation", 2),
    "image_inside": ("dilation", 1),
    "image_outside": ("holes", 1),
}
#: candidates.jsonl lines of another version are recomputed
STORE_VERSION = 2
#: label-image disagreement: two labels' (bias-corrected) median signals must differ by this much
#: for their voxels to tell them apart, and a voxel must be this much closer to the other's median
IMAGE_DISTINCT, IMAGE_MARGIN = 0.15, 0.05
#: library signal -> tail for the score bound (the SOLF features two-sided, the checks upper)
LIBRARY_SIGNALS = {
    "normalized_volume": 2, "sphericity": 2, "eccentricity": 2, "components": 1,
    "negative_largest_component_fraction": 1, "filled_volume_ratio": 1, "slice_gap_fraction": 1,
}


def image_disagreement(labelmap: np.ndarray, image: np.ndarray) -> dict:
    """Per structure, the share of its voxels whose intensity fits a touching structure better than
    its own (``image_inside``: it holds voxels of the neighbour's tissue, as a dilation or a blob
    does) and the share, relative to its volume, of touching voxels labelled otherwise whose
    intensity fits it better (``image_outside``: its tissue is labelled as something else, as after
    a hole, an erosion, a cut or a dropped slice). ``image`` is ``(X, Y, Z, C)``; the first two
    channels (a Dixon phantom's water and fat) are used after dividing out a smooth bias field
    (the image over its labels' medians, smoothed). Only pairs of labels whose median signals
    differ by :data:`IMAGE_DISTINCT` are compared: a muscle's hole filled with muscle is invisible."""
    from scipy import ndimage

    x = np.asarray(image, np.float32)
    x = x[..., :2] if x.ndim == 4 else x[..., None]
    n = int(labelmap.max()) + 1
    present = np.unique(labelmap)

    def medians(values):
        med = np.zeros((n, values.shape[-1]), np.float32)
        for label in present:
            med[label] = np.median(values[labelmap == label], axis=0)
        return med

    med = medians(x)
    reference = med[labelmap].sum(-1)
    weight = ((labelmap > 0) & (reference > 0.05)).astype(np.float32)
    ratio = np.where(weight > 0, x.sum(-1) / np.maximum(reference, 1e-3), 0.0)
    field = ndimage.gaussian_filter(ratio * weight, 4.0) / np.maximum(ndimage.gaussian_filter(weight, 4.0), 1e-3)
    x = x / np.maximum(field, 0.3)[..., None]
    med = medians(x)
    inside = np.zeros(labelmap.shape, bool)
    outside = set()
    for axis in range(3):
        for shift in (1, -1):
            other = np.roll(labelmap, shift, axis)
            edge = [slice(None)] * 3
            edge[axis] = slice(0, 1) if shift == 1 else slice(-1, None)
            touching = (other != labelmap) & (labelmap > 0) & (other > 0)
            touching[tuple(edge)] = False
            own, theirs, values = labelmap[touching], other[touching], x[touching]
            fits_theirs = ((np.linalg.norm(med[own] - med[theirs], axis=1) > IMAGE_DISTINCT)
                           & (np.linalg.norm(values - med[theirs], axis=1)
                              < np.linalg.norm(values - med[own], axis=1) - IMAGE_MARGIN))
            where = np.flatnonzero(touching)[fits_theirs]
            inside.ravel()[where] = True
            outside.update(zip(where.tolist(), theirs[fits_theirs].tolist()))
    voxels = np.bincount(labelmap.ravel(), minlength=n)
    held = np.bincount(labelmap[inside], minlength=n)
    lent = np.bincount(np.array([t for _, t in outside], np.int64), minlength=n)
    return {int(l): {"image_inside": float(held[l] / voxels[l]), "image_outside": float(lent[l] / voxels[l])}
            for l in range(1, n) if voxels[l]}


def candidate_values(path: str, image_path: str | None = None) -> dict:
    """Candidate values of every structure of one label map: {label: {candidate: value}} (the
    partner ratio is formed later, from the feature store; the image ones only with an image)."""
    import nibabel as nib
    from scipy import ndimage

    image = nib.load(path)
    labelmap = np.asarray(image.dataobj).astype(np.int64)
    spacing = np.array(image.header.get_zooms()[:3], float)
    disagreement = (image_disagreement(labelmap, np.asarray(nib.load(image_path).dataobj))
                    if image_path else {})
    face6 = ndimage.generate_binary_structure(3, 1)
    out = {}
    for label, box in enumerate(ndimage.find_objects(labelmap), start=1):
        if box is None:
            continue
        mask = labelmap[box] == label
        voxels = int(mask.sum())
        ends = []
        for axis in range(3):
            areas = mask.sum(axis=tuple(a for a in range(3) if a != axis))
            if areas.size < 2:
                continue
            if box[axis].start > 0:
                ends.append(areas[0] / areas.max())
            if box[axis].stop < labelmap.shape[axis]:
                ends.append(areas[-1] / areas.max())
        pieces, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
        detached = 0.0
        if n > 1:
            largest = int(np.argmax(np.bincount(pieces.ravel())[1:])) + 1
            distance = ndimage.distance_transform_edt(pieces != largest, sampling=spacing)
            detached = float(max(distance[pieces == k].min() for k in range(1, n + 1) if k != largest))
        padded = np.pad(mask, 3)
        neighbours = ndimage.convolve(padded.astype(np.int8), face6.astype(np.int8), mode="constant") - padded
        out[label] = {
            "cut_face": float(max(ends)) if ends else 0.0,
            "detached_mm": detached,
            "pits": int((~padded & (neighbours >= 5)).sum()),
            "cavity_fraction": float(ndimage.binary_fill_holes(padded).sum() - voxels) / voxels,
            "closing_gain": float(ndimage.binary_closing(padded, face6, iterations=2).sum() - voxels) / voxels,
            **disagreement.get(label, {}),
        }
    return out


def _candidate_values(paths: tuple) -> dict:
    return candidate_values(*paths)


def load_candidates(samples: dict, store: Path, workers: int) -> dict:
    """{sample id: {label: values}}, computed once per sample and kept in ``store`` (JSON lines);
    ``samples`` maps an id to (label map, image or None)."""
    done, kept = {}, []
    if store.exists():
        for line in store.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill: dropped, its sample recomputed
                continue
            if record.get("version") != STORE_VERSION:
                continue
            done[record["id"]] = {int(k): v for k, v in record["values"].items()}
            kept.append(line)
        tmp = store.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, store)
    todo = [s for s in sorted(samples) if s not in done]
    if todo:
        start = time.perf_counter()
        pool = ProcessPoolExecutor(workers) if workers > 1 else None
        results = (pool.map(_candidate_values, [samples[s] for s in todo], chunksize=4) if pool
                   else map(_candidate_values, (samples[s] for s in todo)))
        with open(store, "a") as handle:
            for i, (sid, values) in enumerate(zip(todo, results), start=1):
                handle.write(json.dumps({"id": sid, "version": STORE_VERSION, "values": values}) + "\n")
                handle.flush()
                done[sid] = values
                if i % 100 == 0 or i == len(todo):
                    print(f"  candidates {i}/{len(todo)} ({time.perf_counter() - start:.0f} s)", flush=True)
        if pool:
            pool.shutdown()
    return done


def _tail_bounds(values, epsilon: float):
    return float(np.percentile(values, epsilon / 2)), float(np.percentile(values, 100 - epsilon / 2))


def _sweep(ranked, fixed, truth, of_kind, pair_to, precision_goal: float, recall_goal: float):
    """Flag ``fixed`` and then the ``ranked`` pairs one by one (every fifth count is looked at):
    (best smallest per-kind recall at precision >= goal, with its precision, recall and kind) and
    the best precision at which every kind reaches ``recall_goal`` (None where never)."""
    flagged, tp = set(), 0
    caught, hits = set(), collections.Counter()

    def flag(pair):
        nonlocal tp
        flagged.add(pair)
        tp += pair in truth
        for corruption in pair_to.get(pair, ()):
            if corruption not in caught:
                caught.add(corruption)
                hits[corruption[0]] += 1

    for pair in fixed:
        flag(pair)
    best, best_p = None, None
    for step, pair in enumerate(list(ranked) + [None]):
        if step % 5 == 0 or pair is None:
            precision = tp / len(flagged) if flagged else 0.0
            recall = {k: hits[k] / len(of_kind[k]) for k in of_kind}
            worst = min(recall, key=recall.get)
            if precision >= precision_goal and (best is None or recall[worst] > best[0]):
                best = (recall[worst], precision, tp / len(truth), worst)
            if recall[worst] >= recall_goal and (best_p is None or precision > best_p):
                best_p = precision
        if pair is not None and pair not in flagged:
            flag(pair)
    return best, best_p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__[__doc__.index("Reads"):],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the folder reproduce_solf.py wrote (cohort/, ablation/)")
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--precision", type=float, default=0.6, help="precision of the goal (default 0.6)")
    parser.add_argument("--recall", type=float, default=0.9, help="per-kind recall of the goal (default 0.9)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    from SwinBOBLib.phantom import partner_of
    from SwinBOBLib.solf import ablation
    from SwinBOBLib.solf.bounds import fit_bounds
    from SwinBOBLib.solf.checks import bounded_features, combined_verdict, out_of_range_signals
    from SwinBOBLib.solf.cohort import compute_features, find_samples
    from SwinBOBLib.solf.tables import structure_namer

    cohort_dir, started = args.output / "cohort", time.perf_counter()
    for needed in (cohort_dir / "corruptions", args.output / "ablation"):
        if not needed.is_dir():
            parser.error(f"{needed} is missing: run benchmarks/reproduce_solf.py -o {args.output} first")
    samples = find_samples(cohort_dir)
    cohort = compute_features(samples, args.output / "ablation", workers=1, progress=False).cohort()
    records = ablation.load_corruptions(cohort_dir / "corruptions", cohort)
    truth = ablation.load_truth(cohort_dir / "corruptions", cohort)
    name_of = structure_namer("ukbob")
    out = args.output / "feasibility"
    out.mkdir(exist_ok=True)
    paths = {sample.id: (sample.labelmap, sample.image) for sample in samples}
    cand = load_candidates(paths, out / "candidates.jsonl", args.workers)

    for sid, features in cohort.items():  # the partner ratio from the store's voxel counts
        for label, entry in features.items():
            entry.update(cand[sid].get(label, {}))
            partner = partner_of(label)
            if partner is not None and partner in features:
                entry["partner_log_ratio"] = math.log(entry["voxels"] / features[partner]["voxels"])
            entry["negative_largest_component_fraction"] = -entry["largest_component_fraction"]

    eps = args.epsilon
    kinds = sorted({r["kind"] for r in records})
    of_kind = {k: [ablation.corrupted_pairs(r) for r in records if r["kind"] == k] for k in kinds}
    healthy = {(s, l) for s, f in cohort.items() for l in f} - truth

    def by_kind(flagged):
        return {k: sum(bool(p & flagged) for p in of_kind[k]) / len(of_kind[k]) for k in kinds}

    # -- 1. candidates alone and inside the combined rule
    values = collections.defaultdict(lambda: collections.defaultdict(list))
    for features in cohort.values():
        for label, entry in features.items():
            for name in CANDIDATES:
                if name in entry:
                    values[label][name].append(entry[name])
    cbounds = {l: {n: _tail_bounds(v, eps) for n, v in fv.items()} for l, fv in values.items()}

    def out_of(entry, label, name):
        if name not in entry or name not in cbounds.get(label, {}):
            return False
        low, high = cbounds[label][name]
        return entry[name] > high if CANDIDATES[name][1] == 1 else not low <= entry[name] <= high

    solf_bounds = fit_bounds(cohort, eps)
    check_bounds = fit_bounds(cohort, eps, features=bounded_features(cohort))
    signals = {}
    for sid, features in cohort.items():
        for label, entry in features.items():
            if label in solf_bounds:
                signals[(sid, label)] = out_of_range_signals(entry, solf_bounds[label], check_bounds.get(label, {}),
                                                             name_of(label))
    missing = ablation.missing_flags(cohort)
    lines = [f"# What a filter can see: candidates and an upper bound (epsilon = {eps:g})", "",
             f"Cohort `{cohort_dir}`: {len(cohort)} samples, {len(records)} planted corruptions, "
             f"{len(truth)} wrong (sample, structure) pairs, {len(healthy)} healthy ones.", "",
             "## Candidate checks alone", "",
             "| candidate | meant for | recall on it | false flags (healthy pairs) |", "| --- | --- | ---: | ---: |"]
    for name, (kind, _) in CANDIDATES.items():
        flagged = {(s, l) for s, f in cohort.items() for l, e in f.items() if out_of(e, l, name)}
        lines.append(f"| {name} | {kind} | {sum(bool(p & flagged) for p in of_kind.get(kind, []))} / "
                     f"{len(of_kind.get(kind, []))} | {len(flagged & healthy)} |")

    def combined(extra, min_signals=None):
        flagged = set(missing)
        for (sid, label), sig in signals.items():
            entry = cohort[sid][label]
            sig = sig | {n for n in extra if out_of(entry, label, n)}
            if (combined_verdict(sig) if min_signals is None
                    else "laterality" in sig or len(sig - {"laterality"}) >= min_signals):
                flagged.add((sid, label))
        return flagged

    lines += ["", "## The combined rule with a candidate as one more signal", "",
              "| signals | flagged | precision | recall | " + " | ".join(kinds) + " |",
              "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in kinds) + " |"]
    rows = [("library (combined)", (), None)] + [(f"+ {n}", (n,), None) for n in CANDIDATES] + \
        [("+ all candidates", tuple(CANDIDATES), None), ("library, 3 signals", (), 3),
         ("+ all candidates, 3 signals", tuple(CANDIDATES), 3)]
    for label, extra, min_signals in rows:
        flagged = combined(extra, min_signals)
        precision, recall = ablation.precision_recall(flagged, truth)
        rk = by_kind(flagged)
        lines.append(f"| {label} | {len(flagged)} | {precision:.2f} | {recall:.2f} | "
                     + " | ".join(f"{rk[k]:.2f}" for k in kinds) + " |")

    # -- 2. the score bound
    tails = dict(LIBRARY_SIGNALS, **{n: t for n, (_, t) in CANDIDATES.items()})
    sorted_values = collections.defaultdict(dict)
    for features in cohort.values():
        for label, entry in features.items():
            for name in tails:
                if name in entry:
                    sorted_values[label].setdefault(name, []).append(entry[name])
    sorted_values = {l: {n: np.sort(v) for n, v in fv.items()} for l, fv in sorted_values.items()}

    def tail_p(label, name, x):
        v = sorted_values[label][name]
        n = v.size
        high = (n - np.searchsorted(v, x, "left")) / n
        if tails[name] == 1:
            return max(high, 0.5 / n)
        low = np.searchsorted(v, x, "right") / n
        return max(min(1.0, 2 * min(low, high)), 0.5 / n)

    side = {k for k, s in signals.items() if "laterality" in s}
    fixed = missing | side
    keys = sorted(signals)
    scores = {"second-smallest tail probability": lambda p: -math.log(p[1]) if p.size > 1 else 0.0,
              "two smallest (product)": lambda p: -np.log(p[:2]).sum(),
              "Fisher (all)": lambda p: -np.log(p).sum(),
              "smallest": lambda p: -math.log(p[0])}
    lines += ["", "## Upper bound for any threshold on a score", "",
              f"The side and missing rules are kept; the remaining pairs are ranked by the score and the "
              f"number flagged is swept knowing the truth. `best min recall at P>={args.precision:g}`: the "
              f"highest smallest per-kind recall any threshold reaches at that precision; `best P at "
              f"recall>={args.recall:g}`: the highest precision at which every kind reaches that recall "
              f"(`-`: never).", "",
              f"| signals | score | best min recall at P>={args.precision:g} | its precision | its recall | "
              f"weakest kind | best P at recall>={args.recall:g} |", "| --- | --- | ---: | ---: | ---: | --- | ---: |"]
    pair_to = collections.defaultdict(list)  # wrong pair -> the corruptions (kind, index) it belongs to
    for kind in kinds:
        for i, pairs in enumerate(of_kind[kind]):
            for pair in pairs:
                pair_to[pair].append((kind, i))
    for set_name, names in (("library", tuple(LIBRARY_SIGNALS)), ("library + candidates", tuple(tails))):
        p_values = {}
        for sid, label in keys:
            entry = cohort[sid][label]
            p_values[(sid, label)] = np.sort([tail_p(label, n, entry[n]) for n in names
                                              if n in entry and n in sorted_values.get(label, {})])
        for score_name, score in scores.items():
            ranked = sorted(keys, key=lambda k: -score(p_values[k]))
            best, best_p = _sweep(ranked, fixed, truth, of_kind, pair_to, args.precision, args.recall)
            cells = (f"{best[0]:.2f} | {best[1]:.2f} | {best[2]:.2f} | {best[3]}" if best else "- | - | - | -")
            lines.append(f"| {set_name} | {score_name} | {cells} | {best_p:.2f} |" if best_p is not None
                         else f"| {set_name} | {score_name} | {cells} | - |")
    lines += ["", f"({time.perf_counter() - started:.0f} s)"]
    text = "\n".join(lines) + "\n"
    tmp = out / "feasibility.md.tmp"
    tmp.write_text(text)
    os.replace(tmp, out / "feasibility.md")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
