"""Restricted and excluded loss at each checkpoint of a unit with the FINAL model's key frequencies
fixed for every checkpoint, as Nanda et al. (2023) computed them (experiment.py records them online
with each record's own key frequencies). Run from the project root:

    python studies/instruments/final_keys.py studies/instruments/progress_x_plus_y x_plus_y_0
"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import experiment as E  # noqa: E402

folder, unit = Path(sys.argv[1]), sys.argv[2]
paths = sorted((folder / "checkpoints" / unit).glob("step_*.pt"))
models = []
for path in paths:  # the documented recipe
    ckpt = torch.load(path)
    model = E.Transformer(E.Config(**ckpt["config"]), ckpt["vocab_size"], ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    models.append((ckpt["step"], model))
cfg = E.Config(**ckpt["config"])
data = E.make_dataset(ckpt["dataset"], cfg, ckpt["seed"], "cpu")
progress = E.make_progress_measures(cfg, ckpt["dataset"], data)
final = progress(models[-1][1], models[-1][1].forward)["key_frequencies"]
rows = []
for step, model in models:
    row = progress(model, model.forward, keys=final)
    rows.append({"step": step, **{k: row[k] for k in ("restricted_loss", "excluded_loss", "key_logit_share")}})
print(json.dumps({"final_key_frequencies": final, "rows": rows}, indent=1))
