"""genarena from Python: train a tokenizer and a generator, load the run, sample from it, evaluate it.

Run it as a script (``python examples/quickstart.py``) or cell by cell (``# %%``) in a notebook-aware
editor. Runs and caches go where ``genarena-train`` puts them (``runs/``, ``.cache/genarena/``;
``GENARENA_RUNS_DIR`` / ``GENARENA_CACHE_DIR`` move them). The budgets below are tiny so that it finishes
in about a minute on a laptop CPU; drop them for a real run.
"""

# %% configs are composed from conf/ exactly as the commands compose them
import genarena

TINY = ["trainer.max_steps=40", "trainer.val_check_interval=20", "trainer.enable_progress_bar=false",
        "log.sample_every_n_steps=0", "logger=none"]

# %% stage 1: a VQ tokenizer (what `genarena-train task=tokenizer tokenizer=vq` does)
tokenizer_run = genarena.train(genarena.compose("config", ["task=tokenizer", "tokenizer=vq", *TINY]))
print("tokenizer:", tokenizer_run["run_dir"], f"PSNR {tokenizer_run['val_psnr']:.1f} dB")

# %% stage 2: a raster-order AR generator against it
generator_run = genarena.train(genarena.compose("config", [
    "task=generator", "generator=ar", "generator.depth=1", f"tokenizer.ckpt={tokenizer_run['run_dir']}", *TINY]))
print("generator:", generator_run["run_dir"], f"val loss {generator_run['val_loss']:.3f}")

# %% load the run and sample: uint8 images (N, C, H, W), one row of labels per class
run = genarena.load(generator_run["run_dir"])
images = run.sample(20, seed=0, cfg=2.0)
print("samples:", tuple(images.shape), images.dtype, "sampling options:", run.sampling)

# %% evaluate: FID and class accuracy against the validation split, with the offline domain classifier
scores = genarena.evaluate(run, overrides=["eval.num_samples=100", "eval.extractor=domain", "eval.metrics=[fid]",
                                           "classifier.max_steps=150"])
print(f"FID {scores['fid']:.2f} ({scores['eval_n']} samples, {scores['eval_extractor']} features), "
      f"class accuracy {scores['class_acc']:.2f}")
