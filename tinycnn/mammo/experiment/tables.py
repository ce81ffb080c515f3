"""What the console shows of a run, as text: the banner before training (the data, the
split or the folds, the network, the backend, the settings) and the summary after it
(the per-fold tables of a --cv run, the paper's Table III with this run's rows, the
held-out numbers, the leak, the notes). Built from the data and from the metrics.json
record alone, so a summary can be printed again from a saved record. The banner has
several lines: every name in it goes through cli.shown, so none can start a line."""

from __future__ import annotations

import numpy as np

from .. import report
from ..cli import precision_line, shown
from ..data import preprocess
from .config import PROTOCOL_NAMES


def banner(run, rois, plan, net) -> str:
    config, backend = run.config, run.backend
    c = rois.counts()
    lines = ["=" * 78,
             f"tinycnn: the paper's CNN on mammography ROIs   (dataset {config.dataset}"
             + (f", {shown(config.data_dir)}" if config.data_dir else "") + ")",
             f"data     {len(rois)} ROIs: {c['benign']} benign, {c['malignant']} malignant, {c['patients']} patients; "
             f"{config.image_size}x{config.image_size}, {preprocess.NORMALISATION}"]
    if rois.cache_file is None:
        lines.append("         preprocessed, not cached")
    else:
        lines.append(f"         {'read from the cache' if rois.from_cache else 'preprocessed and cached'}: "
                     f"{shown(rois.cache_file)}")
    if rois.skipped:
        lines.append(f"         {len(rois.skipped)} unreadable input(s) skipped (first: {shown(rois.skipped[0])})")
    lines += [f"         {shown(n)}" for n in rois.notes]
    lines += split_lines(config, rois, plan)
    chosen = "chosen by auto" if config.backend == "auto" else "as asked"
    lines += ["", net.summary(batch_size=config.batch_size, compact=True), "",
              f"backend  {backend.name} ({chosen}) on {backend.device_name()}; BLAS threads: {run.blas_threads}",
              f"         {precision_line(backend)}{' (chosen by auto)' if config.precision == 'auto' else ''}",
              f"train    {config.epochs} epochs, batch {config.batch_size}, {config.optimizer} lr {config.lr:g} "
              f"({config.lr_schedule}), hidden {config.hidden}, seed {config.seed}",
              f"output   {shown(config.out)}", "=" * 78]
    return "\n".join(lines)


def side_counts(labels, samples) -> str:
    rois = np.unique(samples[:, 0])
    b, m = int((labels[rois] == 0).sum()), int((labels[rois] == 1).sum())
    return f"{len(rois):5d} ROIs ({b} benign, {m} malignant) -> {len(samples):6d} samples"


def split_lines(config, rois, plan) -> list[str]:
    """The banner's split lines: one train/test pair per protocol, or the folds."""
    lines = []
    if not config.cv:
        for split in plan[0].values():
            lines.append(f"split    {split.protocol:7s} train {side_counts(rois.labels, split.train)}")
            lines.append(f"                 test  {side_counts(rois.labels, split.test)}")
        return lines
    lines.append(f"cv       {config.cv} folds by patient (stratified, seed {config.seed}): every ROI tested once, by "
                 "a model that never saw that woman")
    for protocol in plan[0]:
        tests = [len(fold[protocol].test) for fold in plan]
        trains = [len(fold[protocol].train) for fold in plan]
        what = "ROIs" if protocol == "patient" else "samples"
        lines.append(f"         {protocol:7s} test {what} per fold {' '.join(map(str, tests))}; training samples "
                     f"{min(trains)}-{max(trains)}")
        if protocol == "paper":
            leaked = sum(fold[protocol].leaked_samples for fold in plan)
            lines.append(f"                 the paper's order on the same folds: {leaked} of {sum(tests)} test "
                         "samples are copies of ROIs that are also in their fold's training")
    if rois.side is not None:
        lines.append("         the dataset's official train/test split is not used: the folds replace it")
    return lines


# ------------------------------------------------------------ after training
def summary(record: dict) -> list[str]:
    """The console's lines for a metrics.json record: fold tables (--cv), Table III, the
    held-out numbers, the leak, the notes."""
    results = record.get("protocols") or {record["protocol"]: record}
    config = record["config"]
    lines = [""]
    if config["cv"]:
        for protocol, r in results.items():
            lines += [fold_table(protocol, r), ""]
    lines.append(report.table_three(table_rows(config, results)))
    r = record
    lines.append(f"\nheld-out ({r['protocol']} split{', pooled out-of-fold' if config['cv'] else ''}): accuracy "
                 f"{r['accuracy']:.4f}, AUC {r['auc']:.4f} [{r['auc_ci95'][0]:.3f}, {r['auc_ci95'][1]:.3f}] "
                 f"({r['ci_method']}), sensitivity {r['sensitivity']:.3f}, specificity {r['specificity']:.3f}; "
                 f"confusion [[TN, FP], [FN, TP]] = {r['confusion_matrix']}")
    if "leak" in record:
        leak = record["leak"]
        lo, hi = leak["ci95"]
        lines.append(f"leak (paper order minus patient split): AUC {leak['auc_difference']:+.3f} "
                     f"[{lo:+.3f}, {hi:+.3f}] (95%, {leak['method']})")
    return lines + [shown(n) for n in record.get("notes", [])]  # a note may name a file: one line each


def fold_table(protocol: str, r: dict) -> str:
    """The per-fold lines of a --cv run, with mean and spread and the pooled AUC."""
    c = r["cv"]
    has_base = "fold_baseline_auc" in c
    head = (f"{'fold':>4}  {'test':>6}  {'patients':>8}  {'AUC':>6}  {'accuracy':>8}"
            + ("  baseline AUC" if has_base else ""))
    lines = [f"{PROTOCOL_NAMES[protocol]}, {c['k']}-fold CV", head]
    for f in c["folds"]:
        line = f"{f['fold']:>4}  {f['n']:>6}  {f['patients']:>8}  {_num(f['auc']):>6}  {_num(f['accuracy']):>8}"
        lines.append(line + (f"  {_num(f['baseline_auc']):>12}" if has_base else ""))
    a = c["fold_auc"]
    lines.append(f"per fold: AUC mean {_num(a['mean'])}, SD {_num(a['sd'])} (range {_num(a['min'])}-{_num(a['max'])})"
                 + (f"; baseline mean {_num(c['fold_baseline_auc']['mean'])}" if has_base else ""))
    lines.append(f"pooled out-of-fold: {r['n']} test samples, {r['patients']} patients: AUC {_num(r['auc'])} "
                 f"[{_num(r['auc_ci95'][0])}, {_num(r['auc_ci95'][1])}] (95%, {r['ci_method']})")
    return "\n".join(lines)


def protocol_label(protocol: str, results: dict) -> str:
    """The table's name for a protocol's row. The paper's order is called optimistic only
    where it scored above the patient split in this run (it can score below)."""
    if protocol == "patient":
        return "patient split, train-side augmentation"
    label = "paper order: augment, then split"
    if "patient" in results:
        ahead = results["paper"]["auc"] - results["patient"]["auc"]
        if np.isfinite(ahead):
            return label + (f" (optimistic: {ahead:+.3f} AUC)" if ahead > 0 else
                            f" ({ahead:+.3f} AUC: not above the patient split in this run)")
    return label + " (copies of test ROIs in training)"


def table_rows(config: dict, results: dict) -> list[dict]:
    """Table III's rows: this run's network (and pixel baseline) per protocol, then the
    paper's published row. config: the record's settings."""
    data = f"{config['dataset']} {config['image_size']}px"
    if config["cv"]:
        data += f", {config['cv']}-fold CV pooled"
    rows = []
    for protocol, r in results.items():
        rows.append({"method": f"CNN (tinycnn), {protocol_label(protocol, results)}", "data": data,
                     "accuracy": r["accuracy"], "auc": r["auc"], "auc_ci95": r["auc_ci95"]})
        if "baseline" in r:
            rows.append({"method": f"logistic regression on pixels, {protocol} split", "data": data,
                         "accuracy": r["baseline"]["accuracy"], "auc": r["baseline"]["auc"],
                         "auc_ci95": r["baseline"]["auc_ci95"]})
    rows.append(report.PAPER_ROW)
    return rows


def _num(v) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.3f}"
