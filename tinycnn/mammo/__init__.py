"""The mammography application, built on the engine: tell benign from malignant
regions of interest.

    data/       readers (synthetic default, folder, CBIS-DDSM, MIAS), preprocessing,
                the on-disk cache, augmentation, patient-grouped splits
    experiment/ what apps/train.py runs: the config, the runner (run folder, metrics.json),
                the ROI classification task (protocols, folds, pooling, the leak, tables)
    train.py    the training loop: checkpoints, exact resume, NaN stop, Ctrl-C
    batches.py  batches built ahead of the step and copied to the backend
    cv.py       K-fold cross-validation by patient, and what is pooled from the folds
    metrics.py  accuracy, ROC/AUC with bootstrap intervals that resample patients, the
                paired interval of a difference, the pixel baseline
    saliency.py the input gradient and Grad-CAM from the engine's backward passes
    scan.py     the ROI classifier slid over whole films: heat maps, top regions
    scanner.py  a checkpoint ready to scan films (scan_film.py); heldout.py: --heldout
    outputs.py  one output name per input, and output targets checked before any work
    inference.py  finding and checking a checkpoint before using it
    report.py   metrics.json, plots, the summary table
    progress.py progress bars
    runfolder.py  a run folder's lock, --overwrite without loss, leftovers of killed saves
    memory.py   memory estimates made before allocating, and what the machine has
    cli.py      what every app shares: hostile input (finite floats, names as one field
                on one line, SIGTERM as Ctrl-C), --backend and --precision, open_backend

It imports the engine (tinycnn.model, tinycnn.optim, tinycnn.backends); the engine
never imports it. Its dependencies are the ``app`` extra: pip install 'tinycnn[app]'.
"""

import importlib.util

_NEEDS = {"PIL": "pillow", "sklearn": "scikit-learn"}  # imported at module level below
_missing = [package for module, package in _NEEDS.items() if importlib.util.find_spec(module) is None]
if _missing:
    raise ImportError(f"tinycnn.mammo (the mammography application) needs {', '.join(_missing)}: "
                      "pip install 'tinycnn[app]'")
